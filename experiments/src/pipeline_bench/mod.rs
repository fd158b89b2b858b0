// SPDX-License-Identifier: GPL-2.0-only
//! What a pipeline of stages adds to Pony's round trip: two in-process hosts joined by UDP
//! on a path (`pony_bench::path`), host A's Pony engine alone or with 1..n stages between
//! it and its NIC, ping-pong of small messages, in interleaved rounds.
//!
//! ```text
//!  variant 0:  app A ─ Pony A ──────────────────────────── UdpNic ══ path ══ UdpNic ─ Pony B ─ echo app B
//!  variant k:  app A ─ Pony A ─ PipeNic ═ stage 1 … stage k ─ UdpNic ══ path ══ …
//! ```
//!
//! An `overlay` stage is mirrored: host B gets one too, A's encapsulating to B's and B's
//! decapsulating (and the other way on the reply), so its row's added RTT is one stage on
//! each host; its `ns_per_packet` is still host A's stage's own. Every packet one overlay
//! encapsulated must be decapsulated by the other (the run fails otherwise).
//!
//! ```text
//!  overlay:    app A ─ Pony A ─ PipeNic ═ overlay A ─ UdpNic ══ path ══ UdpNic ─ overlay B ═ PipeNic ─ Pony B ─ …
//! ```
//!
//! The stages run in host A's group (B's overlay in B's), in the same mode as the Pony engines (in dedicated
//! mode with a shared engine core, on the one thread that polls both hosts: the framework's
//! own cost without a thread hop; in spreading mode, a thread per stage: a doorbell hop per
//! stage). Each round starts every variant afresh (new sockets, runtimes and apps) so that
//! no variant inherits another's state. A stage's `ns_per_packet` comes from its engine's
//! own counters: time in steps that moved packets, less the time inside the NIC's own
//! calls (which Pony alone pays too), over packets moved.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;
use mq_report::pipeline::{Report, Row, StageRow, Target};
use pony_engine::nic::{Nic, NicWire, PipeNic};
use pony_engine::{PonyConfig, PonyEngine};
use snap_pipeline::{queue, Downstream, PassStage, Pool, PoolConfig, Stage, StageEngine};
use snap_policy::stage::{AclStage, OverlayStage, ShaperStage};
use snap_runtime::{CompactingParams, Engine, GroupSpec, Mode, Runtime, RuntimeOptions};

use crate::pony_bench::path::{NicKind, Path};
use crate::pony_bench::pony::{connect, echo, ping_pong};
use crate::pony_bench::setup::Layout;
use crate::pony_bench::{histogram, AppWait, Probe};

pub mod isolation;
pub mod shaping;

/// What to run.
#[derive(Debug, Clone)]
pub struct PipelineBenchConfig {
    /// Engine mode of the Pony engines and the stages.
    pub mode: String,
    /// Stage counts to measure besides Pony alone, e.g. `[1, 2]`.
    pub stage_counts: Vec<usize>,
    pub rounds: usize,
    /// Round trips per round and variant (after a tenth more of warm-up).
    pub iterations: usize,
    pub message_bytes: usize,
    /// UDP payload per packet.
    pub mtu: usize,
    pub app_wait: AppWait,
    pub idle_poll: Option<Duration>,
    /// Dedicated mode: both hosts' engines (and the stages) on one thread.
    pub shared_engine_core: bool,
    pub microquanta: bool,
    /// The shaper stage's accuracy run after the round trips (`None`: skipped).
    pub shaping: Option<shaping::ShapingBenchConfig>,
    /// Policy stage kinds (snap-policy: `acl`, `shaper`) measured one stage at a time,
    /// like `pass`, in every round.
    pub policy_kinds: Vec<String>,
    /// Packets per tenant of the overlay isolation run (0: skipped).
    pub isolation_packets: u64,
}

/// One variant's running hosts.
struct Hosts {
    runtimes: Vec<Runtime>,
    /// Host A's stage engines (their counters give `ns_per_packet`).
    stage_names: Vec<String>,
    /// Host B's stage engines (mirrored kinds only: checked for drops, not timed).
    peer_stage_names: Vec<String>,
}

fn mode_of(name: &str) -> Result<Mode> {
    Ok(match name {
        "dedicated" => Mode::Dedicated,
        "spreading" => Mode::Spreading,
        "compacting" => Mode::Compacting,
        other => bail!("unknown mode {other:?}"),
    })
}

/// One host's engines: its Pony engine, then its stage engines (none for Pony alone).
type HostEngines = (Box<dyn Engine>, Vec<Box<dyn Engine>>);

