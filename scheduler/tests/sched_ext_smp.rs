// SPDX-License-Identifier: GPL-2.0-only
//! System tests of the real scheduler on more CPUs than the main suite's guest has:
//! `cargo xtask test` runs the `sched_ext_smp*` executables in a second boot with 4 vCPUs
//! (`xtask/src/test.rs`). Each test first checks that it got those CPUs, so run in a
//! smaller guest it fails instead of passing without having tested anything.
//!
//! Ignored by a plain `cargo test`, like `tests/sched_ext.rs`; the VM runner checks the
//! kernel log (no `BUG:`, `WARNING:`, stall or error exit) around them.

use std::path::Path;
use std::time::{Duration, Instant};

use mq_class::{current_tid, sysfs, Class};
use mq_experiments::hogs::Hogs;
use mq_experiments::scheduler_process::{exclusive_sched_ext_host as sched_ext_host, SchedulerProcess};

const SCHEDULER: &str = env!("CARGO_BIN_EXE_scx_microquanta");
/// The CPUs the SMP boot gives the guest.
const SMP_CPUS: usize = 4;

fn start(args: &[&str]) -> SchedulerProcess {
    SchedulerProcess::start(Path::new(SCHEDULER), args).expect("scx_microquanta attaches")
}

/// The guest's CPUs, at least [`SMP_CPUS`] of them.
fn smp_cpus() -> usize {
    let n = std::thread::available_parallelism().unwrap().get();
    assert!(
        n >= SMP_CPUS,
        "an SMP test needs {SMP_CPUS} CPUs and got {n}: run it in the SMP boot of `cargo xtask test`"
    );
    n
}

#[test]
#[ignore = "needs a sched_ext kernel, root and 4 CPUs: run by `cargo xtask test` in its SMP VM"]
fn smp_scx_ci_smoke_stress_ng_aggressive_for_45s() {
    // sched-ext/scx's CI smoke test again, on 4 CPUs: placement, stealing and the cpumasks
    // see real concurrency here that 2 CPUs barely exercise.
    let _serial = sched_ext_host();
    let n = smp_cpus().to_string();
    let mut sched = start(&["--watchdog-timeout-ms", "10000"]);
    let status = std::process::Command::new("stress-ng")
        .args(["-t", "31", "--aggressive", "-M", "-c", &n, "-f", &n])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("stress-ng runs");
    assert!(status.success(), "stress-ng exited with {status}");
    std::thread::sleep(Duration::from_secs(14)); // the scheduler runs 45 s in all
    assert!(
        sched.running() && sysfs::microquanta_loaded(),
        "the kernel ejected scx_microquanta"
    );
    sched.stop().unwrap();
}

#[test]
#[ignore = "needs a sched_ext kernel, root and 4 CPUs: run by `cargo xtask test` in its SMP VM"]
fn smp_a_class_spinner_per_cpu_leaves_normal_tasks_their_share() {
    let _serial = sched_ext_host();
    let cpus = smp_cpus();
    let hogs = Hogs::start(cpus, None).unwrap();
    // A period TCG can switch at (see `mq_experiments::accel`): 50% for the class.
    let mut sched = start(&[
        "--period-us",
        "1000",
        "--runtime-us",
        "500",
        "--watchdog-timeout-ms",
        "5000",
    ]);
    let spin = Duration::from_secs(5);
    let before = hogs.cpu_time();
    let spinners: Vec<_> = (0..cpus)
        .map(|_| {
            std::thread::spawn(move || {
                Class::open().unwrap().add(current_tid()).unwrap();
                let end = Instant::now() + spin;
                while Instant::now() < end {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    for s in spinners {
        s.join().unwrap();
    }
    let hog_share = (hogs.cpu_time() - before).as_secs_f64() / (spin.as_secs_f64() * cpus as f64);
    eprintln!(
        "normal hogs got {:.0}% of {cpus} CPUs next to {cpus} MicroQuanta spinners",
        hog_share * 100.0
    );
    assert!(sysfs::microquanta_loaded(), "the kernel ejected scx_microquanta");
    assert!(sched.running());
    // The same bound as the 2-CPU test: normal work keeps the rest of each period (50%
    // here), allowing for emulated timers and a host shared with other work.
    assert!(
        hog_share > 0.25,
        "normal hogs got only {:.0}% of the CPUs",
        hog_share * 100.0
    );
    sched.stop().unwrap();
}
