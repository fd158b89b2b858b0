// SPDX-License-Identifier: GPL-2.0-only
//! Wakeup latency of one periodic sleeper under CPU hogs in four classes, all
//! in one boot: EEVDF, SCHED_FIFO and SCHED_DEADLINE with no BPF scheduler,
//! then the MicroQuanta class with `scx_microquanta` loaded.
//!
//! The question is where MicroQuanta lands between the kernel's fair class
//! (what it must beat) and its real-time classes (what it approximates
//! without their starvation risk). Under TCG only ratios within one run mean
//! anything, hence [`ratios`], and EEVDF is measured a second time at the
//! end so a drifting host shows up as two different EEVDF rows.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
// The keys of the measurements, in the report and in [`ratios`].
use mq_report::sched::{DEADLINE, EEVDF, EEVDF_REPEAT, FIFO, MICROQUANTA};
use mq_report::LatencySummary;

use super::policy::DeadlinePeriodMin;
use crate::hogs::Hogs;
use crate::wakeup::{measure, ThreadClass, WakeupConfig};

/// The baselines compared with MicroQuanta, and the percentiles compared.
const BASELINES: [&str; 4] = [EEVDF, FIFO, DEADLINE, EEVDF_REPEAT];
const RATIO_PERCENTILES: [&str; 3] = ["p50", "p90", "p99"];

/// What to measure.
#[derive(Debug, Clone)]
pub struct LatencyConfig {
    /// Sleep period of the measured thread.
    pub wake_period: Duration,
    /// Wakeups measured per class.
    pub samples: u64,
    /// CPU hogs per CPU, running through all four measurements.
    pub hogs_per_cpu: usize,
    /// CPU time the measured thread burns after each wakeup.
    pub work: Duration,
    /// SCHED_FIFO priority of the FIFO run.
    pub fifo_priority: u32,
    /// MicroQuanta bandwidth of the scheduler, also the SCHED_DEADLINE
    /// reservation so both classes get the same budget.
    pub mq_period_us: u64,
    pub mq_runtime_us: u64,
}

/// The four summaries and how they compare.
#[derive(Debug, Clone)]
pub struct LatencyComparison {
    pub summaries: BTreeMap<String, LatencySummary>,
    pub ratios: BTreeMap<String, Option<f64>>,
    /// Hog processes that ran throughout.
    pub hogs: usize,
    /// Whether `sched_deadline_period_min_us` had to be lowered (and was
    /// restored) for the deadline run.
    pub deadline_period_min_lowered: bool,
}

/// Runs the four measurements under `hogs_per_cpu * cpus` hogs; starts and
/// stops `scheduler` for the last one.
pub fn run(cfg: &LatencyConfig, scheduler: &Path) -> Result<LatencyComparison> {
    let cpus = super::cpus();
    let hogs = Hogs::start(cfg.hogs_per_cpu * cpus, None)?;
    eprintln!(
        "mq-bench-sched: latency: {} hogs on {cpus} CPUs, {} wakeups every {} µs per class",
        hogs.workers(),
        cfg.samples,
        cfg.wake_period.as_micros()
    );
    let mut summaries = BTreeMap::new();
    summaries.insert(EEVDF.to_string(), one(cfg, EEVDF, ThreadClass::Normal)?);
    summaries.insert(
        FIFO.to_string(),
        one(
            cfg,
            FIFO,
            ThreadClass::Fifo {
                priority: cfg.fifo_priority,
            },
        )?,
    );

    // The kernel's minimum deadline period (100 µs by default) is above the
    // MicroQuanta default of 40 µs; lowered only for this run.
    let period_min = DeadlinePeriodMin::lower_to(cfg.mq_period_us)?;
    let deadline = ThreadClass::Deadline {
        runtime: Duration::from_micros(cfg.mq_runtime_us),
        period: Duration::from_micros(cfg.mq_period_us),
    };
    summaries.insert(DEADLINE.to_string(), one(cfg, DEADLINE, deadline)?);
    let deadline_period_min_lowered = period_min.lowered();
    drop(period_min);

    let (sched, _) = super::start_scheduler(scheduler, cfg.mq_period_us, cfg.mq_runtime_us)?;
    summaries.insert(
        MICROQUANTA.to_string(),
        one(cfg, MICROQUANTA, ThreadClass::MicroQuanta)?,
    );
    let status = sched.stop().context("stopping scx_microquanta")?;
    eprintln!("mq-bench-sched: latency: scheduler detached ({status})");
    summaries.insert(
        EEVDF_REPEAT.to_string(),
        one(cfg, EEVDF_REPEAT, ThreadClass::Normal)?,
    );

    Ok(LatencyComparison {
        ratios: ratios(&summaries),
        summaries,
        hogs: hogs.workers(),
        deadline_period_min_lowered,
    })
}

