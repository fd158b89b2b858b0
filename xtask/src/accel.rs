//! Choosing how qemu runs the guest: KVM when it really works, else TCG.
//!
//! `/dev/kvm` existing is not enough: under nested virtualization KVM can fail with an
//! internal error or hang silently. So `auto` boots the real kernel once with a tiny
//! initramfs under KVM and only trusts KVM if that run reports back; the verdict is cached
//! per (qemu version, kernel) in `target/vm/accel-probe.json` so the 20 s cost is paid once.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::deps::QEMU_GOOD_MAJOR;
use crate::kernel::Kernel;
use crate::{initramfs, vm, Ctx};

/// What the user asked for (`--accel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelChoice {
    /// KVM if a probe boot works, else TCG.
    Auto,
    /// Hardware virtualization (fails if /dev/kvm cannot be opened).
    Kvm,
    /// qemu's emulator: slow but works everywhere.
    Tcg,
}

/// How a command actually ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
    /// On the host itself (`--native`), no VM.
    Native,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
            Accel::Native => "native",
        })
    }
}

/// What the guest's clocks count under TCG (`--clock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum GuestClock {
    /// The host's time: an emulator stall, a slow host or a starved one shows in the guest.
    #[default]
    Host,
    /// qemu's instruction counter (`-icount shift=0`): each guest instruction takes 1 ns of
    /// guest time, so a latency is the length of the path that made it, the same from run
    /// to run and blind to the host's load. What it cannot show is what an instruction
    /// costs on hardware (a cache miss, programming a timer). One host thread runs the vCPUs
    /// in turn, so with more than one a wakeup waits for the others' turns: latencies want
    /// one vCPU. TCG only.
    Instructions,
}

impl fmt::Display for GuestClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GuestClock::Host => "host",
            GuestClock::Instructions => "instructions",
        })
    }
}

/// qemu arguments for `accel` with `clock` (which only TCG can count in instructions).
pub fn qemu_args(accel: Accel, qemu_version: crate::version::Triple, clock: GuestClock) -> Vec<String> {
    let args: &[&str] = match accel {
        // `-cpu host` fails here on MSR 0x10a under nested KVM; `max` works wherever KVM does.
        Accel::Kvm => &["-accel", "kvm", "-cpu", "max"],
        // icount needs the single-threaded TCG; `sleep=on` keeps an idle guest's time going
        // at the host's pace rather than jumping to its next timer, so a boot's waits stay
        // what they are.
        Accel::Tcg if clock == GuestClock::Instructions => &[
            "-accel",
            "tcg,thread=single",
            "-cpu",
            "max",
            "-icount",
            "shift=0,sleep=on",
        ],
        // Older qemu's multi-threaded TCG sometimes oopses while the guest live-patches its
        // text (static keys flip when a sched_ext scheduler attaches): use one thread there.
        Accel::Tcg if qemu_version.0 >= QEMU_GOOD_MAJOR => &["-accel", "tcg,thread=multi", "-cpu", "max"],
        Accel::Tcg => &["-accel", "tcg,thread=single", "-cpu", "max"],
        Accel::Native => &[],
    };
    args.iter().map(|a| a.to_string()).collect()
}

