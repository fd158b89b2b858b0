//! `snapctl stage update` and the stage table of `snapctl status` against a real
//! `snap-host` whose Pony engine's NIC side is a pipeline of two `pass` stages (UDP on
//! loopback): settings applied or refused by the stage with its reason, unknown stages and
//! other users refused, and nothing changed by a refusal.

mod common;

use common::{failed, ok, Host};

const PIPELINE: &str = r#"
allowed_uids = [65534]
[[group]]
name = "pony"
mode = "spreading"
[[group.engine]]
name = "pony0"
kind = "pony"
options = { pipeline = "path0" }
[[group]]
name = "stages"
mode = "compacting"
[[pipeline]]
name = "path0"
[[pipeline.stage]]
name = "pass0"
kind = "pass"
group = "stages"
[[pipeline.stage]]
name = "pass1"
kind = "pass"
group = "pony"
[pipeline.nic]
nic = "udp"
bind = "127.0.0.1:0"
"#;

#[test]
fn stage_update_is_applied_or_refused_with_the_stages_reason() {
    let host = Host::start(PIPELINE);
    let text = ok(&host.snapctl(&["status"]));
    assert!(text.contains("pipeline stages"), "{text}");
    // In the engines table its kind is `stage`; in the stage table, `pass`.
    let (engines, stages) = text.split_once("pipeline stages").unwrap();
    let row = |t: &str| {
        t.lines()
            .find(|l| l.trim_start().starts_with("pass0"))
            .unwrap()
            .to_owned()
    };
    assert_eq!(row(engines).split_whitespace().nth(1), Some("stage"), "{text}");
    assert_eq!(row(stages).split_whitespace().nth(1), Some("pass"), "{text}");

    let empty = host.file("empty.toml", "");
    let out = ok(&host.snapctl(&["stage", "update", "pass0", "--file", empty.to_str().unwrap()]));
    assert!(out.contains("stage pass0 updated"), "{out}");

    let before = host.status().runtime;
    let err = failed(
        &host.snapctl(&["stage", "update", "pass1", "--toml", "rate = 5"]),
        1,
    );
    assert!(
        err.contains("stage \"pass1\" refused the settings: stage kind \"pass\" has no settings"),
        "{err}"
    );
    let err = failed(&host.snapctl(&["stage", "update", "pony0", "--toml", ""]), 1);
    assert!(err.contains("no pipeline stage named \"pony0\""), "{err}");
    let err = failed(
        &host.snapctl(&["stage", "update", "pass0", "--toml", "not [toml"]),
        1,
    );
    assert!(err.contains("TOML parse error at line 1"), "{err}");
    let err = failed(
        &host.snapctl_as(65534, &["stage", "update", "pass0", "--toml", ""]),
        1,
    );
    assert!(
        err.contains("uid 65534 may not change this Snap host's engines"),
        "{err}"
    );
    // A group running a stage cannot go, nor the Pony engine on the pipeline.
    let err = failed(&host.snapctl(&["group", "remove", "stages"]), 1);
    assert!(err.contains("runs pipeline stages"), "{err}");
    let after = host.status().runtime;
    let names = |s: &snap_ipc::control::Status| {
        s.groups
            .iter()
            .map(|g| {
                (
                    g.name.clone(),
                    g.engines.iter().map(|e| e.name.clone()).collect::<Vec<_>>(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&before), names(&after));
}
