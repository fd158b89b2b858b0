// SPDX-License-Identifier: GPL-2.0-only
//! System tests of the real scheduler on a real sched_ext kernel.
//!
//! They load `scx_microquanta` into the running kernel, so they are ignored
//! by a plain `cargo test` (libtest prints why) and run by `cargo xtask
//! test` inside a VM booting a sched_ext kernel, or natively with
//! `cargo test -p scx_microquanta --test sched_ext -- --include-ignored
//! --test-threads=1` as root on such a host.
//!
//! Kernel-log checks (no `BUG:`, `WARNING:`, stall or error exit) are done by
//! the VM runner around all of these tests.

use std::path::Path;
use std::time::{Duration, Instant};

use mq_class::{current_tid, Class};
use mq_class::{sysfs, SchedExtState};
use mq_experiments::attempts::up_to_three_runs;
use mq_experiments::children::wait_for_child;
use mq_experiments::hogs::Hogs;
use mq_experiments::scheduler_process::{
    exclusive_sched_ext_host as sched_ext_host, wait_for_state, SchedulerProcess,
};
use mq_experiments::wakeup::{measure, measure_run, summarise_wakeups, ThreadClass, WakeupConfig};

const SCHEDULER: &str = env!("CARGO_BIN_EXE_scx_microquanta");

fn start(args: &[&str]) -> SchedulerProcess {
    SchedulerProcess::start(Path::new(SCHEDULER), args).expect("scx_microquanta attaches")
}

fn cpus() -> usize {
    std::thread::available_parallelism().unwrap().get()
}

#[test]
#[ignore = "needs a sched_ext kernel and root: run by `cargo xtask test` in a VM"]
fn attaches_as_microquanta_and_detaches_cleanly_on_sigint() {
    let _serial = sched_ext_host();
    let sched = start(&[]);
    assert_eq!(sysfs::state(), SchedExtState::Enabled);
    let ops = sysfs::root_ops().expect("root/ops names the scheduler");
    assert!(ops.starts_with("microquanta"), "root/ops = {ops}");

    let status = sched.stop().unwrap();
    assert!(status.success(), "scx_microquanta exited with {status} on SIGINT");
    assert_eq!(sysfs::state(), SchedExtState::Disabled);
    assert_eq!(sysfs::root_ops(), None, "no scheduler is left loaded");
}

