//! `cargo xtask vm`: runs a shell script as root on a sched_ext kernel booted in qemu (or on
//! the host with `--native` when the host kernel has sched_ext), streaming its output.
//!
//! Two channels keep things unambiguous: the kernel console (ttyS0) goes to a file that is
//! scanned afterwards for oopses, WARNs and scheduler error exits, while the script's
//! stdout/stderr goes to a virtio console (hvc0) wired to qemu's stdout, which we read live.
//! `/init` ends that stream with an exit marker carrying a per-run nonce, so neither
//! the command's output nor kernel messages can be mistaken for it.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::accel::{self, Accel, AccelChoice, GuestClock};
use crate::kernel::Kernel;
use crate::qemu_loop::{self, MainLoop};
use crate::steal::CpuTicks;
use crate::{initramfs, logscan, sys, Ctx};

/// Where the script lives in the guest.
const SCRIPT_PATH: &str = "/mq/script.sh";
/// Prefix of streamed guest output on our stdout.
const OUTPUT_PREFIX: &str = "  vm| ";

/// What to run and how.
#[derive(Debug, Clone)]
pub struct VmSpec<'a> {
    pub cpus: u32,
    pub mem_mib: u32,
    pub accel: AccelChoice,
    pub timeout: Duration,
    pub kernel: &'a Kernel,
    /// Every executable directly in these directories is copied to the same absolute path,
    /// and the directories are put in front of PATH.
    pub bin_dirs: Vec<PathBuf>,
    /// Copied to the same absolute path.
    pub extra_files: Vec<PathBuf>,
    /// Exported before the script runs.
    pub env: Vec<(String, String)>,
    /// Run by busybox sh as root; its exit status is the run's.
    pub script: String,
    /// Console lines containing one of these substrings do not fail the run.
    pub allow_log_patterns: Vec<String>,
    /// Run on the host instead (needs root and a host kernel with sched_ext).
    pub native: bool,
    /// Under TCG, run qemu's main loop SCHED_FIFO on the host (see `qemu_loop`): what the
    /// latency measurements ask for.
    pub main_loop_fifo: bool,
    /// What the guest's clocks count (instructions: TCG only).
    pub clock: GuestClock,
}

/// The result of a run whose guest reported an exit status and whose kernel log is clean.
#[derive(Debug, Clone)]
pub struct VmOutcome {
    pub exit_status: i32,
    /// The script's output (stdout and stderr interleaved), without the exit marker.
    pub output: String,
    pub accel: Accel,
    /// How qemu's main-loop thread was scheduled on the host (TCG's guest timers fire there).
    pub main_loop: MainLoop,
    /// `uname -r` of the kernel that ran the script.
    pub kernel_release: String,
    /// The kernel console log (native runs: the new dmesg lines).
    pub console_log: PathBuf,
    /// The host's steal time during the run, a share of its CPU time (0-1; `None` where
    /// `/proc/stat` had no answer): see [`crate::steal`].
    pub host_steal: Option<f64>,
    /// What the guest's clocks counted.
    pub clock: GuestClock,
}

/// Runs `spec`; fails on timeout, a guest that died, or a suspicious kernel log.
/// What every "run our release binaries on a sched_ext kernel" command does
/// first: refuse `--native` on a host without sched_ext, build the workspace
/// in release, and pick the kernel (the host's when native). Returns the
/// release directory and the kernel.
pub fn prepare_release(ctx: &Ctx, native: bool, kernel_path: Option<PathBuf>) -> Result<(PathBuf, Kernel)> {
    if native {
        check_native()?;
    }
    let release_dir = crate::cargo::build_release(&ctx.deps, &ctx.ws)?;
    let kernel = if native {
        Kernel::host()
    } else {
        crate::kernel::ensure(kernel_path)?
    };
    Ok((release_dir, kernel))
}

/// Environment variable telling the guest command its accelerator:
/// `tcg`, `kvm` or `native`.
pub const ACCEL_ENV: &str = "MQ_ACCEL";
/// Environment variable telling the guest command what its clocks count: `host` or
/// `instructions` ([`GuestClock`]).
pub const CLOCK_ENV: &str = "MQ_GUEST_CLOCK";

/// The accelerator a VM run with `choice` gets on this machine (probing KVM once, as
/// [`run`] does), for a caller that picks the rest of its spec by it.
pub fn resolve_accel(ctx: &Ctx, choice: AccelChoice, kernel: &Kernel) -> Result<Accel> {
    let (vm_dir, _lock) = locked_vm_dir(ctx)?;
    accel::resolve(ctx, choice, kernel, &vm_dir)
}

