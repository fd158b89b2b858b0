// SPDX-License-Identifier: GPL-2.0-only
//! The latency comparison as short interleaved rounds: each round loads `scx_microquanta` and
//! measures the same periodic thread as a normal task, in the class and in SCHED_FIFO
//! (sched_ext's own floor), unloads the scheduler and measures it in SCHED_FIFO and under
//! EEVDF (no BPF scheduler). A host that slows down for a while (a TCG guest next to other
//! builds, or the host's own speed drifting) then hits one round of every policy rather than
//! all of one policy's samples, and the ratios are taken within each round
//! ([`mq_report::rounds`]). The five measurements of a round follow each other within a few
//! seconds; the scheduler's load, which takes longer, comes before them.
//!
//! Each load is settled before the round measures ([`crate::settle`]): the class warm-up's
//! wakeups are reported apart ([`Warmup`]) and are in no round's figures.
//!
//! A [`StallProbe`] runs throughout. A measured wakeup whose wait overlaps a probe stall is
//! marked stalled: it is kept in every figure, and each round's p99 is also given without the
//! stalled wakeups, so the report shows the comparison both with and without the emulator's
//! stalls.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mq_report::demo::{EEVDF, FIFO, FIFO_SCX, MICROQUANTA, NORMAL, POLICIES};
use mq_report::rounds::{
    p99_all, p99_clean, per_round_ratios, RoundRow, Spread, StallEvent, Stalls, Warmup, LISTED_STALLS,
};
use mq_report::LatencySummary;

use crate::scheduler_process::SchedulerProcess;
use crate::stall_probe::{Stall, StallProbe};
use crate::wakeup::{measure_wakeups, now_ns, summarise_wakeups, ThreadClass, Wakeup, WakeupConfig};

/// What to measure.
#[derive(Debug, Clone)]
pub struct RoundsConfig {
    pub rounds: usize,
    /// Wakeups per policy and round.
    pub samples: u64,
    /// Sleep period of the measured thread.
    pub wake_period: Duration,
    /// CPU time it burns after each wakeup.
    pub work: Duration,
    /// Priority of the SCHED_FIFO policy (below the probe's 99).
    pub fifo_priority: u32,
    pub probe_interval: Duration,
    pub stall_threshold: Duration,
    /// Prefix of the progress lines on stderr (`mq-demo`, `mq-bench-sched: rounds`).
    pub log: &'static str,
}

/// Everything the rounds measured.
#[derive(Debug, Clone)]
pub struct RoundsResult {
    /// Per policy, over all rounds.
    pub pooled: BTreeMap<String, LatencySummary>,
    pub rows: Vec<RoundRow>,
    pub eevdf_over_microquanta: Option<Spread>,
    pub fifo_over_microquanta: Option<Spread>,
    pub fifo_scx_over_microquanta: Option<Spread>,
    pub stalls: Stalls,
    /// Median of load (with settling) plus unload of the scheduler, per round.
    pub scheduler_cycle_ms: Option<f64>,
    /// The class warm-up of each load; `None` when no load warmed up.
    pub warmup: Option<Warmup>,
}

/// One policy's measurement in one round.
struct Measured {
    round: usize,
    policy: &'static str,
    wakeups: Vec<Wakeup>,
}

