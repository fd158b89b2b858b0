//! The sending half of a flow: the message queue, segmentation, the record of packets in
//! flight, loss detection and what to retransmit.
//!
//! ```text
//!  send_message ─▶ queue (FIFO of messages) ─cut─▶ in flight [base .. next_seq) ─ack─▶ gone
//!  send_one_sided ─▶ one_sided ─────────────────▶      │  ▲
//!                                                 lost │  │ retransmit (same seq)
//!                                                      ▼  │
//!                                                    lost set
//! ```
//!
//! Segments are cut lazily, when the window and the peer's credit allow a new packet, as
//! zero-copy slices of the message's pieces ([`Chunks`]), so the payload is copied only when
//! the caller emits (gathers) the packet. Messages are cut in FIFO order: interleaving large messages would
//! let partial messages fill the receiver's buffer with nothing complete to free it.
//!
//! Retransmissions reuse the original sequence number (like TCP, unlike QUIC), so the
//! receiver suppresses duplicates by sequence number alone. Each transmission gets a new
//! transmission order number `tx` and a new timestamp whose low bit marks a retransmission;
//! the RTT estimator ignores echoes with that bit set (Karn's rule).
//!
//! Loss detection (RACK-like, covering both rules of the brief): a packet is lost when at
//! least 3 packets *transmitted after it* have been acknowledged (a SACK hole older than 3
//! later-acked packets; this also re-detects a lost retransmission), or when 3 duplicate
//! ACKs arrive while something sent after the first unacked packet was acknowledged.

use std::collections::{BTreeSet, HashMap, VecDeque};

use super::chunks::{Chunks, Cutter};
use super::OneSided;
use crate::wire::{MessageId, PacketSeq, SackBlock, StreamId};

/// Duplicate ACKs (and later-sent acknowledged packets) that declare a packet lost.
pub(crate) const DUP_THRESH: usize = 3;

/// Encodes a send time (ns since the flow's epoch) as a wire timestamp: never 0 (0 means
/// "no sample" in an ACK), low bit set on retransmissions.
pub(crate) fn encode_ts(ns: u64, retransmission: bool) -> u64 {
    ((ns + 2) & !1) | retransmission as u64
}

/// The inverse of [`encode_ts`] for an echoed timestamp: `None` for "no sample" or a
/// retransmission (Karn), otherwise the send time in ns since the epoch.
pub(crate) fn decode_echo(ts: u64) -> Option<u64> {
    if ts == 0 || ts & 1 == 1 {
        return None;
    }
    Some(ts - 2)
}

/// What a packet carries.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) enum Payload {
    /// A message segment.
    Data {
        stream: StreamId,
        message: MessageId,
        message_len: u32,
        offset: u32,
        bytes: Chunks,
    },
    /// A one-sided request or response.
    OneSided(OneSided),
}

/// A packet sent and not yet acknowledged.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct SentPacket {
    pub(crate) payload: Payload,
    /// Transmission order of the first and the latest transmission.
    first_tx: u64,
    tx: u64,
    /// Wire timestamp of the latest transmission.
    pub(crate) timestamp: u64,
    acked: bool,
    lost: bool,
    len: u64,
}

/// A message not yet fully cut into segments.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Queued {
    stream: StreamId,
    id: MessageId,
    len: usize,
    cutter: Cutter,
}

/// Per-message completion tracking.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Track {
    unacked_segments: u32,
    fully_cut: bool,
    len: u64,
}

/// What an ACK changed.
#[derive(Debug, Default)]
pub(crate) struct AckOutcome {
    /// Packets acknowledged for the first time.
    pub(crate) newly_acked: usize,
    /// Packets newly declared lost.
    pub(crate) new_losses: usize,
    /// Whether this was a duplicate ACK.
    pub(crate) duplicate: bool,
    /// Messages whose every segment is now acknowledged.
    pub(crate) completed: Vec<(StreamId, MessageId)>,
}

