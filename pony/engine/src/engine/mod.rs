//! The Pony engine: a `snap_runtime::Engine` that joins apps' sessions ([`crate::session`]) to
//! flows ([`pony_proto::flow`]) over a NIC ([`crate::nic`]), with the wire format of
//! [`pony_proto::wire`].
//!
//! ```text
//!   app sessions (Sessions)     PonyEngine::run(now), each phase bounded               NIC (Link)
//!   ───────────────────────     ────────────────────────────────────────               ──────────
//!   command ring ──▶ command() ──▶ FlowTable: id → FlowEntry { Flow, Outbox, Target } ──▶ emit, send
//!   completion ring ◀── flow events, PendingOps ◀────────── route ◀── parse ◀─────────── recv
//!                       Listeners: service → app        Regions: what one-sided ops reach
//! ```
//!
//! [`PonyEngine`], in this module, composes the engine's state and runs its steps; each
//! part of the state is a type in a module of its own, with the rules that concern it:
//!
//! | module | type | holds |
//! |---|---|---|
//! | `link.rs` | `Link` | the NIC, the transmit buffer and its batching, the stash of packets the NIC refused |
//! | `flows.rs` | `FlowTable` | the flow mapper: id → entry, (peer, peer's id) → id for accepted flows |
//! | `entry.rs` | `FlowEntry` | one flow: peer, owner, origin, Send cookies, close-when-drained |
//! | `outbox.rs` | `Outbox` | what waits to be handed to one flow (Sends, one-sided segments) |
//! | `target.rs` | `Target` | the remote end of one-sided ops: serving peers' reads and writes from regions |
//! | `pending.rs` | `PendingOps` | the requester end: our apps' one-sided ops awaiting answers |
//! | `sessions.rs` | `Sessions` | attached apps: sessions, ring probes, round-robin cursor, staged memfds |
//! | `listeners.rs` | `Listeners` | service → (session, Listen cookie) |
//! | `rejected.rs` | `RejectedConnects` | the last Connects rejected, so a retransmitted one is not counted twice |
//! | `config.rs`, `stats.rs` | [`PonyConfig`], [`PonyStats`] | settings and counters |
//! | `upgrade.rs` | [`upgrade::Handover`] | the state snapshot and its transfer to a new engine (docs/UPGRADE.md) |
//!
//! One step ([`PonyEngine::run`]) does, each bounded: up to `packet_batch` packets off the
//! NIC (parsed, then routed by `dst_flow`; a Connect goes to the app listening on the
//! service it names, or is rejected), up to `command_batch` app commands (round robin over
//! sessions), then drives every flow: timers, events → completions, the flow's outbox → the
//! flow, and `poll_transmit` → `Transmit::emit` → `Nic::send_batch`. A packet the NIC
//! refuses ([`crate::nic::NicError::WouldBlock`]) is kept and sent first in a later step.
//!
//! Every command is answered exactly once: a completion for its cookie, either at once
//! (refusals, Listen, regions) or when the flow reports the outcome (OpenFlow, Send, the
//! one-sided ops). A chain a command carries is always either released, returned to the
//! app with its completion, or held by a pending op that detach or a flow's end finishes,
//! so no path leaks pool buffers.
//!
//! Ownership rules that make a dead app harmless: every flow and every pending one-sided op
//! records its owning session; [`AppFacing::detach`] reclaims the session's pool
//! ([`EngineSession::reclaim`]), finishes the chains its pending ops hold (so the pool is
//! whole again), unregisters its regions and closes its flows (they linger, ownerless, only
//! until the peer has everything that was already sent).
//!
//! Zero-copy data path: a Send's or Write's chain becomes the flow's message as one
//! `Bytes` per pool buffer ([`EngineSession::take_chain_pieces`]), which segments slice and
//! [`pony_proto::flow::Transmit::emit`] gathers into the packet: the payload's only copy after
//! the app wrote it. The buffers return to the pool when the last packet holding them is
//! acknowledged (`Sent` completes then too). Received messages are reassembled straight
//! into the owner's pool ([`EngineSession::recv_buffers`]) and handed over by reference;
//! a Read's response packets and a peer's Write packets go straight from the receive
//! buffer into the app's chain or region ([`pony_proto::flow::Flow::handle_in_place`]). Each
//! flow's advertised credit is capped by its owner's free pool bytes, so a slow app stalls
//! its peers through flow control instead of making them retransmit. The one copy left
//! beyond the packet's: a served Read's bytes are taken from the region when the request
//! arrives (a region is the app's live memory, only ever read by copying; see
//! [`crate::regions`]).
//!
//! Region memfds (a one-sided target must be registered first) cannot travel on the
//! command ring. Two paths: descriptors appended to the attach request after the optional
//! completion doorbell are registered at attach and their grants returned in `details`;
//! later ones are staged by the control plane with [`PonyEngine::stage_region_fd`] (on the
//! engine thread, through the mailbox) and claimed by a `RegisterRegion` command with the
//! same cookie, so registration stays ordered with the app's other commands. In-process
//! callers may use [`PonyEngine::register_region_local`].

