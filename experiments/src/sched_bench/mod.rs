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
//! 5. [`crate::rounds`]: the demo's workload (a thread needing 30% of a CPU
//!    next to 4 hogs per CPU) as interleaved rounds of EEVDF, SCHED_FIFO,
//!    normal under scx_microquanta and the class, with the stall probe.
//! 6. [`mqland`]: the same policy in userspace (`scx_mqland`) against `scx_microquanta`,
//!    in interleaved rounds: latency, conformance, CPU spent scheduling.
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
pub mod mqland;
pub mod policy;
pub mod report;
pub mod sched_stats;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use mq_class::sysfs;
use mq_report::rounds::RoundsReport;
use mq_report::sched::{Bandwidth, Report};

use crate::hogs::Hogs;
use crate::locate;
use crate::rounds::{self, RoundsConfig};
use crate::scheduler_process::SchedulerProcess;
use crate::settle;
use crate::stall_probe;
use crate::wakeup::Wakeup;

use self::conformance::ConformanceConfig;
use self::cyclictest::CyclictestConfig;
use self::latency_compare::LatencyConfig;
use self::mqland::MqlandConfig;
use self::report::NOTE;

/// Defaults of a full run and of `--quick` (sized for a TCG VM test).
pub const SAMPLES: u64 = 2000;
pub const QUICK_SAMPLES: u64 = 400;
pub const WINDOW: Duration = Duration::from_secs(5);
pub const QUICK_WINDOW: Duration = Duration::from_secs(2);
/// The kernel patch's defaults.
pub const PERIOD_US: u64 = 40;
pub const RUNTIME_US: u64 = 20;
/// Interleaved rounds of the demo's workload, and wakeups per policy and round.
pub const ROUNDS: usize = 8;
pub const QUICK_ROUNDS: usize = 4;
pub const ROUND_SAMPLES: u64 = 400;
pub const QUICK_ROUND_SAMPLES: u64 = 200;
/// The demo's workload: CPU per wakeup and hogs per CPU.
pub const ROUNDS_WORK: Duration = Duration::from_micros(300);
pub const ROUNDS_HOGS_PER_CPU: usize = 4;

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
    /// Rounds of the scx_microquanta vs scx_mqland comparison ([`mqland`]); 0 skips it.
    pub mqland_rounds: usize,
    /// Interleaved rounds of the demo's workload (0: skipped).
    pub rounds: usize,
    pub round_samples: u64,
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
            mqland_rounds: if quick { 2 } else { 3 },
            rounds: if quick { QUICK_ROUNDS } else { ROUNDS },
            round_samples: if quick { QUICK_ROUND_SAMPLES } else { ROUND_SAMPLES },
        }
    }

    /// The rounds phase: the demo's workload at the latency runs' period.
    pub fn rounds(&self) -> RoundsConfig {
        RoundsConfig {
            rounds: self.rounds,
            samples: self.round_samples,
            wake_period: self.wake_period,
            work: ROUNDS_WORK,
            fifo_priority: self.fifo_priority,
            probe_interval: stall_probe::INTERVAL,
            stall_threshold: stall_probe::THRESHOLD,
            log: "mq-bench-sched: rounds",
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

    /// The comparison with scx_mqland: the latency bandwidth, at a period of at least 1 ms
    /// (the same share), since scx_mqland cannot enforce a budget below the tick.
    pub fn mqland(&self) -> MqlandConfig {
        let period_us = self.period_us.max(1000);
        MqlandConfig {
            rounds: self.mqland_rounds,
            samples: self.samples,
            wake_period: self.wake_period,
            hogs_per_cpu: self.hogs_per_cpu,
            period_us,
            runtime_us: (self.runtime_us * period_us / self.period_us).max(1),
            window: self.conformance.window,
            cpu: self.conformance.cpu,
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
    let rounds = (cfg.rounds > 0).then(|| run_rounds(cfg, scheduler)).transpose()?;
    // Phase 6.
    let mqland = match (cfg.mqland_rounds, locate::binary("scx_mqland")) {
        (0, _) => None,
        (_, None) => {
            eprintln!("mq-bench-sched: no scx_mqland binary next to this one or on PATH: comparison skipped");
            None
        }
        (_, Some(bin)) => {
            let bins = mqland::Schedulers {
                microquanta: scheduler,
                mqland: &bin,
            };
            Some(mqland::run(&cfg.mqland(), &bins)?)
        }
    };
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
        rounds,
        note: NOTE.to_string(),
        mqland,
    })
}

/// Phase 5: the demo's workload in interleaved rounds, under its own hogs.
fn run_rounds(cfg: &BenchConfig, scheduler: &Path) -> Result<RoundsReport> {
    let rc = cfg.rounds();
    let hogs = Hogs::start(ROUNDS_HOGS_PER_CPU * cpus(), None)?;
    eprintln!(
        "mq-bench-sched: rounds: {} hogs, {} rounds of {} wakeups per policy, {} µs of work each",
        hogs.workers(),
        rc.rounds,
        rc.samples,
        rc.work.as_micros()
    );
    let mut start = || start_scheduler(scheduler, cfg.period_us, cfg.runtime_us);
    let r = rounds::run(&rc, cpus(), &mut start)?;
    Ok(RoundsReport {
        work_us: rc.work.as_micros() as u64,
        wake_period_us: rc.wake_period.as_micros() as u64,
        hogs: hogs.workers(),
        samples: rc.samples,
        period_us: cfg.period_us,
        runtime_us: cfg.runtime_us,
        wakeup_latency_us: r.pooled,
        rows: r.rows,
        p99_ratio_eevdf_over_microquanta: r.eevdf_over_microquanta,
        p99_ratio_fifo_over_microquanta: r.fifo_over_microquanta,
        p99_ratio_fifo_scx_over_microquanta: r.fifo_scx_over_microquanta,
        stalls: r.stalls,
        scheduler_cycle_ms: r.scheduler_cycle_ms,
        warmup: r.warmup,
    })
}

/// The `scx_microquanta` of this build (sibling binary, else on PATH).
pub fn scheduler_binary() -> Result<PathBuf> {
    locate::binary("scx_microquanta").context("scx_microquanta binary not found")
}

/// Starts the scheduler with a bandwidth, waits until it is attached and settles it
/// ([`settle::settle`]). Returns it with the warm-up's wakeups.
pub fn start_scheduler(
    bin: &Path,
    period_us: u64,
    runtime_us: u64,
) -> Result<(SchedulerProcess, Vec<Wakeup>)> {
    eprintln!("mq-bench-sched: starting scx_microquanta --period-us {period_us} --runtime-us {runtime_us}");
    let (period, runtime) = (period_us.to_string(), runtime_us.to_string());
    let sched = SchedulerProcess::start(bin, &["--period-us", &period, "--runtime-us", &runtime])
        .with_context(|| {
            format!("starting scx_microquanta with period {period_us} µs runtime {runtime_us} µs")
        })?;
    let warm_up = settle::settle("mq-bench-sched", settle::WARM_UP_WAKEUPS)?;
    Ok((sched, warm_up))
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
        assert!(quick.rounds < full.rounds && quick.round_samples < full.round_samples);
        assert_eq!(quick.rounds().work, ROUNDS_WORK);
    }
}
