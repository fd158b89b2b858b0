// SPDX-License-Identifier: GPL-2.0-only
//! `mq-bench-pipeline --policy-stages overlay` end to end over loopback with a tiny
//! configuration: Pony alone, one `pass` stage and the overlay (host A's encapsulating to
//! host B's and back). The run fails when a stage drops a packet or when one host's overlay
//! did not decapsulate every packet the other's encapsulated, so its success is the check
//! that the overlay delivered everything; then the report's overlay row must hold sane
//! numbers. Not timing (the machine is shared with builds).

use std::process::Command;

use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_mq-bench-pipeline");

#[test]
fn overlay_row_is_measured_with_every_packet_decapsulated() {
    let (rounds, iterations) = (2u64, 200u64);
    let json_path = std::env::temp_dir().join(format!("mq-bench-pipeline-test-{}.json", std::process::id()));
    let out = Command::new(BENCH)
        .args([
            "--path",
            "loopback",
            "--stages",
            "1",
            "--policy-stages",
            "overlay",
        ])
        .args([
            "--rounds",
            &rounds.to_string(),
            "--iterations",
            &iterations.to_string(),
        ])
        .args(["--shaping-mbps", "0", "--isolation-packets", "0"])
        .arg("--json")
        .arg(&json_path)
        .output()
        .expect("running mq-bench-pipeline");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "mq-bench-pipeline failed: {}\n{stderr}",
        out.status
    );
    eprintln!("{stderr}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json_path);

    let stages = report["stages"].as_array().expect("stages");
    let names: Vec<&str> = stages.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["pass", "overlay (with the peer's)"], "{stages:?}");
    let overlay = &stages[1];
    let ns = overlay["ns_per_packet"].as_f64().unwrap();
    // Encapsulating or decapsulating a 64 B message takes more than nothing and far less
    // than a millisecond, even in a debug build on a busy machine.
    assert!(ns > 0.0 && ns < 1e6, "ns_per_packet {ns}");
    for key in ["added_p50_us", "added_p99_us", "added_p50_spread_us"] {
        let v = overlay[key].as_f64().unwrap_or(f64::NAN);
        assert!(v.is_finite() && v.abs() < 1e6, "{key} = {v}");
    }
    assert!(overlay["added_p50_spread_us"].as_f64().unwrap() >= 0.0);

    // Every round measured the overlay with every round trip.
    let rows: Vec<&Value> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["variant"] == "overlay")
        .collect();
    assert_eq!(rows.len() as u64, rounds, "{rows:?}");
    for r in rows {
        assert_eq!(r["stages"], 1);
        assert_eq!(r["samples"].as_u64(), Some(iterations), "{r}");
        let p50 = r["p50_us"].as_f64().unwrap();
        assert!(p50 > 0.0 && p50 <= r["p99_us"].as_f64().unwrap(), "{r}");
    }
    assert!(report["hosts"]
        .as_str()
        .unwrap()
        .contains("overlay's peer stage in host B"));
}