/// The sending half.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct SendState {
    queue: VecDeque<Queued>,
    one_sided: VecDeque<OneSided>,
    next_message: HashMap<StreamId, MessageId>,
    tracks: HashMap<(StreamId, MessageId), Track>,
    /// Packets `base..next_seq`, index `seq - base`; the acknowledged prefix is popped.
    inflight: VecDeque<SentPacket>,
    base: PacketSeq,
    next_seq: PacketSeq,
    lost: BTreeSet<PacketSeq>,
    tx_counter: u64,
    /// The three largest `tx` among acknowledged packets, largest first.
    top_acked_tx: [u64; DUP_THRESH],
    last_cumulative: PacketSeq,
    dup_acks: usize,
    /// Payload bytes sent and not acknowledged (lost ones included: they will be resent).
    unacked_bytes: u64,
    /// Packets sent, not acknowledged and not declared lost (what the window limits).
    in_flight_pkts: usize,
    /// Bytes of messages accepted and not yet fully acknowledged (backpressure).
    queued_bytes: u64,
}

impl SendState {
    /// Accepts a message; returns its id on `stream`.
    pub(crate) fn push_message(&mut self, stream: StreamId, data: Chunks) -> MessageId {
        let next = self.next_message.entry(stream).or_insert(0);
        let id = *next;
        *next += 1;
        let len = data.len() as u64;
        self.queued_bytes += len;
        self.tracks.insert(
            (stream, id),
            Track {
                unacked_segments: 0,
                fully_cut: false,
                len,
            },
        );
        self.queue.push_back(Queued {
            stream,
            id,
            len: data.len(),
            cutter: Cutter::new(data),
        });
        id
    }

    /// Accepts a one-sided packet.
    pub(crate) fn push_one_sided(&mut self, op: OneSided) {
        self.queued_bytes += op.payload().len() as u64;
        self.one_sided.push_back(op);
    }

    /// Bytes accepted and not yet acknowledged.
    pub(crate) fn queued_bytes(&self) -> u64 {
        self.queued_bytes
    }

    /// Payload bytes sent and not acknowledged.
    pub(crate) fn unacked_bytes(&self) -> u64 {
        self.unacked_bytes
    }

    /// Packets the window counts.
    pub(crate) fn in_flight_pkts(&self) -> usize {
        self.in_flight_pkts
    }

    /// Whether any sent packet is unacknowledged (in flight or waiting to be resent).
    pub(crate) fn has_unacked(&self) -> bool {
        !self.inflight.is_empty()
    }

