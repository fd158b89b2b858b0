//! Two engines stepped by hand on one thread over a lossless `ShmWire` pair: the control
//! paths (services and their listeners, reject without a listener, unknown flows, close,
//! malformed packets) without threads, so every run is the same. The zero-copy data path,
//! over the same kind of pair, is tested in [`zero_copy`].

mod doorbell;
mod hostile;
mod in_place;
mod limits;
mod pipeline;
mod zero_copy;

use std::time::{Duration, Instant};

use super::*;
use crate::nic::{ShmWire, ShmWireConfig};
use pony_express::app::{Command, Completion, OpErrorCode, SessionShape};

fn pair() -> (PonyEngine, PonyEngine) {
    pair_with(PonyLimits::default())
}

fn pair_with(limits: PonyLimits) -> (PonyEngine, PonyEngine) {
    pair_limits(limits, limits)
}

/// Two engines with limits of their own.
fn pair_limits(limits: PonyLimits, b_limits: PonyLimits) -> (PonyEngine, PonyEngine) {
    let (a, b) = ShmWire::pair(ShmWireConfig::default()).unwrap();
    let cfg = PonyConfig {
        session: SessionShape {
            ring_capacity: 64,
            pool: pony_express::pool::PoolShape {
                buffers: 256,
                buf_size: 2048,
            },
        },
        limits,
        ..PonyConfig::default()
    };
    let b_cfg = PonyConfig {
        limits: b_limits,
        ..cfg.clone()
    };
    (
        PonyEngine::new("a", Box::new(a), cfg),
        PonyEngine::new("b", Box::new(b), b_cfg),
    )
}

/// Steps both engines until `app` has a completion (or a generous bound of steps).
fn step_until(a: &mut PonyEngine, b: &mut PonyEngine, app: &mut AppSession) -> Completion {
    for _ in 0..10_000 {
        let now = Instant::now();
        a.run(now);
        b.run(now);
        if let Some(c) = app.poll_completion().unwrap() {
            return c;
        }
        std::thread::sleep(Duration::from_micros(20));
    }
    panic!("no completion");
}

fn open(app: &mut AppSession, cookie: u64, service: u32) {
    let peer = "shm".into();
    app.submit(&Command::OpenFlow {
        cookie,
        peer,
        service,
    })
    .unwrap();
}

fn listen(
    a: &mut PonyEngine,
    b: &mut PonyEngine,
    app: &mut AppSession,
    cookie: u64,
    service: u32,
) -> Completion {
    app.submit(&Command::Listen { cookie, service }).unwrap();
    step_until(a, b, app)
}

#[test]
fn connect_without_listener_is_rejected() {
    let (mut a, mut b) = pair();
    let (_, mut app) = a.attach_local(Completions::Poll).unwrap();
    open(&mut app, 3, 0);
    let c = step_until(&mut a, &mut b, &mut app);
    assert_eq!(
        c,
        Completion::FlowOpened {
            cookie: 3,
            result: Err(OpErrorCode::NoListener)
        }
    );
    assert_eq!(b.stats().connects_rejected, 1);
    assert_eq!(a.stats().flows, 0);
}

#[test]
fn each_service_has_one_listener_that_gets_only_its_flows() {
    let (mut a, mut b) = pair();
    let (_, mut opener) = a.attach_local(Completions::Poll).unwrap();
    let (one_id, mut one) = b.attach_local(Completions::Poll).unwrap();
    let (_, mut two) = b.attach_local(Completions::Poll).unwrap();
    let (_, mut late) = b.attach_local(Completions::Poll).unwrap();
    let (a, b) = (&mut a, &mut b);
    assert_eq!(
        listen(a, b, &mut one, 10, 1),
        Completion::Listening { cookie: 10 }
    );
    assert_eq!(
        listen(a, b, &mut two, 20, 2),
        Completion::Listening { cookie: 20 }
    );
    // Taken, whoever asks (the holder too); the refusal names the service.
    for app in [&mut late, &mut one] {
        let taken = Completion::Error {
            cookie: 30,
            code: OpErrorCode::ServiceTaken,
            detail: 2,
        };
        assert_eq!(listen(a, b, app, 30, 2), taken);
    }

    // A flow to each service: each listener hears of its own only.
    for (cookie, service, listener, listen_cookie) in [(1, 2, &mut two, 20), (2, 1, &mut one, 10)] {
        open(&mut opener, cookie, service);
        let Completion::FlowOpened { result: Ok(_), .. } = step_until(a, b, &mut opener) else {
            panic!("open to service {service}")
        };
        let c = step_until(a, b, listener);
        assert!(
            matches!(c, Completion::FlowAccepted { cookie, .. } if cookie == listen_cookie),
            "service {service}: {c:?}"
        );
    }
    for _ in 0..20 {
        a.run(Instant::now());
        b.run(Instant::now());
    }
    assert_eq!(one.poll_completion().unwrap(), None);
    assert_eq!(two.poll_completion().unwrap(), None);
    assert_eq!(late.poll_completion().unwrap(), None);

    // Nobody on service 3: the opener hears exactly that.
    open(&mut opener, 3, 3);
    let no_listener = Completion::FlowOpened {
        cookie: 3,
        result: Err(OpErrorCode::NoListener),
    };
    assert_eq!(step_until(a, b, &mut opener), no_listener);

    // A detached app's service is free again: refused until someone listens anew.
    assert!(b.detach(one_id));
    open(&mut opener, 4, 1);
    // Its flow closes too; that and the refusal arrive in either order.
    let mut got = [step_until(a, b, &mut opener), step_until(a, b, &mut opener)];
    got.sort_by_key(|c| matches!(c, Completion::FlowOpened { .. }));
    assert!(matches!(got[0], Completion::FlowClosed { .. }), "{got:?}");
    let no_listener = Completion::FlowOpened {
        cookie: 4,
        result: Err(OpErrorCode::NoListener),
    };
    assert_eq!(got[1], no_listener);
    assert_eq!(
        listen(a, b, &mut late, 40, 1),
        Completion::Listening { cookie: 40 }
    );
    open(&mut opener, 5, 1);
    let Completion::FlowOpened { result: Ok(_), .. } = step_until(a, b, &mut opener) else {
        panic!("open after the new listen")
    };
    assert!(matches!(
        step_until(a, b, &mut late),
        Completion::FlowAccepted { cookie: 40, .. }
    ));
    assert_eq!(b.stats().connects_rejected, 2);
}

