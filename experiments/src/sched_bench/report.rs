// SPDX-License-Identifier: GPL-2.0-only
//! The benchmark's result: one serialisable struct (its schema is documented
//! in the `sched_bench` module header), the machine-readable last stdout line
//! that `cargo xtask` and CI grep for, and a human table for stderr.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::conformance::ConformanceEntry;
use super::cyclictest::CyclictestSummary;
use crate::latency::LatencySummary;

/// Prefix of the JSON line; the JSON object follows on the same line.
pub const JSON_PREFIX: &str = "MQ_BENCH_SCHED_JSON ";

/// Why absolute numbers from a VM must not be compared across runs.
pub const NOTE: &str = "TCG: only ratios within one boot are meaningful";

/// The scheduler bandwidth the latency and cyclictest runs used.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bandwidth {
    pub period_us: u64,
    pub runtime_us: u64,
}

/// Everything one `mq-bench-sched` run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    pub kernel: String,
    pub cpus: usize,
    pub quick: bool,
    pub hogs: usize,
    pub wake_period_us: u64,
    pub scheduler: Bandwidth,
    pub wakeup_latency_us: BTreeMap<String, LatencySummary>,
    pub ratios: BTreeMap<String, Option<f64>>,
    /// `sched_deadline_period_min_us` was lowered for the deadline run.
    pub deadline_period_min_lowered: bool,
    pub conformance: Vec<ConformanceEntry>,
    pub cyclictest_us: BTreeMap<String, CyclictestSummary>,
    /// The scheduler's own overrun figure: see the module header.
    pub max_overrun_us: Option<f64>,
    pub note: String,
}

impl BenchReport {
    /// The `MQ_BENCH_SCHED_JSON {...}` line (no newline).
    pub fn json_line(&self) -> Result<String> {
        let json = serde_json::to_string(self).context("serialising the report")?;
        Ok(format!("{JSON_PREFIX}{json}"))
    }

    /// Finds the report in a run's output: the last line with the prefix.
    pub fn from_output(output: &str) -> Result<Self> {
        let line = output
            .lines()
            .rev()
            .find_map(|l| l.trim_end().split_once(JSON_PREFIX).map(|(_, json)| json))
            .with_context(|| format!("no {JSON_PREFIX:?} line in the output"))?;
        serde_json::from_str(line).context("parsing the MQ_BENCH_SCHED_JSON line")
    }

    /// Human-readable tables: latency with ratios, conformance, cyclictest.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "wakeup latency (µs), {} hogs, MicroQuanta/DEADLINE {}/{} µs; {NOTE}",
            self.hogs, self.scheduler.runtime_us, self.scheduler.period_us
        );
        let _ = writeln!(
            t,
            "  {:<12} {:>9} {:>9} {:>9} {:>9}  {:>12}",
            "class", "p50", "p90", "p99", "max", "p99 / mq p99"
        );
        for (name, s) in &self.wakeup_latency_us {
            let ratio = self
                .ratios
                .get(&format!("{name}_p99_over_mq_p99"))
                .copied()
                .flatten()
                .map_or_else(|| "-".to_string(), |r| format!("{r:.2}"));
            let _ = writeln!(
                t,
                "  {name:<12} {:>9.1} {:>9.1} {:>9.1} {:>9.1}  {ratio:>12}",
                s.p50, s.p90, s.p99, s.max
            );
        }
        let _ = writeln!(t, "conformance (CPU share over the window)");
        let _ = writeln!(
            t,
            "  {:>9} {:>10} {:>8} {:>8} {:>8} {:>8}  {:>14} {:>17}",
            "period_us",
            "runtime_us",
            "expected",
            "mq",
            "other",
            "alone",
            "other_wait_us",
            "sched_overrun_us"
        );
        for c in &self.conformance {
            let alone = c
                .alone_share
                .map_or_else(|| "-".to_string(), |a| format!("{a:.3}"));
            let overrun = c
                .sched_overrun_max_us
                .map_or_else(|| "-".to_string(), |o| format!("{o:.0}"));
            let _ = writeln!(
                t,
                "  {:>9} {:>10} {:>8.3} {:>8.3} {:>8.3} {alone:>8}  {:>14.0} {overrun:>17}",
                c.period_us, c.runtime_us, c.expected_mq_share, c.mq_share, c.other_share, c.other_max_gap_us
            );
        }
        let _ = writeln!(t, "cyclictest (µs)");
        for (name, c) in &self.cyclictest_us {
            let p = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.0}"));
            let _ = writeln!(
                t,
                "  {name:<12} min {:.0} avg {:.1} p50 {} p99 {} max {:.0} ({} cycles)",
                c.min,
                c.avg,
                p(c.p50),
                p(c.p99),
                c.max,
                c.cycles
            );
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> BenchReport {
        let lat = |p50: f64| LatencySummary {
            p50,
            p90: p50 * 2.0,
            p99: p50 * 4.0,
            max: p50 * 8.0,
            samples: 10,
        };
        let mut wakeup = BTreeMap::new();
        wakeup.insert("eevdf".to_string(), lat(100.0));
        wakeup.insert("microquanta".to_string(), lat(10.0));
        let ratios = super::super::latency_compare::ratios(&wakeup);
        BenchReport {
            kernel: "6.12.0".into(),
            cpus: 2,
            quick: true,
            hogs: 4,
            wake_period_us: 1000,
            scheduler: Bandwidth {
                period_us: 40,
                runtime_us: 20,
            },
            wakeup_latency_us: wakeup,
            ratios,
            deadline_period_min_lowered: true,
            conformance: Vec::new(),
            cyclictest_us: BTreeMap::new(),
            max_overrun_us: None,
            note: NOTE.into(),
        }
    }

    #[test]
    fn the_json_line_round_trips_and_carries_the_agreed_keys() {
        let r = report();
        let line = r.json_line().unwrap();
        assert!(line.starts_with("MQ_BENCH_SCHED_JSON {"), "{line}");
        let output = format!("progress\n{line}\n");
        assert_eq!(BenchReport::from_output(&output).unwrap(), r);

        let v: serde_json::Value = serde_json::from_str(&line[JSON_PREFIX.len()..]).unwrap();
        for key in [
            "kernel",
            "cpus",
            "wakeup_latency_us",
            "ratios",
            "conformance",
            "cyclictest_us",
            "max_overrun_us",
            "note",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert!(v["max_overrun_us"].is_null());
        assert_eq!(v["ratios"]["eevdf_p99_over_mq_p99"], 10.0);
        assert!(v["ratios"]["fifo_p99_over_mq_p99"].is_null());
    }

    #[test]
    fn the_table_shows_each_class_and_its_ratio() {
        let t = report().table();
        assert!(t.contains("eevdf") && t.contains("microquanta"), "{t}");
        assert!(t.contains("10.00"), "eevdf p99 / mq p99 = 10: {t}");
    }

    #[test]
    fn output_without_the_line_is_an_error() {
        assert!(BenchReport::from_output("nothing here\n").is_err());
    }
}