#[test]
#[ignore = "needs a sched_ext kernel and root: run by `cargo xtask test` in a VM"]
fn class_membership_is_visible_and_removed_when_the_thread_exits() {
    let _serial = sched_ext_host();
    let sched = start(&[]);
    let class = Class::open().unwrap();
    let tid = std::thread::spawn(move || {
        let tid = current_tid();
        let default_slack = mq_class::timer_slack(tid).unwrap();
        Class::open().unwrap().add(tid).unwrap();
        assert!(Class::open().unwrap().contains(tid).unwrap());
        // A member sleeps with the timer slack of an RT thread, and gets its own back on leaving.
        assert_eq!(
            mq_class::timer_slack(tid).unwrap(),
            mq_class::CLASS_TIMER_SLACK_NS
        );
        assert!(Class::open().unwrap().remove(tid).unwrap());
        assert_eq!(mq_class::timer_slack(tid).unwrap(), default_slack);
        Class::open().unwrap().add(tid).unwrap();
        tid
    })
    .join()
    .unwrap();
    // The BPF exit_task callback drops the exited thread.
    let deadline = Instant::now() + Duration::from_secs(5);
    while class.contains(tid).unwrap() {
        assert!(
            Instant::now() < deadline,
            "exited thread {tid} is still in the class"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    sched.stop().unwrap();
}

#[test]
#[ignore = "needs a sched_ext kernel and root: run by `cargo xtask test` in a VM"]
fn a_microquanta_thread_wakes_sooner_than_a_normal_one_next_to_hogs() {
    let _serial = sched_ext_host();
    // The thread needs 30% of a CPU, more than its fair share next to four
    // hogs per CPU (2/9): a fair scheduler makes it wait, the class must not
    // (a 50% budget; at a longer period under TCG, see mq_experiments::accel).
    let _hogs = Hogs::start(4 * cpus(), None).unwrap();
    let (period_us, runtime_us) = mq_experiments::accel::latency_bandwidth_us();
    let (period, runtime) = (period_us.to_string(), runtime_us.to_string());
    let sched = start(&["--period-us", &period, "--runtime-us", &runtime]);
    let cfg = |class| WakeupConfig {
        period: Duration::from_millis(1),
        samples: 500,
        class,
        work: Duration::from_micros(300),
        cpu: None,
    };
    // What the class promises is a bounded delay, so the tail is what must
    // differ: our wakeup preemption among normal tasks already serves this
    // thread at the median (both near 0.3 ms in the TCG VM), but at p90 it
    // waits 2.7 ms as a normal task against 0.55 ms in the class. p90 rather
    // than p99 because a TCG vCPU can stall for milliseconds at any time; and
    // up to three paired runs, because about one run in several is dominated
    // by such stalls (both p90s at 2.7 ms). Every attempt is printed.
    let (attempts, held) = up_to_three_runs(
        || {
            let normal = measure(cfg(ThreadClass::Normal)).unwrap();
            let mq = measure(cfg(ThreadClass::MicroQuanta)).unwrap();
            eprintln!("normal: {normal:?}\nmicroquanta: {mq:?}");
            assert_eq!((normal.samples, mq.samples), (500, 500));
            (normal.p90, mq.p90)
        },
        |&(normal_p90, mq_p90)| mq_p90 * 2.0 < normal_p90,
    );
    sched.stop().unwrap();
    assert!(
        held,
        "p90 (normal, microquanta) in µs over {} paired runs: {attempts:?}",
        attempts.len()
    );
}

#[test]
#[ignore = "needs a sched_ext kernel and root: run by `cargo xtask test` in a VM"]
fn stress_ng_cpu_and_fork_for_30s_without_a_stall() {
    let _serial = sched_ext_host();
    // A watchdog far below the kernel's 30 s default: any task left runnable
    // for 5 s ejects the scheduler and fails the test.
    let mut sched = start(&["--watchdog-timeout-ms", "5000"]);
    let n = cpus().to_string();
    let status = std::process::Command::new("stress-ng")
        .args(["--cpu", &n, "--fork", &n, "-t", "30", "--metrics-brief"])
        .status()
        .expect("stress-ng runs");
    assert!(status.success(), "stress-ng exited with {status}");
    assert!(sched.running(), "scx_microquanta exited during the stress run");
    assert!(sysfs::microquanta_loaded(), "the kernel ejected scx_microquanta");
    sched.stop().unwrap();
}

#[test]
#[ignore = "needs a sched_ext kernel and root: run by `cargo xtask test` in a VM"]
fn a_spinning_microquanta_thread_per_cpu_leaves_normal_tasks_their_share() {
    let _serial = sched_ext_host();
    let hogs = Hogs::start(cpus(), None).unwrap();
    let mut sched = start(&["--watchdog-timeout-ms", "5000"]);
    let spin = Duration::from_secs(10);
    let before = hogs.cpu_time();
    let spinners: Vec<_> = (0..cpus())
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
    let hog_share = (hogs.cpu_time() - before).as_secs_f64() / (spin.as_secs_f64() * cpus() as f64);
    eprintln!(
        "normal hogs got {:.0}% of the CPUs next to MicroQuanta spinners",
        hog_share * 100.0
    );
    assert!(sysfs::microquanta_loaded(), "the kernel ejected scx_microquanta");
    assert!(sched.running());
    // The class guarantees normal work the rest of each period (50% at the
    // default 20/40 µs); allow for tick-granular enforcement and VM noise.
    assert!(
        hog_share > 0.25,
        "normal hogs got only {:.0}% of the CPUs",
        hog_share * 100.0
    );
    sched.stop().unwrap();
}

#[test]
#[ignore = "needs a sched_ext kernel and root: run by `cargo xtask test` in a VM"]
fn kill_9_reverts_to_the_fair_class_and_hogs_keep_running() {
    let _serial = sched_ext_host();
    let mut hogs = Hogs::start(cpus(), None).unwrap();
    let sched = start(&[]);
    std::thread::sleep(Duration::from_millis(500));
    sched.kill().unwrap();
    wait_for_state(SchedExtState::Disabled, Duration::from_secs(30)).unwrap();

    let before = hogs.cpu_time();
    std::thread::sleep(Duration::from_secs(1));
    let progress = hogs.cpu_time() - before;
    assert!(hogs.running(), "stress-ng died with the scheduler");
    assert!(
        progress > Duration::from_millis(500),
        "hogs made only {progress:?} of progress in 1 s"
    );

    // And a new instance attaches again after the kill.
    start(&[]).stop().unwrap();
}

#[test]
#[ignore = "needs a sched_ext kernel and root: run by `cargo xtask test` in a VM"]
fn mqctl_run_puts_the_command_and_everything_it_starts_in_the_class() {
    let _serial = sched_ext_host();
    let sched = start(&[]);
    let class = Class::open().unwrap();
    // mqctl starts sh as its child and leaves the class; sh forks sleep.
    let mut mqctl = std::process::Command::new(env!("CARGO_BIN_EXE_mqctl"))
        .args(["run", "--", "sh", "-c", "sleep 3 & wait"])
        .spawn()
        .unwrap();
    let sh = child_named(mqctl.id(), "sh");
    let sleeper = child_named(sh, "sleep");
    let members = class.list();
    assert!(members.contains(&sh), "sh {sh} not in {members:?}");
    assert!(
        members.contains(&sleeper),
        "forked sleep {sleeper} not in {members:?}"
    );
    assert!(
        !members.contains(&mqctl.id()),
        "mqctl stayed in the class: {members:?}"
    );

    assert!(mqctl.wait().unwrap().success());
    // Tasks leave the class when the kernel frees them (after reaping, RCU).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let members = class.list();
        if !members.contains(&sh) && !members.contains(&sleeper) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "exited processes left in the class: {members:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    sched.stop().unwrap();
}

#[test]
#[ignore = "needs a sched_ext kernel and root: run by `cargo xtask test` in a VM"]
fn a_command_mqctl_runs_keeps_the_class_slack_through_an_rt_policy_and_gets_its_signals() {
    let _serial = sched_ext_host();
    let sched = start(&[]);
    let mut mqctl = std::process::Command::new(env!("CARGO_BIN_EXE_mqctl"))
        .args(["run", "--", "sleep", "30"])
        .spawn()
        .unwrap();
    let sleeper = child_named(mqctl.id(), "sleep");
    assert_eq!(
        mq_class::timer_slack(sleeper).unwrap(),
        mq_class::CLASS_TIMER_SLACK_NS
    );
    // To SCHED_FIFO and back, as cyclictest does to check its privileges: the kernel puts
    // back the task's default slack, which must be the class's, not the fair class's 50 µs.
    set_policy(sleeper, libc::SCHED_FIFO, 1);
    assert_eq!(
        mq_class::timer_slack(sleeper).unwrap(),
        0,
        "RT tasks have no slack"
    );
    set_policy(sleeper, libc::SCHED_OTHER, 0);
    assert_eq!(
        mq_class::timer_slack(sleeper).unwrap(),
        mq_class::CLASS_TIMER_SLACK_NS
    );
    assert!(Class::open().unwrap().contains(sleeper).unwrap());

    // A SIGTERM to mqctl reaches the command, and mqctl exits as a shell reports it.
    let sent = Instant::now();
    // SAFETY: a signal to our own child, not yet reaped.
    assert_eq!(unsafe { libc::kill(mqctl.id() as i32, libc::SIGTERM) }, 0);
    let status = mqctl.wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{status:?}");
    assert!(
        sent.elapsed() < Duration::from_secs(20),
        "sleep outlived the signal"
    );
    sched.stop().unwrap();
}

/// The pid of the first child of `parent` called `comm`.
fn child_named(parent: u32, comm: &str) -> u32 {
    wait_for_child(parent, comm, Duration::from_secs(10)).unwrap()
}

fn set_policy(pid: u32, policy: libc::c_int, priority: libc::c_int) {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: param outlives the call, which only reads it.
    let rc = unsafe { libc::sched_setscheduler(pid as i32, policy, &param) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
}

#[test]
#[ignore = "needs a sched_ext kernel and root: run by `cargo xtask test` in a VM"]
fn scx_ci_smoke_stress_ng_aggressive_for_45s() {
    // sched-ext/scx's own CI smoke test: the scheduler must survive it with
    // exit 0 from stress-ng (the VM runner also fails on BUG:/WARNING:/stall).
    let _serial = sched_ext_host();
    let mut sched = start(&["--watchdog-timeout-ms", "10000"]);
    let n = cpus().to_string();
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

/// CPU time the calling thread has used.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn pin_current_thread(cpu: usize) {
    set_affinity(cpu..=cpu);
}

/// Lets the calling thread run on CPUs `0..n` (`cpus()` would read its own, maybe pinned,
/// mask).
fn allow_cpus(n: usize) {
    set_affinity(0..n);
}

fn set_affinity(cpus: impl IntoIterator<Item = usize>) {
    set_affinity_of(0, cpus);
}

/// Restricts thread `tid` (0: the calling thread) to `cpus`.
fn set_affinity_of(tid: u32, cpus: impl IntoIterator<Item = usize>) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; we own it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        assert_eq!(
            libc::sched_setaffinity(tid as i32, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
}

/// Spins for `window` and returns the share of it the thread got.
fn spin_share(window: Duration) -> f64 {
    let (start, cpu0) = (Instant::now(), thread_cpu_time());
    while start.elapsed() < window {
        std::hint::spin_loop();
    }
    (thread_cpu_time() - cpu0).as_secs_f64() / start.elapsed().as_secs_f64()
}

#[test]
#[ignore = "needs a sched_ext kernel and root: run by `cargo xtask test` in a VM"]
fn an_rt_task_is_never_preempted_and_class_work_moves_out_of_its_way() {
    let _serial = sched_ext_host();
    if cpus() < 2 {
        return;
    }
    let sched = start(&[]);
    let window = Duration::from_secs(3);
    // A SCHED_FIFO spinner owns CPU 1 (up to the kernel's 95% RT limit).
    let rt = std::thread::spawn(move || {
        pin_current_thread(1);
        let param = libc::sched_param { sched_priority: 50 };
        // SAFETY: plain syscall on the calling thread.
        assert_eq!(
            unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) },
            0
        );
        spin_share(window)
    });
    // Class spinners that may run anywhere: they must not take CPU 1 from
    // the RT task, and must still get CPU 0.
    let class: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                Class::open().unwrap().add(current_tid()).unwrap();
                spin_share(window)
            })
        })
        .collect();
    let rt_share = rt.join().unwrap();
    let class_total: f64 = class.into_iter().map(|t| t.join().unwrap()).sum();
    eprintln!(
        "rt task {:.0}% of CPU 1, class threads {:.0}% of a CPU",
        rt_share * 100.0,
        class_total * 100.0
    );
    assert!(
        rt_share > 0.85,
        "the RT task got only {:.0}% of its CPU",
        rt_share * 100.0
    );
    assert!(
        class_total > 0.6,
        "class threads got only {:.0}% of a CPU",
        class_total * 100.0
    );
    assert!(sysfs::microquanta_loaded(), "the kernel ejected scx_microquanta");
    sched.stop().unwrap();
}

