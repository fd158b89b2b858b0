//! Backpressure's wakeup, alone: an engine whose app stopped reading parks completions,
//! stops taking that app's commands and sleeps; the app's pop that frees a slot of its full
//! completion ring (`AppSession::popped`) is then the only thing that can wake it. Nothing
//! else here would: no flows (so no timers, no heartbeats), an idle NIC, and no control
//! operation on the engine while the app reads. Without that doorbell the app reads the
//! ring's 256 completions and then waits forever; the deadline only bounds that hang.
//!
//! Twice: on a plain NIC, and with the NIC side a packet pipeline (`PipeNic` into a pass
//! stage engine in a runtime of its own, then a wire), whose queue's doorbells join the
//! engine's wake sources.

use std::time::{Duration, Instant};

use pony_engine::nic::{Nic, NicWire, PipeNic, ShmWire, ShmWireConfig};
use pony_engine::PonyConfig;
use pony_express::app::{Command, Completion, OpErrorCode};
use snap_pipeline::{queue, Downstream, PassStage, Pool, PoolConfig, StageEngine};
use snap_runtime::{CompactingParams, GroupSpec, Mode, Runtime, RuntimeOptions};

mod common;

use common::{attach, host_with, stats};

const DEADLINE: Duration = Duration::from_secs(10);

/// More completions than the completion ring holds (256), fewer than it and the command
/// ring hold together (so every command can be queued while the engine waits).
const N: u64 = 400;

#[test]
fn the_pop_that_frees_a_full_completion_ring_wakes_the_engine_sleeping_under_backpressure() {
    let (wire, _peer) = ShmWire::pair(ShmWireConfig::default()).unwrap();
    pops_wake_the_engine("bp-wake", wire);
}

#[test]
fn the_pop_wakes_an_engine_whose_nic_side_is_a_pipeline() {
    let pool = Pool::new("bp-wake-pool", PoolConfig::for_mtu(256, 1500, 64)).unwrap();
    let (pony_end, stage_end) = queue("bp-wake-q0", 64, &pool).unwrap();
    let (near, _far) = ShmWire::pair(ShmWireConfig {
        mtu: 1500,
        capacity: 64,
    })
    .unwrap();
    let stage = StageEngine::new(
        "bp-wake-pass",
        Box::new(PassStage),
        stage_end,
        Downstream::Wire(Box::new(NicWire(near))),
        16,
    );
    let _stages = Runtime::start(
        vec![GroupSpec {
            name: "stages".into(),
            mode: Mode::Spreading,
            cores: vec![],
            engines: vec![Box::new(stage)],
            compacting: CompactingParams::default(),
            idle_poll: snap_runtime::DEFAULT_IDLE_POLL,
            microquanta_group: None,
        }],
        RuntimeOptions {
            microquanta: false,
            ..Default::default()
        },
    )
    .unwrap();
    pops_wake_the_engine("bp-wake-piped", PipeNic::new(pony_end, 1500));
}

fn pops_wake_the_engine(name: &str, nic: impl Nic + 'static) {
    let host = host_with(name, nic, PonyConfig::default());
    let (_, mut app, _) = attach(&host.h);

    // N commands, each answered by one completion (an Unlisten of a service nobody holds
    // fails with NoListener), none read: the ring fills and the engine parks the rest.
    let deadline = Instant::now() + DEADLINE;
    for cookie in 0..N {
        let cmd = Command::Unlisten { cookie, service: 5 };
        while app.submit(&cmd).is_err() {
            assert!(Instant::now() < deadline, "command {cookie} never queued");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let deadline = Instant::now() + DEADLINE;
    let parked = loop {
        let s = stats(&host.h);
        if s.sessions_backpressured == 1 && s.commands + s.completions_parked > 256 {
            break s;
        }
        assert!(Instant::now() < deadline, "no backpressure: {s:?}");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        parked.commands < N,
        "a backpressured session's commands were taken"
    );
    assert!(parked.completions_parked > 0);
    // Let the engine's thread go to sleep (it has nothing to do); no control operation
    // wakes it from here on.
    std::thread::sleep(Duration::from_millis(200));

    for cookie in 0..N {
        match app.wait_completion(DEADLINE).unwrap() {
            Some(Completion::Error {
                cookie: c,
                code: OpErrorCode::NoListener,
                ..
            }) => assert_eq!(c, cookie),
            Some(other) => panic!("{other:?}"),
            None => panic!(
                "completion {cookie} of {N} never came: the engine was not woken by the pops \
                 (it had taken {} commands and parked {} completions)",
                parked.commands, parked.completions_parked
            ),
        }
    }
    let s = stats(&host.h);
    assert_eq!(s.commands, N);
    assert_eq!(s.sessions_backpressured, 0);
    assert_eq!(s.completions_parked, 0);
}
