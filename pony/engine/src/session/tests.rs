//! In-process session tests: the command/completion round trip, refusals, blocking
//! completions, backpressure and crash reclaim.

use std::time::Duration;

use pony_express::app::CloseReason;
use pony_express::pool::PoolShape;
use snap_ipc::SharedMem;

use super::*;

fn shape() -> SessionShape {
    SessionShape {
        ring_capacity: 8,
        pool: PoolShape {
            buffers: 64,
            buf_size: 256,
        },
    }
}

fn pair(c: Completions) -> (EngineSession, AppSession) {
    EngineSession::pair(shape(), c).unwrap()
}

#[test]
fn send_is_read_in_place_and_completed() {
    let (mut eng, mut app) = pair(Completions::Poll);
    let msg: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    let chain = app.send(7, 3, &msg, 42).unwrap();
    assert_eq!(app.pool().stats().free, 64 - 4);
    let acc = eng.next_command().unwrap().unwrap();
    let Command::Send {
        flow: 7,
        stream: 3,
        len: 1000,
        cookie: 42,
        head,
    } = acc.cmd
    else {
        panic!("{acc:?}")
    };
    assert_eq!(head, chain.head.0);
    let id = acc.chain.unwrap();
    let mut got = Vec::new();
    eng.chain(id).unwrap().read_into(eng.pool(), &mut got);
    assert_eq!(got, msg);
    eng.finish_chain(id).unwrap();
    eng.complete(Completion::Sent { cookie: 42 });
    assert_eq!(
        app.poll_completion().unwrap(),
        Some(Completion::Sent { cookie: 42 })
    );
    assert_eq!(app.pool().stats().free, 64);
    assert_eq!(eng.next_command().unwrap(), None);
}

#[test]
fn delivered_messages_reach_the_app() {
    let (mut eng, mut app) = pair(Completions::Poll);
    eng.deliver(1, 2, &[5u8; 600]).unwrap();
    let Some(Completion::Received {
        flow: 1,
        stream: 2,
        head,
        len: 600,
    }) = app.poll_completion().unwrap()
    else {
        panic!()
    };
    let mut out = Vec::new();
    app.take_received(head, 600, &mut out).unwrap();
    assert_eq!(out, vec![5u8; 600]);
    assert_eq!(eng.pool().stats().free, 64);

    // In place: one slice per pool buffer, no copy; dropping gives them back.
    let data: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
    eng.deliver(1, 2, &data).unwrap();
    let Some(Completion::Received { head, len, .. }) = app.poll_completion().unwrap() else {
        panic!()
    };
    let msg = app.received(head, len).unwrap();
    let segs: Vec<&[u8]> = msg.segments().collect();
    let buf = app.pool().buf_size() as usize;
    assert_eq!(segs.len(), 300usize.div_ceil(buf));
    assert_eq!(segs.concat(), data);
    assert!(app.pool().stats().free < 64);
    drop(msg);
    assert_eq!(app.pool().stats().free, 64);
    assert!(app.received(head, len).is_err(), "released: no longer a chain");
}

#[test]
fn bad_chains_and_records_are_violations() {
    let send = |head, len, cookie| Command::Send {
        flow: 1,
        stream: 0,
        head,
        len,
        cookie,
    };
    // Each case in a session of its own: the first violation ends what the engine reads.
    // A good command before it is still accepted.
    type Post = fn(&mut AppSession, u32, &dyn Fn(u32, u32, u64) -> Command);
    let cases: [(&str, Post); 5] = [
        ("out of range", |app, _, send| app.post(&send(999, 1, 7)).unwrap()),
        ("wrong length", |app, head, send| {
            app.post(&send(head, 301, 7)).unwrap()
        }),
        ("same chain again", |app, head, send| {
            app.post(&send(head, 300, 7)).unwrap()
        }),
        ("garbage", |app, _, _| {
            app.channel_mut().push(&[0xee, 1, 2]).unwrap()
        }),
        ("not allocated", |app, _, send| {
            let free_one = app.pool().alloc().unwrap();
            app.pool().release(free_one).unwrap();
            app.post(&send(free_one.0, 0, 7)).unwrap()
        }),
    ];
    for (what, post) in cases {
        let (mut eng, mut app) = pair(Completions::Poll);
        let c = app.pool().write_chain(&[1u8; 300]).unwrap();
        app.post(&send(c.head.0, 300, 3)).unwrap();
        post(&mut app, c.head.0, &send);
        let acc = eng.next_command().unwrap().unwrap();
        assert_eq!(acc.cmd.cookie(), 3, "{what}");
        match (what, eng.next_command()) {
            ("garbage", Err(Violation::Malformed(_))) => {}
            (_, Err(Violation::BadChain { cookie: 7, .. })) if what != "garbage" => {}
            (_, other) => panic!("{what}: {other:?}"),
        }
        assert_eq!(
            eng.refused(),
            0,
            "{what}: a violation is not a per-command refusal"
        );
    }
}

