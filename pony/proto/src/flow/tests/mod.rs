//! Deterministic tests of the flow layer over [`sim::SimNet`].
//!
//! Every test uses a fixed seed and a virtual clock, so it is reproducible and fast. The
//! lossy transfer prints the statistics it observed (`cargo test -- --nocapture`).

mod buffers;
mod quiet;
mod sim;
mod state;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::wire::{OpErrorCode, VersionRange};
use sim::{content, LinkCfg, SimNet};

fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}

/// Small timers so RTO paths run in little virtual time.
fn cfg() -> FlowConfig {
    FlowConfig {
        initial_rto: us(200),
        min_rto: us(50),
        max_rto: Duration::from_millis(5),
        max_retries: 12,
        ..Default::default()
    }
}

/// Messages to send and what has been seen of them.
struct Workload {
    /// (sender side, stream, length), submitted in order.
    pending: VecDeque<(usize, u32, usize)>,
    next_id: HashMap<(usize, u32), u64>,
    /// Lengths sent, per (sender side, stream), in id order.
    sent: HashMap<(usize, u32), Vec<usize>>,
    /// Next id expected, per (sender side, stream).
    next_rx: HashMap<(usize, u32), u64>,
    received: usize,
    acked: usize,
    total: usize,
    /// Whether each side's application takes its events (a slow receiver does not).
    reading: [bool; 2],
    /// (time, side, stream) of each delivery.
    log: Vec<(Instant, usize, u32)>,
    busy: u64,
    closed: [bool; 2],
}

impl Workload {
    fn new(messages: Vec<(usize, u32, usize)>) -> Self {
        Workload {
            total: messages.len(),
            pending: messages.into(),
            next_id: HashMap::new(),
            sent: HashMap::new(),
            next_rx: HashMap::new(),
            received: 0,
            acked: 0,
            reading: [true, true],
            log: Vec::new(),
            busy: 0,
            closed: [false; 2],
        }
    }

    fn done(&self) -> bool {
        self.received == self.total && self.acked == self.total
    }

    /// One round of application work: submit what the send buffers take, take events.
    fn app(&mut self, sim: &mut SimNet) {
        while let Some(&(side, stream, len)) = self.pending.front() {
            let id = *self.next_id.get(&(side, stream)).unwrap_or(&0);
            match sim.flow(side).send_message(stream, content(stream, id, len)) {
                Ok(got) => {
                    assert_eq!(got, id);
                    self.next_id.insert((side, stream), id + 1);
                    self.sent.entry((side, stream)).or_default().push(len);
                    self.pending.pop_front();
                }
                Err(FlowError::Busy) => {
                    self.busy += 1;
                    break;
                }
                Err(e) => panic!("send_message: {e}"),
            }
        }
        for side in 0..2 {
            if !self.reading[side] {
                continue;
            }
            for ev in sim.events(side) {
                match ev {
                    FlowEvent::MessageReceived {
                        stream,
                        message,
                        data,
                    } => {
                        let key = (1 - side, stream);
                        let expect = self.next_rx.entry(key).or_insert(0);
                        assert_eq!(message, *expect, "in order, exactly once, on stream {stream}");
                        *expect += 1;
                        let len = self.sent[&key][message as usize];
                        assert!(
                            data == content(stream, message, len),
                            "content of {stream}/{message}"
                        );
                        self.received += 1;
                        self.log.push((sim.now, side, stream));
                    }
                    FlowEvent::MessageSent { .. } => self.acked += 1,
                    FlowEvent::Closed => self.closed[side] = true,
                    other => panic!("unexpected event {other:?}"),
                }
            }
        }
    }

    /// Runs until done; panics past `limit` of virtual time.
    fn run(&mut self, sim: &mut SimNet, limit: Duration) {
        let deadline = sim.start + limit;
        self.app(sim);
        while !self.done() {
            assert!(
                sim.step(deadline),
                "stalled at {:?}: {}/{} received, {}/{} acked, a={:?} b={:?}",
                sim.elapsed(),
                self.received,
                self.total,
                self.acked,
                self.total,
                sim.flow(0).stats(),
                sim.flow(1).stats()
            );
            self.app(sim);
        }
    }
}

