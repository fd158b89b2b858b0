//! The app's spin-then-block wait for completions (`AppSession::set_completion_spin`),
//! against real engines in their runtimes: a completion that arrives within the spin is
//! taken without the app ever arming its completion doorbell, so the engine rings nothing
//! (the doorbell's own `rung` counter, kept by the engine's side, stays put); with no spin
//! the app arms at once and the engine rings it. Deadlines only bound hangs; the spin is
//! 200 ms, far longer than one message's acknowledgement takes even on a busy machine.

use std::os::fd::AsFd;
use std::time::Duration;

use pony_engine::nic::{ShmWire, ShmWireConfig};
use pony_engine::PonyConfig;
use pony_express::app::{AppSession, Command, Completion};
use snap_ipc::Doorbell;
use snap_runtime::{AttachReply, AttachRequest, EngineHandle};

mod common;

use common::host_with;

const DEADLINE: Duration = Duration::from_secs(12);

/// Attaches a blocking app (one that hands the engine a completion doorbell), returning the
/// session and a second handle on its doorbell.
fn attach_blocking(h: &EngineHandle) -> (AppSession, Doorbell) {
    let bell = Doorbell::new().unwrap();
    let (page, efd) = bell.fds();
    let fds = vec![
        page.as_fd().try_clone_to_owned().unwrap(),
        efd.as_fd().try_clone_to_owned().unwrap(),
    ];
    let reply: AttachReply = h
        .control_dyn(move |e| {
            let req = AttachRequest {
                notify: true,
                fds,
                pid: std::process::id() as i32,
                uid: 0,
            };
            e.app_facing().expect("app-facing").attach_app(req)
        })
        .unwrap()
        .unwrap();
    let app = AppSession::from_fds(reply.fds, Some(bell.clone())).unwrap();
    (app, bell)
}

fn wait(app: &mut AppSession, what: &str) -> Completion {
    common::wait_for(app, DEADLINE, what)
}

/// Sends 20 messages from a blocking app with `spin`, waiting for each one's `Sent`, and
/// returns how often the engine rang the app's completion doorbell meanwhile.
fn rings_with_spin(spin: Duration) -> u64 {
    let (wa, wb) = ShmWire::pair(ShmWireConfig::default()).unwrap();
    let ha = host_with("wait-a", wa, PonyConfig::default());
    let hb = host_with("wait-b", wb, PonyConfig::default());
    let (mut a, bell) = attach_blocking(&ha.h);
    let (_, mut b, _) = common::attach(&hb.h);
    b.submit(&Command::Listen {
        cookie: 7,
        service: 3,
    })
    .unwrap();
    assert_eq!(wait(&mut b, "Listening"), Completion::Listening { cookie: 7 });
    a.submit(&Command::OpenFlow {
        cookie: 1,
        peer: "shm".into(),
        service: 3,
    })
    .unwrap();
    let Completion::FlowOpened { result: Ok(flow), .. } = wait(&mut a, "FlowOpened") else {
        panic!("open failed")
    };
    a.set_completion_spin(spin);
    let before = bell.counters().0;
    for i in 0..20u64 {
        a.send(flow, 0, &[i as u8; 100], i).unwrap();
        assert_eq!(wait(&mut a, "Sent"), Completion::Sent { cookie: i });
    }
    bell.counters().0 - before
}

#[test]
fn completions_within_the_spin_need_no_doorbell() {
    let spun = rings_with_spin(Duration::from_millis(200));
    assert_eq!(spun, 0, "the engine rang {spun} times while the app was spinning");
    let blocked = rings_with_spin(Duration::ZERO);
    assert!(
        blocked >= 10,
        "a blocking app was rung only {blocked} times for 20 waits"
    );
}
