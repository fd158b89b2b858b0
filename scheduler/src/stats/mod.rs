// SPDX-License-Identifier: GPL-2.0-only
//! Statistics: what the BPF program counts and measures per CPU, read from
//! its maps (and, with `--callback-run-time`, what the kernel measures of each
//! callback), turned into per-interval reports for people (`--stats SECS`),
//! tools (`--stats-json`) and other processes (an `scx_stats` server on a
//! UNIX socket, whose client is `--monitor SECS`).

mod counters;
pub(crate) mod hist;
pub mod monitor;
pub mod run_time;
pub mod serve;

use std::time::Instant;

use anyhow::{Context, Result};
use libbpf_rs::{MapCore, MapFlags, MapHandle};
use scx_stats_derive::Stats;
use serde::{Deserialize, Deserializer, Serialize};

use crate::bpf_intf;
pub use counters::Counters;
pub use hist::Hist;
pub use run_time::CallbackReport;
use run_time::{ProgRunTime, Progs};

/// Where the running scheduler serves its statistics: `scx_stats`' default
/// socket, the one every sched_ext scheduler's `--monitor` and generic
/// `scx_stats` clients look at (there is one root scheduler at a time).
pub const DEFAULT_SOCKET: &str = "/var/run/scx/root/stats";

pub(crate) const NR_STATS: usize = bpf_intf::mq_stat_idx_MQ_NR_STATS as usize;
pub(crate) const NR_HISTS: usize = bpf_intf::mq_hist_idx_MQ_NR_HISTS as usize;

/// Raw per-CPU values at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    taken: Instant,
    /// `[cpu][stat]`
    counters: Vec<Vec<u64>>,
    /// `[hist][cpu]`
    hists: Vec<Vec<Hist>>,
    /// Per callback, when its run time is counted.
    callbacks: Vec<ProgRunTime>,
}

impl Snapshot {
    /// Time between `earlier` and this snapshot.
    pub fn age_since(&self, earlier: &Snapshot) -> std::time::Duration {
        self.taken.duration_since(earlier.taken)
    }
}

/// Reads the `stats` and `hists` maps, of our own skeleton or pinned ones, and the
/// callbacks' run time when it is counted.
#[derive(Debug)]
pub struct StatsReader {
    stats: MapHandle,
    hists: MapHandle,
    progs: Progs,
}

impl StatsReader {
    pub fn new(stats: MapHandle, hists: MapHandle) -> Self {
        Self {
            stats,
            hists,
            progs: Progs::default(),
        }
    }

    /// Also reads the run time of these programs (see [`run_time`]).
    pub fn with_progs(self, progs: Progs) -> Self {
        Self { progs, ..self }
    }

    pub fn snapshot(&self) -> Result<Snapshot> {
        let mut counters: Vec<Vec<u64>> = Vec::new();
        for idx in 0..NR_STATS {
            let per_cpu = lookup_percpu(&self.stats, idx)?;
            if counters.len() < per_cpu.len() {
                counters.resize(per_cpu.len(), vec![0; NR_STATS]);
            }
            for (cpu, raw) in per_cpu.iter().enumerate() {
                counters[cpu][idx] = raw
                    .get(..8)
                    .map_or(0, |b| u64::from_ne_bytes(b.try_into().unwrap()));
            }
        }
        let hists = (0..NR_HISTS)
            .map(|idx| {
                Ok(lookup_percpu(&self.hists, idx)?
                    .iter()
                    .map(|raw| Hist::from_bytes(raw))
                    .collect())
            })
            .collect::<Result<_>>()?;
        Ok(Snapshot {
            taken: Instant::now(),
            counters,
            hists,
            callbacks: self.progs.read(),
        })
    }
}

fn lookup_percpu(map: &MapHandle, idx: usize) -> Result<Vec<Vec<u8>>> {
    Ok(map
        .lookup_percpu(&(idx as u32).to_ne_bytes(), MapFlags::ANY)
        .context("reading a per-CPU statistics map")?
        .unwrap_or_default())
}

/// A percentile or maximum with nothing recorded is NaN here: the `Stats` derive knows only
/// plain numbers (no `Option`), and serde_json writes NaN as `null`, so the JSON keeps the
/// `null` that means "no value" to `--stats-json` readers and generic `scx_stats` clients.
fn nan_from_null<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// `Some(v)`, or NaN for "nothing recorded" (see [`nan_from_null`]).
fn or_nan(v: Option<f64>) -> f64 {
    v.unwrap_or(f64::NAN)
}

