//! App commands: what the engine does with each [`Command`] a session accepted.
//!
//! Every command is answered exactly once: a completion for its cookie, either at once
//! (refusals, Listen, regions) or when the flow reports the outcome (OpenFlow, Send, the
//! one-sided ops). A chain a command carries is always either released, returned to the
//! app with its completion, or held by a [`PendingOp`] that detach or a flow's end
//! finishes, so no path leaks pool buffers.

use std::collections::hash_map::Entry;
use std::net::SocketAddr;
use std::time::Instant;

use super::{FlowEntry, OpKind, Origin, Out, PendingOp, PonyEngine};
use crate::nic::PeerAddr;
use crate::session::{Accepted, ChainId};
use pony_express::app::{Command, Completion, Cookie, OpErrorCode, ServiceId};
use pony_proto::flow::{Chunks, Cutter, Flow, OneSided};
use pony_proto::wire::{self, Kind};

/// Parses an OpenFlow peer: `shm` for the point-to-point wire, else `ip:port`.
pub(super) fn parse_peer(peer: &str) -> Option<PeerAddr> {
    if peer == "shm" {
        return Some(PeerAddr::Shm);
    }
    peer.parse::<SocketAddr>().ok().map(PeerAddr::Udp)
}

impl PonyEngine {
    /// Handles one accepted command of session `sid`.
    pub(super) fn command(&mut self, sid: u64, a: Accepted, now: Instant) {
        match a.cmd {
            Command::OpenFlow {
                cookie,
                peer,
                service,
            } => self.open_flow(sid, cookie, &peer, service, now),
            Command::Listen { cookie, service } => match self.listeners.entry(service) {
                // Taken even by this same app: a second cookie for one service would leave
                // which of them gets the flows undefined.
                Entry::Occupied(_) => self.refuse(sid, cookie, OpErrorCode::ServiceTaken, service.into()),
                Entry::Vacant(v) => {
                    v.insert((sid, cookie));
                    self.complete(sid, Completion::Listening { cookie });
                }
            },
            Command::Unlisten { cookie, service } => match self.listeners.get(&service) {
                Some(&(holder, _)) if holder == sid => {
                    self.listeners.remove(&service);
                    self.complete(sid, Completion::Unlistened { cookie });
                }
                _ => self.refuse(sid, cookie, OpErrorCode::NoListener, service.into()),
            },
            Command::CloseFlow { flow } => match self.owned(sid, flow) {
                Some(id) => {
                    // Closed by drain_outbox once everything posted before is in the flow.
                    if let Some(e) = self.flows.get_mut(&id) {
                        e.close_when_drained = true;
                    }
                }
                None => self.refuse(sid, 0, OpErrorCode::UnknownFlow, flow),
            },
            Command::Send {
                flow, stream, cookie, ..
            } => {
                let data = self.take_pieces(sid, a.chain);
                let closing = |e: &FlowEntry| e.close_when_drained;
                match self.owned(sid, flow) {
                    Some(id) if self.flows.get(&id).is_some_and(|e| closing(e)) => {
                        self.refuse(sid, cookie, OpErrorCode::FlowClosed, flow)
                    }
                    Some(id) => self.push_out(id, Out::Message { stream, data, cookie }),
                    None => self.refuse(sid, cookie, OpErrorCode::UnknownFlow, flow),
                }
            }
            Command::Read {
                flow,
                region,
                key,
                offset,
                len,
                cookie,
                ..
            } => {
                let req = |op| OneSided::ReadRequest {
                    op,
                    region,
                    key,
                    offset,
                    len,
                };
                self.start_read(sid, flow, a.chain, cookie, req);
            }
            Command::IndirectRead {
                flow,
                table,
                table_key,
                index,
                region,
                key,
                cookie,
                ..
            } => {
                // The wire carries a 32-bit index: a larger one is out of any table.
                let Ok(index) = u32::try_from(index) else {
                    self.read_done(sid, a.chain, cookie, Err(OpErrorCode::OutOfBounds));
                    return;
                };
                let req = |op| OneSided::IndirectReadRequest {
                    op,
                    table,
                    table_key,
                    index,
                    region,
                    key,
                };
                self.start_read(sid, flow, a.chain, cookie, req);
            }
            Command::Write {
                flow,
                region,
                key,
                offset,
                cookie,
                ..
            } => {
                let data = self.take_pieces(sid, a.chain);
                let Some(id) = self.owned(sid, flow) else {
                    let done = Completion::WriteDone {
                        cookie,
                        result: Err(OpErrorCode::UnknownFlow),
                    };
                    self.complete(sid, done);
                    return;
                };
                let op = self.new_op(sid, id, cookie, OpKind::Write);
                let seg = wire::max_payload(self.cfg.flow.mtu, Kind::WriteRequest).max(1);
                let total_len = data.len() as u32;
                let mut cutter = Cutter::new(data);
                // At least one packet, so an empty Write is still checked and answered.
                loop {
                    let payload_offset = total_len - cutter.remaining() as u32;
                    let w = OneSided::WriteRequest {
                        op,
                        region,
                        key,
                        offset,
                        total_len,
                        payload_offset,
                        payload: cutter.cut(seg),
                    };
                    self.push_out(id, Out::OneSided(w));
                    if cutter.remaining() == 0 {
                        break;
                    }
                }
            }
            Command::RegisterRegion { cookie, len } => {
                let result = match self.staged.remove(&(sid, cookie)) {
                    Some(fd) => self
                        .regions
                        .register(sid, fd, Some(len))
                        .map_err(|e| e.to_string()),
                    None => Err("no region descriptor staged for this cookie".into()),
                };
                match result {
                    Ok(g) => self.complete(
                        sid,
                        Completion::RegionRegistered {
                            cookie,
                            region: g.region,
                            key: g.key,
                            len: g.len,
                        },
                    ),
                    Err(e) => {
                        log::debug!("{}: session {sid}: register region: {e}", self.name);
                        self.refuse(sid, cookie, OpErrorCode::RegionRefused, len);
                    }
                }
            }
            Command::UnregisterRegion { cookie, region } => match self.regions.unregister(sid, region) {
                Ok(()) => self.complete(sid, Completion::RegionUnregistered { cookie, region }),
                Err(code) => self.refuse(sid, cookie, code, u64::from(region)),
            },
        }
    }