#[test]
fn read_destination_is_filled_and_returned() {
    let (mut eng, mut app) = pair(Completions::Poll);
    let dest = app.pool().alloc_chain(512).unwrap();
    let read = |len| Command::Read {
        flow: 1,
        region: 0,
        key: 0,
        offset: 0,
        len,
        local: dest.head.0,
        cookie: 9,
    };
    app.post(&read(513)).unwrap(); // does not fit in 512
    app.post(&read(300)).unwrap();
    let acc = eng.next_command().unwrap().unwrap();
    let id = acc.chain.unwrap();
    assert!(matches!(
        app.poll_completion().unwrap(),
        Some(Completion::Error {
            code: OpErrorCode::TooLarge,
            ..
        })
    ));
    eng.write_chain_at(id, 0, &[3u8; 300]).unwrap();
    eng.set_chain_len(id, 300).unwrap();
    eng.return_chain(id).unwrap();
    eng.complete(Completion::ReadDone {
        cookie: 9,
        result: Ok(300),
    });
    assert_eq!(
        app.poll_completion().unwrap(),
        Some(Completion::ReadDone {
            cookie: 9,
            result: Ok(300)
        })
    );
    let mut out = Vec::new();
    app.take_received(dest.head.0, 300, &mut out).unwrap();
    assert_eq!(out, vec![3u8; 300]);
    assert_eq!(app.pool().stats().free, 64);
}

#[test]
fn blocked_app_is_woken() {
    let (mut eng, mut app) = pair(Completions::Block);
    let waiter = std::thread::spawn(move || app.wait_completion(Duration::from_secs(10)).unwrap());
    std::thread::sleep(Duration::from_millis(20));
    eng.complete(Completion::FlowClosed {
        flow: 5,
        reason: CloseReason::LocalClose,
    });
    assert_eq!(
        waiter.join().unwrap(),
        Some(Completion::FlowClosed {
            flow: 5,
            reason: CloseReason::LocalClose
        })
    );
}

#[test]
fn posted_completions_wake_a_blocked_app_once_at_the_ring() {
    let (mut eng, mut app) = pair(Completions::Block);
    let waiter = std::thread::spawn(move || {
        let first = app.wait_completion(Duration::from_secs(10)).unwrap();
        let second = app.poll_completion().unwrap();
        (first, second)
    });
    std::thread::sleep(Duration::from_millis(20));
    eng.post(Completion::Sent { cookie: 1 });
    eng.post(Completion::Sent { cookie: 2 });
    // Posting alone does not wake the app: a step's completions wait for its ring.
    std::thread::sleep(Duration::from_millis(20));
    assert!(!waiter.is_finished(), "a post woke the app");
    assert!(eng.ring(), "the blocked app's doorbell is written");
    assert!(!eng.ring(), "nothing posted since: no second write");
    assert_eq!(
        waiter.join().unwrap(),
        (
            Some(Completion::Sent { cookie: 1 }),
            Some(Completion::Sent { cookie: 2 })
        )
    );
}

#[test]
fn full_completion_ring_parks_completions_and_stops_commands() {
    let (mut eng, mut app) = pair(Completions::Poll);
    for flow in 0..10 {
        eng.complete(Completion::FlowClosed {
            flow,
            reason: CloseReason::LocalClose,
        });
    }
    app.submit(&Command::CloseFlow { flow: 1 }).unwrap();
    assert_eq!(
        eng.next_command().unwrap(),
        None,
        "backpressure while completions wait"
    );
    for flow in 0..8 {
        assert_eq!(
            app.poll_completion().unwrap(),
            Some(Completion::FlowClosed {
                flow,
                reason: CloseReason::LocalClose
            })
        );
    }
    assert!(eng.next_command().unwrap().is_some());
    assert_eq!(
        app.poll_completion().unwrap(),
        Some(Completion::FlowClosed {
            flow: 8,
            reason: CloseReason::LocalClose
        })
    );
    assert_eq!(
        app.poll_completion().unwrap(),
        Some(Completion::FlowClosed {
            flow: 9,
            reason: CloseReason::LocalClose
        })
    );
}

#[test]
fn reclaim_returns_everything_the_app_held() {
    let (mut eng, mut app) = pair(Completions::Poll);
    app.send(1, 0, &[1u8; 700], 1).unwrap(); // 3 buffers, accepted below
    let leaked = app.pool().write_chain(&[2u8; 2000]).unwrap(); // 8 buffers, never posted
    app.pool().retain_chain(leaked.head).unwrap();
    let acc = eng.next_command().unwrap().unwrap();
    eng.deliver(1, 0, &[3u8; 100]).unwrap(); // 1 buffer, now the app's
                                             // The app scribbles over the free list and dies.
    app.pool().release(BufIdx(60)).ok();
    drop(app);
    let stats = eng.reclaim();
    assert_eq!(
        stats,
        ReclaimStats {
            held: 3,
            free: 61,
            dropped_completions: 0
        }
    );
    assert_eq!(eng.pool().count_free().unwrap(), 61);
    eng.finish_chain(acc.chain.unwrap()).unwrap();
    eng.complete(Completion::Sent { cookie: 1 }); // dropped: no app
    assert_eq!(eng.pool().stats().free, 64);
    assert_eq!(eng.pool().count_free().unwrap(), 64);
}

#[test]
fn wrong_descriptors_are_refused() {
    let (_eng, fds) = EngineSession::create(shape(), None).unwrap();
    let mut fds = fds;
    fds.pop();
    assert!(matches!(
        AppSession::from_fds(fds, None),
        Err(SessionError::FdCount { expected: 5, got: 4 })
    ));
    let (_eng, mut fds) = EngineSession::create(shape(), None).unwrap();
    fds.swap(0, 4); // pool where the command ring goes
    assert!(AppSession::from_fds(fds, None).is_err());
    let (_eng, mut fds) = EngineSession::create(shape(), None).unwrap();
    let not_pool = SharedMem::create("x", 1 << 16).unwrap();
    fds[4] = not_pool.as_fd().try_clone_to_owned().unwrap();
    assert!(matches!(
        AppSession::from_fds(fds, None),
        Err(SessionError::Pool(PoolError::BadMagic(_)))
    ));
}
