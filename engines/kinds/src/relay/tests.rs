//! In-process tests of the relay: a relay and an echo engine joined by a channel pair,
//! stepped alternately by hand (no runtime), with apps attached to the relay.

use super::*;
use crate::echo::EchoEngine;

fn shape(capacity: u64) -> ChannelShape {
    ChannelShape {
        capacity,
        slot_size: 64,
    }
}

/// A relay whose internal channel has `internal` slots, connected to an echo engine.
fn chain(internal: u64) -> (RelayEngine, EchoEngine) {
    let (relay, end) = RelayEngine::connect("relay", 0, shape(internal)).unwrap();
    let mut echo = EchoEngine::new("echo", 0);
    echo.attach(end);
    (relay, echo)
}

fn attach(relay: &mut RelayEngine, capacity: u64) -> (u64, ChannelAppEnd) {
    let (eng, app) = AppChannel::pair(shape(capacity), false).unwrap();
    (relay.attach(eng), app)
}

/// Steps relay and echo alternately until neither makes progress.
fn settle(relay: &mut RelayEngine, echo: &mut EchoEngine) {
    let now = Instant::now();
    while relay.run(now).progressed() | echo.run(now).progressed() {}
}

fn recv_all(app: &mut ChannelAppEnd) -> Vec<Vec<u8>> {
    let mut buf = [0u8; 64];
    let mut out = Vec::new();
    while let Some(n) = app.try_recv(&mut buf).unwrap() {
        out.push(buf[..n].to_vec());
    }
    out
}

#[test]
fn two_apps_get_their_own_responses_in_order() {
    let (mut relay, mut echo) = chain(16);
    let (_, mut a) = attach(&mut relay, 64);
    let (_, mut b) = attach(&mut relay, 64);
    for i in 0u8..20 {
        a.send(&[b'a', i]).unwrap();
        b.send(&[b'b', i, i]).unwrap();
    }
    settle(&mut relay, &mut echo);
    let want_a: Vec<Vec<u8>> = (0u8..20).map(|i| vec![b'a', i]).collect();
    let want_b: Vec<Vec<u8>> = (0u8..20).map(|i| vec![b'b', i, i]).collect();
    assert_eq!(recv_all(&mut a), want_a);
    assert_eq!(recv_all(&mut b), want_b);
    let stats = relay.stats();
    assert_eq!((stats.forwarded, stats.returned, stats.channels), (40, 40, 2));
    assert_eq!(echo.stats().echoed, 40);
    assert_eq!(relay.run(Instant::now()), RunOutcome::IDLE);
}

#[test]
fn full_internal_ring_keeps_requests_with_the_app() {
    let (mut relay, mut echo) = chain(2);
    let (_, mut app) = attach(&mut relay, 16);
    for i in 0u8..5 {
        app.send(&[i]).unwrap();
    }
    let now = Instant::now();
    // Two fit downstream; the rest wait in the app's ring, and the relay waits for the
    // next engine to make room (flag set, no work: it does not spin).
    assert_eq!(
        relay.run(now),
        RunOutcome {
            items: 2,
            pending: false
        }
    );
    assert!(!relay.work_probe().has_work());
    assert!(relay.stats().stalls >= 1);
    let WakeSource::Doorbell(bell) = relay.wake_sources().pop().unwrap() else {
        panic!("expected the internal completion doorbell last");
    };
    assert!(bell.wants_space());
    // The next engine consumes and rings the relay.
    assert_eq!(echo.run(now).items, 2);
    assert_eq!(bell.drain(), 1);
    assert!(!bell.wants_space());
    settle(&mut relay, &mut echo);
    let want: Vec<Vec<u8>> = (0u8..5).map(|i| vec![i]).collect();
    assert_eq!(recv_all(&mut app), want);
    assert_eq!(relay.stats().too_large, 0);
}

#[test]
fn a_ring_for_room_the_relay_filled_again_leaves_it_waiting_armed() {
    let (mut relay, mut next) = RelayEngine::connect("relay", 0, shape(2)).unwrap();
    let (_, mut app) = attach(&mut relay, 16);
    for i in 0u8..5 {
        app.send(&[i]).unwrap();
    }
    let now = Instant::now();
    assert_eq!(relay.run(now).items, 2);
    let WakeSource::Doorbell(bell) = relay.wake_sources().pop().unwrap() else {
        panic!("expected the internal completion doorbell last");
    };
    assert!(bell.wants_space());
    // The next engine rings for room the relay has already filled again (it rings after
    // its step, for that step's pops): the relay wakes to a ring still full.
    assert!(next.space_freed());
    assert_eq!(bell.drain(), 1);
    assert_eq!(relay.run(now).items, 0);
    assert!(
        bell.wants_space(),
        "still full: the wait is flagged again, or no later pop would wake the relay"
    );
    // The next engine takes one request: its ring wakes the relay, which forwards one more.
    let (requests, _) = next.rings();
    requests.peek().unwrap().expect("a request").release();
    assert!(next.space_freed());
    assert_eq!(bell.drain(), 1);
    assert_eq!(relay.run(now).items, 1);
}

