//! The markdown summary of `cargo xtask bench sched` (`target/experiments/sched/summary.md`,
//! also printed): what ran where, then one table per phase of `mq-bench-sched`. Pure
//! rendering from [`Summary`], so it is tested without a VM.

use std::fmt::Write as _;

use mq_report::demo::{EEVDF, FIFO_SCX, MICROQUANTA as MQ, NORMAL, POLICIES};
use mq_report::rounds::{RoundsReport, Spread};
use mq_report::sched::{EEVDF_REPEAT, FIFO, MICROQUANTA};

use super::sched::Summary;

/// Under TCG every instruction is emulated, which inflates all times by a factor that drifts
/// with the host's load; the reader must not compare absolute numbers with other runs.
pub const TCG_NOTE: &str = "Under TCG (qemu's emulator) only ratios within one boot are \
    meaningful: absolute microseconds are the emulator's, not real hardware's, and vary with \
    the host's load.";

/// The whole report, ending in a newline.
pub fn markdown(s: &Summary) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# MicroQuanta scheduler benchmark\n");
    let _ = writeln!(
        md,
        "Machine: {} · kernel `{}` · {} CPUs · accel **{}**{}\n",
        s.machine.as_deref().unwrap_or("unknown"),
        s.report.kernel,
        s.report.cpus,
        s.accel,
        if s.report.quick { " · `--quick` run" } else { "" },
    );
    if let Some(steal) = s.host_steal_percent {
        let _ = writeln!(
            md,
            "Host steal during the run: {steal:.1}% of CPU time (given by the hypervisor to \
             other work while this machine wanted it).\n"
        );
    }
    if s.accel == "tcg" {
        let _ = writeln!(md, "> **This run used TCG.** {TCG_NOTE}\n");
    } else {
        let _ = writeln!(md, "> {TCG_NOTE}\n");
    }
    md.push_str(&headline(s));
    groups(&mut md, s);
    cyclictest(&mut md, s);
    if let Some(m) = &s.report.mqland {
        super::mqland_report::section(&mut md, m);
    }
    md.push_str("Plots: [latency.svg](latency.svg), [conformance.svg](conformance.svg)");
    if s.report.rounds.is_some() {
        md.push_str(", [rounds.svg](rounds.svg)");
    }
    md.push_str(".\n");
    md
}

/// The sections a reader looks at first, as they appear in [`markdown`]: wakeup latency
/// with the ratios to MicroQuanta, and bandwidth conformance. `cargo xtask demo` prints it.
pub fn headline(s: &Summary) -> String {
    let mut md = String::new();
    latency(&mut md, s);
    if let Some(r) = &s.report.rounds {
        rounds(&mut md, r);
    }
    conformance(&mut md, s);
    md
}