mod config;
mod entry;
mod flows;
mod link;
mod listeners;
mod moving;
mod outbox;
mod pending;
mod rejected;
mod sessions;
mod stats;
mod target;
#[cfg(test)]
mod tests;
pub mod upgrade;

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use pony_express::app::{
    AppSession, CloseReason, Command, Completion, Completions, Cookie, OpErrorCode, ServiceId,
};
use pony_proto::flow::{FailReason, Flow, FlowError, FlowEvent, OneSided};
use pony_proto::wire::{self, negotiate, FlowId, Kind, RejectReason, Repr};
use snap_ipc::channel::APP_FDS;
use snap_ipc::SharedMem;
use snap_runtime::{AppFacing, AttachReply, AttachRequest, Engine, RunOutcome, WakeSource, WorkProbe};

use crate::nic::{Nic, PeerAddr};
use crate::regions::{RegionGrant, Regions};
use crate::session::{Accepted, ChainId, EngineSession, Violation};
pub use config::{PonyConfig, PonyLimits, DEFAULT_MAX_ONESIDED_BYTES};
use entry::{FlowEntry, Origin};
pub use flows::MAX_FLOWS_LIMIT;
use flows::{FlowTable, Lookup};
use link::Link;
use listeners::Listeners;
use outbox::Out;
use pending::{OpKind, PendingOps};
use rejected::RejectedConnects;
use sessions::Sessions;
pub use stats::{InjectedFaults, PonyStats};
use target::Served;

/// Parses an OpenFlow peer: `shm` for the point-to-point wire, else `ip:port`.
fn parse_peer(peer: &str) -> Option<PeerAddr> {
    if peer == "shm" {
        return Some(PeerAddr::Shm);
    }
    peer.parse::<SocketAddr>().ok().map(PeerAddr::Udp)
}

fn dup(fd: impl AsFd) -> Result<OwnedFd, String> {
    fd.as_fd().try_clone_to_owned().map_err(|e| e.to_string())
}

/// See the module documentation.
pub struct PonyEngine {
    name: String,
    cfg: PonyConfig,
    link: Link,
    flows: FlowTable,
    sessions: Sessions,
    listeners: Listeners,
    rejected: RejectedConnects,
    regions: Regions,
    ops: PendingOps,
    stats: PonyStats,
    /// When the engine must run again without an interrupt (computed at the end of a step).
    wake_at: Option<Instant>,
    /// A step dropped a session (quarantine): the runtime must stop watching its doorbell.
    sources_changed: bool,
    /// The state transfer under way, if any ([`upgrade`]).
    transfer: Option<upgrade::Transfer>,
    /// Frozen for a transfer's blackout: steps do nothing.
    frozen: bool,
    /// `frozen`, for the work probe (the runtime's thread): a frozen engine's input must
    /// not keep its thread from blocking.
    paused: Arc<AtomicBool>,
}

impl std::fmt::Debug for PonyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PonyEngine")
            .field("name", &self.name)
            .field("flows", &self.flows.len())
            .field("sessions", &self.sessions.len())
            .finish()
    }
}

impl PonyEngine {
    /// An engine on `nic`, with no sessions or flows yet.
    pub fn new(name: impl Into<String>, nic: Box<dyn Nic>, mut cfg: PonyConfig) -> Self {
        let name = name.into();
        cfg.flow.mtu = cfg.flow.mtu.min(nic.mtu());
        Self {
            link: Link::new(&name, nic, cfg.flow.mtu),
            name,
            flows: FlowTable::new(cfg.limits.max_flows),
            cfg,
            sessions: Sessions::default(),
            listeners: Listeners::default(),
            rejected: RejectedConnects::default(),
            regions: Regions::new(),
            ops: PendingOps::default(),
            stats: PonyStats::default(),
            wake_at: None,
            sources_changed: false,
            transfer: None,
            frozen: false,
            paused: Arc::default(),
        }
    }

    /// Counters, with the live flows' retransmission counts added in.
    pub fn stats(&self) -> PonyStats {
        let mut s = self.stats.clone();
        s.sessions = self.sessions.len();
        s.flows = self.flows.len();
        s.refusals = self.regions.refusals();
        s.regions = self.regions.len();
        s.ops_outstanding = self.sessions.ops_outstanding();
        s.sessions_backpressured = self.sessions.backpressured();
        s.completions_parked = self.sessions.completions_parked();
        s.faults = self
            .link
            .nic()
            .fault_stats()
            .map(|[tx, rx]| InjectedFaults { tx, rx });
        s.nic = self
            .link
            .nic()
            .backend_counters()
            .map(|c| c.into_iter().map(|(k, v)| (k.to_owned(), v)).collect());
        for e in self.flows.iter() {
            s.add_flow(&e.flow.stats());
        }
        s
    }

