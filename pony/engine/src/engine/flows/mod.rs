//! [`FlowTable`]: the flow mapper. Our flow id → [`FlowEntry`], and (peer, the peer's flow
//! id) → our id for accepted flows, so a retransmitted Connect finds the flow it already
//! made. The table holds at most `max_flows` flows.
//!
//! A flow id is a slot and a generation: `id = generation << slot_bits | slot`, with
//! `slot_bits` just wide enough for `max_flows` slots and the generation in the bits left
//! (at least 12). A slot's generation steps each time the slot is given to a new flow, and
//! free slots are reused oldest-freed first, so an id comes back only after every slot has
//! been reused `2^generation_bits` times: long after the app, its in-flight completions
//! and the peer's packets stopped naming it. An id whose slot has held a flow but is not
//! the live one is *stale* ([`FlowTable::lookup`]): commands naming it are refused with
//! `OpErrorCode::StaleFlow`, packets for it are dropped, and both are counted. Generation
//! 0 is skipped, so no id is 0, and the generation wraps rather than overflows.
//!
//! Entries are boxed: a step takes each entry out of the table while it drives it (so the
//! entry and the rest of the engine can be borrowed at once), and a `Flow` is too large to
//! move twice per flow per step.
//!
//! For an upgrade's iterative state transfer the table keeps the ids of flows that may have
//! changed, and of flows retired, since the last export ([`FlowTable::take_changes`]):
//! every access that can mutate an entry marks it, except a step's visit, which marks only
//! the flows it actually moved ([`FlowTable::mark`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use super::entry::FlowEntry;
use crate::nic::PeerAddr;

/// Largest `max_flows`: slots 1..=2^20-1 take 20 bits, leaving 12 of generation.
pub const MAX_FLOWS_LIMIT: u32 = (1 << 20) - 1;

/// What an id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lookup {
    /// A live flow.
    Live,
    /// A slot that held flows, but not this one now: an old generation.
    Stale,
    /// Nothing this table ever handed out.
    Unknown,
}

/// The engine's flows.
#[derive(Debug)]
pub(super) struct FlowTable {
    by_id: BTreeMap<u32, Box<FlowEntry>>,
    by_peer: HashMap<(PeerAddr, u32), u32>,
    slot_bits: u32,
    generation_mask: u32,
    max_flows: u32,
    /// The generation last given out in each slot that has been used (index = slot - 1).
    generations: Vec<u32>,
    /// Slots free for reuse, oldest-freed first.
    free: VecDeque<u32>,
    /// Flows alive or taken out by a step (counts against `max_flows`).
    live: usize,
    /// The ids a step visits, kept to reuse its allocation.
    ids: Vec<u32>,
    /// Flows that may have changed since the last [`FlowTable::take_changes`].
    dirty: BTreeSet<u32>,
    /// Flows retired since then.
    removed: BTreeSet<u32>,
}

/// The table's bookkeeping beyond its entries, in a state snapshot: ids stay valid (and
/// stale ids stale) in the engine that imports it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct TableState {
    slot_bits: u32,
    generation_mask: u32,
    max_flows: u32,
    generations: Vec<u32>,
    free: VecDeque<u32>,
}

impl FlowTable {
    /// A table for at most `max_flows` flows (clamped to 1..=[`MAX_FLOWS_LIMIT`]), its
    /// generations in all the bits the slots leave.
    pub(super) fn new(max_flows: u32) -> Self {
        let max_flows = max_flows.clamp(1, MAX_FLOWS_LIMIT);
        let slot_bits = 32 - max_flows.leading_zeros();
        Self::with_generation_bits(max_flows, 32 - slot_bits)
    }

