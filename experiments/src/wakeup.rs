// SPDX-License-Identifier: GPL-2.0-only
//! Wakeup latency of a periodic sleeper, the way cyclictest measures it: a
//! thread sleeps until absolute deadlines `start + k * period` and records
//! how late it actually ran. This is the latency a spreading Snap engine pays
//! between its interrupt and its `run()`. With `work` the thread also spins
//! that long after each wakeup, like an engine processing a batch: a thread
//! that needs more than its fair share of a CPU is where a fair scheduler
//! makes it wait and the MicroQuanta class does not.

use std::time::Duration;

use anyhow::{Context, Result};
use mq_class::{current_tid, Class};
use mq_report::LatencySummary;

use crate::latency::{new_ns_histogram, summarise_ns};

/// Which scheduling class the measuring thread is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadClass {
    /// An ordinary thread (EEVDF, or the fair share of our scheduler).
    Normal,
    /// Registered in the MicroQuanta class for the measurement.
    MicroQuanta,
    /// SCHED_FIFO at this priority (1-99): the kernel's RT reference.
    Fifo { priority: u32 },
    /// SCHED_DEADLINE reserving `runtime` every `period` (deadline = period):
    /// the kernel's bandwidth-reservation reference. Not with `cpu` set: the
    /// kernel refuses deadline tasks pinned to part of their root domain.
    Deadline { runtime: Duration, period: Duration },
}

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub struct WakeupConfig {
    pub period: Duration,
    pub samples: u64,
    pub class: ThreadClass,
    /// CPU time to burn after each wakeup (zero: a pure sleeper).
    pub work: Duration,
    /// Pin the measuring thread to this CPU.
    pub cpu: Option<usize>,
}

/// One wakeup: when the thread asked to wake (CLOCK_MONOTONIC) and how late it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wakeup {
    pub deadline_ns: u64,
    pub late_ns: u64,
}

/// A whole measurement: every wakeup, and how many of the sleeps before them blocked.
#[derive(Debug, Clone)]
pub struct Run {
    pub wakeups: Vec<Wakeup>,
    /// Sleeps that took the thread off its CPU (its voluntary context switches). A sleep
    /// whose deadline passes before the thread is off its CPU (a stall between the loop's
    /// check of the deadline and the sleep, or a deadline only µs ahead) returns without
    /// one, and the scheduler sees no wakeup for it.
    pub blocked: u64,
}

/// Runs the measurement on a fresh thread and summarises it.
pub fn measure(cfg: WakeupConfig) -> Result<LatencySummary> {
    Ok(summarise_wakeups(&measure_wakeups(cfg)?))
}

/// Runs the measurement on a fresh thread and returns every wakeup, for callers that
/// split them (e.g. by what else happened at the time).
pub fn measure_wakeups(cfg: WakeupConfig) -> Result<Vec<Wakeup>> {
    Ok(measure_run(cfg)?.wakeups)
}

/// Runs the measurement on a fresh thread and returns the whole run, for callers that
/// count what the scheduler saw of it.
pub fn measure_run(cfg: WakeupConfig) -> Result<Run> {
    std::thread::Builder::new()
        .name("mq-wakeup".into())
        .spawn(move || measure_on_this_thread(&cfg))
        .context("spawning the measuring thread")?
        .join()
        .map_err(|_| anyhow::anyhow!("the measuring thread panicked"))?
}

/// The percentiles of `wakeups`' lateness.
pub fn summarise_wakeups<'a>(wakeups: impl IntoIterator<Item = &'a Wakeup>) -> LatencySummary {
    let mut hist = new_ns_histogram();
    for w in wakeups {
        // Within the histogram's bounds by construction (1 ns .. 100 s, saturating).
        hist.saturating_record(w.late_ns.max(1));
    }
    summarise_ns(&hist)
}