/// The demo's workload in interleaved rounds: one row per round, the spread of the per-round
/// ratios, with and without the wakeups an emulator stall hit.
fn rounds(md: &mut String, r: &RoundsReport) {
    let _ = writeln!(md, "## Interleaved rounds (the demo's workload)\n");
    let _ = writeln!(
        md,
        "A thread woken every {} µs that burns {} µs of CPU per wakeup, under {} CPU hogs; each \
         round measures {} wakeups as {} in that order (scheduler loaded for the last three, \
         {}/{} µs; load + unload {}). p99 in µs; stalled: wakeups an emulator stall hit.\n",
        r.wake_period_us,
        r.work_us,
        r.hogs,
        r.samples,
        POLICIES.join(", "),
        r.runtime_us,
        r.period_us,
        r.scheduler_cycle_ms
            .map_or("not measured".into(), |ms| format!("{ms:.0} ms")),
    );
    let _ = writeln!(
        md,
        "| round | eevdf | fifo | normal | microquanta | fifo-scx | eevdf / mq | fifo / mq | \
         fifo-scx / mq | stalled |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let n = r.rows.iter().map(|row| row.round).max().map_or(0, |m| m + 1);
    for round in 0..n {
        let get = |policy: &str| r.rows.iter().find(|x| x.round == round && x.policy == policy);
        let p99 = |policy: &str| get(policy).map(|x| x.p99);
        let ratio = |policy: &str| match (p99(policy), p99(MQ)) {
            (Some(b), Some(m)) if m > 0.0 => format!("{:.2}", b / m),
            _ => "-".into(),
        };
        let stalled: u64 = r
            .rows
            .iter()
            .filter(|x| x.round == round)
            .map(|x| x.stalled_samples)
            .sum();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {stalled} |",
            round + 1,
            opt_us(p99(EEVDF)),
            opt_us(p99(FIFO)),
            opt_us(p99(NORMAL)),
            opt_us(p99(MQ)),
            opt_us(p99(FIFO_SCX)),
            ratio(EEVDF),
            ratio(FIFO),
            ratio(FIFO_SCX),
        );
    }
    let spread = |s: Option<Spread>| {
        s.map_or("-".into(), |s| {
            format!(
                "median {:.2} (min {:.2}, max {:.2}; {} rounds)",
                s.median, s.min, s.max, s.rounds
            )
        })
    };
    let st = &r.stalls;
    let _ = writeln!(
        md,
        "\np99 ratio EEVDF / MicroQuanta: {}; without stalled wakeups: {}.  ",
        spread(r.p99_ratio_eevdf_over_microquanta),
        spread(st.p99_ratio_eevdf_over_microquanta_without_stalls)
    );
    let _ = writeln!(
        md,
        "p99 ratio SCHED_FIFO / MicroQuanta: {}; without stalled wakeups: {}.  ",
        spread(r.p99_ratio_fifo_over_microquanta),
        spread(st.p99_ratio_fifo_over_microquanta_without_stalls)
    );
    let _ = writeln!(
        md,
        "p99 ratio SCHED_FIFO with the scheduler loaded / MicroQuanta: {} (sched_ext's own \
         floor: the hogs a SCHED_FIFO thread preempts are then sched_ext tasks).\n",
        spread(r.p99_ratio_fifo_scx_over_microquanta),
    );
    let _ = writeln!(
        md,
        "Stalls: {} during the measurements, longest {} µs; the probe's own lateness p50 {} / \
         p99 {} / max {} µs. Rule: {}.\n",
        st.events,
        us(st.longest_us),
        us(st.probe.p50),
        us(st.probe.p99),
        us(st.probe.max),
        st.rule
    );
    if let Some(w) = &r.warmup {
        let firsts: Vec<String> = w.first_us.iter().map(|v| us(*v)).collect();
        let _ = writeln!(
            md,
            "Warm-up: after each load a MicroQuanta thread woke {} times before the round \
             measured (in no figure above): its first wakeup per load {} µs, the rest p50 {} / \
             p99 {} / max {} µs.\n",
            w.wakeups_per_load,
            firsts.join(", "),
            us(w.rest_us.p50),
            us(w.rest_us.p99),
            us(w.rest_us.max),
        );
    }
}

fn latency(md: &mut String, s: &Summary) {
    let _ = writeln!(md, "## Wakeup latency\n");
    let b = s.report.scheduler;
    let _ = writeln!(
        md,
        "A thread sleeping {} µs at a time, woken under {} CPU hogs; MicroQuanta and \
         SCHED_DEADLINE get {} µs every {} µs. Ratio above 1: MicroQuanta woke sooner.\n",
        s.report.wake_period_us, s.report.hogs, b.runtime_us, b.period_us,
    );
    let _ = writeln!(
        md,
        "| class | p50 µs | p90 µs | p99 µs | max µs | samples | p99 / MicroQuanta p99 |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|");
    for (class, lat) in s.latency_rows() {
        let label = if class == EEVDF_REPEAT {
            "eevdf (again, at the end)"
        } else {
            class
        };
        let ratio = if class == MICROQUANTA {
            "1.00".to_string()
        } else {
            s.p99_ratio(class).map_or("-".into(), |r| format!("{r:.2}"))
        };
        match lat {
            Some(l) => {
                let _ = writeln!(
                    md,
                    "| {label} | {} | {} | {} | {} | {} | {ratio} |",
                    us(l.p50),
                    us(l.p90),
                    us(l.p99),
                    us(l.max),
                    l.samples
                );
            }
            None => {
                let _ = writeln!(md, "| {label} | - | - | - | - | - | - |");
            }
        }
    }
    md.push('\n');
}