    /// The NIC (e.g. for its own counters).
    pub fn nic(&self) -> &dyn Nic {
        self.link.nic()
    }

    /// Attaches an app in this process through the same path as the control plane
    /// ([`AppFacing::attach_app`] then [`AppSession::from_fds`]); returns its session id.
    pub fn attach_local(&mut self, completions: Completions) -> Result<(u64, AppSession), String> {
        let bell = match completions {
            Completions::Poll => None,
            Completions::Block => Some(AppSession::completion_doorbell().map_err(|e| e.to_string())?),
        };
        let fds = match &bell {
            Some(b) => {
                let (page, efd) = b.fds();
                vec![dup(page)?, dup(efd)?]
            }
            None => Vec::new(),
        };
        let request = AttachRequest {
            notify: bell.is_some(),
            fds,
            pid: std::process::id() as i32,
            uid: 0,
        };
        let reply = self.attach_app(request)?;
        let app = AppSession::from_fds(reply.fds, bell).map_err(|e| e.to_string())?;
        Ok((reply.id, app))
    }

    /// Registers a region for `session` directly (in-process apps and tests).
    pub fn register_region_local(&mut self, session: u64, mem: SharedMem) -> Result<RegionGrant, String> {
        if !self.sessions.contains(session) {
            return Err(format!("no session {session}"));
        }
        if self.regions.count_of(session) >= self.cfg.limits.max_regions_per_app as usize {
            self.stats.limit_regions += 1;
            return Err(OpErrorCode::TooManyRegions.to_string());
        }
        self.regions.register_mem(session, mem).map_err(|e| e.to_string())
    }

    /// Stages a region memfd for `session`; its `RegisterRegion { cookie, .. }` command
    /// claims it. Meant for the control plane (the memfd came over the control socket).
    pub fn stage_region_fd(&mut self, session: u64, cookie: Cookie, fd: OwnedFd) -> Result<(), String> {
        self.sessions.stage(session, cookie, fd)
    }

    // ── Packets in: the flow mapper's routing ──────────────────────────────────────────

    /// Receives, parses and routes up to `packet_batch` packets in place, from the NIC's
    /// own buffer ([`Nic::recv_in_place`]); returns how many, and whether the batch was full.
    fn receive(&mut self, now: Instant) -> (u32, bool) {
        let max = self.cfg.packet_batch as usize;
        let mut nic = self.link.detach_nic();
        let got = nic.recv_in_place(max, &mut |packet, from| {
            self.stats.packets_in += 1;
            match Repr::parse(packet) {
                Ok(repr) => self.route(&repr, from, now),
                Err(_) => self.stats.malformed += 1,
            }
        });
        self.link.attach_nic(nic, &mut self.stats);
        let n = got.unwrap_or_else(|e| {
            log::warn!("{}: nic recv: {e}", self.name);
            0
        });
        (n as u32, n == max)
    }

    /// The flow mapper: hands a packet to its flow, or accepts / rejects a Connect (no
    /// common version, or nobody listening on its service).
    fn route(&mut self, repr: &Repr<'_>, from: PeerAddr, now: Instant) {
        if let Some(dst) = repr.dst_flow() {
            let act_now = match self.flows.get_mut(dst) {
                Some(e) if e.peer == from => e.flow.handle_in_place(repr, now),
                other => {
                    self.stats.unknown_flow += 1;
                    if other.is_none() && self.flows.lookup(u64::from(dst)) == Lookup::Stale {
                        self.stats.stale_flow_ids += 1;
                    }
                    return;
                }
            };
            // A new one-sided packet: served, or written to its target, straight from the
            // receive buffer.
            if let (true, Some((op, payload))) = (act_now, OneSided::from_repr_in_place(repr)) {
                if let Some(mut e) = self.flows.take(dst) {
                    self.one_sided(dst, &mut e, op, payload);
                    self.flows.put(dst, e);
                }
            }
            return;
        }
        let Repr::Connect {
            src_flow,
            service,
            versions,
            ..
        } = *repr
        else {
            self.stats.malformed += 1;
            return;
        };
        if let Some(e) = self.flows.accepted_mut(from, src_flow) {
            e.flow.handle(repr, now); // a retransmitted Connect: re-send the Accept
            return;
        }
        // Versions first: an initiator we cannot talk to learns that, not that nobody
        // listens (it could not use the listener anyway).
        let listener = match negotiate(self.cfg.flow.versions, versions) {
            None => Err(RejectReason::NoCommonVersion),
            Some(_) => self.listeners.get(service).ok_or(RejectReason::NoListener),
        }
        .and_then(|(session, cookie)| match self.flow_limit(session) {
            Some(_) => Err(RejectReason::TooManyFlows),
            None => Ok((session, cookie)),
        });
        let (session, cookie) = match listener {
            Ok(listener) => listener,
            Err(reason) => {
                self.reject(from, src_flow, reason);
                return;
            }
        };
        let Some(bufs) = self.sessions.recv_buffers(session) else {
            return;
        };
        let id = self.flows.next_id();
        match Flow::accept_with(self.cfg.flow.clone(), id, repr, now, bufs) {
            Ok(flow) => {
                self.stats.flows_accepted += 1;
                let mut e = FlowEntry::new(flow, from, session, Origin::Accepted(cookie));
                e.peer_key = Some(src_flow);
                self.flows.insert(e);
            }
            // The flow's own version check, after ours above: the same answer.
            Err(FlowError::Rejected { .. }) => self.reject(from, src_flow, RejectReason::NoCommonVersion),
            Err(_) => self.stats.malformed += 1,
        }
    }