#[test]
fn unlisten_frees_the_service_and_only_its_holder_may() {
    let (mut a, mut b) = pair();
    let (_, mut opener) = a.attach_local(Completions::Poll).unwrap();
    let (_, mut holder) = b.attach_local(Completions::Poll).unwrap();
    let (_, mut other) = b.attach_local(Completions::Poll).unwrap();
    let (a, b) = (&mut a, &mut b);
    assert_eq!(
        listen(a, b, &mut holder, 1, 5),
        Completion::Listening { cookie: 1 }
    );
    open(&mut opener, 1, 5);
    let Completion::FlowOpened { result: Ok(flow), .. } = step_until(a, b, &mut opener) else {
        panic!("open")
    };
    assert!(matches!(
        step_until(a, b, &mut holder),
        Completion::FlowAccepted { .. }
    ));

    let unlisten = |app: &mut AppSession, a: &mut PonyEngine, b: &mut PonyEngine, cookie| {
        app.submit(&Command::Unlisten { cookie, service: 5 }).unwrap();
        step_until(a, b, app)
    };
    let not_yours = Completion::Error {
        cookie: 2,
        code: OpErrorCode::NoListener,
        detail: 5,
    };
    assert_eq!(unlisten(&mut other, a, b, 2), not_yours);
    assert_eq!(
        unlisten(&mut holder, a, b, 3),
        Completion::Unlistened { cookie: 3 }
    );
    open(&mut opener, 2, 5);
    let no_listener = Completion::FlowOpened {
        cookie: 2,
        result: Err(OpErrorCode::NoListener),
    };
    assert_eq!(step_until(a, b, &mut opener), no_listener);
    assert_eq!(
        listen(a, b, &mut other, 4, 5),
        Completion::Listening { cookie: 4 }
    );
    // The flow accepted before Unlisten is still the holder's.
    opener.send(flow, 0, b"still here", 9).unwrap();
    let c = step_until(a, b, &mut holder);
    assert!(matches!(c, Completion::Received { len: 10, .. }), "{c:?}");
}

#[test]
fn bad_peer_unknown_flow_close_and_malformed() {
    let (mut a, mut b) = pair();
    let (_, mut x) = a.attach_local(Completions::Poll).unwrap();
    let (_, mut y) = b.attach_local(Completions::Block).unwrap();
    x.submit(&Command::OpenFlow {
        cookie: 1,
        peer: "not an address".into(),
        service: 0,
    })
    .unwrap();
    let c = step_until(&mut a, &mut b, &mut x);
    assert!(matches!(
        c,
        Completion::FlowOpened {
            result: Err(OpErrorCode::Unreachable),
            ..
        }
    ));

    x.send(99, 0, b"nowhere", 5).unwrap();
    let c = step_until(&mut a, &mut b, &mut x);
    assert!(matches!(
        c,
        Completion::Error {
            cookie: 5,
            code: OpErrorCode::UnknownFlow,
            detail: 99
        }
    ));
    assert_eq!(
        x.pool().stats().free,
        256,
        "the refused Send's chain was released"
    );

    assert_eq!(
        listen(&mut a, &mut b, &mut y, 2, 0),
        Completion::Listening { cookie: 2 }
    );
    open(&mut x, 1, 0);
    let Completion::FlowOpened { result: Ok(fx), .. } = step_until(&mut a, &mut b, &mut x) else {
        panic!("open")
    };
    let Completion::FlowAccepted { cookie: 2, flow: fy } = step_until(&mut a, &mut b, &mut y) else {
        panic!("accept")
    };
    // The flow is x's: y cannot close it through its own id space… (ids are per engine)
    y.submit(&Command::CloseFlow { flow: fx + 100 }).unwrap();
    let c = step_until(&mut a, &mut b, &mut y);
    assert!(matches!(
        c,
        Completion::Error {
            code: OpErrorCode::UnknownFlow,
            ..
        }
    ));
    // …and a closes cleanly, both sides hear of it.
    x.submit(&Command::CloseFlow { flow: fx }).unwrap();
    assert_eq!(
        step_until(&mut a, &mut b, &mut x),
        Completion::FlowClosed {
            flow: fx,
            reason: CloseReason::LocalClose
        }
    );
    let c = step_until(&mut a, &mut b, &mut y);
    assert_eq!(
        c,
        Completion::FlowClosed {
            flow: fy,
            reason: CloseReason::PeerClosed
        }
    );

    // Garbage on the wire is counted and dropped.
    a.link.nic_mut().send(&[0u8; 40], &PeerAddr::Shm).unwrap();
    for _ in 0..10 {
        b.run(Instant::now());
    }
    assert_eq!(b.stats().malformed, 1);
    assert_eq!((a.stats().flows, b.stats().flows), (0, 0));
}

