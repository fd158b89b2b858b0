// SPDX-License-Identifier: GPL-2.0-only
//! The stall probe: on every CPU, a SCHED_FIFO 99 thread pinned there that sleeps a short
//! interval until absolute deadlines and records how late it woke.
//!
//! Each interval is drawn afresh, uniformly within half the nominal interval either side
//! ([`jittered_ns`]). On a fixed grid the probe met a measured periodic thread at a phase
//! that held for the whole measurement: 1.5 ms against the measured 1 ms repeats every 3 ms,
//! so a policy measured at an unlucky phase had every third wakeup arrive together with a
//! probe wakeup on its CPU (and wait for it), and one measured at a lucky phase none. Seen
//! in the demo's trace, that decided a policy's p99. Jittered, the probe meets every policy
//! equally often, at random.
//!
//! Nothing in the guest's scheduling can keep a FIFO 99 thread off its CPU for long: it
//! outranks every normal, sched_ext and lower RT task, and our scheduler never decides for
//! it. So when the probe wakes much later than asked, the guest itself did not run (qemu's
//! vCPU or timer thread waited for the host) or its timer interrupt came late; either way a
//! thread measured at that moment waited for the emulator, not for the policy under test.
//! [`Stall`]s are the wakeups later than the threshold; measurements mark the samples whose
//! wait overlaps one ([`Stall::overlaps`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use mq_report::LatencySummary;

use crate::latency::{new_ns_histogram, summarise_ns};
use crate::sched_bench::policy::set_fifo;
use crate::wakeup::{now_ns, pin_to_cpu, sleep_until_ns};

/// The probe's SCHED_FIFO priority: the highest, so only the kernel and the emulator delay it.
pub const PROBE_PRIORITY: u32 = 99;
/// How often each probe wakes on average (each interval is jittered: [`jittered_ns`]).
pub const INTERVAL: Duration = Duration::from_micros(1500);
/// A probe wakeup at least this late is a stall: a quarter of a 4 ms tick, well above the
/// probe's own lateness under TCG when nothing stalls (its p99 is reported next to it).
pub const THRESHOLD: Duration = Duration::from_millis(1);
/// Stalls kept per CPU; more are counted, not stored (a bound on a hostile machine's cost).
const MAX_STALLS_PER_CPU: usize = 100_000;

/// One late probe wakeup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    pub cpu: usize,
    /// When the probe asked to wake (CLOCK_MONOTONIC, ns).
    pub deadline_ns: u64,
    /// How late it woke.
    pub late_ns: u64,
}

impl Stall {
    /// When the probe actually woke.
    pub fn end_ns(&self) -> u64 {
        self.deadline_ns + self.late_ns
    }

    /// Whether the stall overlaps the interval `[start_ns, end_ns]` (a measured wakeup's
    /// wait: from its deadline to when it ran).
    pub fn overlaps(&self, start_ns: u64, end_ns: u64) -> bool {
        self.deadline_ns <= end_ns && start_ns <= self.end_ns()
    }
}

/// What the probes recorded.
#[derive(Debug, Clone)]
pub struct ProbeRecord {
    /// Every stall, sorted by deadline.
    pub stalls: Vec<Stall>,
    /// Stalls beyond the per-CPU bound, counted only.
    pub dropped: u64,
    /// The lateness of every probe wakeup, all CPUs.
    pub lateness: LatencySummary,
}

/// What one CPU's probe returns: its stalls, those beyond the bound, and its lateness.
struct CpuRecord {
    stalls: Vec<Stall>,
    dropped: u64,
    lateness: Histogram<u64>,
}

/// Running probes, one per CPU; [`StallProbe::stop`] collects them.
pub struct StallProbe {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Result<CpuRecord>>>,
}

impl StallProbe {
    /// Starts a probe on each of `cpus` CPUs waking every `interval`; wakeups later than
    /// `threshold` are stalls.
    pub fn start(cpus: usize, interval: Duration, threshold: Duration) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut probe = Self {
            stop: stop.clone(),
            threads: Vec::new(),
        };
        for cpu in 0..cpus {
            let stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("mq-stall-{cpu}"))
                .spawn(move || probe_loop(cpu, interval, threshold, &stop))
                .context("spawning a stall probe")?;
            probe.threads.push(thread);
        }
        Ok(probe)
    }

    /// Stops the probes (each within one interval) and returns what they saw.
    pub fn stop(mut self) -> Result<ProbeRecord> {
        self.stop.store(true, Ordering::Relaxed);
        let mut stalls = Vec::new();
        let mut dropped = 0;
        let mut lateness = new_ns_histogram();
        for thread in std::mem::take(&mut self.threads) {
            let cpu = thread
                .join()
                .map_err(|_| anyhow::anyhow!("a stall probe panicked"))??;
            stalls.extend(cpu.stalls);
            dropped += cpu.dropped;
            lateness
                .add(&cpu.lateness)
                .context("merging the probes' histograms")?;
        }
        stalls.sort_by_key(|s| s.deadline_ns);
        Ok(ProbeRecord {
            stalls,
            dropped,
            lateness: summarise_ns(&lateness),
        })
    }
}

