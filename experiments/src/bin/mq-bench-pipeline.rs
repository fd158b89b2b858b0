// SPDX-License-Identifier: GPL-2.0-only
//! `mq-bench-pipeline`: what each stage of a Pony engine's pipeline adds to Pony's round
//! trip, against Pony alone on the same path in the same run (see
//! `mq_experiments::pipeline_bench` for what runs where, `mq_report::pipeline` for the
//! JSON report and the target). Progress, a table and the target go to stderr; the JSON
//! report to stdout on one `MQ_BENCH_PIPELINE_JSON {...}` line, or to `--json PATH`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Parser;
use mq_experiments::bench_run;
use mq_experiments::pipeline_bench::shaping::ShapingBenchConfig;
use mq_experiments::pipeline_bench::{self, PipelineBenchConfig};
use mq_experiments::pony_bench::netns::{self, Veth};
use mq_experiments::pony_bench::path::Path;
use mq_experiments::pony_bench::AppWait;
use pony_express::app::DEFAULT_COMPLETION_SPIN;

/// Ping-pong RTT of small Pony messages between two in-process hosts over UDP, with host
/// A's Pony engine alone and behind 1 and 2 `pass` stages, in interleaved rounds; each
/// stage's added p50/p99 and its engine's ns per packet; the target "each stage adds ≤ 10 %
/// of Pony's p50" from this run's rows.
#[derive(Debug, Parser)]
#[command(version)]
struct Opts {
    /// Engine mode of the Pony engines and the stages.
    #[arg(long, default_value = "dedicated", value_parser = ["dedicated", "spreading", "compacting"])]
    mode: String,

    /// Stage counts measured besides Pony alone (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    stages: Vec<usize>,

    /// Interleaved rounds (each variant once per round) [default: 5; 2 with --quick].
    #[arg(long)]
    rounds: Option<usize>,

    /// Round trips per round and variant [default: 5000; 300 with --quick].
    #[arg(long)]
    iterations: Option<usize>,

    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    bytes: usize,

    /// The path between the hosts: `veth` (two network namespaces `path-…` joined by a
    /// veth pair, made and removed by this run; needs root and iproute2) or `loopback`.
    #[arg(long, default_value = "veth", value_parser = ["veth", "loopback"])]
    path: String,

    /// UDP payload per packet.
    #[arg(long, default_value_t = 1472)]
    mtu: usize,

    /// How long apps spin on their completion ring before they block, in µs
    /// [default: pony-express's DEFAULT_COMPLETION_SPIN].
    #[arg(long, value_name = "US")]
    completion_spin_us: Option<u64>,

    /// Spreading and compacting engines poll this long (µs) before they block
    /// [default: snap-runtime's DEFAULT_IDLE_POLL].
    #[arg(long, value_name = "US")]
    idle_poll_us: Option<u64>,

    /// Dedicated mode: one dedicated core per host instead of one thread for both hosts'
    /// engines and the stages.
    #[arg(long)]
    dedicated_core_per_host: bool,

    /// Configured rates (Mbit/s per tenant) of the shaper stage's accuracy run, after the
    /// round trips; `0` to skip it.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000,10000")]
    shaping_mbps: Vec<f64>,

    /// Tenants of the shaping run, each at the configured rate.
    #[arg(long, default_value_t = 2)]
    shaping_tenants: u32,

    /// Seconds per configured rate [default: 2; 0.5 with --quick].
    #[arg(long)]
    shaping_seconds: Option<f64>,

    /// Policy stage kinds measured one stage at a time besides `pass` (comma-separated:
    /// `acl`, `shaper`, `overlay`; `none` for none). The `overlay` also puts one on host B
    /// (B decapsulates what A encapsulates, and the other way on the reply).
    #[arg(long, value_delimiter = ',', default_value = "acl,shaper,overlay")]
    policy_stages: Vec<String>,

    /// Packets per tenant of the overlay isolation run (two tenants, one packet in eight
    /// misrouted, corrupted or re-stamped); 0 to skip it.
    #[arg(long, default_value_t = 100_000)]
    isolation_packets: u64,

    /// Few rounds and iterations, for tests and a first look.
    #[arg(long)]
    quick: bool,

    /// Start this scx_microquanta first (root, sched_ext kernel) and stop it at the end.
    #[arg(long, value_name = "PATH")]
    with_scheduler: Option<PathBuf>,

    /// Write the JSON report here instead of stdout.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

fn main() -> Result<()> {
    let opts = Opts::parse();
    if opts.stages.is_empty() || opts.stages.iter().any(|&k| !(1..=8).contains(&k)) {
        bail!("--stages: each count must be 1 to 8");
    }
    if !(8..=(64 << 10)).contains(&opts.bytes) {
        bail!("--bytes: 8 B to 64 KiB");
    }
    let rounds = opts.rounds.unwrap_or(if opts.quick { 2 } else { 5 });
    let iterations = opts.iterations.unwrap_or(if opts.quick { 300 } else { 5000 });
    if rounds == 0 || iterations < 20 {
        bail!("--rounds must be at least 1 and --iterations at least 20");
    }
    let path = match opts.path.as_str() {
        "veth" => {
            netns::check()?;
            netns::install_cleanup()?;
            Path::Veth(Veth::create_prefixed("path", "", opts.mtu as u32 + 28)?)
        }
        _ => Path::Loopback,
    };
    let scheduler = bench_run::start_scheduler(opts.with_scheduler.as_deref())?;
    let cfg = PipelineBenchConfig {
        mode: opts.mode,
        stage_counts: opts.stages,
        rounds,
        iterations,
        message_bytes: opts.bytes,
        mtu: opts.mtu,
        app_wait: AppWait::SpinThenBlock(
            opts.completion_spin_us
                .map_or(DEFAULT_COMPLETION_SPIN, Duration::from_micros),
        ),
        idle_poll: opts.idle_poll_us.map(Duration::from_micros),
        shared_engine_core: !opts.dedicated_core_per_host,
        microquanta: mq_class::sysfs::microquanta_loaded(),
        shaping: opts
            .shaping_mbps
            .iter()
            .any(|&r| r > 0.0)
            .then(|| ShapingBenchConfig {
                rates_mbps: opts.shaping_mbps.iter().copied().filter(|&r| r > 0.0).collect(),
                tenants: opts.shaping_tenants,
                seconds: opts.shaping_seconds.unwrap_or(if opts.quick { 0.5 } else { 2.0 }),
                packet_bytes: opts.mtu,
                bin: Duration::from_millis(10),
            }),
        policy_kinds: opts
            .policy_stages
            .into_iter()
            .filter(|k| !k.is_empty() && k != "none")
            .collect(),
        isolation_packets: if opts.quick {
            opts.isolation_packets.min(10_000)
        } else {
            opts.isolation_packets
        },
    };
    let report = pipeline_bench::run(&cfg, &path)?;
    bench_run::finish(
        scheduler,
        &pipeline_bench::table(&report),
        &report,
        opts.json.as_deref(),
    )
}
