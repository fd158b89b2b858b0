//! [`Reassembly`]: messages put back together from their segments, per stream.
//!
//! Each segment is copied once, into a buffer of the message's full length taken from the
//! flow's [`RecvBuffers`] on the message's first segment; bytes are counted, and a message
//! is complete when all of them are there. Complete messages are handed out per stream in
//! message-id order; each stream is independent, so a missing segment on one stream never
//! holds back another (no head-of-line blocking across streams). What partial messages
//! reserve is bounded ([`Reassembly::admits`]), since a peer can make us allocate a whole
//! message with its first segment.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

use crate::flow::buffers::{MessageBuf, RecvBuffers};
use crate::wire::{MessageId, StreamId};

/// One message being reassembled.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Partial<B> {
    data: B,
    have: u64,
}

/// Per-stream receive state.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, serde::Serialize, serde::Deserialize)]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::buffers::HeapBuffers;

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
