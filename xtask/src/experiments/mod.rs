//! `cargo xtask experiments`: every experiment of the Snap paper that the project reproduces,
//! in one command, and the report a person reads.
//!
//! ```text
//!  build the programs (release) ─▶ native steps (root; veth namespaces; output in logs/)
//!                                   mq-bench-pony        → unloaded_latency, throughput, scaling
//!                                   mq-bench-efficiency  → cpu_efficiency
//!                                   mq-bench-idle        → idle_states
//!                               ─▶ one VM boot (sched_ext)
//!                                   mq-bench-interference → interference, policy
//!  ─▶ analyse (ratios, verdicts) ─▶ target/experiments/report/
//!       summary.json (mq_report::experiments), report.md, index.html (inline SVG),
//!       screenshot.png (headless Chromium loads the page and checks every plot)
//! ```
//!
//! A step that fails records its experiments as failed with its error; the others are still
//! reported, and the command exits non-zero. `--only NAME` runs the step of one experiment
//! and records the others as skipped. [`steps`] has the programs and the ETA estimates,
//! [`analyse`] the experiments, [`charts`] and [`render`] the report, [`browser`] the check.

pub mod analyse;
pub mod browser;
pub mod charts;
mod plots;
pub mod render;
pub mod steps;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mq_report::experiments::{Experiment, Status, Summary, CPU_EFFICIENCY_KEYS, NAMES};
use mq_report::{interference, pony, Tagged};
use serde_json::Value;

use self::steps::Step;
use crate::accel::AccelChoice;
use crate::{vm, Ctx};

/// Options of `cargo xtask experiments`.
#[derive(Debug, clap::Args)]
pub struct ExperimentsArgs {
    /// The short form (CI): fewer sizes, engines, rounds and shorter windows; every code path.
    #[arg(long)]
    pub quick: bool,
    /// Run only this experiment (the others are recorded as skipped): one of
    /// unloaded_latency, throughput, scaling, interference, idle_states, cpu_efficiency, policy.
    #[arg(long, value_name = "NAME", value_parser = NAMES)]
    pub only: Option<String>,
    /// Kernel image (bzImage) for the VM; default: $MQ_KERNEL, the cache, or a download.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// How qemu runs the VM.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    /// Seconds before the VM is killed.
    #[arg(long = "timeout", value_name = "SECS", default_value_t = 2400)]
    pub timeout_secs: u64,
    /// Use debug builds of the programs: checks the pipeline where a release build does
    /// not fit (the report says so; its numbers mean nothing).
    #[arg(long)]
    pub debug_build: bool,
    /// Do not load the report in headless Chromium afterwards.
    #[arg(long)]
    pub no_browser: bool,
    /// Hold an exclusive flock on this file during the VM boot only (on a machine where
    /// VM runs are shared through such a lock, the native steps then leave it free).
    #[arg(long, value_name = "PATH")]
    pub vm_lock: Option<PathBuf>,
}

/// `target/experiments/report/`.
pub fn output_dir(ctx: &Ctx) -> PathBuf {
    ctx.ws.target_dir.join("experiments").join("report")
}

/// The packages whose binaries the steps run, those of the workspace that exist
/// (`scx_mqland` only once it is a package).
const PACKAGES: [&str; 4] = ["mq-experiments", "snap-host", "scx_microquanta", "scx_mqland"];

