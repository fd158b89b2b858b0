//! One flow between two Pony engines, sans-IO (quinn-proto style): packets ([`Repr`]) and
//! time go in, packets to send, timers and events come out. No sockets, no clocks; the
//! engine owns the I/O, tests drive it with a virtual clock.
//!
//! [`Flow`], in this module, is the state machine: the lifecycle and handshake, and the
//! transitions that tie the sub-states together on each packet ([`Flow::handle`]), timer
//! ([`Flow::handle_timeout`]) and transmit opportunity ([`Flow::poll_transmit`]). Each
//! sub-state is a type in a module of its own, with the rules that concern it alone:
//!
//! ```text
//!          send_message / send_one_sided                         poll_event
//!                     │                                              ▲
//!   ┌─────────────────▼───────────────┐   ┌──────────────────────────┴───────────┐
//!   │ send.rs  SendState              │   │ recv/  Receiver                      │
//!   │  queue → segments → in flight   │   │  received set, reassembly per stream,│
//!   │  → lost set                     │   │  ACK timing, receive-buffer credit   │
//!   └──────┬──────────────────▲───────┘   └────▲────────────────────────┬────────┘
//!          │ gated by         │ Ack            │ Data / one-sided       │ Ack
//!          │  cc.rs Swift (the window), credit.rs PeerCredit (the peer's credit)
//!          │ timed by                                                   │
//!          │  rto.rs RtoTimer (with rtt.rs RttEstimator), probe.rs WindowProbe,
//!          │  liveness.rs Liveness (idle timeout, keepalive)            │
//!          ▼                  │                │                        ▼
//!     poll_transmit ──────────┴──── handle ────┴─────────────────── poll_transmit
//! ```
//!
//! The public value types are in `config.rs` ([`FlowConfig`]), `error.rs` ([`FlowError`]),
//! `event.rs` ([`FlowEvent`], [`FailReason`]), `stats.rs` ([`FlowStats`]) and
//! `transmit.rs` ([`Transmit`]); what is sent is held as [`Chunks`] (`chunks.rs`) of
//! [`Piece`]s (`piece.rs`: owned bytes, or [`HeldBytes`] that are copied, never borrowed),
//! one-sided packets as [`OneSided`] (`onesided.rs`), and received messages are
//! reassembled in the buffers of a [`RecvBuffers`] (`buffers.rs`).
//!
//! Usage: after creating a flow, after every [`Flow::handle`] and [`Flow::handle_timeout`],
//! and after sending, call [`Flow::poll_transmit`] until it returns `None`, then arm a timer
//! for [`Flow::poll_timeout`] and drain [`Flow::poll_event`].
//!
//! Lifecycle: `Connecting` (initiator, until Accept/Reject) → `Connected` → `Closing`
//! (after [`Flow::close`], until everything sent is acknowledged) → `Closed`; or `Failed`
//! from anywhere (connect timed out or refused, peer unresponsive). Close is not
//! acknowledged: a closed flow answers any further packet with another Close, so a lost
//! Close is repaired by the peer's next retransmission.
//!
//! Order of what [`Flow::poll_transmit`] sends: handshake, ACK (cheap and it unblocks the
//! peer), retransmissions (oldest first: they gate in-order delivery), new one-sided
//! packets, new segments, a zero-window probe, and Close once everything is acknowledged.

mod buffers;
mod cc;
mod chunks;
mod config;
mod credit;
mod error;
mod event;
mod liveness;
mod onesided;
mod piece;
mod probe;
mod recv;
mod rto;
mod rtt;
mod send;
pub mod state;
mod stats;
#[cfg(test)]
mod tests;
mod transmit;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub use buffers::{HeapBuffers, MessageBuf, RecvBuffers};
pub use cc::SwiftConfig;
pub use chunks::{Chunks, Cutter};
pub use config::{FlowConfig, DEFAULT_IDLE_TIMEOUT};
pub use error::FlowError;
pub use event::{FailReason, FlowEvent};
pub use onesided::OneSided;
pub use piece::{HeldBytes, Piece};
pub use stats::FlowStats;
pub use transmit::Transmit;