#[test]
#[ignore = "needs a sched_ext kernel and root: run by `cargo xtask test` in a VM"]
fn class_threads_sharing_a_cpu_round_robin_at_the_slice() {
    let _serial = sched_ext_host();
    let cpu = cpus() - 1;
    let sched = start(&["--class-slice-us", "500"]);
    let window = Duration::from_secs(2);
    let shares: Vec<f64> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                pin_current_thread(cpu);
                Class::open().unwrap().add(current_tid()).unwrap();
                spin_share(window)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    eprintln!("class threads on CPU {cpu}: {shares:?}");
    for s in &shares {
        assert!(
            *s > 0.3,
            "a class thread got only {:.0}% of the shared CPU: {shares:?}",
            s * 100.0
        );
    }
    sched.stop().unwrap();
}

/// The budget charges a class thread the CPU time the kernel counts for it
/// (`sum_exec_runtime`: what `CLOCK_THREAD_CPUTIME_ID`, `top` and the
/// conformance benchmark read), so the class share the scheduler reports is
/// the share the thread got, and that is runtime/period. The kernel counts
/// a run from the schedule() that picked it, dispatch() included; charged
/// from running()'s clock instead, a class thread at 200/1000 µs got 21.3%
/// under TCG while the scheduler reported 20.0%.
#[test]
#[ignore = "needs a sched_ext kernel and root: run by `cargo xtask test` in a VM"]
fn the_budget_charges_a_class_thread_the_cpu_time_the_kernel_counts() {
    use scx_stats::prelude::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let _serial = sched_ext_host();
    let cpu = cpus() - 1;
    for (period_us, runtime_us) in [(1000u64, 200u64), (100, 25)] {
        let sched = start(&[
            "--period-us",
            &period_us.to_string(),
            "--runtime-us",
            &runtime_us.to_string(),
        ]);
        let stop = Arc::new(AtomicBool::new(false));
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let spinners: Vec<_> = [true, false]
            .into_iter()
            .map(|in_class| {
                let (stop, tid_tx) = (stop.clone(), tid_tx.clone());
                std::thread::spawn(move || {
                    pin_current_thread(cpu);
                    if in_class {
                        Class::open().unwrap().add(current_tid()).unwrap();
                        tid_tx.send(current_tid()).unwrap();
                    }
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        let tid = tid_rx.recv().unwrap();
        std::thread::sleep(Duration::from_secs(1));
        let mut client = StatsClient::new()
            .connect(Some(10_000))
            .expect("the running scheduler serves scx_stats");
        // Each request reports the interval since this client's previous one.
        let _: serde_json::Value = client.request("stats", vec![]).unwrap();
        let (t0, cpu0) = (Instant::now(), thread_cpu_ns_of(tid));
        std::thread::sleep(Duration::from_secs(4));
        let report: serde_json::Value = client.request("stats", vec![]).unwrap();
        let (t1, cpu1) = (Instant::now(), thread_cpu_ns_of(tid));
        stop.store(true, Ordering::Relaxed);
        spinners.into_iter().for_each(|s| s.join().unwrap());
        sched.stop().unwrap();

        let got = (cpu1 - cpu0) as f64 / (t1 - t0).as_nanos() as f64;
        let charged = report["cpus"]
            .as_array()
            .and_then(|cpus| cpus.iter().find(|c| c["cpu"].as_u64() == Some(cpu as u64)))
            .and_then(|c| c["mq_share"].as_f64())
            .unwrap_or_else(|| panic!("no mq_share of CPU {cpu} in {report}"));
        let expected = runtime_us as f64 / period_us as f64;
        eprintln!(
            "{runtime_us}/{period_us} µs on CPU {cpu}: the class thread got {got:.4} of the CPU, \
             the scheduler charged {charged:.4}, expected {expected:.4}"
        );
        assert!(
            (got - charged).abs() <= 0.005,
            "{runtime_us}/{period_us} µs: the class thread got {got:.4} of the CPU by the \
             kernel's count, the scheduler charged it {charged:.4}"
        );
        // The bound for periods of 100 µs and more.
        assert!(
            (got - expected).abs() <= 0.02,
            "{runtime_us}/{period_us} µs: the class thread got {got:.4}, expected {expected:.4}"
        );
    }
}

/// CPU time thread `tid` of this process has used, in ns: the kernel's
/// `sum_exec_runtime` (its schedstat).
fn thread_cpu_ns_of(tid: u32) -> u64 {
    procfs::process::Process::myself()
        .and_then(|p| p.task_from_tid(tid as i32))
        .and_then(|t| t.schedstat())
        .unwrap_or_else(|e| panic!("schedstat of thread {tid}: {e}"))
        .sum_exec_runtime
}

/// One line of a child's stdout within `timeout` (a TCG guest is slow), or a panic.
fn first_line(child: &mut std::process::Child, timeout: Duration) -> String {
    use std::io::BufRead;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::io::BufReader::new(stdout).lines().next());
    });
    match rx.recv_timeout(timeout) {
        Ok(Some(Ok(line))) => line,
        other => panic!("no line from the monitor: {other:?}"),
    }
}

fn monitor(args: &[&str]) -> std::process::Child {
    std::process::Command::new(SCHEDULER)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("scx_microquanta --monitor starts")
}

fn sigint_and_wait(mut child: std::process::Child) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(status.success(), "--monitor exited with {status} on SIGINT");
}