#[test]
fn close_after_send_delivers_the_send_and_refuses_later_ones() {
    let (mut a, mut b) = pair();
    let (_, mut x) = a.attach_local(Completions::Poll).unwrap();
    let (_, mut y) = b.attach_local(Completions::Poll).unwrap();
    assert_eq!(
        listen(&mut a, &mut b, &mut y, 2, 9),
        Completion::Listening { cookie: 2 }
    );
    open(&mut x, 1, 9);
    let Completion::FlowOpened { result: Ok(fx), .. } = step_until(&mut a, &mut b, &mut x) else {
        panic!("open")
    };
    let Completion::FlowAccepted { flow: fy, .. } = step_until(&mut a, &mut b, &mut y) else {
        panic!("accept")
    };
    // Send, CloseFlow and another Send, all taken in the same step: the first Send is
    // still in the engine's outbox when the close arrives, and must not be lost.
    let chain = x.pool().write_chain(&[7u8; 5000]).unwrap();
    let send = |head, cookie| Command::Send {
        flow: fx,
        stream: 0,
        head,
        len: 5000,
        cookie,
    };
    x.post(&send(chain.head.0, 10)).unwrap();
    x.post(&Command::CloseFlow { flow: fx }).unwrap();
    let late = x.pool().write_chain(&[8u8; 5000]).unwrap();
    x.post(&send(late.head.0, 11)).unwrap();
    x.kick();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(step_until(&mut a, &mut b, &mut x));
    }
    assert!(got.contains(&Completion::Sent { cookie: 10 }), "{got:?}");
    assert!(
        got.contains(&Completion::FlowClosed {
            flow: fx,
            reason: CloseReason::LocalClose
        }),
        "{got:?}"
    );
    assert!(got.contains(&Completion::Error {
        cookie: 11,
        code: OpErrorCode::FlowClosed,
        detail: fx
    }));
    let Completion::Received { head, len: 5000, .. } = step_until(&mut a, &mut b, &mut y) else {
        panic!("the message sent before the close")
    };
    let mut data = Vec::new();
    y.take_received(head, 5000, &mut data).unwrap();
    assert_eq!(data, vec![7u8; 5000]);
    assert_eq!(
        step_until(&mut a, &mut b, &mut y),
        Completion::FlowClosed {
            flow: fy,
            reason: CloseReason::PeerClosed
        }
    );
    assert_eq!(x.pool().stats().free, 256, "both chains are back");
}

#[test]
fn a_peer_without_a_common_version_is_a_version_mismatch() {
    let (na, nb) = ShmWire::pair(ShmWireConfig::default()).unwrap();
    let mut a = PonyEngine::new("a", Box::new(na), PonyConfig::default());
    let mut newer = PonyConfig::default();
    let next = pony_proto::wire::SUPPORTED_VERSIONS.max + 1;
    newer.flow.versions = pony_proto::wire::VersionRange { min: next, max: next };
    let mut b = PonyEngine::new("b", Box::new(nb), newer);
    let (_, mut x) = a.attach_local(Completions::Poll).unwrap();
    let (_, mut y) = b.attach_local(Completions::Poll).unwrap();
    assert_eq!(
        listen(&mut a, &mut b, &mut y, 2, 5),
        Completion::Listening { cookie: 2 }
    );
    open(&mut x, 1, 5);
    assert_eq!(
        step_until(&mut a, &mut b, &mut x),
        Completion::FlowOpened {
            cookie: 1,
            result: Err(OpErrorCode::VersionMismatch)
        }
    );
    assert_eq!(b.stats().connects_rejected, 1);
}
