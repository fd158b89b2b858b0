//! The stages over real pool buffers and the pipeline's `Output`: verdicts become forwards
//! and counted drops, headers go in the headroom, the shaper pushes back instead of
//! dropping, and bad settings change nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use snap_pipeline::{Direction, DropCounts, Output, Packet, Peer, Pool, PoolConfig, Stage};

use super::*;
use crate::acl::tests::{accept, connect, data};

fn pool() -> Arc<Pool> {
    Pool::new("policy-stage-test", PoolConfig::for_mtu(64, 2048, 128)).unwrap()
}

fn packet(pool: &Arc<Pool>, dir: Direction, bytes: &[u8], peer: SocketAddr) -> Packet {
    let mut pkt = pool.alloc(dir).unwrap();
    pkt.copy_from(bytes).unwrap();
    pkt.set_peer(Peer::Ip(peer));
    pkt
}

/// Runs `stage.process` on each packet; returns what it forwarded (Tx, Rx) and its drops.
fn run(
    stage: &mut dyn Stage,
    now: Instant,
    pkts: Vec<Packet>,
    drops: &mut DropCounts,
) -> (Vec<Packet>, Vec<Packet>) {
    let (mut tx, mut rx) = (vec![], vec![]);
    for pkt in pkts {
        let mut out = Output::new(now, &mut tx, &mut rx, 64, drops);
        stage.process(pkt, &mut out);
    }
    (tx, rx)
}

const P: &str = "10.0.0.2:7000";

#[test]
fn acl_stage_forwards_what_it_allows_and_counts_what_it_denies() {
    let pool = pool();
    let mut stage = AclStage::new(
        r#"
        default = "deny"
        [[rule]]
        action = "allow"
        service = 8
        "#,
    )
    .unwrap();
    let p: SocketAddr = P.parse().unwrap();
    let mut drops = DropCounts::default();
    let pkts = vec![
        packet(&pool, Direction::Rx, &connect(1, 8), p),
        packet(&pool, Direction::Rx, &connect(2, 9), p),
        packet(&pool, Direction::Tx, &accept(1, 5), p),
        packet(&pool, Direction::Rx, &data(5), p),
        packet(&pool, Direction::Rx, &data(6), p),
    ];
    let (tx, rx) = run(&mut stage, Instant::now(), pkts, &mut drops);
    assert_eq!((tx.len(), rx.len()), (1, 2));
    assert_eq!(drops.get(Direction::Rx, "deny_default"), 2);
    // A table that does not parse, or a memo change, is refused; the rules stay.
    assert!(stage
        .update("default = \"allow\"\n[[rule]]\naction = \"maybe\"")
        .is_err());
    assert!(stage.update("default = \"allow\"\nmemo_capacity = 4").is_err());
    let (_, rx) = run(
        &mut stage,
        Instant::now(),
        vec![packet(&pool, Direction::Rx, &data(6), p)],
        &mut drops,
    );
    assert!(rx.is_empty());
    stage.update("default = \"allow\"").unwrap();
    let (_, rx) = run(
        &mut stage,
        Instant::now(),
        vec![packet(&pool, Direction::Rx, &data(6), p)],
        &mut drops,
    );
    assert_eq!(rx.len(), 1);
    let counters = stage.counters().unwrap();
    assert_eq!(counters["replacements"], 1);
}

const OVERLAY_A: &str = r#"
    [[tenant]]
    tenant = 1
    vni = 7
    endpoint = "192.168.7.1:9000"
    [[mapping]]
    vni = 7
    endpoint = "192.168.7.2:9000"
    physical = "10.0.0.2:7000"
"#;

const OVERLAY_B: &str = r#"
    [[tenant]]
    tenant = 1
    vni = 7
    endpoint = "192.168.7.2:9000"
    [[mapping]]
    vni = 7
    endpoint = "192.168.7.1:9000"
    physical = "10.0.0.1:7000"
"#;

