// SPDX-License-Identifier: GPL-2.0-only
//! `mq-bench-idle`: spreading and dedicated Pony engines' round trips with idle CPUs allowed
//! to enter their idle states and kept polling (see `mq_experiments::idle_bench`, and
//! `mq_report::idle` for the JSON report). Needs root (namespaces; cpuidle's `disable`
//! files or `/dev/cpu_dma_latency`), and puts back every idle setting it changed at the
//! end, on an error and on Ctrl-C. Progress and a table go to stderr; the JSON report to
//! stdout on one `MQ_BENCH_IDLE_JSON {...}` line, to `--json PATH`, or to
//! `--out DIR/summary.json`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use mq_experiments::bench_run;
use mq_experiments::efficiency_bench::{self, app};
use mq_experiments::idle_bench::{self, cpuidle, BenchConfig, RATE};

/// One app at a low rate through a snap-host in dedicated and spreading mode, with idle
/// states allowed and with idle CPUs polling; reports p50/p99 RTT of each.
#[derive(Debug, Parser)]
#[command(version)]
struct Opts {
    /// Messages per second the app offers.
    #[arg(long, default_value_t = RATE)]
    rate: f64,

    /// Payload per message.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(8..=8192))]
    msg_bytes: u16,

    /// Rounds [default: 4, 1 with --quick].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=100))]
    rounds: Option<u16>,

    /// Measuring window per point and round, in seconds [default: 3, 0.5 with --quick].
    #[arg(long)]
    seconds: Option<f64>,

    /// Warm-up before each window, in milliseconds [default: 300, 150 with --quick].
    #[arg(long)]
    warmup_ms: Option<u64>,

    /// One round of short windows (for tests and a first look).
    #[arg(long)]
    quick: bool,

    /// The snap-host binary [default: next to this one, else on PATH].
    #[arg(long, value_name = "PATH")]
    snap_host: Option<PathBuf>,

    /// Write the JSON report here instead of stdout.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,

    /// Write the JSON report to DIR/summary.json (made if missing) instead of stdout.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if app::run_role(&args)? {
        return Ok(());
    }
    let opts = Opts::parse();
    if !rustix::process::geteuid().is_root() {
        bail!("mq-bench-idle needs root: it makes network namespaces and changes the CPUs' idle states");
    }
    if !(opts.rate > 0.0 && opts.rate <= 1e6) {
        bail!("--rate {}: expected above 0 and at most 1000000", opts.rate);
    }
    let window = bench_run::window(opts.seconds.unwrap_or(if opts.quick { 0.5 } else { 3.0 }))?;
    let snap_host = match opts.snap_host {
        Some(p) => p,
        None => mq_experiments::locate::binary("snap-host")
            .context("snap-host not found next to mq-bench-idle nor on PATH; pass --snap-host")?,
    };
    let json = bench_run::json_destination(opts.json, opts.out)?;
    let cfg = BenchConfig {
        rate: opts.rate,
        msg_bytes: usize::from(opts.msg_bytes),
        rounds: usize::from(opts.rounds.unwrap_or(if opts.quick { 1 } else { 4 })),
        warmup: Duration::from_millis(opts.warmup_ms.unwrap_or(if opts.quick { 150 } else { 300 })),
        window,
        microquanta: mq_class::sysfs::microquanta_loaded(),
    };
    efficiency_bench::install_cleanup("mq-bench-idle", cpuidle::restore_all)?;
    eprintln!(
        "mq-bench-idle: {} under {}, cpuidle driver {}, snap-host {}",
        mq_experiments::modes_bench::machine(),
        mq_experiments::modes_bench::scheduler_name(),
        cpuidle::driver(),
        snap_host.display()
    );
    let report = idle_bench::run(&cfg, &snap_host);
    // Whatever happened, the idle states are back as they were (the guard did it; this
    // is for a panic's unwinding having skipped nothing).
    cpuidle::restore_all();
    let report = report?;
    bench_run::finish(None, &idle_bench::table(&report), &report, json.as_deref())
}
