//! [`Outbox`]: what waits to be handed to one flow, in order. The flow may refuse an item
//! with `Busy` (its send buffer is full); the item then stays at the front until a later
//! step. Writes are cut here into packet-sized one-sided segments (each carries its
//! `payload_offset`), since the flow carries one-sided packets whole; a read being served
//! is a [`Serving`] that cuts its responses as the flow drains (`target.rs`).

use std::collections::VecDeque;

use super::target::Serving;
use pony_express::app::Cookie;
use pony_proto::flow::{Chunks, Cutter, OneSided};
use pony_proto::wire;

/// Something waiting to be handed to a flow.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) enum Out {
    /// An app's Send.
    Message {
        stream: u32,
        data: Chunks,
        cookie: Cookie,
    },
    /// A one-sided request or response.
    OneSided(OneSided),
    /// A peer's read being served, chunk by chunk.
    Serve(Serving),
}

/// The queue of one flow.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Outbox {
    queue: VecDeque<Out>,
}

impl Outbox {
    pub(super) fn push(&mut self, out: Out) {
        self.queue.push_back(out);
    }

    /// Queues Write `op` of `data` to (`region`, `key`, `offset`) as `WriteRequest`
    /// segments of at most `seg` bytes: at least one, so an empty Write is still checked
    /// and answered.
    pub(super) fn push_write(
        &mut self,
        op: u64,
        (region, key, offset): (u32, u64, u64),
        data: Chunks,
        seg: usize,
    ) {
        let total_len = data.len() as u32;
        let mut cutter = Cutter::new(data);
        loop {
            let payload_offset = total_len - cutter.remaining() as u32;
            self.push(Out::OneSided(OneSided::WriteRequest {
                op,
                region,
                key,
                offset,
                total_len,
                payload_offset,
                payload: cutter.cut(seg),
            }));
            if cutter.remaining() == 0 {
                break;
            }
        }
    }

    /// Queues the acknowledgement of Write `op`: an `OpResponse` with `total_len` 0.
    pub(super) fn push_write_done(&mut self, op: u64) {
        self.push(Out::OneSided(OneSided::OpResponse {
            op,
            total_len: 0,
            payload_offset: 0,
            payload: Chunks::default(),
        }));
    }

    /// Queues the refusal of request `op`.
    pub(super) fn push_error(&mut self, op: u64, code: wire::OpErrorCode) {
        self.push(Out::OneSided(OneSided::OpError { op, code }));
    }

    pub(super) fn pop_front(&mut self) -> Option<Out> {
        self.queue.pop_front()
    }

    /// Puts back an item the flow refused for now.
    pub(super) fn push_front(&mut self, out: Out) {
        self.queue.push_front(out);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Empties the queue; returns the cookies of the messages that were in it.
    pub(super) fn drain_messages(&mut self) -> impl Iterator<Item = Cookie> + '_ {
        self.queue.drain(..).filter_map(|o| match o {
            Out::Message { cookie, .. } => Some(cookie),
            Out::OneSided(_) | Out::Serve(_) => None,
        })
    }

    /// Drops the messages, keeping the one-sided packets (responses still owed to the peer).
    pub(super) fn drop_messages(&mut self) {
        self.queue.retain(|o| !matches!(o, Out::Message { .. }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(o: &mut Outbox) -> Vec<(u32, u32, usize)> {
        std::iter::from_fn(|| o.pop_front())
            .map(|out| match out {
                Out::OneSided(OneSided::WriteRequest {
                    total_len,
                    payload_offset,
                    payload,
                    ..
                })
                | Out::OneSided(OneSided::OpResponse {
                    total_len,
                    payload_offset,
                    payload,
                    ..
                }) => (total_len, payload_offset, payload.len()),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn writes_are_cut_into_segments() {
        let mut o = Outbox::default();
        o.push_write(1, (2, 3, 4), Chunks::from(vec![0u8; 25]), 10);
        assert_eq!(segments(&mut o), vec![(25, 0, 10), (25, 10, 10), (25, 20, 5)]);
        o.push_write(1, (2, 3, 4), Chunks::default(), 10);
        assert_eq!(segments(&mut o), vec![(0, 0, 0)], "an empty Write still goes");
        o.push_write_done(6);
        assert_eq!(segments(&mut o), vec![(0, 0, 0)]);
    }

    #[test]
    fn messages_are_dropped_or_drained_apart_from_one_sided() {
        let mut o = Outbox::default();
        let msg = |cookie| Out::Message {
            stream: 0,
            data: Chunks::default(),
            cookie,
        };
        o.push(msg(1));
        o.push_error(9, wire::OpErrorCode::AccessDenied);
        o.push(msg(2));
        assert_eq!(o.drain_messages().collect::<Vec<_>>(), vec![1, 2]);
        assert!(o.is_empty());
        o.push(msg(3));
        o.push_error(9, wire::OpErrorCode::AccessDenied);
        o.drop_messages();
        assert!(matches!(
            o.pop_front(),
            Some(Out::OneSided(OneSided::OpError { op: 9, .. }))
        ));
        assert!(o.is_empty());
    }
}
