//! The engine's limits: flows per engine and per app, operations per app, regions per app,
//! and stale flow ids. Each over-the-limit request gets its clear error and is counted;
//! another app on the same engine keeps working.

use super::*;
use snap_ipc::SharedMem;

/// Opens a flow from `app` on `a` to service `service` on `b`; returns the completion.
fn try_open(
    a: &mut PonyEngine,
    b: &mut PonyEngine,
    app: &mut AppSession,
    cookie: u64,
    service: u32,
) -> Completion {
    open(app, cookie, service);
    step_until(a, b, app)
}

fn opened(c: Completion) -> u64 {
    match c {
        Completion::FlowOpened { result: Ok(f), .. } => f,
        other => panic!("not opened: {other:?}"),
    }
}

fn limits(f: impl FnOnce(&mut PonyLimits)) -> PonyLimits {
    let mut l = PonyLimits::default();
    f(&mut l);
    l
}

#[test]
fn flows_per_app_are_limited_and_other_apps_unaffected() {
    let (mut a, mut b) = pair_limits(limits(|l| l.max_flows_per_app = 2), PonyLimits::default());
    let (_, mut x) = a.attach_local(Completions::Poll).unwrap();
    let (_, mut z) = a.attach_local(Completions::Poll).unwrap();
    let (_, mut y) = b.attach_local(Completions::Poll).unwrap();
    listen(&mut a, &mut b, &mut y, 1, 5);
    opened(try_open(&mut a, &mut b, &mut x, 1, 5));
    opened(try_open(&mut a, &mut b, &mut x, 2, 5));
    let refused = try_open(&mut a, &mut b, &mut x, 3, 5);
    assert_eq!(
        refused,
        Completion::FlowOpened {
            cookie: 3,
            result: Err(OpErrorCode::TooManyFlows)
        }
    );
    assert_eq!(a.stats().limit_flows, 1);
    opened(try_open(&mut a, &mut b, &mut z, 4, 5));
    assert_eq!(a.stats().flows, 3);
}

#[test]
fn a_peers_connect_beyond_max_flows_is_rejected_and_the_opener_told() {
    let (mut a, mut b) = pair_limits(PonyLimits::default(), limits(|l| l.max_flows = 1));
    let (_, mut x) = a.attach_local(Completions::Poll).unwrap();
    let (_, mut y) = b.attach_local(Completions::Poll).unwrap();
    listen(&mut a, &mut b, &mut y, 1, 5);
    opened(try_open(&mut a, &mut b, &mut x, 1, 5));
    // b holds its one flow: the next Connect is rejected with the reason.
    let refused = Completion::FlowOpened {
        cookie: 2,
        result: Err(OpErrorCode::PeerBusy),
    };
    assert_eq!(try_open(&mut a, &mut b, &mut x, 2, 5), refused);
    assert_eq!((b.stats().limit_flows, b.stats().connects_rejected), (1, 1));
}

#[test]
fn an_apps_open_flow_beyond_max_flows_is_refused_locally() {
    let (mut a, mut b) = pair_limits(limits(|l| l.max_flows = 1), PonyLimits::default());
    let (_, mut x) = a.attach_local(Completions::Poll).unwrap();
    let (_, mut z) = a.attach_local(Completions::Poll).unwrap();
    let (_, mut y) = b.attach_local(Completions::Poll).unwrap();
    listen(&mut a, &mut b, &mut y, 1, 5);
    opened(try_open(&mut a, &mut b, &mut x, 1, 5));
    let local = Completion::FlowOpened {
        cookie: 3,
        result: Err(OpErrorCode::TooManyFlows),
    };
    assert_eq!(try_open(&mut a, &mut b, &mut z, 3, 5), local);
    assert_eq!((a.stats().limit_flows, b.stats().connects_rejected), (1, 0));
}

#[test]
fn operations_per_app_are_limited_and_counted_back() {
    let (mut a, mut b) = pair_with(limits(|l| l.max_ops_per_app = 2));
    let (_, mut x) = a.attach_local(Completions::Poll).unwrap();
    let (_, mut z) = a.attach_local(Completions::Poll).unwrap();
    let (_, mut y) = b.attach_local(Completions::Poll).unwrap();
    listen(&mut a, &mut b, &mut y, 1, 5);
    let fx = opened(try_open(&mut a, &mut b, &mut x, 1, 5));
    let fz = opened(try_open(&mut a, &mut b, &mut z, 2, 5));
    let send = |app: &mut AppSession, flow, cookie| {
        let chain = app.pool().write_chain(&[1u8; 100]).unwrap();
        app.post(&Command::Send {
            flow,
            stream: 0,
            head: chain.head.0,
            len: 100,
            cookie,
        })
        .unwrap();
    };
    // Three Sends taken in one step: the third is one too many.
    for cookie in 10..13 {
        send(&mut x, fx, cookie);
    }
    x.kick();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(step_until(&mut a, &mut b, &mut x));
    }
    assert!(
        got.contains(&Completion::Error {
            cookie: 12,
            code: OpErrorCode::TooManyOps,
            detail: 2
        }),
        "{got:?}"
    );
    assert!(got.contains(&Completion::Sent { cookie: 10 }) && got.contains(&Completion::Sent { cookie: 11 }));
    assert_eq!(a.stats().limit_ops, 1);
    // Everything completed: nothing is counted any more, and both apps may send again.
    assert_eq!(a.stats().ops_outstanding, 0);
    send(&mut z, fz, 20);
    z.kick();
    assert_eq!(
        step_until(&mut a, &mut b, &mut z),
        Completion::Sent { cookie: 20 }
    );
    send(&mut x, fx, 13);
    x.kick();
    assert_eq!(
        step_until(&mut a, &mut b, &mut x),
        Completion::Sent { cookie: 13 }
    );
    assert_eq!(x.pool().stats().free, 256);
}

