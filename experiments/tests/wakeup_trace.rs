// SPDX-License-Identifier: GPL-2.0-only
//! `mq-trace-wakeups` end to end on this host (root: it creates a tracefs instance and runs
//! stress-ng): a SCHED_FIFO thread's wakeups found in the real kernel trace, each window
//! charged with the timer interrupt that woke the thread and the hog it preempted, the slow
//! wakeups listed slowest first, and the trace instance gone afterwards. The `microquanta`
//! policy is traced in the VM (`sched_ext_bench`). Checks no timing.

use std::path::Path;
use std::process::Command;

use mq_report::wakeup_trace::{Attribution, Report};

const BIN: &str = env!("CARGO_BIN_EXE_mq-trace-wakeups");
const INSTANCE: &str = "/sys/kernel/tracing/instances/mq-trace-wakeups";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn share(a: &Attribution, label: &str) -> f64 {
    a.rows.iter().find(|r| r.label == label).map_or(0.0, |r| r.share)
}

#[test]
fn a_fifo_threads_wakeups_are_found_and_charged_to_the_timer_and_the_preempted_hog() {
    if !is_root() {
        eprintln!("skipped: needs root (tracefs)");
        return;
    }
    let out = Command::new(BIN)
        .args(["--policy", "fifo", "--samples", "300", "--hogs-per-cpu", "2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(out.status.success(), "{stderr}");
    let r: Report = mq_report::extract(&String::from_utf8_lossy(&out.stdout)).unwrap();

    assert_eq!(r.policy, "fifo");
    assert_eq!(r.wakeup_latency_us.samples, 300);
    // A wakeup is missing only when its events were lost, or its timer fired before the
    // thread slept (then the sleep did not block).
    let blocked = r.blocked.expect("the report counts the sleeps that blocked");
    assert!(blocked >= 270, "only {blocked} of 300 sleeps blocked");
    let missing = r.not_found().expect("the report counts the sleeps that blocked");
    assert!(missing <= 15, "{missing} of {blocked} wakeups not found");
    // Waking and switch can fall in the same µs of the trace's clock (a zero phase).
    assert!(share(&r.all, "phase:scheduler") > 0.9, "{:?}", r.all);
    // Its sleep's hrtimer wakes it, from an interrupt, while a hog runs.
    assert!(share(&r.all, "hrtimer:hrtimer_wakeup") > 0.8, "{:?}", r.all);
    assert!(share(&r.all, "task:stress-ng-cpu") > 0.5, "{:?}", r.all);
    if cfg!(target_arch = "x86_64") {
        assert!(share(&r.all, "hardirq:local_timer") > 0.8, "{:?}", r.all);
    }

    assert!(r.slow.wakeups >= 1);
    assert!(!r.slowest.is_empty());
    // What the trace charged a slow wakeup with lies within its measured lateness.
    assert!(r
        .slowest
        .iter()
        .all(|w| w.charges.iter().all(|c| c.at_us + c.us <= w.late_us + 1.0)));
    assert!(stderr.contains("the slowest wakeups"), "{stderr}");

    assert!(!Path::new(INSTANCE).exists(), "the trace instance is removed");
}
