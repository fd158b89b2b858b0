//! The receiving half of a flow: which packets arrived, message reassembly per stream, and
//! when to acknowledge.
//!
//! * [`Received`] is the set of packet sequence numbers seen: everything below `cumulative`
//!   plus disjoint ranges above it. Seeing a number twice is how duplicates are recognised
//!   (retransmissions reuse the original sequence number, so a duplicate is dropped and
//!   re-acknowledged; its payload never reaches reassembly twice).
//! * [`Reassembly`] copies each segment once, into a buffer of the message's full length
//!   taken from the flow's [`RecvBuffers`] on the message's first segment, and counts bytes; a message is complete when all its bytes are there. Complete messages
//!   are handed out per stream in message-id order; each stream is independent, so a missing
//!   segment on one stream never holds back another (no head-of-line blocking across
//!   streams).
//! * [`AckState`] implements delayed ACKs: every `ack_every`-th packet is acknowledged at
//!   once, others after at most `delayed_ack`; anything out of order (a hole, a duplicate) is
//!   acknowledged immediately so the sender's loss detection sees it quickly.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::buffers::{MessageBuf, RecvBuffers};
use crate::wire::heapless_sacks::Sacks;
use crate::wire::{MessageId, PacketSeq, SackBlock, StreamId, MAX_SACK_BLOCKS};

/// Packets this far beyond the cumulative ack are refused, which bounds the range set (a
/// well-behaved sender is limited far below this by its window and the receiver's credit).
pub(crate) const MAX_SEQ_AHEAD: u64 = 1 << 20;

/// The set of received packet sequence numbers.
#[derive(Debug, Default)]
pub(crate) struct Received {
    cumulative: PacketSeq,
    /// start -> end (half-open) of received ranges above `cumulative`, disjoint and not
    /// adjacent.
    ranges: BTreeMap<PacketSeq, PacketSeq>,
    /// Recently received out-of-order numbers, newest first, to order SACK blocks (RFC 2018:
    /// the block holding the newest packet goes first).
    recent: VecDeque<PacketSeq>,
}

impl Received {
    /// Every packet below this was received.
    pub(crate) fn cumulative(&self) -> PacketSeq {
        self.cumulative
    }

    /// Whether `seq` was already received.
    pub(crate) fn contains(&self, seq: PacketSeq) -> bool {
        if seq < self.cumulative {
            return true;
        }
        self.ranges
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, &end)| seq < end)
    }

    /// Records `seq` (which must not be [`contains`](Self::contains)ed). Returns whether it
    /// arrived in order (extended the cumulative point without leaving a hole behind).
    pub(crate) fn insert(&mut self, seq: PacketSeq) -> bool {
        debug_assert!(!self.contains(seq));
        let had_holes = !self.ranges.is_empty();
        if seq == self.cumulative {
            self.cumulative += 1;
            // Swallow a range that now touches the cumulative point.
            if let Some(end) = self.ranges.remove(&self.cumulative) {
                self.cumulative = end;
            }
            self.recent.retain(|&s| s >= self.cumulative);
            // Filling a hole is news the sender wants at once (RFC 5681 section 4.2).
            return !had_holes;
        }
        let mut start = seq;
        let mut end = seq + 1;
        if let Some((&s, &e)) = self.ranges.range(..seq).next_back() {
            if e == seq {
                start = s;
                self.ranges.remove(&s);
            }
        }
        if let Some(e) = self.ranges.remove(&end) {
            end = e;
        }
        self.ranges.insert(start, end);
        self.recent.retain(|&s| s != seq);
        self.recent.push_front(seq);
        self.recent.truncate(MAX_SACK_BLOCKS * 2);
        false
    }

    /// Up to [`MAX_SACK_BLOCKS`] blocks above the cumulative point, the most recently
    /// changed first, then the highest others.
    pub(crate) fn sacks(&self) -> Sacks {
        let mut out: Vec<SackBlock> = Vec::with_capacity(MAX_SACK_BLOCKS);
        let block_of = |seq: PacketSeq| {
            self.ranges
                .range(..=seq)
                .next_back()
                .filter(|(_, &e)| seq < e)
                .map(|(&start, &end)| SackBlock { start, end })
        };
        let recent = self.recent.iter().filter_map(|&s| block_of(s));
        let highest = self
            .ranges
            .iter()
            .rev()
            .map(|(&start, &end)| SackBlock { start, end });
        for b in recent.chain(highest) {
            if out.len() == MAX_SACK_BLOCKS {
                break;
            }
            if !out.contains(&b) {
                out.push(b);
            }
        }
        let mut sacks = Sacks::default();
        for b in out {
            sacks.push(b);
        }
        sacks
    }
}

/// One message being reassembled.
#[derive(Debug)]
struct Partial<B> {
    data: B,
    have: u64,
}

/// Per-stream receive state.
#[derive(Debug)]
struct StreamRx<B> {
    /// The next message id to hand to the application.
    next: MessageId,
    partial: HashMap<MessageId, Partial<B>>,
    /// Complete messages waiting for an earlier one of the same stream.
    ready: BTreeMap<MessageId, B>,
}

