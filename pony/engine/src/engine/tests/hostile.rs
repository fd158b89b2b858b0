//! Hostile and slow apps on stepped engines: a session whose command ring is scribbled, or
//! that names a chain it cannot lend, is quarantined (told why, detached, its flows closed for the peer, out of the work probe),
//! and a session that stops consuming completions is put under backpressure (no work
//! reported for it, so the engine thread can sleep) until it consumes, losing nothing.

use std::sync::atomic::{AtomicU64, Ordering};

use super::*;
use snap_ipc::SharedMem;

/// Attaches an app to `e` like `attach_local`, keeping a mapping of its command ring.
fn attach_keeping_ring(e: &mut PonyEngine) -> (u64, AppSession, SharedMem) {
    let request = AttachRequest {
        notify: false,
        fds: Vec::new(),
        pid: std::process::id() as i32,
        uid: 0,
    };
    let reply = e.attach_app(request).unwrap();
    let ring = SharedMem::from_fd(reply.fds[0].try_clone().unwrap()).unwrap();
    let app = AppSession::from_fds(reply.fds, None).unwrap();
    (reply.id, app, ring)
}

/// Doorbells among the engine's wake sources (the shm wire's and one per session).
fn bells(e: &PonyEngine) -> usize {
    e.wake_sources()
        .iter()
        .filter(|s| matches!(s, WakeSource::Doorbell(_)))
        .count()
}

fn settle(a: &mut PonyEngine, b: &mut PonyEngine, steps: usize) {
    for _ in 0..steps {
        let now = Instant::now();
        a.run(now);
        b.run(now);
        std::thread::sleep(Duration::from_micros(20));
    }
}

#[test]
fn a_scribbled_command_ring_quarantines_only_its_session() {
    let (mut a, mut b) = pair();
    let (_, mut x, ring) = attach_keeping_ring(&mut a);
    let (_, mut z) = a.attach_local(Completions::Poll).unwrap();
    let (_, mut y) = b.attach_local(Completions::Poll).unwrap();
    listen(&mut a, &mut b, &mut y, 1, 5);
    open(&mut x, 1, 5);
    let Completion::FlowOpened { result: Ok(_), .. } = step_until(&mut a, &mut b, &mut x) else {
        panic!("open")
    };
    let Completion::FlowAccepted { flow: fy, .. } = step_until(&mut a, &mut b, &mut y) else {
        panic!("accept")
    };

    let bells_before = bells(&a);
    // The app writes a producer index no ring can have (offset 64: the producer line).
    // SAFETY: the ring's header is at least 192 bytes; the index is an aligned AtomicU64.
    let producer = unsafe { &*(ring.as_ptr().add(64) as *const AtomicU64) };
    producer.store(u64::MAX / 3, Ordering::Release);
    settle(&mut a, &mut b, 5);

    assert_eq!(a.stats().sessions_quarantined, 1);
    assert_eq!(a.stats().sessions, 1);
    // Its doorbell is no longer a wake source, and the runtime is told to look again.
    assert!(a.take_sources_changed() && !a.take_sources_changed());
    assert_eq!(bells(&a), bells_before - 1);
    // Told why, if it still reads.
    assert_eq!(
        x.poll_completion().unwrap(),
        Some(Completion::Error {
            cookie: 0,
            code: OpErrorCode::Quarantined,
            detail: 0
        })
    );
    // The ring stays scribbled, yet the engine reports no work for it: no spinning.
    assert!(!a.work_probe().has_work());
    // The peer sees the flow closed, with the reason it can know.
    assert_eq!(
        step_until(&mut a, &mut b, &mut y),
        Completion::FlowClosed {
            flow: fy,
            reason: CloseReason::PeerClosed
        }
    );
    // The other app on the same engine keeps working.
    open(&mut z, 2, 5);
    let Completion::FlowOpened { result: Ok(_), .. } = step_until(&mut a, &mut b, &mut z) else {
        panic!("the other app's open")
    };
}

