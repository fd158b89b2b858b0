//! The Pony engine: an `engines::Engine` that joins apps' sessions ([`crate::app`]) to flows
//! ([`crate::flow`]) over a NIC ([`crate::nic`]), with the wire format of [`crate::wire`].
//!
//! ```text
//!   app sessions (EngineSession)        PonyEngine::run(now), bounded          Box<dyn Nic>
//!   ─────────────────────────────       ─────────────────────────────          ────────────
//!   command ring ──▶ commands.rs ──▶ flow mapper: local id → FlowEntry ──▶ emit ──▶ send
//!   completion ring ◀── events ◀──── { Flow, peer, owner, outbox, … } ◀── parse ◀── recv
//!                                      ops.rs: one-sided ops (both ends), Regions checks
//! ```
//!
//! Files: `io.rs` the NIC side and the flow mapper's routing, `commands.rs` app commands,
//! `ops.rs` flow events and one-sided ops, this file the state, attach/detach and `run`.
//!
//! One step ([`PonyEngine::run`]) does, each bounded: up to `packet_batch` packets off the
//! NIC (parsed, then routed by `dst_flow`; a Connect goes to the app listening on the
//! service it names, or is rejected), up to `command_batch` app commands (round robin over sessions), then
//! drives every flow: timers, events → completions, the flow's outbox → the flow, and
//! `poll_transmit` → `Repr::emit` → `Nic::send`. A packet the NIC refuses
//! ([`crate::nic::NicError::WouldBlock`]) is kept and sent first in a later step.
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
//! `app::regions`).
//!
//! Region memfds (a one-sided target must be registered first) cannot travel on the
//! command ring. Two paths: descriptors appended to the attach request after the optional
//! completion doorbell are registered at attach and their grants returned in `details`;
//! later ones are staged by the control plane with [`PonyEngine::stage_region_fd`] (on the
//! engine thread, through the mailbox) and claimed by a `RegisterRegion` command with the
//! same cookie, so registration stays ordered with the app's other commands. In-process
//! callers may use [`PonyEngine::register_region_local`].

mod commands;
mod io;
mod ops;
mod stats;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod zero_copy_tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use pony_express::app::{AppSession, Completion, Completions, Cookie, SessionShape};
use snap_ipc::channel::APP_FDS;
use snap_ipc::SharedMem;
use snap_runtime::{
    AppFacing, AttachReply, AttachRequest, Engine, RingSet, RunOutcome, WakeSource, WorkProbe,
};

use crate::nic::{Nic, PeerAddr};
use crate::regions::{RegionGrant, Regions};
use crate::session::{ChainId, EngineSession, SessionBuffers};
use pony_proto::flow::{Chunks, Flow, FlowConfig, OneSided};
use pony_proto::wire::{self, ServiceId};
pub use stats::PonyStats;

/// Settings of one Pony engine.
#[derive(Debug, Clone)]
pub struct PonyConfig {
    /// Flow parameters; `mtu` is lowered to the NIC's (by default it is the NIC's).
    pub flow: FlowConfig,
    /// Rings and pool of each app session.
    pub session: SessionShape,
    /// Packets taken off the NIC per step.
    pub packet_batch: u32,
    /// App commands taken per step (all sessions together).
    pub command_batch: u32,
    /// Packets sent per step (all flows together).
    pub transmit_batch: u32,
    /// Retry interval when the NIC is full (nothing else would wake the engine for it).
    pub retry_after: Duration,
}

impl Default for PonyConfig {
    /// Flow defaults except the MTU, which is the NIC's.
    fn default() -> Self {
        Self {
            flow: FlowConfig {
                mtu: usize::MAX,
                ..FlowConfig::default()
            },
            session: SessionShape::default(),
            packet_batch: 64,
            command_batch: 64,
            transmit_batch: 128,
            retry_after: Duration::from_micros(50),
        }
    }
}

/// How a flow came to be, i.e. which completion announces it.
#[derive(Debug, Clone, Copy)]
enum Origin {
    /// Opened by the owner's OpenFlow with this cookie.
    Opened(Cookie),
    /// Accepted for the owner's Listen with this cookie.
    Accepted(Cookie),
}

/// Packets the NIC refused: a batch of `segment`-sized packets (the last may be shorter).
#[derive(Debug)]
struct Stashed {
    packets: Vec<u8>,
    segment: usize,
    to: PeerAddr,
}

/// Something waiting to be handed to a flow (it may refuse with `Busy`).
#[derive(Debug)]
enum Out {
    Message {
        stream: u32,
        data: Chunks,
        cookie: Cookie,
    },
    OneSided(OneSided),
}

