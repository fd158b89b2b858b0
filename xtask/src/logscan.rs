//! Scanning the guest kernel's console log for signs that something went wrong.
//!
//! A sched_ext scheduler can break the kernel without the test command noticing: the
//! kernel's watchdog ejects a stalling scheduler and the machine carries on under EEVDF, a
//! BPF error disables it, or a WARN fires in the scheduler core. Every VM run is therefore
//! judged by its console log too, and fails when one of these lines appears.

/// Substrings that always mean trouble, with a short reason.
const FATAL: &[(&str, &str)] = &[
    ("Kernel panic", "kernel panic"),
    ("Oops", "kernel oops"),
    ("BUG:", "kernel BUG"),
    ("WARNING:", "kernel WARNING"),
    ("general protection fault", "general protection fault"),
    (
        "Initramfs unpacking failed",
        "initramfs unpacking failed: the guest lacks memory for it, files are missing",
    ),
];

/// A `sched_ext: ` line containing one of these reports an error exit of the scheduler
/// (the kernel's `scx_exit_reason()` strings plus the exit kind names), as opposed to e.g.
/// `disabled (unregistered from user space)`.
const SCHED_EXT_ERRORS: &[&str] = &[
    "runtime error",
    "runnable task stall",
    "scx_bpf_error",
    "(error)",
    "SCX_EXIT_ERROR",
    "watchdog failed",
];

/// One suspicious console line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// 1-based line number in the log.
    pub line_no: usize,
    pub line: String,
    pub reason: &'static str,
}

/// Every suspicious line of `log` that no pattern in `allow` (plain substrings) excuses.
pub fn scan(log: &str, allow: &[String]) -> Vec<Finding> {
    log.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let reason = classify(line)?;
            if allow.iter().any(|a| !a.is_empty() && line.contains(a.as_str())) {
                return None;
            }
            Some(Finding {
                line_no: i + 1,
                line: line.to_string(),
                reason,
            })
        })
        .collect()
}

fn classify(line: &str) -> Option<&'static str> {
    if let Some((_, reason)) = FATAL.iter().find(|(pat, _)| line.contains(pat)) {
        return Some(reason);
    }
    if line.contains("sched_ext: ") && SCHED_EXT_ERRORS.iter().any(|e| line.contains(e)) {
        return Some("sched_ext error exit");
    }
    None
}

/// Lines `line_no - radius ..= line_no + radius` of `log`, numbered, the offending one
/// marked with `>`.
pub fn excerpt(log: &str, line_no: usize, radius: usize) -> String {
    let first = line_no.saturating_sub(radius).max(1);
    let last = line_no + radius;
    log.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(n, _)| (first..=last).contains(n))
        .map(|(n, l)| {
            let mark = if n == line_no { '>' } else { ' ' };
            format!("{mark}{n:6} | {l}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The last `count` lines of `log` (for reports when the guest died).
pub fn tail(log: &str, count: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// A report of up to `max` findings with their context, for an error message.
pub fn report(log: &str, findings: &[Finding], max: usize) -> String {
    let mut out = String::new();
    for finding in findings.iter().take(max) {
        out.push_str(&format!(
            "--- {} at console line {}:\n{}\n",
            finding.reason,
            finding.line_no,
            excerpt(log, finding.line_no, 10)
        ));
    }
    if findings.len() > max {
        out.push_str(&format!("... and {} more\n", findings.len() - max));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NORMAL: &str = "\
[    0.000000] Linux version 7.3.4+deb13-cloud-amd64 (debian-kernel@lists.debian.org)
[    2.101000] Run /init as init process
[    5.310000] sched_ext: BPF scheduler \"microquanta\" enabled
[   12.500000] sched_ext: BPF scheduler \"microquanta\" disabled (unregistered from user space)
[   12.600000] sched_ext: BPF scheduler \"microquanta\" disabled (unregistered from BPF)
[   13.000000] reboot: Power down
";

    #[test]
    fn normal_boot_and_scheduler_lifecycle_pass() {
        assert_eq!(scan(NORMAL, &[]), vec![]);
    }

    #[test]
    fn kernel_errors_are_found() {
        let cases = [
            ("[  3.1] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI", "kernel oops"),
            (
                "[  3.1] BUG: kernel NULL pointer dereference, address: 0",
                "kernel BUG",
            ),
            (
                "[  3.1] WARNING: CPU: 1 PID: 0 at kernel/sched/ext.c:123",
                "kernel WARNING",
            ),
            (
                "[  3.1] Kernel panic - not syncing: Fatal exception",
                "kernel panic",
            ),
            (
                "[  3.1] general protection fault, probably for non-canonical",
                "general protection fault",
            ),
            (
                "[  5.0] Initramfs unpacking failed: write error",
                "initramfs unpacking failed: the guest lacks memory for it, files are missing",
            ),
        ];
        for (line, reason) in cases {
            let log = format!("{NORMAL}{line}\n");
            let found = scan(&log, &[]);
            assert_eq!(found.len(), 1, "{line}");
            assert_eq!(found[0].reason, reason);
            assert_eq!(found[0].line_no, 7);
        }
    }

    #[test]
    fn sched_ext_error_exits_are_found() {
        for line in [
            "sched_ext: BPF scheduler \"microquanta\" disabled (runtime error)",
            "sched_ext: BPF scheduler \"microquanta\" disabled (runnable task stall)",
            "sched_ext: BPF scheduler \"microquanta\" disabled (scx_bpf_error)",
            "sched_ext: microquanta: watchdog failed to check in for 30011ms",
        ] {
            let found = scan(line, &[]);
            assert_eq!(found.len(), 1, "{line}");
            assert_eq!(found[0].reason, "sched_ext error exit");
        }
        // The same words outside a sched_ext line are not ours to judge.
        assert!(scan("[ 1.0] ACPI: runtime error in _OSC", &[]).is_empty());
    }

    #[test]
    fn allow_patterns_excuse_matching_lines_only() {
        let log = "sched_ext: BPF scheduler \"mq\" disabled (runnable task stall)\n\
                   WARNING: CPU: 0 PID: 1 at mm/slab.c:1\n";
        let allow = vec!["runnable task stall".to_string()];
        let found = scan(log, &allow);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].reason, "kernel WARNING");
        // An empty pattern must not excuse everything.
        assert_eq!(scan(log, &[String::new()]).len(), 2);
    }

    #[test]
    fn excerpt_is_clamped_and_marked() {
        let log: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        let ex = excerpt(&log, 3, 10);
        assert!(ex.starts_with("      1 | line 1"));
        assert!(ex.contains(">     3 | line 3"));
        assert!(ex.ends_with("line 13"));
        let ex = excerpt(&log, 29, 10);
        assert!(ex.ends_with("line 30"));
        assert_eq!(ex.lines().count(), 12);
        assert_eq!(tail(&log, 2), "line 29\nline 30");
    }
}
