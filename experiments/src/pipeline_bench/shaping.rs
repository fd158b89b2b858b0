// SPDX-License-Identifier: GPL-2.0-only
//! The shaping part of the pipeline bench: the `shaper` stage (snap-policy) in a real
//! `StageEngine`, between a real descriptor queue and a wire that counts what leaves, fed by
//! a greedy local sender of several tenants, all on one thread against the real clock.
//!
//! ```text
//!  greedy sender (tenants 1..n, round robin, retries what the full queue hands back)
//!    ═ queue ═▶ StageEngine(shaper: one class per tenant at the configured rate) ─▶ CountingWire
//! ```
//!
//! Per configured rate: each tenant's achieved rate over the run after a warm-up, their
//! mean, the fairness (smallest over largest tenant), and the rate over time in bins. This
//! measures the stage and the framework against a real clock, not Pony's flows (whose
//! congestion control reacts to the shaper's delay; `host/tests/policy_hosts.rs` covers
//! Pony through the stage).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use mq_report::pipeline::ShapingRow;
use snap_pipeline::{
    queue, Direction, Downstream, Meta, Peer, Pool, PoolConfig, StageEngine, Wire, WireError,
};
use snap_policy::stage::ShaperStage;
use snap_runtime::{Engine, WakeSource};

/// What to run.
#[derive(Debug, Clone)]
pub struct ShapingBenchConfig {
    /// Configured rate per tenant, Mbit/s, one run each.
    pub rates_mbps: Vec<f64>,
    /// Tenants, each with its own class at the rate.
    pub tenants: u32,
    /// Length of each run (the first tenth is warm-up).
    pub seconds: f64,
    /// Bytes per packet.
    pub packet_bytes: usize,
    /// Width of a rate-over-time bin.
    pub bin: Duration,
}

/// Bytes per tenant, in total after the warm-up and per time bin.
struct Counts {
    start: Instant,
    warmup_end: Instant,
    bin: Duration,
    after_warmup: Vec<u64>,
    bins: Vec<Vec<u64>>,
}

#[derive(Clone)]
struct CountingWire(Arc<Mutex<Counts>>);

impl Wire for CountingWire {
    fn send(&mut self, packet: &[u8], _to: Peer) -> Result<(), WireError> {
        let now = Instant::now();
        let mut c = self.0.lock().unwrap();
        // The sender writes the tenant (1..) in the first byte.
        let tenant = usize::from(packet[0]) - 1;
        if now >= c.warmup_end {
            c.after_warmup[tenant] += packet.len() as u64;
        }
        let bin = (now.duration_since(c.start).as_nanos() / c.bin.as_nanos()) as usize;
        let tenants = c.after_warmup.len();
        if c.bins.len() <= bin {
            c.bins.resize(bin + 1, vec![0; tenants]);
        }
        c.bins[bin][tenant] += packet.len() as u64;
        Ok(())
    }

    fn recv(&mut self, _max: usize, _deliver: &mut dyn FnMut(&[u8], Peer)) -> Result<usize, WireError> {
        Ok(0)
    }

    fn wake_source(&self) -> Option<WakeSource> {
        None
    }
}

/// Runs every configured rate in turn: one row each, with its rate over time.
pub fn run(cfg: &ShapingBenchConfig) -> Result<Vec<ShapingRow>> {
    cfg.rates_mbps.iter().map(|&rate| run_one(cfg, rate)).collect()
}

