//! Run-time changes: groups and engines added and removed while a ping-pong runs on
//! another engine, in every mode; refused changes leave everything as it was.
//!
//! The only timing bound is the ping-pong's longest round trip during the changes, which
//! is generous (the machine running the suite may be busy) and printed, so that a change
//! that paused other engines' threads for long shows.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{forwarder, App};
use snap_runtime::{
    CompactingParams, Engine, GroupSpec, Mode, RunOutcome, Runtime, RuntimeError, RuntimeOptions,
};
use snap_runtime::{Status, WakeSource, WorkProbe};

/// Longest round trip accepted on the undisturbed engine while others are added and
/// removed. A change costs it nothing by design (no command reaches its thread); the bound
/// only absorbs a busy test machine.
const MAX_GAP: Duration = Duration::from_millis(500);

fn options() -> RuntimeOptions {
    RuntimeOptions {
        microquanta: false,
        ..RuntimeOptions::default()
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn spec(name: &str, mode: Mode, cores: Vec<usize>, engines: Vec<Box<dyn Engine>>) -> GroupSpec {
    GroupSpec {
        name: name.into(),
        mode,
        cores,
        engines,
        compacting: CompactingParams::default(),
        idle_poll: mode.default_idle_poll(),
        microquanta_group: None,
    }
}

/// A forwarder that says when it has been dropped.
struct Tracked {
    inner: common::Forwarder,
    dropped: Arc<AtomicBool>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.dropped.store(true, Relaxed);
    }
}

impl Engine for Tracked {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn run(&mut self, now: Instant) -> RunOutcome {
        self.inner.run(now)
    }
    fn wake_sources(&self) -> Vec<WakeSource> {
        self.inner.wake_sources()
    }
    fn work_probe(&self) -> WorkProbe {
        self.inner.work_probe()
    }
}

fn tracked(name: &str) -> (Box<dyn Engine>, App, Arc<AtomicBool>) {
    let (inner, app) = forwarder(name, Duration::ZERO);
    let dropped = Arc::new(AtomicBool::new(false));
    let engine = Tracked {
        inner,
        dropped: dropped.clone(),
    };
    (Box::new(engine), app, dropped)
}

/// Round trips of a few messages through an engine, in order.
fn echoes(app: &mut App, from: u64) {
    for seq in from..from + 10 {
        app.send(seq);
        assert_eq!(
            app.recv(Duration::from_secs(10)),
            Some(seq),
            "through a new engine"
        );
    }
}

/// A ping-pong on `app` until `stop`: every reply in order; returns the round trips and the
/// longest one.
fn ping_pong(
    mut app: App,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
) -> std::thread::JoinHandle<Duration> {
    std::thread::spawn(move || {
        let mut longest = Duration::ZERO;
        let mut seq = 0;
        while !stop.load(Relaxed) {
            let sent = Instant::now();
            app.send(seq);
            assert_eq!(
                app.recv(Duration::from_secs(10)),
                Some(seq),
                "ping-pong lost or reordered"
            );
            longest = longest.max(sent.elapsed());
            seq += 1;
            count.store(seq, Relaxed);
        }
        longest
    })
}

fn names(status: &Status) -> Vec<(String, String, Vec<String>, Vec<i32>)> {
    status
        .groups
        .iter()
        .map(|g| {
            (
                g.name.clone(),
                g.mode.clone(),
                g.engines.iter().map(|e| e.name.clone()).collect(),
                g.threads.iter().map(|t| t.tid).collect(),
            )
        })
        .collect()
}

fn wait_dropped(flag: &AtomicBool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !flag.load(Relaxed) {
        assert!(Instant::now() < deadline, "engine not dropped");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The whole life cycle in `mode`, next to a spreading group whose engine plays ping-pong.
fn changes_leave_a_running_ping_pong_undisturbed(mode: Mode, cores: Vec<usize>) {
    let (steady, app, _) = tracked("steady");
    let (other, _other_app, _) = tracked("steady2");
    let rt = Runtime::start(
        vec![spec("base", Mode::Spreading, vec![], vec![steady, other])],
        options(),
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let pinger = ping_pong(app, stop.clone(), count.clone());

    for round in 0..3u64 {
        let (a, mut a_app, a_dropped) = tracked(&format!("new{round}a"));
        rt.add_group(spec("new", mode, cores.clone(), vec![a])).unwrap();
        echoes(&mut a_app, 0);
        let (b, mut b_app, b_dropped) = tracked(&format!("new{round}b"));
        rt.add_engine("new", b).unwrap();
        echoes(&mut b_app, 0);
        echoes(&mut a_app, 10);
        let (c, mut c_app, c_dropped) = tracked(&format!("base{round}"));
        rt.add_engine("base", c).unwrap();
        echoes(&mut c_app, 0);
        let status = rt.status();
        let new = status.groups.iter().find(|g| g.name == "new").unwrap();
        assert_eq!(new.engines.len(), 2, "{new:?}");
        assert_eq!(new.mode, mode.as_str());
        assert_eq!(new.cores, cores);

        rt.remove_engine(&format!("new{round}b")).unwrap();
        wait_dropped(&b_dropped);
        assert!(!a_dropped.load(Relaxed));
        echoes(&mut a_app, 20);
        rt.remove_engine(&format!("base{round}")).unwrap();
        wait_dropped(&c_dropped);
        rt.remove_group("new").unwrap();
        wait_dropped(&a_dropped);
        let status = rt.status();
        assert_eq!(
            names(&status).iter().map(|g| g.0.as_str()).collect::<Vec<_>>(),
            ["base"]
        );
        assert_eq!(status.groups[0].engines.len(), 2);
        // Spreading: one thread per engine, the added one's thread is gone.
        assert_eq!(status.groups[0].threads.len(), 2, "{status:?}");
    }
    stop.store(true, Relaxed);
    let longest = pinger.join().unwrap();
    let n = count.load(Relaxed);
    eprintln!("{mode}: {n} round trips during the changes, longest {longest:?}");
    assert!(n > 0);
    assert!(longest < MAX_GAP, "a change disturbed the ping-pong: {longest:?}");
    let status = rt.shutdown();
    assert_eq!(status.engine("steady").unwrap().items, n);
    assert!(status.unhealthy().is_empty(), "{status:?}");
}

#[test]
fn dedicated_group_comes_and_goes_next_to_a_ping_pong() {
    changes_leave_a_running_ping_pong_undisturbed(Mode::Dedicated, vec![cpus() - 1]);
}

#[test]
fn spreading_group_comes_and_goes_next_to_a_ping_pong() {
    changes_leave_a_running_ping_pong_undisturbed(Mode::Spreading, vec![]);
}

#[test]
fn compacting_group_comes_and_goes_next_to_a_ping_pong() {
    changes_leave_a_running_ping_pong_undisturbed(Mode::Compacting, (0..cpus()).collect());
}

#[test]
fn engines_added_to_and_removed_from_a_compacting_group_keep_the_others_exact() {
    let mut apps = Vec::new();
    let mut engines: Vec<Box<dyn Engine>> = Vec::new();
    for i in 0..2 {
        let (e, app, _) = tracked(&format!("c{i}"));
        engines.push(e);
        apps.push(app);
    }
    let rt = Runtime::start(vec![spec("c", Mode::Compacting, vec![], engines)], options()).unwrap();
    // Traffic on c0 and c1 throughout: exactly once, in order.
    let stop = Arc::new(AtomicBool::new(false));
    let pingers: Vec<_> = apps
        .into_iter()
        .map(|app| ping_pong(app, stop.clone(), Arc::new(AtomicU64::new(0))))
        .collect();
    for round in 0..5 {
        let (e, mut app, dropped) = tracked(&format!("extra{round}"));
        rt.add_engine("c", e).unwrap();
        echoes(&mut app, 0);
        rt.remove_engine(&format!("extra{round}")).unwrap();
        wait_dropped(&dropped);
    }
    stop.store(true, Relaxed);
    for p in pingers {
        let longest = p.join().unwrap();
        assert!(longest < MAX_GAP, "{longest:?}");
    }
    let status = rt.shutdown();
    assert_eq!(status.groups[0].engines.len(), 2);
    assert!(status.unhealthy().is_empty(), "{status:?}");
}

#[test]
fn refused_changes_change_nothing() {
    let (a, mut app, _) = tracked("a");
    let rt = Runtime::start(
        vec![
            spec("s", Mode::Spreading, vec![], vec![a]),
            spec("d", Mode::Dedicated, vec![cpus() - 1], vec![tracked("d0").0]),
        ],
        options(),
    )
    .unwrap();
    let before = names(&rt.status());
    let refusals: Vec<(RuntimeError, &str)> = vec![
        (
            rt.add_group(spec("s", Mode::Spreading, vec![], vec![tracked("x").0]))
                .unwrap_err(),
            "duplicate group",
        ),
        (
            rt.add_group(spec("t", Mode::Spreading, vec![], vec![tracked("a").0]))
                .unwrap_err(),
            "duplicate engine",
        ),
        (
            rt.add_group(spec(
                "t",
                Mode::Spreading,
                vec![],
                vec![tracked("x").0, tracked("x").0],
            ))
            .unwrap_err(),
            "duplicate engine",
        ),
        (
            rt.add_group(spec("t", Mode::Dedicated, vec![], vec![tracked("x").0]))
                .unwrap_err(),
            "needs at least one core",
        ),
        (
            rt.add_group(spec("t", Mode::Spreading, vec![cpus()], vec![tracked("x").0]))
                .unwrap_err(),
            "does not exist",
        ),
        (
            rt.add_group(spec("t", Mode::Spreading, vec![0, 0], vec![tracked("x").0]))
                .unwrap_err(),
            "listed twice",
        ),
        (
            rt.add_group(spec("t", Mode::Spreading, vec![cpus() - 1], vec![tracked("x").0]))
                .unwrap_err(),
            "dedicated cores cannot be shared",
        ),
        (
            rt.add_group(spec("t", Mode::Spreading, vec![], vec![]))
                .unwrap_err(),
            "has no engines",
        ),
        (
            rt.add_engine("s", tracked("a").0).unwrap_err(),
            "duplicate engine",
        ),
        (rt.add_engine("nope", tracked("x").0).unwrap_err(), "no group"),
        (rt.remove_engine("nope").unwrap_err(), "no engine"),
        (rt.remove_engine("a").unwrap_err(), "last one of group"),
        (rt.remove_group("nope").unwrap_err(), "no group"),
    ];
    for (e, expected) in refusals {
        assert!(e.to_string().contains(expected), "{e} (expected {expected:?})");
    }
    assert_eq!(names(&rt.status()), before);
    echoes(&mut app, 0);
    rt.shutdown();
}

#[test]
fn compacting_rebalances_engines_added_at_run_time_and_after_a_removal() {
    if cpus() < 2 {
        eprintln!("skipped: needs two CPUs");
        return;
    }
    let (idle, _idle_app, idle_dropped) = tracked("idle");
    let spec = GroupSpec {
        compacting: CompactingParams {
            poll_interval: Duration::from_micros(50),
            max_queueing_delay: Duration::from_micros(300),
            shrink_after: Duration::from_millis(50),
        },
        ..spec("c", Mode::Compacting, vec![0, 1], vec![idle])
    };
    let rt = Runtime::start(vec![spec], options()).unwrap();
    // Two engines that each keep a thread busy (16 × 50 µs per step), added at run time.
    let mut apps = Vec::new();
    for i in 0..2 {
        let (engine, app) = forwarder(&format!("hot{i}"), Duration::from_micros(50));
        rt.add_engine("c", Box::new(engine)).unwrap();
        apps.push(app);
    }
    assert_eq!(
        rt.status().groups[0].active_threads,
        1,
        "added where the engines are"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let echoed = Arc::new(AtomicU64::new(0));
    let loaders: Vec<_> = apps
        .into_iter()
        .map(|mut app| {
            let (stop, echoed) = (stop.clone(), echoed.clone());
            std::thread::spawn(move || {
                let mut seq = 0u64;
                while !stop.load(Relaxed) {
                    if app.tx.push(&seq.to_le_bytes()).is_ok() {
                        seq += 1;
                    }
                    app.ringer.ring();
                    while app.try_recv().is_some() {
                        echoed.fetch_add(1, Relaxed);
                    }
                    std::thread::sleep(Duration::from_micros(100));
                }
            })
        })
        .collect();
    let wait = |what: &str, cond: &dyn Fn(&Status) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = rt.status();
            if cond(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "{what}: {s:#?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait("did not grow onto the second core", &|s| {
        s.groups[0].active_threads == 2
    });
    // Removing the first engine shifts the others' places in the rebalancer's view; the
    // group must go on balancing them as the engines they are.
    rt.remove_engine("idle").unwrap();
    wait_dropped(&idle_dropped);
    let before = echoed.load(Relaxed);
    wait("traffic stopped after the removal", &|_| {
        echoed.load(Relaxed) > before + 1000
    });
    stop.store(true, Relaxed);
    for l in loaders {
        l.join().unwrap();
    }
    let shrunk = wait("did not shrink back when idle", &|s| {
        s.groups[0].active_threads == 1
    });
    let engines: Vec<&str> = shrunk.groups[0].engines.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(engines, ["hot0", "hot1"]);
    let moves: u64 = shrunk.groups[0].engines.iter().map(|e| e.migrations).sum();
    assert!(moves >= 2, "{shrunk:#?}");
    assert!(shrunk.unhealthy().is_empty(), "{shrunk:#?}");
    rt.shutdown();
}
