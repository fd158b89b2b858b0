//! `mq-bench-pipeline`'s report: what each stage of a Pony engine's pipeline adds to Pony's
//! round trip, against Pony alone on the same path in the same run.
//!
//! ```text
//! machine, kernel, accel, scheduler, cpus, path ("veth" | "loopback"), nic ("udp"),
//! mode, message_bytes, rounds, iterations, hosts: str,
//! pony_p50_us, pony_p99_us, pony_p50_spread_us,
//! stages: [{name, ns_per_packet, added_p50_us, added_p99_us, added_p50_spread_us}],
//! shaping: [{configured_mbps, achieved_mbps, tenants, fairness, bin_ms, rate_over_time_mbps}],
//! isolation_violations (null: no isolating stage ran),
//! rows: [{variant, stages, round, p50_us, p99_us, samples}],
//! target: {bound_pct, worst_added_pct, met, text}
//! ```
//!
//! Rounds are interleaved (Pony alone, Pony + 1 stage, Pony + 2 stages, then again), so
//! that a disturbance on a shared machine hits every variant alike; `*_spread_us` is the
//! largest minus the smallest per-round value. `stages` are derived from the rows of this
//! run only: a stage's added p50 is (p50 of Pony + k stages − p50 of Pony alone) / k over
//! the pooled rounds. `shaping` holds one row per configured rate of the shaper stage's run
//! against the real clock (`mq_experiments::pipeline_bench::shaping`), with its rate over time.

use serde::{Deserialize, Serialize};

use crate::{Platform, Tag, Tagged};

/// The target: each stage adds at most this share of Pony's 64 B p50 RTT.
pub const STAGE_BOUND_PCT: f64 = 10.0;

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    #[serde(flatten)]
    pub platform: Platform,
    /// `veth` (two network namespaces) or `loopback`.
    pub path: String,
    /// The NIC the last stage (or Pony alone) owns.
    pub nic: String,
    /// Engine mode of the Pony engines and the stages.
    pub mode: String,
    /// Ping-pong message size.
    pub message_bytes: usize,
    /// Interleaved rounds per variant.
    pub rounds: usize,
    /// Round trips per round and variant.
    pub iterations: usize,
    /// How the hosts and stages run.
    pub hosts: String,
    /// Pony alone: p50 and p99 RTT over all its rounds.
    pub pony_p50_us: f64,
    pub pony_p99_us: f64,
    /// Largest minus smallest per-round p50 of Pony alone.
    pub pony_p50_spread_us: f64,
    /// What each stage kind adds, per stage.
    pub stages: Vec<StageRow>,
    /// Shaping accuracy rows (filled when shaping stages are benchmarked).
    pub shaping: Vec<ShapingRow>,
    /// Packets delivered across tenants or past a deny rule during the run; `null` when no
    /// stage of the run separates tenants or denies anything (so nothing was checked).
    pub isolation_violations: Option<u64>,
    /// Every (variant, round) measurement.
    pub rows: Vec<Row>,
    pub target: Target,
}

impl Tagged for Report {
    const TAG: Tag = Tag {
        program: "mq-bench-pipeline",
        prefix: "MQ_BENCH_PIPELINE_JSON ",
    };
}

/// One stage kind's cost. The `overlay (with the peer's)` row is one overlay stage on each
/// host (A's encapsulates what B's decapsulates, and the other way on the reply), so its
/// added RTT includes the peer's stage; its `ns_per_packet` is host A's stage's alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRow {
    /// The stage kind, e.g. `pass`.
    pub name: String,
    /// Time its engine spends per packet (stage plus queue pops and pushes, not the NIC's
    /// own send and receive calls, which Pony alone pays too), from the stage engines'
    /// own counters.
    pub ns_per_packet: f64,
    /// Added p50 RTT per stage against Pony alone.
    pub added_p50_us: f64,
    /// Added p99 RTT per stage against Pony alone.
    pub added_p99_us: f64,
    /// Largest minus smallest per-round added p50.
    pub added_p50_spread_us: f64,
}

/// Shaping accuracy at one configured rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShapingRow {
    pub configured_mbps: f64,
    pub achieved_mbps: f64,
    pub tenants: u32,
    /// Smallest over largest tenant rate (1 is perfectly fair).
    pub fairness: f64,
    /// Width of a `rate_over_time_mbps` bin, ms.
    #[serde(default)]
    pub bin_ms: f64,
    /// Rate per time bin, one value per tenant (Mbit/s): the rate-over-time plot.
    #[serde(default)]
    pub rate_over_time_mbps: Vec<Vec<f64>>,
}

/// One round of one variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// `pony` or the stage kind of the stages, e.g. `pass`.
    pub variant: String,
    /// Stages between Pony and the NIC on host A (0 for Pony alone).
    pub stages: usize,
    pub round: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub samples: u64,
}

/// The target, evaluated from the run's own rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// Bound on each stage's added p50, % of Pony's p50 ([`STAGE_BOUND_PCT`]).
    pub bound_pct: f64,
    /// The largest added p50 of any stage row, % of Pony's p50.
    pub worst_added_pct: f64,
    pub met: bool,
    /// One line for people.
    pub text: String,
}

impl Target {
    /// Evaluates the bound over `stages` against `pony_p50_us`.
    pub fn evaluate(pony_p50_us: f64, stages: &[StageRow]) -> Self {
        let worst = stages
            .iter()
            .map(|s| 100.0 * s.added_p50_us / pony_p50_us)
            .fold(f64::NEG_INFINITY, f64::max);
        let worst = if worst.is_finite() { worst } else { 0.0 };
        let met = !stages.is_empty() && pony_p50_us > 0.0 && worst <= STAGE_BOUND_PCT;
        let text = format!(
            "each stage adds ≤ {STAGE_BOUND_PCT:.0} % of Pony's p50 ({pony_p50_us:.1} µs): worst {worst:.1} % — {}",
            if met { "met" } else { "not met" }
        );
        Self {
            bound_pct: STAGE_BOUND_PCT,
            worst_added_pct: worst,
            met,
            text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{platform, round_trip};

    fn stage(added: f64) -> StageRow {
        StageRow {
            name: "pass".into(),
            ns_per_packet: 300.0,
            added_p50_us: added,
            added_p99_us: added * 2.0,
            added_p50_spread_us: 0.5,
        }
    }

    #[test]
    fn the_target_is_evaluated_from_the_stage_rows() {
        assert!(Target::evaluate(20.0, &[stage(1.0), stage(2.0)]).met);
        let t = Target::evaluate(20.0, &[stage(1.0), stage(2.5)]);
        assert!(!t.met && (t.worst_added_pct - 12.5).abs() < 1e-9, "{t:?}");
        assert!(
            !Target::evaluate(20.0, &[]).met,
            "no stage measured is not a met target"
        );
    }

    #[test]
    fn report_round_trips() {
        let stages = vec![stage(1.0)];
        round_trip(&Report {
            platform: platform("native", "eevdf"),
            path: "veth".into(),
            nic: "udp".into(),
            mode: "spreading".into(),
            message_bytes: 64,
            rounds: 3,
            iterations: 1000,
            hosts: "in-process".into(),
            pony_p50_us: 20.0,
            pony_p99_us: 40.0,
            pony_p50_spread_us: 1.0,
            target: Target::evaluate(20.0, &stages),
            stages,
            shaping: Vec::new(),
            isolation_violations: None,
            rows: vec![Row {
                variant: "pony".into(),
                stages: 0,
                round: 0,
                p50_us: 20.0,
                p99_us: 40.0,
                samples: 1000,
            }],
        });
    }
}
