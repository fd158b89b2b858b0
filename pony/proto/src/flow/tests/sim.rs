//! `SimNet`: two flows over a simulated network with a virtual clock.
//!
//! Packets really go through the wire format (`Repr::emit` → bytes → `Repr::parse`), so a
//! corrupted packet is one with a flipped bit that the checksum rejects. Each direction has
//! seeded random loss, duplication, corruption, a fixed delay plus jitter (which reorders),
//! and optionally a bandwidth-limited FIFO queue with a tail-drop limit (which creates
//! queueing delay for congestion control to see). The clock jumps to the next delivery or
//! timer, so a test runs as fast as the flows can process packets.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::flow::{Flow, FlowConfig, FlowError, FlowEvent, Transmit};
use crate::wire::Repr;

/// One direction's impairments.
#[derive(Debug, Clone)]
pub struct LinkCfg {
    pub loss: f64,
    pub duplicate: f64,
    pub corrupt: f64,
    pub delay: Duration,
    pub jitter: Duration,
    /// Bits per second of the bottleneck queue (None: infinite).
    pub bandwidth_bps: Option<u64>,
    /// Tail drop when the queue holds more than this much transmission time.
    pub queue_limit: Duration,
}

impl Default for LinkCfg {
    fn default() -> Self {
        LinkCfg {
            loss: 0.0,
            duplicate: 0.0,
            corrupt: 0.0,
            delay: Duration::from_micros(5),
            jitter: Duration::ZERO,
            bandwidth_bps: None,
            queue_limit: Duration::from_millis(10),
        }
    }
}

impl LinkCfg {
    pub fn lossy(loss: f64) -> Self {
        LinkCfg {
            loss,
            duplicate: 0.02,
            corrupt: 0.01,
            jitter: Duration::from_micros(10),
            ..Default::default()
        }
    }
}

/// What the network did.
#[derive(Debug, Default, Clone)]
pub struct NetStats {
    pub sent: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub corrupted_dropped: u64,
    pub queue_drops: u64,
    pub filtered: u64,
    pub delivered: u64,
}