    /// Like [`FlowTable::new`] with only `generation_bits` of generation, so that tests
    /// can wrap generations quickly.
    pub(super) fn with_generation_bits(max_flows: u32, generation_bits: u32) -> Self {
        let max_flows = max_flows.clamp(1, MAX_FLOWS_LIMIT);
        let slot_bits = 32 - max_flows.leading_zeros();
        let generation_bits = generation_bits.clamp(1, 32 - slot_bits);
        FlowTable {
            by_id: BTreeMap::new(),
            by_peer: HashMap::new(),
            slot_bits,
            generation_mask: ((1u64 << generation_bits) - 1) as u32,
            max_flows,
            generations: Vec::new(),
            free: VecDeque::new(),
            live: 0,
            ids: Vec::new(),
            dirty: BTreeSet::new(),
            removed: BTreeSet::new(),
        }
    }

    /// The bookkeeping of [`TableState`].
    pub(super) fn state(&self) -> TableState {
        TableState {
            slot_bits: self.slot_bits,
            generation_mask: self.generation_mask,
            max_flows: self.max_flows,
            generations: self.generations.clone(),
            free: self.free.clone(),
        }
    }

    /// A table with `st`'s bookkeeping holding `entries` (by id). Checks that every id
    /// is the live generation of a used slot and that no slot is both used and free.
    pub(super) fn restore(st: TableState, entries: Vec<(u32, Box<FlowEntry>)>) -> Result<Self, String> {
        let bits_ok = (1..=20).contains(&st.slot_bits)
            && st.max_flows >= 1
            && st.max_flows <= MAX_FLOWS_LIMIT
            && u64::from(st.generation_mask) < (1u64 << (32 - st.slot_bits));
        if !bits_ok || st.generations.len() > st.max_flows as usize {
            return Err("flow table bookkeeping out of range".into());
        }
        let mut t = FlowTable {
            by_id: BTreeMap::new(),
            by_peer: HashMap::new(),
            slot_bits: st.slot_bits,
            generation_mask: st.generation_mask,
            max_flows: st.max_flows,
            generations: st.generations,
            free: st.free,
            live: 0,
            ids: Vec::new(),
            dirty: BTreeSet::new(),
            removed: BTreeSet::new(),
        };
        let free: BTreeSet<u32> = t.free.iter().copied().collect();
        if free.len() != t.free.len() || free.iter().any(|&s| s == 0 || s as usize > t.generations.len()) {
            return Err("flow table free list is not a set of used slots".into());
        }
        for (id, e) in entries {
            let (slot, generation) = t.split(id);
            let live = slot >= 1 && t.generations.get(slot as usize - 1) == Some(&generation);
            if !live || free.contains(&slot) || e.flow.local_id() != id || t.by_id.contains_key(&id) {
                return Err(format!("flow {id} does not fit the table"));
            }
            if let Some(k) = e.peer_key {
                t.by_peer.insert((e.peer, k), id);
            }
            t.by_id.insert(id, e);
            t.live += 1;
        }
        if t.live + free.len() != t.generations.len() {
            return Err("flow table slots neither live nor free".into());
        }
        Ok(t)
    }

    /// Marks flow `id` as possibly changed (a step's visit changed it).
    pub(super) fn mark(&mut self, id: u32) {
        self.dirty.insert(id);
    }

    /// The flows that may have changed and the flows retired since the last call, and
    /// starts counting afresh.
    pub(super) fn take_changes(&mut self) -> (Vec<u32>, Vec<u32>) {
        let dirty = std::mem::take(&mut self.dirty).into_iter().collect();
        let removed = std::mem::take(&mut self.removed).into_iter().collect();
        (dirty, removed)
    }

    /// Every flow id, in order.
    pub(super) fn ids(&self) -> Vec<u32> {
        self.by_id.keys().copied().collect()
    }

    /// Takes every entry out (an engine handing its state over; see
    /// [`super::PonyEngine::freeze`]).
    pub(super) fn drain(&mut self) -> BTreeMap<u32, Box<FlowEntry>> {
        std::mem::take(&mut self.by_id)
    }

    fn split(&self, id: u32) -> (u32, u32) {
        (id & ((1 << self.slot_bits) - 1), id >> self.slot_bits)
    }

    /// Whether `max_flows` flows exist (alive or closing).
    pub(super) fn is_full(&self) -> bool {
        self.live >= self.max_flows as usize
    }

