//! [`Sessions`]: the apps attached to the engine, by session id: each one's
//! [`EngineSession`], the probes of their command rings (for the runtime's work probe),
//! the cursor that rotates which session's commands are taken first, the region memfds
//! the control plane staged for them until a `RegisterRegion` claims them, and which of
//! them are under backpressure.
//!
//! Backpressure: a session whose completions found its completion ring full takes no
//! commands until they are all pushed. While it waits, its command ring leaves the work
//! probe (so pending commands do not keep the engine thread spinning) and its completion
//! ring's probe joins the set of rings waited on for space: the engine thread sleeps until
//! the app pops a completion (the app rings the engine's doorbell on the pop that frees
//! the first slot: see `AppSession`'s `popped` for why no wakeup is lost).

use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;

use pony_express::app::{Completion, Cookie, OpErrorCode};
use pony_proto::flow::Chunks;
use snap_ipc::RingProbe;
use snap_runtime::{RingSet, WakeSource};

use crate::session::{ChainId, EngineSession, SessionBuffers};

/// The attached apps' sessions.
#[derive(Debug, Default)]
pub(super) struct Sessions {
    by_id: BTreeMap<u64, EngineSession>,
    /// The last id handed out (ids start at 1 and are never reused).
    last_id: u64,
    /// Rotates the session whose commands are taken first in a step.
    cursor: u64,
    rings: RingSet,
    staged: HashMap<(u64, Cookie), OwnedFd>,
    /// Completion rings of sessions under backpressure, waited on for a free slot.
    full: SpaceSet,
    /// Operations (Sends, Reads, Writes, IndirectReads) each session has in the engine:
    /// counted when the command is taken, uncounted when its completion is posted.
    ops: HashMap<u64, u32>,
}

impl Sessions {
    /// A fresh session id (taken even if the attach then fails).
    pub(super) fn next_id(&mut self) -> u64 {
        self.last_id += 1;
        self.last_id
    }

    /// Adds `session` under `id` (from [`Sessions::next_id`]).
    pub(super) fn insert(&mut self, id: u64, session: EngineSession) {
        self.rings.insert(id, session.command_probe());
        self.by_id.insert(id, session);
    }

    /// Takes session `id` out, with its ring probe and staged memfds.
    pub(super) fn remove(&mut self, id: u64) -> Option<EngineSession> {
        let session = self.by_id.remove(&id)?;
        self.rings.remove(id);
        self.full.remove(id);
        self.staged.retain(|(s, _), _| *s != id);
        self.ops.remove(&id);
        Some(session)
    }

    /// Sessions attached now.
    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether session `id` is attached.
    pub(super) fn contains(&self, id: u64) -> bool {
        self.by_id.contains_key(&id)
    }

    pub(super) fn get(&self, id: u64) -> Option<&EngineSession> {
        self.by_id.get(&id)
    }

    pub(super) fn get_mut(&mut self, id: u64) -> Option<&mut EngineSession> {
        self.by_id.get_mut(&id)
    }

    /// The ids of the attached sessions, in order.
    pub(super) fn ids(&self) -> Vec<u64> {
        self.by_id.keys().copied().collect()
    }

    /// Where this step's round over `n` sessions starts; each step starts one further, so
    /// that a busy app cannot starve the others across steps.
    pub(super) fn round_start(&mut self, n: usize) -> usize {
        let start = (self.cursor as usize) % n;
        self.cursor = self.cursor.wrapping_add(1);
        start
    }

    /// The probes of every command ring (shared with the runtime's work probe).
    pub(super) fn rings(&self) -> &RingSet {
        &self.rings
    }

