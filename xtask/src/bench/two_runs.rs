//! What `bench modes` and `bench pony` share: their measurement program runs natively
//! (EEVDF on this host) and then, unless `--native-only`, in the sched_ext VM with
//! `scx_microquanta` loaded; each run's report comes back as a JSON object for the caller to
//! merge, tabulate and plot. Also the guest side of it (the tagged JSON line the guest prints,
//! and keeping the guest's output on disk), which `bench sched` and `cargo xtask demo` use too.
//! The reports' types and tags are `mq_report`'s, the same the programs write with.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use mq_report::Tag;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::accel::AccelChoice;
use crate::{sys, vm, Ctx};

/// The VM shape: `bench sched`'s, so that the numbers of every benchmark come from one.
use super::sched::{CPUS, MEM_MIB};

/// The options every native-then-VM benchmark takes (flattened into its own).
#[derive(Debug, clap::Args)]
pub struct VmArgs {
    /// Kernel image (bzImage) for the VM; default: $MQ_KERNEL, the cache, or a download.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// How qemu runs the VM.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    /// Only the native (EEVDF) run: no kernel, no VM.
    #[arg(long)]
    pub native_only: bool,
    /// Seconds before the VM is killed.
    #[arg(long = "timeout", value_name = "SECS", default_value_t = 1800)]
    pub timeout_secs: u64,
}

/// A measurement program: its binary and report tag, and the benchmark it runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Program {
    /// The program (`mq-bench-modes`) and the prefix of the line carrying its JSON report.
    pub report: Tag,
    /// Benchmark name for progress messages, e.g. `modes`.
    pub bench: &'static str,
    /// Options only the VM run gets, after the caller's (what the guest lacks that the
    /// native run has, e.g. `bench pony`'s network namespaces: `--path loopback`).
    pub vm_args: &'static [&'static str],
}

impl Program {
    /// The binary's name.
    pub fn name(self) -> &'static str {
        self.report.program
    }

    /// Where the guest writes its report (`--json`) before printing it on one tagged line.
    fn guest_json(self) -> String {
        format!("/tmp/{}.json", self.name())
    }
}

/// The guest's command line (one line, no newline): `program` with `args`, its
/// [`Program::vm_args`] and
/// `scx_microquanta` from `release_dir` loaded around it (`--with-scheduler`), then, if it
/// succeeded, its report on one line behind its tag's prefix. Its exit status is the
/// program's.
pub(crate) fn guest_script(program: Program, args: &[String], release_dir: &Path) -> String {
    let mut argv = vec![program.name().to_string()];
    argv.extend(args.iter().cloned());
    argv.extend(program.vm_args.iter().map(|a| a.to_string()));
    let scheduler = release_dir.join("scx_microquanta");
    argv.extend(["--with-scheduler".into(), scheduler.display().to_string()]);
    argv.extend(["--json".into(), program.guest_json()]);
    format!(
        "{} && echo \"{}$(cat {})\"",
        sys::quote_all(&argv),
        program.report.prefix,
        program.guest_json()
    )
}

/// Runs `program` with `args` natively (writing `dir/native.json`), then in the VM through
/// [`guest_script`]; returns the runs' reports in that order.
pub(crate) fn native_then_vm(
    ctx: &Ctx,
    program: Program,
    dir: &Path,
    args: &[String],
    vm_args: &VmArgs,
) -> Result<Vec<Value>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (release_dir, kernel) = if vm_args.native_only {
        (crate::cargo::build_release(&ctx.deps, &ctx.ws)?, None)
    } else {
        let (release, kernel) = vm::prepare_release(ctx, false, vm_args.kernel.clone())?;
        (release, Some(kernel))
    };

    println!("bench {}: native run (EEVDF on this host)", program.bench);
    let native_json = dir.join("native.json");
    let mut cmd = Command::new(release_dir.join(program.name()));
    cmd.args(args).arg("--json").arg(&native_json);
    // The host's own accelerator, whatever the caller's environment says.
    cmd.env_remove(vm::ACCEL_ENV);
    sys::run(&mut cmd)?;
    let text = std::fs::read_to_string(&native_json)
        .with_context(|| format!("reading {}", native_json.display()))?;
    let mut runs =
        vec![serde_json::from_str::<Value>(&text)
            .with_context(|| format!("parsing {}", native_json.display()))?];

    if let Some(kernel) = &kernel {
        println!("bench {}: VM run (scx_microquanta loaded)", program.bench);
        let spec = vm::VmSpec {
            cpus: CPUS,
            mem_mib: MEM_MIB,
            accel: vm_args.accel,
            timeout: Duration::from_secs(vm_args.timeout_secs),
            kernel,
            bin_dirs: vec![release_dir.clone()],
            extra_files: Vec::new(),
            env: vec![("RUST_BACKTRACE".into(), "1".into())],
            script: guest_script(program, args, &release_dir) + "\n",
            allow_log_patterns: Vec::new(),
            native: false,
            main_loop_fifo: true,
            clock: crate::accel::GuestClock::Host,
        };
        let outcome = vm::run(ctx, &spec)?;
        runs.push(read_guest_run(
            program,
            dir,
            &outcome.output,
            outcome.exit_status,
            super::sched::describe_machine(false, CPUS, MEM_MIB),
        )?);
    }
    Ok(runs)
}

