//! `cargo xtask test`: everything CI checks, in order, failing fast: formatting, clippy, the
//! host test suite, the loom models of our lock-free code, then the sched_ext integration tests
//! in a VM on a sched_ext kernel.
//!
//! Integration tests that need sched_ext follow a naming convention
//! (`<crate>/tests/sched_ext*.rs`). On the host they skip themselves (`#[ignore = "..."]`,
//! or by checking for sched_ext); in the VM they run with `--include-ignored` and
//! `MQ_REQUIRE_SCHED_EXT=1`, so that a missing sched_ext is a failure, not a skip.
//! One 2-vCPU VM runs them all, because a TCG boot costs seconds and the tests take minutes,
//! except `<crate>/tests/sched_ext_smp*.rs`: a second boot with 4 vCPUs (`--smp-cpus`) runs
//! those, the multi-CPU checks; and `<crate>/tests/sched_ext_timing*.rs`, which bound
//! durations of the scheduler's own paths: a third boot with 1 vCPU runs those under TCG with
//! the instruction clock (qemu's icount), where no host stall is in a duration. Last, `cargo
//! xtask experiments --quick` runs (its own boot) and its report is checked.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::accel::{Accel, AccelChoice, GuestClock};
use crate::cargo::{self, Artifact};
use crate::{kernel, sys, vm, Ctx};

/// Integration test targets whose name starts with this run in the VM.
const SCHED_EXT_PREFIX: &str = "sched_ext";
/// Of those, targets whose name starts with this run in a second boot with more vCPUs
/// ([`DEFAULT_SMP_CPUS`] unless `--smp-cpus` says otherwise): the scheduler's behaviour beyond
/// 2 CPUs, kept to a few minutes in CI (a 4-vCPU TCG guest on a 2-core CI machine runs at half
/// speed; 8 vCPUs, for the full check, at a quarter).
const SMP_PREFIX: &str = "sched_ext_smp";
/// Of those, targets whose name starts with this bound the durations of the scheduler's own
/// paths, and run in a 1-vCPU boot whose clock counts the guest's instructions under TCG
/// (with more vCPUs one host thread runs them in turn, and each waits for the others').
const TIMING_PREFIX: &str = "sched_ext_timing";
const TIMING_CPUS: u32 = 1;
const MAIN_CPUS: u32 = 2;
const DEFAULT_SMP_CPUS: u32 = 4;
const _: () = assert!(
    DEFAULT_SMP_CPUS > MAIN_CPUS,
    "the SMP boot has more CPUs than the main one"
);
/// Each VM boot; TCG on 2 cores is slow, but the suite must stay well under 40 min.
const VM_TIMEOUT_SECS: u64 = 1500;
const SUMMARY_TAG: &str = "MQ_TEST_SUMMARY";

/// Options of `cargo xtask test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Kernel image (bzImage) for the VM; default: $MQ_KERNEL, the cache, or a download.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// How qemu runs the VM.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    /// Stop after the host tests (no sched_ext tests).
    #[arg(long, conflicts_with = "vm_only")]
    pub skip_vm: bool,
    /// Run only the sched_ext tests in the VM (no formatting, clippy, host tests or loom):
    /// the quick loop while working on the scheduler. CI never passes it.
    #[arg(long)]
    pub vm_only: bool,
    /// Run only the sched_ext tests whose name contains this (libtest's filter, passed to
    /// every sched_ext test executable).
    #[arg(long, value_name = "SUBSTRING")]
    pub filter: Option<String>,
    /// Do not run `cargo xtask experiments --quick` and check its report (the last step).
    #[arg(long)]
    pub skip_experiments: bool,
    /// Hold an exclusive flock on this file during each VM boot only (as `cargo xtask
    /// experiments --vm-lock`), so that runs sharing one machine take turns at the VM.
    #[arg(long, value_name = "PATH")]
    pub vm_lock: Option<PathBuf>,
    /// vCPUs of the boot that runs the `sched_ext_smp*` tests (more than the main boot's 2).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_SMP_CPUS,
          value_parser = clap::value_parser!(u32).range(i64::from(MAIN_CPUS) + 1..=64))]
    pub smp_cpus: u32,
}