use crate::wire::{self, negotiate, FlowId, MessageId, PacketSeq, RejectReason, Repr, ServiceId, StreamId};
use credit::PeerCredit;
use liveness::Liveness;
use probe::WindowProbe;
use recv::Receiver;
use rto::RtoTimer;
use rtt::RttEstimator;
use send::{decode_echo, encode_ts, Payload, SendState};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum State {
    Connecting {
        attempts: u32,
        #[serde(with = "state::instant")]
        next: Instant,
    },
    Connected,
    Closing,
    Closed,
    Failed,
}

/// What an expired retransmission or probe timer asks of the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    /// Retransmit (RTO) or send a probe; the timer re-armed itself.
    Fired,
    /// The peer stayed silent through `max_retries` expiries: fail the flow.
    GiveUp,
}

/// What `poll_transmit` decided to send (decided mutably, then built borrowing).
enum Next {
    Connect,
    Accept,
    Close,
    Ack(u64),
    Packet(PacketSeq),
    Probe(PacketSeq),
}

/// One flow. See the module doc. `R` supplies the buffers received messages are
/// reassembled in.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(bound(
    serialize = "R::Buf: serde::Serialize",
    deserialize = "R: Default, R::Buf: serde::de::DeserializeOwned"
))]
pub struct Flow<R: RecvBuffers = HeapBuffers> {
    cfg: FlowConfig,
    local_id: FlowId,
    peer_id: FlowId,
    /// The service our Connect names (initiator only; unused once connected).
    service: ServiceId,
    version: u8,
    state: State,
    #[serde(with = "state::instant")]
    epoch: Instant,
    send: SendState,
    rx: Receiver<R>,
    peer_credit: PeerCredit,
    rtt: RttEstimator,
    cc: cc::Swift,
    rto: RtoTimer,
    probe: WindowProbe,
    liveness: Liveness,
    pending_accept: bool,
    pending_close: bool,
    /// The flow closed because the peer's Close arrived (not our own close).
    closed_by_peer: bool,
    #[serde(with = "state::opt_instant")]
    connect_sent_at: Option<Instant>,
    events: VecDeque<FlowEvent<R::Buf>>,
    stats: FlowStats,
    /// Whether the state may have changed since [`Flow::take_changed`] (an engine's
    /// upgrade re-exports only changed flows). Set by every mutation, conservatively.
    #[serde(skip)]
    changed: bool,
}

impl Flow {
    /// Starts a flow as the initiator, to `service` at the peer: the first `poll_transmit`
    /// yields the Connect.
    pub fn connect(cfg: FlowConfig, local_id: FlowId, service: ServiceId, now: Instant) -> Self {
        Flow::connect_with(cfg, local_id, service, now, HeapBuffers)
    }

    /// Accepts a flow from a received Connect: the first `poll_transmit` yields the Accept.
    /// Without a common version, returns [`FlowError::Rejected`] with the Reject to send.
    pub fn accept(
        cfg: FlowConfig,
        local_id: FlowId,
        connect: &Repr<'_>,
        now: Instant,
    ) -> Result<Self, FlowError> {
        Flow::accept_with(cfg, local_id, connect, now, HeapBuffers)
    }
}

impl<R: RecvBuffers> Flow<R> {
    fn new(cfg: FlowConfig, local_id: FlowId, state: State, now: Instant, bufs: R) -> Self {
        let rx = Receiver::new(&cfg, bufs);
        Flow {
            rtt: RttEstimator::new(cfg.initial_rto, cfg.min_rto, cfg.max_rto),
            cc: cc::Swift::new(cfg.cc.clone()),
            peer_credit: PeerCredit::new(0),
            rto: RtoTimer::new(cfg.max_retries),
            probe: WindowProbe::new(cfg.max_retries),
            liveness: Liveness::new(cfg.idle_timeout, now),
            cfg,
            local_id,
            peer_id: 0,
            service: 0,
            version: 0,
            state,
            epoch: now,
            send: SendState::default(),
            rx,
            pending_accept: false,
            pending_close: false,
            closed_by_peer: false,
            connect_sent_at: None,
            events: VecDeque::new(),
            stats: FlowStats::default(),
            changed: true,
        }
    }

