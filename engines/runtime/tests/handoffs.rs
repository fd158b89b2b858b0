//! Fewer handoffs: several engines (of several hosts) sharing one dedicated thread, and the
//! idle poll window of blocking threads (`GroupSpec::idle_poll`), with real threads, rings,
//! eventfds and epoll.
//!
//! Waits are generous deadlines on a condition; the one time-dependent claim (work within
//! the poll window needs no wakeup) uses a window two orders of magnitude longer than the
//! gaps between messages, so a busy machine does not make it flaky.

mod common;

use std::time::{Duration, Instant};

use common::{forwarder, App};
use snap_runtime::{CompactingParams, Engine, GroupSpec, Mode, Runtime, RuntimeOptions};

fn options() -> RuntimeOptions {
    RuntimeOptions {
        microquanta: false,
        ..RuntimeOptions::default()
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn spreading(engines: Vec<Box<dyn Engine>>, idle_poll: Duration) -> GroupSpec {
    GroupSpec {
        name: "spread".into(),
        mode: Mode::Spreading,
        cores: vec![],
        engines,
        compacting: CompactingParams::default(),
        idle_poll,
        microquanta_group: None,
    }
}

/// Echoes messages between two "hosts" whose engines share one dedicated thread: host A's
/// engine forwards app A's message to app B's thread, which sends it back through host B's
/// engine, so each round trip needs both engines to make progress in turn on one core.
#[test]
fn one_dedicated_thread_runs_the_engines_of_two_hosts() {
    let (engine_a, app_a) = forwarder("host-a", Duration::ZERO);
    let (engine_b, app_b) = forwarder("host-b", Duration::ZERO);
    let spec = GroupSpec {
        name: "shared-core".into(),
        mode: Mode::Dedicated,
        cores: vec![cpus() - 1],
        engines: vec![Box::new(engine_a), Box::new(engine_b)],
        compacting: CompactingParams::default(),
        idle_poll: Duration::ZERO,
        microquanta_group: None,
    };
    let rt = Runtime::start(vec![spec], options()).unwrap();
    let status = rt.status();
    let threads: Vec<_> = status.groups.iter().flat_map(|g| &g.threads).collect();
    assert_eq!(threads.len(), 1, "{status:#?}");
    assert_eq!(threads[0].engines, ["host-a", "host-b"], "{status:#?}");
    assert_eq!(threads[0].cores, [cpus() - 1]);
    let tid = threads[0].tid;
    assert_eq!(status.engine("host-a").unwrap().tid, tid);
    assert_eq!(status.engine("host-b").unwrap().tid, tid);

    const ROUNDS: u64 = 20_000;
    // App B: whatever host A's engine delivers goes back through host B's engine.
    let App {
        tx: b_tx,
        rx: a_out,
        ringer: b_ringer,
    } = app_b;
    let App {
        tx: a_tx,
        rx: b_in,
        ringer: a_ringer,
    } = app_a;
    let echo = std::thread::spawn(move || {
        let mut from_a = App {
            tx: b_tx,
            rx: b_in,
            ringer: b_ringer,
        };
        for expected in 0..ROUNDS {
            let got = from_a
                .recv(Duration::from_secs(30))
                .expect("host A's engine stopped");
            assert_eq!(got, expected);
            from_a.send(got);
        }
    });
    let mut app = App {
        tx: a_tx,
        rx: a_out,
        ringer: a_ringer,
    };
    for seq in 0..ROUNDS {
        app.send(seq);
        assert_eq!(app.recv(Duration::from_secs(30)), Some(seq), "round {seq} lost");
    }
    echo.join().unwrap();
    let status = rt.shutdown();
    for name in ["host-a", "host-b"] {
        let e = status.engine(name).unwrap();
        assert_eq!(e.items, ROUNDS, "{e:?}");
    }
}

/// A thread whose engine went idle keeps polling for the window: messages that arrive a
/// millisecond apart, well inside a 200 ms window, are all picked up without the thread
/// ever blocking in epoll (the engine's `wakeups` counter stays at zero), while the same
/// traffic with no window wakes it through epoll for (nearly) every message.
#[test]
fn idle_poll_window_picks_up_work_without_a_wakeup() {
    let run = |idle_poll: Duration| -> u64 {
        let (engine, mut app) = forwarder("fwd", Duration::ZERO);
        let rt = Runtime::start(vec![spreading(vec![Box::new(engine)], idle_poll)], options()).unwrap();
        // The first message ends the thread's start-up idleness, whatever it did then.
        app.send(0);
        assert_eq!(app.recv(Duration::from_secs(10)), Some(0));
        let before = rt.status().engine("fwd").unwrap().wakeups;
        for seq in 1..=20u64 {
            std::thread::sleep(Duration::from_millis(1));
            app.send(seq);
            assert_eq!(app.recv(Duration::from_secs(10)), Some(seq));
        }
        let after = rt.shutdown().engine("fwd").unwrap().wakeups;
        after - before
    };
    let polled = run(Duration::from_millis(200));
    assert_eq!(
        polled, 0,
        "woke through epoll {polled} times inside the poll window"
    );
    let blocked = run(Duration::ZERO);
    assert!(
        blocked >= 10,
        "without a window only {blocked} of 20 messages woke the thread"
    );
}

/// The window does not make an idle thread spin: after it, the thread blocks. Idle for
/// 500 ms with a 50 µs window, a spreading thread uses far less than a core (its CPU time
/// from the kernel's per-thread accounting, not wall time).
#[test]
fn idle_spreading_thread_blocks_after_its_poll_window() {
    let (engine, mut app) = forwarder("fwd", Duration::ZERO);
    let rt = Runtime::start(
        vec![spreading(vec![Box::new(engine)], Duration::from_micros(50))],
        options(),
    )
    .unwrap();
    app.send(1);
    assert_eq!(app.recv(Duration::from_secs(10)), Some(1));
    let cpu = |rt: &Runtime| -> u64 {
        rt.status()
            .groups
            .iter()
            .flat_map(|g| &g.threads)
            .map(|t| t.cpu_time_ns)
            .sum()
    };
    let (cpu0, t0) = (cpu(&rt), Instant::now());
    std::thread::sleep(Duration::from_millis(500));
    let (used, wall) = (cpu(&rt) - cpu0, t0.elapsed());
    rt.shutdown();
    // A spinning thread would use ~500 ms; one poll window per wakeup is microseconds.
    assert!(
        used < wall.as_nanos() as u64 / 20,
        "idle thread used {used} ns of CPU in {wall:?}"
    );
}

#[test]
fn dedicated_groups_refuse_an_idle_poll_window() {
    let (engine, _app) = forwarder("fwd", Duration::ZERO);
    let spec = GroupSpec {
        name: "d".into(),
        mode: Mode::Dedicated,
        cores: vec![0],
        engines: vec![Box::new(engine)],
        compacting: CompactingParams::default(),
        idle_poll: Duration::from_micros(10),
        microquanta_group: None,
    };
    let e = Runtime::start(vec![spec], options()).unwrap_err().to_string();
    assert!(e.contains("idle poll window only applies"), "{e}");
}
