//! The engine's state snapshot and its iterative transfer to a new engine: the foundation
//! of a transparent upgrade (docs/UPGRADE.md).
//!
//! ```text
//!   old engine (keeps running)                          new engine (being built)
//!   export_full ──────── snapshot: every flow ────────▶ check_snapshot (version: refuse here)
//!   run … export_delta ─ delta: flows changed since ──▶ (kept, in order)
//!   run … export_delta ─ …                          ──▶
//!   freeze ─ final delta (engine stops) ──────────────▶
//!   hand_over ─ shared objects (fds) ─────────────────▶ import(full, deltas, handover, nic)
//!                                                       run() resumes every flow and session
//! ```
//!
//! A snapshot is `PONYSNAP`, a little-endian `u16` format version, the CRC32C of the body,
//! then the body (postcard). The version is read before anything else, so a reader that
//! does not know it refuses before the old engine stops ([`StateError::UnsupportedVersion`]);
//! the checksum makes a damaged snapshot an error rather than a plausible wrong state.
//!
//! The body holds: each flow's whole state ([`pony_proto::flow::state`]) with the engine's
//! bookkeeping of it (owner, origin, outbox, Send cookies, one-sided progress), serialized
//! per flow so that deltas replace flows as opaque bytes and only the final set is ever
//! adopted; the flow table's slots and generations (ids stay valid, stale ids stale); each
//! session's held chains, parked completions and counters (its rings' positions and its
//! pool's contents are in shared memory); listeners; regions and their keys; pending
//! one-sided ops; the counters; and the ordered table of the descriptors the state needs
//! ([`FdUse`]), which are not in the bytes. Data a flow still sends from an app's pool,
//! and messages being reassembled into it, are references into the pool (buffer indices),
//! not copies; data the engine holds on its heap (a served read's response chunks, a
//! Write's segments cut from a region copy) is written inline.
//!
//! A delta carries the flows that changed since the previous export (the flow table's
//! marks, `FlowTable::take_changes`) and the ids of flows retired since,
//! plus the rest of the state in full: it is small (sessions, listeners, regions and ops,
//! not per-flow) and replacing it whole avoids a second change-tracking scheme.
//!
//! Between `freeze` and `hand_over` the old engine can still [`PonyEngine::thaw`] (the
//! new side refused): nothing it owns has moved. After `hand_over` the new engine owns
//! every pool reference the flows held; the old engine's copies of them are forgotten,
//! never dropped, since dropping would release buffers the new engine now uses.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pony_express::pool::{Holds, Pool, PoolPiece, RecvChain};
use pony_proto::flow::state::{self as flow_state, Adopter, BufRef, HeldRef};
use pony_proto::flow::HeldBytes;
use serde::{Deserialize, Serialize};
use snap_ipc::channel::ChannelEngineEnd;
use snap_ipc::SharedMem;

use super::entry::FlowEntry;
use super::flows::{FlowTable, TableState};
use super::link::Link;
use super::listeners::Listeners;
use super::pending::PendingOps;
use super::rejected::RejectedConnects;
use super::sessions::Sessions;
use super::{PonyConfig, PonyEngine, PonyStats};
use crate::nic::Nic;
use crate::regions::{Regions, RegionsState};
use crate::session::{EngineSession, SessionState};

/// The state format this engine writes and the only one it reads.
pub const FORMAT_VERSION: u16 = 1;

const MAGIC: &[u8; 8] = b"PONYSNAP";
const HEADER_LEN: usize = MAGIC.len() + 2 + 4;

/// Why a snapshot cannot be exported or imported.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The bytes do not start like a snapshot (or are shorter than its header).
    #[error("not a Pony engine state snapshot")]
    NotASnapshot,
    /// Written in a format version this engine does not read: the old engine keeps
    /// running.
    #[error("state format version {found}; this engine reads version {supported}")]
    UnsupportedVersion {
        /// The snapshot's version.
        found: u16,
        /// The one this engine reads.
        supported: u16,
    },
    /// The body does not match its checksum.
    #[error("state snapshot damaged (checksum mismatch)")]
    Checksum,
    /// The body does not decode, or decodes to a state that cannot be.
    #[error("state snapshot: {0}")]
    Invalid(String),
    /// A delta that does not follow the previous export of the same transfer.
    #[error("delta {got} of transfer {transfer:#x} does not follow export {expected}")]
    OutOfSequence {
        /// The transfer the full snapshot started.
        transfer: u64,
        /// The sequence number expected (the previous export's + 1).
        expected: u64,
        /// The delta's.
        got: u64,
    },
    /// An export was asked for in the wrong phase (a delta before a full snapshot, or
    /// anything after `freeze`).
    #[error("export out of order: {0}")]
    Phase(&'static str),
    /// A descriptor the snapshot's table names was not handed over.
    #[error("not handed over: {0}")]
    MissingHandle(String),
}

