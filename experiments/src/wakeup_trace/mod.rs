// SPDX-License-Identifier: GPL-2.0-only
//! Where a wakeup's time goes: the demo's workload (a periodic thread that burns some CPU
//! per wakeup, next to CPU hogs) under one policy, with the kernel tracing the scheduler's
//! events, interrupts, softirqs, hrtimer and timer-wheel callbacks, and each wakeup's window
//! (deadline to the thread's clock read) charged with what filled it. The slow wakeups (the
//! p99 and later of those the trace holds, or a given threshold) are set beside all of them,
//! and the slowest are listed one by one with where in the window each charge starts. A row
//! far more common in slow wakeups than in all is a suspect, not yet a cause: a late
//! interrupt also runs every timer that expired while it was late, so check whether it
//! starts before the waking (it delayed the wakeup) or after (it came with the delay).
//!
//! `mq-trace-wakeups` is the program (docs/MICROQUANTA.md, "Where that gap comes from").
//! With the demo's stall probe running (`Config::stall_probe`), the measured thread meets
//! the probe's SCHED_FIFO 99 wakeups as it does in the demo's rounds.
//! The trace itself costs: every event is a few µs under TCG, so compare policies traced
//! alike, never a traced run with the demo's numbers.

pub mod attribution;
pub mod ftrace;
pub mod tracefs;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use mq_report::wakeup_trace::{Charge, Report, SlowWakeup};

use crate::hogs::Hogs;
use crate::scheduler_process::SchedulerProcess;
use crate::stall_probe::{self, StallProbe};
use crate::wakeup::{measure_run, summarise_wakeups, Run, ThreadClass, WakeupConfig};
use attribution::Timeline;

/// The measuring thread's name (`crate::wakeup`), which finds its tid in the trace.
const THREAD: &str = "mq-wakeup";

/// Slow wakeups listed one by one, and the charges listed for each.
const SLOWEST: usize = 12;
const CHARGES: usize = 8;

/// Per-CPU buffer: a wakeup is a few dozen events of ~50 bytes, plus the hogs' ticks.
const BUFFER_KB: u64 = 32 * 1024;

/// Which class the thread is in, and whether scx_microquanta is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Policy {
    /// No BPF scheduler, a normal thread.
    Eevdf,
    /// No BPF scheduler, SCHED_FIFO 50.
    Fifo,
    /// scx_microquanta loaded, the thread left in the fair share.
    Normal,
    /// scx_microquanta loaded, the thread in the class.
    Microquanta,
    /// scx_microquanta loaded, the thread in SCHED_FIFO 50: the hogs it preempts are
    /// sched_ext tasks, so this is sched_ext's own floor: what it adds to any preemption of
    /// its tasks (a class inside sched_ext pays its own enqueue and pick on top).
    FifoScx,
}

impl Policy {
    pub fn name(self) -> &'static str {
        match self {
            Self::Eevdf => mq_report::demo::EEVDF,
            Self::Fifo => mq_report::demo::FIFO,
            Self::Normal => mq_report::demo::NORMAL,
            Self::Microquanta => mq_report::demo::MICROQUANTA,
            Self::FifoScx => mq_report::demo::FIFO_SCX,
        }
    }

    fn class(self) -> ThreadClass {
        match self {
            Self::Eevdf | Self::Normal => ThreadClass::Normal,
            Self::Fifo | Self::FifoScx => ThreadClass::Fifo { priority: 50 },
            Self::Microquanta => ThreadClass::MicroQuanta,
        }
    }

    fn needs_scheduler(self) -> bool {
        matches!(self, Self::Normal | Self::Microquanta | Self::FifoScx)
    }
}

/// What to trace.
#[derive(Debug, Clone)]
pub struct Config {
    pub policy: Policy,
    pub samples: u64,
    pub period: Duration,
    pub work: Duration,
    pub hogs: usize,
    /// scx_microquanta and its arguments, for the policies that load it.
    pub scheduler: Option<(PathBuf, Vec<String>)>,
    /// Slow means at least this late; `None`: the p99 of the wakeups the trace holds.
    pub slow: Option<Duration>,
    /// Where to keep the raw trace, if anywhere.
    pub keep_trace: Option<PathBuf>,
    /// Run the demo's stall probe on every CPU while tracing (`crate::stall_probe`): its
    /// SCHED_FIFO 99 wakeups meet the measured thread's at random, as in the demo's rounds.
    pub stall_probe: bool,
}