fn measure_on_this_thread(cfg: &WakeupConfig) -> Result<Run> {
    if let Some(cpu) = cfg.cpu {
        pin_to_cpu(cpu)?;
    }
    let class = match cfg.class {
        ThreadClass::Normal => None,
        ThreadClass::MicroQuanta => {
            let class = Class::open()?;
            class.add(current_tid())?;
            Some(class)
        }
        // Set on this thread only, before the loop; it exits afterwards, so
        // the policy needs no undoing.
        ThreadClass::Fifo { priority } => {
            crate::sched_bench::policy::set_fifo(priority)?;
            None
        }
        ThreadClass::Deadline { runtime, period } => {
            crate::sched_bench::policy::set_deadline(runtime, period)?;
            None
        }
    };

    let period_ns = cfg.period.as_nanos() as u64;
    let work_ns = cfg.work.as_nanos() as u64;
    // Bounded by the caller's sample count, allocated up front so the loop does not.
    let mut wakeups = Vec::with_capacity(cfg.samples as usize);
    let switches_before = voluntary_switches()?;
    let mut next = now_ns() + period_ns;
    for _ in 0..cfg.samples {
        sleep_until_ns(next);
        let late = now_ns().saturating_sub(next);
        wakeups.push(Wakeup {
            deadline_ns: next,
            late_ns: late,
        });
        burn_cpu_ns(work_ns);
        next += period_ns;
        // After a stall longer than a period, restart the grid instead of
        // firing a burst of back-to-back "wakeups" that never slept.
        let now = now_ns();
        if next <= now {
            next = now + period_ns;
        }
    }
    let blocked = voluntary_switches()?.saturating_sub(switches_before);

    if let Some(class) = class {
        class.remove(current_tid())?;
    }
    Ok(Run { wakeups, blocked })
}

/// The calling thread's voluntary context switches so far
/// (`/proc/self/task/TID/status`; rustix has no getrusage).
fn voluntary_switches() -> Result<u64> {
    let tid = current_tid() as i32;
    let status = procfs::process::Process::myself()
        .and_then(|me| me.task_from_tid(tid)?.status())
        .context("reading the thread's context switches")?;
    status
        .voluntary_ctxt_switches
        .context("the thread's status has no voluntary_ctxt_switches")
}

pub(crate) fn pin_to_cpu(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and
    // sched_setaffinity only touch the set we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("pinning to CPU {cpu}"));
        }
    }
    Ok(())
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_MONOTONIC in ns: the clock deadlines are set on.
pub(crate) fn now_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Burns `ns` of this thread's CPU time: time spent preempted does not
/// count, so the thread really needs that much CPU per wakeup.
fn burn_cpu_ns(ns: u64) {
    if ns == 0 {
        return;
    }
    let end = thread_cpu_ns() + ns;
    while thread_cpu_ns() < end {
        std::hint::spin_loop();
    }
}

/// CPU time the calling thread has used, in ns.
pub(crate) fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

pub(crate) fn sleep_until_ns(deadline_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
    };
    // Absolute sleep: a late wakeup does not shift the next deadline.
    // SAFETY: `ts` is valid; the remainder pointer may be null with TIMER_ABSTIME.
    while unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        )
    } == libc::EINTR
    {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs for real on the host's own scheduler: 20 wakeups of 1 ms. Only
    /// counts and ordering are asserted; timing is for experiments.
    #[test]
    fn a_normal_sleeper_records_every_wakeup() {
        let s = measure(WakeupConfig {
            period: Duration::from_millis(1),
            samples: 20,
            class: ThreadClass::Normal,
            work: Duration::from_micros(100),
            cpu: None,
        })
        .unwrap();
        assert_eq!(s.samples, 20);
        assert!(s.p50 <= s.p99 && s.p99 <= s.max && s.max > 0.0, "{s:?}");
    }

    /// A pure sleeper's sleeps each take it off its CPU: with a period of 1 ms and no work,
    /// a sleep can return at once only after a stall of a whole period right before it.
    #[test]
    fn a_sleeper_counts_the_sleeps_that_blocked() {
        let run = measure_run(WakeupConfig {
            period: Duration::from_millis(1),
            samples: 20,
            class: ThreadClass::Normal,
            work: Duration::ZERO,
            cpu: None,
        })
        .unwrap();
        assert_eq!(run.wakeups.len(), 20);
        assert!(
            (16..=20).contains(&run.blocked),
            "{} of 20 sleeps blocked",
            run.blocked
        );
    }

    #[test]
    fn the_microquanta_class_needs_a_running_scheduler() {
        if mq_class::sysfs::microquanta_loaded() {
            return; // on a sched_ext host with our scheduler this is not an error
        }
        let err = measure(WakeupConfig {
            period: Duration::from_millis(1),
            samples: 1,
            class: ThreadClass::MicroQuanta,
            work: Duration::ZERO,
            cpu: None,
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("MicroQuanta class"), "{err:#}");
    }
}
