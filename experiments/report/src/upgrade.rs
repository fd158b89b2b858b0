//! `mq-bench-upgrade`'s report: one `snap-host` upgraded repeatedly (`snapctl upgrade`)
//! while Pony apps on it and on a peer host run a ping-pong and a bulk stream whose every
//! message is checked at its receiver, per flow count; the issue's targets computed from
//! the run's own numbers.
//!
//! ```text
//! machine, kernel, accel, scheduler, cpus, path ("veth" | "loopback"), hosts (note),
//! upgrades (per flow count), flows ([1, 100, 1000]), ping_pong_bytes, bulk_bytes,
//! bulk_window, interval_ms,
//! blackout_ms / brownout_ms: {p50, p99, max, samples} over every engine move of the run
//!   (null percentiles: nothing measured),
//! lost / duplicated / reordered / corrupt: {total, per_flows: [{flows, count}]},
//! failed_upgrades,
//! runs: [{flows, upgrades: [{index, at_ms, snapctl_ms, total_ms, old_pid, new_pid,
//!          engines: [{name, kind, brownout_ms, blackout_ms, rounds, state_bytes}],
//!          gap_ms, max_rtt_ms, error}],
//!         blackout_ms, brownout_ms, checks: [{traffic, flows, sent, received, lost,
//!         duplicated, reordered, corrupt}], rtt_p50_us, round_trips, bulk_messages,
//!         bulk_mb_per_s, rtt: [{t_ms, n, p50_us, max_us}], app_failures: ["who: why"]}],
//! targets: [{name, limit, cmp, value, pass, from}]
//! ```
//!
//! A number the run did not measure is null (an upgrade `snapctl` refused has an `error`
//! and no engines; a target whose run is missing has no value), never a stand-in.

use serde::{Deserialize, Serialize};

use crate::pony::{Cmp, Target};
use crate::{Platform, Tag, Tagged};

/// The flow count the blackout targets are evaluated at.
pub const TARGET_FLOWS: usize = 1000;
/// Blackout per engine, p50 and p99, at [`TARGET_FLOWS`] (issue 12), in ms.
pub const BLACKOUT_P50_MS: f64 = 10.0;
pub const BLACKOUT_P99_MS: f64 = 50.0;

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    #[serde(flatten)]
    pub platform: Platform,
    /// The path between the two hosts: `veth` (two network namespaces) or `loopback`.
    pub path: String,
    /// What the two hosts are and which one is upgraded.
    pub hosts: String,
    /// Upgrades per flow count.
    pub upgrades: usize,
    /// Ping-pong flows per engine, one run each (the bulk stream adds one flow).
    pub flows: Vec<usize>,
    pub ping_pong_bytes: usize,
    pub bulk_bytes: usize,
    /// Bulk messages in flight.
    pub bulk_window: usize,
    /// Steady traffic between two upgrades, ms.
    pub interval_ms: u64,
    /// Over every engine move of every run.
    pub blackout_ms: Percentiles,
    pub brownout_ms: Percentiles,
    pub lost: Count,
    pub duplicated: Count,
    pub reordered: Count,
    pub corrupt: Count,
    /// Upgrades that `snapctl` reported as failed (or that did not answer).
    pub failed_upgrades: usize,
    pub runs: Vec<Run>,
    /// The issue's targets, from this run's numbers ([`targets`]).
    pub targets: Vec<Target>,
}

impl Tagged for Report {
    const TAG: Tag = Tag {
        program: "mq-bench-upgrade",
        prefix: "MQ_BENCH_UPGRADE_JSON ",
    };
}

/// Percentiles of a set of durations in ms; null when there is no sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    pub samples: usize,
}

impl Percentiles {
    /// Nearest-rank percentiles of `values` (NaNs are not expected and sort last).
    pub fn of(values: &[f64]) -> Self {
        let mut v = values.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        let rank = |q: f64| -> Option<f64> {
            if v.is_empty() {
                return None;
            }
            let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
            Some(v[i])
        };
        Self {
            p50: rank(0.50),
            p99: rank(0.99),
            max: v.last().copied(),
            samples: v.len(),
        }
    }
}

/// A message count over the run and per flow count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    pub total: u64,
    pub per_flows: Vec<FlowsCount>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowsCount {
    pub flows: usize,
    pub count: u64,
}

impl Count {
    /// `pick` summed over each run's checks.
    pub fn of(runs: &[Run], pick: fn(&Check) -> u64) -> Self {
        let per_flows: Vec<FlowsCount> = runs
            .iter()
            .map(|r| FlowsCount {
                flows: r.flows,
                count: r.checks.iter().map(pick).sum(),
            })
            .collect();
        Self {
            total: per_flows.iter().map(|c| c.count).sum(),
            per_flows,
        }
    }
}

