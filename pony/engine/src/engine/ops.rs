//! Flow events → app completions, and the one-sided operations at both ends.
//!
//! ```text
//!  requester engine                                   remote engine
//!  Read{region,key,offset,len} ─ ReadRequest ───────▶ Regions::check ─▶ OpResponse × n
//!  (gathers by payload_offset, ◀── OpResponse … ──────  (each ≤ one packet) or OpError
//!   ReadDone when all arrived)
//!  Write ─ WriteRequest × n (payload_offset) ───────▶ check (offset, total_len) once per
//!  WriteDone ◀── OpResponse{total_len: 0} ──────────  op, write each segment, answer at end
//!  IndirectRead ─ IndirectReadRequest ──────────────▶ Regions::indirect ─▶ like Read
//! ```
//!
//! Requests and responses ride the flow reliably (exactly once, unordered), so the
//! requester counts bytes to know it has everything, and the remote counts a Write's
//! bytes to know when to acknowledge it. A refusal (unknown region, bad key, out of
//! bounds) is counted on the remote ([`super::PonyStats::ops_refused`] and the region
//! registry's [`crate::app::Refusals`]) and completes the requester's op with the error.

use bytes::Bytes;

use super::{FlowEntry, InboundWrite, OpKind, Origin, Out, PonyEngine};
use pony_express::app::{Completion, OpErrorCode};
use pony_express::pool::RecvChain;
use pony_proto::flow::{Chunks, FailReason, FlowError, FlowEvent, OneSided};
use pony_proto::wire::{self, Kind};

/// The completion code for a remote refusal.
fn from_wire(code: wire::OpErrorCode) -> OpErrorCode {
    match code {
        wire::OpErrorCode::NoSuchRegion => OpErrorCode::UnknownRegion,
        wire::OpErrorCode::BadKey => OpErrorCode::BadKey,
        wire::OpErrorCode::OutOfBounds => OpErrorCode::OutOfBounds,
        wire::OpErrorCode::TooLarge => OpErrorCode::TooLarge,
    }
}

/// The wire code for a local refusal (codes without a wire form never come from checks).
fn to_wire(code: OpErrorCode) -> wire::OpErrorCode {
    match code {
        OpErrorCode::UnknownRegion => wire::OpErrorCode::NoSuchRegion,
        OpErrorCode::BadKey => wire::OpErrorCode::BadKey,
        OpErrorCode::TooLarge => wire::OpErrorCode::TooLarge,
        _ => wire::OpErrorCode::OutOfBounds,
    }
}

impl PonyEngine {
    /// Takes the flow's events and turns them into completions; returns how many.
    pub(super) fn flow_events(&mut self, id: u32, e: &mut FlowEntry) -> u32 {
        let mut n = 0;
        loop {
            let Some(ev) = e.flow.poll_event() else { return n };
            n += 1;
            match ev {
                FlowEvent::Connected { .. } => {
                    e.connected = true;
                    let Some(owner) = e.owner else {
                        e.flow.close();
                        continue;
                    };
                    let c = match e.origin {
                        Origin::Opened(cookie) => Completion::FlowOpened {
                            cookie,
                            result: Ok(u64::from(id)),
                        },
                        Origin::Accepted(cookie) => Completion::FlowAccepted {
                            cookie,
                            flow: u64::from(id),
                        },
                    };
                    self.complete(owner, c);
                }
                FlowEvent::MessageReceived { stream, data, .. } => self.deliver(id, e, stream, data),
                FlowEvent::MessageSent { stream, message } => {
                    if let (Some(cookie), Some(owner)) = (e.sends.remove(&(stream, message)), e.owner) {
                        self.complete(owner, Completion::Sent { cookie });
                    }
                }
                FlowEvent::OneSided(op) => {
                    // Not taken: `route` acts on one-sided packets in place. A flow fed by
                    // `Flow::handle` would queue them with an owned payload.
                    let payload = op.payload().to_vec();
                    self.one_sided(id, e, op, &payload);
                }
                FlowEvent::Closed => self.end_flow(id, e, OpErrorCode::FlowClosed),
                FlowEvent::Failed(reason) => {
                    self.stats.flows_failed += 1;
                    log::info!("{}: flow {id} failed: {reason:?}", self.name);
                    let code = match reason {
                        FailReason::ProtocolViolation => OpErrorCode::Internal,
                        FailReason::NoListener => OpErrorCode::NoListener,
                        FailReason::NoCommonVersion { .. } => OpErrorCode::VersionMismatch,
                        _ => OpErrorCode::Unreachable,
                    };
                    self.end_flow(id, e, code);
                }
            }
        }
    }

    /// Hands a message, already in the owner's pool, to the owner.
    fn deliver(&mut self, id: u32, e: &FlowEntry, stream: u32, data: RecvChain) {
        // Without an owner the message is dropped, which releases its buffers.
        if let Some(s) = e.owner.and_then(|o| self.sessions.get_mut(&o)) {
            s.deliver_chain(u64::from(id), stream, data);
            self.stats.messages_delivered += 1;
        }
    }