#[test]
#[ignore = "needs a sched_ext kernel and root: run by `cargo xtask test` in a VM"]
fn scx_stats_clients_read_the_running_scheduler_and_monitor_prints() {
    use scx_stats::prelude::*;
    let _serial = sched_ext_host();
    let sched = start(&[]);

    // A plain scx_stats client on the default socket, as any scx tool would connect.
    let mut client = StatsClient::new()
        .connect(Some(10_000))
        .expect("the running scheduler serves scx_stats' default socket");
    let first: serde_json::Value = client.request("stats", vec![]).unwrap();
    for key in ["interval_s", "class_members", "totals", "cpus"] {
        assert!(first.get(key).is_some(), "no `{key}` in {first}");
    }
    let cpus_reported = first["cpus"].as_array().unwrap();
    assert!(cpus_reported.len() >= cpus(), "{first}");
    for key in [
        "mq_share",
        "throttles",
        "kicks",
        "wakeups",
        "wake_p99_us",
        "overrun_max_us",
        "yields",
    ] {
        assert!(
            cpus_reported[0].get(key).is_some(),
            "no `cpus[0].{key}` in {first}"
        );
    }
    let meta: serde_json::Value = client.request("stats_meta", vec![]).unwrap();
    assert_eq!(meta["Report"]["top"], "true", "{meta}");

    // The raw request docs/MICROQUANTA.md shows: one JSON line each way.
    {
        use std::io::{BufRead, Write};
        let mut raw = std::os::unix::net::UnixStream::connect("/var/run/scx/root/stats").unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        raw.write_all(b"{\"req\":\"stats\",\"args\":{}}\n").unwrap();
        let mut line = String::new();
        std::io::BufReader::new(raw).read_line(&mut line).unwrap();
        let answer: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(answer["errno"], 0, "{line}");
        assert!(answer["args"]["resp"]["cpus"].is_array(), "{line}");
    }

    // Class wakeups next to normal work: the next interval's counters must show them.
    {
        let _hogs = Hogs::start(cpus(), None).unwrap();
        let mq = measure(WakeupConfig {
            period: Duration::from_millis(1),
            samples: 200,
            class: ThreadClass::MicroQuanta,
            work: Duration::from_micros(100),
            cpu: None,
        })
        .unwrap();
        assert_eq!(mq.samples, 200);
    }
    let second: serde_json::Value = client.request("stats", vec![]).unwrap();
    let totals = &second["totals"];
    let count = |key: &str| {
        totals[key]
            .as_u64()
            .unwrap_or_else(|| panic!("totals.{key} in {second}"))
    };
    // Each sample is a class wakeup unless a stall made the thread late past its next
    // deadline (it then does not sleep): at least half must show, none without the class.
    assert!(count("mq_enqueue") >= 100, "{second}");
    assert!(count("normal_dispatch") + count("normal_direct") > 0, "{second}");
    let wakeups: u64 = second["cpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["wakeups"].as_u64().unwrap())
        .sum();
    assert!(wakeups >= 100, "class wakeups measured per CPU: {second}");
    let mq_share: f64 = second["cpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["mq_share"].as_f64().unwrap())
        .sum();
    assert!(mq_share > 0.0, "{second}");
    assert_eq!(
        second["callbacks"],
        serde_json::json!([]),
        "callbacks' run time only with --callback-run-time"
    );

    // `--monitor` (a separate process, an scx_stats client) prints JSON and text.
    let mut json = monitor(&["--monitor", "0.5", "--stats-json"]);
    let line = first_line(&mut json, Duration::from_secs(30));
    sigint_and_wait(json);
    let report: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert!(
        report["cpus"].as_array().is_some_and(|c| c.len() >= cpus()),
        "{line}"
    );
    // The benchmark's reader of this line (`cargo xtask bench sched`) takes it as it is.
    mq_experiments::sched_bench::sched_stats::enforcement_from_report(&line, 0)
        .expect("mq-bench-sched parses --monitor's JSON");
    let interval = report["interval_s"].as_f64().unwrap();
    assert!(
        (0.4..5.0).contains(&interval),
        "a report covers --monitor's interval: {line}"
    );
    let mut text = monitor(&["--monitor", "0.5"]);
    let line = first_line(&mut text, Duration::from_secs(30));
    sigint_and_wait(text);
    assert!(line.starts_with("mq[threads="), "{line}");

    sched.stop().unwrap();
    let err = StatsClient::new().connect(None).err();
    assert!(err.is_some(), "the socket is gone with the scheduler");
}

#[test]
#[ignore = "needs a sched_ext kernel and root: run by `cargo xtask test` in a VM"]
fn callback_run_time_reports_each_callbacks_calls_and_mean() {
    use scx_stats::prelude::*;
    let _serial = sched_ext_host();
    let sched = start(&["--callback-run-time"]);
    let mut client = StatsClient::new().connect(Some(10_000)).unwrap();
    let _: serde_json::Value = client.request("stats", vec![]).unwrap();
    {
        let _hogs = Hogs::start(cpus(), None).unwrap();
        measure(WakeupConfig {
            period: Duration::from_millis(1),
            samples: 100,
            class: ThreadClass::MicroQuanta,
            work: Duration::from_micros(100),
            cpu: None,
        })
        .unwrap();
    }
    let report: serde_json::Value = client.request("stats", vec![]).unwrap();
    let callbacks = report["callbacks"].as_array().unwrap();
    let get = |name: &str| {
        callbacks
            .iter()
            .find(|c| c["callback"] == name)
            .unwrap_or_else(|| panic!("no {name} in {report}"))
    };
    // Each class wakeup is a select_cpu, an enqueue, a running and a stopping, at least.
    for name in [
        "mq_select_cpu",
        "mq_enqueue",
        "mq_running",
        "mq_stopping",
        "mq_dispatch",
    ] {
        let c = get(name);
        let (calls, mean) = (c["calls"].as_u64().unwrap(), c["mean_us"].as_f64().unwrap());
        assert!(calls >= 50, "{name}: {c}");
        // Anything at all, and less than the whole interval per call.
        assert!(mean > 0.0 && mean < 10_000.0, "{name}: {c}");
    }
    sched.stop().unwrap();
}

/// Spins for `d` of wall time.
fn spin_for(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// An overrun leaves a CPU's credit below zero while it has no class work, so the CPU
/// looks free. A class wakeup whose previous CPU that is must run on a CPU where its
/// group has budget, not queue there for the refill: at 2000/10000 µs, 2 periods of debt
/// take 110 ms to repay, and with 20 ms normal slices the other CPU's dispatch would steal
/// the waiting task only at its hog's slice end (against the placement before this test, a
/// median of 13.6 ms over 15 rounds).
#[test]
#[ignore = "needs a sched_ext kernel and root: run by `cargo xtask test` in a VM"]
fn a_class_wakeup_skips_a_cpu_whose_budget_is_spent() {
    use scx_stats::prelude::*;
    use std::sync::mpsc::channel;
    let _serial = sched_ext_host();
    if cpus() < 2 {
        return;
    }
    const ROUNDS: usize = 15;
    let sched = start(&[
        "--period-us",
        "10000",
        "--runtime-us",
        "2000",
        "--normal-slice-us",
        "20000",
    ]);
    let mut client = StatsClient::new()
        .connect(Some(10_000))
        .expect("scx_stats socket");
    let _hog = Hogs::start(1, Some(1)).unwrap();
    // Each request reports the counters since the connection's previous one.
    let _: serde_json::Value = client.request("stats", vec![]).unwrap();

    // Per round: B (class, may run anywhere) last ran on CPU 0 and sleeps; A (class,
    // pinned to CPU 0) spins alone there, driving CPU 0's credit to its floor, and
    // sleeps; H (normal, pinned to CPU 0) wakes from a timer after that and wakes B at t0.
    // A must be asleep before H is runnable: normal work waking next to A, past its budget,
    // would throttle A with its wakeup queued on CPU 0, and placement already avoids a CPU
    // with class work queued.
    let (to_a, a_rx) = channel::<()>();
    let (to_h, h_rx) = channel::<()>();
    let (to_b, b_rx) = channel::<Instant>();
    let (b_ready_tx, b_ready) = channel::<()>();
    let (h_done_tx, h_done) = channel::<()>();
    let (seen_tx, seen) = channel::<(Duration, i32)>();
    let a = std::thread::spawn(move || {
        pin_current_thread(0);
        Class::open().unwrap().add(current_tid()).unwrap();
        for () in a_rx {
            spin_for(Duration::from_millis(40));
        }
    });
    let h = std::thread::spawn(move || {
        pin_current_thread(0);
        for () in h_rx {
            std::thread::sleep(Duration::from_millis(50));
            spin_for(Duration::from_millis(5));
            to_b.send(Instant::now()).unwrap();
            spin_for(Duration::from_millis(40));
            h_done_tx.send(()).unwrap();
        }
    });
    let n = cpus();
    let b = std::thread::spawn(move || {
        Class::open().unwrap().add(current_tid()).unwrap();
        loop {
            // Last run on CPU 0, then free to go anywhere: CPU 0 is its previous CPU.
            pin_current_thread(0);
            allow_cpus(n);
            if b_ready_tx.send(()).is_err() {
                return;
            }
            let Ok(t0) = b_rx.recv() else { return };
            let waited = t0.elapsed();
            // SAFETY: plain libc call.
            let cpu = unsafe { libc::sched_getcpu() };
            if seen_tx.send((waited, cpu)).is_err() {
                return;
            }
        }
    });
    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        b_ready.recv().unwrap();
        to_a.send(()).unwrap();
        to_h.send(()).unwrap();
        rounds.push(seen.recv().unwrap());
        h_done.recv().unwrap();
    }
    drop(to_a);
    drop(to_h);
    drop(b_ready);
    a.join().unwrap();
    h.join().unwrap();
    b.join().unwrap();
    let stats: serde_json::Value = client.request("stats", vec![]).unwrap();
    let count = |key: &str| {
        stats["totals"][key]
            .as_u64()
            .unwrap_or_else(|| panic!("totals.{key}"))
    };
    let skipped = count("mq_spent_skip");

    let mut waits: Vec<f64> = rounds.iter().map(|(w, _)| w.as_secs_f64() * 1e6).collect();
    waits.sort_by(f64::total_cmp);
    let median_us = waits[waits.len() / 2];
    let on_cpu1 = rounds.iter().filter(|(_, cpu)| *cpu == 1).count();
    // Straight to stderr, which libtest does not capture: the figures of passing runs stay
    // in `cargo xtask test`'s log.
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "PLACEMENT wake-to-run median {median_us:.0} µs (sorted {waits:.0?}), {on_cpu1}/{ROUNDS} \
         rounds on CPU 1, {skipped} placements skipped a spent CPU (placements: idle {}, busy {}, \
         crowded {}; steals {})",
        count("mq_idle_pick"),
        count("mq_busy_pick"),
        count("mq_crowded_pick"),
        count("mq_steal"),
    );
    assert!(
        median_us < 2000.0,
        "class wakeups waited {median_us:.0} µs (median of {ROUNDS} rounds) next to a CPU with \
         budget: {waits:.0?}"
    );
    assert!(
        skipped as usize >= ROUNDS / 2,
        "only {skipped} of {ROUNDS} wakeups were placed away from the spent CPU"
    );
    assert!(sysfs::microquanta_loaded(), "the kernel ejected scx_microquanta");
    sched.stop().unwrap();
}

/// The counters the scheduler's scx_stats server reports for the interval since this
/// client's previous request.
fn totals(client: &mut scx_stats::prelude::StatsClient) -> serde_json::Value {
    let report: serde_json::Value = client.request("stats", vec![]).unwrap();
    report["totals"].clone()
}

/// A SCHED_FIFO thread on CPU 1 for `window`: it spins `burst` every `every` (a short
/// burst is an interrupt thread or a probe; a burst as long as the window an RT hog).
fn rt_bursts(window: Duration, every: Duration, burst: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        pin_current_thread(1);
        let param = libc::sched_param { sched_priority: 60 };
        // SAFETY: plain syscall on the calling thread.
        assert_eq!(
            unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) },
            0
        );
        // Each burst starts with a wakeup: the RT task takes the CPU from whatever runs there.
        let start = Instant::now();
        while start.elapsed() < window {
            std::thread::sleep(every);
            spin_for(burst);
        }
    })
}

