// SPDX-License-Identifier: GPL-2.0-only
//! `mq-bench-efficiency --quick` and `mq-bench-idle --quick` end to end on this host (root:
//! both make a veth pair between two network namespaces, `eff-<pid>…`, and start real
//! `snap-host` processes and app processes): the reports' shape, every design × app count
//! × load row with finite numbers, the targets computed from the rows, the namespaces gone
//! and the idle states as they were afterwards; and both refuse to run without root. Checks
//! no timing (the machine is shared with builds).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use mq_report::efficiency::{self, APPS, DESIGNS, LOADS};
use mq_report::idle::{self, IDLE, MODES};

/// The idle tests change the machine's idle states: one at a time, or one would record the
/// other's setting as the original and put it back.
static IDLE_STATES: std::sync::Mutex<()> = std::sync::Mutex::new(());

const EFFICIENCY: &str = env!("CARGO_BIN_EXE_mq-bench-efficiency");
const IDLE_BENCH: &str = env!("CARGO_BIN_EXE_mq-bench-idle");

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Namespaces of the run with process id `pid`: `eff-<pid>…`.
fn namespaces_of(pid: u32) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(&format!("eff-{pid}")))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `bin --quick --out DIR` (plus `args`); its output, process id and summary.json.
fn run_quick(bin: &str, tag: &str, args: &[&str]) -> (Output, u32, PathBuf) {
    let dir = std::env::temp_dir().join(format!("mq-{tag}-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let child = Command::new(bin)
        .arg("--quick")
        .args(args)
        .arg("--out")
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {bin}: {e}"));
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    (out, pid, dir)
}

fn finite(what: &str, v: f64) {
    assert!(v.is_finite() && v >= 0.0, "{what} = {v}");
}

#[test]
fn efficiency_quick_run_has_every_row_and_the_target() {
    if !is_root() {
        eprintln!("skipped: needs root (network namespaces)");
        return;
    }
    let (out, pid, dir) = run_quick(EFFICIENCY, "efficiency", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "mq-bench-efficiency failed: {}\n{stderr}",
        out.status
    );
    eprintln!("{stderr}");
    assert!(
        namespaces_of(pid).is_empty(),
        "{:?} left behind",
        namespaces_of(pid)
    );
    let text = std::fs::read_to_string(dir.join("summary.json")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let report: efficiency::Report = serde_json::from_str(&text).unwrap();

    assert_eq!(
        (report.rounds, report.path.as_str(), report.nic.as_str()),
        (1, "veth", "udp")
    );
    assert!(report.platform.cpus >= 1);
    assert_eq!(report.rows.len(), DESIGNS.len() * APPS.len() * LOADS.len());
    for design in DESIGNS {
        for apps in APPS {
            for load in LOADS {
                let r = efficiency::find(&report.rows, design, apps, load)
                    .unwrap_or_else(|| panic!("no row {design} {apps} {load}"));
                let at = format!("{design} {apps} {load}");
                for (name, v) in [
                    ("offered", r.offered_msgs_per_s),
                    ("msgs/s", r.msgs_per_s),
                    ("p50", r.p50_us),
                    ("p99", r.p99_us),
                    ("p99.9", r.p99_9_us),
                    ("cores", r.cores),
                    ("app cores", r.app_cores),
                    ("peer cores", r.peer_cores),
                ] {
                    finite(&format!("{at} {name}"), v);
                }
                assert!(
                    r.p50_us <= r.p99_us && r.p99_us <= r.p99_9_us && r.p99_9_us <= r.max_us,
                    "{r:?}"
                );
                assert!(r.cores_min <= r.cores && r.cores <= r.cores_max, "{r:?}");
                assert!(r.p50_us > 0.0, "{at}: a round trip takes time");
                // The stack did use the CPU (an overloaded point may echo nothing: its
                // round trips are then lower bounds, and per-operation counters null).
                assert!(r.cores > 0.0, "{r:?}");
                assert_eq!(r.rounds, 1);
                if design == "library_os" {
                    assert_eq!(r.app_cores, 0.0, "the library-OS app is its stack: {r:?}");
                }
            }
        }
    }
    // One app at low load gets its echoes in every design, and the software counters
    // count (root, any VM). (With more apps a debug build on a busy 2-CPU machine can starve
    // a design's apps through a whole 0.3 s window: those rows are only checked for finite
    // numbers.)
    for design in DESIGNS {
        let low = efficiency::find(&report.rows, design, 1, "low").unwrap();
        assert!(low.sent > 0 && low.received > 0, "{low:?}");
        assert!(low.task_clock_us_per_op.is_some_and(|v| v > 0.0), "{low:?}");
        assert!(low.ctx_switches_per_op.is_some(), "{low:?}");
    }
    // The targets are the rows' (serde_json's float parsing may differ in the last bit).
    let again = efficiency::targets(&report.rows);
    assert_eq!(report.targets.len(), 2);
    for (t, a) in report.targets.iter().zip(&again) {
        assert_eq!((&t.name, &t.from, t.pass), (&a.name, &a.from, a.pass));
        assert!(
            (t.value.unwrap() - a.value.unwrap()).abs() <= 1e-9 * a.value.unwrap().abs(),
            "{t:?} {a:?}"
        );
    }
    for t in &report.targets {
        assert!(t.name.contains("8 apps"), "{}", t.name);
        assert!(t.value.is_some_and(f64::is_finite), "{t:?}");
    }
    assert!(report.oversubscribed.starts_with("yes") == (8 > report.platform.cpus));
}

/// The cpuidle `disable` values of every CPU and state, to compare before and after.
fn idle_settings() -> Vec<(PathBuf, String)> {
    let mut v: Vec<(PathBuf, String)> = glob_disable(Path::new("/sys/devices/system/cpu"));
    v.sort();
    v
}

fn glob_disable(root: &Path) -> Vec<(PathBuf, String)> {
    let cpus = std::fs::read_dir(root).into_iter().flatten().flatten();
    cpus.filter(|c| c.file_name().to_str().is_some_and(|n| n.starts_with("cpu")))
        .flat_map(|c| {
            std::fs::read_dir(c.path().join("cpuidle"))
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|s| s.path().join("disable"))
        .filter_map(|f| Some((f.clone(), std::fs::read_to_string(&f).ok()?)))
        .collect()
}

#[test]
fn idle_quick_run_has_both_modes_both_settings_and_puts_idle_states_back() {
    if !is_root() {
        eprintln!("skipped: needs root (namespaces, cpuidle)");
        return;
    }
    let _one = IDLE_STATES.lock().unwrap_or_else(|e| e.into_inner());
    let before = idle_settings();
    let (out, pid, dir) = run_quick(IDLE_BENCH, "idle", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(idle_settings(), before, "idle states not put back");
    assert!(
        out.status.success(),
        "mq-bench-idle failed: {}\n{stderr}",
        out.status
    );
    eprintln!("{stderr}");
    assert!(
        namespaces_of(pid).is_empty(),
        "{:?} left behind",
        namespaces_of(pid)
    );
    let text = std::fs::read_to_string(dir.join("summary.json")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let report: idle::Report = serde_json::from_str(&text).unwrap();
    assert_eq!(report.rows.len(), MODES.len() * IDLE.len());
    for mode in MODES {
        for setting in IDLE {
            let r =
                idle::find(&report.rows, mode, setting).unwrap_or_else(|| panic!("no row {mode} {setting}"));
            for v in [r.p50_us, r.p99_us, r.p99_9_us, r.cores, r.msgs_per_s] {
                finite(&format!("{mode} {setting}"), v);
            }
            assert!(r.received > 0 && r.p50_us > 0.0 && r.p50_us <= r.p99_us, "{r:?}");
        }
    }
    let again = idle::effects(&report.rows);
    for (e, a) in report.effects.iter().zip(&again) {
        assert_eq!(e.mode, a.mode);
        let (x, y) = (e.p99_ratio.unwrap(), a.p99_ratio.unwrap());
        assert!((x - y).abs() <= 1e-9 * y.abs(), "{e:?} {a:?}");
    }
    assert_eq!(report.effects.len(), MODES.len());
    assert!(!report.mechanism.is_empty() && !report.models.is_empty() && !report.does_not_model.is_empty());
    if !before.is_empty() {
        assert!(report.mechanism.starts_with("cpuidle"), "{}", report.mechanism);
        assert!(!report.idle_states.is_empty());
    }
}

/// Both refuse to run without root, saying why, before making anything. As root, the run
/// drops to `nobody` with `setpriv` (util-linux).
#[test]
fn both_refuse_without_root() {
    for bin in [EFFICIENCY, IDLE_BENCH] {
        let mut cmd = if is_root() {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", bin]);
            c
        } else {
            Command::new(bin)
        };
        let out = match cmd.arg("--quick").output() {
            Ok(out) => out,
            Err(e) => {
                eprintln!("skipped: no setpriv ({e})");
                return;
            }
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.starts_with("setpriv:") {
            eprintln!("skipped: {stderr}");
            return;
        }
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains("needs root"), "{bin}: {stderr}");
    }
}

/// Ctrl-C (SIGINT to the run's process group, as a terminal sends it) while idle CPUs are
/// kept polling: the run exits with 130, the idle states are as they were before, its
/// namespaces are gone and none of its processes is left.
#[test]
fn idle_run_interrupted_while_polling_puts_idle_states_back() {
    use std::os::unix::process::CommandExt;
    if !is_root() {
        eprintln!("skipped: needs root (namespaces, cpuidle)");
        return;
    }
    let _one = IDLE_STATES.lock().unwrap_or_else(|e| e.into_inner());
    let before = idle_settings();
    if before.is_empty() {
        eprintln!("skipped: no cpuidle states here");
        return;
    }
    let mut child = Command::new(IDLE_BENCH)
        .args(["--rounds", "2", "--seconds", "2", "--warmup-ms", "100"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while idle_settings() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never kept CPUs polling"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before polling"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: kill has no memory preconditions; -pid is the child's own process group.
    assert_eq!(unsafe { libc::kill(-(pid as i32), libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_eq!(idle_settings(), before, "idle states not put back after Ctrl-C");
    assert!(
        namespaces_of(pid).is_empty(),
        "{:?} left behind",
        namespaces_of(pid)
    );
    // Every process of the group (the hosts stop on SIGINT as on SIGTERM, the apps die of
    // it) is gone within the hosts' stop time.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    // SAFETY: signal 0 only checks whether the group has members.
    while unsafe { libc::kill(-(pid as i32), 0) } == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "processes of the interrupted run are still alive"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