impl<B> Default for StreamRx<B> {
    fn default() -> Self {
        StreamRx {
            next: 0,
            partial: HashMap::new(),
            ready: BTreeMap::new(),
        }
    }
}

/// Why a segment was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SegmentError {
    /// Offsets or lengths that do not add up, or a message over the configured maximum.
    Malformed,
    /// The first segment of a message found no buffer for it (try again later).
    NoBuffer,
}

/// One received message segment (the fields of a Data packet).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Segment<'a> {
    pub(crate) stream: StreamId,
    pub(crate) message: MessageId,
    pub(crate) message_len: u32,
    pub(crate) offset: u32,
    pub(crate) payload: &'a [u8],
}

/// Reassembly of all streams.
#[derive(Debug)]
pub(crate) struct Reassembly<B> {
    streams: HashMap<StreamId, StreamRx<B>>,
    /// Bytes allocated for partial messages. A message's buffer is allocated whole on its
    /// first segment, so this, not the bytes received, is what a peer can make us hold; the
    /// flow refuses new messages beyond a cap ([`Self::admits`]).
    reserved: usize,
    /// Bytes received into those partial messages.
    filled: usize,
}

impl<B> Default for Reassembly<B> {
    fn default() -> Self {
        Reassembly {
            streams: HashMap::new(),
            reserved: 0,
            filled: 0,
        }
    }
}

impl<B: MessageBuf> Reassembly<B> {
    /// Whether a segment of `message` on `stream` (`message_len` bytes in all) fits under
    /// `cap` reserved bytes. Segments of a message already being reassembled always fit, so
    /// a sender that respects credit always makes progress; only a new message is refused,
    /// and its sender retransmits it once earlier messages completed.
    pub(crate) fn admits(&self, stream: StreamId, message: MessageId, message_len: u32, cap: usize) -> bool {
        let started = self
            .streams
            .get(&stream)
            .is_some_and(|rx| rx.partial.contains_key(&message));
        started || self.reserved + message_len as usize <= cap
    }

    /// Bytes allocated for partial messages.
    pub(crate) fn reserved(&self) -> usize {
        self.reserved
    }

    /// Bytes partial messages have room for and have not received yet.
    pub(crate) fn unfilled(&self) -> usize {
        self.reserved.saturating_sub(self.filled)
    }

    /// Adds one segment, taking the message's buffer from `bufs` if it is the first seen;
    /// appends messages that became deliverable, in order, to `out`.
    pub(crate) fn on_segment(
        &mut self,
        seg: Segment<'_>,
        max_len: usize,
        bufs: &mut impl RecvBuffers<Buf = B>,
        out: &mut Vec<(StreamId, MessageId, B)>,
    ) -> Result<(), SegmentError> {
        let Segment {
            stream,
            message,
            message_len,
            offset,
            payload,
        } = seg;
        let len = message_len as usize;
        let end = offset as usize + payload.len();
        if len > max_len || end > len {
            return Err(SegmentError::Malformed);
        }
        let rx = self.streams.entry(stream).or_default();
        if message < rx.next || rx.ready.contains_key(&message) {
            // Already delivered: only a misbehaving peer resends under a new sequence number.
            return Err(SegmentError::Malformed);
        }
        let partial = match rx.partial.entry(message) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                let data = bufs.alloc(len).ok_or(SegmentError::NoBuffer)?;
                self.reserved += len;
                v.insert(Partial { data, have: 0 })
            }
        };
        if partial.data.len() != len {
            return Err(SegmentError::Malformed);
        }
        partial.data.write_at(offset as usize, payload);
        partial.have += payload.len() as u64;
        self.filled += payload.len();
        if partial.have >= len as u64 {
            let Some(done) = rx.partial.remove(&message) else {
                return Ok(());
            };
            // `have`, not the length: a hostile peer's overlapping segments count twice.
            self.filled -= done.have as usize;
            let done = done.data;
            self.reserved -= done.len();
            rx.ready.insert(message, done);
            while let Some(data) = rx.ready.remove(&rx.next) {
                out.push((stream, rx.next, data));
                rx.next += 1;
            }
        }
        Ok(())
    }
}

/// When to send an ACK, and what timestamp to echo in it.
#[derive(Debug)]
pub(crate) struct AckState {
    ack_every: u32,
    delayed_ack: Duration,
    /// Packets received since the last ACK.
    unacked: u32,
    /// Send an ACK at the next opportunity.
    now: bool,
    /// Send an ACK at this time at the latest.
    deadline: Option<Instant>,
    /// Timestamp of the packet that will be echoed and when it arrived.
    echo: Option<(u64, Instant)>,
}

impl AckState {
    pub(crate) fn new(ack_every: u32, delayed_ack: Duration) -> Self {
        AckState {
            ack_every: ack_every.max(1),
            delayed_ack,
            unacked: 0,
            now: false,
            deadline: None,
            echo: None,
        }
    }