    /// The flow closed or failed: every operation still waiting on it completes with
    /// `code`, then the owner hears that the flow is gone (or that it never opened).
    fn end_flow(&mut self, id: u32, e: &mut FlowEntry, code: OpErrorCode) {
        let ops: Vec<u64> = self
            .ops
            .iter()
            .filter(|(_, o)| o.flow == id)
            .map(|(k, _)| *k)
            .collect();
        for op in ops {
            self.fail_op(op, code);
        }
        let Some(owner) = e.owner else { return };
        let mut cookies: Vec<_> = e.sends.drain().map(|(_, c)| c).collect();
        cookies.extend(e.outbox.drain(..).filter_map(|o| match o {
            Out::Message { cookie, .. } => Some(cookie),
            Out::OneSided(_) => None,
        }));
        for cookie in cookies {
            let detail = u64::from(id);
            self.complete(owner, Completion::Error { cookie, code, detail });
        }
        let c = match (e.connected, e.origin) {
            // Why it never opened (NoListener, …); closed before it connected stays Unreachable.
            (false, Origin::Opened(cookie)) => Completion::FlowOpened {
                cookie,
                result: Err(match code {
                    OpErrorCode::FlowClosed => OpErrorCode::Unreachable,
                    code => code,
                }),
            },
            _ => Completion::FlowClosed { flow: u64::from(id) },
        };
        self.complete(owner, c);
    }

    /// Completes pending op `op` with an error, returning its chain to the app.
    fn fail_op(&mut self, op: u64, code: OpErrorCode) {
        let Some(p) = self.ops.remove(&op) else { return };
        match p.kind {
            OpKind::Read { chain, .. } => self.read_done(p.session, Some(chain), p.cookie, Err(code)),
            OpKind::Write => self.complete(
                p.session,
                Completion::WriteDone {
                    cookie: p.cookie,
                    result: Err(code),
                },
            ),
        }
    }

    /// Hands queued messages and one-sided packets to the flow until it is full; closes
    /// the flow once all of them are in, if the owner asked to.
    pub(super) fn drain_outbox(&mut self, id: u32, e: &mut FlowEntry) {
        self.fill_flow(id, e);
        if e.close_when_drained && e.outbox.is_empty() {
            e.flow.close();
        }
    }

    fn fill_flow(&mut self, id: u32, e: &mut FlowEntry) {
        while let Some(out) = e.outbox.pop_front() {
            let result = match &out {
                Out::Message { stream, data, cookie } => {
                    e.flow.send_message(*stream, data.clone()).map(|m| {
                        e.sends.insert((*stream, m), *cookie);
                    })
                }
                Out::OneSided(op) => e.flow.send_one_sided(op.clone()),
            };
            match result {
                Ok(()) => {}
                Err(FlowError::Busy) => {
                    e.outbox.push_front(out);
                    return;
                }
                Err(err) => {
                    // Closed or too large: the item can never go; say so.
                    let code = match err {
                        FlowError::TooLarge { .. } => OpErrorCode::TooLarge,
                        _ => OpErrorCode::FlowClosed,
                    };
                    match out {
                        Out::Message { cookie, .. } => {
                            if let Some(owner) = e.owner {
                                let detail = u64::from(id);
                                self.complete(owner, Completion::Error { cookie, code, detail });
                            }
                        }
                        Out::OneSided(op) => self.our_op_failed(&op, code),
                    }
                }
            }
        }
    }

    /// A request of ours could not be sent: fail its op (responses are just dropped).
    fn our_op_failed(&mut self, op: &OneSided, code: OpErrorCode) {
        match *op {
            OneSided::ReadRequest { op, .. }
            | OneSided::IndirectReadRequest { op, .. }
            | OneSided::WriteRequest { op, .. } => self.fail_op(op, code),
            _ => {}
        }
    }

    /// Acts on a one-sided packet whose payload is `payload` (`op`'s own is not read).
    pub(super) fn one_sided(&mut self, id: u32, e: &mut FlowEntry, op: OneSided, payload: &[u8]) {
        match op {
            OneSided::ReadRequest {
                op,
                region,
                key,
                offset,
                len,
            } => {
                let r = self
                    .regions
                    .check(region, key, offset, u64::from(len))
                    .map(|s| s.to_vec());
                self.respond(e, op, r);
            }
            OneSided::IndirectReadRequest {
                op,
                table,
                table_key,
                index,
                region,
                key,
            } => {
                let r = self
                    .regions
                    .indirect(table, table_key, u64::from(index), region, key)
                    .map(|s| s.to_vec());
                self.respond(e, op, r);
            }
            OneSided::WriteRequest {
                op,
                region,
                key,
                offset,
                total_len,
                payload_offset,
                ..
            } => self.inbound_write(e, op, (region, key, offset), total_len, payload_offset, payload),
            OneSided::OpResponse {
                op,
                total_len,
                payload_offset,
                ..
            } => self.response(id, op, total_len, payload_offset, payload),
            OneSided::OpError { op, code } => match self.ops.get(&op) {
                Some(p) if p.flow == id => {
                    self.stats.ops_failed_remote += 1;
                    self.fail_op(op, from_wire(code));
                }
                _ => self.stats.stray_responses += 1,
            },
        }
    }

