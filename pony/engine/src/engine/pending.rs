//! [`PendingOps`]: the one-sided operations our apps started and the peers have not
//! answered yet (the requester end; the remote end is `target.rs`).
//!
//! ```text
//!  Read{region,key,offset,len} ─ ReadRequest ──────▶   ◀── OpResponse × n: written into
//!  IndirectRead ─ IndirectReadRequest ─────────────▶       the Read's chain at their
//!                                                          payload_offset; ReadDone when
//!                                                          every byte arrived
//!  Write ─ WriteRequest × n ───────────────────────▶   ◀── OpResponse{total_len: 0}: WriteDone
//!                                                      ◀── OpError: the op fails with its code
//! ```
//!
//! Responses ride the flow reliably but unordered, so a Read counts the bytes it got; the
//! first response fixes the total length. Every op records its session and flow: a flow's
//! end fails its ops, and a detached session's Reads finish their chains so its pool is
//! whole again. A Read's chain is always either returned to the app with its completion
//! or finished at detach, so no path leaks pool buffers.

use std::collections::HashMap;

use super::sessions::Sessions;
use crate::session::{ChainId, EngineSession};
use pony_express::app::{Completion, Cookie, OpErrorCode};
use pony_proto::flow::OneSided;
use pony_proto::wire;

/// The completion code for a remote refusal.
fn from_wire(code: wire::OpErrorCode) -> OpErrorCode {
    match code {
        wire::OpErrorCode::AccessDenied => OpErrorCode::AccessDenied,
        wire::OpErrorCode::OutOfBounds => OpErrorCode::OutOfBounds,
        wire::OpErrorCode::TooLarge => OpErrorCode::TooLarge,
    }
}

/// What an op is waiting for.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) enum OpKind {
    /// Read / IndirectRead into `chain`; response packets are written into it as they
    /// come, `total` (the response's length) fixed by the first.
    Read {
        chain: ChainId,
        total: Option<u32>,
        got: u64,
    },
    Write,
}

/// A one-sided op one of our apps started and the peer has not answered yet.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct PendingOp {
    session: u64,
    flow: u32,
    cookie: Cookie,
    kind: OpKind,
}

/// The pending ops, by op id, and the id counter.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct PendingOps {
    ops: HashMap<u64, PendingOp>,
    next: u64,
}

impl Default for PendingOps {
    fn default() -> Self {
        PendingOps {
            ops: HashMap::new(),
            next: 1,
        }
    }
}

impl PendingOps {
    /// A fresh id from the op counter (also the source of staged-memfd cookies).
    pub(super) fn next_id(&mut self) -> u64 {
        let id = self.next;
        self.next += 1;
        id
    }

    /// Records an op of `session` on `flow`, to complete `cookie`; returns its id.
    pub(super) fn start(&mut self, session: u64, flow: u32, cookie: Cookie, kind: OpKind) -> u64 {
        let op = self.next_id();
        self.ops.insert(
            op,
            PendingOp {
                session,
                flow,
                cookie,
                kind,
            },
        );
        op
    }

    /// Completes op `op` with an error, returning a Read's chain to the app.
    pub(super) fn fail(&mut self, op: u64, code: OpErrorCode, sessions: &mut Sessions) {
        let Some(p) = self.ops.remove(&op) else { return };
        match p.kind {
            OpKind::Read { chain, .. } => sessions.read_done(p.session, Some(chain), p.cookie, Err(code)),
            OpKind::Write => sessions.complete(
                p.session,
                Completion::WriteDone {
                    cookie: p.cookie,
                    result: Err(code),
                },
            ),
        }
    }

    /// Flow `flow` ended: every op still waiting on it fails with `code`.
    pub(super) fn fail_flow(&mut self, flow: u32, code: OpErrorCode, sessions: &mut Sessions) {
        let ops: Vec<u64> = self
            .ops
            .iter()
            .filter(|(_, o)| o.flow == flow)
            .map(|(k, _)| *k)
            .collect();
        for op in ops {
            self.fail(op, code, sessions);
        }
    }

    /// Forgets the ops of a flow that is gone.
    pub(super) fn forget_flow(&mut self, flow: u32) {
        self.ops.retain(|_, op| op.flow != flow);
    }

    /// Session `id` detached: forgets its ops, finishing the chains its Reads hold (one
    /// reference each) in `session`, its reclaimed pool.
    pub(super) fn drop_session(&mut self, id: u64, session: &mut EngineSession) {
        let mine: Vec<u64> = self
            .ops
            .iter()
            .filter(|(_, o)| o.session == id)
            .map(|(k, _)| *k)
            .collect();
        for k in mine {
            if let Some(PendingOp {
                kind: OpKind::Read { chain, .. },
                ..
            }) = self.ops.remove(&k)
            {
                let _ = session.finish_chain(chain);
            }
        }
    }

    /// A request of ours could not be sent: fail its op (responses are just dropped).
    pub(super) fn request_failed(&mut self, req: &OneSided, code: OpErrorCode, sessions: &mut Sessions) {
        match *req {
            OneSided::ReadRequest { op, .. }
            | OneSided::IndirectReadRequest { op, .. }
            | OneSided::WriteRequest { op, .. } => self.fail(op, code, sessions),
            _ => {}
        }
    }

    /// The peer refused op `op` on `flow`; false if no such op waits on that flow.
    pub(super) fn on_error(
        &mut self,
        flow: u32,
        op: u64,
        code: wire::OpErrorCode,
        sessions: &mut Sessions,
    ) -> bool {
        match self.ops.get(&op) {
            Some(p) if p.flow == flow => {
                self.fail(op, from_wire(code), sessions);
                true
            }
            _ => false,
        }
    }

    /// A response segment for op `op` on `flow`, whose payload is `payload`. False for a
    /// stray one: no such op waits on that flow (late, after a close), or it contradicts
    /// the earlier segments (the op then fails).
    pub(super) fn on_response(
        &mut self,
        flow: u32,
        op: u64,
        (total_len, payload_offset): (u32, u32),
        payload: &[u8],
        sessions: &mut Sessions,
    ) -> bool {
        let Some(p) = self.ops.get_mut(&op).filter(|p| p.flow == flow) else {
            return false;
        };
        let (session, cookie) = (p.session, p.cookie);
        let OpKind::Read { chain, total, got } = &mut p.kind else {
            self.ops.remove(&op);
            let done = Completion::WriteDone {
                cookie,
                result: Ok(()),
            };
            sessions.complete(session, done);
            return true;
        };
        let chain = *chain;
        let Some(s) = sessions.get_mut(session) else {
            return true;
        };
        let capacity = s.chain(chain).map_or(0, |c| c.capacity(s.pool()));
        let end = payload_offset as usize + payload.len();
        if total_len as usize > capacity {
            self.fail(op, OpErrorCode::TooLarge, sessions);
            return true;
        }
        if end > total_len as usize || total.is_some_and(|t| t != total_len) {
            // Inconsistent segments from the peer.
            self.fail(op, OpErrorCode::Internal, sessions);
            return false;
        }
        *total = Some(total_len);
        // Straight from the packet into the app's chain: the response's one copy.
        if let Err(code) = s.write_chain_at(chain, payload_offset as usize, payload) {
            self.fail(op, code, sessions);
            return true;
        }
        *got += payload.len() as u64;
        if *got < u64::from(total_len) {
            return true;
        }
        self.ops.remove(&op);
        let result = s.set_chain_len(chain, total_len as usize).map(|()| total_len);
        sessions.read_done(session, Some(chain), cookie, result);
        true
    }
}
