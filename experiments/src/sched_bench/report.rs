// SPDX-License-Identifier: GPL-2.0-only
//! The benchmark's result as people read it: a table for stderr. The report itself
//! ([`Report`], its schema and its tagged stdout line) is `mq_report::sched`'s.

use std::fmt::Write as _;

use mq_report::sched::Report;

/// Why absolute numbers from a VM must not be compared across runs.
pub const NOTE: &str = "TCG: only ratios within one boot are meaningful";

/// Human-readable tables: latency with ratios, conformance, cyclictest.
pub fn table(r: &Report) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "wakeup latency (µs), {} hogs, MicroQuanta/DEADLINE {}/{} µs; {NOTE}",
        r.hogs, r.scheduler.runtime_us, r.scheduler.period_us
    );
    let _ = writeln!(
        t,
        "  {:<12} {:>9} {:>9} {:>9} {:>9}  {:>12}",
        "class", "p50", "p90", "p99", "max", "p99 / mq p99"
    );
    for (name, s) in &r.wakeup_latency_us {
        let ratio = r
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
        "period_us", "runtime_us", "expected", "mq", "other", "alone", "other_wait_us", "sched_overrun_us"
    );
    for c in &r.conformance {
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
    if !r.groups.is_empty() {
        let _ = writeln!(t, "per-group conformance (CPU share over the window)");
        let _ = writeln!(
            t,
            "  {:<9} {:<10} {:>4} {:>9} {:>10} {:>8} {:>8}",
            "scenario", "group", "cpu", "period_us", "runtime_us", "expected", "share"
        );
        for g in &r.groups {
            let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
            let expected = g
                .expected_share
                .map_or_else(|| "-".to_string(), |e| format!("{e:.3}"));
            let _ = writeln!(
                t,
                "  {:<9} {:<10} {:>4} {:>9} {:>10} {expected:>8} {:>8.3}",
                g.scenario,
                g.group,
                g.cpu,
                opt(g.period_us),
                opt(g.runtime_us),
                g.share
            );
        }
    }
    let _ = writeln!(t, "cyclictest (µs)");
    for (name, c) in &r.cyclictest_us {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mq_report::sched::Bandwidth;
    use mq_report::{LatencySummary, Tagged};

    use super::*;

    fn report() -> Report {
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
        Report {
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
            groups: Vec::new(),
            rounds: None,
            note: NOTE.into(),
            mqland: None,
        }
    }

    #[test]
    fn the_json_line_round_trips_and_carries_the_agreed_keys() {
        let r = report();
        let line = mq_report::tagged_line(&r).unwrap();
        assert!(line.starts_with("MQ_BENCH_SCHED_JSON {"), "{line}");
        let output = format!("progress\n{line}\n");
        assert_eq!(mq_report::extract::<Report>(&output).unwrap(), r);

        let prefix = Report::TAG.prefix;
        let v: serde_json::Value = serde_json::from_str(&line[prefix.len()..]).unwrap();
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
        let t = table(&report());
        assert!(t.contains("eevdf") && t.contains("microquanta"), "{t}");
        assert!(t.contains("10.00"), "eevdf p99 / mq p99 = 10: {t}");
    }

    #[test]
    fn output_without_the_line_is_an_error() {
        assert!(mq_report::extract::<Report>("nothing here\n").is_err());
    }
}