/// Decides to drop a packet: (from side, packet, now) → drop?
pub type Filter = Box<dyn FnMut(usize, &Repr<'_>, Instant) -> bool>;

/// A packet on the wire: (arrival, order sent, destination side, bytes).
type InFlight = (Instant, u64, usize, Vec<u8>);

pub struct SimNet {
    pub start: Instant,
    pub now: Instant,
    pub flows: [Option<Flow>; 2],
    responder_cfg: FlowConfig,
    pub links: [LinkCfg; 2],
    busy_until: [Instant; 2],
    rng: fastrand::Rng,
    /// (arrival, order, destination side, bytes)
    queue: BinaryHeap<Reverse<InFlight>>,
    order: u64,
    pub net: NetStats,
    pub filter: Option<Filter>,
    /// Every packet handed to the network: (time, from side, kind name, seq if any).
    pub tap: Vec<(Instant, usize, &'static str, Option<u64>)>,
}

impl SimNet {
    /// Side 0 connects to side 1 (created when the Connect arrives).
    pub fn new(seed: u64, a: FlowConfig, b: FlowConfig, links: [LinkCfg; 2]) -> Self {
        let start = Instant::now();
        SimNet {
            start,
            now: start,
            flows: [Some(Flow::connect(a, 100, 0, start)), None],
            responder_cfg: b,
            links,
            busy_until: [start; 2],
            rng: fastrand::Rng::with_seed(seed),
            queue: BinaryHeap::new(),
            order: 0,
            net: NetStats::default(),
            filter: None,
            tap: Vec::new(),
        }
    }

    /// A connected pair (handshake run to completion, Connected events consumed).
    pub fn connected(seed: u64, a: FlowConfig, b: FlowConfig, links: [LinkCfg; 2]) -> Self {
        let mut sim = SimNet::new(seed, a, b, links);
        let deadline = sim.now + Duration::from_secs(1);
        while !(sim.flows[1].is_some() && sim.flow(0).peer_id() != 0) {
            assert!(sim.step(deadline), "handshake did not finish");
        }
        assert!(matches!(
            sim.flow(0).poll_event(),
            Some(FlowEvent::Connected { .. })
        ));
        assert!(matches!(
            sim.flow(1).poll_event(),
            Some(FlowEvent::Connected { .. })
        ));
        sim
    }

    pub fn flow(&mut self, side: usize) -> &mut Flow {
        self.flows[side].as_mut().expect("flow exists")
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Puts one packet from `side` on the wire.
    fn send(&mut self, side: usize, mut bytes: Vec<u8>) {
        self.net.sent += 1;
        let repr = Repr::parse(&bytes).expect("flows only produce valid packets");
        let (kind, seq) = describe(&repr);
        self.tap.push((self.now, side, kind, seq));
        if let Some(f) = self.filter.as_mut() {
            if f(side, &repr, self.now) {
                self.net.filtered += 1;
                return;
            }
        }
        let link = self.links[side].clone();
        if self.rng.f64() < link.loss {
            self.net.lost += 1;
            return;
        }
        let mut departs = self.now;
        if let Some(bps) = link.bandwidth_bps {
            let start = self.busy_until[side].max(self.now);
            if start - self.now > link.queue_limit {
                self.net.queue_drops += 1;
                return;
            }
            let tx = Duration::from_nanos(bytes.len() as u64 * 8 * 1_000_000_000 / bps);
            self.busy_until[side] = start + tx;
            departs = start + tx;
        }
        if self.rng.f64() < link.corrupt {
            let bit = self.rng.usize(..bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
        }
        let copies = if self.rng.f64() < link.duplicate { 2 } else { 1 };
        self.net.duplicated += copies - 1;
        for _ in 0..copies {
            let jitter = link.jitter.mul_f64(self.rng.f64());
            self.order += 1;
            self.queue.push(Reverse((
                departs + link.delay + jitter,
                self.order,
                1 - side,
                bytes.clone(),
            )));
        }
    }

    /// Sends everything both flows want to send now.
    pub fn flush(&mut self) {
        for side in 0..2 {
            while let Some(flow) = self.flows[side].as_mut() {
                let Some(t) = flow.poll_transmit(self.now) else {
                    break;
                };
                // Emitting copies the payload once; the flow's buffers are borrowed.
                let bytes = emit_transmit(&t);
                self.send(side, bytes);
            }
        }
    }

    fn deliver(&mut self, to: usize, bytes: &[u8]) {
        let Ok(repr) = Repr::parse(bytes) else {
            self.net.corrupted_dropped += 1;
            return;
        };
        self.net.delivered += 1;
        match self.flows[to].as_mut() {
            Some(f) => f.handle(&repr, self.now),
            None => match Flow::accept(self.responder_cfg.clone(), 200, &repr, self.now) {
                Ok(f) => self.flows[to] = Some(f),
                Err(FlowError::Rejected { reject }) => self.send(to, emit(&reject)),
                Err(_) => {}
            },
        }
    }

    /// The next time something happens, if anything is pending.
    pub fn next_event(&self) -> Option<Instant> {
        let timers = self.flows.iter().flatten().filter_map(|f| f.poll_timeout());
        let arrival = self.queue.peek().map(|Reverse((t, ..))| *t);
        timers.chain(arrival).min()
    }

    /// Advances to the next event (not past `deadline`) and processes it. Returns false
    /// when nothing is pending before `deadline`.
    pub fn step(&mut self, deadline: Instant) -> bool {
        self.flush();
        let Some(next) = self.next_event() else {
            return false;
        };
        if next > deadline {
            self.now = deadline;
            return false;
        }
        self.now = self.now.max(next);
        while self.queue.peek().is_some_and(|Reverse((t, ..))| *t <= self.now) {
            let Reverse((_, _, to, bytes)) = self.queue.pop().expect("peeked");
            self.deliver(to, &bytes);
        }
        for f in self.flows.iter_mut().flatten() {
            if f.poll_timeout().is_some_and(|t| t <= self.now) {
                f.handle_timeout(self.now);
            }
        }
        self.flush();
        true
    }

    /// Drains a side's events.
    pub fn events(&mut self, side: usize) -> Vec<FlowEvent> {
        let mut out = Vec::new();
        if let Some(f) = self.flows[side].as_mut() {
            while let Some(e) = f.poll_event() {
                out.push(e);
            }
        }
        out
    }
}

/// The bytes of a packet.
pub fn emit(repr: &Repr<'_>) -> Vec<u8> {
    let mut bytes = vec![0u8; repr.buffer_len()];
    repr.emit(&mut bytes).expect("flows only produce valid packets");
    bytes
}

/// The bytes of a packet a flow hands out (its payload gathered from its pieces).
pub fn emit_transmit(t: &Transmit<'_>) -> Vec<u8> {
    let mut bytes = vec![0u8; t.buffer_len()];
    t.emit(&mut bytes).expect("flows only produce valid packets");
    bytes
}

/// Kind name and sequence number, for the tap.
pub fn describe(repr: &Repr<'_>) -> (&'static str, Option<u64>) {
    match *repr {
        Repr::Connect { .. } => ("connect", None),
        Repr::Accept { .. } => ("accept", None),
        Repr::Reject { .. } => ("reject", None),
        Repr::Data { seq, .. } => ("data", Some(seq)),
        Repr::Ack { .. } => ("ack", None),
        Repr::Close { .. } => ("close", None),
        Repr::ReadRequest { seq, .. }
        | Repr::IndirectReadRequest { seq, .. }
        | Repr::WriteRequest { seq, .. }
        | Repr::OpResponse { seq, .. }
        | Repr::OpError { seq, .. } => ("one-sided", Some(seq)),
    }
}

/// Deterministic message content, so the receiver can check every byte.
pub fn content(stream: u32, message: u64, len: usize) -> Vec<u8> {
    let salt = (stream as usize).wrapping_mul(7) ^ (message as usize).wrapping_mul(13);
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ salt ^ (i >> 8)) as u8)
        .collect()
}