/// Sets thread `tid`'s CPU affinity, one set after the other.
fn set_thread_affinity(tid: u32, sets: &[&[usize]]) {
    for cpus in sets {
        set_affinity_of(tid, cpus.iter().copied());
    }
}

/// Class work that an RT task displaces waits on its CPU for one class period (the grace)
/// and runs as soon as a short RT task leaves; only an RT task that holds the CPU past the
/// grace has it re-enqueued (`rt_reenq`; where it may run elsewhere, `rt_push` then moves it
/// to a CPU running normal work).
/// The period is the demo's TCG one, 1 ms, well above a short burst even under emulation.
/// The long holds are 20 ms each, repeated: the grace concerns work in the local queue, and
/// the RT thread's own start on CPU 1 (a normal task until it switches) can throttle the class
/// task into its FIFO, where the first hold finds nothing to keep; one run saw the only long
/// hold, of 500 ms, start that way.
#[test]
#[ignore = "needs a sched_ext kernel and root: run by `cargo xtask test` in a VM"]
fn class_work_waits_out_a_short_rt_task_and_leaves_a_long_one() {
    use scx_stats::prelude::*;
    let _serial = sched_ext_host();
    if cpus() < 2 {
        return;
    }
    let sched = start(&["--period-us", "1000", "--runtime-us", "500"]);
    let mut client = StatsClient::new().connect(Some(10_000)).unwrap();
    let window = Duration::from_secs(2);
    // A class spinner on CPU 1, free to move to CPU 0, where a normal hog runs; for the long
    // hold it is pinned to CPU 1, so that no steal takes it away before the RT task comes.
    let (tx, rx) = std::sync::mpsc::channel();
    let class = std::thread::spawn(move || {
        Class::open().unwrap().add(current_tid()).unwrap();
        tx.send(current_tid()).unwrap();
        spin_for(window * 2 + Duration::from_millis(500));
    });
    let class_tid = rx.recv().unwrap();
    let _hog = Hogs::start(1, Some(0)).unwrap();

    // Put on CPU 1, then let go: widening the affinity does not move it.
    set_thread_affinity(class_tid, &[&[1], &[0, 1]]);
    std::thread::sleep(Duration::from_millis(100));
    let _ = totals(&mut client);
    rt_bursts(window, Duration::from_millis(2), Duration::from_micros(20))
        .join()
        .unwrap();
    let short = totals(&mut client);
    set_thread_affinity(class_tid, &[&[1]]);
    rt_bursts(window / 4, Duration::from_millis(1), Duration::from_millis(20))
        .join()
        .unwrap();
    let long = totals(&mut client);
    class.join().unwrap();
    sched.stop().unwrap();

    let (releases, reenq) = (
        short["cpu_release"].as_u64().unwrap(),
        short["rt_reenq"].as_u64().unwrap(),
    );
    eprintln!("short RT bursts: {releases} releases, {reenq} past the grace; long RT hold: {long}");
    assert!(
        releases >= 100,
        "the RT bursts took CPU 1 only {releases} times: {short}"
    );
    // An emulator stall can stretch a burst past the grace now and then; one in twenty is not.
    assert!(
        reenq * 20 <= releases,
        "{reenq} of {releases} short RT bursts outlasted the grace: {short}"
    );
    // Held past the grace, the class task is re-enqueued (pinned, it can only queue on CPU 1).
    assert!(long["cpu_release"].as_u64().unwrap() >= 1, "{long}");
    assert!(long["rt_reenq"].as_u64().unwrap() >= 1, "{long}");
}