    /// A reliable packet arrived (new or duplicate). `immediate` asks for an ACK right away
    /// (out of order, duplicate, dropped for lack of buffer).
    pub(crate) fn on_packet(&mut self, timestamp: u64, immediate: bool, now: Instant) {
        self.echo = Some((timestamp, now));
        self.unacked += 1;
        if immediate || self.unacked >= self.ack_every {
            self.now = true;
        } else if self.deadline.is_none() {
            self.deadline = Some(now + self.delayed_ack);
        }
    }

    /// Ask for an ACK without a packet to echo (a window update).
    pub(crate) fn request(&mut self) {
        self.now = true;
    }

    /// Whether an ACK should go out at `now`.
    pub(crate) fn due(&self, now: Instant) -> bool {
        self.now || self.deadline.is_some_and(|d| d <= now)
    }

    /// The delayed-ACK timer.
    pub(crate) fn timeout(&self) -> Option<Instant> {
        if self.now {
            None
        } else {
            self.deadline
        }
    }

    /// An ACK is being sent: returns the timestamp to echo, advanced by how long the ACK was
    /// held so the sender measures the network, not our delayed-ACK timer (kept even, since
    /// the low bit is the sender's retransmission mark). 0 means "no sample".
    pub(crate) fn on_sent(&mut self, now: Instant) -> u64 {
        self.unacked = 0;
        self.now = false;
        self.deadline = None;
        match self.echo.take() {
            Some((ts, at)) => {
                let held = now.saturating_duration_since(at).as_nanos() as u64;
                ts.wrapping_add(held & !1)
            }
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::buffers::HeapBuffers;

    #[test]
    fn received_set_and_sack_order() {
        let mut r = Received::default();
        assert!(r.insert(0));
        assert!(!r.insert(2));
        assert!(!r.insert(5));
        assert!(!r.insert(3));
        assert_eq!(r.cumulative(), 1);
        assert!(r.contains(0) && r.contains(2) && r.contains(3) && r.contains(5));
        assert!(!r.contains(1) && !r.contains(4));
        let sacks: Vec<_> = r.sacks().iter().collect();
        // 3 arrived last: its block (2..4) first
        assert_eq!(
            sacks,
            vec![SackBlock { start: 2, end: 4 }, SackBlock { start: 5, end: 6 }]
        );
        r.insert(1);
        assert_eq!(r.cumulative(), 4);
        r.insert(4);
        assert_eq!(r.cumulative(), 6);
        assert!(r.sacks().is_empty());
    }

    fn seg(
        re: &mut Reassembly<Vec<u8>>,
        stream: StreamId,
        message: MessageId,
        message_len: u32,
        offset: u32,
        payload: &[u8],
        out: &mut Vec<(StreamId, MessageId, Vec<u8>)>,
    ) -> Result<(), SegmentError> {
        let s = Segment {
            stream,
            message,
            message_len,
            offset,
            payload,
        };
        re.on_segment(s, 100, &mut HeapBuffers, out)
    }

    #[test]
    fn reassembly_in_order_per_stream_independent_across() {
        let mut re = Reassembly::<Vec<u8>>::default();
        let mut out = Vec::new();
        // stream 1, message 0 second half only
        seg(&mut re, 1, 0, 4, 2, b"cd", &mut out).unwrap();
        // stream 1 message 1 complete: held back behind message 0
        seg(&mut re, 1, 1, 1, 0, b"x", &mut out).unwrap();
        // stream 2 message 0 complete: delivered at once
        seg(&mut re, 2, 0, 2, 0, b"zz", &mut out).unwrap();
        assert_eq!(out, vec![(2, 0, b"zz".to_vec())]);
        out.clear();
        seg(&mut re, 1, 0, 4, 0, b"ab", &mut out).unwrap();
        assert_eq!(out, vec![(1, 0, b"abcd".to_vec()), (1, 1, b"x".to_vec())]);
        assert_eq!(
            seg(&mut re, 1, 5, 4, 3, b"ab", &mut out),
            Err(SegmentError::Malformed)
        );
        // empty messages complete at once
        out.clear();
        seg(&mut re, 3, 0, 0, 0, b"", &mut out).unwrap();
        assert_eq!(out, vec![(3, 0, Vec::new())]);
        assert_eq!(re.reserved(), 0, "nothing partial is left");
    }

    #[test]
    fn reservations_are_capped_for_new_messages_only() {
        let mut re = Reassembly::<Vec<u8>>::default();
        let mut out = Vec::new();
        // A first segment of a 60-byte message reserves all 60.
        assert!(re.admits(1, 0, 60, 100));
        seg(&mut re, 1, 0, 60, 0, b"a", &mut out).unwrap();
        assert_eq!((re.reserved(), re.unfilled()), (60, 59));
        // Another new 60-byte message would exceed the cap of 100: refused...
        assert!(!re.admits(2, 0, 60, 100));
        // ...but the started one keeps its admission, and completing it frees the room.
        assert!(re.admits(1, 0, 60, 100));
        seg(&mut re, 1, 0, 60, 1, &[b'b'; 59], &mut out).unwrap();
        assert_eq!(re.reserved(), 0);
        assert!(re.admits(2, 0, 60, 100));
    }
}
