// SPDX-License-Identifier: GPL-2.0-only
//! `mq-bench-modes --quick` end to end on this host: the real `snap-host` in
//! each mode, an app driving it at 10% of a core for a second, and a report
//! with every mode in it. No root or sched_ext needed (EEVDF natively).
//!
//! Timing is not asserted (the machine has 2 CPUs shared with builds), except
//! the one property that holds under any load: a dedicated engine spins, so
//! it burns at least half a core unless the machine is oversubscribed, and
//! then still more than a spreading engine serving 10% of a core.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_mq-bench-modes");

/// `snap-host` of the same profile: cargo only builds the binaries of the
/// package under test, so build it if an earlier command did not.
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
    assert!(host.is_file(), "{} missing", host.display());
    host
}

fn load_above_cpus() -> bool {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .is_some_and(|load| load > cpus)
}

#[test]
fn every_mode_serves_the_offered_load_and_reports_it() {
    let json_path = std::env::temp_dir().join(format!("mq-bench-modes-test-{}.json", std::process::id()));
    let out = Command::new(BENCH)
        .args(["--quick", "--loads", "10", "--seconds", "1", "--snap-host"])
        .arg(snap_host())
        .arg("--json")
        .arg(&json_path)
        .output()
        .expect("running mq-bench-modes");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "mq-bench-modes failed: {}\n{stderr}",
        out.status
    );
    eprintln!("{stderr}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json_path);

    for key in ["machine", "kernel", "accel", "scheduler", "layout"] {
        assert!(report[key].is_string(), "{key} in {report}");
    }
    assert!(report["work_ns"].as_u64().unwrap() > 0);
    let rows = report["rows"].as_array().expect("rows");
    let modes: Vec<&str> = rows.iter().map(|r| r["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["dedicated", "spreading", "compacting"]);
    let num = |r: &Value, k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} in {r}"));
    for r in rows {
        assert_eq!(r["offered_load"], 10, "{r}");
        assert!(num(r, "ops_per_s") > 0.0, "{r}");
        assert!(num(r, "cores") > 0.0, "{r}");
        assert!(num(r, "host_cores") >= num(r, "cores") * 0.9, "{r}");
        let p50 = num(r, "p50_us");
        assert!(
            p50 > 0.0 && p50 <= num(r, "p99_us") && num(r, "p99_us") <= num(r, "p999_us"),
            "{r}"
        );
        let (sent, received) = (r["sent"].as_u64().unwrap(), r["received"].as_u64().unwrap());
        assert!(sent > 0 && sent == received, "{r}");
    }
    let (dedicated, spreading) = (num(&rows[0], "cores"), num(&rows[1], "cores"));
    if load_above_cpus() {
        eprintln!("oversubscribed machine: only checking dedicated ({dedicated:.2}) > spreading ({spreading:.2}) cores");
        assert!(dedicated > spreading, "{report}");
    } else {
        assert!(
            dedicated >= 0.5,
            "a dedicated engine spins, yet used {dedicated:.2} cores: {report}"
        );
    }
}