/// A periodic class thread next to hogs (the demo's workload) mostly finds its CPU's timer
/// already armed when it starts (`timer_kept`): started from running(), the timer costs an
/// irq_work self-interrupt on the wakeup path, so the timer keeps ticking every class slice
/// while class work comes and goes (`timer_heartbeat`), and a kept timer that fires before
/// the class step ends is armed again for the rest (`timer_early`). That the budget still
/// holds is for the conformance tests to show.
#[test]
#[ignore = "needs a sched_ext kernel and root: run by `cargo xtask test` in a VM"]
fn periodic_class_wakeups_find_the_budget_timer_armed() {
    use scx_stats::prelude::*;
    let _serial = sched_ext_host();
    let _hogs = Hogs::start(4 * cpus(), None).unwrap();
    let (period_us, runtime_us) = mq_experiments::accel::latency_bandwidth_us();
    let (period, runtime) = (period_us.to_string(), runtime_us.to_string());
    let sched = start(&["--period-us", &period, "--runtime-us", &runtime]);
    let mut client = StatsClient::new().connect(Some(10_000)).unwrap();
    let _ = totals(&mut client);
    let run = measure_run(WakeupConfig {
        period: Duration::from_millis(1),
        samples: 500,
        class: ThreadClass::MicroQuanta,
        work: Duration::from_micros(300),
        cpu: None,
    })
    .unwrap();
    let t = totals(&mut client);
    sched.stop().unwrap();

    let count = |name: &str| t[name].as_u64().unwrap();
    let (starts, kept) = (count("mq_enqueue"), count("timer_kept"));
    let mq = summarise_wakeups(&run.wakeups);
    eprintln!(
        "class wakeups {starts} of {} sleeps that blocked, timer kept {kept}: {mq:?}; {t}",
        run.blocked
    );
    // Each sleep that blocked ends in a class wakeup; the interval may miss the first (the
    // thread joins the class and sleeps before the counters are read). A sleep that did not
    // block (its deadline passed before the thread was off its CPU, e.g. across a stall) has
    // no wakeup to count; at most a tenth may be such.
    assert!(
        run.blocked >= 450,
        "only {} of 500 sleeps blocked: {mq:?}",
        run.blocked
    );
    assert!(
        starts + 10 >= run.blocked,
        "{starts} class wakeups for {} sleeps that blocked: {t}",
        run.blocked
    );
    assert!(count("timer_heartbeat") > 0, "the timer never ticked on: {t}");
    assert!(count("timer_early") > 0, "no kept timer fired early: {t}");
    // Every class start arms a step; at least half must find the timer armed early enough.
    assert!(
        kept * 2 >= starts,
        "only {kept} of {starts} class wakeups found the timer armed: {t}"
    );
}