    /// [`Flow::connect`] reassembling received messages in `bufs`.
    pub fn connect_with(
        cfg: FlowConfig,
        local_id: FlowId,
        service: ServiceId,
        now: Instant,
        bufs: R,
    ) -> Self {
        let mut flow = Flow::new(
            cfg,
            local_id,
            State::Connecting {
                attempts: 0,
                next: now,
            },
            now,
            bufs,
        );
        flow.service = service;
        flow
    }

    /// [`Flow::accept`] reassembling received messages in `bufs`. The Connect's service is
    /// the caller's business (it chose to accept).
    pub fn accept_with(
        cfg: FlowConfig,
        local_id: FlowId,
        connect: &Repr<'_>,
        now: Instant,
        bufs: R,
    ) -> Result<Self, FlowError> {
        let Repr::Connect {
            versions,
            src_flow,
            credit,
            ..
        } = *connect
        else {
            return Err(FlowError::NotConnect);
        };
        let Some(version) = negotiate(cfg.versions, versions) else {
            return Err(FlowError::Rejected {
                reject: Box::new(Repr::Reject {
                    dst_flow: src_flow,
                    versions: cfg.versions,
                    reason: RejectReason::NoCommonVersion,
                }),
            });
        };
        let mut flow = Flow::new(cfg, local_id, State::Connected, now, bufs);
        flow.peer_id = src_flow;
        flow.version = version;
        flow.peer_credit = PeerCredit::new(credit);
        flow.pending_accept = true;
        flow.events.push_back(FlowEvent::Connected { version });
        Ok(flow)
    }

    /// Queues a message on `stream`; returns its id. Segments go out as window and credit
    /// allow; [`FlowEvent::MessageSent`] reports when all are acknowledged.
    pub fn send_message(
        &mut self,
        stream: StreamId,
        data: impl Into<Chunks>,
    ) -> Result<MessageId, FlowError> {
        self.changed = true;
        let data = data.into();
        self.check_send(data.len(), self.cfg.max_message_len.min(u32::MAX as usize))?;
        Ok(self.send.push_message(stream, data))
    }

    /// Bytes accepted for sending and not yet acknowledged (messages and one-sided
    /// packets): what the flow holds, bounded by `send_buffer`. A producer that can wait
    /// (the engine serving a large read) uses it to stay a window ahead, not a buffer.
    pub fn queued_bytes(&self) -> u64 {
        self.send.queued_bytes()
    }

    /// Queues a one-sided request or response (one packet, reliable like data).
    pub fn send_one_sided(&mut self, op: OneSided) -> Result<(), FlowError> {
        self.changed = true;
        self.check_send(op.payload().len(), wire::max_payload(self.cfg.mtu, op.kind()))?;
        self.send.push_one_sided(op);
        Ok(())
    }

    fn check_send(&self, len: usize, max: usize) -> Result<(), FlowError> {
        if !matches!(self.state, State::Connecting { .. } | State::Connected) {
            return Err(FlowError::Closed);
        }
        if len > max {
            return Err(FlowError::TooLarge { len, max });
        }
        let queued = self.send.queued_bytes();
        if queued > 0 && queued + len as u64 > self.cfg.send_buffer {
            return Err(FlowError::Busy);
        }
        Ok(())
    }

