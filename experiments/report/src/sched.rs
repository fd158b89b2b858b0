//! `mq-bench-sched`'s report: the wakeup latency of MicroQuanta against EEVDF, SCHED_FIFO
//! and SCHED_DEADLINE, its bandwidth conformance, and cyclictest, all from one boot.
//!
//! ```text
//! kernel: str                      uname -r
//! cpus: int                        online CPUs
//! quick: bool                      --quick (short windows, few samples)
//! hogs: int                        stress-ng CPU hogs during latency runs
//! wake_period_us: int              sleep period of the latency probe (1000)
//! scheduler: {period_us, runtime_us}        MicroQuanta (and DEADLINE) bandwidth
//! wakeup_latency_us: {eevdf|fifo|deadline|microquanta|eevdf_repeat:
//!                     {p50, p90, p99, max: µs, samples: int}}
//!                                  eevdf_repeat: EEVDF again at the end (drift check)
//! ratios: {"<eevdf|fifo|deadline|eevdf_repeat>_<p50|p90|p99>_over_mq_<same>": f | null}
//!                                  baseline / MicroQuanta; > 1: MicroQuanta sooner
//! deadline_period_min_lowered: bool         sched_deadline_period_min_us is
//!                                  lowered (and restored) to admit the period
//! conformance: [{period_us, runtime_us, mq_share, other_share,
//!                expected_mq_share (= runtime/period), alone_share: f | null,
//!                other_max_gap_us, mq_max_gap_us (longest time each spinner
//!                is off the CPU), sched_overrun_max_us: f | null (the
//!                scheduler's own), enforcement: {overrun_p50_us, overrun_p99_us,
//!                overrun_max_us, yields, yield_p50_us, yield_p99_us, yield_max_us} | null,
//!                window_ms, cpu}]
//! cyclictest_us: {microquanta|fifo: {min, avg, max, p50|p90|p99: µs | null
//!                 (null: beyond the 100 ms histogram), cycles, overflows}}
//! max_overrun_us: f | null         max of sched_overrun_max_us
//! groups: [{scenario: "separate"|"shared", group: name | "normal",
//!           period_us, runtime_us, expected_share: f | null (null: normal work),
//!           share, cpu, window_ms}]   per-group conformance (empty if not run)
//! rounds: {work_us, wake_period_us, hogs, samples, period_us, runtime_us,
//!          wakeup_latency_us, rows, p99_ratio_*_over_microquanta, stalls,
//!          scheduler_cycle_ms, warmup} | null   the demo's workload in interleaved rounds
//!                                  (`crate::rounds::RoundsReport`)
//! note: "TCG: only ratios within one boot are meaningful"
//! ```
//!
//! `cargo xtask` stores it in `summary.json` with two fields of its own: `accel` (how qemu
//! runs the guest) and `machine` (what the guest runs on).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{LatencySummary, Tag, Tagged};

/// Keys of [`Report::wakeup_latency_us`], the classes compared; FIFO and MicroQuanta are
/// also the keys of [`Report::cyclictest_us`].
pub const EEVDF: &str = "eevdf";
pub const FIFO: &str = "fifo";
pub const DEADLINE: &str = "deadline";
pub const MICROQUANTA: &str = "microquanta";
/// EEVDF measured again after the scheduler detaches: how far the machine (a shared host
/// under TCG) drifts while the others are measured.
pub const EEVDF_REPEAT: &str = "eevdf_repeat";