/// Progress of a Write a peer is making into one of our regions.
#[derive(Debug, Clone, Copy)]
enum InboundWrite {
    Progress(u64),
    Refused,
}

/// One flow and everything the engine keeps about it.
#[derive(Debug)]
struct FlowEntry {
    flow: Flow<SessionBuffers>,
    peer: PeerAddr,
    /// The peer's id, for accepted flows (to recognise a retransmitted Connect).
    peer_key: Option<u32>,
    /// Owning session; `None` once it detached (the flow is closing).
    owner: Option<u64>,
    origin: Origin,
    connected: bool,
    outbox: VecDeque<Out>,
    /// The owner asked to close: the flow closes once the outbox is drained into it, so
    /// Sends posted before the CloseFlow are delivered, as with a socket's close.
    close_when_drained: bool,
    /// Cookies of messages handed to the flow, by (stream, message id).
    sends: HashMap<(u32, u64), Cookie>,
    inbound_writes: HashMap<u64, InboundWrite>,
}

/// A one-sided op one of our apps started and the peer has not answered yet.
#[derive(Debug)]
struct PendingOp {
    session: u64,
    flow: u32,
    cookie: Cookie,
    kind: OpKind,
}

#[derive(Debug)]
enum OpKind {
    /// Read / IndirectRead into `chain`; response packets are written into it as they
    /// come, `total` (the response's length) fixed by the first.
    Read {
        chain: ChainId,
        total: Option<u32>,
        got: u64,
    },
    Write,
}