/// One entry of a snapshot's descriptor table: what the descriptor at that position is.
/// The process-to-process transfer passes the descriptors in this order with
/// `SCM_RIGHTS`; in one process, [`Handover`] carries the same objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FdUse {
    /// The NIC's socket (UDP socket; XSK and UMEM for AF_XDP).
    Nic,
    /// A session's channel (rings memfd and doorbell eventfds).
    SessionChannel(u64),
    /// A session's buffer pool memfd.
    SessionPool(u64),
    /// A registered region's memfd.
    Region(u32),
    /// A region memfd staged for session `.0`'s `RegisterRegion` with cookie `.1`.
    Staged(u64, u64),
}

/// What [`PonyEngine::check_snapshot`] learned from a snapshot's header and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The transfer it belongs to.
    pub transfer: u64,
    /// Its sequence number in the transfer (0: the full snapshot).
    pub seq: u64,
    /// Whether it is a delta.
    pub delta: bool,
    /// Flows it carries.
    pub flows: usize,
    /// Flows it retires.
    pub removed: usize,
    /// Sessions.
    pub sessions: usize,
    /// The descriptor table.
    pub fds: Vec<FdUse>,
}

/// The body of a snapshot (see the module documentation).
#[derive(Serialize, Deserialize)]
struct Body {
    transfer: u64,
    seq: u64,
    delta: bool,
    /// `CLOCK_MONOTONIC` at the transfer's base instant (instants are relative to it).
    base_ns: u64,
    flows: Vec<FlowBytes>,
    removed: Vec<u32>,
    table: TableState,
    sessions: Vec<(u64, SessionState)>,
    /// (last id, round-robin cursor, ops per session).
    session_meta: (u64, u64, Vec<(u64, u32)>),
    listeners: Listeners,
    regions: RegionsState,
    ops: PendingOps,
    /// The counters, as JSON (they carry a live-only field that JSON can skip).
    stats: String,
    fds: Vec<FdUse>,
}

/// One flow's serialized state, written as one byte string (a `Vec<u8>` through serde's
/// default is a sequence decoded byte by byte, which showed in the blackout's profile).
#[derive(Serialize, Deserialize)]
struct FlowBytes(u32, #[serde(with = "byte_string")] Vec<u8>);

/// `#[serde(with)]` for a `Vec<u8>` as serde bytes.
mod byte_string {
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Bytes;
        impl Visitor<'_> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(Bytes)
    }
}

/// An export in progress, kept by the old engine between its exports.
#[derive(Debug, Clone, Copy)]
pub(super) struct Transfer {
    id: u64,
    seq: u64,
    base: Instant,
    base_ns: u64,
}

/// The objects a frozen engine hands to the one that imports its state: in one process,
/// what the descriptor table's descriptors are in two.
#[derive(Debug)]
pub struct Handover {
    pub(super) sessions: BTreeMap<u64, (ChannelEngineEnd, Arc<Pool>)>,
    pub(super) regions: HashMap<u32, Arc<SharedMem>>,
    pub(super) staged: Vec<((u64, u64), OwnedFd)>,
}

fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64).saturating_mul(1_000_000_000) + t.tv_nsec as u64
}

