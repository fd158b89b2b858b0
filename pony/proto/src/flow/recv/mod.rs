//! The receiving half of a flow: [`Receiver`] takes each reliable packet (Data and the
//! one-sided kinds), decides whether to keep it, and says what to acknowledge and when.
//!
//! ```text
//!  packet ─▶ too far ahead? ─▶ seen before? ─▶ room to reassemble? ─▶ credit? ─▶ keep
//!            (malformed)      (duplicate:      (new message past      (credit    │
//!                              re-ACK now)      the cap: not kept)     drop)     ▼
//!                                                           Data: reassembly ─▶ MessageReceived
//!                                                           one-sided ─▶ OneSided (or in place)
//! ```
//!
//! * [`received`]: the set of sequence numbers seen, and the SACK blocks describing it.
//! * [`reassembly`]: messages put back together per stream, in the flow's
//!   [`RecvBuffers`].
//! * [`ack`]: when to acknowledge, and the timestamp to echo.
//! * The receive buffer's credit ([`RecvBuffer`], in `credit.rs`) bounds what is kept
//!   until the application takes it.
//!
//! A packet that is not kept is not recorded either, so the sender retransmits it; one
//! that is kept is recorded and acknowledged (at once when out of order or a duplicate).

mod ack;
mod reassembly;
mod received;

use std::collections::VecDeque;
use std::time::Instant;

use super::buffers::RecvBuffers;
use super::credit::RecvBuffer;
use super::{FlowConfig, FlowEvent, OneSided};
use crate::wire::{FlowId, MessageId, PacketSeq, Repr, StreamId};
use ack::AckState;
use reassembly::{Reassembly, Segment, SegmentError};
use received::{Received, MAX_SEQ_AHEAD};

/// Received packets dropped, by cause (the same-named [`FlowStats`](super::FlowStats)
/// fields).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Drops {
    /// Duplicates (`dups_dropped`).
    pub(crate) dups: u64,
    /// Over the credit or the reassembly cap (`credit_drops`).
    pub(crate) credit: u64,
    /// No buffer for a new message (`buffer_drops`).
    pub(crate) buffer: u64,
    /// Impossible sequence numbers or segments (`malformed`).
    pub(crate) malformed: u64,
}

/// The receiving half of one flow; `R` supplies the buffers messages are reassembled in.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(bound(
    serialize = "R::Buf: serde::Serialize",
    deserialize = "R: Default, R::Buf: serde::de::DeserializeOwned"
))]
pub(crate) struct Receiver<R: RecvBuffers> {
    received: Received,
    reassembly: Reassembly<R::Buf>,
    /// Not state: the importer supplies the buffers (`Flow::set_recv_buffers`).
    #[serde(skip)]
    bufs: R,
    ack: AckState,
    rbuf: RecvBuffer,
    /// Messages the latest segment completed (kept to reuse its allocation).
    delivered: Vec<(StreamId, MessageId, R::Buf)>,
    max_message_len: usize,
    /// Most bytes partial messages may hold: the receive buffer plus two largest messages
    /// (one finishing, one starting, as an honest sender that respects credit can have).
    reassembly_cap: usize,
    drops: Drops,
}

impl<R: RecvBuffers> Receiver<R> {
    pub(crate) fn new(cfg: &FlowConfig, bufs: R) -> Self {
        Receiver {
            received: Received::default(),
            reassembly: Reassembly::default(),
            bufs,
            ack: AckState::new(cfg.ack_every, cfg.delayed_ack),
            rbuf: RecvBuffer::new(cfg.recv_buffer, cfg.max_payload() as u64),
            delivered: Vec::new(),
            max_message_len: cfg.max_message_len,
            reassembly_cap: (cfg.recv_buffer as usize).saturating_add(cfg.max_message_len.saturating_mul(2)),
            drops: Drops::default(),
        }
    }

    /// Replaces the buffers new messages are reassembled in (an imported flow's).
    pub(crate) fn set_bufs(&mut self, bufs: R) {
        self.bufs = bufs;
    }