    fn open_flow(&mut self, sid: u64, cookie: Cookie, peer: &str, service: ServiceId, now: Instant) {
        let Some(peer) = parse_peer(peer) else {
            let c = Completion::FlowOpened {
                cookie,
                result: Err(OpErrorCode::Unreachable),
            };
            self.complete(sid, c);
            return;
        };
        let Some(bufs) = self.sessions.get(&sid).map(|s| s.recv_buffers()) else {
            return;
        };
        let id = self.next_flow;
        self.next_flow += 1;
        let flow = Flow::connect_with(self.cfg.flow.clone(), id, service, now, bufs);
        self.flows
            .insert(id, FlowEntry::new(flow, peer, sid, Origin::Opened(cookie)));
    }

    /// Our flow id for the app's `flow`, if that flow exists and is the app's.
    fn owned(&self, sid: u64, flow: u64) -> Option<u32> {
        let id = u32::try_from(flow).ok()?;
        self.flows.get(&id).filter(|e| e.owner == Some(sid)).map(|_| id)
    }

    fn refuse(&mut self, sid: u64, cookie: Cookie, code: OpErrorCode, detail: u64) {
        self.complete(sid, Completion::Error { cookie, code, detail });
    }

    /// A Send's or Write's payload, zero-copy: the held chain becomes the pieces the flow
    /// slices and gathers; each buffer returns to the pool when the flow drops its last
    /// piece of it (acknowledged, or the flow is gone).
    fn take_pieces(&mut self, sid: u64, chain: Option<ChainId>) -> Chunks {
        let (Some(s), Some(id)) = (self.sessions.get_mut(&sid), chain) else {
            return Chunks::default();
        };
        s.take_chain_pieces(id).unwrap_or_default()
    }

    fn start_read(
        &mut self,
        sid: u64,
        flow: u64,
        chain: Option<ChainId>,
        cookie: Cookie,
        req: impl FnOnce(u64) -> OneSided,
    ) {
        let (Some(id), Some(chain)) = (self.owned(sid, flow), chain) else {
            self.read_done(sid, chain, cookie, Err(OpErrorCode::UnknownFlow));
            return;
        };
        let kind = OpKind::Read {
            chain,
            total: None,
            got: 0,
        };
        let op = self.new_op(sid, id, cookie, kind);
        self.push_out(id, Out::OneSided(req(op)));
    }

    fn new_op(&mut self, session: u64, flow: u32, cookie: Cookie, kind: OpKind) -> u64 {
        let op = self.next_op;
        self.next_op += 1;
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

    /// Ends a Read: the chain goes back to the app with the completion.
    pub(super) fn read_done(
        &mut self,
        sid: u64,
        chain: Option<ChainId>,
        cookie: Cookie,
        result: Result<u32, OpErrorCode>,
    ) {
        if let Some(s) = self.sessions.get_mut(&sid) {
            if let Some(c) = chain {
                let _ = s.return_chain(c);
            }
            s.complete(Completion::ReadDone { cookie, result });
        }
    }

    fn push_out(&mut self, id: u32, out: Out) {
        if let Some(e) = self.flows.get_mut(&id) {
            e.outbox.push_back(out);
        }
    }
}