fn encode(body: &Body) -> Result<Vec<u8>, StateError> {
    let payload = postcard::to_allocvec(body).map_err(|e| StateError::Invalid(e.to_string()))?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

fn decode(bytes: &[u8]) -> Result<Body, StateError> {
    if bytes.len() < HEADER_LEN || &bytes[..MAGIC.len()] != MAGIC {
        return Err(StateError::NotASnapshot);
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != FORMAT_VERSION {
        return Err(StateError::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let crc = u32::from_le_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]);
    let payload = &bytes[HEADER_LEN..];
    if crc32c::crc32c(payload) != crc {
        return Err(StateError::Checksum);
    }
    postcard::from_bytes(payload).map_err(|e| StateError::Invalid(e.to_string()))
}

impl PonyEngine {
    /// Starts a transfer: the whole state, while the engine keeps running (brownout).
    pub fn export_full(&mut self) -> Result<Vec<u8>, StateError> {
        if self.frozen {
            return Err(StateError::Phase("the engine is frozen"));
        }
        let mut id = [0u8; 8];
        rustix::rand::getrandom(&mut id, rustix::rand::GetRandomFlags::empty())
            .map_err(|e| StateError::Invalid(format!("getrandom: {e}")))?;
        let t = Transfer {
            id: u64::from_le_bytes(id),
            seq: 0,
            base: Instant::now(),
            base_ns: monotonic_ns(),
        };
        self.transfer = Some(t);
        // Everything goes now: the marks restart from here.
        let _ = self.flows.take_changes();
        let ids = self.flows.ids();
        self.export(t, false, ids, Vec::new())
    }

    /// The flows changed (and retired) since the previous export, with the rest of the
    /// state; the engine keeps running.
    pub fn export_delta(&mut self) -> Result<Vec<u8>, StateError> {
        if self.frozen {
            return Err(StateError::Phase("the engine is frozen"));
        }
        self.next_delta()
    }

    fn next_delta(&mut self) -> Result<Vec<u8>, StateError> {
        let Some(mut t) = self.transfer else {
            return Err(StateError::Phase("a delta before the full snapshot"));
        };
        t.seq += 1;
        self.transfer = Some(t);
        let (dirty, removed) = self.flows.take_changes();
        self.export(t, true, dirty, removed)
    }

    /// Stops the engine (blackout: [`snap_runtime::Engine::run`] does nothing from now
    /// on) and returns the final delta. Packets the NIC refused earlier get one last try;
    /// any still refused are left to the protocol's retransmission.
    pub fn freeze(&mut self) -> Result<Vec<u8>, StateError> {
        if self.frozen {
            return Err(StateError::Phase("already frozen"));
        }
        self.link.flush_stash(&mut self.stats);
        self.frozen = true;
        self.paused.store(true, std::sync::atomic::Ordering::Relaxed);
        self.next_delta()
    }

    /// The new engine refused the state: resume as if no transfer had happened.
    pub fn thaw(&mut self) {
        self.frozen = false;
        self.paused.store(false, std::sync::atomic::Ordering::Relaxed);
        self.transfer = None;
    }

    /// Whether the engine is frozen.
    pub fn is_frozen(&self) -> bool {
        self.frozen
    }

    /// Gives up the shared objects the state refers to, for [`PonyEngine::import`]. The
    /// flows' pool references pass to the importer with the state, so the old copies are
    /// forgotten rather than dropped (see the module documentation); the NIC is dropped
    /// (the importer's NIC is on a duplicate of its socket).
    pub fn hand_over(mut self) -> Handover {
        self.take_objects()
    }

    /// [`Self::hand_over`] in place: the engine stays, frozen and empty (it is dropped
    /// later by the runtime's thread, with nothing left to release).
    pub(super) fn take_objects(&mut self) -> Handover {
        std::mem::forget(self.flows.drain());
        let sessions = self
            .sessions
            .drain()
            .into_iter()
            .map(|(id, s)| (id, s.into_handles()))
            .collect();
        let regions = self.regions.drain_mems().into_iter().collect();
        let staged = self.sessions.drain_staged();
        Handover {
            sessions,
            regions,
            staged,
        }
    }

    pub(super) fn fd_table(&self) -> Vec<FdUse> {
        let mut fds = vec![FdUse::Nic];
        for (id, _) in self.sessions.iter() {
            fds.push(FdUse::SessionChannel(id));
            fds.push(FdUse::SessionPool(id));
        }
        fds.extend(
            self.regions
                .state()
                .regions
                .iter()
                .map(|&(r, ..)| FdUse::Region(r)),
        );
        fds.extend(self.sessions.staged_keys().map(|(s, c)| FdUse::Staged(s, c)));
        fds
    }

    fn export(
        &mut self,
        t: Transfer,
        delta: bool,
        ids: Vec<u32>,
        removed: Vec<u32>,
    ) -> Result<Vec<u8>, StateError> {
        let flows = flow_state::with_export(t.base, || {
            ids.iter()
                .filter_map(|&id| self.flows.get(id).map(|e| (id, e)))
                .map(|(id, e)| postcard::to_allocvec(e).map(|b| FlowBytes(id, b)))
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|e| StateError::Invalid(format!("flow: {e}")))?;
        let stats = serde_json::to_string(&self.stats).map_err(|e| StateError::Invalid(e.to_string()))?;
        let body = Body {
            transfer: t.id,
            seq: t.seq,
            delta,
            base_ns: t.base_ns,
            flows,
            removed,
            table: self.flows.state(),
            sessions: self.sessions.iter().map(|(id, s)| (id, s.state())).collect(),
            session_meta: self.sessions.meta(),
            listeners: self.listeners.clone(),
            regions: self.regions.state(),
            ops: self.ops.clone(),
            stats,
            fds: self.fd_table(),
        };
        encode(&body)
    }

    /// Reads a snapshot's header and body without building anything: what the new side
    /// does on receiving the full snapshot, so that an unreadable version is refused while
    /// the old engine still runs.
    pub fn check_snapshot(bytes: &[u8]) -> Result<SnapshotInfo, StateError> {
        let b = decode(bytes)?;
        Ok(SnapshotInfo {
            transfer: b.transfer,
            seq: b.seq,
            delta: b.delta,
            flows: b.flows.len(),
            removed: b.removed.len(),
            sessions: b.sessions.len(),
            fds: b.fds,
        })
    }

    /// The engine `full` then `deltas` (in order) describe, on `nic` and the objects of
    /// `handover`, with `cfg` for its settings (the flow table keeps the snapshot's
    /// shape, so that ids stay valid). Its first `run` resumes every flow and session.
    pub fn import(
        name: impl Into<String>,
        nic: Box<dyn Nic>,
        mut cfg: PonyConfig,
        full: &[u8],
        deltas: &[Vec<u8>],
        mut handover: Handover,
    ) -> Result<PonyEngine, StateError> {
        let mut body = decode(full)?;
        if body.delta {
            return Err(StateError::Invalid("the first snapshot is a delta".into()));
        }
        let mut flows: BTreeMap<u32, Vec<u8>> = std::mem::take(&mut body.flows)
            .into_iter()
            .map(|FlowBytes(id, b)| (id, b))
            .collect();
        for d in deltas {
            let mut next = decode(d)?;
            if !next.delta || next.transfer != body.transfer || next.seq != body.seq + 1 {
                return Err(StateError::OutOfSequence {
                    transfer: body.transfer,
                    expected: body.seq + 1,
                    got: next.seq,
                });
            }
            for id in &next.removed {
                flows.remove(id);
            }
            flows.extend(
                std::mem::take(&mut next.flows)
                    .into_iter()
                    .map(|FlowBytes(id, b)| (id, b)),
            );
            body = next;
        }
        for fd in &body.fds {
            let present = match *fd {
                FdUse::Nic => true,
                FdUse::SessionChannel(s) | FdUse::SessionPool(s) => handover.sessions.contains_key(&s),
                FdUse::Region(r) => handover.regions.contains_key(&r),
                FdUse::Staged(s, c) => handover.staged.iter().any(|(k, _)| *k == (s, c)),
            };
            if !present {
                return Err(StateError::MissingHandle(format!("{fd:?}")));
            }
        }
        let regions = Regions::adopt(body.regions, &mut handover.regions).map_err(StateError::Invalid)?;
        let stats: PonyStats =
            serde_json::from_str(&body.stats).map_err(|e| StateError::Invalid(e.to_string()))?;
        let now_ns = monotonic_ns();
        let now = Instant::now();
        let base = now
            .checked_sub(Duration::from_nanos(now_ns.saturating_sub(body.base_ns)))
            .ok_or_else(|| StateError::Invalid("base instant out of range".into()))?;

        // Sessions first: the flows' references resolve into their pools.
        let mut sessions = Sessions::default();
        let mut pools = HashMap::new();
        for (id, st) in body.sessions {
            let (chan, pool) = handover
                .sessions
                .remove(&id)
                .ok_or_else(|| StateError::MissingHandle(format!("session {id}")))?;
            let key = st.pool_key;
            let s = EngineSession::adopt(chan, pool, st).map_err(StateError::Invalid)?;
            pools.insert(key, (s.pool_arc().clone(), s.holds().clone()));
            sessions.insert(id, s);
        }
        let (last_id, cursor, ops) = body.session_meta;
        sessions.set_meta(last_id, cursor, ops);
        for ((sid, cookie), fd) in handover.staged {
            sessions.stage(sid, cookie, fd).map_err(StateError::Invalid)?;
        }

        let adopter = PoolAdopter {
            pools,
            pieces: HashMap::new(),
        };
        let mut entries = Vec::with_capacity(flows.len());
        let decoded = flow_state::with_import(base, Box::new(adopter), || {
            for (id, bytes) in &flows {
                let e: FlowEntry = postcard::from_bytes(bytes).map_err(|e| format!("flow {id}: {e}"))?;
                entries.push((*id, Box::new(e)));
            }
            Ok::<(), String>(())
        });
        if let Err(e) = decoded {
            // What was adopted must not release buffers the old engine may still use.
            std::mem::forget(entries);
            std::mem::forget(sessions);
            return Err(StateError::Invalid(e));
        }
        for (_, e) in &mut entries {
            if let Some(bufs) = e.owner.and_then(|o| sessions.recv_buffers(o)) {
                e.flow.set_recv_buffers(bufs);
            }
        }
        let flows = match FlowTable::restore(body.table, entries) {
            Ok(t) => t,
            Err(e) => {
                std::mem::forget(sessions);
                return Err(StateError::Invalid(e));
            }
        };
        let name = name.into();
        cfg.flow.mtu = cfg.flow.mtu.min(nic.mtu());
        Ok(PonyEngine {
            link: Link::new(&name, nic, cfg.flow.mtu),
            name,
            flows,
            cfg,
            sessions,
            listeners: body.listeners,
            // Rejections are not handed over: a Connect retransmitted across the
            // upgrade is rejected again and counted once more.
            rejected: RejectedConnects::default(),
            regions,
            ops: body.ops,
            stats,
            wake_at: None,
            // The runtime must watch the adopted sessions' doorbells.
            sources_changed: true,
            transfer: None,
            frozen: false,
            paused: Arc::default(),
        })
    }
}

/// Resolves a flow's references into the adopted sessions' pools, one piece per buffer.
struct PoolAdopter {
    pools: HashMap<u64, (Arc<Pool>, Arc<Holds>)>,
    pieces: HashMap<(u64, u32), Arc<dyn HeldBytes>>,
}

impl Adopter for PoolAdopter {
    fn adopt_held(&mut self, r: HeldRef) -> Result<Arc<dyn HeldBytes>, String> {
        if let Some(p) = self.pieces.get(&(r.pool, r.buf)) {
            if p.len() != r.len as usize {
                return Err(format!("buffer {} held with two lengths", r.buf));
            }
            return Ok(p.clone());
        }
        let (pool, holds) = self
            .pools
            .get(&r.pool)
            .ok_or_else(|| format!("no pool {:#x}", r.pool))?;
        let piece: Arc<dyn HeldBytes> = Arc::new(
            PoolPiece::adopt(pool, holds, r.buf, r.len)
                .ok_or_else(|| format!("buffer {} outside its pool", r.buf))?,
        );
        self.pieces.insert((r.pool, r.buf), piece.clone());
        Ok(piece)
    }

    fn adopt_buf(&mut self, r: BufRef) -> Result<Box<dyn std::any::Any>, String> {
        let (pool, holds) = self
            .pools
            .get(&r.pool)
            .ok_or_else(|| format!("no pool {:#x}", r.pool))?;
        let len = usize::try_from(r.len).map_err(|_| "message length out of range".to_string())?;
        let chain = RecvChain::adopt(pool, holds, r.bufs, len).ok_or("reassembly chain outside its pool")?;
        Ok(Box::new(chain))
    }
}

/// `#[serde(with)]` for a [`crate::nic::PeerAddr`]: a UDP address, or none for the
/// point-to-point wire.
pub(super) mod peer_addr {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::nic::PeerAddr;

    pub(in crate::engine) fn serialize<S: Serializer>(p: &PeerAddr, s: S) -> Result<S::Ok, S::Error> {
        match p {
            PeerAddr::Udp(a) => Some(*a),
            PeerAddr::Shm => None,
        }
        .serialize(s)
    }

    pub(in crate::engine) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PeerAddr, D::Error> {
        Ok(match Option::<SocketAddr>::deserialize(d)? {
            Some(a) => PeerAddr::Udp(a),
            None => PeerAddr::Shm,
        })
    }
}
