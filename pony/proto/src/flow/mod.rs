//! One flow between two Pony engines, sans-IO (quinn-proto style): packets ([`Repr`]) and
//! time go in, packets to send, timers and events come out. No sockets, no clocks; the
//! engine owns the I/O, tests drive it with a virtual clock.
//!
//! ```text
//!            send_message / send_one_sided            poll_event
//!                      │                                  ▲
//!   ┌──────────────────▼─────────────┐  ┌─────────────────┴───────────────┐
//!   │ send.rs  queue → segments →    │  │ recv.rs  received set, reassembly│
//!   │          in flight → lost set  │  │          per stream, ACK timing  │
//!   └───────┬───────────────▲────────┘  └────▲──────────────────┬─────────┘
//!   cc.rs (Swift window)    │ Ack            │ Data/one-sided   │ Ack
//!   credit.rs (peer credit) │                │                  │ (credit: credit.rs)
//!   rtt.rs (RTO)            │                │                  │
//!           poll_transmit ──┴────── handle ──┴──── poll_transmit┘
//! ```
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

mod buffers;
mod cc;
mod chunks;
mod config;
mod credit;
mod error;
mod event;
mod liveness;
mod onesided;
mod probe;
mod recv;
mod rto;
mod rtt;
mod send;
mod stats;
#[cfg(test)]
mod tests;
mod transmit;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub use buffers::{HeapBuffers, MessageBuf, RecvBuffers};
pub use cc::SwiftConfig;
pub use chunks::{Chunks, Cutter};
pub use config::FlowConfig;
pub use error::FlowError;
pub use event::{FailReason, FlowEvent};
pub use onesided::OneSided;
pub use stats::FlowStats;
pub use transmit::Transmit;

use crate::wire::{self, negotiate, FlowId, MessageId, PacketSeq, RejectReason, Repr, ServiceId, StreamId};
use credit::PeerCredit;
use liveness::Liveness;
use probe::WindowProbe;
use recv::Receiver;
use rto::RtoTimer;
use rtt::RttEstimator;
use send::{Payload, SendState};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting { attempts: u32, next: Instant },
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
#[derive(Debug)]
pub struct Flow<R: RecvBuffers = HeapBuffers> {
    cfg: FlowConfig,
    local_id: FlowId,
    peer_id: FlowId,
    /// The service our Connect names (initiator only; unused once connected).
    service: ServiceId,
    version: u8,
    state: State,
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
    connect_sent_at: Option<Instant>,
    events: VecDeque<FlowEvent<R::Buf>>,
    stats: FlowStats,
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
            connect_sent_at: None,
            events: VecDeque::new(),
            stats: FlowStats::default(),
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
        let data = data.into();
        self.check_send(data.len(), self.cfg.max_message_len.min(u32::MAX as usize))?;
        Ok(self.send.push_message(stream, data))
    }

    /// Queues a one-sided request or response (one packet, reliable like data).
    pub fn send_one_sided(&mut self, op: OneSided) -> Result<(), FlowError> {
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
        if self.rx.limit_credit(bytes) && self.state == State::Connected {
            self.rx.request_ack();
        }
    }

    /// Closes the flow once everything queued has been delivered and acknowledged.
    pub fn close(&mut self) {
        match self.state {
            State::Connecting { .. } => self.finish_closed(),
            State::Connected => self.state = State::Closing,
            _ => {}
        }
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
}

mod io;
