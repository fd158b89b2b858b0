//! [`Target`]: the remote end of one-sided operations on one flow, serving a peer's
//! requests from our registered regions.
//!
//! ```text
//!  ReadRequest ─────────▶ Regions::check ────▶ OpResponse × n (each ≤ one packet) or OpError
//!  IndirectReadRequest ─▶ Regions::indirect ─▶ like Read
//!  WriteRequest × n ────▶ check (offset, total_len) once per op, write each segment,
//!                         OpResponse{total_len: 0} when every byte landed, or OpError
//! ```
//!
//! Requests ride the flow reliably (exactly once, unordered), so a Write's segments are
//! counted to know when to acknowledge it, and its whole range is checked on the first
//! segment seen, so a refused Write writes nothing. A served Read's bytes are copied out of
//! the region when the request arrives (a region is the app's live memory, only ever read
//! by copying); a Write's segments are written from the receive buffer into the region.

use std::collections::HashMap;

use bytes::Bytes;

use super::outbox::Outbox;
use crate::regions::Regions;
use pony_express::app::OpErrorCode;
use pony_proto::flow::OneSided;
use pony_proto::wire::{self, Kind};

/// The wire code for a local refusal (codes without a wire form never come from checks).
fn to_wire(code: OpErrorCode) -> wire::OpErrorCode {
    match code {
        OpErrorCode::AccessDenied => wire::OpErrorCode::AccessDenied,
        OpErrorCode::TooLarge => wire::OpErrorCode::TooLarge,
        _ => wire::OpErrorCode::OutOfBounds,
    }
}

/// Progress of a Write a peer is making into one of our regions.
#[derive(Debug, Clone, Copy)]
enum InboundWrite {
    Progress(u64),
    Refused,
}

/// What became of a request, for the engine's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Served {
    /// Answered (a read, or the last segment of a write).
    Done,
    /// Refused with an `OpError`.
    Refused,
    /// A write's segment landed and more are to come, or a refused write's later segment
    /// was dropped; or the packet was not a request.
    Nothing,
}

/// The peer's Writes in progress on one flow.
#[derive(Debug, Default)]
pub(super) struct Target {
    writes: HashMap<u64, InboundWrite>,
}

impl Target {
    /// Acts on request `req` whose payload is `payload` (`req`'s own is not read), queuing
    /// the answer on `out`; `mtu` sizes read responses.
    pub(super) fn serve(
        &mut self,
        req: OneSided,
        payload: &[u8],
        regions: &Regions,
        mtu: usize,
        out: &mut Outbox,
    ) -> Served {
        match req {
            OneSided::ReadRequest {
                op,
                region,
                key,
                offset,
                len,
            } => {
                let r = regions
                    .check(region, key, offset, u64::from(len))
                    .map(|s| s.to_vec());
                respond(op, r, mtu, out)
            }
            OneSided::IndirectReadRequest {
                op,
                table,
                table_key,
                index,
                region,
                key,
            } => {
                let r = regions
                    .indirect(table, table_key, u64::from(index), region, key)
                    .map(|s| s.to_vec());
                respond(op, r, mtu, out)
            }
            OneSided::WriteRequest {
                op,
                region,
                key,
                offset,
                total_len,
                payload_offset,
                ..
            } => self.write(
                op,
                (region, key, offset),
                (total_len, payload_offset),
                payload,
                regions,
                out,
            ),
            OneSided::OpResponse { .. } | OneSided::OpError { .. } => Served::Nothing,
        }
    }