/// The overlay's bench network: one tenant whose virtual endpoint on each host is mapped to
/// that host's NIC address. Pony A opens its flow to B's virtual endpoint, so every packet
/// of the round trip is encapsulated by one host's overlay and decapsulated by the other's.
const OVERLAY_TENANT: u32 = 1;
const OVERLAY_VNI: u32 = 4242;

/// Host `side`'s virtual endpoint (0: A, 1: B).
fn overlay_endpoint(side: usize) -> SocketAddr {
    SocketAddr::from(([10, 77, 0, side as u8 + 1], 7000))
}

/// Host `side`'s overlay settings: its tenant's endpoint, and the other host's endpoint
/// mapped to that host's NIC address in `physical` (A's, B's).
fn overlay_settings(side: usize, physical: [SocketAddr; 2]) -> String {
    let other = 1 - side;
    format!(
        "tenant = [{{ tenant = {OVERLAY_TENANT}, vni = {OVERLAY_VNI}, endpoint = \"{}\" }}]\n\
         mapping = [{{ vni = {OVERLAY_VNI}, endpoint = \"{}\", physical = \"{}\" }}]\n",
        overlay_endpoint(side),
        overlay_endpoint(other),
        physical[other],
    )
}

/// A stage of `kind` on host `side` for the round trips: `pass`, or a policy stage whose
/// work is real but whose verdict lets every packet of the ping-pong through at once (an ACL
/// of rules that miss before the one that allows; a shaper at 100 Gbit/s, so it stamps
/// every packet and delays none; an overlay that encapsulates every packet for the other
/// host, whose overlay decapsulates it: `physical` holds both hosts' NIC addresses).
fn stage_of(kind: &str, side: usize, physical: Option<[SocketAddr; 2]>) -> Result<Box<dyn Stage>> {
    Ok(match kind {
        "pass" => Box::new(PassStage),
        "acl" => Box::new(
            AclStage::new(
                "default = \"deny\"\nrule = [\
                 { action = \"deny\", peer = \"192.0.2.0/24\" },\
                 { action = \"deny\", peer = \"2001:db8::/32\" },\
                 { action = \"deny\", service = 4242 },\
                 { action = \"allow\" }]\n",
            )
            .map_err(|e| anyhow!("{e}"))?,
        ),
        "shaper" => Box::new(
            ShaperStage::new(
                "granularity_ns = 1000\nslots = 4096\ncapacity = 1024\n\
                 class = [{ tenant = 0, rate_bps = 100_000_000_000, burst_bytes = 1_000_000 }]\n",
            )
            .map_err(|e| anyhow!("{e}"))?,
        ),
        "overlay" => {
            let physical = physical.context("the overlay needs both hosts' NIC addresses")?;
            Box::new(
                OverlayStage::new(&overlay_settings(side, physical))
                    .map_err(|e| anyhow!("overlay settings: {e}"))?,
            )
        }
        other => bail!("no stage kind {other:?} for the round trips (pass, acl, shaper, overlay)"),
    })
}

/// The names of host `side`'s Pony engine and of its `i`th stage of `kind`.
fn pony_name(side: usize) -> &'static str {
    ["pony-a", "pony-b"][side]
}

fn stage_name(side: usize, kind: &str, i: usize) -> String {
    match side {
        0 => format!("{kind}{i}"),
        _ => format!("peer-{kind}{i}"),
    }
}

