// SPDX-License-Identifier: GPL-2.0-only
//! `mq-bench-pony --quick` end to end on this host with a tiny configuration (64 B and
//! 4 KiB, spreading mode only, 1 and 2 engines per host): two in-process Pony hosts over UDP
//! on a veth pair between two network namespaces the run makes and removes (as root; over
//! loopback otherwise), the shm wire, our TCP echo, sockperf when it is installed, and the
//! shared-memory floor. Checks the report's shape, the targets and that the namespaces are
//! gone, not timing (the machine is shared with builds). No sched_ext needed.

use std::process::Command;

use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_mq-bench-pony");

fn sockperf_installed() -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("sockperf").is_file()))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The run's namespaces, while it runs, are `bench-<its pid>-{a,b}`.
fn bench_namespaces(pid: u32) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(&format!("bench-{pid}")))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn quick_run_reports_every_transport_with_sane_numbers() {
    let path = if is_root() { "veth" } else { "loopback" };
    let json_path = std::env::temp_dir().join(format!("mq-bench-pony-test-{}.json", std::process::id()));
    let child = Command::new(BENCH)
        .args([
            "--quick",
            "--modes",
            "spreading",
            "--sizes",
            "64,4096",
            "--iterations",
            "200",
            "--engines",
            "1,2",
            "--seconds",
            "0.5",
            "--path",
            path,
        ])
        .arg("--json")
        .arg(&json_path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running mq-bench-pony");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "mq-bench-pony failed: {}\n{stderr}",
        out.status
    );
    eprintln!("{stderr}");
    assert!(
        bench_namespaces(pid).is_empty(),
        "{:?} left behind",
        bench_namespaces(pid)
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json_path);

    for key in [
        "machine",
        "kernel",
        "accel",
        "scheduler",
        "path",
        "hosts",
        "layout",
        "app_wait",
        "sockperf",
        "counters",
    ] {
        assert!(report[key].is_string(), "{key} in {report}");
    }
    assert_eq!(report["path"], path);
    assert!(report["hosts"].as_str().unwrap().contains("in-process"));
    let rows = report["rows"].as_array().expect("rows");
    let num = |r: &Value, k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} in {r}"));
    // (transport, nic, path, test, bytes, engines)
    let mut want = Vec::new();
    // AF_XDP needs an interface of its own: the veth path only.
    let nics: &[&str] = if path == "veth" {
        &["xdp", "udp", "shm"]
    } else {
        &["udp", "shm"]
    };
    for &nic in nics {
        let p = if nic == "shm" { "local" } else { path };
        for test in ["ping_pong", "throughput"] {
            for bytes in [64, 4096] {
                want.push(("pony", nic, p, test, bytes, 1));
            }
        }
    }
    want.push(("pony", "udp", path, "throughput", 64, 2));
    for test in ["ping_pong", "throughput"] {
        for bytes in [64, 4096] {
            want.push(("tcp", "kernel", path, test, bytes, 1));
        }
    }
    for bytes in [64, 4096] {
        want.push(("shm_floor", "shm", "local", "ping_pong", bytes, 1));
    }
    if path == "veth" {
        // Loopback rows for continuity, marked as such.
        want.push(("pony", "udp", "loopback", "ping_pong", 64, 1));
        want.push(("tcp", "kernel", "loopback", "ping_pong", 64, 1));
    }
    if sockperf_installed() {
        want.push(("sockperf", "kernel", path, "ping_pong", 64, 1));
    } else {
        assert!(
            report["sockperf"].as_str().unwrap().starts_with("skipped"),
            "{report}"
        );
    }
    for (transport, nic, p, test, bytes, engines) in &want {
        let found = rows.iter().any(|r| {
            r["transport"] == *transport
                && r["nic"] == *nic
                && r["path"] == *p
                && r["test"] == *test
                && r["msg_bytes"].as_u64() == Some(*bytes)
                && r["engines"].as_u64() == Some(*engines)
        });
        assert!(
            found,
            "no {transport} {nic} {p} {test} {bytes} B ×{engines} row in {report}"
        );
    }
    assert_eq!(rows.len(), want.len(), "{report}");
    for r in rows {
        assert!(num(r, "msgs_per_s") > 0.0, "{r}");
        assert!(num(r, "gbps") > 0.0, "{r}");
        assert!(num(r, "cores") > 0.0, "{r}");
        assert!(num(r, "gbps_per_core") > 0.0, "{r}");
        let (p50, p99, p999) = (num(r, "p50_us"), num(r, "p99_us"), num(r, "p999_us"));
        assert!(p50 > 0.0 && p50 <= p99 && p99 <= p999, "{r}");
        // Counted (a blocking round trip switches) or null; never a made-up zero.
        let cs = &r["ctx_switches_per_rtt"];
        assert!(cs.is_null() || cs.as_f64().unwrap() >= 0.0, "{r}");
        if r["transport"] == "pony" {
            assert_eq!(r["mode"], "spreading");
            assert!(num(r, "engine_cores") > 0.0, "{r}");
            if r["test"] == "ping_pong" && !cs.is_null() {
                assert!(cs.as_f64().unwrap() > 0.0, "blocking apps switch: {r}");
            }
        }
        for k in ["cycles_per_rtt", "instructions_per_rtt"] {
            assert!(r[k].is_null() || num(r, k) > 0.0, "{k} in {r}");
        }
    }
    let one_sided = report["one_sided"].as_array().expect("one_sided");
    assert_eq!(one_sided.len(), nics.len(), "one per NIC: {report}");
    assert!(num(&one_sided[0], "reads_per_s") > 0.0);
    assert!(num(&report, "one_sided_reads_per_s_per_core") > 0.0, "{report}");
    assert_eq!(report["one_sided_mode"], "spreading");
    // Every target is computed from this run's rows: 64 B latency (2), Gbps per core at
    // 64 B and 4 KiB, 1 MiB (not measured: null), the shm wire against the floor.
    let targets = report["targets"].as_array().expect("targets");
    assert_eq!(targets.len(), 6, "{report}");
    for t in targets {
        let measured = !t["value"].is_null();
        assert_eq!(measured, !t["pass"].is_null(), "{t}");
        assert_eq!(measured, !t["name"].as_str().unwrap().contains("1 MiB"), "{t}");
    }
    assert!(stderr.contains("targets (ratios within this run):"), "{stderr}");
}

/// Without root the veth path is refused with an error that says why and what to do, before
/// anything is made. As root, the run drops to `nobody` with `setpriv` (util-linux).
#[test]
fn the_veth_path_is_refused_without_root() {
    let mut cmd = if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BENCH]);
        c
    } else {
        Command::new(BENCH)
    };
    let out = match cmd.args(["--quick", "--path", "veth"]).output() {
        Ok(out) => out,
        Err(e) => {
            eprintln!("skipped: no setpriv ({e})");
            return;
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.starts_with("setpriv:") {
        // E.g. the target directory is not readable by nobody.
        eprintln!("skipped: {stderr}");
        return;
    }
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("the veth path needs root") && stderr.contains("--path loopback"),
        "{stderr}"
    );
}