    /// Rejects `peer`'s Connect for its flow `src_flow`, counting it unless it repeats a
    /// rejection of the same flow ([`RejectedConnects`]: a retransmitted Connect).
    fn reject(&mut self, peer: PeerAddr, src_flow: FlowId, reason: RejectReason) {
        let reject = Repr::Reject {
            dst_flow: src_flow,
            versions: self.cfg.flow.versions,
            reason,
        };
        if self.rejected.first_time(peer, src_flow, reason) {
            self.stats.connects_rejected += 1;
            if reason == RejectReason::TooManyFlows {
                self.stats.limit_flows += 1;
            }
        } else {
            self.stats.connects_rejected_again += 1;
        }
        self.link.send_raw(&reject, peer, &mut self.stats);
    }

    // ── App commands ───────────────────────────────────────────────────────────────────

    /// Takes up to `command_batch` commands, one session after the other from a rotating
    /// start so that a busy app cannot starve the others across steps.
    fn take_commands(&mut self, now: Instant) -> (u32, bool) {
        let ids = self.sessions.ids();
        if ids.is_empty() {
            return (0, false);
        }
        let start = self.sessions.round_start(ids.len());
        let mut n = 0;
        let per_session = (self.cfg.command_batch / ids.len() as u32).max(1);
        for k in 0..ids.len() {
            let sid = ids[(start + k) % ids.len()];
            for _ in 0..per_session {
                if n >= self.cfg.command_batch {
                    return (n, true);
                }
                let Some(s) = self.sessions.get_mut(sid) else {
                    break;
                };
                let accepted = match s.next_command() {
                    Ok(Some(a)) => a,
                    Ok(None) => break,
                    Err(e) => {
                        // A broken protocol: the app is not served on.
                        self.quarantine(sid, &e);
                        break;
                    }
                };
                n += 1;
                self.stats.commands += 1;
                self.command(sid, accepted, now);
            }
        }
        (n, self.sessions.rings().any_pending())
    }