/// See the module documentation.
pub struct PonyEngine {
    name: String,
    cfg: PonyConfig,
    nic: Box<dyn Nic>,
    rx_buf: Vec<u8>,
    /// Room for `max_batch` packets of `tx_packet_cap` bytes: a flow's packets are emitted
    /// end to end and sent with one [`Nic::send_batch`].
    tx_buf: Vec<u8>,
    tx_packet_cap: usize,
    max_batch: usize,
    /// Packets the NIC refused (queue full), sent before anything else.
    stash: VecDeque<Stashed>,
    /// Boxed: `drive_flows` takes each entry out of the map for a step, and a `Flow` is
    /// too large to move twice per flow per step.
    flows: BTreeMap<u32, Box<FlowEntry>>,
    /// The flow ids `drive_flows` visits, kept to reuse its allocation.
    flow_ids: Vec<u32>,
    by_peer: HashMap<(PeerAddr, u32), u32>,
    next_flow: u32,
    sessions: BTreeMap<u64, EngineSession>,
    next_session: u64,
    cursor: u64,
    /// Who accepts the flows opened to each service: (session, its Listen's cookie).
    listeners: HashMap<ServiceId, (u64, Cookie)>,
    staged: HashMap<(u64, Cookie), OwnedFd>,
    regions: Regions,
    ops: HashMap<u64, PendingOp>,
    next_op: u64,
    rings: RingSet,
    stats: PonyStats,
    /// When the engine must run again without an interrupt (computed at the end of a step).
    wake_at: Option<Instant>,
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
        cfg.flow.mtu = cfg.flow.mtu.min(nic.mtu());
        let mtu = nic.mtu().max(wire::MAX_HEADER_LEN);
        let tx_packet_cap = cfg.flow.mtu.max(wire::MAX_HEADER_LEN) + 64;
        let max_batch = nic.max_batch().max(1);
        Self {
            name: name.into(),
            nic,
            rx_buf: vec![0; mtu],
            tx_buf: vec![0; max_batch * tx_packet_cap],
            tx_packet_cap,
            max_batch,
            cfg,
            stash: VecDeque::new(),
            flows: BTreeMap::new(),
            flow_ids: Vec::new(),
            by_peer: HashMap::new(),
            next_flow: 1,
            sessions: BTreeMap::new(),
            next_session: 1,
            cursor: 0,
            listeners: HashMap::new(),
            staged: HashMap::new(),
            regions: Regions::new(),
            ops: HashMap::new(),
            next_op: 1,
            rings: RingSet::default(),
            stats: PonyStats::default(),
            wake_at: None,
        }
    }

    /// Counters, with the live flows' retransmission counts added in.
    pub fn stats(&self) -> PonyStats {
        let mut s = self.stats.clone();
        s.sessions = self.sessions.len();
        s.flows = self.flows.len();
        s.refusals = self.regions.refusals();
        for e in self.flows.values() {
            let f = e.flow.stats();
            s.retransmits += f.retransmits;
            s.rtos += f.rtos;
            s.dups_dropped += f.dups_dropped;
            s.buffer_drops += f.buffer_drops;
        }
        s
    }

    /// The NIC (e.g. for its own counters).
    pub fn nic(&self) -> &dyn Nic {
        &*self.nic
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
        if !self.sessions.contains_key(&session) {
            return Err(format!("no session {session}"));
        }
        self.regions.register_mem(session, mem).map_err(|e| e.to_string())
    }

    /// Stages a region memfd for `session`; its `RegisterRegion { cookie, .. }` command
    /// claims it. Meant for the control plane (the memfd came over the control socket).
    pub fn stage_region_fd(&mut self, session: u64, cookie: Cookie, fd: OwnedFd) -> Result<(), String> {
        if !self.sessions.contains_key(&session) {
            return Err(format!("no session {session}"));
        }
        self.staged.insert((session, cookie), fd);
        Ok(())
    }

    fn complete(&mut self, session: u64, c: Completion) {
        if let Some(s) = self.sessions.get_mut(&session) {
            s.complete(c);
        }
    }

    /// Drives every flow: timers, events, outbox, transmit. Returns (events handled, more
    /// to send than the budget allowed).
    fn drive_flows(&mut self, now: Instant) -> (u32, bool) {
        let mut budget = self.cfg.transmit_batch;
        let mut items = 0;
        let mut ids = std::mem::take(&mut self.flow_ids);
        ids.clear();
        ids.extend(self.flows.keys().copied());
        for &id in &ids {
            let Some(mut e) = self.flows.remove(&id) else {
                continue;
            };
            if e.flow.poll_timeout().is_some_and(|t| t <= now) {
                e.flow.handle_timeout(now);
            }
            if let Some(s) = e.owner.and_then(|o| self.sessions.get(&o)) {
                e.flow.limit_credit(s.free_bytes());
            }
            // Events can queue responses (outbox) and sending can finish a close (events):
            // a few rounds settle both without letting one flow loop forever.
            for _ in 0..3 {
                let handled = self.flow_events(id, &mut e);
                self.drain_outbox(id, &mut e);
                self.transmit(&mut e, &mut budget, now);
                items += handled;
                if handled == 0 {
                    break;
                }
            }
            if e.flow.is_finished() {
                // The last transmit may have finished a close: its event is still queued.
                items += self.flow_events(id, &mut e);
                self.retire(id, e);
            } else {
                self.flows.insert(id, e);
            }
        }
        self.flow_ids = ids;
        (items, budget == 0)
    }

    /// Forgets a finished flow, keeping its counters.
    fn retire(&mut self, id: u32, e: Box<FlowEntry>) {
        let f = e.flow.stats();
        self.stats.retransmits += f.retransmits;
        self.stats.rtos += f.rtos;
        self.stats.dups_dropped += f.dups_dropped;
        self.stats.buffer_drops += f.buffer_drops;
        if let Some(k) = e.peer_key {
            self.by_peer.remove(&(e.peer, k));
        }
        self.ops.retain(|_, op| op.flow != id);
    }

    /// Takes up to `command_batch` commands, one session after the other from a rotating
    /// start so that a busy app cannot starve the others across steps.
    fn take_commands(&mut self, now: Instant) -> (u32, bool) {
        let ids: Vec<u64> = self.sessions.keys().copied().collect();
        if ids.is_empty() {
            return (0, false);
        }
        let start = (self.cursor as usize) % ids.len();
        self.cursor = self.cursor.wrapping_add(1);
        let mut n = 0;
        let per_session = (self.cfg.command_batch / ids.len() as u32).max(1);
        for k in 0..ids.len() {
            let sid = ids[(start + k) % ids.len()];
            for _ in 0..per_session {
                if n >= self.cfg.command_batch {
                    return (n, true);
                }
                let Some(s) = self.sessions.get_mut(&sid) else {
                    break;
                };
                let accepted = match s.next_command() {
                    Ok(Some(a)) => a,
                    Ok(None) => break,
                    Err(e) => {
                        // A corrupt ring: nothing more can be read from it. The control
                        // plane detaches the app when its connection closes.
                        log::warn!("{}: session {sid}: {e}", self.name);
                        break;
                    }
                };
                n += 1;
                self.stats.commands += 1;
                self.command(sid, accepted, now);
            }
        }
        (n, self.rings.any_pending())
    }

    fn next_wake(&self, retry: bool, now: Instant) -> Option<Instant> {
        let mut at = self.nic.poll_at();
        let mut earliest = |t: Option<Instant>| {
            if let Some(t) = t {
                at = Some(at.map_or(t, |a| a.min(t)));
            }
        };
        for e in self.flows.values() {
            earliest(e.flow.poll_timeout());
        }
        if retry {
            earliest(Some(now + self.cfg.retry_after));
        }
        at
    }
}