#[test]
fn overlay_stages_encapsulate_in_the_headroom_and_decapsulate_checked() {
    let pool = pool();
    let mut a = OverlayStage::new(OVERLAY_A).unwrap();
    let mut b = OverlayStage::new(OVERLAY_B).unwrap();
    let inner = data(5);
    let mut drops = DropCounts::default();
    let pkt = packet(&pool, Direction::Tx, &inner, "192.168.7.2:9000".parse().unwrap());
    let (index, headroom) = (pkt.index(), pkt.headroom());
    let (mut tx, _) = run(&mut a, Instant::now(), vec![pkt], &mut drops);
    let sent = tx.pop().unwrap();
    // Same buffer, header in front, inner bytes where they were.
    assert_eq!(sent.index(), index);
    assert_eq!(sent.headroom(), headroom - crate::overlay::wire::HEADER_LEN);
    assert_eq!(&sent.bytes()[crate::overlay::wire::HEADER_LEN..], &inner[..]);
    assert_eq!(sent.peer(), Peer::Ip("10.0.0.2:7000".parse().unwrap()));
    assert_eq!(sent.meta().tenant, 1);
    // On B it arrives from A's physical address.
    let arrived = packet(
        &pool,
        Direction::Rx,
        sent.bytes(),
        "10.0.0.1:7000".parse().unwrap(),
    );
    let spoofed = packet(
        &pool,
        Direction::Rx,
        sent.bytes(),
        "10.0.0.9:7000".parse().unwrap(),
    );
    let (_, mut rx) = run(&mut b, Instant::now(), vec![arrived, spoofed], &mut drops);
    assert_eq!(drops.get(Direction::Rx, "source_mismatch"), 1);
    let delivered = rx.pop().unwrap();
    assert!(rx.is_empty());
    assert_eq!(delivered.bytes(), &inner[..]);
    assert_eq!(delivered.peer(), Peer::Ip("192.168.7.1:9000".parse().unwrap()));
    assert_eq!(delivered.meta().tenant, 1);
    // A mapping update: A's endpoint moves; old-place packets stop, unknown ones too.
    b.update(&OVERLAY_B.replace("10.0.0.1:7000", "10.0.0.3:7000"))
        .unwrap();
    let old_place = packet(
        &pool,
        Direction::Rx,
        sent.bytes(),
        "10.0.0.1:7000".parse().unwrap(),
    );
    let (_, rx) = run(&mut b, Instant::now(), vec![old_place], &mut drops);
    assert!(rx.is_empty());
    assert_eq!(drops.get(Direction::Rx, "source_mismatch"), 2);
    let unmapped = packet(&pool, Direction::Tx, &inner, "192.168.7.3:9000".parse().unwrap());
    run(&mut a, Instant::now(), vec![unmapped], &mut drops);
    assert_eq!(drops.get(Direction::Tx, "unknown_mapping"), 1);
    assert!(b
        .update("[[tenant]]\ntenant = 0\nvni = 7\nendpoint = \"192.168.7.2:9000\"")
        .is_err());
}

#[test]
fn shaper_stage_holds_paces_and_pushes_back_without_dropping() {
    let pool = pool();
    // 8 Mbit/s (1 byte/µs), burst one 1000-byte packet; the wheel looks 2.5 ms ahead.
    let mut stage = ShaperStage::new(
        r#"
        granularity_ns = 100000
        slots = 25
        capacity = 4
        [[class]]
        tenant = 0
        rate_bps = 8000000
        burst_bytes = 1000
        "#,
    )
    .unwrap();
    let p: SocketAddr = P.parse().unwrap();
    let start = Instant::now();
    let mut drops = DropCounts::default();
    let mut forwarded = 0;
    let mut sent = 0;
    // A local sender that stops when the stage stops accepting (as the engine does).
    let (mut tx, mut rx) = (vec![], vec![]);
    while sent < 4 {
        assert!(stage.accepts(Direction::Tx));
        let mut out = Output::new(start, &mut tx, &mut rx, 64, &mut drops);
        stage.process(packet(&pool, Direction::Tx, &[0; 1000], p), &mut out);
        sent += 1;
    }
    // 1 at once, 2 in the wheel (at 1 and 2 ms), the 4th (3 ms) past the horizon and
    // parked: no more input taken.
    assert_eq!(tx.len(), 1);
    assert_eq!(stage.held(), 3);
    assert!(!stage.accepts(Direction::Tx));
    assert!(stage.accepts(Direction::Rx));
    forwarded += tx.drain(..).count();
    let mut now = start;
    while forwarded < 4 {
        now += Duration::from_micros(100);
        let mut out = Output::new(now, &mut tx, &mut rx, 64, &mut drops);
        stage.poll(now, &mut out);
        forwarded += tx.drain(..).count();
        assert!(now - start < Duration::from_millis(10));
    }
    assert_eq!(drops.total(), 0);
    assert_eq!(stage.held(), 0);
    assert!(stage.accepts(Direction::Tx));
    // Four 1000-byte packets at 1 byte/µs with a 1000-byte burst: the last at ~3 ms.
    assert!(now - start >= Duration::from_millis(3) && now - start < Duration::from_micros(3200));
}