#[test]
fn full_app_ring_leaves_response_in_place() {
    let (mut relay, mut echo) = chain(16);
    let (_, mut app) = attach(&mut relay, 2);
    app.send(b"1").unwrap();
    app.send(b"2").unwrap();
    settle(&mut relay, &mut echo);
    // The app's response ring is full; more requests make it through downstream, and
    // their responses wait at the head of the internal ring.
    app.send(b"3").unwrap();
    app.send(b"4").unwrap();
    settle(&mut relay, &mut echo);
    // The app is backpressured: the relay stops returning and has no work.
    let outcome = relay.run(Instant::now());
    assert!(!outcome.pending, "{outcome:?}");
    assert!(!relay.work_probe().has_work());
    assert_eq!(relay.stats().returned, 2);
    assert_eq!(relay.ledger().unwrap().backpressured(), 1);
    let WakeSource::Doorbell(app_bell) = relay.wake_sources().remove(0) else {
        panic!("expected the app's doorbell first");
    };
    assert_eq!(app_bell.drain(), 0);
    let mut buf = [0u8; 64];
    assert_eq!(app.try_recv(&mut buf).unwrap(), Some(1));
    // Its pop rang the relay (which wakes its thread; the next step resumes the app).
    assert_eq!(app_bell.drain(), 1);
    assert_eq!(&buf[..1], b"1");
    settle(&mut relay, &mut echo);
    assert_eq!(recv_all(&mut app), [b"2", b"3"].map(|m| m.to_vec()));
    settle(&mut relay, &mut echo);
    assert_eq!(recv_all(&mut app), [b"4".to_vec()]);
    assert_eq!(relay.stats().returned, 4);
    assert_eq!(relay.stats().dropped_detached, 0);
}

#[test]
fn responses_of_a_detached_app_are_dropped_and_counted() {
    let (mut relay, mut echo) = chain(16);
    let (a, mut app_a) = attach(&mut relay, 16);
    let (_b, mut app_b) = attach(&mut relay, 16);
    app_a.send(b"gone").unwrap();
    app_b.send(b"here").unwrap();
    relay.run(Instant::now());
    assert!(relay.detach(a));
    assert!(!relay.detach(a));
    settle(&mut relay, &mut echo);
    assert_eq!(relay.stats().dropped_detached, 1);
    assert_eq!(recv_all(&mut app_b), [b"here".to_vec()]);
    // A new app never gets the old id, so it cannot receive a stale response.
    let (c, _app_c) = attach(&mut relay, 16);
    assert_ne!(c, a);
}

#[test]
fn too_large_requests_are_refused_not_forwarded() {
    let (mut relay, mut echo) = chain(16);
    let (_, mut app) = attach(&mut relay, 16);
    // Slots of 64 bytes hold 60: 52 plus the prefix fits, 53 does not.
    let max = app.max_message_len();
    assert_eq!(max, 60);
    app.send(&[1; 53]).unwrap();
    app.send(&[2; 52]).unwrap();
    settle(&mut relay, &mut echo);
    assert_eq!(recv_all(&mut app), [vec![2; 52]]);
    assert_eq!(relay.stats().too_large, 1);
    assert_eq!(relay.stats().forwarded, 1);
}

#[test]
fn batch_bounds_each_step() {
    let (relay, mut echo) = chain(64);
    let mut relay = relay.with_batch(4);
    let (_, mut app) = attach(&mut relay, 64);
    for i in 0u8..6 {
        app.send(&[i]).unwrap();
    }
    let now = Instant::now();
    assert_eq!(
        relay.run(now),
        RunOutcome {
            items: 4,
            pending: true
        }
    );
    assert_eq!(relay.run(now).items, 2);
    echo.run(now);
    assert_eq!(
        relay.run(now),
        RunOutcome {
            items: 4,
            pending: true
        }
    );
    assert_eq!(relay.run(now).items, 2);
    assert_eq!(recv_all(&mut app).len(), 6);
}

#[test]
fn wake_sources_and_doorbells() {
    let (mut relay, mut echo) = chain(16);
    // Only the internal completion doorbell before any app attaches.
    assert_eq!(relay.wake_sources().len(), 1);
    let (_, mut app) = attach(&mut relay, 16);
    let sources = relay.wake_sources();
    assert_eq!(sources.len(), 2);
    let [WakeSource::Doorbell(app_bell), WakeSource::Doorbell(completion)] = &sources[..] else {
        panic!("expected two doorbells: {sources:?}");
    };
    // The echo engine is woken by the relay's kick.
    let WakeSource::Doorbell(echo_bell) = &echo.wake_sources()[0] else {
        panic!("expected a doorbell");
    };
    app_bell.arm();
    echo_bell.arm();
    completion.arm();
    app.send(b"x").unwrap();
    assert_eq!(app_bell.drain(), 1);
    let now = Instant::now();
    assert_eq!(relay.run(now).items, 1);
    assert_eq!(echo_bell.drain(), 1);
    // The echo engine's response rings the relay's completion doorbell.
    assert!(!relay.work_probe().has_work());
    assert_eq!(echo.run(now).items, 1);
    assert!(relay.work_probe().has_work());
    assert_eq!(completion.drain(), 1);
    assert_eq!(relay.run(now).items, 1);
    assert_eq!(recv_all(&mut app), [b"x".to_vec()]);
}

