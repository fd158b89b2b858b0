// SPDX-License-Identifier: GPL-2.0-only
//! Bandwidth conformance: does a MicroQuanta thread that never sleeps get
//! `runtime / period` of a CPU it shares with a normal thread, and all of a
//! CPU it has to itself?
//!
//! Two spinners are pinned to the same CPU, one in the class and one normal,
//! and each reads its own CPU time (`CLOCK_THREAD_CPUTIME_ID`, the kernel's
//! per-thread `sum_exec_runtime`) at the start and end of a common wall-clock
//! window; its share is that difference over the window. The threads measure
//! themselves so no sampling from outside can miss or blur a sub-tick budget.
//! While spinning, each also records the longest gap between two of its
//! clock reads: for the normal thread that is the longest stretch the
//! MicroQuanta thread (or anything else) held the CPU, a raw observation of
//! how long a burst enforcement let through.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use mq_class::{current_tid, Class};
use mq_report::sched::Conformance;

use crate::wakeup::{now_ns, pin_to_cpu, sleep_until_ns, thread_cpu_ns};

/// (period_us, runtime_us) pairs measured by default: the kernel patch's
/// default, a quarter share, and two sub-tick periods of 1 and 2 ms (the tick
/// is 4 ms at HZ=250, so only the per-CPU BPF timers can enforce them; they
/// are also the ones an emulated VM can time faithfully).
pub const DEFAULT_PAIRS: [(u64, u64); 4] = [(40, 20), (100, 25), (1000, 200), (2000, 1000)];

/// Time for both threads to pin themselves and join the class before the
/// window opens; generous because TCG is slow and the host is shared.
const SETUP: Duration = Duration::from_millis(500);

/// What to measure.
#[derive(Debug, Clone)]
pub struct ConformanceConfig {
    pub pairs: Vec<(u64, u64)>,
    /// Length of each measuring window (paired, then alone).
    pub window: Duration,
    /// The CPU both spinners share.
    pub cpu: usize,
}

impl ConformanceConfig {
    /// The default pairs on CPU 1 (CPU 0 on a single-CPU machine), which is
    /// less busy with the benchmark's own housekeeping and interrupts.
    pub fn new(window: Duration) -> Self {
        Self {
            pairs: DEFAULT_PAIRS.to_vec(),
            window,
            cpu: if super::cpus() > 1 { 1 } else { 0 },
        }
    }
}

/// Measures every pair, each with a fresh `scheduler` started with that pair.
pub fn run(cfg: &ConformanceConfig, scheduler: &Path) -> Result<Vec<Conformance>> {
    let mut entries = Vec::new();
    for &(period_us, runtime_us) in &cfg.pairs {
        let (sched, _) = super::start_scheduler(scheduler, period_us, runtime_us)?;
        let entry = measure_loaded(cfg, scheduler, period_us, runtime_us)
            .with_context(|| format!("conformance at period {period_us} µs runtime {runtime_us} µs"))?;
        sched.stop().context("stopping scx_microquanta")?;
        eprintln!(
            "mq-bench-sched: conformance {period_us}/{runtime_us} µs: mq {:.3} (expected {:.3}), \
             other {:.3}, alone {:.3}; other's longest wait {:.0} µs, scheduler's max overrun {:?} µs",
            entry.mq_share,
            entry.expected_mq_share,
            entry.other_share,
            entry.alone_share.unwrap_or(f64::NAN),
            entry.other_max_gap_us,
            entry.sched_overrun_max_us
        );
        entries.push(entry);
    }
    Ok(entries)
}

/// Measures one pair with `scheduler` already loaded with it: paired, then
/// alone.
pub fn measure_loaded(
    cfg: &ConformanceConfig,
    scheduler: &Path,
    period_us: u64,
    runtime_us: u64,
) -> Result<Conformance> {
    let monitor = super::sched_stats::WindowMonitor::start(scheduler, cfg.window);
    let paired = measure_window(cfg.cpu, cfg.window, true)?;
    let enforcement = monitor.and_then(|m| m.finish(cfg.cpu));
    // Read now: alone, no normal work waits, so nothing more can overrun.
    let sched_overrun_max_us = super::sched_stats::overrun_max_us(scheduler, cfg.cpu);
    let alone = measure_window(cfg.cpu, cfg.window, false)?;
    let window_ns = cfg.window.as_nanos() as u64;
    let other = paired
        .other
        .ok_or_else(|| anyhow!("the normal spinner did not report"))?;
    Ok(Conformance {
        period_us,
        runtime_us,
        mq_share: share(paired.mq.cpu_ns, window_ns),
        other_share: share(other.cpu_ns, window_ns),
        expected_mq_share: expected_mq_share(period_us, runtime_us),
        alone_share: Some(share(alone.mq.cpu_ns, window_ns)),
        other_max_gap_us: other.max_gap_ns as f64 / 1000.0,
        mq_max_gap_us: paired.mq.max_gap_ns as f64 / 1000.0,
        sched_overrun_max_us,
        enforcement,
        window_ms: cfg.window.as_millis() as u64,
        cpu: cfg.cpu,
    })
}

/// What one spinner saw of its window.
#[derive(Debug, Clone, Copy)]
pub struct Spin {
    /// CPU time it got during the window.
    pub cpu_ns: u64,
    /// Longest stretch within the window between two consecutive clock
    /// reads (the window's opening counts as the first read).
    pub max_gap_ns: u64,
}

/// The MicroQuanta spinner's view and, if one ran, the normal spinner's.
#[derive(Debug, Clone, Copy)]
pub struct WindowResult {
    pub mq: Spin,
    pub other: Option<Spin>,
}

