// SPDX-License-Identifier: GPL-2.0-only
//! The binaries' answers to bad input, run for real on any host: bad flags
//! are refused with the flag named, and a host that cannot load the
//! scheduler gets a reason rather than a BPF error.

use std::process::{Command, Output};

use mq_class::{sysfs, SchedExtState};

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin).args(args).output().expect("the binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn runtime_above_period_is_refused_before_anything_is_loaded() {
    let out = run(
        env!("CARGO_BIN_EXE_scx_microquanta"),
        &["--period-us", "40", "--runtime-us", "50"],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("--runtime-us 50") && err.contains("--period-us"),
        "{err}"
    );
}

#[test]
fn an_unknown_flag_is_named() {
    let out = run(env!("CARGO_BIN_EXE_scx_microquanta"), &["--perod-us", "40"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--perod-us"), "{}", stderr(&out));
}

#[test]
fn a_kernel_without_sched_ext_is_named_as_the_reason() {
    if sysfs::state() != SchedExtState::Unsupported {
        return; // this host can run schedulers: the VM tests cover it
    }
    let out = run(env!("CARGO_BIN_EXE_scx_microquanta"), &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("has no sched_ext") && err.contains("cargo xtask vm"),
        "{err}"
    );
}

#[test]
fn monitor_without_a_running_scheduler_says_so() {
    if sysfs::microquanta_loaded() {
        return;
    }
    let out = run(env!("CARGO_BIN_EXE_scx_microquanta"), &["--monitor", "1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no scx_microquanta is running"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn monitor_names_the_socket_nothing_serves() {
    let path = std::env::temp_dir().join(format!("mq-cli-nothing-{}/stats", std::process::id()));
    let out = run(
        env!("CARGO_BIN_EXE_scx_microquanta"),
        &["--monitor", "1", "--stats-socket", path.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("no scx_microquanta is running") && err.contains(path.to_str().unwrap()),
        "{err}"
    );
}

/// What another sched_ext scheduler serves on the shared socket.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, scx_stats_derive::Stats)]
#[stat(top)]
struct OtherSchedulerMetrics {
    #[stat(desc = "a counter of another scheduler")]
    nr_dispatched: u64,
}

#[test]
fn monitor_refuses_a_server_of_another_layout() {
    use scx_stats::prelude::*;
    let dir = std::env::temp_dir().join(format!("mq-cli-other-{}", std::process::id()));
    let path = dir.join("stats");
    let _server = StatsServer::<(), ()>::new(
        StatsServerData::new()
            .add_meta(OtherSchedulerMetrics::meta())
            .add_stats(
                "top",
                Box::new(|_, _| OtherSchedulerMetrics { nr_dispatched: 1 }.to_json()),
            ),
    )
    .set_path(&path)
    .launch()
    .expect("a real scx_stats server on a socket of our own");
    let out = run(
        env!("CARGO_BIN_EXE_scx_microquanta"),
        &[
            "--monitor",
            "0.2",
            "--stats-json",
            "--stats-socket",
            path.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success(), "it must not print another layout as ours");
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert!(
        err.contains("not a compatible scx_microquanta") && err.contains("no `Report`"),
        "{err}"
    );
    drop(_server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mqctl_without_a_scheduler_explains_what_to_start() {
    if sysfs::microquanta_loaded() {
        return;
    }
    let out = run(env!("CARGO_BIN_EXE_mqctl"), &["list"]);
    // Without a pinned class map (no scheduler since boot) or as non-root
    // the answer must say which.
    if !out.status.success() {
        let err = stderr(&out);
        assert!(
            err.contains("start scx_microquanta first") || err.contains("only root"),
            "{err}"
        );
    }
}

#[test]
fn mqctl_run_needs_a_command() {
    let out = run(env!("CARGO_BIN_EXE_mqctl"), &["run"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("<COMMAND>"), "{}", stderr(&out));
}

#[test]
fn mqctl_group_add_names_the_bad_value_before_looking_for_a_scheduler() {
    let mqctl = env!("CARGO_BIN_EXE_mqctl");
    let cases: [(&[&str], &str); 4] = [
        (
            &[
                "group",
                "add",
                "bulk",
                "--runtime-us",
                "1200",
                "--period-us",
                "1000",
            ],
            "runtime_us 1200",
        ),
        (
            &["group", "add", "bulk", "--runtime-us", "1", "--period-us", "1"],
            "period_us 1",
        ),
        (
            &[
                "group",
                "add",
                "no space",
                "--runtime-us",
                "100",
                "--period-us",
                "1000",
            ],
            "\"no space\"",
        ),
        (
            &[
                "group",
                "add",
                "bulk",
                "--runtime-us",
                "100",
                "--period-us",
                "1000",
                "--cpus",
                "3-1",
            ],
            "CPU list \"3-1\"",
        ),
    ];
    for (args, named) in cases {
        let out = run(mqctl, args);
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = stderr(&out);
        assert!(err.contains(named), "{args:?}: {err}");
        assert!(!err.contains("start scx_microquanta"), "{args:?}: {err}");
    }
}

#[test]
fn mqctl_group_add_needs_both_budget_flags() {
    let out = run(
        env!("CARGO_BIN_EXE_mqctl"),
        &["group", "add", "bulk", "--runtime-us", "100"],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--period-us"), "{}", stderr(&out));
}

#[test]
fn mqctl_run_group_needs_a_name_and_a_command() {
    let mqctl = env!("CARGO_BIN_EXE_mqctl");
    let out = run(mqctl, &["run", "--group"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--group <NAME>"), "{}", stderr(&out));
    let out = run(mqctl, &["run", "--group", "bulk"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("<COMMAND>"), "{}", stderr(&out));
}

#[test]
fn mqctl_add_refuses_a_thread_id_that_is_not_a_number() {
    let out = run(env!("CARGO_BIN_EXE_mqctl"), &["add", "--group", "bulk", "12x"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("12x"), "{}", stderr(&out));
}
