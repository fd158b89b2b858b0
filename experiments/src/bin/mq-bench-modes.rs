// SPDX-License-Identifier: GPL-2.0-only
//! `mq-bench-modes`: Snap's three scheduling modes under an open-loop echo
//! load (see `mq_experiments::modes_bench` for what it measures and where each
//! thread runs, `mq_report::modes` for the JSON report). Needs no root: on a plain kernel the
//! engines run on EEVDF; in the VM with `scx_microquanta` loaded (or with
//! `--with-scheduler`) they run in the MicroQuanta class. Progress and a
//! table go to stderr; the JSON report to stdout on one `MQ_BENCH_MODES_JSON {...}` line,
//! or to `--json PATH`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use mq_experiments::bench_run;
use mq_experiments::modes_bench::{self, BenchConfig};

/// Drives echo engines in dedicated, spreading and compacting mode from an
/// app at several offered loads; reports p50/p99/p99.9 round-trip latency,
/// throughput and the CPU cores the engines used.
#[derive(Debug, Parser)]
#[command(version)]
struct Opts {
    /// Offered loads, in % of one core (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "10,50,90",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    loads: Vec<u32>,

    /// Modes to run, in order (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "dedicated,spreading,compacting")]
    modes: Vec<String>,

    /// Measuring window per point, in seconds [default: 3, 1 with --quick].
    #[arg(long)]
    seconds: Option<f64>,

    /// Warm-up before each window (not measured), in milliseconds
    /// [default: 500, 300 with --quick].
    #[arg(long)]
    warmup_ms: Option<u64>,

    /// Short windows, for tests and a first look.
    #[arg(long)]
    quick: bool,

    /// CPU time each echo engine spins per request, in nanoseconds
    /// [default: 20000, 200000 under TCG (MQ_ACCEL=tcg)].
    #[arg(long)]
    work_ns: Option<u64>,

    /// Echo engines in the group; the app spreads requests round-robin. Two by default, so
    /// that compacting has something to pack (spreading gives each engine its own thread).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    engines: u16,

    /// The snap-host binary [default: next to this one, else on PATH].
    #[arg(long, value_name = "PATH")]
    snap_host: Option<PathBuf>,

    /// Start this scx_microquanta first (root, sched_ext kernel) and stop it
    /// at the end; its bandwidth is the latency default of this accelerator.
    #[arg(long, value_name = "PATH")]
    with_scheduler: Option<PathBuf>,

    /// Write the JSON report here instead of stdout.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

fn main() -> Result<()> {
    let opts = Opts::parse();
    bench_run::check_modes(&opts.modes)?;
    let window = bench_run::window(opts.seconds.unwrap_or(if opts.quick { 1.0 } else { 3.0 }))?;
    let warmup_ms = opts.warmup_ms.unwrap_or(if opts.quick { 300 } else { 500 });
    let snap_host = match opts.snap_host {
        Some(p) => p,
        None => mq_experiments::locate::binary("snap-host")
            .context("snap-host not found next to mq-bench-modes nor on PATH; pass --snap-host")?,
    };

    // Kept alive for the whole run; dropping it detaches the scheduler.
    let scheduler = bench_run::start_scheduler(opts.with_scheduler.as_deref())?;
    let cfg = BenchConfig {
        modes: opts.modes,
        loads: opts.loads,
        window,
        warmup: Duration::from_millis(warmup_ms),
        work_ns: opts.work_ns.unwrap_or_else(modes_bench::default_work_ns),
        engines: usize::from(opts.engines),
        microquanta: mq_class::sysfs::microquanta_loaded(),
    };
    eprintln!(
        "mq-bench-modes: {} under {}, snap-host {}",
        modes_bench::machine(),
        modes_bench::scheduler_name(),
        snap_host.display()
    );
    let report = modes_bench::run(&cfg, &snap_host)?;
    bench_run::finish(
        scheduler,
        &modes_bench::table(&report),
        &report,
        opts.json.as_deref(),
    )
}