    /// A packet with a sequence number (`timestamp` to echo, 0 for none): duplicate
    /// suppression, buffer admission, delivery into `events`. With `in_place`, a new
    /// one-sided packet is left to the caller (returns true).
    pub(crate) fn on_packet(
        &mut self,
        repr: &Repr<'_>,
        seq: PacketSeq,
        timestamp: u64,
        now: Instant,
        in_place: bool,
        events: &mut VecDeque<FlowEvent<R::Buf>>,
    ) -> bool {
        if seq >= self.received.cumulative().saturating_add(MAX_SEQ_AHEAD) {
            self.drops.malformed += 1;
            return false;
        }
        if self.received.contains(seq) {
            // A duplicate (or a window probe): drop it, but acknowledge at once so a sender
            // whose ACK was lost learns, and a prober gets our credit.
            self.drops.dups += 1;
            self.ack.on_packet(timestamp, true, now);
            return false;
        }
        let payload: &[u8] = match *repr {
            Repr::Data { payload, .. }
            | Repr::WriteRequest { payload, .. }
            | Repr::OpResponse { payload, .. } => payload,
            _ => &[],
        };
        // A peer can make us allocate a whole message with its first segment; bound what
        // partial messages may hold (beyond what credit bounds) and refuse new ones past it
        // without recording the packet, so an honest sender retransmits it later.
        if let Repr::Data {
            stream,
            message,
            message_len,
            ..
        } = *repr
        {
            if !self
                .reassembly
                .admits(stream, message, message_len, self.reassembly_cap)
            {
                self.drops.credit += 1;
                self.ack.on_packet(timestamp, true, now);
                return false;
            }
        }
        // A one-sided packet acted on in place is consumed at once: nothing is buffered.
        let consumed_now = in_place && !matches!(repr, Repr::Data { .. });
        if !consumed_now && !self.rbuf.try_charge(payload.len() as u64) {
            self.drops.credit += 1;
            self.ack.on_packet(timestamp, true, now);
            return false;
        }
        if let Repr::Data {
            stream,
            message,
            message_len,
            offset,
            payload,
            ..
        } = *repr
        {
            let seg = Segment {
                stream,
                message,
                message_len,
                offset,
                payload,
            };
            match self
                .reassembly
                .on_segment(seg, self.max_message_len, &mut self.bufs, &mut self.delivered)
            {
                Ok(()) => {}
                Err(SegmentError::NoBuffer) => {
                    // Like a credit drop: not recorded, so the peer resends it later.
                    self.drops.buffer += 1;
                    self.rbuf.release(payload.len() as u64);
                    self.ack.on_packet(timestamp, true, now);
                    return false;
                }
                Err(SegmentError::Malformed) => {
                    // Acknowledge it anyway: retransmitting it would not make it valid.
                    self.drops.malformed += 1;
                    self.rbuf.release(payload.len() as u64);
                }
            }
            for (stream, message, data) in self.delivered.drain(..) {
                events.push_back(FlowEvent::MessageReceived {
                    stream,
                    message,
                    data,
                });
            }
        } else if !consumed_now {
            if let Some(op) = OneSided::from_repr(repr) {
                events.push_back(FlowEvent::OneSided(op));
            }
        }
        let in_order = self.received.insert(seq);
        self.ack.on_packet(timestamp, !in_order, now);
        consumed_now
    }

    /// Caps the credit at `bytes` of free memory, plus what messages being reassembled
    /// still expect (they already have their memory). Returns whether the peer should hear
    /// of it now (a window update).
    /// The receive buffer's current cap (what `limit_credit` last set).
    pub(crate) fn credit_limit(&self) -> u64 {
        self.rbuf.limit()
    }

    pub(crate) fn limit_credit(&mut self, bytes: u64) -> bool {
        let limit = bytes.saturating_add(self.reassembly.unfilled() as u64);
        self.rbuf.set_limit(limit)
    }

    /// The application took `n` bytes. Returns whether a window update is worth sending.
    pub(crate) fn release(&mut self, n: u64) -> bool {
        self.rbuf.release(n)
    }

    /// Asks for an ACK at the next opportunity (a window update or a heartbeat).
    pub(crate) fn request_ack(&mut self) {
        self.ack.request();
    }

    /// Whether an ACK should go out at `now`.
    pub(crate) fn ack_due(&self, now: Instant) -> bool {
        self.ack.due(now)
    }

    /// The delayed-ACK timer.
    pub(crate) fn ack_timeout(&self) -> Option<Instant> {
        self.ack.timeout()
    }

    /// An ACK is being sent: returns the timestamp it echoes, and records the credit it
    /// advertises.
    pub(crate) fn on_ack_sent(&mut self, now: Instant) -> u64 {
        let echo = self.ack.on_sent(now);
        self.rbuf.advertised(self.rbuf.available());
        echo
    }

    /// The ACK for the peer's flow `dst_flow`, echoing `echo_timestamp_ns`.
    pub(crate) fn ack(&self, dst_flow: FlowId, echo_timestamp_ns: u64) -> Repr<'static> {
        Repr::Ack {
            dst_flow,
            cumulative: self.received.cumulative(),
            sacks: self.received.sacks(),
            credit: self.rbuf.available(),
            echo_timestamp_ns,
        }
    }

    /// The credit to advertise: bytes we can still take.
    pub(crate) fn credit(&self) -> u64 {
        self.rbuf.available()
    }

    /// Bytes held for the application.
    pub(crate) fn buffered(&self) -> u64 {
        self.rbuf.buffered()
    }

    /// Bytes allocated for messages being reassembled.
    pub(crate) fn reserved(&self) -> usize {
        self.reassembly.reserved()
    }

    /// Packets dropped so far, by cause.
    pub(crate) fn drops(&self) -> Drops {
        self.drops
    }
}