/// Host `side`'s Pony engine on `nic`, alone or behind `stages` stages of `kind`; and the
/// stage engines.
fn host(
    side: usize,
    nic: Box<dyn Nic>,
    kind: &str,
    stages: usize,
    physical: Option<[SocketAddr; 2]>,
) -> Result<HostEngines> {
    if stages == 0 {
        return Ok((
            Box::new(PonyEngine::new(pony_name(side), nic, PonyConfig::default())),
            Vec::new(),
        ));
    }
    let made: Vec<Box<dyn Stage>> = (0..stages)
        .map(|_| stage_of(kind, side, physical))
        .collect::<Result<_>>()?;
    // The stages' headers go in front of Pony's packets: Pony's MTU leaves room for them.
    let headroom: usize = made.iter().map(|s| s.headroom()).sum();
    let mtu = nic.mtu();
    if headroom + 256 > mtu {
        bail!("the stages prepend {headroom} bytes, too much for an MTU of {mtu}");
    }
    let tag = ["a", "b"][side];
    let pool = Pool::new(
        &format!("bench-pipeline-{tag}"),
        PoolConfig::for_mtu(2048, mtu as u32, headroom as u32),
    )?;
    let (pony_end, mut up) = queue(&format!("bench-pipeline-{tag}-q0"), 256, &pool)?;
    let mut engines: Vec<Box<dyn Engine>> = Vec::new();
    let mut nic = Some(nic);
    for (i, stage) in made.into_iter().enumerate() {
        let (down, next) = if i + 1 == stages {
            let nic = nic.take().expect("one NIC");
            (Downstream::Wire(Box::new(NicWire(nic))), None)
        } else {
            let (d, u) = queue(&format!("bench-pipeline-{tag}-q{}", i + 1), 256, &pool)?;
            (Downstream::Queue(d), Some(u))
        };
        engines.push(Box::new(StageEngine::new(
            stage_name(side, kind, i),
            stage,
            up,
            down,
            32,
        )));
        match next {
            Some(u) => up = u,
            None => break,
        }
    }
    let pony = PonyEngine::new(
        pony_name(side),
        Box::new(PipeNic::new(pony_end, mtu - headroom)),
        PonyConfig::default(),
    );
    Ok((Box::new(pony), engines))
}

/// Whether stages of `kind` need the same stages on host B (the overlay: B must decapsulate
/// what A's encapsulates, and encapsulate its replies).
fn mirrored(kind: &str) -> bool {
    kind == "overlay"
}

fn start(
    cfg: &PipelineBenchConfig,
    layout: &Layout,
    path: &Path,
    kind: &str,
    stages: usize,
) -> Result<(Hosts, String)> {
    let mode = mode_of(&cfg.mode)?;
    let pair = NicKind::Udp.open_pair(path, cfg.mtu, 0)?;
    let mirror = mirrored(kind) && stages > 0;
    let (physical, peer) = if mirror {
        let parse =
            |a: &str| -> Result<SocketAddr> { a.parse().with_context(|| format!("NIC address {a:?}")) };
        (
            Some([parse(&pair.a_addr)?, parse(&pair.peer)?]),
            overlay_endpoint(1).to_string(),
        )
    } else {
        (None, pair.peer.clone())
    };
    let (pony_a, stage_engines) = host(0, pair.a, kind, stages, physical)?;
    let (pony_b, peer_engines) = host(1, pair.b, kind, if mirror { stages } else { 0 }, physical)?;
    let stage_names: Vec<String> = stage_engines.iter().map(|e| e.name().to_owned()).collect();
    let peer_stage_names: Vec<String> = peer_engines.iter().map(|e| e.name().to_owned()).collect();
    let (cores_a, cores_b) = layout.engine_cores(&cfg.mode)?;
    let group = |name: &str, engines: Vec<Box<dyn Engine>>, cores: Vec<usize>| GroupSpec {
        name: name.into(),
        mode,
        cores,
        engines,
        compacting: CompactingParams::default(),
        idle_poll: match mode {
            Mode::Dedicated => Duration::ZERO,
            _ => cfg.idle_poll.unwrap_or(mode.default_idle_poll()),
        },
        microquanta_group: None,
    };
    let options = RuntimeOptions {
        microquanta: cfg.microquanta,
        ..Default::default()
    };
    let mut a: Vec<Box<dyn Engine>> = vec![pony_a];
    a.extend(stage_engines);
    let mut b: Vec<Box<dyn Engine>> = vec![pony_b];
    b.extend(peer_engines);
    let runtimes = if mode == Mode::Dedicated && layout.shared_engine_core {
        a.extend(b);
        vec![Runtime::start(vec![group("hosts-ab", a, cores_a)], options)?]
    } else {
        vec![
            Runtime::start(vec![group("host-a", a, cores_a)], options.clone())?,
            Runtime::start(vec![group("host-b", b, cores_b)], options)?,
        ]
    };
    Ok((
        Hosts {
            runtimes,
            stage_names,
            peer_stage_names,
        },
        peer,
    ))
}

/// One measurement: the RTT histogram and, per stage, (ns, packets) from its counters.
struct Measurement {
    hist: Histogram<u64>,
    stage_ns: u64,
    stage_packets: u64,
}

