//! `cargo xtask bench sched`: boots the sched_ext kernel, runs `mq-bench-sched` (experiments/)
//! and turns its last line, `MQ_BENCH_SCHED_JSON {...}`, into `target/experiments/sched/`:
//! `summary.json` (the guest's report plus the accelerator it ran under), `summary.md`, and
//! the plots `latency.svg` and `conformance.svg`. [`record`] does that from the guest's
//! output, for this command and for `cargo xtask demo`, which runs `mq-bench-sched --quick`
//! in the same boot as `mq-demo`.
//!
//! The guest program and this command are built from different crates (and licences); the
//! JSON between them has one schema, `mq_report::sched::Report`, which both use. It is
//! checked key by key here as well, so that a report missing something names every missing
//! key at once and fails loudly instead of producing a table of dashes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use mq_report::sched::{Report, DEADLINE, EEVDF, EEVDF_REPEAT, FIFO, MICROQUANTA};
use mq_report::{LatencySummary, Tagged};
use serde::Deserialize;
use serde_json::Value;

use super::two_runs::{self, Program};
use super::{plot, report};
use crate::accel::{AccelChoice, GuestClock};
use crate::{sys, vm, Ctx};

/// The guest program; it starts and stops `scx_microquanta` itself.
pub const GUEST_PROGRAM: &str = Report::TAG.program;
const PROGRAM: Program = Program {
    report: Report::TAG,
    bench: "sched",
    vm_args: &[],
};
/// The VM every published number comes from (of `bench modes` and `bench pony` too):
/// changing it changes the numbers.
pub const CPUS: u32 = 2;
pub const MEM_MIB: u32 = 2048;

/// The classes compared, in table order. MicroQuanta is last: the ratios divide by it.
/// EEVDF measured again at the end of the latency phase ([`EEVDF_REPEAT`]) is optional.
pub const CLASSES: [&str; 4] = [EEVDF, FIFO, DEADLINE, MICROQUANTA];

/// Options of `cargo xtask bench sched`.
#[derive(Debug, clap::Args)]
pub struct SchedArgs {
    /// Kernel image (bzImage) for the VM; default: $MQ_KERNEL, the cache, or a download.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// How qemu runs the VM.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    /// Run mq-bench-sched on this host (needs root and a host kernel with sched_ext).
    #[arg(long)]
    pub native: bool,
    /// Fewer samples and 2 s conformance windows instead of 5 s (passed to mq-bench-sched).
    #[arg(long)]
    pub quick: bool,
    /// Wakeups per class and cyclictest loops [mq-bench-sched's default: 2000, 400 with --quick].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(10..))]
    pub samples: Option<u64>,
    /// Seconds before the VM is killed.
    #[arg(long = "timeout", value_name = "SECS", default_value_t = 1800)]
    pub timeout_secs: u64,
    /// Virtual CPUs of the guest (2 is the shape every published number comes from; 4 and 8
    /// measure the scheduler at more CPUs, slower under TCG).
    #[arg(long, default_value_t = CPUS)]
    pub cpus: u32,
    /// Interleaved rounds of the demo's workload [mq-bench-sched's default: 8, 4 with --quick].
    #[arg(long, value_name = "N")]
    pub rounds: Option<usize>,
    /// What the guest's clocks count under TCG: `instructions` times the enforcement path
    /// (overrun, throttle-to-preempt) and the wakeup path by their length, blind to the host
    /// (docs/MICROQUANTA.md, "An instruction clock"); use it with `--cpus 1`.
    #[arg(long, value_enum, default_value_t = GuestClock::Host)]
    pub clock: GuestClock,
}

