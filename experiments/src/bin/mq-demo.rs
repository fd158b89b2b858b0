// SPDX-License-Identifier: GPL-2.0-only
//! `mq-demo`: the demo's measurement, run on a sched_ext kernel (in the VM by
//! `cargo xtask demo`). With CPU hogs on every CPU it measures the wakeup
//! latency of a periodic thread that burns `--work-us` of CPU per wakeup,
//! like a spreading engine handling a batch, five ways in one boot:
//!
//! 1. `eevdf`: no BPF scheduler, a normal thread (the kernel's own baseline);
//! 2. `fifo`: no BPF scheduler, the thread in SCHED_FIFO (the emulator's floor);
//! 3. `normal`: scx_microquanta loaded, the thread left in the fair share;
//! 4. `microquanta`: scx_microquanta loaded, the thread in the class;
//! 5. `fifo-scx`: scx_microquanta loaded, the thread in SCHED_FIFO (sched_ext's own floor:
//!    the hogs it preempts are sched_ext tasks).
//!
//! The five run as short interleaved rounds with a stall probe throughout
//! ([`mq_experiments::rounds`]); the report carries each round, the median
//! EEVDF/MicroQuanta, FIFO/MicroQuanta and fifo-scx/MicroQuanta p99 ratios with
//! their spread, and the first two without the wakeups an emulator stall hit.
//!
//! The thread needs more than its fair share of a CPU next to the hogs
//! (30% vs 2/9 by default), which is exactly when a fair scheduler makes it
//! wait and the MicroQuanta class, with its own budget, does not.
//!
//! Progress goes to stderr; the last stdout line is the report ([`mq_report::demo::Report`])
//! behind its tag, `MQ_DEMO_JSON {...}`.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use mq_class::sysfs;
use mq_experiments::accel;
use mq_experiments::hogs::Hogs;
use mq_experiments::locate;
use mq_experiments::rounds::{self, RoundsConfig};
use mq_experiments::scheduler_process::SchedulerProcess;
use mq_experiments::settle;
use mq_experiments::stall_probe;
use mq_experiments::wakeup::Wakeup;
use mq_report::demo::Report;
use mq_report::rounds::Spread;

/// Wakeup latency next to CPU hogs: EEVDF vs scx_microquanta (normal thread
/// and MicroQuanta thread).
#[derive(Debug, Parser)]
struct Opts {
    /// Sleep period of the measured thread, in microseconds.
    #[arg(long, default_value_t = 1000)]
    period_us: u64,

    /// Interleaved rounds (each measures all five policies once; each loads and unloads
    /// the scheduler, ~10 s under TCG).
    #[arg(long, default_value_t = 6)]
    rounds: usize,

    /// Wakeups measured per policy and round.
    #[arg(long, default_value_t = 400)]
    samples: u64,

    /// SCHED_FIFO priority of the `fifo` policy (the stall probe runs at 99).
    #[arg(long, default_value_t = 50)]
    fifo_priority: u32,

    /// Interval of the stall probe, in microseconds.
    #[arg(long, default_value_t = stall_probe::INTERVAL.as_micros() as u64)]
    probe_interval_us: u64,

    /// A probe wakeup at least this late (µs) is an emulator stall.
    #[arg(long, default_value_t = stall_probe::THRESHOLD.as_micros() as u64)]
    stall_threshold_us: u64,

    /// CPU time the measured thread burns after each wakeup, in microseconds.
    #[arg(long, default_value_t = 300)]
    work_us: u64,

    /// CPU hog processes per CPU.
    #[arg(long, default_value_t = 4)]
    hogs_per_cpu: usize,

    /// MicroQuanta period of the scheduler, in microseconds [default: 40,
    /// or 1000 under TCG (same share, see `accel`)].
    #[arg(long)]
    mq_period_us: Option<u64>,

    /// MicroQuanta runtime per period, in microseconds [default: 20, or 500
    /// under TCG].
    #[arg(long)]
    mq_runtime_us: Option<u64>,

    /// Class wakeups run after each load of the scheduler before the round measures, in no
    /// figure (`mq_experiments::settle`); 0 measures the first class wakeup after each load
    /// with the rest.
    #[arg(long, default_value_t = settle::WARM_UP_WAKEUPS)]
    warm_up_wakeups: u64,