/// Reads the report of a guest run: keeps everything the guest printed in
/// `dir/guest-output.log` (also when it failed: then it is the only record), checks the exit
/// status, and returns the report with `machine` ([`super::sched::describe_machine`]) set.
pub(crate) fn read_guest_run(
    program: Program,
    dir: &Path,
    output: &str,
    exit_status: i32,
    machine: String,
) -> Result<Value> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let log = guest_log(dir);
    std::fs::write(&log, output).with_context(|| format!("writing {}", log.display()))?;
    let name = program.name();
    if exit_status != 0 {
        bail!(
            "{name} failed (exit status {exit_status}); its output is in {}",
            log.display()
        );
    }
    let mut run = mq_report::extract_value(program.report, output)
        .with_context(|| format!("guest output: {}", log.display()))?;
    run["machine"] = Value::String(machine);
    Ok(run)
}

/// Where [`read_guest_run`] keeps the guest's output in `dir`.
pub(crate) fn guest_log(dir: &Path) -> PathBuf {
    dir.join("guest-output.log")
}

/// The runs' reports, typed.
pub(crate) fn typed_runs<T: DeserializeOwned>(runs: &[Value]) -> Result<Vec<T>> {
    runs.iter()
        .map(|r| serde_json::from_value(r.clone()).context("a run's report does not match its schema"))
        .collect()
}

/// Merges the runs' reports into `{"runs": [run without its lists], LIST: [entry + scheduler +
/// accel], …}` for each key of `lists`: every entry says which scheduler and accelerator it
/// was measured under.
pub(crate) fn merge(runs: &[Value], lists: &[&str]) -> Result<Map<String, Value>> {
    let mut metas = Vec::new();
    let mut merged: Vec<Vec<Value>> = vec![Vec::new(); lists.len()];
    for run in runs {
        let mut meta = run
            .as_object()
            .context("a run's report is not an object")?
            .clone();
        for (key, out) in lists.iter().zip(&mut merged) {
            let list = meta
                .remove(*key)
                .and_then(|r| r.as_array().cloned())
                .with_context(|| format!("run without {key}"))?;
            for mut entry in list {
                let obj = entry
                    .as_object_mut()
                    .with_context(|| format!("an entry of {key} is not an object"))?;
                for k in ["scheduler", "accel"] {
                    obj.insert(k.into(), meta.get(k).cloned().unwrap_or(Value::Null));
                }
                out.push(entry);
            }
        }
        metas.push(Value::Object(meta));
    }
    let mut out = Map::new();
    out.insert("runs".into(), Value::Array(metas));
    for (key, list) in lists.iter().zip(merged) {
        out.insert((*key).into(), Value::Array(list));
    }
    Ok(out)
}

/// Writes `dir/summary.json` (pretty) and `dir/summary.md`; returns their paths.
pub(crate) fn write_summary(dir: &Path, merged: &Value, md: &str) -> Result<[PathBuf; 2]> {
    let json_path = dir.join("summary.json");
    let text = serde_json::to_string_pretty(merged)? + "\n";
    std::fs::write(&json_path, text).with_context(|| format!("writing {}", json_path.display()))?;
    let md_path = dir.join("summary.md");
    std::fs::write(&md_path, md).with_context(|| format!("writing {}", md_path.display()))?;
    Ok([json_path, md_path])
}

/// `a / b` with two decimals for the summaries' ratio tables, or `-` when it is not defined.
pub(crate) fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

/// Prints a recorded report (markdown, then the files written).
pub(crate) fn print_recorded(md: &str, written: &[PathBuf]) {
    println!();
    print!("{md}");
    println!();
    for path in written {
        println!("written: {}", path.display());
    }
}