/// Everything one `mq-bench-sched` run measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub kernel: String,
    pub cpus: usize,
    /// `--quick`: short windows, few samples.
    #[serde(default)]
    pub quick: bool,
    /// CPU hog processes during the latency runs.
    pub hogs: usize,
    /// Sleep period of the latency probe.
    pub wake_period_us: u64,
    /// The bandwidth of the latency and cyclictest runs.
    pub scheduler: Bandwidth,
    /// Per class ([`EEVDF`], [`FIFO`], [`DEADLINE`], [`MICROQUANTA`], [`EEVDF_REPEAT`]).
    pub wakeup_latency_us: BTreeMap<String, LatencySummary>,
    /// `<baseline>_<percentile>_over_mq_<percentile>`: null where a side is missing or the
    /// divisor is not positive.
    pub ratios: BTreeMap<String, Option<f64>>,
    /// `sched_deadline_period_min_us` is lowered (and restored) for the deadline run.
    pub deadline_period_min_lowered: bool,
    pub conformance: Vec<Conformance>,
    /// Per class ([`FIFO`], [`MICROQUANTA`]); empty when cyclictest does not run.
    #[serde(default)]
    pub cyclictest_us: BTreeMap<String, Cyclictest>,
    /// The largest [`Conformance::sched_overrun_max_us`]; null if none is measured.
    pub max_overrun_us: Option<f64>,
    /// Per-group conformance, one row per spinner; empty when not measured.
    #[serde(default)]
    pub groups: Vec<GroupConformance>,
    /// The demo's workload in interleaved rounds ([`crate::rounds`]); null when not run.
    #[serde(default)]
    pub rounds: Option<crate::rounds::RoundsReport>,
    pub note: String,
    /// `scx_microquanta` vs `scx_mqland` on the same workloads; absent when not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqland: Option<crate::mqland::MqlandComparison>,
}

impl Tagged for Report {
    const TAG: Tag = Tag {
        program: "mq-bench-sched",
        prefix: "MQ_BENCH_SCHED_JSON ",
    };
}

/// The scheduler bandwidth the latency and cyclictest runs use (also SCHED_DEADLINE's).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bandwidth {
    pub period_us: u64,
    pub runtime_us: u64,
}

/// One (period, runtime) configuration, measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conformance {
    pub period_us: u64,
    pub runtime_us: u64,
    /// CPU share of the MicroQuanta spinner next to a normal spinner.
    pub mq_share: f64,
    /// CPU share of the normal spinner next to it.
    pub other_share: f64,
    /// `runtime / period`: what the class promises while normal work competes.
    pub expected_mq_share: f64,
    /// CPU share of the MicroQuanta spinner alone on the CPU (work conservation: expected
    /// close to 1).
    pub alone_share: Option<f64>,
    /// Longest time the normal spinner sees itself off the CPU, in µs.
    pub other_max_gap_us: f64,
    /// Longest time the MicroQuanta spinner sees itself off the CPU, in µs.
    pub mq_max_gap_us: f64,
    /// Largest budget overrun on this CPU as the scheduler itself times it (BPF), over the
    /// paired window; null if none or unavailable.
    pub sched_overrun_max_us: Option<f64>,
    /// The scheduler's enforcement histograms over the paired window; null if unavailable.
    #[serde(default)]
    pub enforcement: Option<Enforcement>,
    pub window_ms: u64,
    pub cpu: usize,
}

/// How the scheduler enforced the budget on the conformance CPU over a paired window, from
/// its own BPF histograms (`scx_microquanta --monitor --stats-json`), in µs. Overrun: class
/// time past the instant the budget ran out while normal work waited. Yield
/// (throttle-to-preempt): from the decision that class work must yield to the class task
/// leaving the CPU. Percentiles are over the window (null: no event); maxima since the
/// scheduler was loaded for this pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enforcement {
    pub overrun_p50_us: Option<f64>,
    pub overrun_p99_us: Option<f64>,
    pub overrun_max_us: Option<f64>,
    pub yields: u64,
    pub yield_p50_us: Option<f64>,
    pub yield_p99_us: Option<f64>,
    pub yield_max_us: Option<f64>,
}

impl Conformance {
    /// `|mq_share - expected_mq_share|` in percentage points.
    pub fn mq_error_points(&self) -> f64 {
        (self.mq_share - self.expected_mq_share).abs() * 100.0
    }
}