/// One CPU over one interval. Percentile and maximum fields are NaN (JSON `null`) when
/// nothing was recorded.
#[derive(Debug, Clone, Serialize, Deserialize, Stats)]
#[stat(desc = "one CPU over the interval (latencies in µs, null: nothing recorded)")]
pub struct CpuReport {
    #[stat(desc = "CPU number")]
    pub cpu: usize,
    #[stat(desc = "fraction of the interval the CPU ran MicroQuanta threads")]
    pub mq_share: f64,
    #[stat(desc = "times class work on this CPU was told to yield its spent budget")]
    pub throttles: u64,
    #[stat(desc = "preempting kicks sent for class wakeups from this CPU")]
    pub kicks: u64,
    #[stat(desc = "class wakeups that ran on this CPU in the interval")]
    pub wakeups: u64,
    #[stat(desc = "class wakeup-to-run latency, median")]
    #[serde(deserialize_with = "nan_from_null")]
    pub wake_p50_us: f64,
    #[stat(desc = "class wakeup-to-run latency, 99th percentile")]
    #[serde(deserialize_with = "nan_from_null")]
    pub wake_p99_us: f64,
    #[stat(desc = "class work past budget while normal work waited, median")]
    #[serde(deserialize_with = "nan_from_null")]
    pub overrun_p50_us: f64,
    #[stat(desc = "class work past budget while normal work waited, 99th percentile")]
    #[serde(deserialize_with = "nan_from_null")]
    pub overrun_p99_us: f64,
    #[stat(desc = "largest overrun since the scheduler started")]
    #[serde(deserialize_with = "nan_from_null")]
    pub overrun_max_us: f64,
    /// Throttle-to-preempt: from the decision that class work must yield (budget timer,
    /// tick, or a normal wakeup's kick) to the class task leaving the CPU, in the interval.
    #[stat(desc = "throttle-to-preempt delays measured in the interval")]
    pub yields: u64,
    #[stat(desc = "throttle-to-preempt delay, median")]
    #[serde(deserialize_with = "nan_from_null")]
    pub yield_p50_us: f64,
    #[stat(desc = "throttle-to-preempt delay, 99th percentile")]
    #[serde(deserialize_with = "nan_from_null")]
    pub yield_p99_us: f64,
    #[stat(desc = "largest throttle-to-preempt delay since the scheduler started")]
    #[serde(deserialize_with = "nan_from_null")]
    pub yield_max_us: f64,
}

/// Everything over one interval: what `--stats` prints, what the `scx_stats` server answers
/// to a `stats` request (its top-level statistics), and what `--monitor` prints.
#[derive(Debug, Clone, Serialize, Deserialize, Stats)]
#[stat(top, desc = "scx_microquanta statistics over one interval")]
pub struct Report {
    #[stat(desc = "length of the interval in seconds")]
    pub interval_s: f64,
    #[stat(desc = "threads in the MicroQuanta class")]
    pub class_members: usize,
    #[stat(desc = "event counters over the interval, summed over CPUs")]
    pub totals: Counters,
    #[stat(desc = "per CPU")]
    pub cpus: Vec<CpuReport>,
    #[stat(desc = "per BPF callback called in the interval, with --callback-run-time")]
    pub callbacks: Vec<CallbackReport>,
}