#[test]
fn a_command_naming_a_bad_chain_quarantines_its_session_and_says_why() {
    let (mut a, mut b) = pair();
    let (_, mut x) = a.attach_local(Completions::Poll).unwrap();
    let (_, mut z) = a.attach_local(Completions::Poll).unwrap();
    let (_, mut y) = b.attach_local(Completions::Poll).unwrap();
    listen(&mut a, &mut b, &mut y, 1, 5);
    open(&mut x, 1, 5);
    let Completion::FlowOpened { result: Ok(fx), .. } = step_until(&mut a, &mut b, &mut x) else {
        panic!("open")
    };
    // A buffer index outside the pool: no correct app names it.
    x.post(&Command::Send {
        flow: fx,
        stream: 0,
        head: u32::MAX - 1,
        len: 10,
        cookie: 9,
    })
    .unwrap();
    settle(&mut a, &mut b, 5);
    assert_eq!(a.stats().sessions_quarantined, 1);
    assert_eq!(
        x.poll_completion().unwrap(),
        Some(Completion::Error {
            cookie: 0,
            code: OpErrorCode::Quarantined,
            detail: OpErrorCode::BadChain as u64
        })
    );
    assert!(!a.work_probe().has_work());
    // The other app on the same engine keeps working.
    open(&mut z, 1, 5);
    let Completion::FlowOpened { result: Ok(_), .. } = step_until(&mut a, &mut b, &mut z) else {
        panic!("the other app's open")
    };
}

#[test]
fn an_app_that_stops_consuming_gets_backpressure_and_loses_nothing() {
    let (mut a, mut b) = pair();
    let (_, mut x) = a.attach_local(Completions::Poll).unwrap();
    let (_, mut y) = b.attach_local(Completions::Poll).unwrap();
    listen(&mut a, &mut b, &mut y, 1, 5);
    open(&mut x, 1, 5);
    let Completion::FlowOpened { result: Ok(fx), .. } = step_until(&mut a, &mut b, &mut x) else {
        panic!("open")
    };
    let Completion::FlowAccepted { .. } = step_until(&mut a, &mut b, &mut y) else {
        panic!("accept")
    };
    // Three times y's completion ring (64) of messages, which y does not read for now.
    const N: u64 = 192;
    let mut sent = 0;
    let mut x_done = 0;
    for i in 0..N {
        let chain = x.pool().write_chain(&i.to_le_bytes()).unwrap();
        let cmd = Command::Send {
            flow: fx,
            stream: 0,
            head: chain.head.0,
            len: 8,
            cookie: i,
        };
        while x.submit(&cmd).is_err() {
            settle(&mut a, &mut b, 1);
            while let Some(c) = x.poll_completion().unwrap() {
                assert!(matches!(c, Completion::Sent { .. }), "{c:?}");
                x_done += 1;
            }
        }
        sent += 1;
        settle(&mut a, &mut b, 1);
        while let Some(c) = x.poll_completion().unwrap() {
            assert!(matches!(c, Completion::Sent { .. }), "{c:?}");
            x_done += 1;
        }
    }
    assert_eq!(sent, N);
    settle(&mut a, &mut b, 200);
    while let Some(c) = x.poll_completion().unwrap() {
        assert!(matches!(c, Completion::Sent { .. }), "{c:?}");
        x_done += 1;
    }
    assert_eq!(x_done, N, "every message reached b's engine");
    // y is under backpressure; a command it posts waits, and b reports no work.
    assert_eq!(b.stats().sessions_backpressured, 1);
    assert!(b.stats().backpressure_waits >= 1);
    assert!(b.stats().completions_parked > 0);
    y.submit(&Command::Listen {
        cookie: 77,
        service: 6,
    })
    .unwrap();
    settle(&mut a, &mut b, 20);
    assert!(
        !b.work_probe().has_work(),
        "a full completion ring must not look like work"
    );
    // y consumes: the first pop makes work for b again, and everything arrives in order.
    let mut got = Vec::new();
    let mut listening = false;
    for _ in 0..10_000 {
        match y.poll_completion().unwrap() {
            Some(Completion::Received { head, len, .. }) => {
                let mut data = Vec::new();
                y.take_received(head, len, &mut data).unwrap();
                got.push(u64::from_le_bytes(data.try_into().unwrap()));
                if got.len() == 1 {
                    assert!(b.work_probe().has_work(), "the pop that frees a slot is work");
                }
            }
            Some(Completion::Listening { cookie: 77 }) => listening = true,
            Some(other) => panic!("{other:?}"),
            None => settle(&mut a, &mut b, 1),
        }
        if listening && got.len() as u64 == N {
            break;
        }
    }
    assert_eq!(got, (0..N).collect::<Vec<_>>());
    assert!(listening);
    assert_eq!(b.stats().sessions_backpressured, 0);
    assert_eq!(b.stats().completions_parked, 0);
}