impl FlowEntry {
    fn new(flow: Flow<SessionBuffers>, peer: PeerAddr, owner: u64, origin: Origin) -> Box<Self> {
        Box::new(Self {
            flow,
            peer,
            peer_key: None,
            owner: Some(owner),
            origin,
            connected: false,
            outbox: VecDeque::new(),
            close_when_drained: false,
            sends: HashMap::new(),
            inbound_writes: HashMap::new(),
        })
    }
}

fn dup(fd: impl AsFd) -> Result<OwnedFd, String> {
    fd.as_fd().try_clone_to_owned().map_err(|e| e.to_string())
}

impl Engine for PonyEngine {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(&mut self, now: Instant) -> RunOutcome {
        let nic_ok = self.flush_stash();
        let (rx, rx_more) = self.receive(now);
        let (cmds, cmd_more) = self.take_commands(now);
        let (events, tx_more) = if nic_ok { self.drive_flows(now) } else { (0, false) };
        self.wake_at = self.next_wake(!self.stash.is_empty(), now);
        RunOutcome {
            items: rx + cmds + events,
            pending: rx_more || cmd_more || tx_more,
        }
    }

    fn wake_sources(&self) -> Vec<WakeSource> {
        let mut v: Vec<WakeSource> = self.nic.wake_source().into_iter().collect();
        v.extend(
            self.sessions
                .values()
                .map(|s| WakeSource::Doorbell(s.doorbell().clone())),
        );
        v
    }

    fn work_probe(&self) -> WorkProbe {
        let nic = self.nic.work_probe();
        let rings = self.rings.clone();
        WorkProbe::new(move || nic.has_work() || rings.any_pending())
    }

    fn poll_at(&self) -> Option<Instant> {
        self.wake_at
    }

    fn app_facing(&mut self) -> Option<&mut dyn AppFacing> {
        Some(self)
    }
}

impl AppFacing for PonyEngine {
    /// Descriptors in: the completion doorbell's two if `notify`, then any number of
    /// size-sealed region memfds, registered now (grants in `details.regions`). Out: the
    /// session's [`pony_express::app::session::SESSION_FDS`] descriptors.
    fn attach_app(&mut self, mut request: AttachRequest) -> Result<AttachReply, String> {
        let bell = if request.notify { APP_FDS } else { 0 };
        if request.fds.len() < bell {
            return Err(format!("attach with notify needs {bell} descriptors first"));
        }
        let region_fds = request.fds.split_off(bell);
        let completion = request.notify.then_some(request.fds);
        let (session, fds) =
            EngineSession::create(self.cfg.session, completion).map_err(|e| e.to_string())?;
        let id = self.next_session;
        self.next_session += 1;
        let mut grants = Vec::new();
        for fd in region_fds {
            match self.regions.register(id, fd, None) {
                Ok(g) => grants.push(serde_json::json!({ "region": g.region, "key": g.key, "len": g.len })),
                Err(e) => {
                    self.regions.remove_all_of(id);
                    return Err(format!("region: {e}"));
                }
            }
        }
        self.rings.insert(id, session.command_probe());
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
        let Some(mut session) = self.sessions.remove(&id) else {
            return false;
        };
        self.rings.remove(id);
        // Rebuild the pool first: chains held by pending ops keep one reference each, which
        // finishing them below drops, so the pool ends up entirely free.
        let stats = session.reclaim();
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
        let regions = self.regions.remove_all_of(id);
        self.listeners.retain(|_, (s, _)| *s != id);
        self.staged.retain(|(s, _), _| *s != id);
        for e in self.flows.values_mut().filter(|e| e.owner == Some(id)) {
            e.owner = None;
            e.sends.clear();
            e.outbox.retain(|o| matches!(o, Out::OneSided(_)));
            e.flow.close();
        }
        log::info!(
            "{}: session {id} detached: {} buffers held at reclaim, {} free after, {regions} regions dropped",
            self.name,
            stats.held,
            session.pool().stats().free
        );
        true
    }

    fn channel_ids(&self) -> Vec<u64> {
        self.sessions.keys().copied().collect()
    }

    /// A region memfd from the control socket: staged under a fresh cookie (the op
    /// counter, with the top bit set so it cannot be mistaken for one) that the app's
    /// `RegisterRegion` names.
    fn stage_fd(&mut self, id: u64, fd: OwnedFd) -> Result<u64, String> {
        let cookie = (1 << 63) | self.next_op;
        self.next_op += 1;
        self.stage_region_fd(id, cookie, fd)?;
        Ok(cookie)
    }
}
