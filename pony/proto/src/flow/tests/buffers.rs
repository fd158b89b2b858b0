//! How a flow's receiver avoids copies, and copes with scarce memory (the engine's case:
//! messages land in an app's pool): one-sided packets are acted on in place, a receiver
//! with no buffer for a message drops it unrecorded and stays alive, and a credit cap from
//! outside holds the sender back by flow control, starting a message only when the whole
//! of it fits.
//!
//! Two flows are pumped by hand (no `SimNet`, which is heap-only) over a lossless wire,
//! with a virtual clock that jumps to the next timer.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::sim::{emit, emit_transmit};
use super::*;

/// Heap buffers that can be switched off.
#[derive(Debug)]
struct Scarce {
    open: Rc<Cell<bool>>,
}

impl RecvBuffers for Scarce {
    type Buf = Vec<u8>;

    fn alloc(&mut self, len: usize) -> Option<Vec<u8>> {
        self.open.get().then(|| vec![0; len])
    }
}

struct Pair {
    now: Instant,
    a: Flow,
    b: Flow<Scarce>,
    open: Rc<Cell<bool>>,
}

impl Pair {
    fn new(cfg: FlowConfig) -> Self {
        let now = Instant::now();
        let open = Rc::new(Cell::new(true));
        let mut a = Flow::connect(cfg.clone(), 1, 0, now);
        let connect = emit_transmit(&a.poll_transmit(now).expect("connect"));
        let connect = Repr::parse(&connect).expect("valid");
        let bufs = Scarce { open: open.clone() };
        let b = Flow::accept_with(cfg, 2, &connect, now, bufs).expect("accept");
        let mut p = Pair { now, a, b, open };
        p.pump();
        assert!(matches!(p.a.poll_event(), Some(FlowEvent::Connected { .. })));
        assert!(matches!(p.b.poll_event(), Some(FlowEvent::Connected { .. })));
        p
    }

    /// Delivers packets both ways until neither side has anything to send now.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(t) = self.a.poll_transmit(self.now) {
                let bytes = emit_transmit(&t);
                self.b.handle(&Repr::parse(&bytes).expect("valid"), self.now);
                moved = true;
            }
            while let Some(t) = self.b.poll_transmit(self.now) {
                let bytes = emit(&t);
                self.a.handle(&Repr::parse(&bytes).expect("valid"), self.now);
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    /// Runs for `d` of virtual time, jumping from timer to timer.
    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            self.pump();
            let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.a.handle_timeout(self.now);
                    self.b.handle_timeout(self.now);
                }
                _ => break,
            }
        }
        self.now = end;
    }

    fn received(&mut self) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| self.b.poll_event())
            .filter_map(|e| match e {
                FlowEvent::MessageReceived { data, .. } => Some(data),
                _ => None,
            })
            .collect()
    }
}

fn cfg() -> FlowConfig {
    // Default MTU: a segment (< 9000 bytes) is smaller than the 10 000-byte cap below.
    FlowConfig {
        initial_rto: Duration::from_micros(200),
        min_rto: Duration::from_micros(50),
        max_rto: Duration::from_millis(5),
        max_retries: 5,
        ..Default::default()
    }
}

#[test]
fn no_buffer_drops_are_retried_while_the_receiver_answers() {
    let mut p = Pair::new(cfg());
    p.open.set(false);
    p.a.send_message(0, vec![7u8; 20_000]).unwrap();
    // Far longer than max_retries RTOs at the 5 ms cap: a silent peer would have failed.
    p.run_for(Duration::from_millis(500));
    let (a, b) = (p.a.stats(), p.b.stats());
    assert!(a.rtos > 5, "retried past max_retries: {a:?}");
    assert!(b.buffer_drops > 5, "{b:?}");
    assert!(!p.a.is_finished(), "a peer that answers is not unresponsive");
    assert!(p.received().is_empty());
    p.open.set(true);
    p.run_for(Duration::from_millis(100));
    assert_eq!(p.received(), vec![vec![7u8; 20_000]]);
}

#[test]
fn a_credit_cap_starts_a_message_only_when_all_of_it_fits() {
    let mut p = Pair::new(cfg());
    p.a.send_message(0, vec![0u8; 20_000]).unwrap();
    p.run_for(Duration::from_millis(10));
    assert_eq!(p.received(), vec![vec![0u8; 20_000]]);
    // The app holds that message: 10 000 bytes of its memory are left. A segment would
    // fit, the next message would not, so not one byte of it is sent.
    p.b.limit_credit(10_000);
    p.pump(); // the window update carrying the cut
    assert_eq!(p.a.stats().peer_credit, 10_000);
    for i in 1..3u8 {
        p.a.send_message(0, vec![i; 20_000]).unwrap();
    }
    p.run_for(Duration::from_millis(50));
    assert!(p.received().is_empty());
    let (a, b) = (p.a.stats(), p.b.stats());
    assert_eq!((b.buffer_drops, b.credit_drops, b.reassembly_reserved), (0, 0, 0));
    assert_eq!((a.bytes_in_flight, a.peer_credit), (0, 10_000));
    assert!(a.probes_sent > 0, "waiting for credit, probing: {a:?}");
    // The app released it: the rest follows.
    p.b.limit_credit(u64::MAX);
    p.run_for(Duration::from_millis(50));
    assert_eq!(p.received(), vec![vec![1u8; 20_000], vec![2u8; 20_000]]);
    assert!(!p.a.is_finished());
}

#[test]
fn one_sided_packets_are_handed_over_in_place_exactly_once() {
    let mut p = Pair::new(cfg());
    let write = OneSided::WriteRequest {
        op: 4,
        region: 1,
        key: 2,
        offset: 0,
        total_len: 3000,
        payload_offset: 0,
        payload: vec![9u8; 3000].into(),
    };
    p.a.send_one_sided(write.clone()).unwrap();
    let now = p.now;
    let packet = emit_transmit(&p.a.poll_transmit(now).expect("the write"));
    let repr = Repr::parse(&packet).unwrap();
    assert!(p.b.handle_in_place(&repr, now), "new: the caller acts on it");
    let (op, payload) = OneSided::from_repr_in_place(&repr).unwrap();
    assert_eq!(payload, &[9u8; 3000][..], "borrowed from the packet");
    assert!(matches!(
        op,
        OneSided::WriteRequest {
            op: 4,
            total_len: 3000,
            ..
        }
    ));
    assert!(
        !p.b.handle_in_place(&repr, now),
        "a duplicate is only acknowledged"
    );
    let b = p.b.stats();
    assert_eq!((b.dups_dropped, b.recv_buffered), (1, 0), "nothing was buffered");
    assert!(p.b.poll_event().is_none(), "no event (and no copy) for it");
    // Through `handle`, the same packet is an event with its own copy of the payload.
    let mut q = Pair::new(cfg());
    q.a.send_one_sided(write.clone()).unwrap();
    let packet = emit_transmit(&q.a.poll_transmit(now).expect("the write"));
    q.b.handle(&Repr::parse(&packet).unwrap(), now);
    assert_eq!(q.b.poll_event(), Some(FlowEvent::OneSided(write)));
}
