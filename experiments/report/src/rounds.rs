//! Interleaved rounds of a latency comparison, and the emulator stalls seen during them: the
//! part of `mq-demo`'s report (and of `mq-bench-sched`'s) that keeps one round's tail from
//! deciding a ratio.
//!
//! ```text
//! rounds: [{round: int, policy: str, p50, p99, max: µs, samples: int,
//!           stalled_samples: int, p99_without_stalls: µs | null}]
//! p99_ratio_eevdf_over_microquanta: {median, min, max: f, rounds: int}   per-round ratios
//! p99_ratio_fifo_over_microquanta:  {median, min, max, rounds}
//! p99_ratio_fifo_scx_over_microquanta: {median, min, max, rounds}   (absent in older reports)
//! stalls: {rule: str, probe_interval_us, threshold_us: int, probe: {p50, p90, p99, max, samples},
//!          events: int, longest_us: f, listed: [{round, policy, at_ms, late_us}],
//!          p99_ratio_eevdf_over_microquanta_without_stalls: spread | null,
//!          p99_ratio_fifo_over_microquanta_without_stalls: spread | null}
//! scheduler_cycle_ms: f | null     median time to load + settle + unload the scheduler
//! warmup: {wakeups_per_load: int, first_us: [µs], rest_us: {p50, p90, p99, max, samples}}
//!         | null                    the class warm-up after each load, in no figure above
//! ```
//!
//! A round measures every policy once, in a fixed order, for the same number of wakeups.
//! The ratio of a round divides the baseline's p99 by MicroQuanta's p99 of the same round;
//! [`Spread`] is the median, min and max of those per-round ratios.

use serde::{Deserialize, Serialize};

use crate::LatencySummary;

/// One policy in one round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundRow {
    /// 0-based round number.
    pub round: usize,
    /// The policy's key (as in `wakeup_latency_us`).
    pub policy: String,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub samples: u64,
    /// Wakeups whose wait overlapped an emulator stall ([`Stalls::rule`]).
    pub stalled_samples: u64,
    /// p99 of the other wakeups; null when every wakeup was stalled.
    pub p99_without_stalls: Option<f64>,
}

/// Median, min and max of per-round ratios.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Rounds with a ratio (both p99s positive).
    pub rounds: usize,
}

impl Spread {
    /// The spread of `ratios`, `None` when there are none. The median of an even count is
    /// the mean of the middle two.
    pub fn of(ratios: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = ratios.iter().copied().filter(|r| r.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Self {
            median,
            min: v[0],
            max: v[n - 1],
            rounds: n,
        })
    }
}

/// One emulator stall that hit a measured wakeup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StallEvent {
    pub round: usize,
    /// The policy being measured when it happened.
    pub policy: String,
    /// When the probe should have woken, in ms since the measurement began.
    pub at_ms: f64,
    /// How late the probe woke.
    pub late_us: f64,
}

/// What the stall probe saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stalls {
    /// The rule that marks a stall, in words.
    pub rule: String,
    pub probe_interval_us: u64,
    pub threshold_us: u64,
    /// The probe's own wakeup lateness over the whole measurement (all its CPUs).
    pub probe: LatencySummary,
    /// Stalls seen while a policy was measured.
    pub events: usize,
    /// The longest of them.
    pub longest_us: f64,
    /// The first stalls, in order (bounded; `events` counts them all).
    pub listed: Vec<StallEvent>,
    /// The per-round ratios again, each p99 taken over the wakeups no stall hit.
    pub p99_ratio_eevdf_over_microquanta_without_stalls: Option<Spread>,
    pub p99_ratio_fifo_over_microquanta_without_stalls: Option<Spread>,
}

/// The class warm-up run after each load of the scheduler, before the round measures
/// (`mq_experiments::settle`): a MicroQuanta thread's first wakeups after a load, which under
/// TCG pay for the emulator translating the freshly loaded BPF. In no other figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Warmup {
    /// Wakeups of the warm-up thread per load.
    pub wakeups_per_load: u64,
    /// The first wakeup of each load, in round order.
    pub first_us: Vec<f64>,
    /// The other warm-up wakeups, pooled over the loads.
    pub rest_us: LatencySummary,
}