fn measure(
    cfg: &PipelineBenchConfig,
    layout: &Layout,
    path: &Path,
    kind: &str,
    stages: usize,
) -> Result<Measurement> {
    let (hosts, peer) = start(cfg, layout, path, kind, stages)?;
    let find = |name: &str| {
        hosts
            .runtimes
            .iter()
            .find_map(|rt| rt.engine(name))
            .ok_or_else(|| anyhow!("{name} missing"))
    };
    let (ha, hb) = (find("pony-a")?, find("pony-b")?);
    let result = (|| {
        let conn = connect(&ha, &hb, &peer, cfg.app_wait)?;
        let stop = Arc::new(AtomicBool::new(false));
        let tid = Arc::new(AtomicI32::new(0));
        let (b, spin) = (conn.b, cfg.app_wait);
        let echo_thread = {
            let (stop, tid) = (stop.clone(), tid.clone());
            std::thread::spawn(move || echo(b, spin, None, &tid, &stop))
        };
        let mut a = conn.a;
        let measured = ping_pong(
            &mut a,
            conn.flow,
            cfg.app_wait,
            cfg.message_bytes,
            cfg.iterations,
            &Probe::clock(),
        );
        stop.store(true, Ordering::Release);
        let echoed = echo_thread.join().map_err(|_| anyhow!("the echo app panicked"))?;
        let measured = measured?;
        echoed?;
        let counters = |name: &str| -> Result<serde_json::Value> {
            let c = find(name)?
                .control_dyn(|e| e.counters())
                .map_err(|e| anyhow!("{name}: {e}"))?
                .with_context(|| format!("{name} has no counters"))?;
            let dropped = c["drops"].as_array().map_or(0, Vec::len);
            if dropped > 0 {
                bail!("{name} dropped packets: {}", c["drops"]);
            }
            Ok(c)
        };
        let (mut stage_ns, mut stage_packets) = (0, 0);
        for name in &hosts.stage_names {
            let c = counters(name)?;
            let n = |k: &str| c["counters"][k].as_u64().unwrap_or(0);
            // The NIC's own calls are Pony's cost without a pipeline too.
            stage_ns += n("ns").saturating_sub(n("wire_ns"));
            stage_packets += n("tx_packets") + n("rx_packets");
        }
        for name in &hosts.peer_stage_names {
            counters(name)?;
        }
        if mirrored(kind) {
            check_overlays(&hosts, &counters)?;
        }
        Ok(Measurement {
            hist: measured.hist,
            stage_ns,
            stage_packets,
        })
    })();
    drop((ha, hb));
    for rt in hosts.runtimes {
        drop(rt.shutdown());
    }
    result
}