impl Report {
    pub fn between(earlier: &Snapshot, later: &Snapshot, class_members: usize) -> Self {
        let interval_ns = later.taken.duration_since(earlier.taken).as_nanos().max(1) as f64;
        let sum = |s: &Snapshot| -> Vec<u64> {
            (0..NR_STATS)
                .map(|i| s.counters.iter().map(|c| c[i]).sum())
                .collect()
        };
        let totals = Counters::from_totals(&sum(later)).since(&Counters::from_totals(&sum(earlier)));
        let stat = |s: &Snapshot, cpu: usize, idx: u32| s.counters.get(cpu).map_or(0, |c| c[idx as usize]);
        let delta = |cpu, idx| stat(later, cpu, idx).wrapping_sub(stat(earlier, cpu, idx));
        let us = |ns: f64| ns / 1000.0;
        let hist = |s: &Snapshot, h: u32, cpu: usize| {
            s.hists
                .get(h as usize)
                .and_then(|v| v.get(cpu))
                .cloned()
                .unwrap_or_default()
        };
        let cpus = (0..later.counters.len())
            .map(|cpu| {
                let wake = hist(later, bpf_intf::mq_hist_idx_MQ_HIST_WAKEUP, cpu).since(&hist(
                    earlier,
                    bpf_intf::mq_hist_idx_MQ_HIST_WAKEUP,
                    cpu,
                ));
                let over = hist(later, bpf_intf::mq_hist_idx_MQ_HIST_OVERRUN, cpu);
                let over_interval = over.since(&hist(earlier, bpf_intf::mq_hist_idx_MQ_HIST_OVERRUN, cpu));
                let yielded = hist(later, bpf_intf::mq_hist_idx_MQ_HIST_YIELD, cpu);
                let yield_interval = yielded.since(&hist(earlier, bpf_intf::mq_hist_idx_MQ_HIST_YIELD, cpu));
                CpuReport {
                    cpu,
                    mq_share: delta(cpu, bpf_intf::mq_stat_idx_MQ_STAT_MQ_RUN_NS) as f64 / interval_ns,
                    throttles: delta(cpu, bpf_intf::mq_stat_idx_MQ_STAT_TIMER_THROTTLE)
                        + delta(cpu, bpf_intf::mq_stat_idx_MQ_STAT_MQ_TICK_THROTTLE)
                        + delta(cpu, bpf_intf::mq_stat_idx_MQ_STAT_OVERBUDGET_KICK),
                    kicks: delta(cpu, bpf_intf::mq_stat_idx_MQ_STAT_KICK_PREEMPT),
                    wakeups: wake.count(),
                    wake_p50_us: or_nan(wake.quantile(0.5).map(us)),
                    wake_p99_us: or_nan(wake.quantile(0.99).map(us)),
                    overrun_p50_us: or_nan(over_interval.quantile(0.5).map(us)),
                    overrun_p99_us: or_nan(over_interval.quantile(0.99).map(us)),
                    overrun_max_us: or_nan((over.max > 0).then(|| us(over.max as f64))),
                    yields: yield_interval.count(),
                    yield_p50_us: or_nan(yield_interval.quantile(0.5).map(us)),
                    yield_p99_us: or_nan(yield_interval.quantile(0.99).map(us)),
                    yield_max_us: or_nan((yielded.max > 0).then(|| us(yielded.max as f64))),
                }
            })
            .collect();
        Self {
            interval_s: interval_ns / 1e9,
            class_members,
            totals,
            cpus,
            callbacks: run_time::between(&earlier.callbacks, &later.callbacks),
        }
    }

