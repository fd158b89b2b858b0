//! The guest script of `cargo xtask demo`: its steps (`mq-demo`, then the quick scheduler
//! and engine-modes benchmarks), the shell that runs them in order and stops at the first
//! failure after naming it (`MQ_DEMO_STEP_FAILED <program> <status>`), and reading back how
//! far it got ([`Steps`]), for the reporting in [`super`].

use std::path::Path;

use super::DEMO_PROGRAM;
use crate::bench::{modes, sched};
use crate::sys;

/// Printed by the guest script when a step fails: `MQ_DEMO_STEP_FAILED <program> <status>`.
const STEP_FAILED_TAG: &str = "MQ_DEMO_STEP_FAILED ";
/// Offered loads of the modes step (% of one core): light and half.
const MODES_LOADS: &str = "10,50";

/// `mq-bench-sched --quick --rounds 0`: the scheduler benchmark's command line in the demo,
/// without its rounds phase (the demo's own step measured the same workload in rounds).
pub(super) fn sched_step() -> String {
    let mut argv = sched::guest_command(true, None);
    argv.extend(["--rounds".into(), "0".into()]);
    sys::quote_all(&argv)
}

/// What the modes benchmark's options are in the demo.
fn modes_args() -> Vec<String> {
    modes::guest_args(true, Some(MODES_LOADS), None)
}

/// `mq-bench-modes --quick --loads 10,50`, as the demo names the step (the command also loads
/// the scheduler and prints the report: [`modes::guest_script`]).
pub(super) fn modes_step_label() -> String {
    let mut argv = vec![modes::GUEST_PROGRAM.to_string()];
    argv.extend(modes_args());
    sys::quote_all(&argv)
}

/// One program the guest script runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Step {
    /// The name its failure marker gives.
    program: &'static str,
    /// What the script says it is running.
    label: String,
    /// The shell command.
    command: String,
}

/// `mq-demo` (`with_demo`), then (`with_bench`) the quick scheduler benchmark and the engine
/// modes benchmark with `scx_microquanta` from `release_dir` loaded.
pub(super) fn steps(with_demo: bool, with_bench: bool, release_dir: &Path) -> Vec<Step> {
    let mut steps = Vec::new();
    if with_demo {
        steps.push(Step {
            program: DEMO_PROGRAM,
            label: DEMO_PROGRAM.into(),
            command: DEMO_PROGRAM.into(),
        });
    }
    if with_bench {
        steps.push(Step {
            program: sched::GUEST_PROGRAM,
            label: sched_step(),
            command: sched_step(),
        });
        steps.push(Step {
            program: modes::GUEST_PROGRAM,
            label: format!("{}, scx_microquanta loaded", modes_step_label()),
            command: modes::guest_script(&modes_args(), release_dir),
        });
    }
    steps
}

/// The guest script: the steps in order. The first failure stops it, after a tagged line
/// saying which program failed with which status.
pub(super) fn guest_script(steps: &[Step]) -> String {
    let total = steps.len();
    let mut script = String::new();
    for (i, step) in steps.iter().enumerate() {
        if total > 1 {
            script.push_str(&format!(
                "echo {}\n",
                sys::quote(&format!("== demo step {}/{total}: {}", i + 1, step.label))
            ));
        }
        script.push_str(&format!(
            "{} || {{ status=$?; echo \"{STEP_FAILED_TAG}{} $status\"; exit $status; }}\n",
            step.command, step.program
        ));
    }
    script
}

/// How far the guest script got.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Steps {
    /// mq-demo succeeded; then the exit status of each benchmark, `None` if it did not run.
    DemoOk { sched: Option<i32>, modes: Option<i32> },
    /// mq-demo failed with this status (the benchmarks did not run).
    DemoFailed(i32),
    /// The script failed with this status but printed no step marker.
    Unknown(i32),
}