/// Each host's overlay decapsulated every packet the other's encapsulated (none dropped,
/// none lost on the path): the last replies may still be on their way, so this waits a
/// little for the counts to meet.
fn check_overlays(hosts: &Hosts, counters: &dyn Fn(&str) -> Result<serde_json::Value>) -> Result<()> {
    let own = |names: &[String]| -> Result<(u64, u64)> {
        let (mut encap, mut decap) = (0, 0);
        for name in names {
            let c = counters(name)?;
            encap += c["own"]["encapsulated"].as_u64().unwrap_or(0);
            decap += c["own"]["decapsulated"].as_u64().unwrap_or(0);
        }
        Ok((encap, decap))
    };
    let deadline = std::time::Instant::now() + Duration::from_millis(500);
    loop {
        let (a, b) = (own(&hosts.stage_names)?, own(&hosts.peer_stage_names)?);
        if a.0 > 0 && b.0 > 0 && a.0 == b.1 && b.0 == a.1 {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "overlay counts do not meet: A encapsulated {} (B decapsulated {}), \
                 B encapsulated {} (A decapsulated {})",
                a.0,
                b.1,
                b.0,
                a.1
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e3
}

fn spread(values: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = values.collect();
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    if v.is_empty() {
        0.0
    } else {
        max - min
    }
}

/// Runs every round, each variant once per round in order (Pony alone first), then derives
/// the stage rows and the target from those rows.
pub fn run(cfg: &PipelineBenchConfig, path: &Path) -> Result<Report> {
    let cpus = crate::sched_bench::cpus();
    let layout = Layout {
        cpus,
        shared_engine_core: cfg.shared_engine_core,
    };
    // (stage kind, stages): Pony alone, `pass` at each count, each policy kind alone.
    let variants: Vec<(String, usize)> = std::iter::once(("pony".to_owned(), 0))
        .chain(cfg.stage_counts.iter().map(|&k| ("pass".to_owned(), k)))
        .chain(cfg.policy_kinds.iter().map(|kind| (kind.clone(), 1)))
        .collect();
    let mut pooled: Vec<Histogram<u64>> = variants.iter().map(|_| histogram()).collect();
    let mut cost: Vec<(u64, u64)> = vec![(0, 0); variants.len()];
    let mut rows = Vec::new();
    for round in 0..cfg.rounds {
        for (vi, (kind, k)) in variants.iter().enumerate() {
            let k = *k;
            let what = if k == 0 {
                "Pony alone".to_owned()
            } else {
                format!("Pony + {k} {kind} stages")
            };
            let m = measure(cfg, &layout, path, kind, k).with_context(|| format!("round {round}, {what}"))?;
            eprintln!(
                "mq-bench-pipeline: round {round} {what}: p50 {:.1} µs p99 {:.1} µs",
                us(&m.hist, 0.5),
                us(&m.hist, 0.99)
            );
            rows.push(Row {
                variant: kind.clone(),
                stages: k,
                round,
                p50_us: us(&m.hist, 0.5),
                p99_us: us(&m.hist, 0.99),
                samples: m.hist.len(),
            });
            pooled[vi].add(&m.hist).context("pooling histograms")?;
            cost[vi].0 += m.stage_ns;
            cost[vi].1 += m.stage_packets;
        }
    }
    let pony_p50 = us(&pooled[0], 0.5);
    let pony_p99 = us(&pooled[0], 0.99);
    let round_p50 = |kind: &str, k: usize, round: usize| {
        rows.iter()
            .find(|r| r.variant == kind && r.stages == k && r.round == round)
            .map_or(f64::NAN, |r| r.p50_us)
    };
    let stages: Vec<StageRow> = variants
        .iter()
        .enumerate()
        .skip(1)
        .map(|(vi, (kind, k))| (vi, kind, *k))
        .map(|(vi, kind, k)| StageRow {
            // A mirrored stage's row is one stage on each host: the round trip crosses
            // A's and B's, each once per direction.
            name: if k == 1 && mirrored(kind) {
                format!("{kind} (with the peer's)")
            } else if k == 1 {
                kind.clone()
            } else {
                format!("{kind}, {k} in a row (per stage)")
            },
            ns_per_packet: cost[vi].0 as f64 / cost[vi].1.max(1) as f64,
            added_p50_us: (us(&pooled[vi], 0.5) - pony_p50) / k as f64,
            added_p99_us: (us(&pooled[vi], 0.99) - pony_p99) / k as f64,
            added_p50_spread_us: spread(
                (0..cfg.rounds).map(|r| (round_p50(kind, k, r) - round_p50("pony", 0, r)) / k as f64),
            ),
        })
        .collect();
    let target = Target::evaluate(pony_p50, &stages);
    Ok(Report {
        platform: crate::modes_bench::platform(cpus),
        path: path.name().into(),
        nic: "udp".into(),
        mode: cfg.mode.clone(),
        message_bytes: cfg.message_bytes,
        rounds: cfg.rounds,
        iterations: cfg.iterations,
        hosts: format!(
            "{}; stages in host A's group ({}; an overlay's peer stage in host B's), apps {}; {}",
            path.hosts_note(),
            cfg.mode,
            cfg.app_wait.describe(),
            layout.describe()
        ),
        pony_p50_us: pony_p50,
        pony_p99_us: pony_p99,
        pony_p50_spread_us: spread((0..cfg.rounds).map(|r| round_p50("pony", 0, r))),
        stages,
        shaping: match &cfg.shaping {
            Some(s) => shaping::run(s).context("shaping")?,
            None => Vec::new(),
        },
        isolation_violations: if cfg.isolation_packets == 0 {
            None
        } else {
            Some(
                isolation::run(cfg.isolation_packets)
                    .context("isolation")?
                    .violations,
            )
        },
        rows,
        target,
    })
}

/// The table people read: one line per variant, the stage rows and the target.
pub fn table(r: &Report) -> String {
    let mut out = format!(
        "\nPony {} B ping-pong on {} ({}), {} rounds × {} round trips per variant\n",
        r.message_bytes, r.path, r.mode, r.rounds, r.iterations
    );
    out += &format!(
        "  Pony alone: p50 {:.1} µs (spread {:.1}), p99 {:.1} µs\n",
        r.pony_p50_us, r.pony_p50_spread_us, r.pony_p99_us
    );
    for s in &r.stages {
        out += &format!(
            "  {:<32} {:>7.0} ns/packet  +{:.2} µs p50 (spread {:.2})  +{:.2} µs p99  ({:.1} % of Pony's p50)\n",
            s.name,
            s.ns_per_packet,
            s.added_p50_us,
            s.added_p50_spread_us,
            s.added_p99_us,
            100.0 * s.added_p50_us / r.pony_p50_us
        );
    }
    out += &format!("  target: {}\n", r.target.text);
    out
}
