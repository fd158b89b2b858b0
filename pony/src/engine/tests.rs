//! Two engines stepped by hand on one thread over a lossless `ShmWire` pair: the control
//! paths (reject without a listener, unknown flows, close, malformed packets) without
//! threads, so every run is the same.

use std::time::{Duration, Instant};

use super::*;
use crate::app::{Command, Completion, OpErrorCode};
use crate::nic::{ShmWire, ShmWireConfig};

fn pair() -> (PonyEngine, PonyEngine) {
    let (a, b) = ShmWire::pair(ShmWireConfig::default()).unwrap();
    let cfg = PonyConfig {
        session: SessionShape {
            ring_capacity: 64,
            pool: crate::pool::PoolShape {
                buffers: 256,
                buf_size: 2048,
            },
        },
        ..PonyConfig::default()
    };
    (
        PonyEngine::new("a", Box::new(a), cfg.clone()),
        PonyEngine::new("b", Box::new(b), cfg),
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

#[test]
fn connect_without_listener_is_rejected() {
    let (mut a, mut b) = pair();
    let (_, mut app) = a.attach_local(Completions::Poll).unwrap();
    app.submit(&Command::OpenFlow {
        cookie: 3,
        peer: "shm".into(),
    })
    .unwrap();
    let c = step_until(&mut a, &mut b, &mut app);
    assert_eq!(
        c,
        Completion::FlowOpened {
            cookie: 3,
            result: Err(OpErrorCode::Unreachable)
        }
    );
    assert_eq!(b.stats().connects_rejected, 1);
    assert_eq!(a.stats().flows, 0);
}

#[test]
fn bad_peer_unknown_flow_close_and_malformed() {
    let (mut a, mut b) = pair();
    let (_, mut x) = a.attach_local(Completions::Poll).unwrap();
    let (_, mut y) = b.attach_local(Completions::Block).unwrap();
    x.submit(&Command::OpenFlow {
        cookie: 1,
        peer: "not an address".into(),
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

    y.submit(&Command::Listen { cookie: 2 }).unwrap();
    assert_eq!(
        step_until(&mut a, &mut b, &mut y),
        Completion::Listening { cookie: 2 }
    );
    x.submit(&Command::OpenFlow {
        cookie: 1,
        peer: "shm".into(),
    })
    .unwrap();
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
        Completion::FlowClosed { flow: fx }
    );
    let c = step_until(&mut a, &mut b, &mut y);
    assert_eq!(c, Completion::FlowClosed { flow: fy });

    // Garbage on the wire is counted and dropped.
    a.nic.send(&[0u8; 40], &PeerAddr::Shm).unwrap();
    for _ in 0..10 {
        b.run(Instant::now());
    }
    assert_eq!(b.stats().malformed, 1);
    assert_eq!((a.stats().flows, b.stats().flows), (0, 0));
}