    /// A totals line, then one line per CPU.
    pub fn format(&self) -> String {
        let opt = |v: f64| {
            if v.is_nan() {
                "-".to_string()
            } else {
                format!("{v:.1}")
            }
        };
        let mut out = self.totals.format_line(self.class_members);
        for c in &self.cpus {
            out.push_str(&format!(
                "\n  cpu{:<3} mq {:>5.1}%  throttles {:>6}  kicks {:>6}  wake(µs) n={} p50 {} p99 {}  overrun(µs) p99 {} max {}  yield(µs) p99 {} max {}",
                c.cpu,
                c.mq_share * 100.0,
                c.throttles,
                c.kicks,
                c.wakeups,
                opt(c.wake_p50_us),
                opt(c.wake_p99_us),
                opt(c.overrun_p99_us),
                opt(c.overrun_max_us),
                opt(c.yield_p99_us),
                opt(c.yield_max_us),
            ));
        }
        if !self.callbacks.is_empty() {
            out.push_str("\n  µs per call:");
            for c in &self.callbacks {
                out.push_str(&format!(" {} {:.2} (n={})", c.callback, c.mean_us, c.calls));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn snapshot(taken: Instant, run_ns: [u64; 2], wake_ns: &[u64]) -> Snapshot {
        let mut counters = vec![vec![0; NR_STATS]; 2];
        for cpu in 0..2 {
            counters[cpu][bpf_intf::mq_stat_idx_MQ_STAT_MQ_RUN_NS as usize] = run_ns[cpu];
        }
        let mut wake = Hist::default();
        for &v in wake_ns {
            wake.buckets[hist::bucket_of(v)] += 1;
            wake.max = wake.max.max(v);
        }
        Snapshot {
            taken,
            counters,
            hists: vec![
                vec![wake, Hist::default()],
                vec![Hist::default(), Hist::default()],
            ],
            callbacks: Vec::new(),
        }
    }

    #[test]
    fn shares_and_latencies_are_per_interval() {
        let t0 = Instant::now();
        let a = snapshot(t0, [0, 0], &[10_000]);
        let b = snapshot(
            t0 + Duration::from_secs(1),
            [500_000_000, 0],
            &[10_000, 20_000, 20_000],
        );
        let r = Report::between(&a, &b, 3);
        assert!((r.cpus[0].mq_share - 0.5).abs() < 1e-9);
        assert_eq!(r.cpus[1].mq_share, 0.0);
        assert_eq!(r.cpus[0].wakeups, 2, "only the interval's wakeups");
        let p50 = r.cpus[0].wake_p50_us;
        assert!((p50 - 20.0).abs() / 20.0 < 0.125, "{p50}");
        assert!(r.cpus[0].overrun_max_us.is_nan(), "no overrun was recorded");
        assert!(r.format().contains("cpu0") && r.format().contains("threads=3"));
        assert!(serde_json::to_string(&r).unwrap().contains("\"mq_share\":0.5"));
        assert_eq!(r.cpus[0].yields, 0);
        assert!(r.cpus[0].yield_max_us.is_nan());
    }

    #[test]
    fn throttle_to_preempt_delays_come_from_their_own_histogram() {
        let t0 = Instant::now();
        let with_yields = |taken, delays_ns: &[u64]| {
            let mut s = snapshot(taken, [0, 0], &[]);
            let mut h = Hist::default();
            for &v in delays_ns {
                h.buckets[hist::bucket_of(v)] += 1;
                h.max = h.max.max(v);
            }
            s.hists.push(vec![Hist::default(), h]);
            s
        };
        let a = with_yields(t0, &[4_000_000]);
        let b = with_yields(t0 + Duration::from_secs(1), &[4_000_000, 30_000, 30_000, 30_000]);
        let r = Report::between(&a, &b, 1);
        let cpu1 = &r.cpus[1];
        assert_eq!(cpu1.yields, 3, "only the interval's yields");
        let p99 = cpu1.yield_p99_us;
        assert!((p99 - 30.0).abs() / 30.0 < 0.125, "{p99}");
        // The max is since the start: the 4 ms one before the interval.
        assert!((cpu1.yield_max_us - 4000.0).abs() < 1e-9);
        assert_eq!(r.cpus[0].yields, 0);
        assert!(r.format().contains("yield(µs) p99 "), "{}", r.format());
    }

    #[test]
    fn nothing_recorded_is_null_in_json_and_reads_back() {
        let t0 = Instant::now();
        let a = snapshot(t0, [0, 0], &[]);
        let b = snapshot(t0 + Duration::from_secs(1), [250_000_000, 0], &[40_000]);
        let r = Report::between(&a, &b, 2);
        let json = serde_json::to_value(&r).unwrap();
        // The shape `--stats-json` readers (mq-experiments' sched_stats) parse: null for
        // "nothing recorded", numbers otherwise, counters under `totals`.
        assert!(json["cpus"][1]["wake_p50_us"].is_null(), "{json}");
        assert!(json["cpus"][0]["overrun_max_us"].is_null(), "{json}");
        assert!(json["cpus"][0]["wake_p99_us"].as_f64().unwrap() > 30.0, "{json}");
        assert_eq!(json["cpus"][0]["wakeups"].as_u64(), Some(1));
        assert_eq!(json["totals"]["mq_enqueue"].as_u64(), Some(0));
        assert_eq!(json["class_members"].as_u64(), Some(2));
        // What a `--monitor` client gets back from the server's JSON.
        let back: Report = serde_json::from_value(json).unwrap();
        assert!(back.cpus[1].wake_p50_us.is_nan() && back.cpus[0].overrun_max_us.is_nan());
        assert_eq!(back.cpus[0].wake_p99_us, r.cpus[0].wake_p99_us);
        assert_eq!((back.cpus[0].mq_share, back.class_members), (0.25, 2));
        assert_eq!(back.format(), r.format(), "the client prints what --stats prints");
    }

    #[test]
    fn the_stats_layout_is_plain_numbers_structs_and_a_list() {
        use scx_stats::Meta;
        let top = Report::meta();
        assert_eq!(
            top.attrs.top.as_deref(),
            Some("true"),
            "Report is the top-level struct"
        );
        assert_eq!(top.fields["cpus"].data.to_string(), "[CpuReport]");
        assert_eq!(top.fields["totals"].data.to_string(), "Counters");
        assert_eq!(top.fields["callbacks"].data.to_string(), "[CallbackReport]");
        let cpu = CpuReport::meta();
        assert_eq!(cpu.fields["overrun_max_us"].data.to_string(), "float");
        assert_eq!(cpu.fields["yields"].data.to_string(), "u64");
        assert_eq!(
            Counters::meta().fields.len(),
            NR_STATS - 1,
            "every counter but the run time (reported as mq_share) is named"
        );
    }
}
