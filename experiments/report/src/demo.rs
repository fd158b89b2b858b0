//! `mq-demo`'s report: the wakeup latency of a periodic thread that burns CPU after each
//! wakeup, next to CPU hogs, five ways in one boot, measured in interleaved rounds.
//!
//! ```text
//! kernel: str, cpus: int, period_us: int, work_us: int, hogs: int,
//! scheduler_args: [str]            scx_microquanta's arguments (bandwidth first)
//! wakeup_latency_us: {eevdf|fifo|normal|microquanta|fifo-scx:
//!                     {p50, p90, p99, max: µs, samples: int}}  pooled over all rounds
//! rounds, p99_ratio_eevdf_over_microquanta, p99_ratio_fifo_over_microquanta,
//! p99_ratio_fifo_scx_over_microquanta, stalls, scheduler_cycle_ms, warmup   see [`crate::rounds`]
//! ```
//!
//! `cargo xtask demo` stores it in `target/demo/summary.json` with `accel` (how qemu runs the
//! guest) added.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::rounds::{RoundRow, Spread, Stalls, Warmup};
use crate::{LatencySummary, Tag, Tagged};

/// Keys of [`Report::wakeup_latency_us`]: no BPF scheduler (the kernel's own baseline),
/// SCHED_FIFO with no BPF scheduler (the emulator's floor), scx_microquanta loaded with the
/// thread left in the fair share, with the thread in the class, and with the thread in
/// SCHED_FIFO. The last is sched_ext's own floor: the hogs the thread preempts are then
/// sched_ext tasks, and putting one away takes sched_ext's path and our callbacks, which no
/// class a BPF scheduler offers can avoid.
pub const EEVDF: &str = "eevdf";
pub const FIFO: &str = "fifo";
pub const NORMAL: &str = "normal";
pub const MICROQUANTA: &str = "microquanta";
pub const FIFO_SCX: &str = "fifo-scx";
/// The keys in the order each round measures them.
pub const POLICIES: [&str; 5] = [EEVDF, FIFO, NORMAL, MICROQUANTA, FIFO_SCX];

/// Everything one `mq-demo` run measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub kernel: String,
    pub cpus: usize,
    /// Sleep period of the measured thread.
    pub period_us: u64,
    /// CPU time it burns after each wakeup.
    pub work_us: u64,
    /// CPU hog processes throughout.
    pub hogs: usize,
    /// The arguments scx_microquanta runs with.
    pub scheduler_args: Vec<String>,
    /// Per policy ([`POLICIES`]), pooled over the rounds.
    pub wakeup_latency_us: BTreeMap<String, LatencySummary>,
    /// Per round and policy.
    #[serde(default)]
    pub rounds: Vec<RoundRow>,
    /// Per-round EEVDF p99 / MicroQuanta p99.
    #[serde(default)]
    pub p99_ratio_eevdf_over_microquanta: Option<Spread>,
    /// Per-round SCHED_FIFO p99 / MicroQuanta p99 (below 1: FIFO sooner).
    #[serde(default)]
    pub p99_ratio_fifo_over_microquanta: Option<Spread>,
    /// Per-round p99 of SCHED_FIFO with scx_microquanta loaded / MicroQuanta p99.
    #[serde(default)]
    pub p99_ratio_fifo_scx_over_microquanta: Option<Spread>,
    /// The emulator stalls the probe saw, and the ratios without the wakeups they hit.
    #[serde(default)]
    pub stalls: Option<Stalls>,
    /// Median time to load, settle and unload the scheduler once (a round's overhead).
    #[serde(default)]
    pub scheduler_cycle_ms: Option<f64>,
    /// The class warm-up after each load of the scheduler, in no figure above.
    #[serde(default)]
    pub warmup: Option<Warmup>,
}

impl Tagged for Report {
    const TAG: Tag = Tag {
        program: "mq-demo",
        prefix: "MQ_DEMO_JSON ",
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{latency, round_trip};

    #[test]
    fn the_report_round_trips_through_its_tagged_line() {
        let report = Report {
            kernel: "7.3.4+deb13-cloud-amd64".into(),
            cpus: 2,
            period_us: 1000,
            work_us: 300,
            hogs: 8,
            scheduler_args: vec!["--period-us=1000".into(), "--runtime-us=500".into()],
            wakeup_latency_us: POLICIES
                .iter()
                .zip([900.0, 40.0, 800.0, 50.0, 45.0])
                .map(|(p, p50)| (p.to_string(), latency(p50)))
                .collect(),
            rounds: vec![crate::rounds::RoundRow {
                round: 0,
                policy: EEVDF.into(),
                p50: 900.0,
                p99: 3600.0,
                max: 7200.0,
                samples: 400,
                stalled_samples: 1,
                p99_without_stalls: Some(3000.0),
            }],
            p99_ratio_eevdf_over_microquanta: Spread::of(&[12.0, 8.0, 20.0]),
            p99_ratio_fifo_over_microquanta: Spread::of(&[0.8]),
            p99_ratio_fifo_scx_over_microquanta: Spread::of(&[0.9]),
            stalls: None,
            scheduler_cycle_ms: Some(1500.0),
            warmup: Some(crate::rounds::Warmup {
                wakeups_per_load: 20,
                first_us: vec![2372.0, 1516.0],
                rest_us: latency(140.0),
            }),
        };
        round_trip(&report);
        assert!(crate::tagged_line(&report).unwrap().starts_with("MQ_DEMO_JSON {"));
    }
}