    /// Extra argument for scx_microquanta (repeatable), e.g.
    /// `--scheduler-arg=--stats=1`.
    #[arg(long, allow_hyphen_values = true)]
    scheduler_arg: Vec<String>,
}

fn main() -> Result<()> {
    let opts = Opts::parse();
    let cpus = std::thread::available_parallelism()?.get();
    let scheduler = locate::binary("scx_microquanta").context("scx_microquanta binary not found")?;
    let hogs = Hogs::start(cpus * opts.hogs_per_cpu, None)?;
    eprintln!(
        "mq-demo: {} hogs on {cpus} CPUs, kernel {}, {} rounds of {} wakeups per policy every {} µs \
         with {} µs of work each",
        hogs.workers(),
        sysfs::kernel_release(),
        opts.rounds,
        opts.samples,
        opts.period_us,
        opts.work_us
    );

    let (default_period, default_runtime) = accel::latency_bandwidth_us();
    let bandwidth = (
        opts.mq_period_us.unwrap_or(default_period),
        opts.mq_runtime_us.unwrap_or(default_runtime),
    );
    if accel::is_tcg() {
        eprintln!(
            "mq-demo: TCG emulation: class budget {}/{} µs (runtime/period), the kernel patch's \
             20/40 µs share at a period TCG can switch at",
            bandwidth.1, bandwidth.0
        );
    }
    let mut args = vec![
        format!("--period-us={}", bandwidth.0),
        format!("--runtime-us={}", bandwidth.1),
    ];
    args.extend(opts.scheduler_arg.iter().cloned());
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut start = || -> Result<(SchedulerProcess, Vec<Wakeup>)> {
        let sched = SchedulerProcess::start(&scheduler, &arg_refs)?;
        // Measure the steady state: every task moved over, the class path run once.
        let warm_up = settle::settle("mq-demo", opts.warm_up_wakeups)?;
        Ok((sched, warm_up))
    };
    let cfg = RoundsConfig {
        rounds: opts.rounds,
        samples: opts.samples,
        wake_period: Duration::from_micros(opts.period_us),
        work: Duration::from_micros(opts.work_us),
        fifo_priority: opts.fifo_priority,
        probe_interval: Duration::from_micros(opts.probe_interval_us),
        stall_threshold: Duration::from_micros(opts.stall_threshold_us),
        log: "mq-demo",
    };
    let r = rounds::run(&cfg, cpus, &mut start)?;
    eprintln!("mq-demo: back on EEVDF");
    for (policy, s) in &r.pooled {
        eprintln!(
            "mq-demo: pooled {policy:<12} p50 {:>9.1} µs  p99 {:>9.1} µs  max {:>9.1} µs",
            s.p50, s.p99, s.max
        );
    }
    eprintln!(
        "mq-demo: p99 eevdf/microquanta {}; without stalls {}",
        spread(r.eevdf_over_microquanta),
        spread(r.stalls.p99_ratio_eevdf_over_microquanta_without_stalls)
    );
    eprintln!(
        "mq-demo: p99 fifo/microquanta {}; fifo-scx/microquanta {}",
        spread(r.fifo_over_microquanta),
        spread(r.fifo_scx_over_microquanta)
    );
    eprintln!(
        "mq-demo: {} stalls (longest {:.0} µs); probe lateness p99 {:.0} µs",
        r.stalls.events, r.stalls.longest_us, r.stalls.probe.p99
    );

    let report = Report {
        kernel: sysfs::kernel_release(),
        cpus,
        period_us: opts.period_us,
        work_us: opts.work_us,
        hogs: hogs.workers(),
        scheduler_args: args,
        wakeup_latency_us: r.pooled,
        rounds: r.rows,
        p99_ratio_eevdf_over_microquanta: r.eevdf_over_microquanta,
        p99_ratio_fifo_over_microquanta: r.fifo_over_microquanta,
        p99_ratio_fifo_scx_over_microquanta: r.fifo_scx_over_microquanta,
        stalls: Some(r.stalls),
        scheduler_cycle_ms: r.scheduler_cycle_ms,
        warmup: r.warmup,
    };
    println!("{}", mq_report::tagged_line(&report)?);
    Ok(())
}

fn spread(s: Option<Spread>) -> String {
    s.map_or("-".into(), |s| {
        format!(
            "median {:.1}x (min {:.1}x, max {:.1}x, {} rounds)",
            s.median, s.min, s.max, s.rounds
        )
    })
}
