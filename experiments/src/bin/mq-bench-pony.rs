// SPDX-License-Identifier: GPL-2.0-only
//! `mq-bench-pony`: Pony Express against Linux TCP over the same path in one run: a veth
//! pair between two network namespaces that it makes and removes (root), or loopback; with
//! the shared-memory wire and floor (see `mq_experiments::pony_bench` for what it measures
//! and where each thread runs, `mq_report::pony` for the JSON report and the targets). Both
//! Pony hosts are in this process. Progress, a table and the targets go to stderr; the JSON
//! report to stdout on one `MQ_BENCH_PONY_JSON {...}` line, or to `--json PATH`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Parser;
use mq_experiments::bench_run;
use mq_experiments::pony_bench::netns::{self, Veth};
use mq_experiments::pony_bench::path::{NicKind, Path};
use mq_experiments::pony_bench::{self, AppWait, BenchConfig, SCALING, SIZES, THROUGHPUT_SIZES};
use pony_express::app::DEFAULT_COMPLETION_SPIN;

/// Ping-pong RTT and windowed throughput of Pony messages (64 B to 1 MiB) between two
/// in-process hosts in dedicated, spreading and compacting modes over UDP sockets and the
/// shared-memory wire, 1 to 10 engines per host, our TCP echo and sockperf on the same path
/// (a veth pair between two network namespaces, made and removed here), one-sided reads per
/// second per core, and the shared-memory floor; then the targets from those rows.
#[derive(Debug, Parser)]
#[command(version)]
struct Opts {
    /// Engine modes to run, in order (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "dedicated,spreading,compacting")]
    modes: Vec<String>,

    /// Ping-pong message sizes in bytes (comma-separated) [default: 64,1024,4096,16384,262144,1048576].
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<usize>>,

    /// Throughput message sizes in bytes [default: 64,4096,16384,1048576; with --sizes:
    /// those of them that are among the defaults, else all of them].
    #[arg(long, value_delimiter = ',')]
    throughput_sizes: Option<Vec<usize>>,

    /// Round trips per size up to 16 KiB (fewer above) [default: 20000; 300 with --quick;
    /// a tenth under TCG].
    #[arg(long)]
    iterations: Option<usize>,

    /// Seconds per throughput and one-sided point [default: 2, 1 with --quick].
    #[arg(long)]
    seconds: Option<f64>,

    /// Outstanding messages (reads) in throughput runs, at most 8 MiB in flight.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=256))]
    window: u32,

    /// The path between the hosts: `veth` (two network namespaces joined by a veth pair,
    /// made and removed by this run; needs root and iproute2) or `loopback` (127.0.0.1).
    #[arg(long, default_value = "veth", value_parser = ["veth", "loopback"])]
    path: String,

    /// Pony's NICs, each run in every mode: `xdp` (AF_XDP on the veth ends; veth path
    /// only), `udp` (sockets on the path) and `shm` (the shared-memory wire inside the
    /// process) [default: xdp,udp,shm on the veth path, udp,shm on loopback].
    #[arg(long, value_delimiter = ',')]
    nics: Option<Vec<String>>,

    /// Engines per host in the scaling rows (comma-separated; 1 is the throughput rows'
    /// own point, so `1` alone skips scaling).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,10")]
    engines: Vec<usize>,

    /// No loopback rows (on the veth path they add 64 B ping-pong of Pony over UDP and TCP
    /// on 127.0.0.1, for continuity with earlier runs).
    #[arg(long)]
    no_loopback_rows: bool,

    /// Message size of the scaling rows.
    #[arg(long, default_value_t = 64)]
    scaling_bytes: usize,

    /// UDP payload per packet (the veth's MTU is 28 bytes more) [default: 3472 on the veth
    /// path, the largest MTU at which veth runs an XDP program natively (an AF_XDP frame is
    /// a 4 KiB page), so that every NIC's rows use one MTU; 8972 on loopback, the
    /// shared-memory wire's jumbo MTU].
    #[arg(long)]
    mtu: Option<usize>,

    /// Bytes per one-sided read (the reads keep --window outstanding, at most 8 MiB).
    #[arg(long, default_value_t = pony_bench::READ_BYTES, value_parser = clap::value_parser!(u32).range(1..=(8 << 20)))]
    read_bytes: u32,

    /// How long apps spin on their completion ring before they block on its doorbell, in
    /// µs; `forever` spins without ever blocking (the engine then rings no doorbell)
    /// [default: pony-express's DEFAULT_COMPLETION_SPIN].
    #[arg(long, value_name = "US|forever", value_parser = parse_completion_spin)]
    completion_spin_us: Option<AppWait>,

    /// Spreading and compacting engines poll this long (µs) after their last work before
    /// they block [default: snap-runtime's DEFAULT_IDLE_POLL].
    #[arg(long, value_name = "US")]
    idle_poll_us: Option<u64>,

