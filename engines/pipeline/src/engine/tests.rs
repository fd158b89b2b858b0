use std::collections::VecDeque;
use std::sync::Mutex;

use super::*;
use crate::packet::Peer;
use crate::pass::PassStage;
use crate::pool::PoolConfig;
use crate::queue::queue;

/// A deterministic in-memory NIC: what is sent is recorded, what is injected is received.
#[derive(Default, Clone)]
struct MemWire(Arc<Mutex<MemWireState>>);

struct MemWireState {
    sent: Vec<(Vec<u8>, Peer)>,
    inbox: VecDeque<(Vec<u8>, Peer)>,
    /// Sends refused with WouldBlock before the next one succeeds.
    refuse: usize,
    bell: snap_ipc::Doorbell,
}

impl Wire for MemWire {
    fn send(&mut self, packet: &[u8], to: Peer) -> Result<(), WireError> {
        let mut s = self.0.lock().unwrap();
        if s.refuse > 0 {
            s.refuse -= 1;
            return Err(WireError::WouldBlock);
        }
        s.sent.push((packet.to_vec(), to));
        Ok(())
    }
    fn recv(&mut self, max: usize, deliver: &mut dyn FnMut(&[u8], Peer)) -> Result<usize, WireError> {
        let mut n = 0;
        while n < max {
            let Some((b, p)) = self.0.lock().unwrap().inbox.pop_front() else {
                break;
            };
            deliver(&b, p);
            n += 1;
        }
        Ok(n)
    }
    fn wake_source(&self) -> Option<WakeSource> {
        // Stands for the NIC's readable descriptor: counted, never waited on here.
        Some(WakeSource::Doorbell(self.0.lock().unwrap().bell.clone()))
    }
}

impl Default for MemWireState {
    fn default() -> Self {
        Self {
            sent: Vec::new(),
            inbox: VecDeque::new(),
            refuse: 0,
            bell: snap_ipc::Doorbell::new().unwrap(),
        }
    }
}

/// A stage that drops odd-numbered packets, holds packets whose first byte is `H` until
/// `release` is set, and stops accepting Tx input while `closed`.
#[derive(Default)]
struct Picky {
    held: Vec<Packet>,
    release: Arc<AtomicBool>,
    closed: Arc<AtomicBool>,
}

impl Stage for Picky {
    fn kind(&self) -> &'static str {
        "picky"
    }
    fn process(&mut self, pkt: Packet, out: &mut Output<'_>) {
        match pkt.bytes().first() {
            Some(b'H') => self.held.push(pkt),
            Some(b) if b % 2 == 1 => out.drop(pkt, "odd"),
            _ => out.forward(pkt).unwrap(),
        }
    }
    fn accepts(&self, dir: Direction) -> bool {
        dir == Direction::Rx || !self.closed.load(Ordering::Relaxed)
    }
    fn poll(&mut self, _now: Instant, out: &mut Output<'_>) {
        if self.release.load(Ordering::Relaxed) {
            while let Some(p) = self.held.pop() {
                if let Err(p) = out.forward(p) {
                    self.held.push(p);
                    break;
                }
            }
        }
    }
    fn held(&self) -> u64 {
        self.held.len() as u64
    }
}

struct Line {
    pool: Arc<Pool>,
    pony: QueueEnd,
    a: StageEngine,
    b: StageEngine,
    wire: MemWire,
}

/// Pony's end ── q0 ── a (given stage) ── q1 ── b (pass) ── MemWire
fn line(stage: Box<dyn Stage>, capacity: u64, batch: usize) -> Line {
    let pool = Pool::new("engine-test", PoolConfig::for_mtu(64, 512, 32)).unwrap();
    let (pony, a_up) = queue("q0", capacity, &pool).unwrap();
    let (a_down, b_up) = queue("q1", capacity, &pool).unwrap();
    let wire = MemWire::default();
    let a = StageEngine::new("a", stage, a_up, Downstream::Queue(a_down), batch);
    let b = StageEngine::new(
        "b",
        Box::new(PassStage),
        b_up,
        Downstream::Wire(Box::new(wire.clone())),
        batch,
    );
    Line {
        pool,
        pony,
        a,
        b,
        wire,
    }
}

fn send(l: &mut Line, bytes: &[u8]) -> Result<(), Packet> {
    let mut p = l.pool.alloc(Direction::Tx).unwrap();
    p.copy_from(bytes).unwrap();
    p.set_peer(Peer::Wire);
    let r = l.pony.push(p);
    l.pony.flush();
    r
}

fn step(l: &mut Line) {
    let now = Instant::now();
    l.a.run(now);
    l.b.run(now);
}

/// Runs the line and takes what reaches Pony's end until `max` packets or nothing moves.
fn drain_rx(l: &mut Line, max: usize) -> Vec<Packet> {
    let mut got = Vec::new();
    for _ in 0..50 {
        step(l);
        while let Some(p) = l.pony.pop() {
            got.push(p);
        }
        l.pony.flush();
        if got.len() >= max {
            break;
        }
    }
    got
}