/// Runs `cfg.rounds` rounds; `start_scheduler` loads `scx_microquanta` and settles it
/// ([`crate::settle::settle`]) for the three policies that need it, returning the warm-up's
/// wakeups. The caller provides the interference (hogs).
pub fn run(
    cfg: &RoundsConfig,
    cpus: usize,
    start_scheduler: &mut dyn FnMut() -> Result<(SchedulerProcess, Vec<Wakeup>)>,
) -> Result<RoundsResult> {
    let log = cfg.log;
    let probe = StallProbe::start(cpus, cfg.probe_interval, cfg.stall_threshold)?;
    let t0 = now_ns();
    let mut measured = Vec::with_capacity(cfg.rounds * POLICIES.len());
    let mut cycles_ms = Vec::with_capacity(cfg.rounds);
    let mut warm_ups = Vec::with_capacity(cfg.rounds);
    let one = |round: usize, policy: &'static str, class: ThreadClass| -> Result<Measured> {
        let wakeups = measure_wakeups(WakeupConfig {
            period: cfg.wake_period,
            samples: cfg.samples,
            class,
            work: cfg.work,
            cpu: None,
        })
        .with_context(|| format!("round {round}: measuring {policy}"))?;
        Ok(Measured {
            round,
            policy,
            wakeups,
        })
    };
    let fifo = ThreadClass::Fifo {
        priority: cfg.fifo_priority,
    };
    for round in 0..cfg.rounds {
        // The load comes first (seconds of emulated BPF verification), so that the five
        // policies are measured back to back: the host's speed drifts over seconds, and a
        // load between two policies would put that drift into their ratio.
        let load = Instant::now();
        let (sched, warm_up) =
            start_scheduler().with_context(|| format!("round {round}: loading the scheduler"))?;
        warm_ups.push(warm_up);
        let loaded = load.elapsed();
        measured.push(one(round, NORMAL, ThreadClass::Normal)?);
        measured.push(one(round, MICROQUANTA, ThreadClass::MicroQuanta)?);
        measured.push(one(round, FIFO_SCX, fifo)?);
        let unload = Instant::now();
        sched
            .stop()
            .with_context(|| format!("round {round}: unloading the scheduler"))?;
        cycles_ms.push((loaded + unload.elapsed()).as_secs_f64() * 1000.0);
        measured.push(one(round, FIFO, fifo)?);
        measured.push(one(round, EEVDF, ThreadClass::Normal)?);
        let this: Vec<String> = measured[measured.len() - POLICIES.len()..]
            .iter()
            .map(|m| format!("{} p99 {:.0}", m.policy, summarise_wakeups(&m.wakeups).p99))
            .collect();
        eprintln!(
            "{log}: round {}/{}: {} µs (scheduler load+unload {:.0} ms)",
            round + 1,
            cfg.rounds,
            this.join(", "),
            cycles_ms[round]
        );
    }
    let record = probe.stop()?;
    if record.dropped > 0 {
        eprintln!(
            "{log}: {} stalls beyond the probe's bound were counted, not listed",
            record.dropped
        );
    }
    Ok(assemble(
        cfg,
        t0,
        &measured,
        &record.stalls,
        record.lateness,
        &cycles_ms,
        &warm_ups,
    ))
}