pub fn run(ctx: &Ctx, args: &TestArgs) -> Result<()> {
    let started = Instant::now();
    if !args.vm_only {
        step(ctx, "formatting", &["fmt", "--all", "--", "--check"])?;
        step(
            ctx,
            "clippy",
            &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"],
        )?;
        step(ctx, "host tests", &["test", "--workspace"])?;
        loom_models(ctx)?;
    }
    if args.skip_vm {
        println!("test: --skip-vm: sched_ext tests not run");
        return Ok(());
    }

    println!("test: building sched_ext test executables");
    let artifacts = cargo::build(&ctx.deps, &ctx.ws, &["test", "--workspace", "--no-run"])?;
    let tests = select_sched_ext_tests(&artifacts);
    if tests.is_empty() {
        println!(
            "test: no sched_ext test executables (files <crate>/tests/{SCHED_EXT_PREFIX}*.rs); VM skipped"
        );
        return Ok(());
    }
    for t in &tests {
        println!("test:   {} ({})", t.target_name, t.package);
    }

    let native = Path::new("/sys/kernel/sched_ext/state").exists() && sys::is_root();
    let kernel = if native {
        kernel::Kernel::host()
    } else {
        kernel::ensure(args.kernel.clone())?
    };
    let (timing, rest) = split_by_prefix(tests, TIMING_PREFIX);
    let (smp, main) = split_by_prefix(rest, SMP_PREFIX);
    for (cpus, tests) in [(MAIN_CPUS, main), (args.smp_cpus, smp)] {
        if !tests.is_empty() {
            boot(ctx, args, &kernel, native, cpus, GuestClock::Host, &tests)?;
        }
    }
    if !timing.is_empty() {
        // KVM and the host keep real time, which is the guest's own there.
        let clock = if !native && vm::resolve_accel(ctx, args.accel, &kernel)? == Accel::Tcg {
            GuestClock::Instructions
        } else {
            GuestClock::Host
        };
        boot(ctx, args, &kernel, native, TIMING_CPUS, clock, &timing)?;
    }
    if !args.vm_only && !args.skip_experiments {
        quick_experiments(ctx, args)?;
    }
    println!("test: all passed in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// One VM (or the host, `native`) with `cpus` vCPUs and `clock` running `tests`; fails if
/// any failed.
fn boot(
    ctx: &Ctx,
    args: &TestArgs,
    kernel: &kernel::Kernel,
    native: bool,
    cpus: u32,
    clock: GuestClock,
    tests: &[Artifact],
) -> Result<()> {
    println!(
        "test: sched_ext boot with {cpus} vCPUs, {clock} clock: {}",
        tests
            .iter()
            .map(|t| t.target_name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let spec = vm::VmSpec {
        cpus,
        // The initramfs carries every debug binary of the workspace and the test
        // executables (~1.5 GiB since the two schedulers' test and bench binaries): the
        // kernel holds the image and its unpacked files at once, and with 4 GiB it dropped
        // files ("Initramfs unpacking failed"). The host has 24 GiB.
        mem_mib: 8192,
        accel: args.accel,
        timeout: Duration::from_secs(VM_TIMEOUT_SECS),
        kernel,
        bin_dirs: vec![ctx.ws.target_dir.join("debug")],
        extra_files: tests.iter().map(|t| t.executable.clone()).collect(),
        env: vec![
            ("MQ_REQUIRE_SCHED_EXT".into(), "1".into()),
            ("RUST_BACKTRACE".into(), "1".into()),
        ],
        script: script(tests, args.filter.as_deref()),
        // scx_mqland's decisions are taken by its process: killed (its sched_ext test does
        // that on purpose), nothing dispatches until the kernel's watchdog ejects it, and
        // the kernel logs that as a stall. Its other tests check that it keeps running and
        // detaches cleanly themselves.
        allow_log_patterns: vec!["mqland_".into()],
        native,
        // SCHED_OTHER: a 4-vCPU boot with the main loop SCHED_FIFO once died in early boot
        // (an unexpected int3 while the kernel patched its text: an emulator race, see
        // qemu_loop.rs), and these are pass/fail tests, not latency measurements.
        main_loop_fifo: false,
        clock,
    };
    let lock = args.vm_lock.as_deref().map(vm::lock).transpose()?;
    let outcome = vm::run(ctx, &spec)?;
    drop(lock);
    let (_, failed_executables) =
        parse_summary(&outcome.output).context("the test script printed no summary (it died early?)")?;
    let totals = libtest_totals(&outcome.output);
    println!(
        "sched_ext tests ({cpus} vCPUs): {} passed, {} failed ({} ignored; {failed_executables} of \
         {} executables failed; {}, {})",
        totals.passed,
        totals.failed,
        totals.ignored,
        tests.len(),
        outcome.accel,
        outcome.kernel_release
    );
    if failed_executables > 0 || outcome.exit_status != 0 {
        bail!(
            "sched_ext tests failed in the {cpus}-vCPU boot (exit status {})",
            outcome.exit_status
        );
    }
    Ok(())
}

/// `(matching, rest)`: the executables whose target name starts with `prefix` (they need a
/// boot of their own) and the others.
pub fn split_by_prefix(tests: Vec<Artifact>, prefix: &str) -> (Vec<Artifact>, Vec<Artifact>) {
    tests.into_iter().partition(|t| t.target_name.starts_with(prefix))
}

/// `cargo xtask experiments --quick` (its own VM boot; the report loaded in headless
/// Chromium), then the report's structure: every experiment ran and produced rows.
fn quick_experiments(ctx: &Ctx, args: &TestArgs) -> Result<()> {
    println!("test: cargo xtask experiments --quick");
    let t = Instant::now();
    let run = crate::experiments::run(
        ctx,
        &crate::experiments::ExperimentsArgs {
            quick: true,
            only: None,
            kernel: args.kernel.clone(),
            accel: args.accel,
            timeout_secs: 900,
            debug_build: false,
            no_browser: false,
            vm_lock: args.vm_lock.clone(),
        },
    );
    let dir = crate::experiments::output_dir(ctx);
    // The structure is checked even when an experiment failed: that message names them all.
    crate::experiments::check_report(&dir).context("the experiments report")?;
    run.context("cargo xtask experiments --quick")?;
    println!(
        "test: experiments --quick passed in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Crates whose lock-free code has loom models: `#[cfg(loom)]` tests with
/// `loom` in their path, run with `--cfg loom` in a target dir of their own
/// (the flag would otherwise rebuild the whole workspace).
const LOOM_CRATES: &[&str] = &["snap-ipc", "pony-express"];

fn loom_models(ctx: &Ctx) -> Result<()> {
    for krate in LOOM_CRATES {
        let args = ["test", "-p", krate, "--release", "--lib", "loom"];
        println!(
            "test: loom models: RUSTFLAGS='--cfg loom' cargo {}",
            args.join(" ")
        );
        let mut cmd = cargo::command(&ctx.deps, &ctx.ws, &args);
        cmd.env("RUSTFLAGS", "--cfg loom")
            .env("CARGO_TARGET_DIR", ctx.ws.target_dir.join("loom"));
        sys::run(&mut cmd).with_context(|| format!("loom models of {krate} failed"))?;
    }
    Ok(())
}

fn step(ctx: &Ctx, name: &str, args: &[&str]) -> Result<()> {
    println!("test: {name}: cargo {}", args.join(" "));
    cargo::run(&ctx.deps, &ctx.ws, args).with_context(|| format!("step `{name}` failed"))
}

/// Integration-test harnesses named `sched_ext*`, once each.
pub fn select_sched_ext_tests(artifacts: &[Artifact]) -> Vec<Artifact> {
    let mut tests: Vec<Artifact> = artifacts
        .iter()
        .filter(|a| a.is_test && a.kinds.iter().any(|k| k == "test"))
        .filter(|a| a.target_name.starts_with(SCHED_EXT_PREFIX))
        .cloned()
        .collect();
    tests.sort_by(|a, b| a.target_name.cmp(&b.target_name));
    tests.dedup_by(|a, b| a.executable == b.executable);
    tests
}

/// The guest script: every test executable in turn (with libtest's `filter`, if any), a
/// header before each, a summary line at the end, and a non-zero exit if any failed. The
/// `sched_ext_timing*` executables print what their passing tests measured too
/// (`--show-output`): their figures are the record of the scheduler's path lengths.
pub fn script(tests: &[Artifact], filter: Option<&str>) -> String {
    let filter = filter.map(|f| format!(" {}", sys::quote(f))).unwrap_or_default();
    let mut s = format!(
        "passed=0\nfailed=0\nfailed_names=\n\
         run_test() {{\n\
         \techo \"=== sched_ext test $1 ($2)\"\n\
         \tif \"$2\" --include-ignored --test-threads=1 $3{filter}; then passed=$((passed + 1));\n\
         \telse echo \"=== FAILED: $1\"; failed=$((failed + 1)); failed_names=\"$failed_names $1\"; fi\n\
         }}\n",
    );
    for t in tests {
        let show = if t.target_name.starts_with(TIMING_PREFIX) {
            "--show-output"
        } else {
            "''"
        };
        s.push_str(&format!(
            "run_test {} {} {show}\n",
            sys::quote(&t.target_name),
            sys::quote(&t.executable.to_string_lossy())
        ));
    }
    s.push_str(&format!(
        "echo \"{SUMMARY_TAG} passed=$passed failed=$failed failed:$failed_names\"\n\
         [ \"$failed\" -eq 0 ]\n"
    ));
    s
}

/// `(passed, failed)` from the script's summary line.
pub fn parse_summary(output: &str) -> Option<(u32, u32)> {
    let line = output.lines().rev().find(|l| l.starts_with(SUMMARY_TAG))?;
    let field = |name: &str| -> Option<u32> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
    };
    Some((field("passed=")?, field("failed=")?))
}

/// Test counts summed over libtest's `test result:` lines.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub passed: u32,
    pub failed: u32,
    pub ignored: u32,
}

/// Sums `test result: ok. 3 passed; 1 failed; 2 ignored; ...` lines.
pub fn libtest_totals(output: &str) -> Totals {
    let mut totals = Totals::default();
    for line in output.lines() {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            continue;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u32>() else {
                continue;
            };
            match label {
                "passed" => totals.passed += count,
                "failed" => totals.failed += count,
                "ignored" => totals.ignored += count,
                _ => {}
            }
        }
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(name: &str, kind: &str, is_test: bool, exe: &str) -> Artifact {
        Artifact {
            package: "scx_microquanta".into(),
            target_name: name.into(),
            kinds: vec![kind.into()],
            is_test,
            executable: PathBuf::from(exe),
        }
    }

    #[test]
    fn smp_and_timing_tests_get_boots_of_their_own() {
        let all = vec![
            artifact("sched_ext", "test", true, "/t/deps/sched_ext-1"),
            artifact("sched_ext_smp", "test", true, "/t/deps/sched_ext_smp-2"),
            artifact("sched_ext_bench", "test", true, "/t/deps/sched_ext_bench-3"),
            artifact("sched_ext_timing", "test", true, "/t/deps/sched_ext_timing-4"),
        ];
        let (timing, rest) = split_by_prefix(all, TIMING_PREFIX);
        let (smp, main) = split_by_prefix(rest, SMP_PREFIX);
        let names = |v: &[Artifact]| v.iter().map(|a| a.target_name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&timing), ["sched_ext_timing"]);
        assert_eq!(names(&smp), ["sched_ext_smp"]);
        assert_eq!(names(&main), ["sched_ext", "sched_ext_bench"]);
    }

    #[test]
    fn selects_only_sched_ext_integration_tests() {
        let all = [
            artifact("sched_ext_attach", "test", true, "/t/deps/sched_ext_attach-1"),
            artifact("sched_ext_attach", "test", true, "/t/deps/sched_ext_attach-1"),
            artifact("host_only", "test", true, "/t/deps/host_only-2"),
            artifact("scx_microquanta", "lib", true, "/t/deps/scx_microquanta-3"),
            artifact("sched_ext_tool", "bin", false, "/t/sched_ext_tool"),
        ];
        let got = select_sched_ext_tests(&all);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].target_name, "sched_ext_attach");
    }

    /// Runs the generated script with stand-ins for test executables.
    #[test]
    fn script_counts_and_fails() {
        let run = |tests: &[Artifact]| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(script(tests, None))
                .output()
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        };
        let ok = artifact("sched_ext_ok", "test", true, "true");
        let bad = artifact("sched_ext bad", "test", true, "false");
        let (success, out) = run(&[ok.clone(), bad]);
        assert!(!success);
        assert_eq!(parse_summary(&out), Some((1, 1)));
        assert!(out.contains("=== FAILED: sched_ext bad"));
        let (success, out) = run(&[ok]);
        assert!(success);
        assert_eq!(parse_summary(&out), Some((1, 0)));
    }

    #[test]
    fn only_the_timing_tests_show_what_their_passing_tests_printed() {
        // `echo` as the test executable prints the arguments the script gives it.
        let args_of = |name: &str| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(script(&[artifact(name, "test", true, "echo")], Some("f")))
                .output()
                .unwrap();
            let out = String::from_utf8_lossy(&out.stdout).into_owned();
            out.lines()
                .find(|l| l.starts_with("--include"))
                .unwrap()
                .to_string()
        };
        assert_eq!(
            args_of("sched_ext_timing"),
            "--include-ignored --test-threads=1 --show-output f"
        );
        assert_eq!(args_of("sched_ext"), "--include-ignored --test-threads=1 f");
    }

    /// The filter reaches every executable as libtest's last argument.
    #[test]
    fn script_passes_the_filter() {
        let dir = std::env::temp_dir().join(format!("xtask-filter-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("fake-test");
        std::fs::write(&exe, "#!/bin/sh\necho \"args: $*\"\n").unwrap();
        std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let t = artifact("sched_ext_x", "test", true, exe.to_str().unwrap());
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script(&[t], Some("groups don't")))
            .output()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let out = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.contains("args: --include-ignored --test-threads=1 groups don't"),
            "{out}"
        );
    }

    #[test]
    fn libtest_result_lines_are_summed() {
        let out = "running 6 tests\n\
                   test result: ok. 5 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 30.1s\n\
                   test foo ... FAILED\n\
                   test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out\n";
        assert_eq!(
            libtest_totals(out),
            Totals {
                passed: 7,
                failed: 1,
                ignored: 1
            }
        );
        assert_eq!(libtest_totals("no results"), Totals::default());
    }

    #[test]
    fn summary_needs_both_counts() {
        assert_eq!(
            parse_summary("MQ_TEST_SUMMARY passed=3 failed=0 failed:"),
            Some((3, 0))
        );
        assert_eq!(parse_summary("MQ_TEST_SUMMARY passed=3"), None);
        assert_eq!(parse_summary("nothing"), None);
    }
}