/// Several streams, sizes from 1 B to 8 MiB, mostly one way, some back.
fn mixed_messages() -> Vec<(usize, u32, usize)> {
    let mut m = vec![(0, 1, 8 << 20), (0, 2, 1), (0, 3, 0), (1, 1, 100_000)];
    for i in 0..120 {
        let len = [1, 17, 1000, 4936, 4937, 20_000, 150_000][i % 7];
        m.push((i % 5 / 4, (i % 4) as u32, len));
    }
    m.push((0, 2, 1 << 20));
    m
}

#[test]
fn lossy_network_delivers_exactly_once_in_order_per_stream() {
    let mut sim = SimNet::connected(7, cfg(), cfg(), [LinkCfg::lossy(0.05), LinkCfg::lossy(0.05)]);
    let mut w = Workload::new(mixed_messages());
    w.run(&mut sim, Duration::from_secs(5));
    let (a, b) = (sim.flow(0).stats(), sim.flow(1).stats());
    eprintln!(
        "net: {:?}\nA: {a:?}\nB: {b:?}\nvirtual time {:?}",
        sim.net,
        sim.elapsed()
    );
    assert!(sim.net.lost > 100 && sim.net.duplicated > 20 && sim.net.corrupted_dropped > 10);
    assert!(a.retransmits > 0 && a.fast_retransmits > 0);
    assert!(b.dups_dropped > 0, "network duplicates are suppressed");
    assert_eq!(a.bytes_in_flight, 0);
    assert_eq!(b.credit_drops + a.credit_drops, 0);
}

#[test]
fn no_head_of_line_blocking_across_streams() {
    let mut sim = SimNet::connected(1, cfg(), cfg(), [LinkCfg::default(), LinkCfg::default()]);
    // Lose the first transmission of the first segment of the big message on stream 1.
    let mut dropped = false;
    sim.filter = Some(Box::new(move |side, repr, _| {
        let hit = side == 0
            && !dropped
            && matches!(
                *repr,
                Repr::Data {
                    stream: 1,
                    offset: 0,
                    ..
                }
            );
        dropped |= hit;
        hit
    }));
    let mut w = Workload::new(vec![(0, 1, 40_000), (0, 2, 10)]);
    w.run(&mut sim, Duration::from_secs(1));
    let order: Vec<u32> = w.log.iter().map(|&(_, _, s)| s).collect();
    assert_eq!(order, vec![2, 1], "stream 2 is not held behind stream 1's loss");
    assert_eq!(sim.flow(0).stats().retransmits, 1);
}

#[test]
fn slow_receiver_stalls_sender_without_loss_then_completes() {
    let small = FlowConfig {
        recv_buffer: 64 << 10,
        max_message_len: 64 << 10,
        ..cfg()
    };
    let mut sim = SimNet::connected(2, cfg(), small, [LinkCfg::default(), LinkCfg::default()]);
    let mut w = Workload::new((0..64).map(|i| (0, i % 3, 16 << 10)).collect());
    w.reading[1] = false;
    let stall = sim.start + Duration::from_millis(50);
    let mut max_buffered = 0;
    w.app(&mut sim);
    while sim.step(stall) {
        w.app(&mut sim);
        let (a, b) = (sim.flow(0).stats(), sim.flow(1).stats());
        max_buffered = max_buffered.max(b.recv_buffered);
        assert!(a.bytes_in_flight + b.recv_buffered <= 2 * (64 << 10));
    }
    let a = sim.flow(0).stats();
    assert!(
        w.received == 0 && sim.flow(1).stats().recv_buffered == 64 << 10,
        "receiver full"
    );
    assert!(max_buffered <= 64 << 10);
    assert_eq!(a.peer_credit, 0);
    assert!(a.probes_sent >= 2, "zero-window probes while stalled: {a:?}");
    // 50 us doubling to the 5 ms cap: about 17 in 50 ms (without backoff: 1000).
    assert!(a.probes_sent < 25, "probes back off: {a:?}");
    assert!(!sim.flow(0).is_finished(), "a slow receiver is not a dead one");
    w.reading[1] = true;
    w.run(&mut sim, Duration::from_secs(1));
    let (a, b) = (sim.flow(0).stats(), sim.flow(1).stats());
    assert_eq!(b.credit_drops, 0, "the sender never overran the credit");
    assert_eq!(a.retransmits, 0, "nothing was lost");
    eprintln!("A: {a:?}\nB: {b:?}");
}