/// One flow count's run: hosts started, apps attached, `upgrades` upgrades under load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub flows: usize,
    pub upgrades: Vec<Upgrade>,
    /// Over this run's engine moves.
    pub blackout_ms: Percentiles,
    pub brownout_ms: Percentiles,
    /// Each receiver's exact counts.
    pub checks: Vec<Check>,
    /// Median ping-pong round trip over the run, µs (null: no round trip completed).
    pub rtt_p50_us: Option<f64>,
    pub round_trips: u64,
    pub bulk_messages: u64,
    pub bulk_mb_per_s: Option<f64>,
    /// The ping-pong's round trips in time bins.
    pub rtt: Vec<RttBin>,
    /// Apps whose session failed before they were told to stop (`who: why`); their
    /// messages until then are counted, the rest of their run is missing.
    pub app_failures: Vec<String>,
}

/// One `snapctl upgrade`, as snapctl reports it and as the ping-pong saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Upgrade {
    pub index: usize,
    /// When snapctl started, ms since the run's apps started (the clock of [`RttBin::t_ms`]).
    pub at_ms: f64,
    /// The snapctl process's wall time, ms.
    pub snapctl_ms: f64,
    /// snapctl's own figures (null when it failed).
    pub total_ms: Option<f64>,
    pub old_pid: Option<u32>,
    pub new_pid: Option<u32>,
    pub engines: Vec<EngineMove>,
    /// The longest time without a ping-pong echo from just before snapctl started to
    /// shortly after it returned, ms (null: no echo around it).
    pub gap_ms: Option<f64>,
    /// The longest round trip in that window, ms.
    pub max_rtt_ms: Option<f64>,
    /// Why it failed (snapctl's message), null when it worked.
    pub error: Option<String>,
}

/// One engine's move in an upgrade, as `snapctl upgrade --json` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineMove {
    pub name: String,
    pub kind: String,
    pub brownout_ms: f64,
    pub blackout_ms: f64,
    pub rounds: u64,
    pub state_bytes: u64,
}

/// What one receiver counted, exactly, summed over its flows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// `ping_pong_request` (at the echo server), `ping_pong_echo` (at the client) or
    /// `bulk` (at the sink).
    pub traffic: String,
    pub flows: usize,
    /// Messages sent to it (by its sender's count).
    pub sent: u64,
    /// Distinct messages that arrived intact.
    pub received: u64,
    /// Sent, never arrived.
    pub lost: u64,
    /// Arrived again after arriving once.
    pub duplicated: u64,
    /// Arrived after a later message of its flow.
    pub reordered: u64,
    /// Failed its checksum or framing.
    pub corrupt: u64,
}

/// Round trips that ended in `[t_ms, t_ms + bin)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RttBin {
    pub t_ms: f64,
    pub n: u64,
    pub p50_us: f64,
    pub max_us: f64,
}

