// SPDX-License-Identifier: GPL-2.0-only
//! Statistics: what the BPF program counts and measures per CPU, read from
//! its maps, turned into per-interval reports for people (`--stats SECS`),
//! tools (`--stats-json`) and other processes (`--monitor SECS`, through the
//! maps the scheduler pins next to the class map).

mod counters;
mod hist;

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use libbpf_rs::{MapCore, MapFlags, MapHandle};
use serde::Serialize;

use crate::bpf_intf;
pub use counters::Counters;
pub use hist::Hist;

pub const STATS_PIN: &str = "/sys/fs/bpf/scx_microquanta/stats";
pub const HISTS_PIN: &str = "/sys/fs/bpf/scx_microquanta/hists";

const NR_STATS: usize = bpf_intf::mq_stat_idx_MQ_NR_STATS as usize;
const NR_HISTS: usize = bpf_intf::mq_hist_idx_MQ_NR_HISTS as usize;

/// Raw per-CPU values at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    taken: Instant,
    /// `[cpu][stat]`
    counters: Vec<Vec<u64>>,
    /// `[hist][cpu]`
    hists: Vec<Vec<Hist>>,
}

impl Snapshot {
    /// Time between `earlier` and this snapshot.
    pub fn age_since(&self, earlier: &Snapshot) -> std::time::Duration {
        self.taken.duration_since(earlier.taken)
    }
}

/// Reads the `stats` and `hists` maps, of our own skeleton or pinned ones.
#[derive(Debug)]
pub struct StatsReader {
    stats: MapHandle,
    hists: MapHandle,
}

impl StatsReader {
    pub fn new(stats: MapHandle, hists: MapHandle) -> Self {
        Self { stats, hists }
    }

    /// The maps of a running scheduler, for `--monitor`.
    pub fn open_pinned() -> Result<Self> {
        let open = |p: &str| {
            MapHandle::from_pinned_path(Path::new(p))
                .with_context(|| format!("opening {p}: is scx_microquanta running? (root needed)"))
        };
        Ok(Self::new(open(STATS_PIN)?, open(HISTS_PIN)?))
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
        })
    }
}

fn lookup_percpu(map: &MapHandle, idx: usize) -> Result<Vec<Vec<u8>>> {
    Ok(map
        .lookup_percpu(&(idx as u32).to_ne_bytes(), MapFlags::ANY)
        .context("reading a per-CPU statistics map")?
        .unwrap_or_default())
}

/// One CPU over one interval.
#[derive(Debug, Clone, Serialize)]
pub struct CpuReport {
    pub cpu: usize,
    /// Fraction of the interval the CPU ran MicroQuanta threads.
    pub mq_share: f64,
    /// Times class work on this CPU was told to yield its spent budget.
    pub throttles: u64,
    /// Preempting kicks sent for class wakeups from this CPU.
    pub kicks: u64,
    /// Class wakeups that ran on this CPU in the interval.
    pub wakeups: u64,
    pub wake_p50_us: Option<f64>,
    pub wake_p99_us: Option<f64>,
    pub overrun_p50_us: Option<f64>,
    pub overrun_p99_us: Option<f64>,
    /// Largest overrun since the scheduler started.
    pub overrun_max_us: Option<f64>,
    /// Throttle-to-preempt: from the decision that class work must yield (budget timer,
    /// tick, or a normal wakeup's kick) to the class task leaving the CPU, in the interval.
    pub yields: u64,
    pub yield_p50_us: Option<f64>,
    pub yield_p99_us: Option<f64>,
    /// Largest throttle-to-preempt delay since the scheduler started.
    pub yield_max_us: Option<f64>,
}

/// Everything over one interval.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub interval_s: f64,
    pub class_members: usize,
    pub totals: Counters,
    pub cpus: Vec<CpuReport>,
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
                    wake_p50_us: wake.quantile(0.5).map(us),
                    wake_p99_us: wake.quantile(0.99).map(us),
                    overrun_p50_us: over_interval.quantile(0.5).map(us),
                    overrun_p99_us: over_interval.quantile(0.99).map(us),
                    overrun_max_us: (over.max > 0).then(|| us(over.max as f64)),
                    yields: yield_interval.count(),
                    yield_p50_us: yield_interval.quantile(0.5).map(us),
                    yield_p99_us: yield_interval.quantile(0.99).map(us),
                    yield_max_us: (yielded.max > 0).then(|| us(yielded.max as f64)),
                }
            })
            .collect();
        Self {
            interval_s: interval_ns / 1e9,
            class_members,
            totals,
            cpus,
        }
    }

    /// A totals line, then one line per CPU.
    pub fn format(&self) -> String {
        let opt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
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
        let p50 = r.cpus[0].wake_p50_us.unwrap();
        assert!((p50 - 20.0).abs() / 20.0 < 0.125, "{p50}");
        assert_eq!(r.cpus[0].overrun_max_us, None);
        assert!(r.format().contains("cpu0") && r.format().contains("threads=3"));
        assert!(serde_json::to_string(&r).unwrap().contains("\"mq_share\":0.5"));
        assert_eq!((r.cpus[0].yields, r.cpus[0].yield_max_us), (0, None));
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
        let p99 = cpu1.yield_p99_us.unwrap();
        assert!((p99 - 30.0).abs() / 30.0 < 0.125, "{p99}");
        // The max is since the start: the 4 ms one before the interval.
        assert!((cpu1.yield_max_us.unwrap() - 4000.0).abs() < 1e-9);
        assert_eq!(r.cpus[0].yields, 0);
        assert!(r.format().contains("yield(µs) p99 "), "{}", r.format());
    }
}