#[test]
fn zero_window_probe_recovers_lost_window_update() {
    let small = FlowConfig {
        recv_buffer: 32 << 10,
        max_message_len: 32 << 10,
        ..cfg()
    };
    let mut sim = SimNet::connected(3, cfg(), small, [LinkCfg::default(), LinkCfg::default()]);
    let mut w = Workload::new((0..8).map(|_| (0, 0, 16 << 10)).collect());
    w.reading[1] = false;
    w.app(&mut sim);
    let stall = sim.start + Duration::from_millis(2);
    while sim.step(stall) {
        w.app(&mut sim);
    }
    // Drain the receiver while every ACK it sends is lost: the window updates vanish.
    let blackout_end = sim.now + Duration::from_millis(1);
    sim.filter = Some(Box::new(move |side, repr, now| {
        side == 1 && matches!(repr, Repr::Ack { .. }) && now < blackout_end
    }));
    w.reading[1] = true;
    w.app(&mut sim);
    w.run(&mut sim, Duration::from_secs(1));
    assert!(sim.net.filtered > 0);
    assert!(sim.flow(0).stats().probes_sent > 0);
}

#[test]
fn fast_retransmit_repairs_a_single_loss_without_timeout() {
    // 10 Gb/s spreads the window out in time, so ACKs come one by one.
    let link = LinkCfg {
        bandwidth_bps: Some(10_000_000_000),
        ..Default::default()
    };
    let mut sim = SimNet::connected(4, cfg(), cfg(), [link.clone(), link]);
    let mut dropped = false;
    sim.filter = Some(Box::new(move |side, repr, _| {
        let hit = side == 0 && !dropped && matches!(*repr, Repr::Data { seq: 3, .. });
        dropped |= hit;
        hit
    }));
    let mut w = Workload::new(vec![(0, 0, 100_000)]);
    w.run(&mut sim, Duration::from_secs(1));
    let a = sim.flow(0).stats();
    assert_eq!((a.fast_retransmits, a.retransmits, a.rtos), (1, 1, 0), "{a:?}");
    assert!(a.dup_acks >= 3, "{a:?}");
}

#[test]
fn rto_backs_off_exponentially_and_flow_fails_when_peer_disappears() {
    let c = FlowConfig {
        max_retries: 5,
        ..cfg()
    };
    let mut sim = SimNet::connected(5, c.clone(), c, [LinkCfg::default(), LinkCfg::default()]);
    let mut w = Workload::new(vec![(0, 0, 1000)]);
    w.run(&mut sim, Duration::from_secs(1));
    let rto = sim.flow(0).stats().rto;
    // The peer vanishes.
    sim.filter = Some(Box::new(|_, _, _| true));
    let t0 = sim.now;
    sim.flow(0).send_message(0, vec![1u8; 10]).unwrap();
    let deadline = sim.now + Duration::from_secs(1);
    while sim.step(deadline) {}
    let evs = sim.events(0);
    assert_eq!(evs, vec![FlowEvent::Failed(FailReason::PeerUnresponsive)]);
    let sends: Vec<Instant> = sim
        .tap
        .iter()
        .filter(|t| t.0 >= t0 && t.1 == 0 && t.2 == "data")
        .map(|t| t.0)
        .collect();
    assert_eq!(sends.len(), 6, "original + max_retries retransmissions");
    let gaps: Vec<Duration> = sends.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps[0], rto);
    for g in gaps.windows(2) {
        assert!(
            g[1] == g[0] * 2 || g[1] == Duration::from_millis(5),
            "exponential backoff: {gaps:?}"
        );
    }
    assert_eq!(sim.flow(0).stats().rtos, 5);
    let now = sim.now;
    assert!(sim.flow(0).poll_timeout().is_none() && sim.flow(0).poll_transmit(now).is_none());
}

