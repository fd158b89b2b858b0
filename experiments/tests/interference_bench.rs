// SPDX-License-Identifier: GPL-2.0-only
//! `mq-bench-interference --quick` end to end on this host (root, no sched_ext needed):
//! the real `snap-host` with spreading engines on EEVDF and in SCHED_FIFO, each alone and
//! next to real stress-ng CPU hogs, and a policy scheduler that is not built.
//!
//! Timing is not asserted (2 CPUs shared with builds). What must hold whatever the load:
//! every point is there with its counters, the hogs' work is measured next to the engines
//! and alone, SCHED_FIFO threads really are in SCHED_FIFO (they switch on every request
//! instead of being preempted by hogs, so their switches are counted), and a missing
//! scheduler binary is said, not faked.

use std::path::{Path, PathBuf};
use std::process::Command;

use mq_report::interference::Report;

const BENCH: &str = env!("CARGO_BIN_EXE_mq-bench-interference");

/// `snap-host` of the same profile (cargo builds only this package's binaries).
fn snap_host() -> PathBuf {
    let dir = Path::new(BENCH).parent().expect("bench binary has a directory");
    let host = dir.join("snap-host");
    if !host.is_file() {
        let mut cargo = Command::new(env!("CARGO"));
        cargo.args(["build", "-p", "snap-host", "--bin", "snap-host"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("running cargo");
        assert!(status.success(), "building snap-host failed: {status}");
    }
    host
}

#[test]
fn every_setup_and_antagonist_is_measured_and_a_missing_scheduler_is_said() {
    let json = std::env::temp_dir().join(format!("mq-bench-interference-test-{}.json", std::process::id()));
    let out = Command::new(BENCH)
        .args([
            "--quick",
            "--setups",
            "eevdf,fifo",
            "--antagonists",
            "none,cpu",
            "--load",
            "10",
            "--policy-schedulers",
            "scx_no_such_scheduler",
            "--snap-host",
        ])
        .arg(snap_host())
        .arg("--json")
        .arg(&json)
        .output()
        .expect("running mq-bench-interference");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stderr}", out.status);
    let text = std::fs::read_to_string(&json).unwrap();
    let _ = std::fs::remove_file(&json);
    let r: Report = serde_json::from_str(&text).unwrap();
    assert_eq!(r.rounds, 1);
    assert_eq!(r.rows.len(), 4, "{:#?}", r.rows);
    for (i, (setup, antagonist)) in [
        ("eevdf", "none"),
        ("eevdf", "cpu"),
        ("fifo", "none"),
        ("fifo", "cpu"),
    ]
    .iter()
    .enumerate()
    {
        let row = &r.rows[i];
        assert_eq!(
            (row.setup.as_str(), row.antagonist.as_str()),
            (*setup, *antagonist)
        );
        assert_eq!(row.mode, "spreading");
        assert!(
            row.ops_per_s > 0.0 && row.p50_us > 0.0 && row.p50_us <= row.p99_us,
            "{row:?}"
        );
        assert!(row.task_clock_us_per_op > 0.0, "{row:?}");
        assert_eq!(
            row.antagonist_ops_per_s.is_some(),
            *antagonist == "cpu",
            "{row:?}"
        );
        assert_eq!(row.antagonist_loss.is_some(), *antagonist == "cpu", "{row:?}");
    }
    // A spreading engine at 10% of a core blocks between requests: it switches out.
    assert!(r.rows[2].ctx_switches_per_op > 0.1, "{:?}", r.rows[2]);
    assert_eq!(r.alone.len(), 1);
    assert_eq!(r.alone[0].antagonist, "cpu");
    assert!(r.alone[0].ops_per_s > 0.0);
    assert_eq!(r.schedulers.len(), 1);
    assert_eq!(r.schedulers[0].name, "scx_no_such_scheduler");
    assert_eq!(r.schedulers[0].status, "not built");
    assert!(r.stress_ng.contains("stress-ng"), "{}", r.stress_ng);
}
