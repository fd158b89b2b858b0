//! `snapctl upgrade` against a real `snap-host`: the text report and the JSON one (the
//! shape `cargo xtask bench upgrade` reads), an echo app served across both, `--binary`
//! naming the new host, a refusal (an upgrade to a path the host cannot start) that exits
//! non-zero with the reason and leaves the host serving, and a user allowed to run apps
//! but not to upgrade.

mod common;

use common::{failed, ok, snap_host_bin, EchoApp, Host, TIMEOUT};
use snap_ipc::control::UpgradeReport;

const CONFIG: &str = r#"
[[group]]
name = "base"
mode = "spreading"
[[group.engine]]
name = "echo0"
kind = "echo"
"#;

#[test]
fn upgrade_reports_each_engine_as_text_and_json() {
    let mut host = Host::start(CONFIG);
    let mut app = EchoApp::attach(&host.socket, "echo0");
    app.round_trip().unwrap();
    let old = host.process.pid();

    let text = ok(&host.snapctl(&["upgrade"]));
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!("upgraded: pid {old} -> pid ")),
        "{text}"
    );
    let new: u32 = first.split_whitespace().nth(5).unwrap().parse().unwrap();
    let row = text
        .lines()
        .find(|l| l.starts_with("echo0 "))
        .unwrap_or_else(|| panic!("{text}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[..2], ["echo0", "echo"], "{row}");
    host.process.upgraded(new, TIMEOUT).unwrap();
    app.round_trip().unwrap();

    let binary = snap_host_bin().display().to_string();
    let json = ok(&host.snapctl(&["upgrade", "--binary", &binary, "--json"]));
    let report: UpgradeReport = serde_json::from_str(&json).unwrap();
    assert_eq!(report.old_pid, new);
    assert_eq!(report.engines.len(), 1);
    let e = &report.engines[0];
    assert_eq!((e.name.as_str(), e.kind.as_str(), e.rounds), ("echo0", "echo", 1));
    assert!(
        e.blackout_ms > 0.0 && e.blackout_ms < report.total_ms,
        "{report:?}"
    );
    assert!(e.state_bytes > 0);
    host.process.upgraded(report.new_pid, TIMEOUT).unwrap();
    app.round_trip().unwrap();
}

#[test]
fn a_failed_upgrade_exits_non_zero_and_the_host_keeps_serving() {
    let host = Host::start(CONFIG);
    let mut app = EchoApp::attach(&host.socket, "echo0");
    // A directory: snapctl resolves it, the host cannot start it.
    let dir = host.file("x", "").parent().unwrap().display().to_string();
    let err = failed(&host.snapctl(&["upgrade", "--binary", &dir]), 1);
    assert!(
        err.contains("upgrade failed") && err.contains("starting"),
        "{err}"
    );
    app.round_trip().unwrap();
    assert_eq!(host.status().channels_of("echo0"), 1);
}

#[test]
fn only_root_and_the_hosts_user_may_upgrade() {
    let host = Host::start(&format!("allowed_uids = [65534]\n{CONFIG}"));
    let pid = host.process.pid();
    let err = failed(&host.snapctl_as(65534, &["upgrade"]), 1);
    assert!(err.contains("uid 65534 may not upgrade this Snap host"), "{err}");
    assert_eq!(host.process.pid(), pid);
    assert_eq!(host.status().runtime.groups.len(), 1);
}
