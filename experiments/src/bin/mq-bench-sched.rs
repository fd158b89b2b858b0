// SPDX-License-Identifier: GPL-2.0-only
//! `mq-bench-sched`: the scheduler benchmark (see `mq_experiments::sched_bench`
//! for what it measures, `mq_report::sched` for the JSON report). Runs as root on a sched_ext
//! kernel, e.g. `cargo xtask vm -- mq-bench-sched --quick`. Progress and a
//! table go to stderr; the last stdout line is the report behind its tag,
//! `MQ_BENCH_SCHED_JSON {...}`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Parser;
use mq_class::{sysfs, SchedExtState};
use mq_experiments::sched_bench::{self, BenchConfig};

/// MicroQuanta vs EEVDF, SCHED_FIFO and SCHED_DEADLINE: wakeup latency under
/// CPU hogs, bandwidth conformance, and cyclictest. Needs root and a kernel
/// with sched_ext; starts and stops scx_microquanta itself.
#[derive(Debug, Parser)]
#[command(version)]
struct Opts {
    /// Wakeups (1 ms apart) per class in the latency comparison, and
    /// cyclictest loops [default: 2000, 400 with --quick].
    #[arg(long, value_parser = clap::value_parser!(u64).range(10..))]
    samples: Option<u64>,

    /// Fewer samples and 2 s conformance windows instead of 5 s (for tests).
    #[arg(long)]
    quick: bool,

    /// MicroQuanta period of the scheduler for the latency and cyclictest runs
    /// (also the SCHED_DEADLINE period), in microseconds [default: 40, or
    /// 1000 under TCG: the same share at a period emulation can switch at].
    #[arg(long)]
    period_us: Option<u64>,

    /// MicroQuanta runtime per period for the latency and cyclictest runs
    /// (also the SCHED_DEADLINE runtime), in microseconds [default: 20, or
    /// 500 under TCG].
    #[arg(long)]
    runtime_us: Option<u64>,

    /// CPU hog processes per CPU during latency and cyclictest runs.
    #[arg(long, default_value_t = 2)]
    hogs_per_cpu: usize,

    /// CPU time the measured thread burns after each wakeup in the latency
    /// comparison, in microseconds (0: a pure sleeper).
    #[arg(long, default_value_t = 0)]
    work_us: u64,

    /// Rounds of the scx_microquanta vs scx_mqland comparison (each runs both once; 0
    /// skips it) [default: 3, 2 with --quick].
    #[arg(long)]
    mqland_rounds: Option<usize>,
    /// Interleaved rounds of the demo's workload (0: skip that phase)
    /// [default: 8, 4 with --quick].
    #[arg(long)]
    rounds: Option<usize>,

    /// Wakeups per policy and round [default: 400, 200 with --quick].
    #[arg(long, value_parser = clap::value_parser!(u64).range(10..))]
    round_samples: Option<u64>,

    /// The scx_microquanta binary to benchmark, e.g. another build for an A/B
    /// comparison [default: the one next to this binary, else on PATH].
    #[arg(long, value_name = "PATH")]
    scheduler: Option<PathBuf>,
}

fn main() -> Result<()> {
    let opts = Opts::parse();
    let (default_period, default_runtime) = mq_experiments::accel::latency_bandwidth_us();
    let period_us = opts.period_us.unwrap_or(default_period);
    let runtime_us = opts.runtime_us.unwrap_or(default_runtime);
    if runtime_us == 0 || runtime_us > period_us {
        bail!("need 0 < --runtime-us ({runtime_us}) <= --period-us ({period_us})");
    }
    match sysfs::state() {
        SchedExtState::Disabled => {}
        SchedExtState::Unsupported => bail!(
            "kernel {} has no sched_ext: run in the VM (`cargo xtask vm -- mq-bench-sched`)",
            sysfs::kernel_release()
        ),
        other => bail!("sched_ext is {other:?}: another scheduler is loaded; stop it first"),
    }

    let mut cfg = BenchConfig::new(opts.quick);
    cfg.samples = opts.samples.unwrap_or(cfg.samples);
    cfg.period_us = period_us;
    cfg.runtime_us = runtime_us;
    cfg.hogs_per_cpu = opts.hogs_per_cpu;
    cfg.work = std::time::Duration::from_micros(opts.work_us);
    cfg.mqland_rounds = opts.mqland_rounds.unwrap_or(cfg.mqland_rounds);
    cfg.rounds = opts.rounds.unwrap_or(cfg.rounds);
    cfg.round_samples = opts.round_samples.unwrap_or(cfg.round_samples);

    let scheduler = match opts.scheduler {
        Some(path) => path,
        None => sched_bench::scheduler_binary()?,
    };
    eprintln!("mq-bench-sched: scheduler {}", scheduler.display());
    let report = sched_bench::run(&cfg, &scheduler)?;
    eprint!("{}", sched_bench::report::table(&report));
    println!("{}", mq_report::tagged_line(&report)?);
    Ok(())
}
