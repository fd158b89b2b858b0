//! [`Target`]: the remote end of one-sided operations on one flow, serving a peer's
//! requests from our registered regions.
//!
//! ```text
//!  ReadRequest ─────────▶ size ≤ max? Regions::check ─▶ Serving in the outbox ─▶ OpResponse
//!  IndirectReadRequest ─▶ Regions::resolve (table entry read once) ─▶ like Read   × n
//!  WriteRequest × n ────▶ size ≤ max? check (offset, total_len) once per op, write each
//!                         segment, OpResponse{total_len: 0} when every byte landed
//!  any refusal ─────────▶ OpError (TooLarge before the key is looked at; AccessDenied,
//!                         OutOfBounds)
//! ```
//!
//! Requests ride the flow reliably (exactly once, unordered), so a Write's segments are
//! counted to know when to acknowledge it, and its whole range is checked on the first
//! segment seen, so a refused Write writes nothing; a Write's segments are written from the
//! receive buffer into the region.
//!
//! A one-sided op larger than the engine's `max_onesided_bytes` is refused with `TooLarge`
//! (counted as `onesided_too_large`). An accepted Read is not copied when it arrives: a
//! [`Serving`] waits in the flow's outbox and cuts one packet-sized `OpResponse` at a time,
//! only while the flow holds less than [`SERVE_AHEAD`] unacknowledged bytes. A chunk is a
//! held piece of the region ([`crate::regions::RegionPiece`]), not a copy: emitting its
//! packet copies the bytes from the region (a copy-in) straight into the packet, with the
//! checksum computed in the same pass. So serving a read costs no memory of its own beyond
//! the piece handles, and one copy per byte sent. Each chunk re-checks the region (the app
//! may have unregistered it: the rest of the read becomes an `OpError`); the bytes are the
//! region's as each packet is emitted, like an RDMA read of memory its owner writes.

use std::collections::HashMap;

use pony_proto::flow::{Chunks, Flow};

use super::outbox::{Out, Outbox};
use crate::regions::Regions;
use pony_express::app::OpErrorCode;
use pony_proto::flow::OneSided;
use pony_proto::wire::{self, Kind};

/// Unacknowledged bytes a flow may hold before a [`Serving`] read cuts its next chunk: a
/// few bandwidth-delay products of a fast link (100 Gbit/s × 40 µs ≈ 500 KB), far below
/// the flow's send buffer, so a large read keeps the link busy without being buffered whole.
pub(super) const SERVE_AHEAD: u64 = 1 << 20;

/// The wire code for a local refusal (codes without a wire form never come from checks).
fn to_wire(code: OpErrorCode) -> wire::OpErrorCode {
    match code {
        OpErrorCode::AccessDenied => wire::OpErrorCode::AccessDenied,
        OpErrorCode::TooLarge => wire::OpErrorCode::TooLarge,
        _ => wire::OpErrorCode::OutOfBounds,
    }
}

/// Progress of a Write a peer is making into one of our regions.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
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
    /// Refused with `OpError(TooLarge)`: larger than `max_onesided_bytes`.
    TooLarge,
    /// A write's segment landed and more are to come, or a refused write's later segment
    /// was dropped; or the packet was not a request.
    Nothing,
}

/// The peer's Writes in progress on one flow.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Target {
    writes: HashMap<u64, InboundWrite>,
}

