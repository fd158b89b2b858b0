//! `cargo xtask demo`: the headline measurement. Boots the sched_ext kernel, runs `mq-demo`
//! (experiments/), and turns its final `MQ_DEMO_JSON {...}` line into
//! `target/demo/summary.json` plus a table of wakeup latencies under EEVDF, as a normal task
//! under microquanta, and as a microquanta engine. In the same boot it then runs
//! `mq-bench-sched --quick` and reports it like `cargo xtask bench sched` does (same code:
//! [`bench::sched::record`]), printing its latency and conformance tables; `--no-bench`
//! skips that.
//!
//! Under TCG the guest's clock runs on an emulated CPU, so absolute microseconds are not
//! comparable with real hardware; ratios between policies measured in the same boot are.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::accel::AccelChoice;
use crate::bench::{self, sched};
use crate::{sys, vm, Ctx};

const JSON_TAG: &str = "MQ_DEMO_JSON ";
/// The demo's guest program.
const DEMO_PROGRAM: &str = "mq-demo";
/// Printed by the guest script when a step fails: `MQ_DEMO_STEP_FAILED <program> <status>`.
const STEP_FAILED_TAG: &str = "MQ_DEMO_STEP_FAILED ";
/// Table rows, in order.
const POLICIES: &[&str] = &["eevdf", "normal", "microquanta"];

/// Options of `cargo xtask demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Kernel image (bzImage) for the VM; default: $MQ_KERNEL, the cache, or a download.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// How qemu runs the VM.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    /// Virtual CPUs.
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// Seconds before the VM is killed.
    #[arg(long = "timeout", value_name = "SECS", default_value_t = 1200)]
    pub timeout_secs: u64,
    /// Run mq-demo on this host (needs root and a host kernel with sched_ext).
    #[arg(long)]
    pub native: bool,
    /// Only mq-demo: skip `mq-bench-sched --quick` and its files under target/experiments/sched.
    #[arg(long)]
    pub no_bench: bool,
}

pub fn run(ctx: &Ctx, args: &DemoArgs) -> Result<()> {
    let (release_dir, kernel) = vm::prepare_release(ctx, args.native, args.kernel.clone())?;
    let with_bench = !args.no_bench;
    let spec = vm::VmSpec {
        cpus: args.cpus,
        mem_mib: sched::MEM_MIB,
        accel: args.accel,
        timeout: Duration::from_secs(args.timeout_secs),
        kernel: &kernel,
        bin_dirs: vec![release_dir],
        extra_files: Vec::new(),
        env: vec![("RUST_BACKTRACE".into(), "1".into())],
        script: guest_script(with_bench),
        allow_log_patterns: Vec::new(),
        native: args.native,
    };
    let outcome = vm::run(ctx, &spec)?;
    let bench_status = match step_statuses(&outcome.output, outcome.exit_status, with_bench) {
        Steps::DemoFailed(status) => bail!(
            "{DEMO_PROGRAM} failed (exit status {status}); its output is above{}",
            if with_bench {
                "; the benchmark did not run"
            } else {
                ""
            }
        ),
        Steps::Unknown(status) => {
            bail!("the demo's guest script failed (exit status {status}) without saying which step")
        }
        Steps::DemoOk { bench } => bench,
    };

    let mut summary = extract_summary(&outcome.output)?;
    summary["accel"] = Value::String(outcome.accel.to_string());
    let dir = ctx.ws.target_dir.join("demo");
    std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
    let path = dir.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)? + "\n")
        .with_context(|| format!("{}", path.display()))?;
    println!();
    print!("{}", render_table(&summary));

    let mut written = vec![path];
    if let Some(exit_status) = bench_status {
        // Fails (after keeping the guest's log) when the benchmark failed or its report is
        // incomplete; mq-demo's summary is written already.
        let recorded = sched::record(
            &sched::output_dir(ctx),
            &sched::GuestRun {
                output: &outcome.output,
                exit_status,
                accel: outcome.accel.to_string(),
                machine: sched::describe_machine(args.native, args.cpus, sched::MEM_MIB),
            },
        )
        .with_context(|| {
            format!(
                "benchmark `{}` (run after {DEMO_PROGRAM}, whose summary is in {})",
                bench_step(),
                written[0].display()
            )
        })?;
        println!();
        println!(
            "scheduler benchmark, same boot (`{}`; cyclictest and plots: files below)",
            bench_step()
        );
        println!();
        print!("{}", recorded.headline);
        written.extend(recorded.written);
    }
    if bench_status.is_none() {
        println!(); // the benchmark's tables end with a blank line, the demo's does not
    }
    print!("{}", closing(&written, &outcome.accel.to_string()));
    Ok(())
}