/// The report's rows, ratios and stall summary from the raw measurements.
fn assemble(
    cfg: &RoundsConfig,
    t0_ns: u64,
    measured: &[Measured],
    stalls: &[Stall],
    probe_lateness: LatencySummary,
    cycles_ms: &[f64],
    warm_ups: &[Vec<Wakeup>],
) -> RoundsResult {
    let mut rows = Vec::with_capacity(measured.len());
    let mut events = Vec::new();
    let index = StallIndex::new(stalls);
    for m in measured {
        let (start, end) = window(&m.wakeups);
        // The stalls that fell while this policy was measured.
        for s in stalls.iter().filter(|s| s.overlaps(start, end)) {
            events.push(StallEvent {
                round: m.round,
                policy: m.policy.to_string(),
                at_ms: s.deadline_ns.saturating_sub(t0_ns) as f64 / 1e6,
                late_us: s.late_ns as f64 / 1000.0,
            });
        }
        let (stalled, clean): (Vec<&Wakeup>, Vec<&Wakeup>) = m
            .wakeups
            .iter()
            .partition(|w| index.hit(w.deadline_ns, w.deadline_ns + w.late_ns));
        let all = summarise_wakeups(&m.wakeups);
        rows.push(RoundRow {
            round: m.round,
            policy: m.policy.to_string(),
            p50: all.p50,
            p99: all.p99,
            max: all.max,
            samples: all.samples,
            stalled_samples: stalled.len() as u64,
            p99_without_stalls: (!clean.is_empty()).then(|| summarise_wakeups(clean).p99),
        });
    }
    let mut pooled = BTreeMap::new();
    for policy in POLICIES {
        let all: Vec<&Wakeup> = measured
            .iter()
            .filter(|m| m.policy == policy)
            .flat_map(|m| &m.wakeups)
            .collect();
        if !all.is_empty() {
            pooled.insert(policy.to_string(), summarise_wakeups(all));
        }
    }
    let spread = |base, p99| Spread::of(&per_round_ratios(&rows, base, MICROQUANTA, p99));
    let longest_us = events.iter().map(|e| e.late_us).fold(0.0, f64::max);
    let stalls = Stalls {
        rule: format!(
            "a SCHED_FIFO {} probe pinned to each CPU wakes every {} µs on average (each \
             interval drawn from half to 1.5 times that); a probe wakeup >= {} µs \
             late is a stall; a measured wakeup whose wait (deadline to run) overlaps a stall on \
             any CPU is stalled",
            crate::stall_probe::PROBE_PRIORITY,
            cfg.probe_interval.as_micros(),
            cfg.stall_threshold.as_micros()
        ),
        probe_interval_us: cfg.probe_interval.as_micros() as u64,
        threshold_us: cfg.stall_threshold.as_micros() as u64,
        probe: probe_lateness,
        events: events.len(),
        longest_us,
        listed: events.into_iter().take(LISTED_STALLS).collect(),
        p99_ratio_eevdf_over_microquanta_without_stalls: spread(EEVDF, p99_clean),
        p99_ratio_fifo_over_microquanta_without_stalls: spread(FIFO, p99_clean),
    };
    RoundsResult {
        pooled,
        eevdf_over_microquanta: spread(EEVDF, p99_all),
        fifo_over_microquanta: spread(FIFO, p99_all),
        fifo_scx_over_microquanta: spread(FIFO_SCX, p99_all),
        rows,
        stalls,
        scheduler_cycle_ms: Spread::of(cycles_ms).map(|s| s.median),
        warmup: warmup(warm_ups),
    }
}

/// The warm-ups of all loads: each one's first wakeup, and the rest pooled.
fn warmup(warm_ups: &[Vec<Wakeup>]) -> Option<Warmup> {
    let first_us: Vec<f64> = warm_ups
        .iter()
        .filter_map(|w| w.first())
        .map(|w| w.late_ns as f64 / 1000.0)
        .collect();
    if first_us.is_empty() {
        return None;
    }
    Some(Warmup {
        wakeups_per_load: warm_ups.iter().map(|w| w.len() as u64).max().unwrap_or(0),
        first_us,
        rest_us: summarise_wakeups(warm_ups.iter().flat_map(|w| w.iter().skip(1))),
    })
}

/// Answers "does any stall overlap this interval" in O(log n): `stalls` sorted by deadline,
/// with the latest end among each prefix (a host under load produces tens of thousands of
/// stalls against tens of thousands of wakeups).
struct StallIndex<'a> {
    stalls: &'a [Stall],
    max_end: Vec<u64>,
}

impl<'a> StallIndex<'a> {
    /// `stalls` must be sorted by deadline ([`crate::stall_probe::ProbeRecord::stalls`] is).
    fn new(stalls: &'a [Stall]) -> Self {
        let max_end = stalls
            .iter()
            .scan(0, |max, s| {
                *max = s.end_ns().max(*max);
                Some(*max)
            })
            .collect();
        Self { stalls, max_end }
    }

    /// Whether a stall overlaps `[start_ns, end_ns]`: among the stalls that began by
    /// `end_ns`, one ended at or after `start_ns`.
    fn hit(&self, start_ns: u64, end_ns: u64) -> bool {
        let began = self.stalls.partition_point(|s| s.deadline_ns <= end_ns);
        began > 0 && self.max_end[began - 1] >= start_ns
    }
}