#[test]
fn packets_cross_two_stages_both_ways_byte_exact() {
    let mut l = line(Box::new(PassStage), 8, 4);
    for i in 0..10u8 {
        send(&mut l, &[i; 100]).unwrap();
        step(&mut l);
    }
    let sent = l.wire.0.lock().unwrap().sent.clone();
    assert_eq!(sent.len(), 10);
    for (i, (b, peer)) in sent.iter().enumerate() {
        assert_eq!((b.as_slice(), *peer), (&[i as u8; 100][..], Peer::Wire));
    }
    let from = Peer::Ip(([192, 0, 2, 1], 7).into());
    for i in 0..10u8 {
        l.wire.0.lock().unwrap().inbox.push_back((vec![i; 60], from));
    }
    let got = drain_rx(&mut l, 10);
    for (i, p) in got.iter().enumerate() {
        assert_eq!(
            (p.bytes(), p.peer(), p.direction()),
            (&[i as u8; 60][..], from, Direction::Rx)
        );
    }
    drop(got);
    let c = l.a.stage_counters();
    assert_eq!((c.tx_packets, c.rx_packets, c.forwarded), (10, 10, 20));
    assert_eq!((c.tx_bytes, c.rx_bytes), (1000, 600));
    assert_eq!(l.pool.stats().free, 64, "every buffer went back to the pool");
}

#[test]
fn drops_are_counted_by_reason_and_held_packets_leave_on_poll() {
    let picky = Picky::default();
    let release = picky.release.clone();
    let mut l = line(Box::new(picky), 8, 8);
    for b in [2u8, 3, b'H', 4, 5] {
        send(&mut l, &[b, 0, 0]).unwrap();
    }
    step(&mut l);
    let firsts: Vec<u8> = l.wire.0.lock().unwrap().sent.iter().map(|(b, _)| b[0]).collect();
    assert_eq!(firsts, [2, 4]);
    assert_eq!(l.a.drops().get(Direction::Tx, "odd"), 2);
    assert_eq!(l.a.counters().unwrap()["held"], 1);
    release.store(true, Ordering::Relaxed);
    step(&mut l);
    let firsts: Vec<u8> = l.wire.0.lock().unwrap().sent.iter().map(|(b, _)| b[0]).collect();
    assert_eq!(firsts, [2, 4, b'H']);
    assert_eq!(l.a.counters().unwrap()["held"], 0);
    assert_eq!(l.pool.stats().free, 64);
}

#[test]
fn a_stage_that_stops_accepting_backs_up_to_the_producer_without_loss() {
    let picky = Picky::default();
    let closed = picky.closed.clone();
    closed.store(true, Ordering::Relaxed);
    let mut l = line(Box::new(picky), 4, 8);
    let mut refused = None;
    for i in 0..10u8 {
        if let Err(p) = send(&mut l, &[2 * i]) {
            refused = Some((i, p));
            break;
        }
        step(&mut l);
    }
    let (at, pkt) = refused.expect("the producer saw backpressure");
    assert_eq!(
        at, 4,
        "the first queue's four slots fill, then the producer keeps its packet"
    );
    assert!(
        !l.a.work_probe().has_work(),
        "a blocked stage lets its thread sleep"
    );
    closed.store(false, Ordering::Relaxed);
    step(&mut l);
    l.pony.push(pkt).unwrap();
    for _ in 0..3 {
        step(&mut l);
    }
    let firsts: Vec<u8> = l.wire.0.lock().unwrap().sent.iter().map(|(b, _)| b[0]).collect();
    assert_eq!(firsts, [0, 2, 4, 6, 8]);
}

#[test]
fn a_refusing_nic_keeps_the_packet_and_retries() {
    let mut l = line(Box::new(PassStage), 8, 8);
    l.wire.0.lock().unwrap().refuse = 2;
    send(&mut l, b"x1").unwrap();
    send(&mut l, b"x2").unwrap();
    step(&mut l);
    assert!(l.wire.0.lock().unwrap().sent.is_empty());
    assert!(l.b.poll_at().is_some(), "the NIC stage asks to be run again");
    step(&mut l);
    step(&mut l);
    let sent: Vec<Vec<u8>> = l
        .wire
        .0
        .lock()
        .unwrap()
        .sent
        .iter()
        .map(|(b, _)| b.clone())
        .collect();
    assert_eq!(sent, [b"x1".to_vec(), b"x2".to_vec()], "in order, none lost");
    assert_eq!(l.b.stage_counters().wire_full, 2);
}

#[test]
fn received_packets_wait_in_the_nic_while_upstream_is_full() {
    let mut l = line(Box::new(PassStage), 2, 8);
    for i in 0..6u8 {
        l.wire.0.lock().unwrap().inbox.push_back((vec![i], Peer::Wire));
    }
    for _ in 0..4 {
        step(&mut l);
    }
    // q1 and q0 hold two each; the NIC stage took no more than it could forward, and
    // stopped watching its NIC (a readable socket would wake it in a loop).
    assert_eq!(l.wire.0.lock().unwrap().inbox.len(), 2);
    assert!(l.b.take_sources_changed());
    assert_eq!(l.b.wake_sources().len(), 1, "only the queue's doorbell");
    let got: Vec<u8> = std::iter::from_fn(|| l.pony.pop())
        .map(|p| p.bytes()[0])
        .collect();
    assert_eq!(got, [0, 1]);
    l.pony.flush();
    let got: Vec<u8> = drain_rx(&mut l, 10).iter().map(|p| p.bytes()[0]).collect();
    assert_eq!(got, [2, 3, 4, 5]);
    assert!(l.b.take_sources_changed());
    assert_eq!(l.b.wake_sources().len(), 2, "the NIC is watched again");
    assert_eq!(l.b.drops().total() + l.a.drops().total(), 0);
}

#[test]
fn pass_refuses_settings_and_the_engine_reports_it() {
    let mut l = line(Box::new(PassStage), 2, 8);
    assert!(l.a.update("").is_ok());
    let e = l.a.update("rate = 5").unwrap_err();
    assert!(e.0.contains("no settings"), "{e}");
}