#[test]
fn regions_per_app_are_limited() {
    let (mut a, mut b) = pair_with(limits(|l| l.max_regions_per_app = 1));
    let (sx, mut x) = a.attach_local(Completions::Poll).unwrap();
    let (sz, _z) = a.attach_local(Completions::Poll).unwrap();
    let mem = || SharedMem::create("limit-region", 4096).unwrap();
    a.register_region_local(sx, mem()).unwrap();
    // The command path: a staged memfd claimed by RegisterRegion.
    let region = mem();
    let fd = region.as_fd().try_clone_to_owned().unwrap();
    a.stage_region_fd(sx, 7, fd).unwrap();
    x.submit(&Command::RegisterRegion { cookie: 7, len: 4096 })
        .unwrap();
    assert_eq!(
        step_until(&mut a, &mut b, &mut x),
        Completion::Error {
            cookie: 7,
            code: OpErrorCode::TooManyRegions,
            detail: 1
        }
    );
    assert_eq!(a.stats().limit_regions, 1);
    a.register_region_local(sz, mem()).unwrap();
    assert_eq!(a.stats().regions, 2);
}

#[test]
fn a_stale_flow_id_is_refused_after_close_and_reopen() {
    let (mut a, mut b) = pair();
    let (_, mut x) = a.attach_local(Completions::Poll).unwrap();
    let (_, mut y) = b.attach_local(Completions::Poll).unwrap();
    listen(&mut a, &mut b, &mut y, 1, 5);
    let old = opened(try_open(&mut a, &mut b, &mut x, 1, 5));
    let _ = step_until(&mut a, &mut b, &mut y); // FlowAccepted
    x.submit(&Command::CloseFlow { flow: old }).unwrap();
    let closed = Completion::FlowClosed {
        flow: old,
        reason: CloseReason::LocalClose,
    };
    assert_eq!(step_until(&mut a, &mut b, &mut x), closed);
    // Let the peer finish its side so that the slot is free, then reopen: same slot, new
    // generation.
    for _ in 0..100 {
        let now = Instant::now();
        a.run(now);
        b.run(now);
    }
    let new = opened(try_open(&mut a, &mut b, &mut x, 2, 5));
    assert_ne!(new, old);
    let chain = x.pool().write_chain(b"late").unwrap();
    x.submit(&Command::Send {
        flow: old,
        stream: 0,
        head: chain.head.0,
        len: 4,
        cookie: 9,
    })
    .unwrap();
    assert_eq!(
        step_until(&mut a, &mut b, &mut x),
        Completion::Error {
            cookie: 9,
            code: OpErrorCode::StaleFlow,
            detail: old
        }
    );
    assert_eq!(a.stats().stale_flow_ids, 1);
    // An id never handed out is just unknown.
    x.submit(&Command::CloseFlow { flow: 1 << 40 }).unwrap();
    let Completion::Error { code, .. } = step_until(&mut a, &mut b, &mut x) else {
        panic!()
    };
    assert_eq!(code, OpErrorCode::UnknownFlow);
}

#[test]
fn a_retransmitted_connect_is_rejected_again_and_counted_once() {
    let (mut a, mut b) = pair_limits(PonyLimits::default(), limits(|l| l.max_flows = 1));
    let (_, mut x) = a.attach_local(Completions::Poll).unwrap();
    let (_, mut y) = b.attach_local(Completions::Poll).unwrap();
    listen(&mut a, &mut b, &mut y, 1, 5);
    opened(try_open(&mut a, &mut b, &mut x, 1, 5));
    // x's second Connect, and its retransmission one RTO later, both reach b before b
    // runs: the Reject of the first is still on its way when the initiator's timer fires.
    open(&mut x, 2, 5);
    let t0 = Instant::now();
    a.run(t0);
    let sent = a.stats().packets_out;
    a.run(t0 + 10 * PonyConfig::default().flow.initial_rto);
    assert_eq!(a.stats().packets_out, sent + 1, "the Connect was retransmitted");
    let answered = b.stats().packets_out;
    b.run(t0);
    assert_eq!(b.stats().packets_out, answered + 2, "each Connect got its Reject");
    assert_eq!(
        (
            b.stats().limit_flows,
            b.stats().connects_rejected,
            b.stats().connects_rejected_again
        ),
        (1, 1, 1)
    );
    // The opener hears PeerBusy once; the second Reject changes nothing.
    let refused = Completion::FlowOpened {
        cookie: 2,
        result: Err(OpErrorCode::PeerBusy),
    };
    assert_eq!(step_until(&mut a, &mut b, &mut x), refused);
    for _ in 0..10 {
        a.run(Instant::now());
    }
    assert_eq!(x.poll_completion().unwrap(), None);
}