/// Spins a MicroQuanta thread on `cpu` for `window`, next to a normal spinner
/// on the same CPU if `with_other`. Needs the scheduler loaded.
pub fn measure_window(cpu: usize, window: Duration, with_other: bool) -> Result<WindowResult> {
    let start_ns = now_ns() + SETUP.as_nanos() as u64;
    let end_ns = start_ns + window.as_nanos() as u64;
    std::thread::scope(|s| {
        let mq = s.spawn(move || spin(cpu, true, start_ns, end_ns));
        let other = with_other.then(|| s.spawn(move || spin(cpu, false, start_ns, end_ns)));
        let join = |h: std::thread::ScopedJoinHandle<'_, Result<Spin>>, who: &str| {
            h.join()
                .map_err(|_| anyhow!("the {who} spinner panicked"))?
                .with_context(|| format!("the {who} spinner"))
        };
        let mq = join(mq, "MicroQuanta");
        let other = other.map(|h| join(h, "normal")).transpose();
        Ok(WindowResult {
            mq: mq?,
            other: other?,
        })
    })
}

fn spin(cpu: usize, in_class: bool, start_ns: u64, end_ns: u64) -> Result<Spin> {
    pin_to_cpu(cpu)?;
    let class = if in_class {
        let class = Class::open()?;
        class.add(current_tid())?;
        Some(class)
    } else {
        None
    };
    if now_ns() > start_ns {
        bail!("setting up took longer than {SETUP:?}; the window would be short");
    }
    sleep_until_ns(start_ns);
    // CPU time only advances while this thread runs, so reading it late
    // (because the other thread ran first) loses nothing.
    let cpu0 = thread_cpu_ns();
    // Gaps count from the window's opening (a thread that first runs late
    // was kept off the CPU) to its close (time after it does not matter).
    let mut last = start_ns;
    let mut max_gap_ns = 0;
    while last < end_ns {
        let now = now_ns();
        max_gap_ns = max_gap_ns.max(now.min(end_ns).saturating_sub(last));
        last = now;
    }
    let cpu_ns = thread_cpu_ns() - cpu0;
    if let Some(class) = class {
        class.remove(current_tid())?;
    }
    Ok(Spin { cpu_ns, max_gap_ns })
}

/// CPU time over wall time. A spinner can overshoot the window by one loop
/// iteration, so a share a hair above 1 is real, not an error.
pub fn share(cpu_ns: u64, window_ns: u64) -> f64 {
    if window_ns == 0 {
        return 0.0;
    }
    cpu_ns as f64 / window_ns as f64
}

/// The largest scheduler-measured overrun over all entries (`None` if no
/// entry has one).
pub fn max_overrun_us(entries: &[Conformance]) -> Option<f64> {
    entries
        .iter()
        .filter_map(|e| e.sched_overrun_max_us)
        .reduce(f64::max)
}

/// The share the class promises a MicroQuanta thread while normal work
/// competes: `runtime / period`, at most all of the CPU.
pub fn expected_mq_share(period_us: u64, runtime_us: u64) -> f64 {
    if period_us == 0 {
        return 1.0;
    }
    (runtime_us as f64 / period_us as f64).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_share_is_runtime_over_period() {
        assert_eq!(expected_mq_share(40, 20), 0.5);
        assert_eq!(expected_mq_share(100, 25), 0.25);
        assert_eq!(expected_mq_share(1000, 200), 0.2);
        assert_eq!(expected_mq_share(40, 80), 1.0, "never more than the CPU");
    }

    #[test]
    fn share_is_cpu_time_over_the_window() {
        assert_eq!(share(500_000_000, 2_000_000_000), 0.25);
        assert_eq!(share(0, 2_000_000_000), 0.0);
        assert_eq!(
            share(1, 0),
            0.0,
            "an empty window is no share, not a division by zero"
        );
    }

    fn entry(mq_share: f64, expected: f64, overrun: Option<f64>) -> Conformance {
        Conformance {
            period_us: 100,
            runtime_us: 25,
            mq_share,
            other_share: 1.0 - mq_share,
            expected_mq_share: expected,
            alone_share: None,
            other_max_gap_us: 0.0,
            mq_max_gap_us: 0.0,
            sched_overrun_max_us: overrun,
            enforcement: None,
            window_ms: 2000,
            cpu: 1,
        }
    }

    #[test]
    fn max_overrun_skips_entries_without_one() {
        assert_eq!(max_overrun_us(&[]), None);
        assert_eq!(max_overrun_us(&[entry(0.5, 0.5, None)]), None);
        let es = [
            entry(0.5, 0.5, Some(40.0)),
            entry(0.5, 0.5, None),
            entry(0.5, 0.5, Some(7.5)),
        ];
        assert_eq!(max_overrun_us(&es), Some(40.0));
    }

    /// A real thread on the host's own scheduler, no class: its CPU time is
    /// positive and no more than its window, and it saw no gap as long as it.
    #[test]
    fn a_lone_normal_spinner_measures_cpu_time_within_its_window() {
        // Generous set-up time: spin() refuses to start late, and the host is shared.
        let start = now_ns() + 200_000_000;
        let s = spin(0, false, start, start + 50_000_000).unwrap();
        let sh = share(s.cpu_ns, 50_000_000);
        // Loose: the host may be busy; the point is the units add up.
        assert!(sh > 0.0 && sh < 1.05, "share {sh}");
        assert!(s.max_gap_ns < 50_000_000, "{s:?}");
    }
}