#[test]
fn swift_shrinks_cwnd_above_target_and_grows_below() {
    // No bottleneck: the RTT (~10 us) stays far below the target.
    let mut sim = SimNet::connected(6, cfg(), cfg(), [LinkCfg::default(), LinkCfg::default()]);
    let mut w = Workload::new(vec![(0, 0, 4 << 20)]);
    w.run(&mut sim, Duration::from_secs(1));
    let free = sim.flow(0).stats();
    assert!(free.cwnd > 16.0 * 2.0, "grows below target: {free:?}");

    // 1 Gb/s bottleneck with a deep queue: an initial window of 64 packets is 2.6 ms of
    // queue, far above a hardware-fabric target of 50 us (+ 50 us flow scaling), and must
    // shrink; the queueing delay then settles near it.
    // A long minimum RTO keeps timeouts out of it (ACKs of this slow link arrive 80 us
    // apart, more than the tests' 50 us minimum): the decrease must come from delay alone.
    let big = FlowConfig {
        cc: SwiftConfig {
            initial_cwnd: 64.0,
            base_target: us(50),
            fs_range: us(50),
            ..Default::default()
        },
        min_rto: Duration::from_millis(1),
        max_rto: Duration::from_millis(10),
        ..cfg()
    };
    let slow = LinkCfg {
        bandwidth_bps: Some(1_000_000_000),
        ..Default::default()
    };
    let mut sim = SimNet::connected(6, big, cfg(), [slow, LinkCfg::default()]);
    let mut w = Workload::new(vec![(0, 0, 4 << 20)]);
    w.app(&mut sim);
    let deadline = sim.start + Duration::from_secs(1);
    let mut min_cwnd = f64::MAX;
    let mut late_rtts = Vec::new();
    while !w.done() {
        assert!(sim.step(deadline));
        w.app(&mut sim);
        let s = sim.flow(0).stats();
        min_cwnd = min_cwnd.min(s.cwnd);
        if sim.elapsed() > Duration::from_millis(20) {
            late_rtts.push(s.srtt);
        }
    }
    let s = sim.flow(0).stats();
    eprintln!(
        "congested: min cwnd {min_cwnd:.2}, final {s:?}, net {:?}",
        sim.net
    );
    assert!(min_cwnd < 16.0, "shrinks above target");
    let late = late_rtts.iter().sum::<Duration>() / late_rtts.len().max(1) as u32;
    assert!(
        late < us(300),
        "queueing delay is held near the target, not the 10 ms queue: {late:?}"
    );
    assert_eq!(sim.net.queue_drops, 0);
    assert_eq!((s.rtos, s.retransmits), (0, 0), "{s:?}");
}

#[test]
fn handshake_negotiates_highest_common_version() {
    let a = FlowConfig {
        versions: VersionRange { min: 1, max: 3 },
        ..cfg()
    };
    let b = FlowConfig {
        versions: VersionRange { min: 1, max: 2 },
        ..cfg()
    };
    let mut sim = SimNet::new(8, a, b, [LinkCfg::default(), LinkCfg::default()]);
    let mut w = Workload::new(vec![(0, 0, 10), (1, 0, 10)]);
    let deadline = sim.start + Duration::from_secs(1);
    while sim.flows[1].is_none() || sim.flow(0).peer_id() == 0 {
        assert!(sim.step(deadline));
    }
    assert_eq!(sim.events(0), vec![FlowEvent::Connected { version: 2 }]);
    assert_eq!(sim.events(1), vec![FlowEvent::Connected { version: 2 }]);
    w.run(&mut sim, Duration::from_secs(1));
}

