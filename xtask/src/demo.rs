//! `cargo xtask demo`: the headline measurement. Boots the sched_ext kernel, runs `mq-demo`
//! (experiments/), and turns its final `MQ_DEMO_JSON {...}` line into
//! `target/demo/summary.json` plus a table of wakeup latencies under EEVDF, SCHED_FIFO, as a
//! normal task under microquanta, and as a microquanta engine, pooled over interleaved rounds,
//! with the per-round p99 ratios' median and spread, with and without the wakeups an emulator
//! stall hit (`mq_experiments::rounds`). It then runs two quick benchmarks, in a second boot
//! when `--bench-cpus` (2) differs from `--cpus` (1: see [`DemoArgs::cpus`]), and reports
//! each through the code of its `cargo xtask bench` command:
//!
//! 1. `mq-bench-sched --quick --rounds 0` (its rounds phase would repeat mq-demo), like
//!    `cargo xtask bench sched` ([`sched::record`]): its latency and conformance tables, files
//!    in `target/experiments/sched/`;
//! 2. `mq-bench-modes --quick --loads 10,50` with `scx_microquanta` loaded, as the VM half of
//!    `cargo xtask bench modes` ([`modes::guest_script`], [`modes::read_guest_run`],
//!    [`modes::record`]): a compact table of Snap's engine modes (p50/p99, ops/s, cores per
//!    mode and load), files in `target/experiments/modes/` (a VM-only report, replacing the
//!    last `bench modes` one).
//!
//! `--no-bench` skips both. The guest script ([`script`]) stops at the first failing step and
//! names it (`MQ_DEMO_STEP_FAILED`); a failed benchmark still leaves the steps before it reported.
//!
//! Under TCG the guest's clock runs on an emulated CPU, so absolute microseconds are not
//! comparable with real hardware; ratios between policies measured in the same boot are.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use mq_report::demo::{self, POLICIES};
use mq_report::rounds::Spread;
use mq_report::{LatencySummary, Tagged};
use serde::Deserialize;
use serde_json::Value;

use self::script::{guest_script, modes_step_label, sched_step, step_statuses, steps, Steps};
use crate::accel::{AccelChoice, GuestClock};
use crate::bench::modes::{self, Lookup as _};
use crate::bench::two_runs;
use crate::bench::{self, sched};
use crate::{vm, Ctx};

mod script;

/// The demo's guest program.
const DEMO_PROGRAM: &str = demo::Report::TAG.program;

/// Options of `cargo xtask demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Kernel image (bzImage) for the VM; default: $MQ_KERNEL, the cache, or a download.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// How qemu runs the VM.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    /// What the guest's clocks count under TCG in the boot that runs mq-demo (the benchmarks
    /// then run in a boot of their own, on the host's): `instructions` measures path lengths,
    /// the same from run to run (docs/MICROQUANTA.md, "An instruction clock").
    #[arg(long, value_enum, default_value_t = GuestClock::Host)]
    pub clock: GuestClock,
    /// Virtual CPUs of the boot that runs mq-demo. One by default: under TCG each vCPU is a
    /// host thread, and with one the host's second core serves qemu's main loop, which fires
    /// every guest timer (docs/MICROQUANTA.md, "Guest shape, again").
    #[arg(long, default_value_t = 1)]
    pub cpus: u32,
    /// Virtual CPUs of the boot that runs the two benchmarks: the engine modes need a core to
    /// dedicate and one for the rest. A second boot when it differs from --cpus.
    #[arg(long, default_value_t = 2)]
    pub bench_cpus: u32,
    /// Seconds before the VM is killed.
    #[arg(long = "timeout", value_name = "SECS", default_value_t = 1200)]
    pub timeout_secs: u64,
    /// Run mq-demo on this host (needs root and a host kernel with sched_ext).
    #[arg(long)]
    pub native: bool,
    /// Only mq-demo: skip `mq-bench-sched --quick` and `mq-bench-modes --quick --loads 10,50`,
    /// and their files under target/experiments/{sched,modes}.
    #[arg(long)]
    pub no_bench: bool,
}

