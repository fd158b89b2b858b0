//! The `scx_microquanta` vs `scx_mqland` section of `target/experiments/sched/summary.md`:
//! the same policy in BPF and in userspace, per scheduler the median and range across the
//! interleaved rounds, then every round.

use std::fmt::Write as _;

use mq_report::mqland::{MqlandComparison, Spread, SCX_MICROQUANTA, SCX_MQLAND};

fn spread(s: Option<Spread>, digits: usize) -> String {
    s.map_or_else(
        || "-".to_string(),
        |s| format!("{:.d$} ({:.d$}–{:.d$})", s.median, s.min, s.max, d = digits),
    )
}

/// Appends the section to `md`.
pub fn section(md: &mut String, m: &MqlandComparison) {
    let rounds = m.rounds.iter().map(|r| r.round + 1).max().unwrap_or(0);
    let _ = writeln!(
        md,
        "## The policy in userspace: scx_microquanta vs scx_mqland\n\n\
         {rounds} interleaved rounds, {}/{} µs, {} hogs; median (min–max) across rounds. \
         CPU spent scheduling: the scheduler process's CPU time and its BPF programs' run \
         time during the latency phase, per second and per context switch of the machine.\n",
        m.runtime_us, m.period_us, m.hogs
    );
    let _ = writeln!(
        md,
        "| scheduler | wake p50 µs | wake p99 µs | class share | userspace CPU/s | BPF CPU/s | µs per switch |\n|---|---|---|---|---|---|---|"
    );
    for name in [SCX_MICROQUANTA, SCX_MQLAND] {
        let Some(s) = m.summary.get(name) else {
            continue;
        };
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} | {} | {} | {} |",
            spread(s.wake_p50_us, 0),
            spread(s.wake_p99_us, 0),
            spread(s.class_share, 3),
            spread(s.user_cpu_share, 4),
            spread(s.bpf_cpu_share, 4),
            spread(s.sched_us_per_switch, 2),
        );
    }
    let expected = m.rounds.first().map_or(f64::NAN, |r| r.expected_share);
    let _ = writeln!(
        md,
        "\nExpected class share {expected:.3}. p99 wakeup latency, scx_mqland / scx_microquanta per round: {}\n",
        spread(m.p99_ratio_mqland_over_microquanta, 2)
    );
}

#[cfg(test)]
mod tests {
    use mq_report::mqland::MqlandRound;

    use super::*;

    #[test]
    fn the_section_has_a_row_per_scheduler_and_the_ratio() {
        let round = |round, scheduler: &str, p99| MqlandRound {
            round,
            scheduler: scheduler.into(),
            wake_p50_us: 10.0,
            wake_p99_us: p99,
            wake_samples: 10,
            class_share: 0.5,
            expected_share: 0.5,
            user_cpu_share: 0.0,
            bpf_cpu_share: 0.01,
            switches_per_s: 100.0,
            sched_us_per_switch: Some(100.0),
        };
        let m = MqlandComparison::from_rounds(
            1000,
            500,
            4,
            vec![round(0, SCX_MICROQUANTA, 100.0), round(0, SCX_MQLAND, 300.0)],
        );
        let mut md = String::new();
        section(&mut md, &m);
        assert!(
            md.contains("| scx_microquanta | 10 (10–10) | 100 (100–100)"),
            "{md}"
        );
        assert!(md.contains("| scx_mqland |"), "{md}");
        assert!(md.contains("3.00 (3.00–3.00)"), "{md}");
    }
}