/// Traces one run.
pub fn run(cfg: &Config) -> Result<Report> {
    let hogs = Hogs::start(cfg.hogs, None)?;
    let scheduler = if cfg.policy.needs_scheduler() {
        let (bin, args) = cfg
            .scheduler
            .as_ref()
            .context("this policy needs the scx_microquanta binary")?;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let sched = SchedulerProcess::start(bin, &args)?;
        crate::settle::settle("mq-trace-wakeups", crate::settle::WARM_UP_WAKEUPS)?;
        Some(sched)
    } else {
        None
    };

    let instance = tracefs::Instance::create(ftrace::EVENTS, BUFFER_KB)?;
    instance.start()?;
    let probe = if cfg.stall_probe {
        let cpus = std::thread::available_parallelism()?.get();
        Some(StallProbe::start(
            cpus,
            stall_probe::INTERVAL,
            stall_probe::THRESHOLD,
        )?)
    } else {
        None
    };
    let run = measure_run(WakeupConfig {
        period: cfg.period,
        samples: cfg.samples,
        class: cfg.policy.class(),
        work: cfg.work,
        cpu: None,
    });
    if let Some(probe) = probe {
        probe.stop()?;
    }
    instance.stop()?;
    let text = instance.read()?;
    drop(instance);
    if let Some(sched) = scheduler {
        sched.stop().context("stopping scx_microquanta")?;
    }
    drop(hogs);
    let Run { wakeups, blocked } = run?;
    if let Some(path) = &cfg.keep_trace {
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    }

    let lost = text.lines().filter(|l| l.contains("[LOST ")).count();
    if lost > 0 {
        eprintln!("mq-trace-wakeups: warning: the trace lost events on {lost} occasions");
    }
    let records: Vec<ftrace::Record> = text.lines().filter_map(ftrace::parse_line).collect();
    let tid = records
        .iter()
        .find_map(|r| match &r.event {
            ftrace::Event::Switch {
                next_pid, next_comm, ..
            } if next_comm == THREAD => Some(*next_pid),
            _ => None,
        })
        .with_context(|| format!("the trace never switches to the `{THREAD}` thread"))?;
    let timeline = Timeline::new(&records, tid);
    let windows = timeline.windows(&wakeups);
    if windows.is_empty() {
        bail!("no wakeup of {} was found in the trace", wakeups.len());
    }
    let latency = summarise_wakeups(&wakeups);
    let slow_ns = cfg.slow.map_or_else(
        || p99_ns(windows.iter().map(|w| w.late_ns)),
        |d| d.as_nanos() as u64,
    );
    let mut slow: Vec<_> = windows.iter().copied().filter(|w| w.late_ns >= slow_ns).collect();
    let unmatched_slow = wakeups.iter().filter(|w| w.late_ns >= slow_ns).count() - slow.len();
    slow.sort_by_key(|w| std::cmp::Reverse(w.late_ns));
    let slowest = slow
        .iter()
        .take(SLOWEST)
        .map(|w| SlowWakeup {
            late_us: w.late_ns as f64 / 1000.0,
            cpu: w.cpu,
            charges: timeline
                .charges(w)
                .into_iter()
                .take(CHARGES)
                .map(|c| Charge {
                    label: c.label,
                    us: c.ns as f64 / 1000.0,
                    at_us: c.at_ns as f64 / 1000.0,
                })
                .collect(),
        })
        .collect();
    Ok(Report {
        kernel: mq_class::sysfs::kernel_release(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        policy: cfg.policy.name().into(),
        period_us: cfg.period.as_micros() as u64,
        work_us: cfg.work.as_micros() as u64,
        hogs: cfg.hogs,
        wakeup_latency_us: latency,
        blocked: Some(blocked),
        matched: windows.len(),
        slow_threshold_us: slow_ns as f64 / 1000.0,
        unmatched_slow,
        all: timeline.attribute(&windows),
        slow: timeline.attribute(&slow),
        slowest,
    })
}

/// The nearest-rank p99 of `late_ns`: a value one of them has, so at least one is slow.
///
/// Taken over the wakeups the trace holds rather than all of them: a wakeup it lacks (its
/// timer fired while the thread still ran its last work) is often among the run's latest,
/// and a threshold over all of them could leave no traced wakeup slow.
fn p99_ns(late_ns: impl Iterator<Item = u64>) -> u64 {
    let mut v: Vec<u64> = late_ns.collect();
    v.sort_unstable();
    let rank = (v.len() * 99).div_ceil(100).max(1);
    v.get(rank - 1).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_p99_is_a_value_of_the_set_so_one_wakeup_is_slow() {
        assert_eq!(p99_ns((1..=300).map(|i| i * 1000)), 297_000);
        assert_eq!(p99_ns([5, 9, 7].into_iter()), 9);
        assert_eq!(p99_ns(std::iter::empty()), 0);
    }
}