pub fn run(ctx: &Ctx, args: &DemoArgs) -> Result<()> {
    let (release_dir, kernel) = vm::prepare_release(ctx, args.native, args.kernel.clone())?;
    let with_bench = !args.no_bench;
    let bench_boot = with_bench && bench_boot_apart(args);
    let spec = |cpus: u32, steps: &[script::Step], clock: GuestClock| vm::VmSpec {
        cpus,
        mem_mib: sched::MEM_MIB,
        accel: args.accel,
        timeout: Duration::from_secs(args.timeout_secs),
        kernel: &kernel,
        bin_dirs: vec![release_dir.clone()],
        extra_files: Vec::new(),
        env: vec![("RUST_BACKTRACE".into(), "1".into())],
        script: guest_script(steps),
        allow_log_patterns: Vec::new(),
        native: args.native,
        main_loop_fifo: true,
        clock,
    };
    let demo_steps = steps(true, with_bench && !bench_boot, &release_dir);
    let outcome = vm::run(ctx, &spec(args.cpus, &demo_steps, args.clock))?;
    let (sched_status, modes_status) =
        match step_statuses(&outcome.output, outcome.exit_status, with_bench && !bench_boot) {
            Steps::DemoFailed(status) => bail!(
                "{DEMO_PROGRAM} failed (exit status {status}); its output is above{}",
                if with_bench {
                    "; the benchmarks did not run"
                } else {
                    ""
                }
            ),
            Steps::Unknown(status) => {
                bail!("the demo's guest script failed (exit status {status}) without saying which step")
            }
            Steps::DemoOk { sched, modes } => (sched, modes),
        };

    // mq-demo's report is kept before the benchmarks' boot, which may fail.
    let mut summary = extract_summary(&outcome.output)?;
    summary["accel"] = Value::String(outcome.accel.to_string());
    summary["qemu_main_loop"] = Value::String(outcome.main_loop.key().into());
    summary["guest_clock"] = Value::String(outcome.clock.to_string());
    if let Some(share) = outcome.host_steal {
        summary["host_steal_percent"] = serde_json::json!(share * 100.0);
    }
    let dir = ctx.ws.target_dir.join("demo");
    std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
    let path = dir.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)? + "\n")
        .with_context(|| format!("{}", path.display()))?;
    // Kept on disk first: a report that does not match its schema is still worth reading.
    let typed: Summary = serde_json::from_value(summary)
        .with_context(|| format!("reading {DEMO_PROGRAM}'s report ({})", path.display()))?;
    println!();
    print!("{}", render_table(&typed));

    let mut written = vec![path];
    // A benchmark that failed or whose report is incomplete (its guest log is kept) does not
    // stop the report of the others; the demo fails at the end, naming each.
    let mut failures = Vec::new();
    // The benchmarks' tables end with a blank line, the demo's does not.
    let mut ended_blank = false;
    let mut bench_cpus = args.cpus;
    let (outcome, sched_status, modes_status) = if bench_boot {
        println!();
        println!(
            "the benchmarks: a second boot, {} vCPUs (mq-demo's had {})",
            args.bench_cpus, args.cpus
        );
        bench_cpus = args.bench_cpus;
        let bench = vm::run(
            ctx,
            &spec(bench_cpus, &steps(false, true, &release_dir), GuestClock::Host),
        )
        .context("the benchmarks' boot");
        match bench.map(|b| {
            let statuses = step_statuses(&b.output, b.exit_status, true);
            (b, statuses)
        }) {
            Ok((b, Steps::DemoOk { sched, modes })) => (b, sched, modes),
            Ok((b, _)) => {
                failures.push(anyhow::anyhow!(
                    "the benchmarks' guest script failed (exit status {}) without saying which step",
                    b.exit_status
                ));
                (outcome, None, None)
            }
            Err(e) => {
                failures.push(e);
                (outcome, None, None)
            }
        }
    } else {
        (outcome, sched_status, modes_status)
    };
    let machine = sched::describe_machine(args.native, bench_cpus, sched::MEM_MIB);
    let boot = if bench_boot { "second boot" } else { "same boot" };
    if let Some(exit_status) = sched_status {
        let recorded = sched::record(
            &sched::output_dir(ctx),
            &sched::GuestRun {
                output: &outcome.output,
                exit_status,
                accel: outcome.accel.to_string(),
                machine: machine.clone(),
                host_steal: outcome.host_steal,
            },
        )
        .with_context(|| {
            format!(
                "benchmark `{}` (run after {DEMO_PROGRAM}, whose summary is in {}){}",
                sched_step(),
                written[0].display(),
                if modes_status.is_none() {
                    format!("; `{}` did not run", modes_step_label())
                } else {
                    String::new()
                }
            )
        });
        match recorded {
            Ok(recorded) => {
                println!();
                println!(
                    "scheduler benchmark, {boot} (`{}`; cyclictest and plots: files below)",
                    sched_step()
                );
                println!();
                print!("{}", recorded.headline);
                ended_blank = true;
                written.extend(recorded.written);
            }
            Err(e) => failures.push(e),
        }
    }
    if let Some(exit_status) = modes_status {
        let recorded = record_modes(&modes::output_dir(ctx), &outcome.output, exit_status, machine)
            .with_context(|| {
                format!(
                    "benchmark `{}` (run after {DEMO_PROGRAM} and `{}`)",
                    modes_step_label(),
                    sched_step()
                )
            });
        match recorded {
            Ok((run, files)) => {
                println!();
                println!(
                    "engine modes benchmark, {boot} (`{}`; expected shape and plot: files below)",
                    modes_step_label()
                );
                println!();
                print!("{}", render_modes_table(&run, args.native));
                println!();
                ended_blank = true;
                written.extend(files);
            }
            Err(e) => failures.push(e),
        }
    }
    if !ended_blank {
        println!();
    }
    print!("{}", closing(&written, &outcome.accel.to_string()));
    match failures.len() {
        0 => Ok(()),
        1 => Err(failures.remove(0)),
        _ => bail!(
            "{}",
            failures
                .iter()
                .map(|e| format!("{e:#}"))
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

/// The modes step's report, as `cargo xtask bench modes` records its VM run, but alone: the
/// typed run for the table, and the files written (`guest-output.log` last).
fn record_modes(
    dir: &Path,
    output: &str,
    exit_status: i32,
    machine: String,
) -> Result<(mq_report::modes::Report, Vec<PathBuf>)> {
    let run = modes::read_guest_run(dir, output, exit_status, machine)?;
    let (_, mut written) = modes::record(dir, std::slice::from_ref(&run))?;
    written.push(two_runs::guest_log(dir));
    let run = serde_json::from_value(run).context("reading mq-bench-modes' report")?;
    Ok((run, written))
}

/// The compact table of the modes step: one row per mode and offered load.
fn render_modes_table(run: &mq_report::modes::Report, native: bool) -> String {
    let mut out = format!(
        "Snap engine modes (MicroQuanta, {})\n",
        if native { "on this host" } else { "in the VM" }
    );
    out.push_str(&format!(
        "scheduler {}, accel {}, {} ns of CPU per request; load in % of one core\n",
        run.platform.scheduler, run.platform.accel, run.work_ns
    ));
    out.push_str(&format!(
        "{:<12} {:>6} {:>10} {:>10} {:>10} {:>6}\n",
        "mode", "load", "p50 µs", "p99 µs", "ops/s", "cores"
    ));
    for mode in run.modes() {
        for load in run.loads() {
            let Some(r) = run.row(mode, load) else { continue };
            out.push_str(&format!(
                "{:<12} {:>6} {:>10.1} {:>10.1} {:>10.0} {:>6.2}\n",
                mode, load, r.p50_us, r.p99_us, r.ops_per_s, r.cores
            ));
        }
    }
    out
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

/// Whether the benchmarks need a boot of their own. On this host they run where mq-demo
/// did; in a VM, apart when they want another shape, or when mq-demo's guest counts time in
/// instructions: their figures are reported as the host clock's.
fn bench_boot_apart(args: &DemoArgs) -> bool {
    !args.native && (args.bench_cpus != args.cpus || args.clock != GuestClock::Host)
}

/// The JSON object on the last `MQ_DEMO_JSON ` line.
pub fn extract_summary(output: &str) -> Result<Value> {
    Ok(mq_report::extract_value(demo::Report::TAG, output)?)
}

/// What the table reads: `mq-demo`'s report, and the accelerator the host adds to it in
/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Summary {
    #[serde(flatten)]
    pub report: demo::Report,
    /// How qemu runs the guest: `tcg`, `kvm` or `native`.
    pub accel: String,
    /// The host's steal time during mq-demo's boot, % of its CPU time (`crate::steal`).
    #[serde(default)]
    pub host_steal_percent: Option<f64>,
    /// What the guest's clocks counted (`host` or `instructions`; absent: host).
    #[serde(default)]
    pub guest_clock: Option<String>,
}

/// The human-readable table of `summary`, policies not measured shown as `-`.
pub fn render_table(summary: &Summary) -> String {
    let lat = &summary.report.wakeup_latency_us;
    let num = |policy: &str, field: fn(&LatencySummary) -> f64| lat.get(policy).map(field);
    let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    let clock = match summary.guest_clock.as_deref() {
        Some("instructions") => ", guest clock 1 ns per instruction",
        _ => "",
    };
    let mut out = format!(
        "wakeup latency, µs (kernel {}, {} CPUs, accel {}{clock})\n",
        summary.report.kernel, summary.report.cpus, summary.accel,
    );
    out.push_str(&format!(
        "{:<12} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
        "policy", "p50", "p90", "p99", "max", "samples"
    ));
    for policy in POLICIES {
        out.push_str(&format!(
            "{:<12} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
            policy,
            cell(num(policy, |l| l.p50)),
            cell(num(policy, |l| l.p90)),
            cell(num(policy, |l| l.p99)),
            cell(num(policy, |l| l.max)),
            lat.get(policy).map_or("-".into(), |l| l.samples.to_string()),
        ));
    }
    let p99 = |policy: &str| num(policy, |l| l.p99);
    let ratio = |a: &str| match (p99(a), p99(demo::MICROQUANTA)) {
        (Some(a), Some(mq)) if mq > 0.0 => format!("{:.1}x", a / mq),
        _ => "-".into(),
    };
    out.push_str(&format!(
        "pooled p99 ratio normal/microquanta: {}   eevdf/microquanta: {}   fifo/microquanta: {}   \
         fifo-scx/microquanta: {}\n",
        ratio(demo::NORMAL),
        ratio(demo::EEVDF),
        ratio(demo::FIFO),
        ratio(demo::FIFO_SCX)
    ));
    let r = &summary.report;
    if !r.rounds.is_empty() {
        let rounds = r.rounds.iter().map(|row| row.round).max().map_or(0, |m| m + 1);
        out.push_str(&format!(
            "per-round p99 ratio ({rounds} interleaved rounds; median, min-max):\n"
        ));
        let clean = r.stalls.as_ref();
        out.push_str(&format!(
            "  eevdf/microquanta {}   without stalled wakeups {}\n",
            spread(r.p99_ratio_eevdf_over_microquanta),
            spread(clean.and_then(|s| s.p99_ratio_eevdf_over_microquanta_without_stalls)),
        ));
        out.push_str(&format!(
            "  fifo/microquanta  {}   without stalled wakeups {}\n",
            spread(r.p99_ratio_fifo_over_microquanta),
            spread(clean.and_then(|s| s.p99_ratio_fifo_over_microquanta_without_stalls)),
        ));
        out.push_str(&format!(
            "  fifo-scx/microquanta {}   (SCHED_FIFO with the scheduler loaded: sched_ext's floor)\n",
            spread(r.p99_ratio_fifo_scx_over_microquanta),
        ));
    }
    if let Some(w) = r.warmup.as_ref().filter(|w| !w.first_us.is_empty()) {
        let (lo, hi) = w
            .first_us
            .iter()
            .fold((f64::MAX, 0.0_f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        out.push_str(&format!(
            "warm-up after each load ({} MicroQuanta wakeups, in no figure above): first wakeup \
             {lo:.0}-{hi:.0} µs, the rest p99 {:.0} µs\n",
            w.wakeups_per_load, w.rest_us.p99
        ));
    }
    if let Some(s) = &r.stalls {
        let stalled: u64 = r.rounds.iter().map(|row| row.stalled_samples).sum();
        out.push_str(&format!(
            "emulator stalls (probe >= {} µs late): {} during the measurements, longest {:.0} µs, \
             {stalled} wakeups hit; probe p99 {:.0} µs\n",
            s.threshold_us, s.events, s.longest_us, s.probe.p99
        ));
    }
    if let Some(steal) = summary.host_steal_percent {
        out.push_str(&format!(
            "host steal during the boot: {steal:.1}% of CPU time (given by the hypervisor to \
             other work while this machine wanted it)\n"
        ));
        if steal > NOISY_STEAL_PERCENT {
            out.push_str(&format!(
                "  more than {NOISY_STEAL_PERCENT}%: the emulator waited for the host, so these \
                 ratios measure this machine more than the schedulers; run the demo again when \
                 the host is quiet\n"
            ));
        }
    }
    out
}

/// Host steal above which a demo's ratios say more about the host than the schedulers. In the
/// demos of docs/MICROQUANTA.md, runs at 0.0-1.1% steal had 0.2-1.0% of their wakeups hit by
/// emulator stalls; runs at 3.7-13.6% had 2.6-18.7%, and in two of them SCHED_FIFO's own
/// EEVDF/FIFO ratio fell to 6.9x and 3.5x against 13.1-18.9x in the quiet runs around them.
const NOISY_STEAL_PERCENT: f64 = 2.0;

/// `12.3x (4.0-20.1x)`, or `-` when no round had both policies.
fn spread(s: Option<Spread>) -> String {
    s.map_or("-".into(), |s| {
        format!("{:.1}x ({:.1}-{:.1}x)", s.median, s.min, s.max)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "progress: eevdf 10/10\n\
        MQ_DEMO_JSON {\"kernel\":\"7.3.4+deb13-cloud-amd64\",\"cpus\":2,\"period_us\":1000,\
        \"work_us\":300,\"hogs\":8,\"scheduler_args\":[\"--period-us=1000\"],\"wakeup_latency_us\":{\
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
        let table = render_table(&serde_json::from_value(v).unwrap());
        let rows: Vec<&str> = table.lines().collect();
        assert!(rows[0].contains("accel tcg"));
        assert!(rows[2].starts_with("eevdf") && rows[2].contains("7000.0"));
        assert!(rows[3].starts_with("fifo") && rows[3].contains("  -"), "{table}");
        assert!(rows[5].starts_with("microquanta") && rows[5].contains("1000"));
        assert!(table.contains("normal/microquanta: 30.0x"));
        assert!(table.contains("eevdf/microquanta: 35.0x"));
        // The TCG note comes once, at the very end of the demo (`closing`).
        assert!(!table.contains("TCG"));
        // A report without rounds (an older mq-demo) prints no rounds lines.
        assert!(!table.contains("per-round"), "{table}");
        // Nor a steal line when the host's was not read.
        assert!(!table.contains("host steal"), "{table}");
        // The host's clock is the default and goes unsaid.
        assert!(!rows[0].contains("clock"), "{table}");
    }

    #[test]
    fn the_benchmarks_keep_the_host_clock_in_a_boot_of_their_own() {
        let args = |cpus: u32, clock: GuestClock, native: bool| DemoArgs {
            kernel: None,
            accel: AccelChoice::Auto,
            clock,
            cpus,
            bench_cpus: 2,
            timeout_secs: 1,
            native,
            no_bench: false,
        };
        assert!(bench_boot_apart(&args(1, GuestClock::Host, false)));
        assert!(!bench_boot_apart(&args(2, GuestClock::Host, false)));
        assert!(bench_boot_apart(&args(2, GuestClock::Instructions, false)));
        assert!(!bench_boot_apart(&args(1, GuestClock::Host, true)));
    }

    #[test]
    fn table_names_an_instruction_clock() {
        let mut v = extract_summary(OUTPUT).unwrap();
        v["accel"] = "tcg".into();
        v["guest_clock"] = "instructions".into();
        let table = render_table(&serde_json::from_value(v).unwrap());
        let first = table.lines().next().unwrap();
        assert!(
            first.ends_with("accel tcg, guest clock 1 ns per instruction)"),
            "{first}"
        );
    }

    #[test]
    fn a_quiet_hosts_steal_is_printed_without_the_warning() {
        let mut v = extract_summary(OUTPUT).unwrap();
        v["accel"] = "tcg".into();
        v["host_steal_percent"] = 0.3.into();
        let table = render_table(&serde_json::from_value(v).unwrap());
        assert!(
            table.contains("host steal during the boot: 0.3% of CPU time"),
            "{table}"
        );
        assert!(!table.contains("more than 2%"), "{table}");
    }

    #[test]
    fn table_prints_the_median_and_spread_of_the_rounds_the_stalls_and_the_host_steal() {
        let mut v = extract_summary(OUTPUT).unwrap();
        v["accel"] = "tcg".into();
        let row = |round: usize, policy: &str, p99: f64, stalled: u64| {
            serde_json::json!({"round": round, "policy": policy, "p50": 1.0, "p99": p99,
                "max": p99, "samples": 400, "stalled_samples": stalled,
                "p99_without_stalls": p99 / 2.0})
        };
        v["rounds"] = serde_json::json!([
            row(0, "eevdf", 4000.0, 0),
            row(0, "microquanta", 200.0, 3),
            row(1, "eevdf", 3000.0, 1),
            row(1, "microquanta", 300.0, 0),
        ]);
        let spread = |median: f64, min: f64, max: f64| serde_json::json!({"median": median, "min": min, "max": max, "rounds": 2});
        v["p99_ratio_eevdf_over_microquanta"] = spread(15.0, 10.0, 20.0);
        v["p99_ratio_fifo_over_microquanta"] = spread(0.9, 0.8, 1.0);
        v["p99_ratio_fifo_scx_over_microquanta"] = spread(1.1, 0.9, 1.3);
        v["stalls"] = serde_json::json!({"rule": "r", "probe_interval_us": 1500,
            "threshold_us": 1000, "events": 2, "longest_us": 3800.0, "listed": [],
            "probe": {"p50": 40.0, "p90": 80.0, "p99": 250.0, "max": 3800.0, "samples": 9000},
            "p99_ratio_eevdf_over_microquanta_without_stalls": spread(16.0, 12.0, 21.0),
            "p99_ratio_fifo_over_microquanta_without_stalls": null});
        v["warmup"] = serde_json::json!({"wakeups_per_load": 20, "first_us": [2372.0, 1516.0],
            "rest_us": {"p50": 140.0, "p90": 200.0, "p99": 310.0, "max": 320.0, "samples": 38}});
        v["host_steal_percent"] = 19.66.into();
        let table = render_table(&serde_json::from_value(v).unwrap());
        assert!(
            table.contains("host steal during the boot: 19.7% of CPU time"),
            "{table}"
        );
        assert!(
            table.contains("more than 2%: the emulator waited for the host"),
            "{table}"
        );
        assert!(
            table.contains(
                "warm-up after each load (20 MicroQuanta wakeups, in no figure above): first \
                 wakeup 1516-2372 µs, the rest p99 310 µs"
            ),
            "{table}"
        );
        assert!(
            table.contains("per-round p99 ratio (2 interleaved rounds; median, min-max):"),
            "{table}"
        );
        assert!(
            table.contains(
                "eevdf/microquanta 15.0x (10.0-20.0x)   without stalled wakeups 16.0x (12.0-21.0x)"
            ),
            "{table}"
        );
        assert!(
            table.contains("fifo/microquanta  0.9x (0.8-1.0x)   without stalled wakeups -"),
            "{table}"
        );
        assert!(
            table.contains("fifo-scx/microquanta 1.1x (0.9-1.3x)   (SCHED_FIFO with the scheduler"),
            "{table}"
        );
        assert!(
            table.contains(
                "emulator stalls (probe >= 1000 µs late): 2 during the measurements, longest 3800 µs, \
                 4 wakeups hit; probe p99 250 µs"
            ),
            "{table}"
        );
    }

    #[test]
    fn demo_json_is_found_among_the_benchmarks_output() {
        let output = format!(
            "{OUTPUT}== demo step 2/3: mq-bench-sched --quick\n\
             mq-bench-sched: latency: measuring eevdf ...\n\
             MQ_BENCH_SCHED_JSON {{\"cpus\":2}}\n"
        );
        assert_eq!(
            extract_summary(&output).unwrap()["wakeup_latency_us"]["eevdf"]["p99"],
            7000.0
        );
    }

    /// The boot's output up to and including the modes step, with `report` as its JSON line.
    fn boot_output(report: &Value) -> String {
        format!(
            "{OUTPUT}== demo step 2/3: mq-bench-sched --quick\n\
             MQ_BENCH_SCHED_JSON {{\"cpus\":2}}\n\
             == demo step 3/3: mq-bench-modes --quick --loads 10,50, scx_microquanta loaded\n\
             mq-bench-modes: 2 CPUs under microquanta, snap-host /rel/snap-host\n\
             MQ_BENCH_MODES_JSON {report}\n"
        )
    }

    #[test]
    fn modes_step_is_recorded_and_tabled_like_bench_modes_vm_run() {
        let report = modes::tests::sample_runs().remove(1);
        let output = boot_output(&report);
        // The demo's own summary is still found before the benchmarks' lines.
        assert_eq!(extract_summary(&output).unwrap()["cpus"], 2);

        let dir = std::env::temp_dir().join(format!("xtask-demo-modes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (run, written) = record_modes(&dir, &output, 0, "qemu VM (test)".into()).unwrap();
        let names: Vec<_> = written
            .iter()
            .map(|p| p.strip_prefix(&dir).unwrap().to_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["summary.json", "summary.md", "modes.svg", "guest-output.log"]
        );
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
        assert_eq!(read("guest-output.log"), output);
        // A VM-only report: one run, the host's machine description.
        let json: Value = serde_json::from_str(&read("summary.json")).unwrap();
        assert_eq!(json["runs"].as_array().unwrap().len(), 1);
        assert_eq!(json["runs"][0]["machine"], "qemu VM (test)");
        assert_eq!(json["rows"][0]["scheduler"], "microquanta");
        assert!(read("summary.md").contains("## microquanta (tcg)"));
        assert!(read("modes.svg").starts_with("<svg"));

        let table = render_modes_table(&run, false);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "Snap engine modes (MicroQuanta, in the VM)");
        assert!(
            lines[1].contains("accel tcg, 20000 ns of CPU per request"),
            "{table}"
        );
        assert!(
            lines[2].starts_with("mode") && lines[2].contains("p99 µs"),
            "{table}"
        );
        assert_eq!(lines.len(), 3 + 6, "{table}");
        let row = lines[5].split_whitespace().collect::<Vec<_>>();
        assert_eq!(
            row,
            ["spreading", "10", "16.7", "50.0", "5000", "0.15"],
            "{table}"
        );
        assert!(lines[8].starts_with("compacting"), "{table}");
        assert!(render_modes_table(&run, true).starts_with("Snap engine modes (MicroQuanta, on this host)\n"));

        // A failed run keeps the log and says which program failed.
        let err = format!("{:#}", record_modes(&dir, "boom\n", 6, "m".into()).unwrap_err());
        assert!(err.contains("mq-bench-modes failed (exit status 6)"), "{err}");
        assert_eq!(read("guest-output.log"), "boom\n");
        let err = format!(
            "{:#}",
            record_modes(&dir, "no report\n", 0, "m".into()).unwrap_err()
        );
        assert!(err.contains("printed no `MQ_BENCH_MODES_JSON` line"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
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
            "period_us": 1000, "work_us": 300, "hogs": 8, "scheduler_args": [],
            "wakeup_latency_us": {"eevdf": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "max": 4.0, "samples": 5}}});
        let table = render_table(&serde_json::from_value(v).unwrap());
        assert!(table.contains("microquanta           -"));
        assert!(table.contains("normal/microquanta: -"));
    }
}