#[test]
fn relay_chains_to_a_relay() {
    let (mut second, end) = RelayEngine::connect("second", 0, shape(16)).unwrap();
    let mut echo = EchoEngine::new("echo", 0);
    echo.attach(end);
    let (mut first, end) = RelayEngine::connect("first", 0, shape(16)).unwrap();
    second.attach(end);
    let (_, mut app) = attach(&mut first, 16);
    for i in 0u8..10 {
        app.send(&[i; 4]).unwrap();
    }
    let now = Instant::now();
    while first.run(now).progressed() | second.run(now).progressed() | echo.run(now).progressed() {}
    let want: Vec<Vec<u8>> = (0u8..10).map(|i| vec![i; 4]).collect();
    assert_eq!(recv_all(&mut app), want);
    assert_eq!(second.stats().returned, 10);
}

#[test]
fn corrupt_app_ring_is_quarantined_and_the_other_app_served() {
    let (mut relay, mut echo) = chain(16);
    let (_, mut good) = attach(&mut relay, 16);
    // A channel whose app keeps a raw mapping of its request ring.
    let (end, fds) = AppChannel::create(shape(16), None).unwrap().into_parts();
    let raw = snap_ipc::SharedMem::from_fd(fds[0].try_clone().unwrap()).unwrap();
    let mut bad = ChannelAppEnd::from_fds(fds, None).unwrap();
    let bad_id = relay.attach(end);
    bad.push(b"x").unwrap();
    // SAFETY: offset 64 is the producer index (ring::layout), inside the mapping.
    unsafe { raw.as_ptr().add(64).cast::<u64>().write_volatile(u64::MAX) };
    good.send(b"g").unwrap();
    settle(&mut relay, &mut echo);
    assert_eq!(bad.quarantined(), Some(CloseReason::CorruptIndices));
    assert_eq!(relay.channel_ids(), vec![1]);
    assert!(relay.take_sources_changed());
    assert_eq!(relay.ledger().unwrap().take_quarantined()[0].channel, bad_id);
    assert_eq!(recv_all(&mut good), [b"g".to_vec()]);
    assert!(!relay.work_probe().has_work());
}

/// A relay and its echo engine both move by state and descriptors, the relay with
/// responses waiting in the internal ring and a request waiting in its app's ring: the new
/// pair delivers every one, in order, on the same channel id, counters kept; a thawed
/// relay serves again.
#[test]
fn a_relay_and_its_next_engine_move_with_messages_in_their_rings() {
    let (mut relay, mut echo) = chain(16);
    let (id, mut app) = attach(&mut relay, 64);
    app.send(b"r0").unwrap();
    settle(&mut relay, &mut echo);
    assert_eq!(recv_all(&mut app), vec![b"r0".to_vec()]);
    let _ = Movable::freeze(&mut relay).unwrap();
    app.send(b"r1").unwrap();
    assert_eq!(relay.run(Instant::now()), RunOutcome::IDLE);
    assert!(relay.wake_sources().is_empty());
    Movable::thaw(&mut relay);
    settle(&mut relay, &mut echo);
    assert_eq!(recv_all(&mut app), vec![b"r1".to_vec()]);
    // Two requests reach the echo engine and come back into the internal response ring,
    // not yet returned; a third waits in the app's ring. Then both engines move.
    app.send(b"r2").unwrap();
    app.send(b"r3").unwrap();
    relay.run(Instant::now());
    echo.run(Instant::now());
    app.send(b"r4").unwrap();
    let relay_state = Movable::freeze(&mut relay).unwrap();
    let echo_state = Movable::freeze(&mut echo).unwrap();
    let relay_fds = relay.hand_over().unwrap().into_iter().flatten().collect();
    let echo_fds = echo.hand_over().unwrap().into_iter().flatten().collect();
    drop((relay, echo));
    let mut relay = RelayEngine::import("relay", 0, &relay_state, relay_fds).unwrap();
    let mut echo = EchoEngine::import("echo", 0, &echo_state, echo_fds).unwrap();
    assert_eq!(relay.channel_ids(), vec![id]);
    settle(&mut relay, &mut echo);
    assert_eq!(
        recv_all(&mut app),
        vec![b"r2".to_vec(), b"r3".to_vec(), b"r4".to_vec()]
    );
    assert_eq!((relay.stats().forwarded, relay.stats().returned), (5, 5));
    assert_eq!(echo.stats().echoed, 5);
    let err = RelayEngine::import("relay", 0, &relay_state, Vec::new()).unwrap_err();
    assert!(err.contains("fewer descriptors"), "{err}");
}