pub fn run(ctx: &Ctx, args: &SchedArgs) -> Result<()> {
    let (release_dir, kernel) = vm::prepare_release(ctx, args.native, args.kernel.clone())?;
    let spec = vm::VmSpec {
        cpus: args.cpus,
        mem_mib: MEM_MIB,
        accel: args.accel,
        timeout: Duration::from_secs(args.timeout_secs),
        kernel: &kernel,
        bin_dirs: vec![release_dir],
        extra_files: Vec::new(),
        env: vec![("RUST_BACKTRACE".into(), "1".into())],
        script: sys::quote_all(&with_rounds(guest_command(args.quick, args.samples), args.rounds)) + "\n",
        allow_log_patterns: Vec::new(),
        native: args.native,
        main_loop_fifo: true,
        clock: args.clock,
    };
    let outcome = vm::run(ctx, &spec)?;
    let mut machine = describe_machine(args.native, args.cpus, MEM_MIB);
    if outcome.clock == GuestClock::Instructions {
        machine.push_str(", guest clock 1 ns per instruction");
    }
    let recorded = record(
        &output_dir(ctx),
        &GuestRun {
            output: &outcome.output,
            exit_status: outcome.exit_status,
            accel: outcome.accel.to_string(),
            machine,
            host_steal: outcome.host_steal,
        },
    )?;
    two_runs::print_recorded(&recorded.markdown, &recorded.written);
    Ok(())
}

/// `target/experiments/sched/`, where [`record`] writes.
pub fn output_dir(ctx: &Ctx) -> PathBuf {
    ctx.ws.target_dir.join("experiments").join("sched")
}

/// One finished run of [`GUEST_PROGRAM`], as the VM (or the host) reported it.
#[derive(Debug, Clone)]
pub struct GuestRun<'a> {
    /// Everything the guest printed; the report is its last `MQ_BENCH_SCHED_JSON ` line.
    pub output: &'a str,
    /// [`GUEST_PROGRAM`]'s exit status.
    pub exit_status: i32,
    /// `tcg`, `kvm` or `native`.
    pub accel: String,
    /// What it ran on ([`describe_machine`]).
    pub machine: String,
    /// The host's steal share (0-1) over the run ([`vm::VmOutcome::host_steal`]).
    pub host_steal: Option<f64>,
}

/// What [`record`] wrote and what to print.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `summary.md` in full.
    pub markdown: String,
    /// Its latency and conformance sections: the numbers a reader looks at first.
    pub headline: String,
    /// The files written, `summary.json` first and the guest's log last.
    pub written: Vec<PathBuf>,
}

/// Turns a run of [`GUEST_PROGRAM`] into `dir`: `guest-output.log` (always, even when the
/// run failed: then it is the only record), and for a run that succeeded with a complete
/// report `summary.json`, `summary.md`, `latency.svg` and `conformance.svg`.
/// `cargo xtask bench sched` and `cargo xtask demo` both report through this.
pub fn record(dir: &Path, run: &GuestRun) -> Result<Recorded> {
    let mut json = two_runs::read_guest_run(PROGRAM, dir, run.output, run.exit_status, run.machine.clone())?;
    let log_path = two_runs::guest_log(dir);
    json["accel"] = Value::String(run.accel.clone());
    if let Some(share) = run.host_steal {
        json["host_steal_percent"] = serde_json::json!(share * 100.0);
    }
    validate(&json).with_context(|| format!("guest output: {}", log_path.display()))?;
    let summary: Summary =
        serde_json::from_value(json.clone()).with_context(|| format!("reading {GUEST_PROGRAM}'s report"))?;

    let markdown = report::markdown(&summary);
    let [json_path, md_path] = two_runs::write_summary(dir, &json, &markdown)?;
    let latency_svg = dir.join("latency.svg");
    plot::latency(&summary, &latency_svg)?;
    let conformance_svg = dir.join("conformance.svg");
    plot::conformance(&summary, &conformance_svg)?;
    let mut written = vec![json_path, md_path, latency_svg, conformance_svg];
    if let Some(rounds) = &summary.report.rounds {
        let rounds_svg = dir.join("rounds.svg");
        plot::rounds(rounds, &summary.accel, &rounds_svg)?;
        written.push(rounds_svg);
    }
    written.push(log_path);
    Ok(Recorded {
        markdown,
        headline: report::headline(&summary),
        written,
    })
}

/// `argv` with `--rounds N` when `rounds` is given.
fn with_rounds(mut argv: Vec<String>, rounds: Option<usize>) -> Vec<String> {
    if let Some(n) = rounds {
        argv.extend(["--rounds".into(), n.to_string()]);
    }
    argv
}

/// `mq-bench-sched` with the options we pass through.
pub fn guest_command(quick: bool, samples: Option<u64>) -> Vec<String> {
    let mut argv = vec![GUEST_PROGRAM.to_string()];
    if quick {
        argv.push("--quick".into());
    }
    if let Some(samples) = samples {
        argv.extend(["--samples".into(), samples.to_string()]);
    }
    argv
}

