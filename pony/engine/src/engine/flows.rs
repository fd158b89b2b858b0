//! [`FlowTable`]: the flow mapper. Our flow id → [`FlowEntry`], and (peer, the peer's flow
//! id) → our id for accepted flows, so a retransmitted Connect finds the flow it already
//! made. Ids are handed out in order from 1 and never reused.
//!
//! Entries are boxed: a step takes each entry out of the table while it drives it (so the
//! entry and the rest of the engine can be borrowed at once), and a `Flow` is too large to
//! move twice per flow per step.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use super::entry::FlowEntry;
use crate::nic::PeerAddr;

/// The engine's flows.
#[derive(Debug)]
pub(super) struct FlowTable {
    by_id: BTreeMap<u32, Box<FlowEntry>>,
    by_peer: HashMap<(PeerAddr, u32), u32>,
    next_id: u32,
    /// The ids a step visits, kept to reuse its allocation.
    ids: Vec<u32>,
}

impl Default for FlowTable {
    fn default() -> Self {
        FlowTable {
            by_id: BTreeMap::new(),
            by_peer: HashMap::new(),
            next_id: 1,
            ids: Vec::new(),
        }
    }
}

impl FlowTable {
    /// The id the next flow gets.
    pub(super) fn next_id(&self) -> u32 {
        self.next_id
    }

    /// Adds a new flow, made with id [`FlowTable::next_id`]; an accepted one (with a
    /// `peer_key`) is also found by its peer's id from now on.
    pub(super) fn insert(&mut self, e: Box<FlowEntry>) {
        let id = self.next_id;
        debug_assert_eq!(e.flow.local_id(), id);
        self.next_id += 1;
        if let Some(k) = e.peer_key {
            self.by_peer.insert((e.peer, k), id);
        }
        self.by_id.insert(id, e);
    }

    /// Flows alive now.
    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(super) fn get(&self, id: u32) -> Option<&FlowEntry> {
        self.by_id.get(&id).map(|e| &**e)
    }

    pub(super) fn get_mut(&mut self, id: u32) -> Option<&mut FlowEntry> {
        self.by_id.get_mut(&id).map(|e| &mut **e)
    }

    /// The flow `peer` opened with its id `peer_id`, if we accepted it.
    pub(super) fn accepted_mut(&mut self, peer: PeerAddr, peer_id: u32) -> Option<&mut FlowEntry> {
        let id = *self.by_peer.get(&(peer, peer_id))?;
        self.get_mut(id)
    }

    /// Our flow id for session `sid`'s `flow`, if that flow exists and is the session's.
    pub(super) fn owned(&self, sid: u64, flow: u64) -> Option<u32> {
        let id = u32::try_from(flow).ok()?;
        self.get(id).filter(|e| e.owner == Some(sid)).map(|_| id)
    }

    /// Session `sid`'s flow `flow`, if it exists and is the session's.
    pub(super) fn owned_mut(&mut self, sid: u64, flow: u64) -> Option<&mut FlowEntry> {
        let id = self.owned(sid, flow)?;
        self.get_mut(id)
    }

    /// Takes flow `id` out to work on it alongside the rest of the engine; [`put`] it back
    /// or [`retire`] it.
    ///
    /// [`put`]: FlowTable::put
    /// [`retire`]: FlowTable::retire
    pub(super) fn take(&mut self, id: u32) -> Option<Box<FlowEntry>> {
        self.by_id.remove(&id)
    }

    /// Puts back a flow [`FlowTable::take`] took out.
    pub(super) fn put(&mut self, id: u32, e: Box<FlowEntry>) {
        self.by_id.insert(id, e);
    }

    /// Forgets a finished flow taken out with [`FlowTable::take`].
    pub(super) fn retire(&mut self, e: &FlowEntry) {
        if let Some(k) = e.peer_key {
            self.by_peer.remove(&(e.peer, k));
        }
    }

    /// The ids of all flows now, for a step to visit; give the vector back with
    /// [`FlowTable::end_visit`].
    pub(super) fn visit(&mut self) -> Vec<u32> {
        let mut ids = std::mem::take(&mut self.ids);
        ids.clear();
        ids.extend(self.by_id.keys().copied());
        ids
    }

    /// Keeps the allocation of a [`FlowTable::visit`] vector.
    pub(super) fn end_visit(&mut self, ids: Vec<u32>) {
        self.ids = ids;
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &FlowEntry> + '_ {
        self.by_id.values().map(|e| &**e)
    }

    /// Session `sid` detached: its flows close, ownerless.
    pub(super) fn disown(&mut self, sid: u64) {
        for e in self.by_id.values_mut().filter(|e| e.owner == Some(sid)) {
            e.disown();
        }
    }

    /// The earliest timer of any flow.
    pub(super) fn next_timeout(&self) -> Option<Instant> {
        self.iter().filter_map(|e| e.flow.poll_timeout()).min()
    }
}