    /// Caps the credit this flow advertises at `bytes`, e.g. the free space of the memory
    /// its messages are reassembled in, so a peer is held back by flow control rather than
    /// by drops when that memory runs short. Call again as it changes; `u64::MAX` lifts it.
    pub fn limit_credit(&mut self, bytes: u64) {
        // Messages being reassembled already have their memory: what they still expect
        // comes on top of the free space.
        let before = self.rx.credit_limit();
        let due = self.rx.limit_credit(bytes);
        self.changed |= before != self.rx.credit_limit();
        if due && self.state == State::Connected {
            self.rx.request_ack();
        }
    }

    /// Closes the flow once everything queued has been delivered and acknowledged.
    pub fn close(&mut self) {
        self.changed = true;
        match self.state {
            State::Connecting { .. } => self.finish_closed(),
            State::Connected => self.state = State::Closing,
            _ => {}
        }
    }

    /// Whether the flow closed because the peer closed it (its Close arrived), rather than
    /// because our own [`Flow::close`] finished. Meaningful once `Closed` was reported.
    pub fn closed_by_peer(&self) -> bool {
        self.closed_by_peer
    }

    /// Whether the flow is closed or failed (nothing more will happen).
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Closed | State::Failed)
    }

    /// Our id for this flow.
    pub fn local_id(&self) -> FlowId {
        self.local_id
    }

    /// The peer's id for this flow (0 before the handshake finishes on the initiator).
    pub fn peer_id(&self) -> FlowId {
        self.peer_id
    }

    /// Counters and gauges.
    pub fn stats(&self) -> FlowStats {
        let drops = self.rx.drops();
        FlowStats {
            srtt: self.rtt.srtt(),
            rto: self.rtt.rto(),
            cwnd: self.cc.cwnd(),
            bytes_in_flight: self.send.unacked_bytes(),
            peer_credit: self.peer_credit.credit(),
            recv_buffered: self.rx.buffered(),
            reassembly_reserved: self.rx.reserved() as u64,
            dups_dropped: drops.dups,
            credit_drops: drops.credit,
            buffer_drops: drops.buffer,
            malformed: drops.malformed,
            ..self.stats.clone()
        }
    }

    /// The next event. Taking a received message frees its bytes from the receive buffer,
    /// which may trigger a window update.
    pub fn poll_event(&mut self) -> Option<FlowEvent<R::Buf>> {
        let ev = self.events.pop_front()?;
        self.changed = true;
        let freed = match &ev {
            FlowEvent::MessageReceived { data, .. } => data.len(),
            FlowEvent::OneSided(op) => op.payload().len(),
            _ => 0,
        };
        if freed > 0 && self.rx.release(freed as u64) && self.state == State::Connected {
            self.rx.request_ack();
        }
        Some(ev)
    }

    fn now_ns(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    fn fail(&mut self, reason: FailReason) {
        self.state = State::Failed;
        self.rto.stop();
        self.probe.stop();
        self.events.push_back(FlowEvent::Failed(reason));
    }

    fn finish_closed(&mut self) {
        self.state = State::Closed;
        self.rto.stop();
        self.probe.stop();
        self.events.push_back(FlowEvent::Closed);
    }

    /// Processes one packet addressed to this flow.
    pub fn handle(&mut self, repr: &Repr<'_>, now: Instant) {
        self.changed = true;
        self.handle_packet(repr, now, false);
    }

    /// Like [`Flow::handle`], except that a new one-sided packet is not queued as a
    /// [`FlowEvent::OneSided`] (whose payload would be a copy): `true` says the caller must
    /// act on `repr` now, reading its payload in place (e.g. with
    /// [`OneSided::from_repr_in_place`]), since the flow has recorded and will acknowledge
    /// it. Duplicates and refused packets give `false`, as do all other kinds.
    pub fn handle_in_place(&mut self, repr: &Repr<'_>, now: Instant) -> bool {
        self.changed = true;
        self.handle_packet(repr, now, true)
    }

    fn handle_packet(&mut self, repr: &Repr<'_>, now: Instant, in_place: bool) -> bool {
        self.stats.packets_received += 1;
        self.liveness.on_receive(now);
        match self.state {
            State::Failed => return false,
            State::Closed => {
                // Tell a peer that missed our Close (it is retransmitting).
                if !matches!(
                    repr,
                    Repr::Close { .. } | Repr::Connect { .. } | Repr::Reject { .. }
                ) {
                    self.pending_close = true;
                }
                return false;
            }
            _ => {}
        }
        match *repr {
            Repr::Connect { src_flow, .. } => {
                // The initiator did not get our Accept and retransmitted its Connect.
                if !matches!(self.state, State::Connecting { .. }) && src_flow == self.peer_id {
                    self.pending_accept = true;
                }
            }
            Repr::Accept {
                version,
                src_flow,
                credit,
                ..
            } => self.on_accept(version, src_flow, credit, now),
            Repr::Reject { versions, reason, .. } => {
                if matches!(self.state, State::Connecting { .. }) {
                    self.fail(match reason {
                        RejectReason::NoCommonVersion => FailReason::NoCommonVersion { peer: versions },
                        RejectReason::NoListener => FailReason::NoListener,
                        RejectReason::TooManyFlows => FailReason::PeerBusy,
                        RejectReason::Other(code) => FailReason::Refused { code },
                    });
                }
            }
            Repr::Close { .. } => {
                if !matches!(self.state, State::Connecting { .. }) {
                    // Our own close may have been under way: the peer's Close still ends
                    // the flow before everything of ours was acknowledged, so it is the
                    // peer's doing.
                    self.closed_by_peer = true;
                    self.finish_closed();
                }
            }
            Repr::Ack {
                cumulative,
                ref sacks,
                credit,
                echo_timestamp_ns,
                ..
            } => self.on_ack(cumulative, sacks, credit, echo_timestamp_ns, now),
            Repr::Data {
                seq, timestamp_ns, ..
            } => return self.on_reliable(repr, seq, timestamp_ns, now, false),
            Repr::ReadRequest { seq, .. }
            | Repr::IndirectReadRequest { seq, .. }
            | Repr::WriteRequest { seq, .. }
            | Repr::OpResponse { seq, .. }
            | Repr::OpError { seq, .. } => {
                // One-sided packets carry no timestamp; echo 0 ("no RTT sample").
                return self.on_reliable(repr, seq, 0, now, in_place);
            }
        }
        false
    }

    fn on_accept(&mut self, version: u8, src_flow: FlowId, credit: u64, now: Instant) {
        let State::Connecting { attempts, .. } = self.state else {
            return; // a duplicate Accept
        };
        if version < self.cfg.versions.min || version > self.cfg.versions.max {
            self.fail(FailReason::ProtocolViolation);
            return;
        }
        // The handshake is a fine first RTT sample, unless the Connect was retransmitted.
        if let (1, Some(at)) = (attempts, self.connect_sent_at) {
            self.rtt.on_sample(now.saturating_duration_since(at));
        }
        self.peer_id = src_flow;
        self.version = version;
        self.peer_credit = PeerCredit::new(credit);
        self.state = State::Connected;
        self.rto.reset_backoff();
        self.events.push_back(FlowEvent::Connected { version });
    }

    fn on_ack(
        &mut self,
        cumulative: PacketSeq,
        sacks: &crate::wire::heapless_sacks::Sacks,
        credit: u64,
        echo: u64,
        now: Instant,
    ) {
        if matches!(self.state, State::Connecting { .. }) {
            return;
        }
        let sack_end = sacks.iter().map(|b| b.end).max().unwrap_or(0);
        self.peer_credit.on_ack(cumulative, sack_end, credit);
        // Any ACK proves the peer alive and answers a window probe.
        self.probe.on_ack();
        self.rto.on_ack();
        let out = self.send.on_ack(cumulative, sacks.iter());
        if out.duplicate {
            self.stats.dup_acks += 1;
        }
        self.check_spurious_rto(echo);
        let sample = decode_echo(echo)
            .and_then(|sent| self.now_ns(now).checked_sub(sent))
            .map(Duration::from_nanos);
        if let Some(rtt) = sample {
            self.rtt.on_sample(rtt);
        }
        if out.newly_acked > 0 {
            if let Some(rtt) = sample {
                self.cc.on_ack(rtt, out.newly_acked, now, self.rtt.srtt());
            }
            self.rto.on_progress(now, self.send.has_unacked(), &self.rtt);
        }
        if out.new_losses > 0 {
            self.stats.fast_retransmits += out.new_losses as u64;
            self.cc.on_fast_retransmit(now, self.rtt.srtt());
        }
        for (stream, message) in out.completed {
            self.events.push_back(FlowEvent::MessageSent { stream, message });
        }
    }

    /// An ACK that echoes an original transmission sent before the last RTO shows the RTO
    /// was spurious: its window cut is undone (see `rto.rs`).
    fn check_spurious_rto(&mut self, echo: u64) {
        if let Some(cwnd_before) = self.rto.spurious(echo) {
            self.stats.spurious_rtos += 1;
            self.cc.undo_rto(cwnd_before);
        }
    }

    /// A packet with a sequence number, for the receiving half once connected. With
    /// `in_place`, a new one-sided packet is left to the caller (returns true).
    fn on_reliable(
        &mut self,
        repr: &Repr<'_>,
        seq: PacketSeq,
        timestamp: u64,
        now: Instant,
        in_place: bool,
    ) -> bool {
        if matches!(self.state, State::Connecting { .. }) {
            // Sent by a responder whose Accept we have not seen; it will be retransmitted.
            return false;
        }
        self.rx
            .on_packet(repr, seq, timestamp, now, in_place, &mut self.events)
    }

    /// The next packet to send, if any. Call until `None` after anything happened.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit<'_>> {
        let next = self.next_transmit(now)?;
        self.changed = true;
        self.stats.packets_sent += 1;
        self.liveness.on_send(now);
        let dst_flow = self.peer_id;
        let repr = match next {
            Next::Connect => Repr::Connect {
                versions: self.cfg.versions,
                src_flow: self.local_id,
                credit: self.rx.credit(),
                service: self.service,
            },
            Next::Accept => Repr::Accept {
                dst_flow,
                version: self.version,
                src_flow: self.local_id,
                credit: self.rx.credit(),
            },
            Next::Close => Repr::Close { dst_flow },
            Next::Ack(echo_timestamp_ns) => self.rx.ack(dst_flow, echo_timestamp_ns),
            Next::Packet(seq) => {
                let p = self.send.packet(seq);
                match &p.payload {
                    Payload::Data {
                        stream,
                        message,
                        message_len,
                        offset,
                        bytes,
                    } => {
                        let (payload, rest) = bytes.split_first();
                        let repr = Repr::Data {
                            dst_flow,
                            seq,
                            timestamp_ns: p.timestamp,
                            stream: *stream,
                            message: *message,
                            message_len: *message_len,
                            offset: *offset,
                            payload,
                        };
                        return Some(Transmit::new(repr, rest));
                    }
                    Payload::OneSided(op) => {
                        let (repr, rest) = op.to_repr(dst_flow, seq);
                        return Some(Transmit::new(repr, rest));
                    }
                }
            }
            Next::Probe(seq) => Repr::Data {
                dst_flow,
                seq,
                timestamp_ns: encode_ts(self.now_ns(now), false),
                stream: 0,
                message: 0,
                message_len: 0,
                offset: 0,
                payload: &[],
            },
        };
        Some(Transmit::new(repr, &[]))
    }

    fn next_transmit(&mut self, now: Instant) -> Option<Next> {
        match self.state {
            State::Failed => return None,
            State::Closed => {
                return std::mem::take(&mut self.pending_close).then_some(Next::Close);
            }
            State::Connecting { attempts, next } => {
                if now < next || attempts > self.cfg.max_retries {
                    return None;
                }
                self.state = State::Connecting {
                    attempts: attempts + 1,
                    next: now + self.rtt.backed_off(attempts),
                };
                self.connect_sent_at = Some(now);
                return Some(Next::Connect);
            }
            State::Connected | State::Closing => {}
        }
        if std::mem::take(&mut self.pending_accept) {
            return Some(Next::Accept);
        }
        if self.rx.ack_due(now) {
            let echo = self.rx.on_ack_sent(now);
            self.stats.acks_sent += 1;
            return Some(Next::Ack(echo));
        }
        let now_ns = self.now_ns(now);
        let window_open = self.send.in_flight_pkts() < self.cc.window();
        if window_open && self.send.has_lost() {
            self.changed = true;
            let seq = self.send.retransmit(now_ns)?;
            self.stats.retransmits += 1;
            self.rto.arm(now, &self.rtt);
            return Some(Next::Packet(seq));
        }
        if window_open {
            if let Some(need) = self.send.next_new_need(self.cfg.max_payload()) {
                if self.peer_credit.allows(self.send.unacked_bytes(), need) {
                    self.changed = true;
                    let seq = self.send.send_new(self.cfg.max_payload(), now_ns)?;
                    self.probe.on_data_sent();
                    self.rto.arm(now, &self.rtt);
                    return Some(Next::Packet(seq));
                }
                // Blocked by credit with nothing outstanding: no ACK will come to lift it
                // unless we ask, so arm the zero-window probe timer.
                if !self.send.has_unacked() {
                    self.changed = true;
                    self.probe.arm(now, &self.rtt);
                }
            }
        }
        let probe_due = self.probe.take_due();
        self.changed |= probe_due;
        if probe_due && !self.send.has_unacked() && self.send.next_seq() > 0 {
            // A zero-length segment under an already acknowledged sequence number: the
            // receiver drops it as a duplicate and answers with an ACK carrying its credit.
            self.stats.probes_sent += 1;
            return Some(Next::Probe(self.send.next_seq() - 1));
        }
        if self.state == State::Closing && self.send.is_idle() {
            self.finish_closed();
            return Some(Next::Close);
        }
        None
    }

    /// When `handle_timeout` should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timers = match self.state {
            State::Failed | State::Closed => return None,
            State::Connecting { attempts, next } => {
                // After the last attempt, `next` is when we give up.
                return Some(next).filter(|_| attempts <= self.cfg.max_retries + 1);
            }
            State::Connected | State::Closing => [
                self.rx.ack_timeout(),
                self.rto.deadline(),
                self.probe.deadline(),
                self.liveness.keepalive_deadline(),
                self.liveness.idle_deadline(),
            ],
        };
        timers.into_iter().flatten().min()
    }

    /// Runs the timers that expired at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.changed = true;
        match self.state {
            State::Connecting { attempts, next } => {
                if now >= next && attempts > self.cfg.max_retries {
                    self.fail(FailReason::ConnectTimeout);
                }
                return;
            }
            State::Connected | State::Closing => {}
            State::Failed | State::Closed => return,
        }
        let (now_ns, cwnd, outstanding) = (self.now_ns(now), self.cc.cwnd(), self.send.has_unacked());
        match self.rto.on_timeout(now, now_ns, cwnd, outstanding, &self.rtt) {
            Some(Expiry::GiveUp) => {
                self.fail(FailReason::PeerUnresponsive);
                return;
            }
            Some(Expiry::Fired) => {
                self.stats.rtos += 1;
                self.send.on_rto();
                self.cc.on_rto(now);
            }
            None => {}
        }
        if self.probe.on_timeout(now, &self.rtt) == Some(Expiry::GiveUp) {
            self.fail(FailReason::PeerUnresponsive);
            return;
        }
        if self.liveness.peer_gone(now) {
            self.fail(FailReason::PeerUnresponsive);
            return;
        }
        if self.liveness.keepalive_due(now) {
            self.stats.keepalives_sent += 1;
            self.rx.request_ack();
        }
        // The delayed-ACK timer needs no action: `poll_transmit` sees it is due.
    }
}