/// What the numbers were measured on, for the report's first line: the guest only knows
/// its own (virtual) CPUs, not the host's, which is what TCG numbers depend on.
pub fn describe_machine(native: bool, cpus: u32, mem_mib: u32) -> String {
    let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| cpu_model(&info))
        .unwrap_or_else(|| "unknown CPU".into());
    if native {
        format!("this host: {model} ({host_cpus} CPUs)")
    } else {
        format!("qemu VM ({cpus} vCPUs, {mem_mib} MiB) on a host with {model} ({host_cpus} CPUs)")
    }
}

/// The first `model name` of a `/proc/cpuinfo`.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_string())
    })
}

/// What a value at a path must be.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Str,
    Uint,
    Num,
    NumOrNull,
}

impl Kind {
    fn accepts(self, v: &Value) -> bool {
        match self {
            Kind::Str => v.is_string(),
            Kind::Uint => v.is_u64(),
            Kind::Num => v.is_number(),
            Kind::NumOrNull => v.is_number() || v.is_null(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Str => "a string",
            Kind::Uint => "an unsigned integer",
            Kind::Num => "a number",
            Kind::NumOrNull => "a number or null",
        }
    }
}

/// The value at a dotted path (`conformance.0.mq_share`); `None` if any step is missing.
fn lookup<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(root, |v, key| match key.parse::<usize>() {
            Ok(i) => v.get(i),
            Err(_) => v.get(key),
        })
}

/// Checks that the report has every key the summary promises, reporting all problems at
/// once (a renamed field usually breaks several paths, and one run is minutes of TCG).
pub fn validate(json: &Value) -> Result<()> {
    let mut required: Vec<(String, Kind)> = vec![
        ("kernel".into(), Kind::Str),
        ("accel".into(), Kind::Str),
        ("cpus".into(), Kind::Uint),
        ("max_overrun_us".into(), Kind::NumOrNull),
    ];
    for class in CLASSES {
        for field in ["p50", "p99", "max"] {
            required.push((format!("wakeup_latency_us.{class}.{field}"), Kind::Num));
        }
        required.push((format!("wakeup_latency_us.{class}.samples"), Kind::Uint));
    }
    let mut problems = Vec::new();
    match json.get("conformance").and_then(Value::as_array) {
        None => problems.push("conformance: missing or not an array".to_string()),
        Some(entries) if entries.is_empty() => problems.push("conformance: empty".to_string()),
        Some(entries) => {
            for i in 0..entries.len() {
                for (field, kind) in [
                    ("period_us", Kind::Uint),
                    ("runtime_us", Kind::Uint),
                    ("mq_share", Kind::Num),
                    ("other_share", Kind::Num),
                ] {
                    required.push((format!("conformance.{i}.{field}"), kind));
                }
            }
        }
    }
    for (path, kind) in &required {
        match lookup(json, path) {
            None => problems.push(format!("{path}: missing")),
            Some(v) if !kind.accepts(v) => {
                problems.push(format!("{path}: expected {}, got {v}", kind.name()))
            }
            Some(_) => {}
        }
    }
    if !problems.is_empty() {
        bail!(
            "{GUEST_PROGRAM}'s report is incomplete (schema: experiments/report/src/sched.rs): {}",
            problems.join("; ")
        );
    }
    Ok(())
}

/// What the summary and plots read: the guest's report, and what the host adds to it in
/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Summary {
    #[serde(flatten)]
    pub report: Report,
    /// How qemu runs the guest: `tcg`, `kvm` or `native`.
    pub accel: String,
    /// What the guest runs on ([`describe_machine`]).
    pub machine: Option<String>,
    /// The host's steal time over the run, % of its CPU time; absent where it was not read.
    #[serde(default)]
    pub host_steal_percent: Option<f64>,
}

impl Summary {
    /// Latency rows in table order: the four classes, then the EEVDF repeat if measured.
    pub fn latency_rows(&self) -> Vec<(&'static str, Option<&LatencySummary>)> {
        let latency = &self.report.wakeup_latency_us;
        CLASSES
            .iter()
            .chain([&EEVDF_REPEAT])
            .filter(|c| **c != EEVDF_REPEAT || latency.contains_key(**c))
            .map(|c| (*c, latency.get(*c)))
            .collect()
    }

