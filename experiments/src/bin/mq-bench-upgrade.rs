// SPDX-License-Identifier: GPL-2.0-only
//! `mq-bench-upgrade`: upgrades one of two `snap-host` processes repeatedly with
//! `snapctl upgrade` while Pony apps on both run a ping-pong and a bulk stream, every
//! message checked at its receiver (see `mq_experiments::upgrade_bench`; the report is
//! `mq_report::upgrade`). Progress, a table and the targets go to stderr; the JSON report to
//! stdout on one `MQ_BENCH_UPGRADE_JSON {...}` line, or to `--json PATH`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use mq_experiments::pony_bench::netns::{self, Veth};
use mq_experiments::upgrade_bench::{self, hosts, message};
use mq_experiments::{bench_run, locate};

/// Transparent upgrade under load: two snap-host processes with one Pony engine each (in
/// two network namespaces joined by a veth pair, made and removed here), a ping-pong over
/// N flows and a bulk stream between their apps, and host A upgraded `--upgrades` times
/// through `snapctl upgrade --json` per flow count. Reports per upgrade snapctl's blackout
/// and brownout per engine and the ping-pong's longest gap, the round trips over time, and
/// exact lost, duplicated, reordered and corrupt counts; then the targets.
#[derive(Debug, Parser)]
#[command(version)]
struct Opts {
    /// Ping-pong flows per engine, one run each (the bulk stream adds one flow)
    /// [default: 1,100,1000; 1,100 with --quick].
    #[arg(long, value_delimiter = ',')]
    flows: Option<Vec<usize>>,

    /// Upgrades per flow count [default: 20; 3 with --quick].
    #[arg(long)]
    upgrades: Option<usize>,

    /// Steady traffic before each upgrade and after the last, ms [default: 500; 200 with
    /// --quick].
    #[arg(long)]
    interval_ms: Option<u64>,

    /// Bytes per ping-pong message.
    #[arg(long, default_value_t = 64)]
    ping_pong_bytes: usize,

    /// Bytes per bulk message.
    #[arg(long, default_value_t = 16384)]
    bulk_bytes: usize,

    /// Bulk messages in flight.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=256))]
    bulk_window: u32,

    /// The path between the hosts: `veth` (two network namespaces joined by a veth pair,
    /// made and removed by this run; needs root and iproute2) or `loopback` (127.0.0.1).
    #[arg(long, default_value = "veth", value_parser = ["veth", "loopback"])]
    path: String,

    /// The snap-host binary both hosts run [default: next to this program, else on PATH].
    #[arg(long, value_name = "PATH")]
    snap_host: Option<PathBuf>,

    /// The snapctl binary [default: next to this program, else on PATH].
    #[arg(long, value_name = "PATH")]
    snapctl: Option<PathBuf>,

    /// `snapctl upgrade --binary`: the snap-host that takes over [default: the running
    /// host's own binary].
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,

    /// Fewer flows and upgrades (still 3), for tests and a first look.
    #[arg(long)]
    quick: bool,

    /// Write the JSON report here instead of stdout.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

fn binary(given: Option<PathBuf>, name: &str) -> Result<PathBuf> {
    match given {
        Some(p) => Ok(p),
        None => locate::binary(name).with_context(|| {
            format!(
                "no {name} next to this program or on PATH; build it (cargo build -p ...) or pass --{name}"
            )
        }),
    }
}

fn main() -> Result<()> {
    let opts = Opts::parse();
    let flows = opts.flows.unwrap_or_else(|| {
        if opts.quick {
            vec![1, 100]
        } else {
            vec![1, 100, 1000]
        }
    });
    if flows.iter().any(|&n| !(1..=1000).contains(&n)) {
        bail!("--flows: every count must be 1 to 1000 (an app owns at most 1024 flows)");
    }
    let upgrades = opts.upgrades.unwrap_or(if opts.quick { 3 } else { 20 });
    if upgrades == 0 {
        bail!("--upgrades must be at least 1");
    }
    let sizes_ok = |b: usize| (message::OVERHEAD..=(1 << 20)).contains(&b);
    if !sizes_ok(opts.ping_pong_bytes) || !sizes_ok(opts.bulk_bytes) {
        bail!("message sizes must be {} B to 1 MiB", message::OVERHEAD);
    }
    let cfg = upgrade_bench::Config {
        flows,
        upgrades,
        interval: Duration::from_millis(opts.interval_ms.unwrap_or(if opts.quick { 200 } else { 500 })),
        ping_pong_bytes: opts.ping_pong_bytes,
        bulk_bytes: opts.bulk_bytes,
        bulk_window: opts.bulk_window as usize,
        snap_host: binary(opts.snap_host, "snap-host")?,
        snapctl: binary(opts.snapctl, "snapctl")?,
        binary: opts.binary,
    };
    ctrlc::set_handler(|| {
        eprintln!("mq-bench-upgrade: interrupted; stopping the hosts and removing the namespaces");
        hosts::kill_all();
        netns::remove_all();
        std::process::exit(130);
    })
    .context("installing the Ctrl-C handler")?;
    let veth = match opts.path.as_str() {
        "veth" => Some(Veth::create_prefixed("upb", "", 1500)?),
        _ => None,
    };
    eprintln!(
        "mq-bench-upgrade: {} under {}, accel {}; snap-host {}, snapctl {}",
        mq_experiments::modes_bench::machine(),
        mq_experiments::modes_bench::scheduler_name(),
        mq_experiments::accel::name(),
        cfg.snap_host.display(),
        cfg.snapctl.display()
    );
    let report = upgrade_bench::run(&cfg, veth.as_ref());
    drop(veth);
    let report = report?;
    bench_run::finish(
        None,
        &upgrade_bench::table(&report),
        &report,
        opts.json.as_deref(),
    )
}
