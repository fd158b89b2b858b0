// SPDX-License-Identifier: GPL-2.0-only
//! The scheduler benchmark behind `mq-bench-sched`: how MicroQuanta compares
//! with the kernel's own classes, and whether it keeps its bandwidth promise.
//! Runs as root on a sched_ext kernel and starts/stops `scx_microquanta`
//! itself, so every number of one report comes from one boot.
//!
//! Phases, each self-contained (own hogs, own scheduler starts):
//! 1. [`latency_compare`]: a 1 ms periodic sleeper under `2 * cpus` hogs as
//!    EEVDF, SCHED_FIFO 50 and SCHED_DEADLINE (runtime/period of the
//!    MicroQuanta config) with no BPF scheduler, then in the MicroQuanta class.
//! 2. [`conformance`]: CPU shares of a MicroQuanta spinner and a normal
//!    spinner pinned to one CPU, per (period, runtime), and of the MicroQuanta
//!    spinner alone.
//! 3. [`cyclictest`]: rt-tests' cyclictest in the class vs SCHED_FIFO.
//! 4. [`groups`]: per-group conformance, two class groups with their own budgets.
//!
//! # Report
//!
//! [`mq_report::sched::Report`] has the schema; the last stdout line carries it behind its
//! tag (`MQ_BENCH_SCHED_JSON {...}`).
//!
//! Overrun (how long class work ran past the instant its CPU's budget ran
//! out while normal work waited) cannot be seen from userspace: it needs the
//! scheduler's per-burst accounting. So it is the scheduler's own figure,
//! read with `scx_microquanta --monitor` on the conformance CPU right after
//! each paired window ([`sched_stats`]); null when no burst overran or the
//! monitor was unavailable. `other_max_gap_us` is our independent, coarser
//! observation (the longest stretch the normal spinner was kept off its CPU,
//! which also includes legitimately accrued credit and other interruptions).

pub mod conformance;
pub mod cyclictest;
pub mod groups;
pub mod latency_compare;
pub mod policy;
pub mod report;
pub mod sched_stats;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use mq_class::sysfs;
use mq_report::sched::{Bandwidth, Report};

use crate::locate;
use crate::scheduler_process::SchedulerProcess;

use self::conformance::ConformanceConfig;
use self::cyclictest::CyclictestConfig;
use self::latency_compare::LatencyConfig;
use self::report::NOTE;

/// Defaults of a full run and of `--quick` (sized for a TCG VM test).
pub const SAMPLES: u64 = 2000;
pub const QUICK_SAMPLES: u64 = 400;
pub const WINDOW: Duration = Duration::from_secs(5);
pub const QUICK_WINDOW: Duration = Duration::from_secs(2);
/// The kernel patch's defaults.
pub const PERIOD_US: u64 = 40;
pub const RUNTIME_US: u64 = 20;

/// Everything the benchmark can be told.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub quick: bool,
    /// Wakeups per class in the latency comparison, and cyclictest loops.
    pub samples: u64,
    pub wake_period: Duration,
    /// Scheduler bandwidth for the latency and cyclictest runs.
    pub period_us: u64,
    pub runtime_us: u64,
    pub hogs_per_cpu: usize,
    /// CPU time the measured thread burns per wakeup (zero: pure sleeper).
    pub work: Duration,
    pub fifo_priority: u32,
    pub conformance: ConformanceConfig,
}

impl BenchConfig {
    /// The defaults, or their `--quick` variants.
    pub fn new(quick: bool) -> Self {
        Self {
            quick,
            samples: if quick { QUICK_SAMPLES } else { SAMPLES },
            wake_period: Duration::from_millis(1),
            period_us: PERIOD_US,
            runtime_us: RUNTIME_US,
            hogs_per_cpu: 2,
            work: Duration::ZERO,
            fifo_priority: 50,
            conformance: ConformanceConfig::new(if quick { QUICK_WINDOW } else { WINDOW }),
        }
    }

    pub fn latency(&self) -> LatencyConfig {
        LatencyConfig {
            wake_period: self.wake_period,
            samples: self.samples,
            hogs_per_cpu: self.hogs_per_cpu,
            work: self.work,
            fifo_priority: self.fifo_priority,
            mq_period_us: self.period_us,
            mq_runtime_us: self.runtime_us,
        }
    }

    pub fn cyclictest(&self) -> CyclictestConfig {
        CyclictestConfig {
            loops: self.samples,
            interval_us: self.wake_period.as_micros() as u64,
            hogs_per_cpu: self.hogs_per_cpu,
            fifo_priority: self.fifo_priority,
            mq_period_us: self.period_us,
            mq_runtime_us: self.runtime_us,
        }
    }
}

/// Runs all three phases with the `scheduler` binary and assembles the report.
pub fn run(cfg: &BenchConfig, scheduler: &Path) -> Result<Report> {
    let latency = latency_compare::run(&cfg.latency(), scheduler)?;
    let conformance = conformance::run(&cfg.conformance, scheduler)?;
    let cyclictest_us = cyclictest::run(&cfg.cyclictest(), scheduler)?;
    let groups = groups::run(scheduler, cfg.conformance.window, cpus())?;
    let max_overrun_us = conformance::max_overrun_us(&conformance);
    Ok(Report {
        kernel: sysfs::kernel_release(),
        cpus: cpus(),
        quick: cfg.quick,
        hogs: latency.hogs,
        wake_period_us: cfg.wake_period.as_micros() as u64,
        scheduler: Bandwidth {
            period_us: cfg.period_us,
            runtime_us: cfg.runtime_us,
        },
        wakeup_latency_us: latency.summaries,
        ratios: latency.ratios,
        deadline_period_min_lowered: latency.deadline_period_min_lowered,
        conformance,
        cyclictest_us,
        max_overrun_us,
        groups,
        note: NOTE.to_string(),
    })
}

/// The `scx_microquanta` of this build (sibling binary, else on PATH).
pub fn scheduler_binary() -> Result<PathBuf> {
    locate::binary("scx_microquanta").context("scx_microquanta binary not found")
}

/// After attaching, sched_ext moves every task into the new scheduler; give
/// that a moment so measurements see the steady state, not the switch.
const SETTLE: Duration = Duration::from_millis(500);

/// Starts the scheduler with a bandwidth and waits until it is attached and
/// has settled.
pub fn start_scheduler(bin: &Path, period_us: u64, runtime_us: u64) -> Result<SchedulerProcess> {
    eprintln!("mq-bench-sched: starting scx_microquanta --period-us {period_us} --runtime-us {runtime_us}");
    let (period, runtime) = (period_us.to_string(), runtime_us.to_string());
    let sched = SchedulerProcess::start(bin, &["--period-us", &period, "--runtime-us", &runtime])
        .with_context(|| {
            format!("starting scx_microquanta with period {period_us} µs runtime {runtime_us} µs")
        })?;
    std::thread::sleep(SETTLE);
    Ok(sched)
}

/// Online CPUs as this process sees them.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_mode_shrinks_samples_and_windows_but_not_the_bandwidth() {
        let full = BenchConfig::new(false);
        let quick = BenchConfig::new(true);
        assert!(quick.samples < full.samples);
        assert!(quick.conformance.window < full.conformance.window);
        assert_eq!((quick.period_us, quick.runtime_us), (40, 20));
        assert_eq!(quick.latency().mq_period_us, 40);
        assert_eq!(quick.cyclictest().interval_us, 1000);
        assert_eq!(full.conformance.pairs, conformance::DEFAULT_PAIRS.to_vec());
    }
}