    /// Dedicated mode: one dedicated core per host's engines, instead of one thread running
    /// both hosts' engines on one core (which leaves the other CPUs to the apps).
    #[arg(long)]
    dedicated_core_per_host: bool,

    /// sockperf ping-pong seconds (0: skip it) [default: 2, 1 with --quick].
    #[arg(long)]
    sockperf_secs: Option<u32>,

    /// Few iterations and 1 s points, for tests and a first look.
    #[arg(long)]
    quick: bool,

    /// Start this scx_microquanta first (root, sched_ext kernel) and stop it at the end.
    #[arg(long, value_name = "PATH")]
    with_scheduler: Option<PathBuf>,

    /// Write the JSON report here instead of stdout.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

fn parse_completion_spin(s: &str) -> Result<AppWait, String> {
    if s == "forever" {
        return Ok(AppWait::Spin);
    }
    let us: u64 = s
        .parse()
        .map_err(|_| format!("{s:?} is neither a number of µs nor \"forever\""))?;
    Ok(AppWait::SpinThenBlock(Duration::from_micros(us)))
}

fn main() -> Result<()> {
    let opts = Opts::parse();
    bench_run::check_modes(&opts.modes)?;
    let tcg = mq_experiments::accel::is_tcg();
    let sizes = opts.sizes.unwrap_or_else(|| SIZES.to_vec());
    if sizes.iter().any(|&s| !(8..=(8 << 20)).contains(&s)) {
        bail!("--sizes: every size must be 8 B to 8 MiB");
    }
    let throughput_sizes = opts.throughput_sizes.unwrap_or_else(|| {
        let picked: Vec<usize> = sizes
            .iter()
            .copied()
            .filter(|s| THROUGHPUT_SIZES.contains(s))
            .collect();
        if picked.is_empty() {
            sizes.clone()
        } else {
            picked
        }
    });
    let throughput_time = bench_run::window(opts.seconds.unwrap_or(if opts.quick { 1.0 } else { 2.0 }))?;
    let mut iterations = opts.iterations.unwrap_or(if opts.quick { 300 } else { 20_000 });
    if tcg && opts.iterations.is_none() {
        iterations = (iterations / 10).max(50);
    }
    if opts.engines.iter().any(|&n| !(1..=64).contains(&n)) {
        bail!("--engines: every count must be 1 to 64");
    }
    if opts.engines.iter().any(|n| !SCALING.contains(n)) {
        eprintln!("mq-bench-pony: scaling beyond the usual {SCALING:?} engines per host");
    }
    let veth = opts.path == "veth";
    let mtu = opts.mtu.unwrap_or(if veth { 3472 } else { 8972 });
    let nics = opts
        .nics
        .clone()
        .unwrap_or_else(|| {
            let default: &[&str] = if veth {
                &["xdp", "udp", "shm"]
            } else {
                &["udp", "shm"]
            };
            default.iter().map(|n| n.to_string()).collect()
        })
        .iter()
        .map(|n| NicKind::parse(n))
        .collect::<Result<Vec<_>>>()?;
    let path = match opts.path.as_str() {
        "veth" => {
            netns::check()?;
            netns::install_cleanup()?;
            Path::Veth(Veth::create("", mtu as u32 + 28)?)
        }
        _ => Path::Loopback,
    };
    let scheduler = bench_run::start_scheduler(opts.with_scheduler.as_deref())?;
    let cfg = BenchConfig {
        modes: opts.modes,
        nics,
        scaling: opts.engines,
        scaling_bytes: opts.scaling_bytes,
        sizes,
        throughput_sizes,
        window: opts.window as usize,
        iterations,
        throughput_time,
        mtu,
        read_bytes: opts.read_bytes,
        app_wait: opts
            .completion_spin_us
            .unwrap_or(AppWait::SpinThenBlock(DEFAULT_COMPLETION_SPIN)),
        idle_poll: opts.idle_poll_us.map(Duration::from_micros),
        shared_engine_core: !opts.dedicated_core_per_host,
        sockperf_secs: opts.sockperf_secs.unwrap_or(if opts.quick { 1 } else { 2 }),
        one_sided: true,
        loopback_rows: !opts.no_loopback_rows,
        microquanta: mq_class::sysfs::microquanta_loaded(),
    };
    eprintln!(
        "mq-bench-pony: {} under {}, accel {}",
        pony_bench::machine(),
        pony_bench::scheduler_name(),
        mq_experiments::accel::name()
    );
    let report = pony_bench::run(&cfg, &path)?;
    bench_run::finish(
        scheduler,
        &pony_bench::table(&report),
        &report,
        opts.json.as_deref(),
    )
}