    /// The slot the next flow gets and its new generation's id, without taking it.
    pub(super) fn next_id(&self) -> u32 {
        let slot = match self.free.front() {
            Some(&s) => s,
            None => self.generations.len() as u32 + 1,
        };
        let last = self.generations.get(slot as usize - 1).copied().unwrap_or(0);
        let mut generation = last.wrapping_add(1) & self.generation_mask;
        if generation == 0 {
            generation = 1;
        }
        generation << self.slot_bits | slot
    }

    /// Adds a new flow, made with id [`FlowTable::next_id`] while the table is not
    /// [full](FlowTable::is_full); an accepted one (with a `peer_key`) is also found by its
    /// peer's id from now on.
    pub(super) fn insert(&mut self, e: Box<FlowEntry>) {
        let id = e.flow.local_id();
        debug_assert_eq!(id, self.next_id());
        let (slot, generation) = self.split(id);
        if self.free.front() == Some(&slot) {
            self.free.pop_front();
            self.generations[slot as usize - 1] = generation;
        } else {
            self.generations.push(generation);
        }
        self.live += 1;
        self.dirty.insert(id);
        self.removed.remove(&id);
        if let Some(k) = e.peer_key {
            self.by_peer.insert((e.peer, k), id);
        }
        self.by_id.insert(id, e);
    }

    /// Flows alive now.
    pub(super) fn len(&self) -> usize {
        self.live
    }

    /// What `id` names now.
    pub(super) fn lookup(&self, id: u64) -> Lookup {
        let Ok(id) = u32::try_from(id) else {
            return Lookup::Unknown;
        };
        if self.by_id.contains_key(&id) {
            return Lookup::Live;
        }
        let (slot, generation) = self.split(id);
        let used = slot >= 1 && (slot as usize) <= self.generations.len();
        if used && generation != 0 && generation <= self.generation_mask {
            Lookup::Stale
        } else {
            Lookup::Unknown
        }
    }

    /// Flows owned by session `sid` now (alive or closing with it as owner).
    pub(super) fn owned_by(&self, sid: u64) -> usize {
        self.by_id.values().filter(|e| e.owner == Some(sid)).count()
    }

    pub(super) fn get(&self, id: u32) -> Option<&FlowEntry> {
        self.by_id.get(&id).map(|e| &**e)
    }

    pub(super) fn get_mut(&mut self, id: u32) -> Option<&mut FlowEntry> {
        let e = self.by_id.get_mut(&id)?;
        self.dirty.insert(id);
        Some(&mut **e)
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
        let e = self.by_id.remove(&id)?;
        self.dirty.insert(id);
        Some(e)
    }

    /// [`FlowTable::take`] for a step's visit, which [marks](FlowTable::mark) the flow
    /// itself if it changed it.
    pub(super) fn take_unmarked(&mut self, id: u32) -> Option<Box<FlowEntry>> {
        self.by_id.remove(&id)
    }

    /// Puts back a flow [`FlowTable::take`] took out.
    pub(super) fn put(&mut self, id: u32, e: Box<FlowEntry>) {
        self.by_id.insert(id, e);
    }

    /// Forgets a finished flow taken out with [`FlowTable::take`]; its slot joins the back
    /// of the free queue.
    pub(super) fn retire(&mut self, e: &FlowEntry) {
        if let Some(k) = e.peer_key {
            self.by_peer.remove(&(e.peer, k));
        }
        let id = e.flow.local_id();
        self.dirty.remove(&id);
        self.removed.insert(id);
        let (slot, _) = self.split(id);
        self.free.push_back(slot);
        self.live -= 1;
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
        for (id, e) in self.by_id.iter_mut().filter(|(_, e)| e.owner == Some(sid)) {
            self.dirty.insert(*id);
            e.disown();
        }
    }

    /// The earliest timer of any flow.
    pub(super) fn next_timeout(&self) -> Option<Instant> {
        self.iter().filter_map(|e| e.flow.poll_timeout()).min()
    }
}

#[cfg(test)]
mod tests;
