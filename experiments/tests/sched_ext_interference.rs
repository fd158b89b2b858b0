// SPDX-License-Identifier: GPL-2.0-only
//! `mq-bench-interference --quick` on a real sched_ext kernel: the `microquanta` setup (the
//! benchmark loads scx_microquanta, the engines join the class) next to CPU hogs, and the
//! policy experiment's scheduler binaries, one of which does not exist. Ignored by a plain
//! `cargo test`; `cargo xtask test` runs it in the VM (`--include-ignored`).
//!
//! No latency bound: what must hold is that every point is measured under the scheduler it
//! names, each policy binary that exists attaches and detaches cleanly (the kernel is back on
//! EEVDF afterwards), and one that does not is reported as not built, never faked.

use std::path::{Path, PathBuf};
use std::process::Command;

use mq_class::{sysfs, SchedExtState};
use mq_experiments::scheduler_process::exclusive_sched_ext_host as sched_ext_host;
use mq_report::interference::Report;

const BENCH: &str = env!("CARGO_BIN_EXE_mq-bench-interference");

fn sibling(name: &str) -> Option<PathBuf> {
    let p = Path::new(BENCH).parent()?.join(name);
    p.is_file().then_some(p)
}

#[test]
#[ignore = "needs a sched_ext kernel and root: run by `cargo xtask test` in a VM"]
fn microquanta_and_policy_binaries_run_the_interference_workload() {
    let _serial = sched_ext_host();
    let snap_host = sibling("snap-host").expect("snap-host next to the benchmark");
    let mqland = sibling("scx_mqland").is_some();
    let json = std::env::temp_dir().join("mq-bench-interference-sched-ext.json");
    let out = Command::new(BENCH)
        .args([
            "--quick",
            "--setups",
            "microquanta",
            "--antagonists",
            "none,cpu",
            "--policy-schedulers",
            "scx_microquanta,scx_mqland,scx_not_there",
            "--policy-antagonists",
            "cpu",
            "--snap-host",
        ])
        .arg(&snap_host)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("running mq-bench-interference");
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stderr}");
    assert!(out.status.success(), "{}", out.status);
    let r: Report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        sysfs::state(),
        SchedExtState::Disabled,
        "every scheduler detached"
    );
    let setups: Vec<(&str, &str)> = r
        .rows
        .iter()
        .map(|x| (x.setup.as_str(), x.antagonist.as_str()))
        .collect();
    let mut want = vec![
        ("microquanta", "none"),
        ("microquanta", "cpu"),
        ("scx_microquanta", "cpu"),
    ];
    if mqland {
        want.push(("scx_mqland", "cpu"));
    }
    assert_eq!(setups, want);
    for row in &r.rows {
        assert!(row.ops_per_s > 0.0 && row.p99_us >= row.p50_us, "{row:?}");
        assert!(row.task_clock_us_per_op > 0.0, "{row:?}");
    }
    let status = |n: &str| {
        r.schedulers
            .iter()
            .find(|s| s.name == n)
            .map(|s| s.status.clone())
    };
    assert_eq!(status("scx_not_there").as_deref(), Some("not built"));
    assert_eq!(status("scx_microquanta").as_deref(), Some("ran"));
    assert_eq!(
        status("scx_mqland").as_deref(),
        Some(if mqland { "ran" } else { "not built" })
    );
}