impl Target {
    /// Acts on request `req` whose payload is `payload` (`req`'s own is not read), queuing
    /// the answer on `out`; `mtu` sizes read responses, `max` is the largest op served.
    pub(super) fn serve(
        &mut self,
        req: OneSided,
        payload: &[u8],
        regions: &Regions,
        (mtu, max): (usize, u32),
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
                // Size first: it says nothing about our regions to a peer without a key.
                if len > max {
                    out.push_error(op, wire::OpErrorCode::TooLarge);
                    return Served::TooLarge;
                }
                let r = regions
                    .check(region, key, offset, u64::from(len))
                    .map(|_| (region, key, offset, len));
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
                // The entry is read once, here: the app may rewrite its table meanwhile.
                let r = regions
                    .resolve(table, table_key, u64::from(index))
                    .and_then(|(offset, len)| {
                        if len > max {
                            return Err(OpErrorCode::TooLarge);
                        }
                        regions.check(region, key, offset, u64::from(len))?;
                        Ok((region, key, offset, len))
                    });
                if r == Err(OpErrorCode::TooLarge) {
                    out.push_error(op, wire::OpErrorCode::TooLarge);
                    return Served::TooLarge;
                }
                respond(op, r, mtu, out)
            }
            OneSided::WriteRequest { op, total_len, .. } if total_len > max => match self.writes.get(&op) {
                // Refused on its first segment; later ones are dropped quietly.
                Some(_) => Served::Nothing,
                None => {
                    self.refuse(op, OpErrorCode::TooLarge, out);
                    Served::TooLarge
                }
            },
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

/// Answers a checked read: a [`Serving`] that cuts packet-sized OpResponses as the flow
/// drains, or an OpError.
fn respond(op: u64, r: Result<(u32, u64, u64, u32), OpErrorCode>, mtu: usize, out: &mut Outbox) -> Served {
    match r {
        Ok((region, key, offset, total_len)) => {
            out.push(Out::Serve(Serving {
                op,
                region,
                key,
                offset,
                total_len,
                at: 0,
                seg: wire::max_payload(mtu, Kind::OpResponse).max(1) as u32,
            }));
            Served::Done
        }
        Err(code) => {
            out.push_error(op, to_wire(code));
            Served::Refused
        }
    }
}

/// A read being served: which bytes, and how far it got. Lives in the flow's outbox.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct Serving {
    op: u64,
    region: u32,
    key: u64,
    offset: u64,
    total_len: u32,
    /// Bytes already handed to the flow.
    at: u32,
    /// Payload bytes per response packet.
    seg: u32,
}

/// What [`Serving::step`] did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Every response (or the final OpError) is in the flow.
    Done,
    /// More to cut once the flow drains below [`SERVE_AHEAD`] (or stops being busy).
    Wait,
    /// The flow is closed: nothing more can be sent.
    Closed,
}