#[test]
fn handshake_rejects_without_common_version() {
    let a = FlowConfig {
        versions: VersionRange { min: 3, max: 4 },
        ..cfg()
    };
    let mut sim = SimNet::new(9, a, cfg(), [LinkCfg::default(), LinkCfg::default()]);
    let deadline = sim.start + Duration::from_secs(1);
    while sim.step(deadline) {}
    assert!(sim.flows[1].is_none());
    let peer = cfg().versions;
    assert_eq!(
        sim.events(0),
        vec![FlowEvent::Failed(FailReason::NoCommonVersion { peer })]
    );
    let connect = Repr::Connect {
        versions: VersionRange { min: 3, max: 4 },
        src_flow: 5,
        credit: 1,
        service: 0,
    };
    let err = Flow::accept(cfg(), 6, &connect, sim.now).unwrap_err();
    assert_eq!(
        err,
        FlowError::Rejected {
            reject: Box::new(Repr::Reject {
                dst_flow: 5,
                versions: peer,
                reason: RejectReason::NoCommonVersion,
            })
        }
    );
}

#[test]
fn connect_is_retransmitted_and_times_out() {
    let c = FlowConfig {
        max_retries: 3,
        ..cfg()
    };
    let mut sim = SimNet::new(10, c, cfg(), [LinkCfg::default(), LinkCfg::default()]);
    // The first Accept is lost: the Connect is retransmitted and answered again.
    let mut lost = false;
    sim.filter = Some(Box::new(move |side, repr, _| {
        let hit = side == 1 && !lost && matches!(repr, Repr::Accept { .. });
        lost |= hit;
        hit
    }));
    let deadline = sim.start + Duration::from_secs(1);
    while sim.flows[1].is_none() || sim.flow(0).peer_id() == 0 {
        assert!(sim.step(deadline));
    }
    assert_eq!(sim.tap.iter().filter(|t| t.2 == "connect").count(), 2);
    assert_eq!(sim.tap.iter().filter(|t| t.2 == "accept").count(), 2);

    // Nobody answers at all: 1 + max_retries Connects, then Failed.
    let c = FlowConfig {
        max_retries: 3,
        ..cfg()
    };
    let mut sim = SimNet::new(11, c, cfg(), [LinkCfg::default(), LinkCfg::default()]);
    sim.filter = Some(Box::new(|_, _, _| true));
    while sim.step(deadline) {}
    assert_eq!(sim.tap.iter().filter(|t| t.2 == "connect").count(), 4);
    assert_eq!(sim.events(0), vec![FlowEvent::Failed(FailReason::ConnectTimeout)]);
}

#[test]
fn one_sided_packets_are_reliable_and_passed_through_once() {
    let mut sim = SimNet::connected(12, cfg(), cfg(), [LinkCfg::lossy(0.2), LinkCfg::lossy(0.2)]);
    let ops: Vec<OneSided> = (0..50u64)
        .map(|op| match op % 5 {
            0 => OneSided::ReadRequest {
                op,
                region: 1,
                key: 2,
                offset: 3,
                len: 4,
            },
            1 => OneSided::IndirectReadRequest {
                op,
                table: 1,
                table_key: 2,
                index: 3,
                region: 4,
                key: 5,
            },
            2 => OneSided::WriteRequest {
                op,
                region: 1,
                key: 2,
                offset: 0,
                total_len: 3000,
                payload_offset: 0,
                payload: Bytes::from(vec![op as u8; 3000]).into(),
            },
            3 => OneSided::OpResponse {
                op,
                total_len: 5,
                payload_offset: 0,
                payload: Bytes::from_static(b"hello").into(),
            },
            _ => OneSided::OpError {
                op,
                code: OpErrorCode::AccessDenied,
            },
        })
        .collect();
    for op in &ops {
        sim.flow(0).send_one_sided(op.clone()).unwrap();
    }
    let mut got = Vec::new();
    let deadline = sim.start + Duration::from_secs(1);
    while got.len() < ops.len() || sim.flow(0).stats().bytes_in_flight > 0 {
        assert!(sim.step(deadline));
        for ev in sim.events(1) {
            let FlowEvent::OneSided(op) = ev else {
                panic!("{ev:?}")
            };
            got.push(op);
        }
    }
    got.sort_by_key(|op| match op {
        OneSided::ReadRequest { op, .. }
        | OneSided::IndirectReadRequest { op, .. }
        | OneSided::WriteRequest { op, .. }
        | OneSided::OpResponse { op, .. }
        | OneSided::OpError { op, .. } => *op,
    });
    assert_eq!(got, ops);
    assert!(sim.flow(0).stats().retransmits > 0);
    let too_big = OneSided::OpResponse {
        op: 0,
        total_len: 9000,
        payload_offset: 0,
        payload: Bytes::from(vec![0; 9000]).into(),
    };
    assert!(matches!(
        sim.flow(0).send_one_sided(too_big),
        Err(FlowError::TooLarge { .. })
    ));
}