/// `target/vm`, made if missing, with its lock held until the file is dropped: runs share
/// it (initramfs, console.log, the KVM probe's verdict), one at a time.
fn locked_vm_dir(ctx: &Ctx) -> Result<(PathBuf, std::fs::File)> {
    let vm_dir = ctx.ws.target_dir.join("vm");
    std::fs::create_dir_all(&vm_dir).with_context(|| format!("{}", vm_dir.display()))?;
    let lock = lock(&vm_dir.join("lock"))?;
    Ok((vm_dir, lock))
}

pub fn run(ctx: &Ctx, spec: &VmSpec) -> Result<VmOutcome> {
    if spec.native {
        clock_possible(Accel::Native, spec.clock)?;
        return run_native(ctx, spec);
    }
    let (vm_dir, _lock) = locked_vm_dir(ctx)?;
    let accel = accel::resolve(ctx, spec.accel, spec.kernel, &vm_dir)?;
    clock_possible(accel, spec.clock)?;
    let (maj, min, patch) = ctx.deps.qemu_version;
    println!(
        "vm: kernel {}, accel {accel} (qemu {maj}.{min}.{patch}), {} CPUs, {} MiB, timeout {} s{}",
        spec.kernel.version,
        spec.cpus,
        spec.mem_mib,
        spec.timeout.as_secs(),
        match spec.clock {
            GuestClock::Host => "",
            GuestClock::Instructions => ", guest clock: 1 ns per instruction (qemu icount)",
        }
    );

    let nonce = new_nonce();
    // The guest learns how it is emulated: timing-sensitive programs scale
    // their parameters under TCG, where a context switch costs ~100x more.
    let mut env = spec.env.clone();
    env.push((ACCEL_ENV.into(), accel.to_string()));
    env.push((CLOCK_ENV.into(), spec.clock.to_string()));
    let init = initramfs::init_script(&initramfs::InitParams {
        path_prefix: &spec.bin_dirs,
        env: &env,
        script_path: SCRIPT_PATH,
        nonce: &nonce,
    });
    let contents = initramfs::Contents {
        host_tools: initramfs::HOST_TOOLS.iter().map(|t| t.to_string()).collect(),
        bin_dirs: spec.bin_dirs.clone(),
        extra_files: spec.extra_files.clone(),
        generated: vec![
            ("/init".into(), init, 0o755),
            (SCRIPT_PATH.into(), spec.script.clone(), 0o644),
        ],
    };
    let initrd = vm_dir.join("initramfs.cpio");
    let started = Instant::now();
    initramfs::build(&contents, &vm_dir.join("initramfs"), &initrd)?;
    let size_mib = initrd.metadata().map(|m| m.len()).unwrap_or(0) as f64 / 1048576.0;
    println!(
        "vm: initramfs {:.1} MiB packed in {:.1} s",
        size_mib,
        started.elapsed().as_secs_f64()
    );

    let console_log = vm_dir.join("console.log");
    let boot_spec = Boot {
        kernel: spec.kernel,
        initrd: &initrd,
        accel,
        cpus: spec.cpus,
        mem_mib: spec.mem_mib,
        timeout: spec.timeout,
        console_log: &console_log,
        nonce: &nonce,
        stream_prefix: Some(OUTPUT_PREFIX),
        main_loop_fifo: spec.main_loop_fifo,
        clock: spec.clock,
    };
    let started = Instant::now();
    let ticks = CpuTicks::now();
    let raw = boot(ctx, &boot_spec)?;
    let elapsed = started.elapsed().as_secs_f64();
    let host_steal = steal_since(ticks);
    let log = std::fs::read_to_string(&console_log).unwrap_or_default();
    let outcome = judge(&raw, &log, &spec.allow_log_patterns, spec.timeout).with_context(|| {
        format!(
            "VM run failed after {elapsed:.1} s ({}; console log: {})",
            steal_words(host_steal),
            console_log.display()
        )
    })?;
    println!(
        "vm: guest finished in {elapsed:.1} s, exit status {outcome}; {}",
        steal_words(host_steal)
    );
    Ok(VmOutcome {
        exit_status: outcome,
        output: raw.output,
        accel,
        main_loop: raw.main_loop,
        kernel_release: kernel_release(&log).unwrap_or_else(|| spec.kernel.version.clone()),
        console_log,
        host_steal,
        clock: spec.clock,
    })
}

