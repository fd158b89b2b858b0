// SPDX-License-Identifier: GPL-2.0-only
//! `mq-bench-interference`: spreading echo engines under antagonists (stress-ng CPU hogs, a
//! fork storm, a syscall/softirq-heavy load, memory bandwidth) for EEVDF, SCHED_FIFO, the
//! MicroQuanta class and dedicated cores, plus each policy scheduler binary of a list, in
//! interleaved rounds (see `mq_experiments::interference_bench`; `mq_report::interference`
//! for the JSON report). Root; the `microquanta` setup and the policy rows need a sched_ext
//! kernel. Progress and a table go to stderr; the JSON report to stdout on one
//! `MQ_BENCH_INTERFERENCE_JSON {...}` line, or to `--json PATH`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use mq_experiments::interference_bench::{self, BenchConfig};
use mq_experiments::{bench_run, modes_bench};

/// Latency (p50/p99/p99.9) of echo engines driven open-loop next to antagonists, per
/// scheduling setup of the engines, and the antagonists' bogo-ops next to them vs alone.
#[derive(Debug, Parser)]
#[command(version)]
struct Opts {
    /// Setups of the engines: eevdf, fifo (spreading engines in SCHED_FIFO 50), microquanta
    /// (in the class, scx_microquanta loaded), dedicated (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "eevdf,fifo,microquanta,dedicated"
    )]
    setups: Vec<String>,

    /// Antagonists: none, cpu, fork, softirq, membw (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "none,cpu,fork,softirq,membw")]
    antagonists: Vec<String>,

    /// Interleaved rounds [default: 3, 1 with --quick].
    #[arg(long)]
    rounds: Option<usize>,

    /// Measuring window per point, in seconds [default: 3, 1 with --quick].
    #[arg(long)]
    seconds: Option<f64>,

    /// Warm-up before each window, in milliseconds [default: 500, 300 with --quick].
    #[arg(long)]
    warmup_ms: Option<u64>,

    /// Offered load, in % of one core. Low, so that the engines alone are far from
    /// saturated (under TCG a request's ring and wakeup overhead doubles its CPU cost) and
    /// what the tail shows is the antagonists.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    load: u32,

    /// CPU time each echo engine spins per request, in nanoseconds [default: 20000, 200000
    /// under TCG].
    #[arg(long)]
    work_ns: Option<u64>,

    /// Echo engines (spreading: one thread each).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    engines: u16,

    /// stress-ng workers per antagonist [default: twice the CPUs].
    #[arg(long)]
    workers: Option<usize>,

    /// The policy experiment's scheduler binaries (comma-separated names, found next to
    /// this binary or on PATH); each runs the engines as a setup of its own. A name not
    /// found is reported as "not built".
    #[arg(long, value_delimiter = ',')]
    policy_schedulers: Vec<String>,

    /// Antagonists of the policy rows.
    #[arg(long, value_delimiter = ',', default_value = "none,cpu")]
    policy_antagonists: Vec<String>,

    /// Short rounds, for tests and a first look.
    #[arg(long)]
    quick: bool,

    /// The snap-host binary [default: next to this one, else on PATH].
    #[arg(long, value_name = "PATH")]
    snap_host: Option<PathBuf>,

    /// scx_microquanta for the microquanta setup [default: next to this one, else on PATH].
    #[arg(long, value_name = "PATH")]
    scheduler: Option<PathBuf>,

    /// Write the JSON report here instead of stdout.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

fn main() -> Result<()> {
    let opts = Opts::parse();
    let window = bench_run::window(opts.seconds.unwrap_or(if opts.quick { 1.0 } else { 3.0 }))?;
    let snap_host = match opts.snap_host {
        Some(p) => p,
        None => mq_experiments::locate::binary("snap-host")
            .context("snap-host not found next to mq-bench-interference nor on PATH; pass --snap-host")?,
    };
    let scheduler = opts
        .scheduler
        .or_else(|| mq_experiments::locate::binary("scx_microquanta"));
    let cfg = BenchConfig {
        setups: opts.setups,
        antagonists: opts.antagonists,
        rounds: opts.rounds.unwrap_or(if opts.quick { 1 } else { 3 }),
        window,
        warmup: Duration::from_millis(opts.warmup_ms.unwrap_or(if opts.quick { 300 } else { 500 })),
        work_ns: opts.work_ns.unwrap_or_else(modes_bench::default_work_ns),
        engines: usize::from(opts.engines),
        offered_load: opts.load,
        workers: opts.workers.unwrap_or(2 * mq_experiments::sched_bench::cpus()),
        scheduler,
        policy_schedulers: opts.policy_schedulers,
        policy_antagonists: opts.policy_antagonists,
    };
    cfg.check()?;
    eprintln!(
        "mq-bench-interference: {}, snap-host {}",
        modes_bench::machine(),
        snap_host.display()
    );
    let report = interference_bench::run(&cfg, &snap_host)?;
    bench_run::finish(
        None,
        &interference_bench::table(&report),
        &report,
        opts.json.as_deref(),
    )
}