    /// Why session `sid` may not have another flow now, if it may not.
    fn flow_limit(&self, sid: u64) -> Option<&'static str> {
        if self.flows.is_full() {
            Some("max_flows")
        } else if self.flows.owned_by(sid) >= self.cfg.limits.max_flows_per_app as usize {
            Some("max_flows_per_app")
        } else {
            None
        }
    }

    /// The error for a command naming `flow`, which is not one of the session's:
    /// `StaleFlow` for an old generation of a slot (counted), else `UnknownFlow`.
    fn no_flow(&mut self, flow: u64) -> OpErrorCode {
        if self.flows.lookup(flow) == Lookup::Stale {
            self.stats.stale_flow_ids += 1;
            OpErrorCode::StaleFlow
        } else {
            OpErrorCode::UnknownFlow
        }
    }

    /// Counts an operation-carrying command of session `sid`; if the session is at
    /// `max_ops_per_app`, refuses it with `TooManyOps` (its completion uncounts it) and
    /// returns false.
    fn admit_op(&mut self, sid: u64, a: &Accepted) -> bool {
        let op = matches!(
            a.cmd,
            Command::Send { .. }
                | Command::Read { .. }
                | Command::Write { .. }
                | Command::IndirectRead { .. }
        );
        if !op || self.sessions.op_started(sid, self.cfg.limits.max_ops_per_app) {
            return true;
        }
        self.stats.limit_ops += 1;
        let code = OpErrorCode::TooManyOps;
        let detail = u64::from(self.cfg.limits.max_ops_per_app);
        match a.cmd {
            Command::Send { cookie, .. } => {
                drop(self.sessions.take_pieces(sid, a.chain));
                self.sessions.send_failed(sid, cookie, code, detail);
            }
            Command::Write { cookie, .. } => {
                drop(self.sessions.take_pieces(sid, a.chain));
                let done = Completion::WriteDone {
                    cookie,
                    result: Err(code),
                };
                self.sessions.complete(sid, done);
            }
            Command::Read { cookie, .. } | Command::IndirectRead { cookie, .. } => {
                self.sessions.read_done(sid, a.chain, cookie, Err(code));
            }
            _ => {}
        }
        false
    }

    /// Session `sid` broke the protocol (`session::Violation`): it is told why (an `Error` with code
    /// `Quarantined`, if its completion ring has room) and detached at once, so it is
    /// never polled again, leaves the work probe and the wake sources, and its flows close
    /// (peers see `PeerClosed`), its pool and regions reclaimed. Its control connection
    /// closing later finds nothing left to detach.
    fn quarantine(&mut self, sid: u64, why: &Violation) {
        log::warn!("{}: session {sid} quarantined: {why}", self.name);
        self.stats.sessions_quarantined += 1;
        let told = Completion::Error {
            cookie: 0,
            code: OpErrorCode::Quarantined,
            detail: why.code().map_or(0, |c| c as u64),
        };
        self.sessions.complete(sid, told);
        self.detach(sid);
        self.sources_changed = true;
    }

    /// Handles one accepted command of session `sid`.
    fn command(&mut self, sid: u64, a: Accepted, now: Instant) {
        if !self.admit_op(sid, &a) {
            return;
        }
        match a.cmd {
            Command::OpenFlow {
                cookie,
                peer,
                service,
            } => self.open_flow(sid, cookie, &peer, service, now),
            Command::Listen { cookie, service } => {
                if self.listeners.listen(service, sid, cookie) {
                    self.sessions.complete(sid, Completion::Listening { cookie });
                } else {
                    let code = OpErrorCode::ServiceTaken;
                    self.sessions.refuse(sid, cookie, code, service.into());
                }
            }
            Command::Unlisten { cookie, service } => {
                if self.listeners.unlisten(service, sid) {
                    self.sessions.complete(sid, Completion::Unlistened { cookie });
                } else {
                    let code = OpErrorCode::NoListener;
                    self.sessions.refuse(sid, cookie, code, service.into());
                }
            }
            // Closed by `drain_outbox` once everything posted before is in the flow.
            Command::CloseFlow { flow } => match self.flows.owned_mut(sid, flow) {
                Some(e) => e.close_when_drained(),
                None => {
                    let code = self.no_flow(flow);
                    self.sessions.refuse(sid, 0, code, flow);
                }
            },
            Command::Send {
                flow, stream, cookie, ..
            } => {
                let data = self.sessions.take_pieces(sid, a.chain);
                match self.flows.owned_mut(sid, flow) {
                    Some(e) if e.is_closing() => {
                        self.sessions
                            .send_failed(sid, cookie, OpErrorCode::FlowClosed, flow)
                    }
                    Some(e) => e.outbox().push(Out::Message { stream, data, cookie }),
                    None => {
                        let code = self.no_flow(flow);
                        self.sessions.send_failed(sid, cookie, code, flow);
                    }
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
                // The peer would refuse it; say so without a round trip.
                if len > self.cfg.max_onesided_bytes {
                    let result = Err(OpErrorCode::TooLarge);
                    self.sessions.read_done(sid, a.chain, cookie, result);
                    return;
                }
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
                    let result = Err(OpErrorCode::OutOfBounds);
                    self.sessions.read_done(sid, a.chain, cookie, result);
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
                let data = self.sessions.take_pieces(sid, a.chain);
                // Too large for the peer (which would refuse it): fail it here; dropping
                // `data` gives its buffers back.
                let too_large = data.len() > self.cfg.max_onesided_bytes as usize;
                let id = self.flows.owned(sid, flow).filter(|_| !too_large);
                let Some(id) = id else {
                    let code = if too_large {
                        OpErrorCode::TooLarge
                    } else {
                        self.no_flow(flow)
                    };
                    let done = Completion::WriteDone {
                        cookie,
                        result: Err(code),
                    };
                    self.sessions.complete(sid, done);
                    return;
                };
                let op = self.ops.start(sid, id, cookie, OpKind::Write);
                let seg = wire::max_payload(self.cfg.flow.mtu, Kind::WriteRequest).max(1);
                if let Some(e) = self.flows.get_mut(id) {
                    e.outbox().push_write(op, (region, key, offset), data, seg);
                }
            }
            Command::RegisterRegion { cookie, len } => {
                if self.regions.count_of(sid) >= self.cfg.limits.max_regions_per_app as usize {
                    drop(self.sessions.claim_staged(sid, cookie));
                    self.stats.limit_regions += 1;
                    let max = u64::from(self.cfg.limits.max_regions_per_app);
                    self.sessions
                        .refuse(sid, cookie, OpErrorCode::TooManyRegions, max);
                    return;
                }
                let result = match self.sessions.claim_staged(sid, cookie) {
                    Some(fd) => self
                        .regions
                        .register(sid, fd, Some(len))
                        .map_err(|e| e.to_string()),
                    None => Err("no region descriptor staged for this cookie".into()),
                };
                match result {
                    Ok(g) => self.sessions.complete(
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
                        self.sessions.refuse(sid, cookie, OpErrorCode::RegionRefused, len);
                    }
                }
            }
            Command::UnregisterRegion { cookie, region } => match self.regions.unregister(sid, region) {
                Ok(()) => self
                    .sessions
                    .complete(sid, Completion::RegionUnregistered { cookie, region }),
                Err(code) => self.sessions.refuse(sid, cookie, code, u64::from(region)),
            },
        }
    }

    fn open_flow(&mut self, sid: u64, cookie: Cookie, peer: &str, service: ServiceId, now: Instant) {
        let Some(peer) = parse_peer(peer) else {
            let c = Completion::FlowOpened {
                cookie,
                result: Err(OpErrorCode::Unreachable),
            };
            self.sessions.complete(sid, c);
            return;
        };
        if let Some(limit) = self.flow_limit(sid) {
            log::debug!("{}: session {sid}: OpenFlow refused at {limit}", self.name);
            self.stats.limit_flows += 1;
            let c = Completion::FlowOpened {
                cookie,
                result: Err(OpErrorCode::TooManyFlows),
            };
            self.sessions.complete(sid, c);
            return;
        }
        let Some(bufs) = self.sessions.recv_buffers(sid) else {
            return;
        };
        let id = self.flows.next_id();
        let flow = Flow::connect_with(self.cfg.flow.clone(), id, service, now, bufs);
        self.flows
            .insert(FlowEntry::new(flow, peer, sid, Origin::Opened(cookie)));
    }

    fn start_read(
        &mut self,
        sid: u64,
        flow: u64,
        chain: Option<ChainId>,
        cookie: Cookie,
        req: impl FnOnce(u64) -> OneSided,
    ) {
        let (Some(id), Some(chain)) = (self.flows.owned(sid, flow), chain) else {
            let result = Err(self.no_flow(flow));
            self.sessions.read_done(sid, chain, cookie, result);
            return;
        };
        let kind = OpKind::Read {
            chain,
            total: None,
            got: 0,
        };
        let op = self.ops.start(sid, id, cookie, kind);
        if let Some(e) = self.flows.get_mut(id) {
            e.outbox().push(Out::OneSided(req(op)));
        }
    }

    // ── Flows: timers, events → completions, outbox → flow, transmit ────────────────────

    /// Drives every flow: timers, events, outbox, transmit. Returns (events handled, more
    /// to send than the budget allowed).
    fn drive_flows(&mut self, now: Instant) -> (u32, bool) {
        let mut budget = self.cfg.transmit_batch;
        let mut items = 0;
        let ids = self.flows.visit();
        for &id in &ids {
            let Some(mut e) = self.flows.take_unmarked(id) else {
                continue;
            };
            // The upgrade's deltas carry only the flows this visit changed.
            let mut changed = !e.outbox().is_empty();
            if e.flow.poll_timeout().is_some_and(|t| t <= now) {
                e.flow.handle_timeout(now);
            }
            if let Some(s) = e.owner.and_then(|o| self.sessions.get(o)) {
                e.flow.limit_credit(s.free_bytes());
            }
            // Events can queue responses (outbox) and sending can finish a close (events):
            // a few rounds settle both without letting one flow loop forever.
            for _ in 0..3 {
                let handled = self.flow_events(id, &mut e);
                self.drain_outbox(id, &mut e);
                self.link
                    .transmit(&mut e.flow, e.peer, &mut budget, now, &mut self.stats);
                items += handled;
                changed |= handled > 0;
                if handled == 0 {
                    break;
                }
            }
            changed |= e.flow.take_changed();
            if e.flow.is_finished() {
                // The last transmit may have finished a close: its event is still queued.
                items += self.flow_events(id, &mut e);
                self.retire(id, e);
            } else {
                self.flows.put(id, e);
                if changed {
                    self.flows.mark(id);
                }
            }
        }
        self.flows.end_visit(ids);
        (items, budget == 0)
    }

    /// Takes the flow's events and turns them into completions; returns how many.
    fn flow_events(&mut self, id: u32, e: &mut FlowEntry) -> u32 {
        let mut n = 0;
        loop {
            let Some(ev) = e.flow.poll_event() else { return n };
            n += 1;
            match ev {
                FlowEvent::Connected { .. } => {
                    if let Some((owner, c)) = e.on_connected(id) {
                        self.sessions.complete(owner, c);
                    }
                }
                FlowEvent::MessageReceived { stream, data, .. } => {
                    // Without an owner the message is dropped, which releases its buffers.
                    if let Some(s) = e.owner.and_then(|o| self.sessions.get_mut(o)) {
                        s.deliver_chain(u64::from(id), stream, data);
                        self.stats.messages_delivered += 1;
                    }
                }
                FlowEvent::MessageSent { stream, message } => {
                    if let Some((owner, c)) = e.on_sent(stream, message) {
                        self.sessions.complete(owner, c);
                    }
                }
                FlowEvent::OneSided(op) => {
                    // Not taken: `route` acts on one-sided packets in place. A flow fed by
                    // `Flow::handle` would queue them with an owned payload.
                    let payload = op.payload().to_vec();
                    self.one_sided(id, e, op, &payload);
                }
                FlowEvent::Closed => {
                    let why = match e.flow.closed_by_peer() {
                        true => CloseReason::PeerClosed,
                        false => CloseReason::LocalClose,
                    };
                    self.end_flow(id, e, OpErrorCode::FlowClosed, why);
                }
                FlowEvent::Failed(reason) => {
                    self.stats.flows_failed += 1;
                    log::info!("{}: flow {id} failed: {reason:?}", self.name);
                    let code = match reason {
                        FailReason::ProtocolViolation => OpErrorCode::Internal,
                        FailReason::NoListener => OpErrorCode::NoListener,
                        FailReason::NoCommonVersion { .. } => OpErrorCode::VersionMismatch,
                        FailReason::PeerBusy => OpErrorCode::PeerBusy,
                        _ => OpErrorCode::Unreachable,
                    };
                    let why = match reason {
                        FailReason::PeerUnresponsive | FailReason::ConnectTimeout => CloseReason::PeerTimeout,
                        _ => CloseReason::Reset,
                    };
                    self.end_flow(id, e, code, why);
                }
            }
        }
    }

    /// The flow closed or failed: every operation still waiting on it completes with
    /// `code`, then the owner hears that the flow is gone for `why` (or that it never
    /// opened).
    fn end_flow(&mut self, id: u32, e: &mut FlowEntry, code: OpErrorCode, why: CloseReason) {
        self.ops.fail_flow(id, code, &mut self.sessions);
        if let Some((owner, done)) = e.on_end(id, code, why) {
            for c in done {
                match c {
                    // The Sends the flow still held: each ends an operation.
                    Completion::Error { cookie, code, detail } => {
                        self.sessions.send_failed(owner, cookie, code, detail)
                    }
                    c => self.sessions.complete(owner, c),
                }
            }
        }
    }

    /// Hands the flow what its outbox holds; what it can never take fails: a Send with an
    /// error completion, a request of ours by failing its op.
    fn drain_outbox(&mut self, id: u32, e: &mut FlowEntry) {
        let (sessions, ops) = (&mut self.sessions, &mut self.ops);
        let owner = e.owner;
        e.drain_outbox(&self.regions, |out, code| match out {
            Out::Message { cookie, .. } => {
                if let Some(owner) = owner {
                    sessions.send_failed(owner, cookie, code, u64::from(id));
                }
            }
            Out::OneSided(op) => ops.request_failed(&op, code, sessions),
            // A read served for the peer: nothing of ours to fail.
            Out::Serve(_) => {}
        });
    }

    /// Acts on a one-sided packet whose payload is `payload` (`op`'s own is not read): a
    /// peer's request is served from our regions, a response goes to our pending op.
    fn one_sided(&mut self, id: u32, e: &mut FlowEntry, op: OneSided, payload: &[u8]) {
        match op {
            OneSided::OpResponse {
                op,
                total_len,
                payload_offset,
                ..
            } => {
                let segment = (total_len, payload_offset);
                if !self.ops.on_response(id, op, segment, payload, &mut self.sessions) {
                    self.stats.stray_responses += 1;
                }
            }
            OneSided::OpError { op, code } => {
                if self.ops.on_error(id, op, code, &mut self.sessions) {
                    self.stats.ops_failed_remote += 1;
                } else {
                    self.stats.stray_responses += 1;
                }
            }
            req => match e.serve(
                req,
                payload,
                &self.regions,
                (self.cfg.flow.mtu, self.cfg.max_onesided_bytes),
            ) {
                Served::Done => self.stats.ops_served += 1,
                Served::Refused => self.stats.ops_refused += 1,
                Served::TooLarge => {
                    self.stats.ops_refused += 1;
                    self.stats.onesided_too_large += 1;
                }
                Served::Nothing => {}
            },
        }
    }

    /// Forgets a finished flow, keeping its counters.
    fn retire(&mut self, id: u32, e: Box<FlowEntry>) {
        self.stats.add_flow(&e.flow.stats());
        self.flows.retire(&e);
        self.ops.forget_flow(id);
    }

    fn next_wake(&self, retry: bool, now: Instant) -> Option<Instant> {
        let retry = retry.then(|| now + self.cfg.retry_after);
        [self.link.nic().poll_at(), self.flows.next_timeout(), retry]
            .into_iter()
            .flatten()
            .min()
    }
}

