// SPDX-License-Identifier: GPL-2.0-only
//! `mq-bench-efficiency`: the CPU a network stack costs N apps, linked into each app and
//! spinning there (the library-OS design) against one `snap-host` in each of Snap's modes
//! (see `mq_experiments::efficiency_bench` for what it measures, `mq_report::efficiency`
//! for the JSON report). Needs root (network namespaces and a veth pair, prefix `eff-`,
//! removed at the end and on Ctrl-C). Progress and a table go to stderr; the JSON report to
//! stdout on one `MQ_BENCH_EFFICIENCY_JSON {...}` line, to `--json PATH`, or to
//! `--out DIR/summary.json`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use mq_experiments::bench_run;
use mq_experiments::efficiency_bench::{self, app, BenchConfig};

/// Runs N apps (1, 2, 4, 8) at a low, medium and high offered load each, with the Pony
/// stack linked into every app (library OS) and through one snap-host in dedicated,
/// spreading and compacting mode; reports the cores the stack uses and p50/p99 RTT.
#[derive(Debug, Parser)]
#[command(version)]
struct Opts {
    /// Designs to run (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "library_os,dedicated,spreading,compacting"
    )]
    designs: Vec<String>,

    /// App counts (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8",
          value_parser = clap::value_parser!(u16).range(1..=64))]
    apps: Vec<u16>,

    /// Messages per second per app at low, medium and high load (three, comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "200,2000,8000")]
    rates: Vec<f64>,

    /// Payload per message.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(8..=8192))]
    msg_bytes: u16,

    /// Rounds [default: 3, 1 with --quick].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=100))]
    rounds: Option<u16>,

    /// Measuring window per point and round, in seconds [default: 1.5, 0.3 with --quick].
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
        bail!("mq-bench-efficiency needs root: it makes network namespaces and a veth pair");
    }
    efficiency_bench::check_designs(&opts.designs)?;
    let rates: [f64; 3] = opts.rates.as_slice().try_into().map_err(|_| {
        anyhow::anyhow!(
            "--rates: expected three rates (low, medium, high), got {:?}",
            opts.rates
        )
    })?;
    if rates.iter().any(|r| !(*r > 0.0 && *r <= 1e6)) {
        bail!("--rates {rates:?}: each must be above 0 and at most 1000000");
    }
    let window = bench_run::window(opts.seconds.unwrap_or(if opts.quick { 0.3 } else { 1.5 }))?;
    let warmup = Duration::from_millis(opts.warmup_ms.unwrap_or(if opts.quick { 150 } else { 300 }));
    let snap_host = match opts.snap_host {
        Some(p) => p,
        None => mq_experiments::locate::binary("snap-host")
            .context("snap-host not found next to mq-bench-efficiency nor on PATH; pass --snap-host")?,
    };
    let json = bench_run::json_destination(opts.json, opts.out)?;
    let cfg = BenchConfig {
        designs: opts.designs,
        apps: opts.apps.into_iter().map(usize::from).collect(),
        rates,
        msg_bytes: usize::from(opts.msg_bytes),
        rounds: usize::from(opts.rounds.unwrap_or(if opts.quick { 1 } else { 3 })),
        warmup,
        window,
        microquanta: mq_class::sysfs::microquanta_loaded(),
    };
    efficiency_bench::install_cleanup("mq-bench-efficiency", || {})?;
    eprintln!(
        "mq-bench-efficiency: {} under {}, snap-host {}",
        mq_experiments::modes_bench::machine(),
        mq_experiments::modes_bench::scheduler_name(),
        snap_host.display()
    );
    let report = efficiency_bench::run(&cfg, &snap_host)?;
    bench_run::finish(None, &efficiency_bench::table(&report), &report, json.as_deref())
}