/// From the first deadline to the last wakeup's run: the time a measurement covered.
fn window(wakeups: &[Wakeup]) -> (u64, u64) {
    let start = wakeups.first().map_or(0, |w| w.deadline_ns);
    let end = wakeups.last().map_or(0, |w| w.deadline_ns + w.late_ns);
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RoundsConfig {
        RoundsConfig {
            rounds: 2,
            samples: 100,
            wake_period: Duration::from_millis(1),
            work: Duration::ZERO,
            fifo_priority: 50,
            probe_interval: Duration::from_micros(1500),
            stall_threshold: Duration::from_millis(1),
            log: "test",
        }
    }

    /// 100 wakeups from `start_ms`, 1 ms apart, each `late_us` late except the last one,
    /// which is `tail_us` late.
    fn wakeups(start_ms: u64, late_us: u64, tail_us: u64) -> Vec<Wakeup> {
        (0..100)
            .map(|i| Wakeup {
                deadline_ns: (start_ms + i) * 1_000_000,
                late_ns: if i == 99 { tail_us } else { late_us } * 1000,
            })
            .collect()
    }

    fn measured(round: usize, policy: &'static str, start_ms: u64, late_us: u64, tail_us: u64) -> Measured {
        Measured {
            round,
            policy,
            wakeups: wakeups(start_ms, late_us, tail_us),
        }
    }

    fn probe() -> LatencySummary {
        LatencySummary {
            p50: 50.0,
            p90: 80.0,
            p99: 200.0,
            max: 4000.0,
            samples: 1000,
        }
    }

    /// Two rounds; in round 1 microquanta's worst wakeup (4 ms, at 1099 ms) coincides with a
    /// probe stall: it counts in the p99 with stalls and not in the one without.
    fn sample() -> RoundsResult {
        let m = vec![
            measured(0, EEVDF, 0, 2000, 8000),
            measured(0, FIFO, 100, 100, 200),
            measured(0, NORMAL, 200, 1500, 6000),
            measured(0, MICROQUANTA, 300, 100, 400),
            measured(0, FIFO_SCX, 400, 150, 300),
            measured(1, EEVDF, 600, 2000, 8000),
            measured(1, FIFO, 700, 100, 200),
            measured(1, NORMAL, 800, 1500, 6000),
            measured(1, MICROQUANTA, 1000, 100, 4000),
            measured(1, FIFO_SCX, 1150, 150, 300),
        ];
        let stalls = [Stall {
            cpu: 1,
            deadline_ns: 1_099_500_000,
            late_ns: 3_000_000,
        }];
        // Each load's warm-up: a slow first wakeup, then the steady state.
        let warm_ups = [wakeups(290, 150, 150), wakeups(990, 150, 150)].map(|mut w| {
            w.truncate(20);
            w[0].late_ns = 2_400_000;
            w
        });
        assemble(&cfg(), 0, &m, &stalls, probe(), &[1000.0, 3000.0], &warm_ups)
    }

    #[test]
    fn rounds_give_per_round_rows_and_ratios_with_spread() {
        let r = sample();
        assert_eq!(r.rows.len(), 10);
        assert_eq!(r.pooled.len(), 5);
        assert_eq!(r.pooled[EEVDF].samples, 200);
        let mq1 = &r.rows[8];
        assert_eq!((mq1.round, mq1.policy.as_str()), (1, MICROQUANTA));
        // p99 of 100 samples is the 99th value: the 99 equal ones, then the tail.
        assert!((mq1.p99 - 100.0).abs() < 1.0, "{mq1:?}");
        assert!((mq1.max - 4000.0).abs() < 10.0, "{mq1:?}");
        let e = r.eevdf_over_microquanta.unwrap();
        assert_eq!(e.rounds, 2);
        assert!((e.median - 20.0).abs() < 0.5, "{e:?}");
        assert!((r.fifo_over_microquanta.unwrap().median - 1.0).abs() < 0.05);
        let scx = r.fifo_scx_over_microquanta.unwrap();
        assert_eq!(scx.rounds, 2);
        assert!((scx.median - 1.5).abs() < 0.05, "{scx:?}");
        assert_eq!(r.scheduler_cycle_ms, Some(2000.0));
    }

    #[test]
    fn a_wakeup_that_shares_time_with_a_stall_is_counted_and_listed_not_dropped() {
        let r = sample();
        let mq1 = &r.rows[8];
        assert_eq!(mq1.stalled_samples, 1, "{mq1:?}");
        assert_eq!(mq1.samples, 100, "the stalled wakeup stays in the samples");
        assert!(r
            .rows
            .iter()
            .enumerate()
            .all(|(i, row)| i == 8 || row.stalled_samples == 0));
        assert_eq!(r.stalls.events, 1);
        assert_eq!(r.stalls.listed[0].policy, MICROQUANTA);
        assert_eq!(r.stalls.listed[0].round, 1);
        assert!((r.stalls.longest_us - 3000.0).abs() < 1e-9);
        assert!(r.stalls.rule.contains(">= 1000 µs late"), "{}", r.stalls.rule);
        // Without stalls round 1's ratio uses the 99 clean wakeups.
        let clean = r.stalls.p99_ratio_eevdf_over_microquanta_without_stalls.unwrap();
        assert_eq!(clean.rounds, 2);
        assert!(mq1.p99_without_stalls.unwrap() <= mq1.p99);
    }

    #[test]
    fn the_warm_up_is_reported_apart_and_is_in_no_round() {
        let r = sample();
        let w = r.warmup.unwrap();
        assert_eq!(w.wakeups_per_load, 20);
        assert_eq!(w.first_us, vec![2400.0, 2400.0]);
        assert_eq!(w.rest_us.samples, 38);
        assert!((w.rest_us.max - 150.0).abs() < 1.0, "{:?}", w.rest_us);
        // The rounds' figures are those of the measured wakeups alone.
        assert_eq!(r.pooled[MICROQUANTA].samples, 200);
        assert!((r.rows[3].max - 400.0).abs() < 1.0, "{:?}", r.rows[3]);
    }

    #[test]
    fn the_index_finds_the_same_overlaps_as_a_scan() {
        // A long stall early, short ones later: the prefix maximum must carry the long one.
        let stall = |cpu, deadline_ns, late_ns| Stall {
            cpu,
            deadline_ns,
            late_ns,
        };
        let stalls = [stall(0, 100, 1000), stall(1, 300, 10), stall(0, 2000, 50)];
        let index = StallIndex::new(&stalls);
        for start in (0..2200).step_by(37) {
            for len in [0, 5, 60, 400] {
                let scan = stalls.iter().any(|s| s.overlaps(start, start + len));
                assert_eq!(index.hit(start, start + len), scan, "[{start}, {}]", start + len);
            }
        }
        assert!(!StallIndex::new(&[]).hit(0, u64::MAX));
    }

    #[test]
    fn a_stall_outside_every_measurement_is_not_an_event() {
        let m = vec![
            measured(0, EEVDF, 0, 10, 10),
            measured(0, MICROQUANTA, 300, 10, 10),
        ];
        let stalls = [Stall {
            cpu: 0,
            deadline_ns: 150_000_000,
            late_ns: 2_000_000,
        }];
        let r = assemble(&cfg(), 0, &m, &stalls, probe(), &[], &[]);
        assert_eq!(r.stalls.events, 0);
        assert_eq!(r.scheduler_cycle_ms, None);
        assert_eq!(r.warmup, None);
        assert!(r.rows.iter().all(|row| row.stalled_samples == 0));
    }
}