fn run_one(cfg: &ShapingBenchConfig, rate_mbps: f64) -> Result<ShapingRow> {
    let tenants = cfg.tenants.max(1);
    let rate_bps = (rate_mbps * 1e6) as u64;
    let packet_ns = cfg.packet_bytes as f64 * 8e9 / rate_bps as f64;
    // Slots of a tenth of a packet time at most (10 µs at most), a horizon of 4096 slots.
    let granularity_ns = ((packet_ns / 10.0) as u64).clamp(100, 10_000);
    let classes: Vec<String> = (1..=tenants)
        .map(|t| {
            format!(
                "{{ tenant = {t}, rate_bps = {rate_bps}, burst_bytes = {} }}",
                10 * cfg.packet_bytes
            )
        })
        .collect();
    let settings = format!(
        "granularity_ns = {granularity_ns}\nslots = 4096\ncapacity = 4096\nclass = [{}]\n",
        classes.join(", ")
    );
    let stage = ShaperStage::new(&settings).map_err(|e| anyhow!("shaper settings: {e}"))?;
    let pool = Pool::new(
        "bench-shaping",
        PoolConfig::for_mtu(8192, cfg.packet_bytes as u32, 0),
    )?;
    let (mut sender, up) = queue("bench-shaping-q0", 1024, &pool)?;
    let start = Instant::now();
    let length = Duration::from_secs_f64(cfg.seconds);
    let warmup = length / 10;
    let counts = Arc::new(Mutex::new(Counts {
        start,
        warmup_end: start + warmup,
        bin: cfg.bin,
        after_warmup: vec![0; tenants as usize],
        bins: Vec::new(),
    }));
    let wire = CountingWire(counts.clone());
    let mut engine = StageEngine::new(
        "shaper",
        Box::new(stage),
        up,
        Downstream::Wire(Box::new(wire)),
        64,
    );
    let payload: Vec<Vec<u8>> = (1..=tenants)
        .map(|t| {
            let mut p = vec![0u8; cfg.packet_bytes];
            p[0] = t as u8;
            p
        })
        .collect();
    let mut next_tenant = 0usize;
    let mut retry = None;
    while start.elapsed() < length {
        // The sender offers until the queue is full (backpressure), then the engine steps.
        for _ in 0..256 {
            let pkt = match retry.take() {
                Some(pkt) => pkt,
                None => {
                    let Some(mut pkt) = pool.alloc(Direction::Tx) else {
                        break;
                    };
                    let t = next_tenant;
                    next_tenant = (next_tenant + 1) % tenants as usize;
                    pkt.copy_from(&payload[t]).map_err(|e| anyhow!("{e:?}"))?;
                    pkt.set_peer(Peer::Wire);
                    pkt.set_meta(Meta {
                        tenant: t as u32 + 1,
                        ..Meta::default()
                    });
                    pkt
                }
            };
            if let Err(pkt) = sender.push(pkt) {
                retry = Some(pkt);
                break;
            }
        }
        sender.flush();
        engine.run(Instant::now());
    }
    let end = Instant::now();
    let c = counts.lock().unwrap();
    let window = end.duration_since(c.warmup_end).as_secs_f64();
    let per_tenant: Vec<f64> = c
        .after_warmup
        .iter()
        .map(|&b| b as f64 * 8.0 / window / 1e6)
        .collect();
    let achieved = per_tenant.iter().sum::<f64>() / per_tenant.len() as f64;
    let max = per_tenant.iter().cloned().fold(0.0, f64::max);
    let min = per_tenant.iter().cloned().fold(f64::INFINITY, f64::min);
    let bin_s = cfg.bin.as_secs_f64();
    // The last bin was cut short by the end of the run: left out, not drawn as a dip.
    let whole_bins = c.bins.len().saturating_sub(1);
    let series_mbps: Vec<Vec<f64>> = c.bins[..whole_bins]
        .iter()
        .map(|bin| bin.iter().map(|&b| b as f64 * 8.0 / bin_s / 1e6).collect())
        .collect();
    let sc = engine.stage_counters();
    eprintln!(
        "mq-bench-pipeline: shaping {rate_mbps} Mbit/s × {tenants} tenants: {achieved:.2} Mbit/s achieved \
         ({per_tenant:.2?}); shaper engine {:.0} ns/packet",
        sc.ns as f64 / sc.tx_packets.max(1) as f64
    );
    Ok(ShapingRow {
        configured_mbps: rate_mbps,
        achieved_mbps: achieved,
        tenants,
        fairness: if max > 0.0 { min / max } else { 0.0 },
        bin_ms: bin_s * 1e3,
        rate_over_time_mbps: series_mbps,
    })
}