fn conformance(md: &mut String, s: &Summary) {
    let _ = writeln!(md, "## Bandwidth conformance\n");
    let window = s.report.conformance.first().map(|c| c.window_ms);
    let _ = writeln!(
        md,
        "A MicroQuanta spinner and a normal spinner pinned to one CPU for {} ms per \
         configuration; \"alone\" is the MicroQuanta spinner without competition. Error: \
         measured class share minus expected, in percentage points.\n",
        opt_int(window)
    );
    let _ = writeln!(
        md,
        "| period µs | runtime µs | expected share | class share | normal share | alone share | error pp |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|");
    for c in &s.report.conformance {
        let expected = c.expected_mq_share;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {:+.1} |",
            c.period_us,
            c.runtime_us,
            pct(expected),
            pct(c.mq_share),
            pct(c.other_share),
            c.alone_share.map_or("-".into(), pct),
            (c.mq_share - expected) * 100.0
        );
    }
    let overrun = s
        .report
        .max_overrun_us
        .map_or_else(|| "none measured".to_string(), |o| format!("{} µs", us(o)));
    let _ = writeln!(
        md,
        "\nLongest run of class work past its budget while normal work waited (the \
         scheduler's own accounting): {overrun}.\n"
    );
    enforcement(md, s);
}

/// The scheduler's overrun and throttle-to-preempt histograms per pair, when measured.
fn enforcement(md: &mut String, s: &Summary) {
    let rows: Vec<_> = s
        .report
        .conformance
        .iter()
        .filter_map(|c| c.enforcement.as_ref().map(|e| (c, e)))
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "Enforcement over each paired window (the scheduler's BPF histograms, µs): overrun is \
         class work past its budget while normal work waited; yield is throttle-to-preempt, \
         from the decision that class work must yield (budget timer, tick or a normal \
         wakeup's kick) to the class task leaving the CPU. Maxima since the scheduler was \
         loaded for the pair.\n"
    );
    let _ = writeln!(
        md,
        "| period µs | runtime µs | overrun p50 | overrun p99 | overrun max | overrun p99 ≤ period | yields | yield p50 | yield p99 | yield max |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|:---:|---:|---:|---:|---:|");
    for (c, e) in rows {
        let within = e
            .overrun_p99_us
            .map_or("-", |p| if p <= c.period_us as f64 { "yes" } else { "no" });
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {within} | {} | {} | {} | {} |",
            c.period_us,
            c.runtime_us,
            opt_us(e.overrun_p50_us),
            opt_us(e.overrun_p99_us),
            opt_us(e.overrun_max_us),
            e.yields,
            opt_us(e.yield_p50_us),
            opt_us(e.yield_p99_us),
            opt_us(e.yield_max_us),
        );
    }
    md.push('\n');
}

/// Per-group conformance (`mq-bench-sched`'s `groups` rows); nothing if not measured.
fn groups(md: &mut String, s: &Summary) {
    if s.report.groups.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "## Per-group conformance
"
    );
    let _ = writeln!(
        md,
        "Class groups with their own budgets (default group at 100 µs every 1000 µs): \
         `separate` puts each group's spinner next to a normal spinner on a CPU of its own, \
         `shared` puts both groups' spinners and a normal one on one CPU. Error: measured \
         share minus the group's runtime/period, in percentage points.\n"
    );
    let _ = writeln!(
        md,
        "| scenario | group | CPU | period µs | runtime µs | expected share | share | error pp |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|");
    for g in &s.report.groups {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            g.scenario,
            g.group,
            g.cpu,
            g.period_us.map_or("-".into(), |v| v.to_string()),
            g.runtime_us.map_or("-".into(), |v| v.to_string()),
            g.expected_share.map_or("-".into(), pct),
            pct(g.share),
            g.expected_share
                .map_or("-".into(), |e| format!("{:+.1}", (g.share - e) * 100.0)),
        );
    }
    md.push('\n');
}