    /// Whether everything accepted has been sent and acknowledged.
    pub(crate) fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.one_sided.is_empty() && self.inflight.is_empty()
    }

    /// The next sequence number to be assigned.
    pub(crate) fn next_seq(&self) -> PacketSeq {
        self.next_seq
    }

    /// Credit the next new packet needs, if there is one: its payload, except that a
    /// message's first segment needs room for the whole message, since the receiver
    /// reserves that much when it sees it (a message is only started when it can finish).
    pub(crate) fn next_new_need(&self, max_payload: usize) -> Option<u64> {
        if let Some(op) = self.one_sided.front() {
            return Some(op.payload().len() as u64);
        }
        self.queue.front().map(|q| {
            let remaining = q.cutter.remaining();
            if remaining == q.len {
                q.len as u64
            } else {
                remaining.min(max_payload) as u64
            }
        })
    }

    /// Whether a packet waits for retransmission.
    pub(crate) fn has_lost(&self) -> bool {
        !self.lost.is_empty()
    }

    /// Sends the next new packet (one-sided ones first: they are small and latency
    /// sensitive). Returns its sequence number.
    pub(crate) fn send_new(&mut self, max_payload: usize, now_ns: u64) -> Option<PacketSeq> {
        let payload = if let Some(op) = self.one_sided.pop_front() {
            Payload::OneSided(op)
        } else {
            let q = self.queue.front_mut()?;
            let offset = (q.len - q.cutter.remaining()) as u32;
            let bytes = q.cutter.cut(max_payload);
            let (stream, message, message_len) = (q.stream, q.id, q.len as u32);
            let done = q.cutter.remaining() == 0;
            if let Some(t) = self.tracks.get_mut(&(stream, message)) {
                t.unacked_segments += 1;
                t.fully_cut = done;
            }
            if done {
                self.queue.pop_front();
            }
            Payload::Data {
                stream,
                message,
                message_len,
                offset,
                bytes,
            }
        };
        let len = match &payload {
            Payload::Data { bytes, .. } => bytes.len() as u64,
            Payload::OneSided(op) => op.payload().len() as u64,
        };
        self.tx_counter += 1;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.inflight.push_back(SentPacket {
            payload,
            first_tx: self.tx_counter,
            tx: self.tx_counter,
            timestamp: encode_ts(now_ns, false),
            acked: false,
            lost: false,
            len,
        });
        self.unacked_bytes += len;
        self.in_flight_pkts += 1;
        Some(seq)
    }

    /// Resends the oldest lost packet. Returns its sequence number.
    pub(crate) fn retransmit(&mut self, now_ns: u64) -> Option<PacketSeq> {
        let seq = self.lost.pop_first()?;
        self.tx_counter += 1;
        let p = &mut self.inflight[(seq - self.base) as usize];
        p.lost = false;
        p.tx = self.tx_counter;
        p.timestamp = encode_ts(now_ns, true);
        self.in_flight_pkts += 1;
        Some(seq)
    }

    /// The record of packet `seq` (which must be unacknowledged).
    pub(crate) fn packet(&self, seq: PacketSeq) -> &SentPacket {
        &self.inflight[(seq - self.base) as usize]
    }

    /// Processes an ACK.
    pub(crate) fn on_ack(
        &mut self,
        cumulative: PacketSeq,
        sacks: impl Iterator<Item = SackBlock>,
    ) -> AckOutcome {
        let mut out = AckOutcome::default();
        let cumulative = cumulative.min(self.next_seq);
        for seq in self.base..cumulative {
            self.ack_one(seq, &mut out);
        }
        for b in sacks {
            let (start, end) = (b.start.max(self.base), b.end.min(self.next_seq));
            for seq in start..end {
                self.ack_one(seq, &mut out);
            }
        }
        while self.inflight.front().is_some_and(|p| p.acked) {
            self.inflight.pop_front();
            self.base += 1;
        }

        // Duplicate ACKs: the cumulative point did not move while data is outstanding
        // (RFC 6675 counts those carrying new SACK information too).
        if cumulative > self.last_cumulative {
            self.last_cumulative = cumulative;
            self.dup_acks = 0;
        } else if !self.inflight.is_empty() {
            out.duplicate = true;
            self.dup_acks += 1;
            if self.dup_acks == DUP_THRESH {
                let max_acked = self.top_acked_tx[0];
                if let Some(p) = self.inflight.front_mut() {
                    if !p.acked && !p.lost && p.tx < max_acked {
                        p.lost = true;
                        self.in_flight_pkts -= 1;
                        self.lost.insert(self.base);
                        out.new_losses += 1;
                    }
                }
            }
        }

        // SACK-based detection: lost if DUP_THRESH packets sent later were acknowledged.
        let third = self.top_acked_tx[DUP_THRESH - 1];
        if third > 0 && out.newly_acked > 0 {
            for (i, p) in self.inflight.iter_mut().enumerate() {
                // Later sequence numbers were first sent later still: nothing beyond can
                // qualify.
                if p.first_tx >= third {
                    break;
                }
                if !p.acked && !p.lost && p.tx < third {
                    p.lost = true;
                    self.in_flight_pkts -= 1;
                    self.lost.insert(self.base + i as u64);
                    out.new_losses += 1;
                }
            }
        }
        out
    }

    fn ack_one(&mut self, seq: PacketSeq, out: &mut AckOutcome) {
        let Some(p) = self.inflight.get_mut((seq - self.base) as usize) else {
            return;
        };
        if p.acked {
            return;
        }
        p.acked = true;
        if p.lost {
            self.lost.remove(&seq);
        } else {
            self.in_flight_pkts -= 1;
        }
        self.unacked_bytes -= p.len;
        out.newly_acked += 1;
        let tx = p.tx;
        if tx > self.top_acked_tx[DUP_THRESH - 1] {
            self.top_acked_tx[DUP_THRESH - 1] = tx;
            self.top_acked_tx.sort_unstable_by(|a, b| b.cmp(a));
        }
        match &p.payload {
            Payload::Data { stream, message, .. } => {
                let key = (*stream, *message);
                if let Some(t) = self.tracks.get_mut(&key) {
                    t.unacked_segments -= 1;
                    if t.fully_cut && t.unacked_segments == 0 {
                        self.queued_bytes -= t.len;
                        self.tracks.remove(&key);
                        out.completed.push(key);
                    }
                }
            }
            Payload::OneSided(op) => self.queued_bytes -= op.payload().len() as u64,
        }
    }

    /// A retransmission timeout: every unacknowledged packet is presumed lost (SACKed ones
    /// stay acknowledged and are not resent). Returns how many were newly marked.
    pub(crate) fn on_rto(&mut self) -> usize {
        let mut n = 0;
        for (i, p) in self.inflight.iter_mut().enumerate() {
            if !p.acked && !p.lost {
                p.lost = true;
                self.lost.insert(self.base + i as u64);
                n += 1;
            }
        }
        self.in_flight_pkts = 0;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(start: u64, end: u64) -> SackBlock {
        SackBlock { start, end }
    }

    #[test]
    fn segmentation_and_completion() {
        let mut s = SendState::default();
        assert_eq!(s.push_message(7, vec![1u8; 25].into()), 0);
        assert_eq!(s.push_message(7, Chunks::default()), 1);
        let mut seqs = Vec::new();
        while let Some(seq) = s.send_new(10, 0) {
            seqs.push(seq);
        }
        assert_eq!(seqs, vec![0, 1, 2, 3]);
        assert!(
            matches!(s.packet(2).payload, Payload::Data { offset: 20, ref bytes, .. } if bytes.len() == 5)
        );
        assert!(matches!(
            s.packet(3).payload,
            Payload::Data {
                message: 1,
                message_len: 0,
                ..
            }
        ));
        let out = s.on_ack(4, std::iter::empty());
        assert_eq!(out.completed, vec![(7, 0), (7, 1)]);
        assert!(s.is_idle());
        assert_eq!(s.queued_bytes(), 0);
    }

    #[test]
    fn sack_hole_behind_three_later_packets_is_lost() {
        let mut s = SendState::default();
        s.push_message(0, vec![0u8; 100].into());
        for _ in 0..6 {
            s.send_new(10, 0);
        }
        let out = s.on_ack(1, [block(2, 4)].into_iter());
        assert_eq!(out.new_losses, 0);
        let out = s.on_ack(1, [block(2, 5)].into_iter());
        assert_eq!(out.new_losses, 1);
        assert_eq!(s.retransmit(5), Some(1));
        assert!(
            decode_echo(s.packet(1).timestamp).is_none(),
            "retransmissions are marked"
        );
        // The retransmission itself is lost once 3 packets sent after it are acked.
        for _ in 0..3 {
            s.send_new(10, 0);
        }
        let out = s.on_ack(1, [block(2, 9)].into_iter());
        assert_eq!(out.new_losses, 1);
        assert_eq!(s.on_rto(), 0, "everything else is acknowledged or already lost");
    }

    #[test]
    fn timestamps_round_trip() {
        assert_eq!(decode_echo(encode_ts(1000, false)), Some(1000));
        assert_eq!(decode_echo(encode_ts(0, false)), Some(0));
        assert_eq!(decode_echo(encode_ts(1000, true)), None);
        assert_eq!(decode_echo(0), None);
    }
}