fn workspace_packages(ctx: &Ctx) -> Result<Vec<String>> {
    let out = crate::sys::output(&mut crate::cargo::command(
        &ctx.deps,
        &ctx.ws,
        &["metadata", "--no-deps", "--format-version", "1"],
    ))?;
    let v: Value = serde_json::from_str(&out).context("parsing cargo metadata")?;
    Ok(v["packages"]
        .as_array()
        .map(|p| {
            p.iter()
                .filter_map(|p| p["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

/// Builds the steps' packages (only them: the workspace's other binaries are not needed);
/// returns the directory of the binaries.
fn build(ctx: &Ctx, debug: bool) -> Result<PathBuf> {
    let have = workspace_packages(ctx)?;
    let mut args = vec!["build"];
    if !debug {
        args.push("--release");
    }
    for p in PACKAGES.iter().filter(|p| have.iter().any(|h| h == *p)) {
        args.extend(["-p", p]);
    }
    println!("experiments: building {}", args[1..].join(" "));
    crate::cargo::build(&ctx.deps, &ctx.ws, &args)?;
    Ok(ctx.ws.target_dir.join(if debug { "debug" } else { "release" }))
}

fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// A step's report, or why there is none, and how long it ran.
struct StepResult {
    step: Step,
    report: Result<Value>,
    seconds: f64,
    program: String,
}

pub fn run(ctx: &Ctx, args: &ExperimentsArgs) -> Result<()> {
    let started = Instant::now();
    let generated = utc_now();
    let out = output_dir(ctx);
    let _ = std::fs::remove_dir_all(&out);
    for d in ["logs", "raw", "plots"] {
        std::fs::create_dir_all(out.join(d)).with_context(|| format!("creating {}", out.display()))?;
    }
    let plan = steps::plan(args.only.as_deref());
    let bin_dir = build(ctx, args.debug_build)?;
    let mut results = Vec::new();
    for (i, step) in plan.iter().enumerate() {
        let t = Instant::now();
        let (report, place) = if step.vm {
            eprintln!("{}", steps::progress_line(&plan, i, args.quick, Duration::ZERO));
            (run_vm_step(ctx, args, step, &bin_dir, &out), "vm")
        } else {
            let _ticker = steps::Ticker::start(&plan, i, args.quick);
            (steps::run_native(step, &bin_dir, &out, args.quick), "native")
        };
        let seconds = t.elapsed().as_secs_f64();
        match &report {
            Ok(_) => println!("experiments: {} done in {seconds:.0} s", step.name),
            Err(e) => println!("experiments: {} FAILED after {seconds:.0} s: {e:#}", step.name),
        }
        results.push(StepResult {
            step: *step,
            report,
            seconds,
            program: format!("{} ({place})", step.program),
        });
    }
    let experiments = analyse_all(&results, args.only.as_deref());
    let summary = Summary {
        generated,
        quick: args.quick,
        host: crate::bench::sched::describe_machine(true, 0, 0),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        build: if args.debug_build { "debug" } else { "release" }.into(),
        seconds: started.elapsed().as_secs_f64(),
        experiments,
    };
    write_report(&out, &summary, &results, args.no_browser)?;
    let failed: Vec<String> = summary
        .experiments
        .iter()
        .filter(|(_, e)| e.status == Status::Failed)
        .map(|(n, e)| format!("{n}: {}", e.error.as_deref().unwrap_or("?")))
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} experiment(s) failed:\n  {}",
            failed.len(),
            failed.join("\n  ")
        );
    }
    Ok(())
}

/// The one VM boot: the interference program with scx_microquanta (and scx_mqland when
/// built) in the guest.
fn run_vm_step(ctx: &Ctx, args: &ExperimentsArgs, step: &Step, bin_dir: &Path, out: &Path) -> Result<Value> {
    let kernel = crate::kernel::ensure(args.kernel.clone())?;
    let _lock = args.vm_lock.as_deref().map(vm::lock).transpose()?;
    let tag = interference::Report::TAG;
    let spec = vm::VmSpec {
        cpus: crate::bench::sched::CPUS,
        mem_mib: crate::bench::sched::MEM_MIB,
        accel: args.accel,
        timeout: Duration::from_secs(args.timeout_secs),
        kernel: &kernel,
        bin_dirs: vec![bin_dir.to_path_buf()],
        extra_files: Vec::new(),
        env: vec![("RUST_BACKTRACE".into(), "1".into())],
        script: steps::guest_script(step, args.quick, tag.prefix),
        // scx_mqland's decisions are taken by its process: when that process falls behind
        // under the antagonists, the kernel's watchdog ejects it and logs a stall. That is a
        // result of the policy experiment (the bench records the scheduler's exit and the
        // report names it), not a failure of the boot; an ejection of scx_microquanta or
        // any other kernel problem still fails it.
        allow_log_patterns: vec!["mqland_".into()],
        native: false,
        // SCHED_OTHER, as for `cargo xtask test`, which runs this in CI: see qemu_loop.rs.
        main_loop_fifo: false,
        clock: crate::accel::GuestClock::Host,
    };
    let outcome = vm::run(ctx, &spec)?;
    let log = out.join("logs").join(format!("{}-guest.log", step.name));
    std::fs::write(&log, &outcome.output).with_context(|| format!("writing {}", log.display()))?;
    if outcome.exit_status != 0 {
        bail!(
            "{} failed in the VM (exit status {}); its output is in {}",
            step.program,
            outcome.exit_status,
            log.display()
        );
    }
    let mut report = mq_report::extract_value(tag, &outcome.output)
        .with_context(|| format!("guest output: {}", log.display()))?;
    // The host's steal goes with the machine it starved: the report's platform line names it.
    report["machine"] = Value::String(format!(
        "{}, {} during the boot",
        crate::bench::sched::describe_machine(false, crate::bench::sched::CPUS, crate::bench::sched::MEM_MIB),
        vm::steal_words(outcome.host_steal),
    ));
    let raw = steps::raw_path(out, step);
    std::fs::write(&raw, serde_json::to_string(&report)? + "\n")?;
    Ok(report)
}

/// Every experiment of [`NAMES`] from the steps' reports.
fn analyse_all(results: &[StepResult], only: Option<&str>) -> BTreeMap<String, Experiment> {
    let mut out = BTreeMap::new();
    for name in NAMES {
        let Some(r) = results.iter().find(|r| r.step.feeds.contains(&name)) else {
            out.insert(name.to_string(), analyse::skipped(name, only.unwrap_or("?")));
            continue;
        };
        let e = match &r.report {
            Err(e) => analyse::failed(name, &r.program, format!("{e:#}"), r.seconds),
            Ok(v) => analyse_one(name, v, &r.program, r.seconds),
        };
        out.insert(name.to_string(), e);
    }
    out
}

fn analyse_one(name: &str, v: &Value, program: &str, seconds: f64) -> Experiment {
    let typed_fail = |e: serde_json::Error| {
        analyse::failed(
            name,
            program,
            format!("its report does not match its schema: {e}"),
            seconds,
        )
    };
    match name {
        "unloaded_latency" | "throughput" | "scaling" => {
            match serde_json::from_value::<pony::Report>(v.clone()) {
                Err(e) => typed_fail(e),
                Ok(r) => match name {
                    "unloaded_latency" => analyse::unloaded_latency(v, &r, program, seconds),
                    "throughput" => analyse::throughput(v, &r, program, seconds),
                    _ => analyse::scaling(v, &r, program, seconds),
                },
            }
        }
        "interference" | "policy" => match serde_json::from_value::<interference::Report>(v.clone()) {
            Err(e) => typed_fail(e),
            Ok(r) if name == "interference" => analyse::interference(v, &r, program, seconds),
            Ok(r) => analyse::policy(v, &r, program, seconds),
        },
        "cpu_efficiency" => analyse::cpu_efficiency(v, program, seconds),
        _ => analyse::idle_states(v, program, seconds),
    }
}

/// Writes summary.json, report.md and index.html, then checks the page in Chromium.
fn write_report(out: &Path, summary: &Summary, results: &[StepResult], no_browser: bool) -> Result<()> {
    let reports: BTreeMap<&str, &Value> = results
        .iter()
        .filter_map(|r| Some((r.step.name, r.report.as_ref().ok()?)))
        .collect();
    let (plots, plot_errors) = plots::all(summary, &reports, &out.join("plots"));
    for e in &plot_errors {
        println!("experiments: plot skipped: {e:#}");
    }
    let json = out.join("summary.json");
    std::fs::write(&json, serde_json::to_string_pretty(summary)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    let md = out.join("report.md");
    std::fs::write(&md, render::markdown(summary)).with_context(|| format!("writing {}", md.display()))?;
    let html = out.join("index.html");
    std::fs::write(&html, render::html(summary, &plots))
        .with_context(|| format!("writing {}", html.display()))?;
    println!();
    for name in NAMES {
        if let Some(e) = summary.experiments.get(name) {
            println!(
                "{:<18} {:<8} {:<9} {}",
                name,
                format!("{:?}", e.status).to_lowercase(),
                e.verdict,
                e.measured
            );
        }
    }
    println!(
        "\nwritten: {}\nwritten: {}\nwritten: {}",
        json.display(),
        md.display(),
        html.display()
    );
    if no_browser {
        return Ok(());
    }
    let checked = browser::check(&html, &out.join("browser"), &out.join("screenshot.png"))?;
    let _ = std::fs::remove_dir_all(out.join("browser"));
    println!(
        "experiments: index.html loads without errors in headless Chromium, {} plot(s) rendered; screenshot {}",
        checked.svgs,
        checked.screenshot.display()
    );
    Ok(())
}

/// Checks a report directory: `summary.json` in its schema with every experiment of
/// [`NAMES`], each `ok` with rows (`cpu_efficiency`'s with [`CPU_EFFICIENCY_KEYS`]), a
/// section per experiment in `index.html`, `report.md` and the screenshot. Lists every
/// problem, not the first.
pub fn check_report(dir: &Path) -> Result<()> {
    let summary: Summary = serde_json::from_value(steps::read_json(&dir.join("summary.json"))?)
        .context("summary.json does not match mq_report::experiments::Summary")?;
    let html = std::fs::read_to_string(dir.join("index.html")).context("reading index.html")?;
    let md = std::fs::read_to_string(dir.join("report.md")).context("reading report.md")?;
    let mut problems = Vec::new();
    for name in NAMES {
        let Some(e) = summary.experiments.get(name) else {
            problems.push(format!("{name}: missing from summary.json"));
            continue;
        };
        if e.status != Status::Ok {
            problems.push(format!(
                "{name}: {:?}: {}",
                e.status,
                e.error.as_deref().unwrap_or("")
            ));
        } else if e.rows.is_empty() {
            problems.push(format!("{name}: no rows"));
        }
        if name == "cpu_efficiency" {
            for (i, row) in e.rows.iter().enumerate() {
                for k in CPU_EFFICIENCY_KEYS {
                    if row.get(k).is_none() {
                        problems.push(format!("cpu_efficiency row {i}: no `{k}`"));
                    }
                }
            }
        }
        if !html.contains(&format!("<section id=\"{name}\">")) {
            problems.push(format!("{name}: no section in index.html"));
        }
        if !md.contains(render::title(name)) {
            problems.push(format!("{name}: no section in report.md"));
        }
    }
    if !dir.join("screenshot.png").is_file() {
        problems.push("no screenshot.png (the Chromium check did not pass)".into());
    }
    if !problems.is_empty() {
        bail!("{} problem(s):\n  {}", problems.len(), problems.join("\n  "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_check_finds_every_problem_and_passes_a_whole_report() {
        let dir = std::env::temp_dir().join(format!("xtask-check-report-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = render::tests::summary();
        let write = |s: &Summary| {
            std::fs::write(dir.join("summary.json"), serde_json::to_string(s).unwrap()).unwrap();
            std::fs::write(dir.join("index.html"), render::html(s, &[])).unwrap();
            std::fs::write(dir.join("report.md"), render::markdown(s)).unwrap();
        };
        write(&s);
        let err = check_report(&dir).unwrap_err().to_string();
        assert!(err.contains("unloaded_latency: Failed: it broke"), "{err}");
        assert!(err.contains("no screenshot.png"), "{err}");
        assert!(err.starts_with("2 problem(s)"), "{err}");

        s.experiments.get_mut("unloaded_latency").unwrap().status = Status::Ok;
        s.experiments.get_mut("unloaded_latency").unwrap().rows = vec![serde_json::json!({"p50_us": 1.0})];
        s.experiments.get_mut("scaling").unwrap().rows.clear();
        s.experiments.get_mut("cpu_efficiency").unwrap().rows =
            vec![serde_json::json!({"design": "dedicated"})];
        write(&s);
        std::fs::write(dir.join("screenshot.png"), b"png").unwrap();
        let err = check_report(&dir).unwrap_err().to_string();
        assert!(err.contains("scaling: no rows"), "{err}");
        assert!(err.contains("cpu_efficiency row 0: no `apps`"), "{err}");
        assert!(!err.contains("screenshot"), "{err}");

        let mut whole = render::tests::summary();
        for e in whole.experiments.values_mut() {
            e.status = Status::Ok;
        }
        whole.experiments.get_mut("unloaded_latency").unwrap().rows =
            vec![serde_json::json!({"p50_us": 1.0})];
        write(&whole);
        check_report(&dir).unwrap();
        std::fs::remove_file(dir.join("summary.json")).unwrap();
        assert!(check_report(&dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