fn cyclictest(md: &mut String, s: &Summary) {
    let _ = writeln!(md, "## cyclictest\n");
    let cyclictest = &s.report.cyclictest_us;
    if cyclictest.is_empty() {
        let _ = writeln!(md, "Not measured.\n");
        return;
    }
    let _ = writeln!(
        md,
        "rt-tests' cyclictest under the same hogs, as SCHED_FIFO and in the MicroQuanta class \
         (\"-\": beyond cyclictest's histogram; overflows: wakeups past it).\n"
    );
    let _ = writeln!(
        md,
        "| class | min µs | avg µs | p50 µs | p90 µs | p99 µs | max µs | cycles | overflows |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    // FIFO first, MicroQuanta second, like the latency table; anything else after them.
    let mut names: Vec<&String> = cyclictest.keys().collect();
    names.sort_by_key(|n| match n.as_str() {
        FIFO => 0,
        MICROQUANTA => 1,
        _ => 2,
    });
    for name in names {
        let c = &cyclictest[name];
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |",
            us(c.min),
            us(c.avg),
            opt_us(c.p50),
            opt_us(c.p90),
            opt_us(c.p99),
            us(c.max),
            c.cycles,
            c.overflows
        );
    }
    md.push('\n');
}

/// Microseconds: one decimal is below the timer's resolution already.
fn us(v: f64) -> String {
    format!("{v:.1}")
}

fn opt_us(v: Option<f64>) -> String {
    v.map_or("-".into(), us)
}

fn opt_int(v: Option<u64>) -> String {
    v.map_or("?".into(), |v| v.to_string())
}

/// A share (0..1) as a percentage.
fn pct(share: f64) -> String {
    format!("{:.1} %", share * 100.0)
}

#[cfg(test)]
mod tests {
    use super::super::sched::tests::sample;
    use super::*;