#[test]
fn close_after_everything_is_acknowledged() {
    let mut sim = SimNet::connected(13, cfg(), cfg(), [LinkCfg::lossy(0.05), LinkCfg::lossy(0.05)]);
    let mut w = Workload::new((0..10).map(|i| (0, i, 30_000)).collect());
    w.app(&mut sim);
    sim.flow(0).close();
    assert_eq!(sim.flow(0).send_message(0, vec![1]), Err(FlowError::Closed));
    let deadline = sim.start + Duration::from_secs(1);
    while !sim.flow(0).is_finished() || !sim.flow(1).is_finished() {
        assert!(sim.step(deadline), "close did not finish");
        w.app(&mut sim);
    }
    assert_eq!(w.acked, 10, "everything acknowledged before Close");
    assert_eq!(w.received, 10);
    w.app(&mut sim);
    assert_eq!(w.closed, [true, true]);
}

#[test]
fn who_closed_is_known_on_both_sides() {
    let mut sim = SimNet::connected(14, cfg(), cfg(), [LinkCfg::lossy(0.05), LinkCfg::lossy(0.05)]);
    let mut w = Workload::new(vec![(0, 0, 10_000)]);
    w.app(&mut sim);
    sim.flow(1).close();
    let deadline = sim.start + Duration::from_secs(1);
    while !sim.flow(0).is_finished() || !sim.flow(1).is_finished() {
        assert!(sim.step(deadline), "close did not finish");
        w.app(&mut sim);
    }
    assert!(sim.flow(0).closed_by_peer(), "side 0 got side 1's Close");
    assert!(!sim.flow(1).closed_by_peer(), "side 1 closed itself");
}

#[test]
fn send_limits() {
    let c = FlowConfig {
        max_message_len: 1000,
        send_buffer: 1500,
        ..cfg()
    };
    let mut f = Flow::connect(c, 1, 0, Instant::now());
    assert_eq!(
        f.send_message(0, vec![0; 1001]),
        Err(FlowError::TooLarge { len: 1001, max: 1000 })
    );
    assert_eq!(f.send_message(0, vec![0; 1000]), Ok(0));
    assert_eq!(f.send_message(0, vec![0; 1000]), Err(FlowError::Busy));
    assert_eq!(f.send_message(1, vec![0; 500]), Ok(0));
    assert_eq!(f.send_message(1, vec![0; 1]), Err(FlowError::Busy));
    assert_eq!(
        f.send_message(0, Bytes::from_static(b"")),
        Ok(1),
        "an empty message always fits"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_loss_seeds_keep_exactly_once_in_order(seed in any::<u64>(), loss in 0.0f64..0.15, n in 1usize..30) {
        let link = LinkCfg::lossy(loss);
        let mut sim = SimNet::connected(seed, cfg(), cfg(), [link.clone(), link]);
        let mut rng = fastrand::Rng::with_seed(seed);
        let msgs = (0..n).map(|_| (rng.usize(..2), rng.u32(..3), rng.usize(..30_000))).collect();
        let mut w = Workload::new(msgs);
        w.run(&mut sim, Duration::from_secs(10));
    }
}