fn one(cfg: &LatencyConfig, label: &str, class: ThreadClass) -> Result<LatencySummary> {
    eprintln!("mq-bench-sched: latency: measuring {label} ...");
    let s = measure(WakeupConfig {
        work: cfg.work,
        period: cfg.wake_period,
        samples: cfg.samples,
        class,
        cpu: None,
    })
    .with_context(|| format!("measuring wakeup latency as {label}"))?;
    eprintln!(
        "mq-bench-sched: latency: {label:<12} p50 {:>9.1} µs  p99 {:>9.1} µs  max {:>9.1} µs",
        s.p50, s.p99, s.max
    );
    Ok(s)
}

/// `baseline / microquanta` for each baseline and percentile, keyed
/// `eevdf_p99_over_mq_p99` etc.: above 1 means MicroQuanta woke sooner.
/// `None` (JSON null) when either side is missing or the divisor is not a
/// positive number, rather than an infinity that JSON cannot carry.
pub fn ratios(summaries: &BTreeMap<String, LatencySummary>) -> BTreeMap<String, Option<f64>> {
    let mq = summaries.get(MICROQUANTA);
    let mut out = BTreeMap::new();
    for base in BASELINES {
        for p in RATIO_PERCENTILES {
            let num = summaries.get(base).map(|s| percentile(s, p));
            let den = mq.map(|s| percentile(s, p));
            let ratio = match (num, den) {
                (Some(n), Some(d)) => ratio(n, d),
                _ => None,
            };
            out.insert(format!("{base}_{p}_over_mq_{p}"), ratio);
        }
    }
    out
}

fn percentile(s: &LatencySummary, name: &str) -> f64 {
    match name {
        "p50" => s.p50,
        "p90" => s.p90,
        "p99" => s.p99,
        _ => unreachable!("RATIO_PERCENTILES only names p50/p90/p99"),
    }
}

/// `num / den` when that is a finite number.
pub fn ratio(num: f64, den: f64) -> Option<f64> {
    let r = num / den;
    (den > 0.0 && r.is_finite()).then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(p50: f64, p90: f64, p99: f64) -> LatencySummary {
        LatencySummary {
            p50,
            p90,
            p99,
            max: p99 * 2.0,
            samples: 100,
        }
    }

    #[test]
    fn ratios_divide_each_baseline_by_microquanta() {
        let mut m = BTreeMap::new();
        m.insert(EEVDF.to_string(), summary(100.0, 400.0, 1000.0));
        m.insert(FIFO.to_string(), summary(5.0, 8.0, 10.0));
        m.insert(DEADLINE.to_string(), summary(10.0, 20.0, 40.0));
        m.insert(MICROQUANTA.to_string(), summary(10.0, 20.0, 50.0));
        let r = ratios(&m);
        assert_eq!(r.len(), 12);
        assert_eq!(r["eevdf_repeat_p99_over_mq_p99"], None, "not measured here");
        assert_eq!(r["eevdf_p99_over_mq_p99"], Some(20.0));
        assert_eq!(r["eevdf_p50_over_mq_p50"], Some(10.0));
        assert_eq!(r["fifo_p99_over_mq_p99"], Some(0.2));
        assert_eq!(r["fifo_p50_over_mq_p50"], Some(0.5));
        assert_eq!(r["deadline_p90_over_mq_p90"], Some(1.0));
        assert_eq!(r["deadline_p99_over_mq_p99"], Some(0.8));
    }

    #[test]
    fn a_missing_class_or_a_zero_divisor_gives_null_not_infinity() {
        let mut m = BTreeMap::new();
        m.insert(EEVDF.to_string(), summary(100.0, 400.0, 1000.0));
        m.insert(MICROQUANTA.to_string(), summary(0.0, 20.0, 50.0));
        let r = ratios(&m);
        assert_eq!(r["eevdf_p50_over_mq_p50"], None);
        assert_eq!(r["eevdf_p99_over_mq_p99"], Some(20.0));
        assert_eq!(r["fifo_p99_over_mq_p99"], None);
        assert_eq!(ratio(1.0, f64::NAN), None);
        assert_eq!(ratio(f64::INFINITY, 1.0), None);
    }
}