/// `mq-bench-sched --quick`: the benchmark's command line in the demo.
fn bench_step() -> String {
    sys::quote_all(&sched::guest_command(true, None))
}

/// The guest script: `mq-demo`, then (`with_bench`) the quick benchmark. The first failure
/// stops it, after a tagged line saying which program failed with which status.
fn guest_script(with_bench: bool) -> String {
    let mut steps = vec![DEMO_PROGRAM.to_string()];
    if with_bench {
        steps.push(bench_step());
    }
    let total = steps.len();
    let mut script = String::new();
    for (i, step) in steps.iter().enumerate() {
        let program = step.split(' ').next().unwrap_or(step);
        if total > 1 {
            script.push_str(&format!(
                "echo {}\n",
                sys::quote(&format!("== demo step {}/{total}: {step}", i + 1))
            ));
        }
        script.push_str(&format!(
            "{step} || {{ status=$?; echo \"{STEP_FAILED_TAG}{program} $status\"; exit $status; }}\n"
        ));
    }
    script
}

/// How far the guest script got.
#[derive(Debug, PartialEq, Eq)]
enum Steps {
    /// mq-demo succeeded; `bench` is the benchmark's exit status if it was run.
    DemoOk { bench: Option<i32> },
    /// mq-demo failed with this status (the benchmark did not run).
    DemoFailed(i32),
    /// The script failed with this status but printed no step marker.
    Unknown(i32),
}

/// Reads the script's exit status and its `MQ_DEMO_STEP_FAILED` line (the last one).
fn step_statuses(output: &str, exit_status: i32, with_bench: bool) -> Steps {
    let bench_ok = with_bench.then_some(0);
    if exit_status == 0 {
        return Steps::DemoOk { bench: bench_ok };
    }
    let failed = output.lines().rev().find_map(|l| {
        let (program, status) = l.trim().strip_prefix(STEP_FAILED_TAG)?.split_once(' ')?;
        Some((program.to_string(), status.trim().parse::<i32>().ok()?))
    });
    match failed {
        Some((program, status)) if program == DEMO_PROGRAM => Steps::DemoFailed(status),
        Some((program, status)) if with_bench && program == sched::GUEST_PROGRAM => {
            Steps::DemoOk { bench: Some(status) }
        }
        _ => Steps::Unknown(exit_status),
    }
}

/// The end of the demo's output: the files written, and what the numbers can be used for.
fn closing(written: &[PathBuf], accel: &str) -> String {
    let mut out = String::new();
    for path in written {
        out.push_str(&format!("written: {}\n", path.display()));
    }
    let lead = if accel == "tcg" {
        "note: this run used TCG. "
    } else {
        "note: "
    };
    out.push_str(&format!("{lead}{}\n", bench::TCG_NOTE));
    out
}

/// The JSON object on the last `MQ_DEMO_JSON ` line.
pub fn extract_summary(output: &str) -> Result<Value> {
    let line = output
        .lines()
        .rev()
        .find_map(|l| l.trim_start().strip_prefix(JSON_TAG))
        .with_context(|| format!("mq-demo printed no `{}` line", JSON_TAG.trim()))?;
    let value: Value = serde_json::from_str(line.trim()).context("parsing mq-demo's JSON")?;
    if !value.is_object() {
        bail!("mq-demo's summary is not a JSON object: {line}");
    }
    Ok(value)
}