impl Engine for PonyEngine {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(&mut self, now: Instant) -> RunOutcome {
        if self.frozen {
            return RunOutcome {
                items: 0,
                pending: false,
            };
        }
        let nic_ok = self.link.flush_stash(&mut self.stats);
        let (rx, rx_more) = self.receive(now);
        let (cmds, cmd_more) = self.take_commands(now);
        let (events, tx_more) = if nic_ok { self.drive_flows(now) } else { (0, false) };
        self.stats.backpressure_waits += self.sessions.update_backpressure();
        // Completions of the whole step wake each app once, after the engine's work.
        self.sessions.ring_doorbells();
        self.wake_at = self.next_wake(self.link.is_stalled(), now);
        RunOutcome {
            items: rx + cmds + events,
            pending: rx_more || cmd_more || tx_more,
        }
    }

    fn wake_sources(&self) -> Vec<WakeSource> {
        if self.frozen {
            // The NIC's socket is level triggered: it would wake a thread that reads nothing.
            return Vec::new();
        }
        let mut v: Vec<WakeSource> = self.link.nic().wake_source().into_iter().collect();
        v.extend(self.sessions.doorbells());
        v
    }

    fn work_probe(&self) -> WorkProbe {
        let nic = self.link.nic().work_probe();
        let rings = self.sessions.rings().clone();
        let space = self.sessions.space().clone();
        let paused = self.paused.clone();
        WorkProbe::new(move || {
            !paused.load(Relaxed) && (nic.has_work() || rings.any_pending() || space.any_space())
        })
    }