impl Drop for StallProbe {
    /// An early return still ends the probes (they would otherwise spin on FIFO 99 forever).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn probe_loop(cpu: usize, interval: Duration, threshold: Duration, stop: &AtomicBool) -> Result<CpuRecord> {
    pin_to_cpu(cpu)?;
    set_fifo(PROBE_PRIORITY).with_context(|| format!("stall probe on CPU {cpu}"))?;
    let interval_ns = interval.as_nanos() as u64;
    let threshold_ns = threshold.as_nanos() as u64;
    let mut stalls = Vec::new();
    let mut dropped = 0;
    let mut hist = new_ns_histogram();
    let mut rng = fastrand::Rng::new();
    let mut next = now_ns() + jittered_ns(interval_ns, &mut rng);
    while !stop.load(Ordering::Relaxed) {
        sleep_until_ns(next);
        let now = now_ns();
        let late = now.saturating_sub(next);
        hist.saturating_record(late.max(1));
        if late >= threshold_ns {
            if stalls.len() < MAX_STALLS_PER_CPU {
                stalls.push(Stall {
                    cpu,
                    deadline_ns: next,
                    late_ns: late,
                });
            } else {
                dropped += 1;
            }
        }
        // A stall longer than an interval restarts the grid: one stall, not a burst of
        // "late" wakeups that never slept.
        let step = jittered_ns(interval_ns, &mut rng);
        next += step;
        if next <= now {
            next = now + step;
        }
    }
    Ok(CpuRecord {
        stalls,
        dropped,
        lateness: hist,
    })
}

/// One probe interval: uniform in [interval / 2, 3 * interval / 2), so the mean is `interval_ns`
/// and the probe keeps no phase against any periodic thread.
pub fn jittered_ns(interval_ns: u64, rng: &mut fastrand::Rng) -> u64 {
    let half = interval_ns / 2;
    half + rng.u64(0..interval_ns.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The share of a 1 ms grid of measured wakeups that a probe schedule lands within
    /// `window_ns` before (the probe then runs first on that CPU).
    fn met(probe: &[u64], window_ns: u64) -> f64 {
        let horizon = *probe.last().unwrap();
        let wakeups: Vec<u64> = (1..horizon / 1_000_000).map(|k| k * 1_000_000).collect();
        let hit = wakeups
            .iter()
            .filter(|&&w| probe.iter().any(|&p| p <= w && w - p < window_ns))
            .count();
        hit as f64 / wakeups.len() as f64
    }

    #[test]
    fn a_jittered_probe_meets_a_periodic_thread_at_its_average_rate_whatever_the_phase() {
        let (interval, window) = (1_500_000u64, 50_000u64);
        let mut rng = fastrand::Rng::with_seed(7);
        for phase in [990_000u64, 260_000, 510_000] {
            // The fixed grid: the share depends on the phase, from a third to none.
            let fixed: Vec<u64> = (0..2000).map(|k| phase + k * interval).collect();
            let fixed_share = met(&fixed, window);
            // Jittered: about window / interval (1 in 30) at any phase.
            let mut t = phase;
            let jittered: Vec<u64> = (0..2000)
                .map(|_| {
                    t += jittered_ns(interval, &mut rng);
                    t
                })
                .collect();
            let share = met(&jittered, window);
            assert!((0.02..0.05).contains(&share), "phase {phase}: {share}");
            if phase == 990_000 {
                assert!(
                    fixed_share > 0.3,
                    "the fixed grid meets every third wakeup: {fixed_share}"
                );
            } else {
                assert!(fixed_share < 0.01, "phase {phase}: {fixed_share}");
            }
        }
        let steps: Vec<u64> = (0..1000).map(|_| jittered_ns(interval, &mut rng)).collect();
        assert!(steps.iter().all(|&s| (750_000..2_250_000).contains(&s)));
        let mean = steps.iter().sum::<u64>() / steps.len() as u64;
        assert!((1_400_000..1_600_000).contains(&mean), "mean {mean}");
    }

    #[test]
    fn a_stall_overlaps_the_waits_it_shares_time_with() {
        let s = Stall {
            cpu: 0,
            deadline_ns: 1000,
            late_ns: 500,
        };
        assert_eq!(s.end_ns(), 1500);
        assert!(s.overlaps(900, 1100), "wait ends inside the stall");
        assert!(s.overlaps(1200, 2000), "wait starts inside the stall");
        assert!(s.overlaps(0, 5000), "wait covers the stall");
        assert!(s.overlaps(1500, 1600), "touching counts");
        assert!(!s.overlaps(0, 999));
        assert!(!s.overlaps(1501, 3000));
    }

    /// Runs for real (as root it gets SCHED_FIFO; without the privilege it must fail with a
    /// clear error rather than measure something else).
    #[test]
    fn probes_run_on_every_cpu_and_stop() {
        let probe = match StallProbe::start(
            crate::sched_bench::cpus().min(2),
            Duration::from_micros(500),
            Duration::from_secs(5),
        ) {
            Ok(p) => p,
            Err(e) => panic!("{e:#}"),
        };
        std::thread::sleep(Duration::from_millis(50));
        match probe.stop() {
            Ok(record) => {
                // 50 ms at 0.5 ms on each of two CPUs; a loaded host wakes them less often.
                assert!(record.lateness.samples >= 10, "{:?}", record.lateness);
                assert!(record.stalls.iter().all(|s| s.late_ns >= 5_000_000));
                assert_eq!(record.dropped, 0);
            }
            Err(e) => assert!(
                format!("{e:#}").contains("stall probe on CPU"),
                "an unprivileged run fails naming the probe: {e:#}"
            ),
        }
    }
}
