// SPDX-License-Identifier: GPL-2.0-only
//! The engine runtime on a real sched_ext kernel with `scx_microquanta` loaded: spreading
//! threads join the MicroQuanta class, serve an app under CPU hogs, and keep serving when
//! the scheduler is killed (the kernel reverts to EEVDF underneath them); a real `snap-host`
//! whose groups have `microquanta = { runtime_us, period_us }` puts their threads in class
//! groups of their own, and removing such a group at run time removes the class group the
//! host made.
//!
//! Ignored on a plain `cargo test`; `cargo xtask test` runs it in the VM.

use std::time::{Duration, Instant};

use mq_class::{Budget, Class, ClassError, SchedExtState, DEFAULT_GROUP};
use mq_experiments::hogs::Hogs;
use mq_experiments::locate;
use mq_experiments::sched_bench;
use mq_experiments::scheduler_process::{
    exclusive_sched_ext_host as sched_ext_host, wait_for_state, SchedulerProcess,
};
use snap_host::process::HostProcess;
use snap_ipc::control::SnapClient;
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

/// An engine group of the host: name, mode, and `microquanta` as (runtime µs, period µs).
type HostGroup = (&'static str, &'static str, Option<(u64, u64)>);

/// The host's engine groups in this test. `host-found` exists before the host starts (as
/// after an earlier host or `mqctl group add`), the others do not.
const HOST_GROUPS: [HostGroup; 4] = [
    ("host-lat", "spreading", Some((200, 1000))),
    ("host-found", "spreading", Some((150, 1000))),
    ("host-compact", "compacting", Some((50, 1000))),
    ("host-plain", "spreading", None),
];

fn host_config() -> String {
    let mut toml = String::from("microquanta = true\n");
    for (name, mode, budget) in HOST_GROUPS {
        toml += &format!("[[group]]\nname = \"{name}\"\nmode = \"{mode}\"\n");
        if let Some((runtime_us, period_us)) = budget {
            toml += &format!("microquanta = {{ runtime_us = {runtime_us}, period_us = {period_us} }}\n");
        }
        for i in 0..2 {
            toml += &format!("[[group.engine]]\nname = \"{name}-{i}\"\nkind = \"echo\"\n");
        }
    }
    toml
}

fn budget(runtime_us: u64, period_us: u64) -> Budget {
    Budget {
        period_us,
        runtime_us,
    }
}

/// Removes the test's class groups left by an earlier run in this boot (they are pinned).
fn remove_class_groups(class: &Class) {
    for (name, _, _) in HOST_GROUPS {
        match class.remove_group(name) {
            Ok(_) | Err(ClassError::UnknownGroup(_)) => {}
            Err(e) => panic!("removing class group {name}: {e}"),
        }
    }
}