/// The displaced-hog tests' setting: 4 hogs on CPU 1 and the scheduler at the demo's class
/// budget (see mq_experiments::accel). Returns the hogs, the scheduler, a statistics client
/// and the class period in µs.
fn demo_budget_next_to_hogs_on_cpu1() -> (Hogs, SchedulerProcess, scx_stats::prelude::StatsClient, u64) {
    use scx_stats::prelude::*;
    let hogs = Hogs::start(4, Some(1)).unwrap();
    let (period_us, runtime_us) = mq_experiments::accel::latency_bandwidth_us();
    let (period, runtime) = (period_us.to_string(), runtime_us.to_string());
    let sched = start(&["--period-us", &period, "--runtime-us", &runtime]);
    let client = StatsClient::new().connect(Some(10_000)).unwrap();
    (hogs, sched, client, period_us)
}

/// A normal task that a class wakeup preempts keeps the rest of its slice and waits at the
/// head of its CPU's local queue (`normal_kept`), as one preempted by a higher class does,
/// instead of going through enqueue() and coming back through dispatch(). The kernel puts it
/// at the head, so an RT task that takes the CPU between the class wakeup's insert and the
/// switch leaves it ahead of the class task, which then waited out the rest of the hog's
/// slice (in this test, class p90 2.0-2.1 ms in three runs). stopping() therefore keeps no
/// task when an RT task is queued on its CPU, and cpu_release() re-enqueues a queue where one
/// was kept all the same (`kept_reenq`: a deadline or stop task, or a kernel that cannot
/// tell). Short RT bursts on the class thread's CPU make that race happen; the class thread's
/// p90 must stay within one class period. Up to three runs, as a TCG vCPU can stall for
/// milliseconds at any time.
#[test]
#[ignore = "needs a sched_ext kernel and root: run by `cargo xtask test` in a VM"]
fn a_normal_task_a_class_wakeup_displaces_waits_at_the_head_of_its_cpu() {
    let _serial = sched_ext_host();
    if cpus() < 2 {
        return;
    }
    // Everything on CPU 1, where rt_bursts() runs.
    let (_hogs, sched, mut client, period_us) = demo_budget_next_to_hogs_on_cpu1();
    let (attempts, held) = up_to_three_runs(
        || {
            let _ = totals(&mut client);
            let rt = rt_bursts(
                Duration::from_millis(700),
                Duration::from_micros(1500),
                Duration::from_micros(20),
            );
            let mq = measure(WakeupConfig {
                period: Duration::from_millis(1),
                samples: 500,
                class: ThreadClass::MicroQuanta,
                work: Duration::from_micros(300),
                cpu: Some(1),
            })
            .unwrap();
            rt.join().unwrap();
            let t = totals(&mut client);
            eprintln!("microquanta: {mq:?}; {t}");
            let count = |name: &str| t[name].as_u64().unwrap();
            let (direct, kept) = (count("direct_preempt"), count("normal_kept"));
            // The hog's slice (3 ms) runs out every few wakeups, and a hog that an RT burst
            // preempted keeps its slice without us; most preempting wakeups keep their hog.
            assert!(
                kept * 2 >= direct,
                "only {kept} of {direct} preempting class wakeups kept the hog: {t}"
            );
            assert!(count("cpu_release") >= 100, "too few RT bursts: {t}");
            // This kernel tells stopping() that an RT task takes the CPU, so no such hog is kept
            // and cpu_release() rarely has one to re-enqueue (one run saw one, of 478 preempting
            // wakeups; without the check the race slowed more than a tenth of them).
            let reenq = count("kept_reenq");
            assert!(
                reenq * 100 <= direct,
                "{reenq} kept hogs went ahead of a class wakeup: {t}"
            );
            mq.p90
        },
        |&p90| p90 < period_us as f64,
    );
    sched.stop().unwrap();
    assert!(
        held,
        "class p90 in µs per run, period {period_us} µs: {attempts:?}"
    );
}