    /// One segment of a peer's Write. The whole range is checked on the first segment
    /// seen (segments are unordered), so a refused Write writes nothing; the op is
    /// acknowledged once all `total_len` bytes have landed.
    fn write(
        &mut self,
        op: u64,
        (region, key, offset): (u32, u64, u64),
        (total_len, payload_offset): (u32, u32),
        payload: &[u8],
        regions: &Regions,
        out: &mut Outbox,
    ) -> Served {
        let state = match self.writes.get(&op) {
            Some(InboundWrite::Refused) => return Served::Nothing,
            Some(&s) => s,
            None => match regions.check(region, key, offset, u64::from(total_len)) {
                Ok(_) => InboundWrite::Progress(0),
                Err(code) => return self.refuse(op, code, out),
            },
        };
        let InboundWrite::Progress(got) = state else {
            return Served::Nothing;
        };
        let end = u64::from(payload_offset) + payload.len() as u64;
        let landed = if end <= u64::from(total_len) {
            regions
                .check(
                    region,
                    key,
                    offset + u64::from(payload_offset),
                    payload.len() as u64,
                )
                .and_then(|span| span.write_from(payload))
        } else {
            Err(OpErrorCode::OutOfBounds)
        };
        if let Err(code) = landed {
            return self.refuse(op, code, out);
        }
        let got = got + payload.len() as u64;
        if got >= u64::from(total_len) {
            self.writes.remove(&op);
            out.push_write_done(op);
            Served::Done
        } else {
            self.writes.insert(op, InboundWrite::Progress(got));
            Served::Nothing
        }
    }

    fn refuse(&mut self, op: u64, code: OpErrorCode, out: &mut Outbox) -> Served {
        // Remembered so that the op's later segments are dropped without more refusals.
        self.writes.insert(op, InboundWrite::Refused);
        out.push_error(op, to_wire(code));
        Served::Refused
    }
}

/// Answers a read: the bytes in packet-sized OpResponses, or an OpError.
fn respond(op: u64, r: Result<Vec<u8>, OpErrorCode>, mtu: usize, out: &mut Outbox) -> Served {
    match r {
        Ok(d) => {
            let seg = wire::max_payload(mtu, Kind::OpResponse).max(1);
            out.push_read_response(op, Bytes::from(d), seg);
            Served::Done
        }
        Err(code) => {
            out.push_error(op, to_wire(code));
            Served::Refused
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::outbox::Out;
    use snap_ipc::SharedMem;

    /// What the peer gets back for `req`: exactly one packet's content.
    fn answer(regions: &Regions, req: OneSided) -> (Served, OneSided) {
        let mut out = Outbox::default();
        let served = Target::default().serve(req, &[], regions, 1500, &mut out);
        let Some(Out::OneSided(answer)) = out.pop_front() else {
            panic!("no answer");
        };
        assert!(out.is_empty(), "one packet");
        (served, answer)
    }

    /// A peer probing region ids with a wrong key gets the same answer whether the id
    /// exists or not, for reads, indirect reads and writes; both are counted as
    /// `access_denied`.
    #[test]
    fn probing_ids_without_the_key_learns_nothing() {
        let mut regions = Regions::new();
        let g = regions
            .register_mem(1, SharedMem::create("r", 4096).unwrap())
            .unwrap();
        let missing = g.region + 7;
        let read = |region| OneSided::ReadRequest {
            op: 9,
            region,
            key: g.key ^ 0x55,
            offset: 0,
            len: 64,
        };
        let indirect = |table| OneSided::IndirectReadRequest {
            op: 9,
            table,
            table_key: g.key ^ 1,
            index: 0,
            region: table,
            key: g.key,
        };
        let write = |region| OneSided::WriteRequest {
            op: 9,
            region,
            key: !g.key,
            offset: 0,
            total_len: 3,
            payload_offset: 0,
            payload: pony_proto::flow::Chunks::EMPTY,
        };
        let denied = OneSided::OpError {
            op: 9,
            code: wire::OpErrorCode::AccessDenied,
        };
        for make in [&read as &dyn Fn(u32) -> OneSided, &indirect, &write] {
            let existing = answer(&regions, make(g.region));
            let absent = answer(&regions, make(missing));
            assert_eq!(existing, absent);
            assert_eq!(existing, (Served::Refused, denied.clone()));
        }
        assert_eq!(regions.refusals().access_denied, 6);
        assert_eq!(regions.refusals().out_of_bounds, 0);
    }
}
