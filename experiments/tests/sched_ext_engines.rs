// SPDX-License-Identifier: GPL-2.0-only
//! The engine runtime on a real sched_ext kernel with `scx_microquanta` loaded: spreading
//! threads join the MicroQuanta class, serve an app under CPU hogs, and keep serving when
//! the scheduler is killed (the kernel reverts to EEVDF underneath them).
//!
//! Ignored on a plain `cargo test`; `cargo xtask test` runs it in the VM.

use std::time::{Duration, Instant};

use mq_class::{Class, SchedExtState};
use mq_experiments::hogs::Hogs;
use mq_experiments::sched_bench;
use mq_experiments::scheduler_process::{
    exclusive_sched_ext_host as sched_ext_host, wait_for_state, SchedulerProcess,
};
use snap_ipc::{Consumer, Doorbell, Producer, Ring, Ringer, SharedMem};
use snap_runtime::{
    CompactingParams, Engine, EngineHealth, GroupSpec, Mode, RingSet, RunOutcome, Runtime, RuntimeOptions,
    WakeSource, WorkProbe,
};

/// Echoes every message from its input ring to its output ring.
struct Echo {
    name: String,
    input: Consumer,
    output: Producer,
    bell: Doorbell,
    rings: RingSet,
}

struct App {
    tx: Producer,
    rx: Consumer,
    ringer: Ringer,
}

fn ring() -> Ring {
    let len = Ring::required_len(256, 64).unwrap();
    Ring::create(SharedMem::create("vm-test", len).unwrap(), 256, 64).unwrap()
}

fn echo(name: &str) -> (Echo, App) {
    let (tx, input) = ring().split();
    let (output, rx) = ring().split();
    let bell = Doorbell::new().unwrap();
    let rings = RingSet::default();
    rings.insert(0, input.probe());
    let app = App {
        tx,
        rx,
        ringer: bell.ringer(),
    };
    (
        Echo {
            name: name.into(),
            input,
            output,
            bell,
            rings,
        },
        app,
    )
}

impl Engine for Echo {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(&mut self, _now: Instant) -> RunOutcome {
        let mut items = 0;
        while items < 32 {
            let Some(msg) = self.input.peek().unwrap() else {
                break;
            };
            if self.output.push(&msg.to_vec()).is_err() {
                return RunOutcome { items, pending: true };
            }
            msg.release();
            items += 1;
        }
        RunOutcome {
            items,
            pending: !self.input.probe().is_empty(),
        }
    }

    fn wake_sources(&self) -> Vec<WakeSource> {
        vec![WakeSource::Doorbell(self.bell.clone())]
    }

    fn work_probe(&self) -> WorkProbe {
        WorkProbe::rings(self.rings.clone())
    }
}

/// Round trips `from..to` one at a time, checking each comes back once and in order.
fn round_trips(app: &mut App, from: u64, to: u64) {
    let mut buf = [0u8; 64];
    for seq in from..to {
        app.tx.push(&seq.to_le_bytes()).unwrap();
        app.ringer.ring();
        let deadline = Instant::now() + Duration::from_secs(30);
        let n = loop {
            if let Some(n) = app.rx.try_pop(&mut buf).unwrap() {
                break n;
            }
            assert!(Instant::now() < deadline, "message {seq} not echoed");
            std::thread::yield_now();
        };
        assert_eq!(u64::from_le_bytes(buf[..n].try_into().unwrap()), seq);
    }
}

#[test]
#[ignore = "needs a sched_ext kernel and root: run by `cargo xtask test` in a VM"]
fn spreading_threads_join_the_class_and_survive_a_killed_scheduler() {
    let _serial = sched_ext_host();
    let scheduler = SchedulerProcess::start(&sched_bench::scheduler_binary().unwrap(), &[]).unwrap();
    let (e0, mut app0) = echo("echo0");
    let (e1, mut app1) = echo("echo1");
    let group = GroupSpec {
        name: "spread".into(),
        mode: Mode::Spreading,
        cores: vec![],
        engines: vec![Box::new(e0), Box::new(e1)],
        compacting: CompactingParams::default(),
        idle_poll: snap_runtime::DEFAULT_IDLE_POLL,
        microquanta_group: None,
    };
    let rt = Runtime::start(vec![group], RuntimeOptions::default()).unwrap();
    let status = rt.status();
    assert!(status.microquanta_loaded, "{status:#?}");
    let class = Class::open().unwrap();
    for thread in &status.groups[0].threads {
        assert!(thread.in_microquanta, "{thread:?}");
        assert!(
            class.contains(thread.tid as u32).unwrap(),
            "tid {} not in the class map",
            thread.tid
        );
    }

    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let hogs = Hogs::start(4 * cpus, None).unwrap();
    round_trips(&mut app0, 0, 300);
    round_trips(&mut app1, 0, 300);

    scheduler.kill().unwrap();
    wait_for_state(SchedExtState::Disabled, Duration::from_secs(30)).unwrap();
    round_trips(&mut app0, 300, 600);
    round_trips(&mut app1, 300, 600);
    drop(hogs);

    let status = rt.shutdown();
    for name in ["echo0", "echo1"] {
        let e = status.engine(name).unwrap();
        assert_eq!(e.items, 600, "{e:?}");
        assert_eq!(e.health, EngineHealth::Ok);
    }
}