    /// The sessions' doorbells, for the runtime to wait on.
    pub(super) fn doorbells(&self) -> impl Iterator<Item = WakeSource> + '_ {
        self.by_id
            .values()
            .map(|s| WakeSource::Doorbell(s.doorbell().clone()))
    }

    /// Buffers in session `id`'s pool for the messages of a new flow.
    pub(super) fn recv_buffers(&self, id: u64) -> Option<SessionBuffers> {
        self.get(id).map(|s| s.recv_buffers())
    }

    /// Puts sessions whose completions wait for ring space under backpressure, and takes
    /// those whose completions all went out from under it. Returns how many entered it.
    pub(super) fn update_backpressure(&mut self) -> u64 {
        let mut entered = 0;
        for (&id, s) in &self.by_id {
            let waiting = s.parked() > 0;
            if waiting == self.full.contains(id) {
                continue;
            }
            if waiting {
                self.rings.remove(id);
                self.full.insert(id, s.completion_probe());
                entered += 1;
            } else {
                self.full.remove(id);
                self.rings.insert(id, s.command_probe());
            }
        }
        entered
    }

    /// Sessions under backpressure now.
    pub(super) fn backpressured(&self) -> usize {
        self.full.len()
    }

    /// Completions of all sessions waiting for ring space now.
    pub(super) fn completions_parked(&self) -> u64 {
        self.by_id.values().map(|s| s.parked() as u64).sum()
    }

    /// The completion rings waited on for space (shared with the runtime's work probe).
    pub(super) fn space(&self) -> &SpaceSet {
        &self.full
    }

    /// Counts an operation of session `id` taken from its ring; returns whether it is
    /// within `max` (if not, the caller refuses it, and its completion uncounts it).
    pub(super) fn op_started(&mut self, id: u64, max: u32) -> bool {
        let n = self.ops.entry(id).or_default();
        *n += 1;
        *n <= max
    }

    fn op_ended(&mut self, id: u64) {
        if let Some(n) = self.ops.get_mut(&id) {
            *n = n.saturating_sub(1);
        }
    }

    /// Operations of all sessions in the engine now.
    pub(super) fn ops_outstanding(&self) -> u64 {
        self.ops.values().map(|&n| u64::from(n)).sum()
    }

    /// Posts a completion to session `id`, if it is still attached. `Sent`, `ReadDone`
    /// and `WriteDone` end an operation.
    pub(super) fn complete(&mut self, id: u64, c: Completion) {
        if matches!(
            c,
            Completion::Sent { .. } | Completion::ReadDone { .. } | Completion::WriteDone { .. }
        ) {
            self.op_ended(id);
        }
        if let Some(s) = self.by_id.get_mut(&id) {
            s.post(c);
        }
    }

    /// Rings the doorbell of every session that got completions since its last ring: once
    /// per session at the end of a step, however many completions the step posted.
    pub(super) fn ring_doorbells(&mut self) {
        for s in self.by_id.values_mut() {
            s.ring();
        }
    }

    /// A Send of session `id` failed: its `Error` completion, ending the operation.
    pub(super) fn send_failed(&mut self, id: u64, cookie: Cookie, code: OpErrorCode, detail: u64) {
        self.op_ended(id);
        self.complete(id, Completion::Error { cookie, code, detail });
    }

    /// Refuses command `cookie` of session `id` with `code`.
    pub(super) fn refuse(&mut self, id: u64, cookie: Cookie, code: OpErrorCode, detail: u64) {
        self.complete(id, Completion::Error { cookie, code, detail });
    }

    /// Ends a Read: the chain goes back to the app with the completion.
    pub(super) fn read_done(
        &mut self,
        id: u64,
        chain: Option<ChainId>,
        cookie: Cookie,
        result: Result<u32, OpErrorCode>,
    ) {
        self.op_ended(id);
        if let Some(s) = self.by_id.get_mut(&id) {
            if let Some(c) = chain {
                let _ = s.return_chain(c);
            }
            s.post(Completion::ReadDone { cookie, result });
        }
    }

    /// A Send's or Write's payload, zero-copy: the held chain becomes the pieces the flow
    /// slices and gathers; each buffer returns to the pool when the flow drops its last
    /// piece of it (acknowledged, or the flow is gone).
    pub(super) fn take_pieces(&mut self, id: u64, chain: Option<ChainId>) -> Chunks {
        let (Some(s), Some(chain)) = (self.by_id.get_mut(&id), chain) else {
            return Chunks::default();
        };
        s.take_chain_pieces(chain).unwrap_or_default()
    }

    /// Stages a region memfd for session `id` under `cookie`.
    pub(super) fn stage(&mut self, id: u64, cookie: Cookie, fd: OwnedFd) -> Result<(), String> {
        if !self.contains(id) {
            return Err(format!("no session {id}"));
        }
        self.staged.insert((id, cookie), fd);
        Ok(())
    }

    /// The counters a state snapshot carries: (last id, cursor, ops per session).
    pub(super) fn meta(&self) -> (u64, u64, Vec<(u64, u32)>) {
        let ops = self.ops.iter().map(|(&k, &v)| (k, v)).collect();
        (self.last_id, self.cursor, ops)
    }

    /// Sets the counters of [`Sessions::meta`] (an imported engine's).
    pub(super) fn set_meta(&mut self, last_id: u64, cursor: u64, ops: Vec<(u64, u32)>) {
        self.last_id = last_id;
        self.cursor = cursor;
        self.ops = ops.into_iter().collect();
    }

    /// Every session, taken out (an engine handing its state over).
    pub(super) fn drain(&mut self) -> Vec<(u64, EngineSession)> {
        for id in self.ids() {
            self.rings.remove(id);
            self.full.remove(id);
        }
        std::mem::take(&mut self.by_id).into_iter().collect()
    }

    /// The (session, cookie) of every staged memfd.
    pub(super) fn staged_keys(&self) -> impl Iterator<Item = (u64, Cookie)> + '_ {
        self.staged.keys().copied()
    }

    /// Every staged memfd, taken out.
    pub(super) fn drain_staged(&mut self) -> Vec<((u64, Cookie), OwnedFd)> {
        self.staged.drain().collect()
    }

    /// The sessions in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, &EngineSession)> + '_ {
        self.by_id.iter().map(|(&k, v)| (k, v))
    }

    /// Takes the memfd staged for session `id` under `cookie`.
    pub(super) fn claim_staged(&mut self, id: u64, cookie: Cookie) -> Option<OwnedFd> {
        self.staged.remove(&(id, cookie))
    }
}

/// Completion rings of sessions under backpressure: any with a free slot is work.
#[derive(Debug, Default, Clone)]
pub(super) struct SpaceSet(std::sync::Arc<std::sync::RwLock<Vec<(u64, RingProbe)>>>);

impl SpaceSet {
    fn insert(&self, id: u64, probe: RingProbe) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, probe));
    }

    fn remove(&self, id: u64) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(k, _)| *k != id);
    }

    fn contains(&self, id: u64) -> bool {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|(k, _)| *k == id)
    }

    fn len(&self) -> usize {
        self.0.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether any of the rings has a free slot (its app consumed something).
    pub(super) fn any_space(&self) -> bool {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|(_, p)| p.len() < p.capacity())
    }
}