/// One spinner of a per-group conformance scenario: a class group's member, or the normal
/// thread next to them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupConformance {
    /// `separate` (each group next to a normal spinner on its own CPU) or `shared` (both
    /// groups and a normal spinner on one CPU).
    pub scenario: String,
    /// The class group's name, or `normal`.
    pub group: String,
    pub period_us: Option<u64>,
    pub runtime_us: Option<u64>,
    /// `runtime / period`; null for the normal spinner (it gets what the groups leave).
    pub expected_share: Option<f64>,
    /// CPU time over the window.
    pub share: f64,
    pub cpu: usize,
    pub window_ms: u64,
}

impl GroupConformance {
    /// `|share - expected_share|` in percentage points; `None` for normal work.
    pub fn error_points(&self) -> Option<f64> {
        self.expected_share.map(|e| (self.share - e).abs() * 100.0)
    }
}

/// One cyclictest run, in µs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cyclictest {
    pub min: f64,
    pub avg: f64,
    pub max: f64,
    /// From cyclictest's histogram; null when it falls beyond the histogram's range.
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    /// Wakeups measured.
    pub cycles: u64,
    /// Wakeups later than the histogram's range.
    pub overflows: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{latency, round_trip};

    /// A report as the program prints it, trimmed: two classes, one cyclictest run.
    fn sample() -> Report {
        let latency = |p50: f64| serde_json::to_value(latency(p50)).unwrap();
        serde_json::from_value(serde_json::json!({
            "kernel": "6.12.38+deb13-cloud-amd64", "cpus": 2, "quick": true, "hogs": 4,
            "wake_period_us": 1000, "scheduler": {"period_us": 40, "runtime_us": 20},
            "wakeup_latency_us": {EEVDF: latency(900.0), MICROQUANTA: latency(50.0)},
            "ratios": {"eevdf_p99_over_mq_p99": 18.0, "fifo_p99_over_mq_p99": null},
            "deadline_period_min_lowered": true,
            "conformance": [
                {"period_us": 40, "runtime_us": 20, "mq_share": 0.5, "other_share": 0.5,
                 "expected_mq_share": 0.5, "alone_share": 1.0, "other_max_gap_us": 800.0,
                 "mq_max_gap_us": 900.0, "sched_overrun_max_us": 12.0, "window_ms": 2000, "cpu": 1},
                {"period_us": 1000, "runtime_us": 250, "mq_share": 0.1875, "other_share": 0.8125,
                 "expected_mq_share": 0.25, "alone_share": null, "other_max_gap_us": 1200.0,
                 "mq_max_gap_us": 4000.0, "sched_overrun_max_us": null, "window_ms": 2000, "cpu": 1}],
            "cyclictest_us": {MICROQUANTA: {"min": 6.0, "avg": 40.0, "max": 150000.0, "p50": 25.0,
                "p90": 70.0, "p99": null, "cycles": 400, "overflows": 3}},
            "max_overrun_us": 12.0, "note": "TCG: only ratios within one boot are meaningful"
        }))
        .unwrap()
    }

    #[test]
    fn the_report_round_trips_through_its_tagged_line() {
        round_trip(&sample());
        let line = crate::tagged_line(&sample()).unwrap();
        assert!(line.starts_with("MQ_BENCH_SCHED_JSON {"), "{line}");
        assert!(line.contains("\"fifo_p99_over_mq_p99\":null"), "{line}");
    }

    #[test]
    fn quick_and_cyclictest_may_be_missing() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v.as_object_mut().unwrap().remove("quick");
        v.as_object_mut().unwrap().remove("cyclictest_us");
        let r: Report = serde_json::from_value(v).unwrap();
        assert!(!r.quick);
        assert!(r.cyclictest_us.is_empty());
    }

    #[test]
    fn error_points_are_absolute_percentage_points() {
        let quarter = sample().conformance.remove(1);
        let entry = |mq_share| Conformance {
            mq_share,
            ..quarter.clone()
        };
        assert!((entry(0.31).mq_error_points() - 6.0).abs() < 1e-9);
        assert!((entry(0.19).mq_error_points() - 6.0).abs() < 1e-9);
    }
}
