// SPDX-License-Identifier: GPL-2.0-only
//! `mq-bench-upgrade --quick` end to end: two real `snap-host` processes (in two network
//! namespaces joined by a veth pair as root, else on loopback), the checked ping-pong and
//! bulk stream between their apps over 1 and 100 flows, host A upgraded 3 times per flow
//! count with the real `snapctl upgrade`. Checks the report's fields, that every upgrade
//! moved the Pony engine, that every message arrived exactly once, in order and intact
//! (lost = duplicated = reordered = corrupt = 0, by exact count), and that the namespaces
//! and every host process (the upgrades' successors included) are gone afterwards. Not
//! timing: the machine is shared with builds.

use std::path::{Path, PathBuf};
use std::process::Command;

use mq_report::upgrade::Report;

const BENCH: &str = env!("CARGO_BIN_EXE_mq-bench-upgrade");

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `snap-host` and `snapctl` of this workspace, built with this test's profile (cargo
/// hands a crate's tests only its own binaries).
fn workspace_binaries() -> (PathBuf, PathBuf) {
    let profile_dir = Path::new(BENCH).parent().unwrap().to_owned();
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_owned(),
        Some(other) => other.to_owned(),
        None => panic!("no profile directory above {BENCH}"),
    };
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "-p",
            "snap-host",
            "--bin",
            "snap-host",
            "-p",
            "snap-ctl",
        ])
        .args(["--bin", "snapctl", "--profile", &profile])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building snap-host and snapctl failed");
    (profile_dir.join("snap-host"), profile_dir.join("snapctl"))
}

/// The run's namespaces, while it runs, are `upb-<its pid>-{a,b}`.
fn namespaces(pid: u32) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(&format!("upb-{pid}")))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn quick_run_upgrades_under_load_and_loses_nothing() {
    let (snap_host, snapctl) = workspace_binaries();
    let path = if is_root() { "veth" } else { "loopback" };
    let json = std::env::temp_dir().join(format!("mq-bench-upgrade-test-{}.json", std::process::id()));
    let child = Command::new(BENCH)
        .args(["--quick", "--interval-ms", "150", "--path", path])
        .arg("--snap-host")
        .arg(&snap_host)
        .arg("--snapctl")
        .arg(&snapctl)
        .arg("--json")
        .arg(&json)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running mq-bench-upgrade");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "mq-bench-upgrade failed: {}\n{stderr}",
        out.status
    );
    eprintln!("{stderr}");
    assert!(namespaces(pid).is_empty(), "{:?} left behind", namespaces(pid));
    let r: Report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);

    assert_eq!(r.path, path);
    assert_eq!((r.upgrades, r.flows.as_slice()), (3, &[1, 100][..]));
    assert_eq!(r.failed_upgrades, 0, "{stderr}");
    assert_eq!(r.blackout_ms.samples, 6, "one Pony engine moved per upgrade");
    let p50 = r.blackout_ms.p50.expect("blackout measured");
    assert!(p50 > 0.0 && r.blackout_ms.p99.unwrap() >= p50 && r.blackout_ms.max >= r.blackout_ms.p99);
    assert!(r.brownout_ms.p50.is_some());
    for count in [&r.lost, &r.duplicated, &r.reordered, &r.corrupt] {
        assert_eq!(count.total, 0, "{count:?}");
        assert_eq!(
            count.per_flows.iter().map(|c| c.flows).collect::<Vec<_>>(),
            [1, 100]
        );
    }
    let mut pids = Vec::new();
    for run in &r.runs {
        assert_eq!(run.upgrades.len(), 3);
        for u in &run.upgrades {
            assert_eq!(u.error, None);
            let (old, new) = (u.old_pid.unwrap(), u.new_pid.unwrap());
            assert_ne!(old, new, "a new process took over");
            pids.extend([old, new]);
            assert_eq!(u.engines.len(), 1, "{u:?}");
            let e = &u.engines[0];
            assert_eq!((e.name.as_str(), e.kind.as_str()), ("pony0", "pony"));
            assert!(e.blackout_ms > 0.0 && e.state_bytes > 0, "{e:?}");
            assert!(
                u.gap_ms.is_some(),
                "the ping-pong ran through upgrade {}",
                u.index
            );
        }
        // Each upgrade's new host is the next one's old host.
        for w in run.upgrades.windows(2) {
            assert_eq!(w[0].new_pid, w[1].old_pid);
        }
        assert_eq!(run.checks.len(), 3);
        for c in &run.checks {
            assert!(c.sent > 0, "{c:?}");
            assert_eq!(c.received, c.sent, "{c:?}");
            assert_eq!(
                (c.lost, c.duplicated, c.reordered, c.corrupt),
                (0, 0, 0, 0),
                "{c:?}"
            );
        }
        assert!(run.app_failures.is_empty(), "{:?}", run.app_failures);
        assert!(run.round_trips > 0 && !run.rtt.is_empty());
        assert_eq!(run.rtt.iter().map(|b| b.n).sum::<u64>(), run.round_trips);
    }
    for t in &r.targets {
        if t.name.contains("messages") || t.name == "failed upgrades" {
            assert_eq!(t.pass, Some(true), "{t:?}");
        }
    }
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "host process {pid} still runs"
        );
    }
}