    /// Answers a read: the bytes in packet-sized OpResponses, or an OpError.
    fn respond(&mut self, e: &mut FlowEntry, op: u64, r: Result<Vec<u8>, OpErrorCode>) {
        let data = match r {
            Ok(d) => Bytes::from(d),
            Err(code) => {
                self.stats.ops_refused += 1;
                let code = to_wire(code);
                e.outbox.push_back(Out::OneSided(OneSided::OpError { op, code }));
                return;
            }
        };
        self.stats.ops_served += 1;
        let seg = wire::max_payload(self.cfg.flow.mtu, Kind::OpResponse).max(1);
        let total_len = data.len() as u32;
        let mut at = 0;
        loop {
            let end = (at + seg).min(data.len());
            e.outbox.push_back(Out::OneSided(OneSided::OpResponse {
                op,
                total_len,
                payload_offset: at as u32,
                payload: data.slice(at..end).into(),
            }));
            at = end;
            if at >= data.len() {
                break;
            }
        }
    }

    /// One segment of a peer's Write. The whole range is checked on the first segment
    /// seen (segments are unordered), so a refused Write writes nothing; the op is
    /// acknowledged once all `total_len` bytes have landed.
    fn inbound_write(
        &mut self,
        e: &mut FlowEntry,
        op: u64,
        (region, key, offset): (u32, u64, u64),
        total_len: u32,
        payload_offset: u32,
        payload: &[u8],
    ) {
        let state = match e.inbound_writes.get(&op) {
            Some(InboundWrite::Refused) => return,
            Some(&s) => s,
            None => match self.regions.check(region, key, offset, u64::from(total_len)) {
                Ok(_) => InboundWrite::Progress(0),
                Err(code) => {
                    self.refuse_write(e, op, code);
                    return;
                }
            },
        };
        let InboundWrite::Progress(got) = state else {
            return;
        };
        let end = u64::from(payload_offset) + payload.len() as u64;
        let landed = if end <= u64::from(total_len) {
            self.regions
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
            self.refuse_write(e, op, code);
            return;
        }
        let got = got + payload.len() as u64;
        if got >= u64::from(total_len) {
            e.inbound_writes.remove(&op);
            self.stats.ops_served += 1;
            e.outbox.push_back(Out::OneSided(OneSided::OpResponse {
                op,
                total_len: 0,
                payload_offset: 0,
                payload: Chunks::default(),
            }));
        } else {
            e.inbound_writes.insert(op, InboundWrite::Progress(got));
        }
    }

    fn refuse_write(&mut self, e: &mut FlowEntry, op: u64, code: OpErrorCode) {
        self.stats.ops_refused += 1;
        // Remembered so that the op's later segments are dropped without more refusals.
        e.inbound_writes.insert(op, InboundWrite::Refused);
        let code = to_wire(code);
        e.outbox.push_back(Out::OneSided(OneSided::OpError { op, code }));
    }

    /// A response segment for one of our ops.
    fn response(&mut self, id: u32, op: u64, total_len: u32, payload_offset: u32, payload: &[u8]) {
        let Some(p) = self.ops.get_mut(&op).filter(|p| p.flow == id) else {
            self.stats.stray_responses += 1;
            return;
        };
        let (session, cookie) = (p.session, p.cookie);
        let OpKind::Read { chain, total, got } = &mut p.kind else {
            self.ops.remove(&op);
            let done = Completion::WriteDone {
                cookie,
                result: Ok(()),
            };
            self.complete(session, done);
            return;
        };
        let chain = *chain;
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        let capacity = s.chain(chain).map_or(0, |c| c.capacity(s.pool()));
        let end = payload_offset as usize + payload.len();
        if total_len as usize > capacity {
            self.fail_op(op, OpErrorCode::TooLarge);
            return;
        }
        if end > total_len as usize || total.is_some_and(|t| t != total_len) {
            self.stats.stray_responses += 1; // inconsistent segments from the peer
            self.fail_op(op, OpErrorCode::Internal);
            return;
        }
        *total = Some(total_len);
        // Straight from the packet into the app's chain: the response's one copy.
        if let Err(code) = s.write_chain_at(chain, payload_offset as usize, payload) {
            self.fail_op(op, code);
            return;
        }
        *got += payload.len() as u64;
        if *got < u64::from(total_len) {
            return;
        }
        self.ops.remove(&op);
        let result = s.set_chain_len(chain, total_len as usize).map(|()| total_len);
        self.read_done(session, Some(chain), cookie, result);
    }
}