    /// `class` p99 / MicroQuanta p99: above 1, MicroQuanta woke sooner.
    pub fn p99_ratio(&self, class: &str) -> Option<f64> {
        let latency = &self.report.wakeup_latency_us;
        let base = latency.get(class)?.p99;
        let mq = latency.get(MICROQUANTA)?.p99;
        (mq > 0.0).then(|| base / mq)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A real-shaped guest output: progress lines, the table on stderr, then the JSON.
    pub const OUTPUT: &str = concat!(
        "mq-bench-sched: scheduler /work/main/target/release/scx_microquanta\n",
        "wakeup latency (µs), 4 hogs ...\n",
        "MQ_BENCH_SCHED_JSON {\"kernel\":\"6.12.38+deb13-cloud-amd64\",\"cpus\":2,\"quick\":true,",
        "\"hogs\":4,\"wake_period_us\":1000,\"scheduler\":{\"period_us\":40,\"runtime_us\":20},",
        "\"wakeup_latency_us\":{",
        "\"deadline\":{\"p50\":60.0,\"p90\":90.0,\"p99\":150.0,\"max\":400.0,\"samples\":400},",
        "\"eevdf\":{\"p50\":900.0,\"p90\":3000.0,\"p99\":8000.0,\"max\":12000.0,\"samples\":400},",
        "\"eevdf_repeat\":{\"p50\":950.0,\"p90\":3100.0,\"p99\":8400.0,\"max\":13000.0,\"samples\":400},",
        "\"fifo\":{\"p50\":40.0,\"p90\":70.0,\"p99\":100.0,\"max\":300.0,\"samples\":400},",
        "\"microquanta\":{\"p50\":50.0,\"p90\":80.0,\"p99\":200.0,\"max\":500.0,\"samples\":400}},",
        "\"ratios\":{\"eevdf_p99_over_mq_p99\":40.0},\"deadline_period_min_lowered\":true,",
        "\"conformance\":[",
        "{\"period_us\":40,\"runtime_us\":20,\"mq_share\":0.52,\"other_share\":0.47,",
        "\"expected_mq_share\":0.5,\"alone_share\":0.99,\"other_max_gap_us\":800.0,",
        "\"mq_max_gap_us\":900.0,\"sched_overrun_max_us\":12.0,\"window_ms\":2000,\"cpu\":1},",
        "{\"period_us\":1000,\"runtime_us\":200,\"mq_share\":0.19,\"other_share\":0.8,",
        "\"expected_mq_share\":0.2,\"alone_share\":null,\"other_max_gap_us\":1200.0,",
        "\"mq_max_gap_us\":4000.0,\"sched_overrun_max_us\":null,\"window_ms\":2000,\"cpu\":1}],",
        "\"cyclictest_us\":{",
        "\"fifo\":{\"min\":5.0,\"avg\":30.5,\"max\":700.0,\"p50\":20.0,\"p90\":60.0,\"p99\":300.0,",
        "\"cycles\":400,\"overflows\":0},",
        "\"microquanta\":{\"min\":6.0,\"avg\":40.0,\"max\":150000.0,\"p50\":25.0,\"p90\":70.0,",
        "\"p99\":null,\"cycles\":400,\"overflows\":3}},",
        "\"max_overrun_us\":12.0,\"note\":\"TCG: only ratios within one boot are meaningful\"}\n",
    );

    /// The sample as `run` sees it after adding what the host knows.
    pub fn sample_json() -> Value {
        let mut v = mq_report::extract_value(PROGRAM.report, OUTPUT).unwrap();
        v["accel"] = "tcg".into();
        v["machine"] = "qemu VM (2 vCPUs, 2048 MiB) on a host with Test CPU (2 CPUs)".into();
        v
    }

    pub fn sample() -> Summary {
        let v = sample_json();
        validate(&v).unwrap();
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_sample_is_valid_and_typed() {
        let s = sample();
        assert_eq!(s.report.cpus, 2);
        assert_eq!(s.accel, "tcg");
        assert_eq!(s.report.wakeup_latency_us["fifo"].p99, 100.0);
        assert_eq!(s.report.conformance.len(), 2);
        assert_eq!(s.report.conformance[1].alone_share, None);
        assert_eq!(s.report.cyclictest_us["microquanta"].p99, None);
        assert_eq!(s.report.max_overrun_us, Some(12.0));
        assert_eq!(s.p99_ratio("eevdf"), Some(40.0));
        let rows: Vec<_> = s.latency_rows().iter().map(|r| r.0).collect();
        assert_eq!(rows, ["eevdf", "fifo", "deadline", "microquanta", "eevdf_repeat"]);
    }

    #[test]
    fn validation_names_every_missing_or_mistyped_key() {
        let mut v = sample_json();
        v["wakeup_latency_us"].as_object_mut().unwrap().remove("deadline");
        v["wakeup_latency_us"]["fifo"]["p99"] = "fast".into();
        v["conformance"][1].as_object_mut().unwrap().remove("other_share");
        v.as_object_mut().unwrap().remove("max_overrun_us");
        let err = format!("{:#}", validate(&v).unwrap_err());
        for expected in [
            "wakeup_latency_us.deadline.p50: missing",
            "wakeup_latency_us.deadline.samples: missing",
            "wakeup_latency_us.fifo.p99: expected a number, got \"fast\"",
            "conformance.1.other_share: missing",
            "max_overrun_us: missing",
        ] {
            assert!(err.contains(expected), "{expected:?} not in {err}");
        }
        assert!(!err.contains("eevdf.p50"), "{err}");
    }

    #[test]
    fn null_overrun_is_fine_but_empty_conformance_is_not() {
        let mut v = sample_json();
        v["max_overrun_us"] = Value::Null;
        validate(&v).unwrap();
        v["conformance"] = Value::Array(Vec::new());
        assert!(format!("{:#}", validate(&v).unwrap_err()).contains("conformance: empty"));
        v.as_object_mut().unwrap().remove("conformance");
        assert!(validate(&v).is_err());
    }

    #[test]
    fn options_are_passed_to_the_guest() {
        assert_eq!(
            guest_command(true, Some(50)),
            ["mq-bench-sched", "--quick", "--samples", "50"]
        );
        assert_eq!(guest_command(false, None), ["mq-bench-sched"]);
        assert_eq!(
            with_rounds(guest_command(true, None), Some(6)),
            ["mq-bench-sched", "--quick", "--rounds", "6"]
        );
        assert_eq!(
            with_rounds(guest_command(true, None), None),
            ["mq-bench-sched", "--quick"]
        );
        assert_eq!(
            sys::quote_all(&guest_command(true, None)),
            "mq-bench-sched --quick"
        );
    }

    #[test]
    fn machine_names_the_vm_it_was_given() {
        let vm = describe_machine(false, 4, 1024);
        assert!(
            vm.starts_with("qemu VM (4 vCPUs, 1024 MiB) on a host with "),
            "{vm}"
        );
        assert!(describe_machine(true, 4, 1024).starts_with("this host: "));
    }

    /// A fresh, empty directory for one test; removed by the test when it passes.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-record-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn guest_run(output: &str, exit_status: i32) -> GuestRun<'_> {
        GuestRun {
            output,
            exit_status,
            accel: "tcg".into(),
            machine: "qemu VM (2 vCPUs, 2048 MiB) on a host with Test CPU (2 CPUs)".into(),
            host_steal: Some(0.034),
        }
    }

    /// The rounds of a report: two rounds, the second with one stalled class wakeup.
    fn rounds_json() -> Value {
        let row = |round: usize, policy: &str, p99: f64, stalled: u64, clean: f64| {
            serde_json::json!({"round": round, "policy": policy, "p50": p99 / 4.0, "p99": p99,
                "max": p99 * 2.0, "samples": 400, "stalled_samples": stalled,
                "p99_without_stalls": clean})
        };
        let spread = |median: f64, min: f64, max: f64| serde_json::json!({"median": median, "min": min, "max": max, "rounds": 2});
        let lat = serde_json::json!({"p50": 1.0, "p90": 2.0, "p99": 3.0, "max": 4.0, "samples": 800});
        serde_json::json!({"work_us": 300, "wake_period_us": 1000, "hogs": 8, "samples": 400,
            "period_us": 1000, "runtime_us": 500,
            "wakeup_latency_us": {"eevdf": lat, "fifo": lat, "normal": lat, "microquanta": lat,
                "fifo-scx": lat},
            "rows": [row(0, "eevdf", 8000.0, 0, 8000.0), row(0, "fifo", 300.0, 0, 300.0),
                     row(0, "normal", 6000.0, 0, 6000.0), row(0, "microquanta", 400.0, 0, 400.0),
                     row(0, "fifo-scx", 500.0, 0, 500.0),
                     row(1, "eevdf", 9000.0, 0, 9000.0), row(1, "fifo", 350.0, 0, 350.0),
                     row(1, "normal", 7000.0, 0, 7000.0), row(1, "microquanta", 3000.0, 1, 450.0),
                     row(1, "fifo-scx", 3300.0, 0, 3300.0)],
            "p99_ratio_eevdf_over_microquanta": spread(11.5, 3.0, 20.0),
            "p99_ratio_fifo_over_microquanta": spread(0.43, 0.12, 0.75),
            "p99_ratio_fifo_scx_over_microquanta": spread(1.18, 1.10, 1.25),
            "stalls": {"rule": "a probe rule", "probe_interval_us": 1500, "threshold_us": 1000,
                "probe": {"p50": 40.0, "p90": 80.0, "p99": 250.0, "max": 3100.0, "samples": 9000},
                "events": 1, "longest_us": 3100.0,
                "listed": [{"round": 1, "policy": "microquanta", "at_ms": 2500.0, "late_us": 3100.0}],
                "p99_ratio_eevdf_over_microquanta_without_stalls": spread(20.0, 20.0, 20.0),
                "p99_ratio_fifo_over_microquanta_without_stalls": spread(0.76, 0.75, 0.78)},
            "scheduler_cycle_ms": 1800.0,
            "warmup": {"wakeups_per_load": 20, "first_us": [2372.0, 1516.0],
                "rest_us": {"p50": 140.0, "p90": 200.0, "p99": 310.0, "max": 320.0, "samples": 38}}})
    }

    #[test]
    fn a_report_with_rounds_gets_their_table_spread_stalls_and_plot() {
        let dir = scratch("rounds");
        let mut report = mq_report::extract_value(PROGRAM.report, OUTPUT).unwrap();
        report["rounds"] = rounds_json();
        report["conformance"][0]["enforcement"] = serde_json::json!({"overrun_p50_us": 20.0,
            "overrun_p99_us": 60.0, "overrun_max_us": 4100.0, "yields": 900,
            "yield_p50_us": 15.0, "yield_p99_us": 45.0, "yield_max_us": 4000.0});
        report["conformance"][1]["enforcement"] = serde_json::json!({"overrun_p50_us": 300.0,
            "overrun_p99_us": 900.0, "overrun_max_us": 3900.0, "yields": 4,
            "yield_p50_us": 3800.0, "yield_p99_us": 3900.0, "yield_max_us": 3900.0});
        let output = format!("{}{report}\n", PROGRAM.report.prefix);
        let rec = record(&dir, &guest_run(&output, 0)).unwrap();
        let names: Vec<_> = rec
            .written
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "summary.json",
                "summary.md",
                "latency.svg",
                "conformance.svg",
                "rounds.svg",
                "guest-output.log"
            ]
        );
        let svg = std::fs::read_to_string(dir.join("rounds.svg")).unwrap();
        assert!(
            svg.contains("round 2")
                && svg.contains("SCHED_FIFO / MicroQuanta")
                && svg.contains("SCHED_FIFO, scheduler loaded / MicroQuanta"),
            "{svg}"
        );
        let md = &rec.headline;
        assert!(md.contains("## Interleaved rounds (the demo's workload)"), "{md}");
        assert!(
            md.contains("| 2 | 9000.0 | 350.0 | 7000.0 | 3000.0 | 3300.0 | 3.00 | 0.12 | 1.10 | 1 |"),
            "{md}"
        );
        assert!(
            md.contains(
                "p99 ratio SCHED_FIFO with the scheduler loaded / MicroQuanta: median 1.18 \
                 (min 1.10, max 1.25; 2 rounds)"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "p99 ratio EEVDF / MicroQuanta: median 11.50 (min 3.00, max 20.00; 2 rounds); \
                 without stalled wakeups: median 20.00 (min 20.00, max 20.00; 2 rounds)."
            ),
            "{md}"
        );
        assert!(
            md.contains("Stalls: 1 during the measurements, longest 3100.0 µs"),
            "{md}"
        );
        assert!(md.contains("load + unload 1800 ms"), "{md}");
        assert!(
            md.contains(
                "Warm-up: after each load a MicroQuanta thread woke 20 times before the round \
                 measured (in no figure above): its first wakeup per load 2372.0, 1516.0 µs, the \
                 rest p50 140.0 / p99 310.0 / max 320.0 µs."
            ),
            "{md}"
        );
        assert!(rec.markdown.contains("[rounds.svg](rounds.svg)"));
        // Enforcement per pair, with the overrun p99 checked against one period.
        assert!(
            md.contains("| 40 | 20 | 20.0 | 60.0 | 4100.0 | no | 900 | 15.0 | 45.0 | 4000.0 |"),
            "{md}"
        );
        assert!(
            md.contains("| 1000 | 200 | 300.0 | 900.0 | 3900.0 | yes | 4 |"),
            "{md}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn record_writes_every_file_and_returns_the_tables() {
        let dir = scratch("ok");
        // The demo's boot prints mq-demo's output first; only the bench's line counts.
        let output = format!("MQ_DEMO_JSON {{\"cpus\":2}}\n{OUTPUT}");
        let rec = record(&dir.join("sched"), &guest_run(&output, 0)).unwrap();
        let names: Vec<_> = rec
            .written
            .iter()
            .map(|p| p.strip_prefix(dir.join("sched")).unwrap().to_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "summary.json",
                "summary.md",
                "latency.svg",
                "conformance.svg",
                "guest-output.log"
            ]
        );
        let read = |name: &str| std::fs::read_to_string(dir.join("sched").join(name)).unwrap();
        assert_eq!(read("guest-output.log"), output);
        assert_eq!(read("summary.md"), rec.markdown);
        let mut json: Value = serde_json::from_str(&read("summary.json")).unwrap();
        // The host's steal over the run (guest_run's 3.4%) is kept with the guest's report.
        let steal = json
            .as_object_mut()
            .unwrap()
            .remove("host_steal_percent")
            .unwrap();
        assert!((steal.as_f64().unwrap() - 3.4).abs() < 1e-9, "{steal}");
        assert_eq!(json, sample_json());
        assert!(rec
            .markdown
            .contains("Host steal during the run: 3.4% of CPU time"));
        assert!(read("latency.svg").starts_with("<svg"));
        assert!(read("conformance.svg").starts_with("<svg"));
        // The headline is the summary's latency and conformance sections, verbatim.
        assert!(rec.markdown.contains(&rec.headline));
        assert!(rec.headline.starts_with("## Wakeup latency"));
        assert!(rec.headline.contains("| microquanta | 50.0 |"));
        assert!(rec.headline.contains("| 40 | 20 | 50.0 %"));
        assert!(!rec.headline.contains("cyclictest"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn record_keeps_the_log_of_a_failed_or_malformed_run() {
        let dir = scratch("fail");
        let err = format!("{:#}", record(&dir, &guest_run("boom\n", 3)).unwrap_err());
        assert!(err.contains("mq-bench-sched failed (exit status 3)"), "{err}");
        assert!(err.contains("guest-output.log"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.join("guest-output.log")).unwrap(),
            "boom\n"
        );
        assert!(!dir.join("summary.json").exists());

        let truncated = OUTPUT.replace("\"max_overrun_us\":12.0,", "");
        let err = format!("{:#}", record(&dir, &guest_run(&truncated, 0)).unwrap_err());
        assert!(err.contains("max_overrun_us: missing"), "{err}");
        assert!(!dir.join("summary.json").exists());
        let err = format!("{:#}", record(&dir, &guest_run("no report\n", 0)).unwrap_err());
        assert!(err.contains("printed no `MQ_BENCH_SCHED_JSON` line"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cpu_model_is_the_first_model_name() {
        let info = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nprocessor\t: 1\nmodel name\t: other\n";
        assert_eq!(cpu_model(info).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(cpu_model("flags: x\n"), None);
    }
}