    /// The table row whose first cell is `first`.
    fn row<'a>(md: &'a str, first: &str) -> Vec<&'a str> {
        let line = md
            .lines()
            .find(|l| l.starts_with(&format!("| {first} |")))
            .unwrap_or_else(|| panic!("no row {first:?} in\n{md}"));
        line.trim_matches('|').split('|').map(str::trim).collect()
    }

    #[test]
    fn header_names_machine_kernel_accel_and_the_tcg_caveat() {
        let md = markdown(&sample());
        let first = md.lines().find(|l| l.starts_with("Machine:")).unwrap();
        assert!(first.contains("qemu VM (2 vCPUs, 2048 MiB)"), "{first}");
        assert!(first.contains("`6.12.38+deb13-cloud-amd64`") && first.contains("**tcg**"));
        assert!(md.contains("**This run used TCG.**"));
        assert!(md.contains("only ratios within one boot are meaningful"));
        // No steal line when the host's was not read.
        assert!(!md.contains("Host steal"), "{md}");
    }

    #[test]
    fn header_gives_the_host_steal_when_it_was_read() {
        let mut s = sample();
        s.host_steal_percent = Some(12.04);
        let md = markdown(&s);
        assert!(
            md.contains("Host steal during the run: 12.0% of CPU time"),
            "{md}"
        );
    }

    #[test]
    fn latency_table_has_the_classes_in_order_with_ratios() {
        let md = markdown(&sample());
        assert_eq!(
            row(&md, "eevdf"),
            ["eevdf", "900.0", "3000.0", "8000.0", "12000.0", "400", "40.00"]
        );
        assert_eq!(row(&md, "fifo")[6], "0.50");
        assert_eq!(row(&md, "deadline")[6], "0.75");
        assert_eq!(row(&md, "microquanta")[6], "1.00");
        assert_eq!(row(&md, "eevdf (again, at the end)")[6], "42.00");
        let pos = |c: &str| md.find(&format!("| {c} |")).unwrap();
        assert!(pos("eevdf") < pos("fifo") && pos("fifo") < pos("deadline"));
        assert!(pos("deadline") < pos("microquanta"));
        assert!(md.contains("20 µs every 40 µs"), "{md}");
    }

    #[test]
    fn conformance_rows_show_shares_and_error_in_points() {
        let md = markdown(&sample());
        assert_eq!(
            row(&md, "40"),
            ["40", "20", "50.0 %", "52.0 %", "47.0 %", "99.0 %", "+2.0"]
        );
        assert_eq!(
            row(&md, "1000"),
            ["1000", "200", "20.0 %", "19.0 %", "80.0 %", "-", "-1.0"]
        );
        assert!(md.contains("2000 ms per configuration"));
        assert!(md.contains("scheduler's own accounting): 12.0 µs."));
    }

    #[test]
    fn group_rows_show_each_spinner_and_no_error_for_normal_work() {
        let mut s = sample();
        assert!(!markdown(&s).contains("Per-group"), "no section without rows");
        let row_of = |group: &str, expected: Option<f64>, share: f64| mq_report::sched::GroupConformance {
            scenario: "shared".into(),
            group: group.into(),
            period_us: expected.map(|_| 1000),
            runtime_us: expected.map(|e| (e * 1000.0) as u64),
            expected_share: expected,
            share,
            cpu: 1,
            window_ms: 2000,
        };
        s.report.groups = vec![row_of("bench-b", Some(0.6), 0.585), row_of("normal", None, 0.2)];
        let md = markdown(&s);
        assert!(
            md.contains("| shared | bench-b | 1 | 1000 | 600 | 60.0 % | 58.5 % | -1.5 |"),
            "{md}"
        );
        assert!(
            md.contains("| shared | normal | 1 | - | - | - | 20.0 % | - |"),
            "{md}"
        );
    }

    #[test]
    fn cyclictest_table_keeps_nulls_visible() {
        let md = markdown(&sample());
        let mq = md
            .lines()
            .filter(|l| l.starts_with("| microquanta |"))
            .nth(1)
            .unwrap();
        assert_eq!(
            mq,
            "| microquanta | 6.0 | 40.0 | 25.0 | 70.0 | - | 150000.0 | 400 | 3 |"
        );
        assert!(md.find("| fifo | 5.0").unwrap() < md.find(mq).unwrap());
    }

    #[test]
    fn headline_is_latency_and_conformance_only() {
        let s = sample();
        let head = headline(&s);
        let sections: Vec<&str> = head.lines().filter(|l| l.starts_with("## ")).collect();
        assert_eq!(sections, ["## Wakeup latency", "## Bandwidth conformance"]);
        assert_eq!(row(&head, "eevdf")[6], "40.00");
        assert_eq!(row(&head, "40")[6], "+2.0");
        let md = markdown(&s);
        let at = md.find(&head).expect("the headline is part of the summary");
        assert!(at < md.find("## cyclictest").unwrap());
    }

    #[test]
    fn kvm_runs_keep_the_caveat_but_not_the_warning() {
        let mut s = sample();
        s.accel = "kvm".into();
        s.report.max_overrun_us = None;
        s.report.wakeup_latency_us.remove("fifo");
        let md = markdown(&s);
        assert!(!md.contains("This run used TCG"));
        assert!(md.contains(TCG_NOTE));
        assert!(md.contains("own accounting): none measured."));
        assert_eq!(row(&md, "fifo"), ["fifo", "-", "-", "-", "-", "-", "-"]);
    }
}