    fn poll_at(&self) -> Option<Instant> {
        self.wake_at
    }

    fn take_sources_changed(&mut self) -> bool {
        std::mem::take(&mut self.sources_changed)
    }

    fn app_facing(&mut self) -> Option<&mut dyn AppFacing> {
        Some(self)
    }

    /// Movable when its NIC is (a UDP socket or AF_XDP; not the shared-memory wire or a
    /// pipeline's queue).
    fn movable(&mut self) -> Option<&mut dyn snap_runtime::Movable> {
        self.link.nic().can_hand_over().then_some(self as _)
    }

    /// [`PonyStats`], as JSON.
    fn counters(&self) -> Option<serde_json::Value> {
        serde_json::to_value(self.stats()).ok()
    }
}

impl AppFacing for PonyEngine {
    /// Descriptors in: the completion doorbell's two if `notify`, then any number of
    /// size-sealed region memfds, registered now (grants in `details.regions`). Out: the
    /// session's [`pony_express::app::session::SESSION_FDS`] descriptors.
    fn attach_app(&mut self, mut request: AttachRequest) -> Result<AttachReply, String> {
        if self.frozen {
            // Its final state is written: a session made now would not move with it.
            return Err(format!(
                "engine {} is moving to a new host; attach again",
                self.name
            ));
        }
        let bell = if request.notify { APP_FDS } else { 0 };
        if request.fds.len() < bell {
            return Err(format!("attach with notify needs {bell} descriptors first"));
        }
        let region_fds = request.fds.split_off(bell);
        let completion = request.notify.then_some(request.fds);
        let (session, fds) =
            EngineSession::create(self.cfg.session, completion).map_err(|e| e.to_string())?;
        let id = self.sessions.next_id();
        let mut grants = Vec::new();
        if region_fds.len() > self.cfg.limits.max_regions_per_app as usize {
            self.stats.limit_regions += 1;
            return Err(format!(
                "{} regions at attach exceed max_regions_per_app ({})",
                region_fds.len(),
                self.cfg.limits.max_regions_per_app
            ));
        }
        for fd in region_fds {
            match self.regions.register(id, fd, None) {
                Ok(g) => grants.push(serde_json::json!({ "region": g.region, "key": g.key, "len": g.len })),
                Err(e) => {
                    self.regions.remove_all_of(id);
                    return Err(format!("region: {e}"));
                }
            }
        }
        let pool = session.pool().shape();
        self.sessions.insert(id, session);
        let details = serde_json::json!({
            "ring_capacity": self.cfg.session.ring_capacity,
            "pool_buffers": pool.buffers,
            "pool_buf_size": pool.buf_size,
            "mtu": self.cfg.flow.mtu,
            "max_message_len": self.cfg.flow.max_message_len,
            "regions": grants,
            "pid": request.pid,
        });
        Ok(AttachReply { id, fds, details })
    }