#[test]
#[ignore = "needs a sched_ext kernel and root: run by `cargo xtask test` in a VM"]
fn a_host_groups_microquanta_budget_is_its_own_class_group() {
    let _serial = sched_ext_host();
    // The default group at 10 %, so that the host's groups (40 % in all) fit the cap.
    let args = ["--period-us", "1000", "--runtime-us", "100"];
    let _scheduler = SchedulerProcess::start(&sched_bench::scheduler_binary().unwrap(), &args).unwrap();
    wait_for_state(SchedExtState::Enabled, Duration::from_secs(30)).unwrap();
    let class = Class::open().unwrap();
    remove_class_groups(&class);
    class.groups().add("host-found", budget(100, 1000), None).unwrap();

    let bin = locate::binary("snap-host").expect("snap-host is built with the workspace's tests");
    let dir = std::env::temp_dir().join(format!("groups-host-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let host = HostProcess::start(
        &bin,
        &dir,
        &host_config(),
        Duration::from_secs(60),
        Some("  snap-host| "),
    )
    .unwrap();
    let mut client = SnapClient::connect(host.socket()).unwrap();

    // Every configured budget is in the class map, the found group's updated to the config.
    let groups = class.groups();
    assert_eq!(groups.get("host-lat").unwrap().budget, budget(200, 1000));
    assert_eq!(
        groups.get("host-found").unwrap().budget,
        budget(150, 1000),
        "updated, not left"
    );
    assert_eq!(groups.get("host-compact").unwrap().budget, budget(50, 1000));
    assert!(matches!(
        groups.get("host-plain"),
        Err(ClassError::UnknownGroup(_))
    ));

    // Each thread is a member of its group's class group, as the class map says and as
    // the host's status says.
    let status = client.status().unwrap().runtime;
    assert!(status.microquanta_loaded);
    for (name, _, budget) in HOST_GROUPS {
        let g = status.groups.iter().find(|g| g.name == name).unwrap();
        let (want_id, want_name) = match budget {
            Some(_) => (groups.get(name).unwrap().id, name),
            None => (DEFAULT_GROUP, "default"),
        };
        assert!(!g.threads.is_empty(), "{g:?}");
        for t in &g.threads {
            assert!(t.in_microquanta, "{name}: {t:?}");
            assert_eq!(t.microquanta_group.as_deref(), Some(want_name), "{name}: {t:?}");
            assert_eq!(
                class.group_of(t.tid as u32).unwrap(),
                Some(want_id),
                "{name}: tid {}",
                t.tid
            );
        }
    }

    // Removing a group at run time removes the class group the host made, and only that.
    let lat_tids: Vec<u32> = status
        .groups
        .iter()
        .find(|g| g.name == "host-lat")
        .unwrap()
        .threads
        .iter()
        .map(|t| t.tid as u32)
        .collect();
    let summary = client.group_remove("host-lat").unwrap();
    assert!(summary.contains("and its MicroQuanta class group"), "{summary}");
    assert!(matches!(groups.get("host-lat"), Err(ClassError::UnknownGroup(_))));
    // The host joins its engine threads before it removes the group, but the BPF exit_task
    // callback drops a thread from the class only once the kernel is done with the task (on
    // 7.x at its last switch-out), which a stalled vCPU can hold back past the reply.
    let deadline = Instant::now() + Duration::from_secs(5);
    for tid in lat_tids {
        while class.group_of(tid).unwrap().is_some() {
            assert!(
                Instant::now() < deadline,
                "thread {tid} exited, and is still in the class"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let summary = client.group_remove("host-found").unwrap();
    assert!(!summary.contains("class group"), "{summary}");
    assert_eq!(
        groups.get("host-found").unwrap().budget,
        budget(150, 1000),
        "not the host's to remove"
    );

    // A group added at run time with a budget gets its class group before its threads start.
    let table =
        "name = \"host-lat\"\nmode = \"spreading\"\nmicroquanta = { runtime_us = 250, period_us = 1000 }\n\
                 [[engine]]\nname = \"host-lat-9\"\nkind = \"echo\"\n";
    let summary = client.group_add(table).unwrap();
    assert!(
        summary.contains("in MicroQuanta class group host-lat"),
        "{summary}"
    );
    let lat = groups.get("host-lat").unwrap();
    assert_eq!(lat.budget, budget(250, 1000));
    let status = client.status().unwrap().runtime;
    let t = &status
        .groups
        .iter()
        .find(|g| g.name == "host-lat")
        .unwrap()
        .threads[0];
    assert_eq!(class.group_of(t.tid as u32).unwrap(), Some(lat.id));

    // A budget over the cap is refused for that group, and the host runs on without it.
    let table =
        "name = \"host-big\"\nmode = \"spreading\"\nmicroquanta = { runtime_us = 900, period_us = 1000 }\n\
                 [[engine]]\nname = \"host-big-0\"\nkind = \"echo\"\n";
    let e = client.group_add(table).unwrap_err().to_string();
    assert!(
        e.contains("group host-big: cannot make its MicroQuanta class group")
            && e.contains("over the whole CPU"),
        "{e}"
    );
    assert!(client
        .status()
        .unwrap()
        .runtime
        .groups
        .iter()
        .all(|g| g.name != "host-big"));
    drop(client);

    // Class groups are pinned: they outlive the host.
    host.terminate(Duration::from_secs(30)).unwrap();
    assert_eq!(
        class.groups().get("host-compact").unwrap().budget,
        budget(50, 1000)
    );
    remove_class_groups(&class);
    let _ = std::fs::remove_dir_all(&dir);
}
