// SPDX-License-Identifier: GPL-2.0-only
//! `mq-bench-pony --quick` end to end on this host with a tiny configuration (64 B and
//! 16 KiB, spreading mode only): two in-process Pony hosts over UDP loopback, our TCP echo,
//! sockperf when it is installed, and the shared-memory floor. Checks the report's shape and
//! sanity, not its timing (the machine is shared with builds). No root or sched_ext needed.

use std::process::Command;

use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_mq-bench-pony");

fn sockperf_installed() -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("sockperf").is_file()))
}

#[test]
fn quick_run_reports_every_transport_with_sane_numbers() {
    let json_path = std::env::temp_dir().join(format!("mq-bench-pony-test-{}.json", std::process::id()));
    let out = Command::new(BENCH)
        .args([
            "--quick",
            "--modes",
            "spreading",
            "--sizes",
            "64,16384",
            "--iterations",
            "200",
        ])
        .arg("--json")
        .arg(&json_path)
        .output()
        .expect("running mq-bench-pony");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "mq-bench-pony failed: {}\n{stderr}",
        out.status
    );
    eprintln!("{stderr}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json_path);

    for key in [
        "machine",
        "kernel",
        "accel",
        "scheduler",
        "nic",
        "hosts",
        "layout",
        "app_wait",
        "sockperf",
    ] {
        assert!(report[key].is_string(), "{key} in {report}");
    }
    assert!(report["hosts"].as_str().unwrap().contains("in-process"));
    let rows = report["rows"].as_array().expect("rows");
    let num = |r: &Value, k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} in {r}"));
    let mut want = vec![
        ("pony", "ping_pong", 64),
        ("pony", "ping_pong", 16384),
        ("pony", "throughput", 64),
        ("pony", "throughput", 16384),
        ("tcp", "ping_pong", 64),
        ("tcp", "ping_pong", 16384),
        ("tcp", "throughput", 64),
        ("tcp", "throughput", 16384),
        ("shm_floor", "ping_pong", 64),
        ("shm_floor", "ping_pong", 16384),
    ];
    if sockperf_installed() {
        want.push(("tcp_sockperf", "ping_pong", 64));
    } else {
        assert!(
            report["sockperf"].as_str().unwrap().starts_with("skipped"),
            "{report}"
        );
    }
    for (transport, test, bytes) in &want {
        let found = rows.iter().any(|r| {
            r["transport"] == *transport && r["test"] == *test && r["msg_bytes"].as_u64() == Some(*bytes)
        });
        assert!(found, "no {transport} {test} {bytes} B row in {report}");
    }
    assert_eq!(rows.len(), want.len(), "{report}");
    for r in rows {
        assert!(num(r, "msgs_per_s") > 0.0, "{r}");
        assert!(num(r, "gbps") > 0.0, "{r}");
        assert!(num(r, "cores") > 0.0, "{r}");
        let (p50, p99, p999) = (num(r, "p50_us"), num(r, "p99_us"), num(r, "p999_us"));
        assert!(p50 > 0.0 && p50 <= p99 && p99 <= p999, "{r}");
        if r["transport"] == "pony" {
            assert_eq!(r["mode"], "spreading");
            assert!(num(r, "engine_cores") > 0.0, "{r}");
        }
    }
    let one_sided = report["one_sided"].as_array().expect("one_sided");
    assert_eq!(one_sided.len(), 1);
    assert!(num(&one_sided[0], "reads_per_s") > 0.0);
    assert!(num(&report, "one_sided_reads_per_s_per_core") > 0.0, "{report}");
    assert_eq!(report["one_sided_mode"], "spreading");
}