/// The issue's targets from `runs`: blackout p50 and p99 at [`TARGET_FLOWS`], no message
/// lost, duplicated, reordered or corrupt, every upgrade done.
pub fn targets(runs: &[Run]) -> Vec<Target> {
    let at = runs.iter().find(|r| r.flows == TARGET_FLOWS);
    let blackout = |pick: fn(&Percentiles) -> Option<f64>| match at {
        None => Err(format!("no {TARGET_FLOWS}-flow run")),
        Some(r) => pick(&r.blackout_ms)
            .map(|v| {
                (
                    v,
                    format!("{} engine moves at {TARGET_FLOWS} flows", r.blackout_ms.samples),
                )
            })
            .ok_or_else(|| format!("no blackout measured at {TARGET_FLOWS} flows")),
    };
    let mut out = vec![
        Target::new(
            format!("blackout p50 at {TARGET_FLOWS} flows (ms)"),
            Cmp::AtMost,
            BLACKOUT_P50_MS,
            blackout(|p| p.p50),
        ),
        Target::new(
            format!("blackout p99 at {TARGET_FLOWS} flows (ms)"),
            Cmp::AtMost,
            BLACKOUT_P99_MS,
            blackout(|p| p.p99),
        ),
    ];
    let counted = |name: &str, pick: fn(&Check) -> u64| {
        let c = Count::of(runs, pick);
        let msgs: u64 = runs.iter().flat_map(|r| &r.checks).map(|c| c.sent).sum();
        let from = if runs.is_empty() {
            Err("no run".to_string())
        } else {
            Ok((c.total as f64, format!("{msgs} messages checked")))
        };
        Target::new(format!("{name} messages"), Cmp::AtMost, 0.0, from)
    };
    out.push(counted("lost", |c| c.lost));
    out.push(counted("duplicated", |c| c.duplicated));
    out.push(counted("reordered", |c| c.reordered));
    out.push(counted("corrupt", |c| c.corrupt));
    let failed: usize = runs
        .iter()
        .flat_map(|r| &r.upgrades)
        .filter(|u| u.error.is_some())
        .count();
    let tried: usize = runs.iter().map(|r| r.upgrades.len()).sum();
    out.push(Target::new(
        "failed upgrades",
        Cmp::AtMost,
        0.0,
        if tried == 0 {
            Err("no upgrade".into())
        } else {
            Ok((failed as f64, format!("{tried} upgrades")))
        },
    ));
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::tests::{platform, round_trip};

    pub fn check(traffic: &str, sent: u64, lost: u64) -> Check {
        Check {
            traffic: traffic.into(),
            flows: 1,
            sent,
            received: sent - lost,
            lost,
            duplicated: 0,
            reordered: 0,
            corrupt: 0,
        }
    }

    pub fn run(flows: usize, blackouts: &[f64], lost: u64) -> Run {
        let upgrades: Vec<Upgrade> = blackouts
            .iter()
            .enumerate()
            .map(|(index, &b)| Upgrade {
                index,
                at_ms: 100.0 * (index + 1) as f64,
                snapctl_ms: 30.0,
                total_ms: Some(25.0),
                old_pid: Some(10 + index as u32),
                new_pid: Some(11 + index as u32),
                engines: vec![EngineMove {
                    name: "pony0".into(),
                    kind: "pony".into(),
                    brownout_ms: 2.0 * b,
                    blackout_ms: b,
                    rounds: 3,
                    state_bytes: 375 * flows as u64,
                }],
                gap_ms: Some(b + 1.0),
                max_rtt_ms: Some(b + 0.5),
                error: None,
            })
            .collect();
        Run {
            flows,
            blackout_ms: Percentiles::of(blackouts),
            brownout_ms: Percentiles::of(&blackouts.iter().map(|b| 2.0 * b).collect::<Vec<_>>()),
            upgrades,
            checks: vec![check("ping_pong_echo", 1000, lost), check("bulk", 500, 0)],
            rtt_p50_us: Some(60.0),
            round_trips: 1000,
            bulk_messages: 500,
            bulk_mb_per_s: Some(120.0),
            rtt: vec![RttBin {
                t_ms: 0.0,
                n: 10,
                p50_us: 60.0,
                max_us: 90.0,
            }],
            app_failures: vec![],
        }
    }

    pub fn report(runs: Vec<Run>) -> Report {
        let all: Vec<f64> = runs
            .iter()
            .flat_map(|r| &r.upgrades)
            .flat_map(|u| &u.engines)
            .map(|e| e.blackout_ms)
            .collect();
        Report {
            platform: platform("native", "eevdf"),
            path: "veth".into(),
            hosts: "two snap-host processes".into(),
            upgrades: runs.first().map_or(0, |r| r.upgrades.len()),
            flows: runs.iter().map(|r| r.flows).collect(),
            ping_pong_bytes: 64,
            bulk_bytes: 16384,
            bulk_window: 16,
            interval_ms: 300,
            blackout_ms: Percentiles::of(&all),
            brownout_ms: Percentiles::of(&all.iter().map(|b| 2.0 * b).collect::<Vec<_>>()),
            lost: Count::of(&runs, |c| c.lost),
            duplicated: Count::of(&runs, |c| c.duplicated),
            reordered: Count::of(&runs, |c| c.reordered),
            corrupt: Count::of(&runs, |c| c.corrupt),
            failed_upgrades: 0,
            targets: targets(&runs),
            runs,
        }
    }

    #[test]
    fn percentiles_are_nearest_rank_and_null_when_empty() {
        let p = Percentiles::of(&[5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!(
            (p.p50, p.p99, p.max, p.samples),
            (Some(3.0), Some(5.0), Some(5.0), 5)
        );
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(Percentiles::of(&hundred).p99, Some(99.0));
        let none = Percentiles::of(&[]);
        assert_eq!(
            (none.p50, none.p99, none.max, none.samples),
            (None, None, None, 0)
        );
    }

    #[test]
    fn targets_come_from_the_thousand_flow_run_and_the_exact_counts() {
        let r = report(vec![run(1, &[0.1, 0.2, 0.3], 0), run(1000, &[4.0, 6.0, 60.0], 2)]);
        let by = |name: &str| r.targets.iter().find(|t| t.name.starts_with(name)).unwrap();
        assert_eq!(by("blackout p50").value, Some(6.0));
        assert_eq!(by("blackout p50").pass, Some(true));
        assert_eq!(by("blackout p99").value, Some(60.0));
        assert_eq!(by("blackout p99").pass, Some(false));
        assert_eq!(by("lost").value, Some(2.0));
        assert_eq!(by("lost").pass, Some(false));
        assert_eq!(by("duplicated").pass, Some(true));
        assert_eq!(by("failed upgrades").value, Some(0.0));
        assert_eq!(r.lost.total, 2);
        assert_eq!(
            r.lost.per_flows,
            vec![
                FlowsCount { flows: 1, count: 0 },
                FlowsCount {
                    flows: 1000,
                    count: 2
                }
            ]
        );
        round_trip(&r);
    }

    #[test]
    fn without_a_thousand_flow_run_the_blackout_targets_have_no_value() {
        let r = report(vec![run(1, &[0.1], 0), run(100, &[1.0], 0)]);
        let t = &r.targets[0];
        assert_eq!((t.value, t.pass), (None, None));
        assert_eq!(t.from, "no 1000-flow run");
        assert_eq!(r.targets[2].pass, Some(true), "{:?}", r.targets[2]);
    }
}