/// Whether we may open /dev/kvm read-write (the first requirement for KVM).
fn kvm_openable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Resolves `choice` to the accelerator to use for `kernel`.
pub fn resolve(ctx: &Ctx, choice: AccelChoice, kernel: &Kernel, vm_dir: &Path) -> Result<Accel> {
    match choice {
        AccelChoice::Tcg => Ok(Accel::Tcg),
        AccelChoice::Kvm if kvm_openable() => Ok(Accel::Kvm),
        AccelChoice::Kvm => bail!("--accel kvm: cannot open /dev/kvm read-write"),
        AccelChoice::Auto if !kvm_openable() => Ok(Accel::Tcg),
        AccelChoice::Auto => {
            let cache_path = vm_dir.join("accel-probe.json");
            let mut cache = read_cache(&cache_path);
            let (maj, min, patch) = ctx.deps.qemu_version;
            let key = format!("qemu {maj}.{min}.{patch} / kernel {}", kernel.version);
            if let Some(verdict) = cache.get(&key) {
                return Ok(if verdict == "kvm" { Accel::Kvm } else { Accel::Tcg });
            }
            println!(
                "vm: probing KVM (one-time, up to 20 s; verdict cached in {})",
                cache_path.display()
            );
            let accel = match probe_kvm(ctx, kernel, vm_dir)? {
                None => Accel::Kvm,
                Some(why) => {
                    println!("vm: KVM does not work here ({why}); using TCG");
                    Accel::Tcg
                }
            };
            cache.insert(key, accel.to_string());
            let text = serde_json::to_string_pretty(&cache)?;
            std::fs::write(&cache_path, text).with_context(|| format!("{}", cache_path.display()))?;
            Ok(accel)
        }
    }
}

fn read_cache(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

/// Boots `kernel` under KVM with an initramfs that only reports back; returns why KVM
/// failed, or None if it works.
fn probe_kvm(ctx: &Ctx, kernel: &Kernel, vm_dir: &Path) -> Result<Option<String>> {
    let nonce = vm::new_nonce();
    let init = initramfs::init_script(&initramfs::InitParams {
        path_prefix: &[],
        env: &[],
        script_path: "/mq/probe.sh",
        nonce: &nonce,
    });
    let contents = initramfs::Contents {
        generated: vec![
            ("/init".into(), init, 0o755),
            ("/mq/probe.sh".into(), "echo kvm-probe-ok\n".into(), 0o644),
        ],
        ..Default::default()
    };
    let initrd = vm_dir.join("accel-probe.cpio");
    initramfs::build(&contents, &vm_dir.join("accel-probe-staging"), &initrd)?;
    let boot = vm::Boot {
        kernel,
        initrd: &initrd,
        accel: Accel::Kvm,
        cpus: 1,
        mem_mib: 256,
        timeout: Duration::from_secs(20),
        console_log: &vm_dir.join("accel-probe-console.log"),
        nonce: &nonce,
        stream_prefix: None,
        main_loop_fifo: false,
        clock: GuestClock::Host,
    };
    let raw = vm::boot(ctx, &boot)?;
    if raw.exit_status == Some(0) && raw.output.contains("kvm-probe-ok") {
        return Ok(None);
    }
    let why = if raw.timed_out {
        format!("no answer in {} s", boot.timeout.as_secs())
    } else {
        raw.qemu_stderr
            .lines()
            .next()
            .map_or_else(|| format!("qemu {}", raw.qemu_status), str::to_string)
    };
    Ok(Some(why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcg_threading_depends_on_qemu_version() {
        assert_eq!(
            qemu_args(Accel::Tcg, (10, 0, 2), GuestClock::Host),
            ["-accel", "tcg,thread=multi", "-cpu", "max"]
        );
        assert_eq!(
            qemu_args(Accel::Tcg, (7, 2, 15), GuestClock::Host),
            ["-accel", "tcg,thread=single", "-cpu", "max"]
        );
        assert_eq!(qemu_args(Accel::Kvm, (7, 2, 15), GuestClock::Host)[1], "kvm");
    }

    #[test]
    fn an_instruction_clock_is_icount_on_single_threaded_tcg() {
        let args = qemu_args(Accel::Tcg, (10, 0, 2), GuestClock::Instructions);
        assert_eq!(
            args,
            [
                "-accel",
                "tcg,thread=single",
                "-cpu",
                "max",
                "-icount",
                "shift=0,sleep=on"
            ]
        );
        // KVM's clock is the host's whatever is asked (vm::run refuses the combination).
        assert!(!qemu_args(Accel::Kvm, (10, 0, 2), GuestClock::Instructions).contains(&"-icount".to_string()));
    }
}