/// When the kernel ejects the scheduler (here SysRq-S), the loader learns of it from the BPF
/// exit callback's notice at once, rather than at its next look (at most a second later), and
/// exits non-zero with the kernel's exit reason.
#[test]
#[ignore = "needs a sched_ext kernel and root: run by `cargo xtask test` in a VM"]
fn an_ejection_ends_the_loader_at_once_with_the_exit_reason() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let _serial = sched_ext_host();
    let mut child = Command::new(SCHEDULER)
        .arg("-v")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_state(SchedExtState::Enabled, Duration::from_secs(60)).unwrap();
    let ejected = Instant::now();
    std::fs::write("/proc/sysrq-trigger", "S").unwrap();
    let status = child.wait().unwrap();
    let took = ejected.elapsed();
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    wait_for_state(SchedExtState::Disabled, Duration::from_secs(30)).unwrap();
    eprintln!("exited {status} after {took:?}:\n{log}");
    assert!(!status.success(), "an ejection is an error: {status}\n{log}");
    assert!(log.contains("sysrq"), "the exit reason is printed:\n{log}");
    assert!(
        log.contains("exit notice came"),
        "woken by the exit notice, not the periodic look:\n{log}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}\n{log}");
}

/// A hog that a class wakeup displaces after its slice ran out is kept at the head of its
/// CPU's local queue like one with slice left (`kept_spent`), so that the wakeup does not
/// wait for the hog's enqueue(), and goes through enqueue() as soon as it runs again: the
/// hogs keep sharing their CPU evenly (three runs: 298-306 ms each over the 2 s). Left to
/// run out its slice at a tick instead, a hog would stay as long as every tick fell in the
/// class thread's runs (its 300 µs of every 1000 µs; with a 4 ms tick the phase between the
/// two stays put), and the other hogs would wait. Whether that phase comes up is chance, so
/// this test does not pin the kick itself: a build without it passed three runs (203-240 ms
/// each).
#[test]
#[ignore = "needs a sched_ext kernel and root: run by `cargo xtask test` in a VM"]
fn a_hog_kept_with_its_slice_spent_is_put_back_when_it_runs_again() {
    let _serial = sched_ext_host();
    if cpus() < 2 {
        return;
    }
    let (hogs, sched, mut client, _period_us) = demo_budget_next_to_hogs_on_cpu1();
    let _ = totals(&mut client);
    let before = hogs.worker_run_times();
    let run = measure(WakeupConfig {
        period: Duration::from_micros(1000),
        samples: 2000,
        class: ThreadClass::MicroQuanta,
        work: Duration::from_micros(300),
        cpu: Some(1),
    })
    .unwrap();
    let after = hogs.worker_run_times();
    let t = totals(&mut client);
    sched.stop().unwrap();
    eprintln!("class thread: {run:?}\n{t}");
    let count = |name: &str| t[name].as_u64().unwrap();
    assert!(
        count("kept_spent") > 0,
        "no hog was kept with its slice spent: {t}"
    );
    assert!(
        count("kept_spent") <= count("normal_kept"),
        "kept_spent counts a subset of normal_kept: {t}"
    );
    assert_eq!(before.len(), 4, "{before:?}");
    let mut ran: Vec<f64> = before
        .iter()
        .map(|(pid, b)| after[pid].saturating_sub(*b).as_secs_f64() * 1e3)
        .collect();
    ran.sort_by(f64::total_cmp);
    eprintln!("hogs ran (ms, sorted): {ran:?}");
    // A hog that waits while another stays runs far less than the others.
    assert!(
        ran[0] >= 0.75 * ran[3],
        "the hogs did not share their CPU evenly (ms): {ran:?}"
    );
}

/// Class work queued behind a class task that displaced a hog still runs before the hog: a
/// second class thread that wakes while the first runs waits in the CPU's FIFO, and when the
/// first sleeps the kept hog is sent back through enqueue() (`kept_returned`) so that
/// dispatch() takes the FIFO, instead of the hog running out the rest of its slice (3 ms)
/// while the class thread waits; and no hog is kept where a second class wakeup was
/// inserted in the local queue too, behind it (`kept_ran_ahead` counts a kept hog that ran
/// with anything still in its local queue).
///
/// The order is asserted on the count, which no emulator stall moves: with this scheduler 0-1
/// of 256-449 kept hogs per run ran ahead of queued work; with the hog kept regardless of its
/// local queue (the bug this test was written for), 178-242 of 464-511 did. The timing bound
/// alone does not tell them apart: with the bug the second thread's p90 was 748-3637 µs over
/// two boots, with this scheduler 641-1471 µs. It is against the first thread of the same
/// run, which these paths hardly touch: the second thread's p90 stays within one class period
/// (1 ms) of the first's, as it waits for its wakeup as the first does and at most for the
/// first's 300 µs of work. A slow boot slows both (first p90 670-1050 µs, second
/// 1370-1470 µs in one), which an absolute bound of one period mistook for the bug.
#[test]
#[ignore = "needs a sched_ext kernel and root: run by `cargo xtask test` in a VM"]
fn class_work_queued_behind_a_kept_hog_runs_first() {
    let _serial = sched_ext_host();
    if cpus() < 2 {
        return;
    }
    let (_hogs, sched, mut client, period_us) = demo_budget_next_to_hogs_on_cpu1();
    let thread = |wake_us: u64, work_us: u64| WakeupConfig {
        period: Duration::from_micros(wake_us),
        samples: 400,
        class: ThreadClass::MicroQuanta,
        work: Duration::from_micros(work_us),
        cpu: Some(1),
    };
    let (attempts, held) = up_to_three_runs(
        || {
            let _ = totals(&mut client);
            // Two periods that drift against each other: the second often wakes during the
            // first's 300 µs of work. Together they need 38% of the CPU, within the 50% budget.
            let first = std::thread::spawn(move || measure(thread(1000, 300)).unwrap());
            let second = measure(thread(1300, 100)).unwrap();
            let first = first.join().unwrap();
            let t = totals(&mut client);
            eprintln!("first: {first:?}\nsecond: {second:?}\n{t}");
            let count = |name: &str| t[name].as_u64().unwrap();
            assert!(count("normal_kept") > 0, "no hog was kept: {t}");
            assert!(
                count("kept_returned") > 0,
                "no kept hog made way for queued class work: {t}"
            );
            // At most 5% (0.2% seen), where the bug made it 35-52%.
            let ahead = count("kept_ran_ahead");
            assert!(
                ahead * 20 <= count("normal_kept"),
                "{ahead} kept hogs ran ahead of work queued behind them: {t}"
            );
            (first.p90, second.p90)
        },
        |&(first, second)| second < first + period_us as f64,
    );
    sched.stop().unwrap();
    assert!(
        held,
        "(first, second) class thread's p90 in µs per run, period {period_us} µs: {attempts:?}"
    );
}