/// Reads the script's exit status and its `MQ_DEMO_STEP_FAILED` line (the last one).
pub(super) fn step_statuses(output: &str, exit_status: i32, with_bench: bool) -> Steps {
    if exit_status == 0 {
        let ran = with_bench.then_some(0);
        return Steps::DemoOk {
            sched: ran,
            modes: ran,
        };
    }
    let failed = output.lines().rev().find_map(|l| {
        let (program, status) = l.trim().strip_prefix(STEP_FAILED_TAG)?.split_once(' ')?;
        Some((program.to_string(), status.trim().parse::<i32>().ok()?))
    });
    match failed {
        Some((program, status)) if program == DEMO_PROGRAM => Steps::DemoFailed(status),
        Some((program, status)) if with_bench && program == sched::GUEST_PROGRAM => Steps::DemoOk {
            sched: Some(status),
            modes: None,
        },
        Some((program, status)) if with_bench && program == modes::GUEST_PROGRAM => Steps::DemoOk {
            sched: Some(0),
            modes: Some(status),
        },
        _ => Steps::Unknown(exit_status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_runs_the_demo_then_the_two_quick_benchmarks() {
        let script = guest_script(&steps(true, true, Path::new("/rel")));
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(lines.len(), 6, "{script}");
        assert_eq!(lines[0], "echo '== demo step 1/3: mq-demo'");
        assert!(lines[1].starts_with("mq-demo || {"), "{script}");
        assert_eq!(
            lines[2],
            "echo '== demo step 2/3: mq-bench-sched --quick --rounds 0'"
        );
        assert!(
            lines[3].starts_with("mq-bench-sched --quick --rounds 0 || {"),
            "{script}"
        );
        assert!(lines[3].contains("echo \"MQ_DEMO_STEP_FAILED mq-bench-sched $status\""));
        assert_eq!(
            lines[4],
            "echo '== demo step 3/3: mq-bench-modes --quick --loads 10,50, scx_microquanta loaded'"
        );
        // Exactly what `cargo xtask bench modes` runs in its VM, with the demo's options.
        let modes_command =
            modes::guest_script(&modes::guest_args(true, Some("10,50"), None), Path::new("/rel"));
        assert_eq!(
            modes_command,
            "mq-bench-modes --quick --loads 10,50 --with-scheduler /rel/scx_microquanta \
             --json /tmp/mq-bench-modes.json && echo \"MQ_BENCH_MODES_JSON $(cat /tmp/mq-bench-modes.json)\""
        );
        assert!(
            lines[5].starts_with(&format!("{modes_command} || {{")),
            "{script}"
        );
        assert!(lines[5].contains("echo \"MQ_DEMO_STEP_FAILED mq-bench-modes $status\""));
        let alone = guest_script(&steps(true, false, Path::new("/rel")));
        assert_eq!(alone.lines().count(), 1, "{alone}");
        assert!(!alone.contains("mq-bench"), "{alone}");
        // The benchmarks' own boot (`--bench-cpus` other than `--cpus`): the two of them.
        let benches = guest_script(&steps(false, true, Path::new("/rel")));
        let lines: Vec<&str> = benches.lines().collect();
        assert_eq!(lines.len(), 4, "{benches}");
        assert_eq!(
            lines[0],
            "echo '== demo step 1/2: mq-bench-sched --quick --rounds 0'"
        );
        assert!(!benches.contains("mq-demo"), "{benches}");
    }

    #[test]
    fn step_statuses_say_which_program_failed() {
        let ok = |sched, modes| Steps::DemoOk { sched, modes };
        assert_eq!(step_statuses("x\n", 0, true), ok(Some(0), Some(0)));
        assert_eq!(step_statuses("x\n", 0, false), ok(None, None));
        let demo_failed = "boom\nMQ_DEMO_STEP_FAILED mq-demo 101\n";
        assert_eq!(step_statuses(demo_failed, 101, true), Steps::DemoFailed(101));
        let sched_failed = "ok\nMQ_DEMO_STEP_FAILED mq-bench-sched 2\n";
        assert_eq!(step_statuses(sched_failed, 2, true), ok(Some(2), None));
        let modes_failed = "ok\nMQ_DEMO_STEP_FAILED mq-bench-modes 4\n";
        assert_eq!(step_statuses(modes_failed, 4, true), ok(Some(0), Some(4)));
        // A bench marker without the bench steps, or no marker at all: no guessing.
        assert_eq!(step_statuses(sched_failed, 2, false), Steps::Unknown(2));
        assert_eq!(step_statuses(modes_failed, 4, false), Steps::Unknown(4));
        assert_eq!(step_statuses("killed\n", 137, true), Steps::Unknown(137));
        assert_eq!(
            step_statuses("MQ_DEMO_STEP_FAILED mq-demo x\n", 1, true),
            Steps::Unknown(1)
        );
    }

    /// Runs the real script with `sh` and stand-ins for the three programs that exit with
    /// `demo`, `sched` and `modes`; returns what `step_statuses` makes of it and the output.
    fn run_script(name: &str, demo: i32, sched: i32, modes: i32) -> (Steps, String) {
        let dir = std::env::temp_dir().join(format!("xtask-demo-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (program, status) in [
            ("mq-demo", demo),
            ("mq-bench-sched", sched),
            ("mq-bench-modes", modes),
        ] {
            let path = dir.join(program);
            std::fs::write(
                &path,
                format!("#!/bin/sh\necho \"{program} $*\"\nexit {status}\n"),
            )
            .unwrap();
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default());
        let out = std::process::Command::new("sh")
            .args(["-c", &guest_script(&steps(true, true, Path::new("/rel")))])
            .env("PATH", path)
            .output()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (step_statuses(&text, out.status.code().unwrap(), true), text)
    }

    #[test]
    fn script_under_sh_stops_at_the_first_failure() {
        let ok = |sched, modes| Steps::DemoOk { sched, modes };
        let (steps, out) = run_script("ok", 0, 0, 0);
        assert_eq!(steps, ok(Some(0), Some(0)));
        assert!(
            out.contains("mq-demo \n")
                && out.contains("mq-bench-sched --quick --rounds 0\n")
                && out.contains(
                    "mq-bench-modes --quick --loads 10,50 --with-scheduler /rel/scx_microquanta \
                     --json /tmp/mq-bench-modes.json\n"
                ),
            "{out}"
        );

        let (steps, out) = run_script("demo", 3, 0, 0);
        assert_eq!(steps, Steps::DemoFailed(3));
        assert!(!out.contains("mq-bench-sched --quick"), "{out}");

        let (steps, out) = run_script("sched", 0, 5, 0);
        assert_eq!(steps, ok(Some(5), None));
        assert!(!out.contains("mq-bench-modes --quick"), "{out}");

        // The report line is not printed for a failed run; the marker names the program.
        let (steps, out) = run_script("modes", 0, 0, 6);
        assert_eq!(steps, ok(Some(0), Some(6)));
        assert!(!out.contains("MQ_BENCH_MODES_JSON"), "{out}");
    }
}