/// Turns a finished boot into the command's exit status, or an error explaining what the
/// kernel log or the missing marker says.
fn judge(raw: &RawBoot, log: &str, allow: &[String], timeout: Duration) -> Result<i32> {
    let findings = logscan::scan(log, allow);
    let findings_report = logscan::report(log, &findings, 3);
    // The excerpts already show context around findings; keep the tail short then.
    let tail_lines = if findings.is_empty() { 40 } else { 15 };
    if raw.timed_out {
        bail!(
            "timed out after {} s; qemu killed\n{}--- console tail:\n{}",
            timeout.as_secs(),
            findings_report,
            logscan::tail(log, tail_lines)
        );
    }
    let Some(status) = raw.exit_status else {
        bail!(
            "the guest died without reporting an exit status (qemu: {}{})\n{}--- console tail:\n{}",
            raw.qemu_status,
            // qemu's stderr was streamed already; its first lines say what happened.
            raw.qemu_stderr
                .lines()
                .take(3)
                .map(|l| format!(", {l}"))
                .collect::<String>(),
            findings_report,
            logscan::tail(log, tail_lines)
        );
    };
    if !findings.is_empty() {
        bail!("the kernel log shows problems (command exit status {status}):\n{findings_report}");
    }
    Ok(status)
}

/// The release in the console's `Linux version <release> (...)` banner.
fn kernel_release(log: &str) -> Option<String> {
    log.lines()
        .find_map(|l| l.split("Linux version ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string)
}

/// One qemu boot, shared by real runs and the KVM probe.
pub struct Boot<'a> {
    pub kernel: &'a Kernel,
    pub initrd: &'a Path,
    pub accel: Accel,
    pub cpus: u32,
    pub mem_mib: u32,
    pub timeout: Duration,
    pub console_log: &'a Path,
    pub nonce: &'a str,
    /// Stream guest output to our stdout with this prefix (None: silent).
    pub stream_prefix: Option<&'a str>,
    /// Under TCG, run qemu's main loop SCHED_FIFO on the host.
    pub main_loop_fifo: bool,
    /// What the guest's clocks count.
    pub clock: GuestClock,
}

/// What a boot produced, before judging it.
pub struct RawBoot {
    pub exit_status: Option<i32>,
    pub output: String,
    pub timed_out: bool,
    pub qemu_status: String,
    pub qemu_stderr: String,
    /// How qemu's main-loop thread was scheduled on the host.
    pub main_loop: MainLoop,
}

/// Boots qemu, streams hvc0, enforces the timeout.
pub fn boot(ctx: &Ctx, b: &Boot) -> Result<RawBoot> {
    let _ = std::fs::remove_file(b.console_log);
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-nodefaults", "-no-reboot", "-display", "none"])
        .args(accel::qemu_args(b.accel, ctx.deps.qemu_version, b.clock))
        .args(["-smp", &b.cpus.to_string(), "-m", &b.mem_mib.to_string()])
        .arg("-kernel")
        .arg(&b.kernel.vmlinuz)
        .arg("-initrd")
        .arg(b.initrd)
        // panic=-1 reboots at once on a panic, which -no-reboot turns into qemu exiting; no
        // oops=panic, so an oops is reported from the log while the guest carries on.
        .args(["-append", "console=ttyS0 panic=-1 loglevel=7 printk.devkmsg=on"])
        .arg("-serial")
        .arg(format!("file:{}", b.console_log.display()))
        .args(["-device", "virtio-serial-pci"])
        .args(["-chardev", "stdio,id=out,signal=off"])
        .args(["-device", "virtconsole,chardev=out"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let described = sys::describe(&cmd);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{described}`"))?;
    let main_loop = match (b.accel, b.main_loop_fifo) {
        (Accel::Tcg, true) => qemu_loop::raise(child.id()),
        (Accel::Tcg, false) => MainLoop::Other("not asked for".into()),
        _ => MainLoop::Other("guest timers are the host kernel's".into()),
    };
    if b.stream_prefix.is_some() {
        println!("vm: qemu's main loop runs {main_loop} on the host");
    }
    let stdout = child.stdout.take().context("qemu stdout")?;
    let stderr = child.stderr.take().context("qemu stderr")?;
    let prefix = b.stream_prefix.map(str::to_string);
    let nonce = b.nonce.to_string();
    let out_thread = std::thread::spawn(move || stream(stdout, prefix.as_deref(), Some(&nonce)));
    let verbose = b.stream_prefix.is_some();
    let vm_stopped = Arc::new(AtomicBool::new(false));
    let vm_stopped_writer = Arc::clone(&vm_stopped);
    let err_thread = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            if verbose {
                eprintln!("qemu| {line}");
            }
            // On a KVM internal error qemu stops the guest but keeps running: no point
            // waiting for the timeout.
            if line.contains("KVM internal error") {
                vm_stopped_writer.store(true, Ordering::Relaxed);
            }
            text.push_str(&line);
            text.push('\n');
        }
        text
    });

    let deadline = Instant::now() + b.timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for qemu")? {
            break status;
        }
        if vm_stopped.load(Ordering::Relaxed) {
            // Give qemu a moment to finish printing the register dump, for the report.
            std::thread::sleep(Duration::from_millis(300));
            let _ = child.kill();
            break child.wait().context("waiting for killed qemu")?;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait().context("waiting for killed qemu")?;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (output, exit_status) = out_thread
        .join()
        .map_err(|_| anyhow::anyhow!("output reader panicked"))?;
    let qemu_stderr = err_thread.join().unwrap_or_default();
    Ok(RawBoot {
        exit_status,
        output,
        timed_out,
        qemu_status: status.to_string(),
        qemu_stderr,
        main_loop,
    })
}

/// Reads lines from `reader` until EOF, echoing them with `prefix`, and collects them.
/// With a nonce, the exit marker is recognised (and not echoed or collected).
pub fn stream(reader: impl Read, prefix: Option<&str>, nonce: Option<&str>) -> (String, Option<i32>) {
    let mut reader = BufReader::new(reader);
    let mut output = String::new();
    let mut exit = None;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        // The guest's tty turns "\n" into "\r\n".
        let text = String::from_utf8_lossy(&buf);
        let mut line = text.trim_end_matches(['\n', '\r']);
        if let Some((before, status)) = nonce.and_then(|n| initramfs::find_exit_marker(line, n)) {
            exit = Some(status);
            line = before;
            if line.is_empty() {
                continue;
            }
        }
        if let Some(prefix) = prefix {
            println!("{prefix}{line}");
        }
        output.push_str(line);
        output.push('\n');
    }
    (output, exit)
}

/// Whether `--native` can work here: a host kernel with sched_ext, and root.
pub fn check_native() -> Result<()> {
    if !Path::new("/sys/kernel/sched_ext/state").exists() {
        bail!(
            "--native: this kernel ({}) has no sched_ext (/sys/kernel/sched_ext/state is missing)",
            host_release()
        );
    }
    if !sys::is_root() {
        bail!("--native: sched_ext schedulers need root; run as root");
    }
    Ok(())
}

/// Runs the script on the host, for machines whose own kernel has sched_ext.
fn run_native(ctx: &Ctx, spec: &VmSpec) -> Result<VmOutcome> {
    check_native()?;
    let dir = ctx.ws.target_dir.join("vm");
    std::fs::create_dir_all(&dir)?;
    let script = dir.join("native-script.sh");
    std::fs::write(&script, &spec.script).with_context(|| format!("{}", script.display()))?;
    let mut path: Vec<PathBuf> = spec.bin_dirs.clone();
    path.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    let dmesg_before = dmesg_lines();
    println!("vm: --native on {} (no VM)", host_release());

    let (reader, writer) = std::io::pipe().context("pipe")?;
    let mut cmd = Command::new("sh");
    cmd.arg(&script)
        .env("PATH", std::env::join_paths(path)?)
        .env("MQ_NATIVE", "1")
        .env(ACCEL_ENV, "native")
        .env(CLOCK_ENV, GuestClock::Host.to_string())
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer);
    let mut child = cmd.spawn().context("cannot start sh")?;
    drop(cmd); // closes our copies of the pipe's write end, so EOF arrives when sh exits
    let out_thread = std::thread::spawn(move || stream(reader, Some(OUTPUT_PREFIX), None));
    let ticks = CpuTicks::now();
    let deadline = Instant::now() + spec.timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            child.wait()?;
            bail!("--native: timed out after {} s", spec.timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (output, _) = out_thread
        .join()
        .map_err(|_| anyhow::anyhow!("output reader panicked"))?;
    let host_steal = steal_since(ticks);
    let new_log: String = dmesg_lines()
        .into_iter()
        .skip(dmesg_before.len())
        .map(|l| l + "\n")
        .collect();
    let console_log = dir.join("native-dmesg.log");
    std::fs::write(&console_log, &new_log)?;
    let exit_status = status.code().unwrap_or(128);
    let findings = logscan::scan(&new_log, &spec.allow_log_patterns);
    if !findings.is_empty() {
        bail!(
            "the kernel log shows problems (command exit status {exit_status}):\n{}",
            logscan::report(&new_log, &findings, 3)
        );
    }
    Ok(VmOutcome {
        exit_status,
        output,
        accel: Accel::Native,
        main_loop: MainLoop::Other("no VM".into()),
        kernel_release: host_release(),
        console_log,
        host_steal,
        clock: GuestClock::Host,
    })
}

/// Only TCG can count the guest's time in instructions (qemu's icount).
fn clock_possible(accel: Accel, clock: GuestClock) -> Result<()> {
    if clock == GuestClock::Instructions && accel != Accel::Tcg {
        bail!("--clock instructions needs a VM under TCG (qemu's icount); this run is {accel}");
    }
    Ok(())
}

/// The host's steal share since `before` (see [`VmOutcome::host_steal`]).
fn steal_since(before: Option<CpuTicks>) -> Option<f64> {
    before.zip(CpuTicks::now()).and_then(|(a, b)| a.steal_share(&b))
}

/// `host steal 4.2% of CPU time`, or that it is unknown.
pub fn steal_words(share: Option<f64>) -> String {
    share.map_or("host steal unknown".into(), |s| {
        format!("host steal {:.1}% of CPU time", s * 100.0)
    })
}

fn host_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn dmesg_lines() -> Vec<String> {
    sys::output(&mut Command::new("dmesg"))
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// A per-run token for the exit marker.
pub fn new_nonce() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{:x}{:x}", nanos, std::process::id())
}

/// An exclusive lock on `path`, held until the returned file is dropped.
pub(crate) fn lock(path: &Path) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::create(path).with_context(|| format!("{}", path.display()))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        println!("vm: waiting for another VM run to finish ({})", path.display());
        // SAFETY: as above.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!("cannot lock {}", path.display());
        }
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(exit_status: Option<i32>, timed_out: bool) -> RawBoot {
        RawBoot {
            exit_status,
            output: String::new(),
            timed_out,
            qemu_status: "exit status: 0".into(),
            qemu_stderr: String::new(),
            main_loop: MainLoop::Fifo(10),
        }
    }

    #[test]
    fn only_tcg_counts_guest_time_in_instructions() {
        assert!(clock_possible(Accel::Tcg, GuestClock::Instructions).is_ok());
        for accel in [Accel::Kvm, Accel::Native] {
            assert!(clock_possible(accel, GuestClock::Host).is_ok());
            let err = clock_possible(accel, GuestClock::Instructions)
                .unwrap_err()
                .to_string();
            assert!(err.contains("needs a VM under TCG"), "{err}");
        }
    }

    #[test]
    fn stream_strips_cr_and_marker() {
        let marker = initramfs::exit_marker("n1", "3");
        let input = format!("hello\r\nworld\r\nno newline{marker}\r\nafter\n");
        let (out, exit) = stream(input.as_bytes(), None, Some("n1"));
        assert_eq!(exit, Some(3));
        assert_eq!(out, "hello\nworld\nno newline\nafter\n");
    }

    #[test]
    fn judge_clean_run_returns_status() {
        let log = "Linux version 7.3.4+deb13-cloud-amd64 (x)\nsched_ext: BPF scheduler \"mq\" enabled\n";
        assert_eq!(
            judge(&raw(Some(3), false), log, &[], Duration::from_secs(1)).unwrap(),
            3
        );
        assert_eq!(kernel_release(log).as_deref(), Some("7.3.4+deb13-cloud-amd64"));
    }

    #[test]
    fn judge_fails_on_log_problems_even_when_command_succeeds() {
        let log = "ok\nBUG: soft lockup - CPU#0 stuck for 22s!\n";
        let err = judge(&raw(Some(0), false), log, &[], Duration::from_secs(1)).unwrap_err();
        assert!(format!("{err:#}").contains("soft lockup"));
        let allow = vec!["soft lockup".to_string()];
        assert!(judge(&raw(Some(0), false), log, &allow, Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn judge_reports_timeout_and_death() {
        let err = judge(&raw(None, true), "boot\n", &[], Duration::from_secs(5)).unwrap_err();
        assert!(err.to_string().contains("timed out after 5 s"));
        let err = judge(
            &raw(None, false),
            "Kernel panic - not syncing\n",
            &[],
            Duration::from_secs(5),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("died"), "{err}");
        assert!(err.contains("kernel panic"), "{err}");
    }
}