impl Serving {
    /// Hands the flow response chunks while it holds less than [`SERVE_AHEAD`]
    /// unacknowledged bytes, each copied from the region into its own packet-sized buffer.
    pub(super) fn step<B: pony_proto::flow::RecvBuffers>(
        &mut self,
        flow: &mut Flow<B>,
        regions: &Regions,
    ) -> Step {
        loop {
            if flow.queued_bytes() >= SERVE_AHEAD {
                return Step::Wait;
            }
            let n = self.seg.min(self.total_len - self.at);
            let chunk = regions
                .check(
                    self.region,
                    self.key,
                    self.offset + u64::from(self.at),
                    u64::from(n),
                )
                .and_then(|span| span.piece(0, n as usize).ok_or(OpErrorCode::OutOfBounds));
            let (packet, last) = match chunk {
                Ok(piece) => (
                    OneSided::OpResponse {
                        op: self.op,
                        total_len: self.total_len,
                        payload_offset: self.at,
                        payload: Chunks::from_parts([piece]),
                    },
                    self.at + n >= self.total_len,
                ),
                // The region went away (or shrank its rights) mid-read: the rest fails.
                Err(code) => (
                    OneSided::OpError {
                        op: self.op,
                        code: to_wire(code),
                    },
                    true,
                ),
            };
            match flow.send_one_sided(packet) {
                Ok(()) if last => return Step::Done,
                Ok(()) => self.at += n,
                Err(pony_proto::flow::FlowError::Busy) => return Step::Wait,
                Err(_) => return Step::Closed,
            }
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
        let served = Target::default().serve(req, &[], regions, (1500, 16 << 20), &mut out);
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

    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Reads and writes over `max_onesided_bytes` are refused with TooLarge, before the
    /// key or the bounds are looked at (a 4 GiB read of a 4 KiB region, or of a region that
    /// is large enough), counted, and nothing is read or queued but the one OpError.
    #[test]
    fn oversized_ops_are_refused_with_too_large() {
        const MAX: u32 = 8 << 20;
        let mut regions = Regions::new();
        let small = regions
            .register_mem(1, SharedMem::create("small", 4096).unwrap())
            .unwrap();
        let large = regions
            .register_mem(1, SharedMem::create("large", 64 << 20).unwrap())
            .unwrap();
        let too_large = OneSided::OpError {
            op: 9,
            code: wire::OpErrorCode::TooLarge,
        };
        let serve = |target: &mut Target, req| {
            let mut out = Outbox::default();
            let served = target.serve(req, &[], &regions, (1500, MAX), &mut out);
            let answers: Vec<Out> = std::iter::from_fn(|| out.pop_front()).collect();
            (served, answers)
        };
        let read = |g: crate::regions::RegionGrant, key, len| OneSided::ReadRequest {
            op: 9,
            region: g.region,
            key,
            offset: 0,
            len,
        };
        for req in [
            read(small, small.key, u32::MAX),
            read(large, large.key, u32::MAX),
            read(large, large.key, MAX + 1),
            read(large, !large.key, u32::MAX),
        ] {
            let (served, answers) = serve(&mut Target::default(), req);
            assert_eq!(served, Served::TooLarge);
            assert!(matches!(&answers[..], [Out::OneSided(a)] if *a == too_large));
        }
        // A Write is refused on its first segment; its later segments are dropped.
        let mut target = Target::default();
        let write = |payload_offset| OneSided::WriteRequest {
            op: 9,
            region: large.region,
            key: large.key,
            offset: 0,
            total_len: u32::MAX,
            payload_offset,
            payload: pony_proto::flow::Chunks::EMPTY,
        };
        let (served, answers) = serve(&mut target, write(0));
        assert_eq!(served, Served::TooLarge);
        assert!(matches!(&answers[..], [Out::OneSided(a)] if *a == too_large));
        let (served, answers) = serve(&mut target, write(1400));
        assert_eq!(served, Served::Nothing);
        assert!(answers.is_empty());
        assert_eq!(regions.refusals(), Default::default(), "not region refusals");
    }

    /// Accepting a read of 64 MiB queues one `Serving`, not its bytes: nothing is copied
    /// until the flow takes chunks. Four such reads held at once leave the process's
    /// anonymous memory (the heap, not the shared regions) within 64 MiB of where it was,
    /// where a copy at request time would add 256 MiB (other tests of this binary run
    /// alongside, hence the margin).
    #[test]
    fn an_accepted_read_is_queued_not_copied() {
        let mut regions = Regions::new();
        let mem = SharedMem::create("large", 64 << 20).unwrap();
        mem.write_at(0, &[1; 4096]).unwrap();
        let g = regions.register_mem(1, mem).unwrap();
        let before = rss_kib();
        let mut outboxes = Vec::new();
        for op in 0..4 {
            let mut out = Outbox::default();
            let req = OneSided::ReadRequest {
                op,
                region: g.region,
                key: g.key,
                offset: 0,
                len: 64 << 20,
            };
            let served = Target::default().serve(req, &[], &regions, (1500, u32::MAX), &mut out);
            assert_eq!(served, Served::Done);
            outboxes.push(out);
        }
        let grown = rss_kib().saturating_sub(before);
        assert!(grown < 64 << 10, "RssAnon grew by {grown} KiB");
        for mut out in outboxes {
            assert!(matches!(out.pop_front(), Some(Out::Serve(_))));
            assert!(out.is_empty());
        }
    }
}