    fn detach(&mut self, id: u64) -> bool {
        let Some(mut session) = self.sessions.remove(id) else {
            return false;
        };
        // Rebuild the pool first: chains held by pending ops keep one reference each, which
        // finishing them below drops, so the pool ends up entirely free.
        let stats = session.reclaim();
        self.ops.drop_session(id, &mut session);
        let regions = self.regions.remove_all_of(id);
        self.listeners.remove_session(id);
        self.flows.disown(id);
        log::info!(
            "{}: session {id} detached: {} buffers held at reclaim, {} free after, {regions} regions dropped",
            self.name,
            stats.held,
            session.pool().stats().free
        );
        true
    }

    fn channel_ids(&self) -> Vec<u64> {
        self.sessions.ids()
    }

    /// A region memfd from the control socket: staged under a fresh cookie (the op
    /// counter, with the top bit set so it cannot be mistaken for one) that the app's
    /// `RegisterRegion` names.
    fn stage_fd(&mut self, id: u64, fd: OwnedFd) -> Result<u64, String> {
        if self.frozen {
            return Err(format!("engine {} is moving to a new host; try again", self.name));
        }
        let cookie = (1 << 63) | self.ops.next_id();
        self.stage_region_fd(id, cookie, fd)?;
        Ok(cookie)
    }
}