/// The human-readable table of `summary`, missing numbers shown as `-`.
pub fn render_table(summary: &Value) -> String {
    let lat = &summary["wakeup_latency_us"];
    let num = |policy: &str, field: &str| lat[policy][field].as_f64();
    let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    let mut out = format!(
        "wakeup latency, µs (kernel {}, {} CPUs, accel {})\n",
        summary["kernel"].as_str().unwrap_or("?"),
        summary["cpus"].as_u64().map_or("?".into(), |c| c.to_string()),
        summary["accel"].as_str().unwrap_or("?"),
    );
    out.push_str(&format!(
        "{:<12} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
        "policy", "p50", "p90", "p99", "max", "samples"
    ));
    for policy in POLICIES {
        out.push_str(&format!(
            "{:<12} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
            policy,
            cell(num(policy, "p50")),
            cell(num(policy, "p90")),
            cell(num(policy, "p99")),
            cell(num(policy, "max")),
            lat[policy]["samples"]
                .as_u64()
                .map_or("-".into(), |s| s.to_string()),
        ));
    }
    let ratio = |a: &str| match (num(a, "p99"), num("microquanta", "p99")) {
        (Some(a), Some(mq)) if mq > 0.0 => format!("{:.1}x", a / mq),
        _ => "-".into(),
    };
    out.push_str(&format!(
        "p99 ratio normal/microquanta: {}   eevdf/microquanta: {}\n",
        ratio("normal"),
        ratio("eevdf")
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "progress: eevdf 10/10\n\
        MQ_DEMO_JSON {\"kernel\":\"7.3.4+deb13-cloud-amd64\",\"cpus\":2,\"wakeup_latency_us\":{\
        \"eevdf\":{\"p50\":900.0,\"p90\":3000.0,\"p99\":7000.0,\"max\":9000.0,\"samples\":1000},\
        \"normal\":{\"p50\":800.0,\"p90\":2500.0,\"p99\":6000.0,\"max\":8000.0,\"samples\":1000},\
        \"microquanta\":{\"p50\":50.0,\"p90\":100.0,\"p99\":200.0,\"max\":400.0,\"samples\":1000}}}\n\
        done\n";

    #[test]
    fn extracts_last_json_line() {
        let v = extract_summary(OUTPUT).unwrap();
        assert_eq!(v["cpus"], 2);
        assert_eq!(v["wakeup_latency_us"]["microquanta"]["p99"], 200.0);
        assert!(extract_summary("no summary here\n").is_err());
        assert!(extract_summary("MQ_DEMO_JSON {broken\n").is_err());
    }

    #[test]
    fn table_has_rows_and_ratios() {
        let mut v = extract_summary(OUTPUT).unwrap();
        v["accel"] = "tcg".into();
        let table = render_table(&v);
        let rows: Vec<&str> = table.lines().collect();
        assert!(rows[0].contains("accel tcg"));
        assert!(rows[2].starts_with("eevdf") && rows[2].contains("7000.0"));
        assert!(rows[4].starts_with("microquanta") && rows[4].contains("1000"));
        assert!(table.contains("normal/microquanta: 30.0x"));
        assert!(table.contains("eevdf/microquanta: 35.0x"));
        // The TCG note comes once, at the very end of the demo (`closing`).
        assert!(!table.contains("TCG"));
    }

    #[test]
    fn demo_json_is_found_among_the_benchmarks_output() {
        let output = format!(
            "{OUTPUT}== demo step 2/2: mq-bench-sched --quick\n\
             mq-bench-sched: latency: measuring eevdf ...\n\
             MQ_BENCH_SCHED_JSON {{\"cpus\":2}}\n"
        );
        assert_eq!(
            extract_summary(&output).unwrap()["wakeup_latency_us"]["eevdf"]["p99"],
            7000.0
        );
    }

    #[test]
    fn script_runs_the_demo_then_the_quick_benchmark() {
        let script = guest_script(true);
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(lines.len(), 4, "{script}");
        assert_eq!(lines[0], "echo '== demo step 1/2: mq-demo'");
        assert!(lines[1].starts_with("mq-demo || {"), "{script}");
        assert!(lines[3].starts_with("mq-bench-sched --quick || {"), "{script}");
        assert!(lines[3].contains("echo \"MQ_DEMO_STEP_FAILED mq-bench-sched $status\""));
        let alone = guest_script(false);
        assert_eq!(alone.lines().count(), 1, "{alone}");
        assert!(!alone.contains("mq-bench-sched"));
    }

    #[test]
    fn step_statuses_say_which_program_failed() {
        assert_eq!(step_statuses("x\n", 0, true), Steps::DemoOk { bench: Some(0) });
        assert_eq!(step_statuses("x\n", 0, false), Steps::DemoOk { bench: None });
        let demo_failed = "boom\nMQ_DEMO_STEP_FAILED mq-demo 101\n";
        assert_eq!(step_statuses(demo_failed, 101, true), Steps::DemoFailed(101));
        let bench_failed = "ok\nMQ_DEMO_STEP_FAILED mq-bench-sched 2\n";
        assert_eq!(
            step_statuses(bench_failed, 2, true),
            Steps::DemoOk { bench: Some(2) }
        );
        // A bench marker without a bench step, or no marker at all: no guessing.
        assert_eq!(step_statuses(bench_failed, 2, false), Steps::Unknown(2));
        assert_eq!(step_statuses("killed\n", 137, true), Steps::Unknown(137));
        assert_eq!(
            step_statuses("MQ_DEMO_STEP_FAILED mq-demo x\n", 1, true),
            Steps::Unknown(1)
        );
    }

    /// Runs the real script with `sh` and stand-ins for the two programs that exit with
    /// `demo` and `bench`; returns what `step_statuses` makes of it and the output.
    fn run_script(name: &str, demo: i32, bench: i32) -> (Steps, String) {
        let dir = std::env::temp_dir().join(format!("xtask-demo-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (program, status) in [("mq-demo", demo), ("mq-bench-sched", bench)] {
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
            .args(["-c", &guest_script(true)])
            .env("PATH", path)
            .output()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (step_statuses(&text, out.status.code().unwrap(), true), text)
    }

    #[test]
    fn script_under_sh_stops_at_the_first_failure() {
        let (steps, out) = run_script("ok", 0, 0);
        assert_eq!(steps, Steps::DemoOk { bench: Some(0) });
        assert!(
            out.contains("mq-demo \n") && out.contains("mq-bench-sched --quick\n"),
            "{out}"
        );

        let (steps, out) = run_script("demo", 3, 0);
        assert_eq!(steps, Steps::DemoFailed(3));
        assert!(!out.contains("mq-bench-sched --quick"), "{out}");

        let (steps, _) = run_script("bench", 0, 5);
        assert_eq!(steps, Steps::DemoOk { bench: Some(5) });
    }

    #[test]
    fn closing_lists_files_then_the_tcg_note() {
        let files = [
            PathBuf::from("/t/demo/summary.json"),
            PathBuf::from("/t/sched/summary.md"),
        ];
        let text = closing(&files, "tcg");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "written: /t/demo/summary.json");
        assert_eq!(lines[1], "written: /t/sched/summary.md");
        assert!(
            lines[2].starts_with("note: this run used TCG. Under TCG"),
            "{text}"
        );
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[2].contains("only ratios within one boot are meaningful"));
        let kvm = closing(&files[..1], "kvm");
        assert!(
            kvm.lines().last().unwrap().starts_with("note: Under TCG"),
            "{kvm}"
        );
    }

    #[test]
    fn missing_policy_shows_dashes() {
        let v: Value = serde_json::json!({"kernel": "k", "cpus": 2, "accel": "kvm",
            "wakeup_latency_us": {"eevdf": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "max": 4.0, "samples": 5}}});
        let table = render_table(&v);
        assert!(table.contains("microquanta           -"));
        assert!(table.contains("normal/microquanta: -"));
    }
}
