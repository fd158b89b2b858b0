//! The `scx_microquanta` vs `scx_mqland` comparison of `mq-bench-sched` (the `mqland` key of
//! [`crate::sched::Report`]): the same workloads under the BPF scheduler and under the same
//! policy taken in userspace, in interleaved rounds of one boot.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Names of the two schedulers, the keys of [`MqlandComparison::summary`].
pub const SCX_MICROQUANTA: &str = "scx_microquanta";
pub const SCX_MQLAND: &str = "scx_mqland";

/// One scheduler in one round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MqlandRound {
    /// 0-based; within a round the schedulers run in the order listed.
    pub round: usize,
    pub scheduler: String,
    /// Wakeup-to-run latency of a periodic class sleeper next to the hogs.
    pub wake_p50_us: f64,
    pub wake_p99_us: f64,
    pub wake_samples: u64,
    /// CPU share of a class spinner next to a normal spinner on one CPU, and its target.
    pub class_share: f64,
    pub expected_share: f64,
    /// During the latency phase: CPU time of the scheduler's process (all its threads, from
    /// `/proc/PID/task/*/schedstat`), in seconds per second.
    pub user_cpu_share: f64,
    /// During the latency phase: run time of the scheduler's struct_ops BPF programs
    /// (`run_time_ns` with `kernel.bpf_stats_enabled`), in seconds per second.
    pub bpf_cpu_share: f64,
    /// Context switches of the whole machine per second (`ctxt` of `/proc/stat`): the
    /// scheduling decisions both schedulers had to make.
    pub switches_per_s: f64,
    /// (user + BPF) CPU time per context switch, in µs.
    pub sched_us_per_switch: Option<f64>,
}

/// Median and range of one quantity across rounds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// `None` for no values.
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
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
        })
    }
}

/// One scheduler across its rounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MqlandSummary {
    pub wake_p50_us: Option<Spread>,
    pub wake_p99_us: Option<Spread>,
    pub class_share: Option<Spread>,
    pub user_cpu_share: Option<Spread>,
    pub bpf_cpu_share: Option<Spread>,
    pub sched_us_per_switch: Option<Spread>,
}

impl MqlandSummary {
    pub fn of(rounds: &[&MqlandRound]) -> Self {
        let spread = |f: &dyn Fn(&MqlandRound) -> Option<f64>| {
            Spread::of(&rounds.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
        };
        Self {
            wake_p50_us: spread(&|r| Some(r.wake_p50_us)),
            wake_p99_us: spread(&|r| Some(r.wake_p99_us)),
            class_share: spread(&|r| Some(r.class_share)),
            user_cpu_share: spread(&|r| Some(r.user_cpu_share)),
            bpf_cpu_share: spread(&|r| Some(r.bpf_cpu_share)),
            sched_us_per_switch: spread(&|r| r.sched_us_per_switch),
        }
    }
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MqlandComparison {
    pub period_us: u64,
    pub runtime_us: u64,
    pub hogs: usize,
    pub rounds: Vec<MqlandRound>,
    /// Per scheduler ([`SCX_MICROQUANTA`], [`SCX_MQLAND`]).
    pub summary: BTreeMap<String, MqlandSummary>,
    /// Per round, mqland's p99 wakeup latency over microquanta's (above 1: the userspace
    /// policy wakes class threads later), median and range across rounds.
    pub p99_ratio_mqland_over_microquanta: Option<Spread>,
}

impl MqlandComparison {
    /// Summaries and ratios from the rounds.
    pub fn from_rounds(period_us: u64, runtime_us: u64, hogs: usize, rounds: Vec<MqlandRound>) -> Self {
        let mut summary = BTreeMap::new();
        for name in [SCX_MICROQUANTA, SCX_MQLAND] {
            let mine: Vec<&MqlandRound> = rounds.iter().filter(|r| r.scheduler == name).collect();
            summary.insert(name.to_string(), MqlandSummary::of(&mine));
        }
        let p99 = |round: usize, name: &str| {
            rounds
                .iter()
                .find(|r| r.round == round && r.scheduler == name)
                .map(|r| r.wake_p99_us)
        };
        let ratios: Vec<f64> = (0..rounds.iter().map(|r| r.round + 1).max().unwrap_or(0))
            .filter_map(|i| match (p99(i, SCX_MQLAND), p99(i, SCX_MICROQUANTA)) {
                (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                _ => None,
            })
            .collect();
        Self {
            period_us,
            runtime_us,
            hogs,
            p99_ratio_mqland_over_microquanta: Spread::of(&ratios),
            rounds,
            summary,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(round: usize, scheduler: &str, p99: f64) -> MqlandRound {
        MqlandRound {
            round,
            scheduler: scheduler.to_string(),
            wake_p50_us: p99 / 2.0,
            wake_p99_us: p99,
            wake_samples: 100,
            class_share: 0.5,
            expected_share: 0.5,
            user_cpu_share: 0.0,
            bpf_cpu_share: 0.01,
            switches_per_s: 1000.0,
            sched_us_per_switch: Some(10.0),
        }
    }

    #[test]
    fn spread_is_median_min_max_and_skips_non_finite() {
        assert_eq!(Spread::of(&[]), None);
        let s = Spread::of(&[3.0, f64::NAN, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Spread::of(&[1.0, 4.0]).unwrap().median, 2.5);
    }

    #[test]
    fn ratios_pair_the_schedulers_within_each_round() {
        let c = MqlandComparison::from_rounds(
            1000,
            500,
            4,
            vec![
                round(0, SCX_MICROQUANTA, 100.0),
                round(0, SCX_MQLAND, 400.0),
                round(1, SCX_MICROQUANTA, 200.0),
                round(1, SCX_MQLAND, 400.0),
            ],
        );
        let r = c.p99_ratio_mqland_over_microquanta.unwrap();
        assert_eq!((r.min, r.max, r.median), (2.0, 4.0, 3.0));
        assert_eq!(c.summary[SCX_MQLAND].wake_p99_us.unwrap().median, 400.0);
        assert_eq!(c.summary[SCX_MICROQUANTA].wake_p99_us.unwrap().min, 100.0);
        let json = serde_json::to_string(&c).unwrap();
        let back: MqlandComparison = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
    }
}