/// The interleaved rounds as `mq-bench-sched` reports them (`rounds`): the demo's workload,
/// with the same fields the demo's report carries at its top level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundsReport {
    /// CPU time the measured thread burns per wakeup.
    pub work_us: u64,
    /// Sleep period of the measured thread.
    pub wake_period_us: u64,
    /// CPU hog processes throughout.
    pub hogs: usize,
    /// Wakeups per policy and round.
    pub samples: u64,
    /// The scheduler's bandwidth in the rounds.
    pub period_us: u64,
    pub runtime_us: u64,
    /// Per policy, pooled over the rounds.
    pub wakeup_latency_us: std::collections::BTreeMap<String, LatencySummary>,
    pub rows: Vec<RoundRow>,
    pub p99_ratio_eevdf_over_microquanta: Option<Spread>,
    pub p99_ratio_fifo_over_microquanta: Option<Spread>,
    /// SCHED_FIFO with scx_microquanta loaded: sched_ext's own floor (see [`crate::demo::FIFO_SCX`]).
    #[serde(default)]
    pub p99_ratio_fifo_scx_over_microquanta: Option<Spread>,
    pub stalls: Stalls,
    pub scheduler_cycle_ms: Option<f64>,
    /// The class warm-up after each load (absent in older reports).
    #[serde(default)]
    pub warmup: Option<Warmup>,
}

/// At most this many stalls are listed in [`Stalls::listed`].
pub const LISTED_STALLS: usize = 64;

/// Per-round ratios `baseline p99 / microquanta p99` over `rows`, with `p99` choosing the
/// figure (all wakeups or those without stalls). Rounds missing either policy or with a
/// non-positive divisor give no ratio.
pub fn per_round_ratios(
    rows: &[RoundRow],
    baseline: &str,
    microquanta: &str,
    p99: fn(&RoundRow) -> Option<f64>,
) -> Vec<f64> {
    let rounds = rows.iter().map(|r| r.round).max().map_or(0, |m| m + 1);
    (0..rounds)
        .filter_map(|round| {
            let get = |policy: &str| {
                rows.iter()
                    .find(|r| r.round == round && r.policy == policy)
                    .and_then(p99)
            };
            let (b, m) = (get(baseline)?, get(microquanta)?);
            (m > 0.0 && b.is_finite()).then_some(b / m)
        })
        .collect()
}

/// The p99 of all of a row's wakeups.
pub fn p99_all(row: &RoundRow) -> Option<f64> {
    Some(row.p99)
}

/// The p99 of a row's wakeups no stall hit.
pub fn p99_clean(row: &RoundRow) -> Option<f64> {
    row.p99_without_stalls
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(round: usize, policy: &str, p99: f64, clean: Option<f64>) -> RoundRow {
        RoundRow {
            round,
            policy: policy.into(),
            p50: p99 / 4.0,
            p99,
            max: p99 * 2.0,
            samples: 400,
            stalled_samples: u64::from(clean != Some(p99)),
            p99_without_stalls: clean,
        }
    }

    #[test]
    fn spread_takes_median_min_and_max() {
        let s = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.rounds), (2.0, 1.0, 3.0, 3));
        let even = Spread::of(&[4.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!((even.median, even.min, even.max), (3.0, 1.0, 10.0));
        assert_eq!(Spread::of(&[]), None);
        assert_eq!(Spread::of(&[f64::NAN]), None);
    }

    #[test]
    fn ratios_pair_policies_within_each_round() {
        let rows = vec![
            row(0, "eevdf", 1000.0, Some(1000.0)),
            row(0, "microquanta", 100.0, Some(50.0)),
            row(1, "eevdf", 900.0, None),
            row(1, "microquanta", 300.0, Some(300.0)),
            // round 2 lacks microquanta: no ratio rather than a wrong one
            row(2, "eevdf", 900.0, Some(900.0)),
        ];
        assert_eq!(
            per_round_ratios(&rows, "eevdf", "microquanta", p99_all),
            [10.0, 3.0]
        );
        assert_eq!(per_round_ratios(&rows, "eevdf", "microquanta", p99_clean), [20.0]);
        assert!(per_round_ratios(&rows, "fifo", "microquanta", p99_all).is_empty());
        let zero = vec![row(0, "eevdf", 1.0, None), row(0, "microquanta", 0.0, None)];
        assert!(per_round_ratios(&zero, "eevdf", "microquanta", p99_all).is_empty());
    }
}
