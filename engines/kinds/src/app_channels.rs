//! The app channels an app-facing engine serves (echo and relay; Pony keeps sessions of
//! its own). [`AppChannels`] is the bookkeeping every app-facing engine needs and would otherwise
//! repeat: ids that are never reused (so a late response cannot reach a different app),
//! the round-robin cursor that keeps a busy app from starving the others across steps, the
//! [`RingSet`] that the runtime probes for input, and the doorbells that wake the engine.
//!
//! It also carries the two ways a channel stops being served:
//!
//! - **Quarantine** ([`AppChannels::quarantine`]): the channel is broken (corrupt indices, a
//!   bad length, a malformed message). Its request ring leaves the work probe at once, the
//!   app is told why (a [`CloseReason`] in the engine doorbell's page, plus a ring of its
//!   completion doorbell), and at the end of the step ([`AppChannels::reap`]) the channel is
//!   detached: its end is dropped (rings unmapped, doorbell closed), its doorbell leaves the
//!   thread's epoll set ([`AppChannels::take_sources_changed`]), and the
//!   [`ChannelLedger`] counts it and hands it to the control plane, which drops it from the
//!   host's registry.
//! - **Backpressure** ([`AppChannels::backpressure`]): the app's response ring is full.
//!   The engine leaves its requests in the request ring, takes the ring out of the work
//!   probe and flags "space wanted" in its doorbell's page; the app rings the doorbell when
//!   it pops, and [`AppChannels::resume_backpressured`] puts the channel back.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use snap_ipc::channel::{
    completion_ringer, AppChannel, ChannelEngineEnd, ChannelShape, CloseReason, APP_FDS,
};
use snap_runtime::{AttachReply, AttachRequest, ChannelLedger, RingSet, WakeSource};

/// One attached channel.
#[derive(Debug)]
pub struct Attached {
    /// Id given at attach.
    pub id: u64,
    /// The engine's end of the channel.
    pub end: ChannelEngineEnd,
    /// Set when the channel was found broken: nothing more is read from it, and it is
    /// detached at the end of the step ([`AppChannels::reap`]).
    pub quarantined: Option<CloseReason>,
    /// Set while the engine waits for the app to free room in its response ring.
    pub backpressured: bool,
}

impl Attached {
    /// Whether the engine serves this channel now (neither quarantined nor waiting for
    /// room).
    pub fn serving(&self) -> bool {
        self.quarantined.is_none() && !self.backpressured
    }
}

/// What a new host needs to take an engine's channels over (with their descriptors, in
/// this order): the ids, so that apps keep naming their channels as before, and the next
/// id, so that ids are never reused across the move either.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelsState {
    /// The next id to give.
    pub next_id: u64,
    /// Each channel's id and how many descriptors its engine end is made of.
    pub channels: Vec<(u64, usize)>,
}

/// The channels of one engine.
#[derive(Debug)]
pub struct AppChannels {
    list: Vec<Attached>,
    next_id: u64,
    cursor: usize,
    rings: RingSet,
    /// Positions that got responses this step ([`Self::mark`]); kept between steps so that
    /// the hot path does not allocate.
    marked: Vec<bool>,
    ledger: Arc<ChannelLedger>,
    /// Channels waiting for room now.
    backpressured: usize,
    /// Channels quarantined in this step, not yet reaped.
    quarantined: usize,
    /// A channel left on its own since the runtime last asked ([`Self::take_sources_changed`]).
    sources_changed: bool,
}

impl AppChannels {
    /// No channels yet. Request rings are added to `rings` (which the engine may share with
    /// other inputs of its own, under keys below `first_id`); ids start at `first_id`.
    pub fn new(rings: RingSet, first_id: u64) -> Self {
        Self {
            list: Vec::new(),
            next_id: first_id,
            cursor: 0,
            rings,
            marked: Vec::new(),
            ledger: Arc::default(),
            backpressured: 0,
            quarantined: 0,
            sources_changed: false,
        }
    }

    /// The ledger the engine hands to the runtime ([`snap_runtime::AppFacing::ledger`]).
    pub fn ledger(&self) -> Arc<ChannelLedger> {
        self.ledger.clone()
    }

    /// Quarantines channel `i` of engine `engine` (see the module documentation): it is not
    /// read again, leaves the work probe now, and is detached by the next [`Self::reap`].
    pub fn quarantine(
        &mut self,
        engine: &str,
        i: usize,
        reason: CloseReason,
        detail: impl std::fmt::Display,
    ) {
        let ch = &mut self.list[i];
        if ch.quarantined.is_some() {
            return;
        }
        log::warn!(
            "{engine}: channel {}: {reason} ({detail}); quarantined and detached",
            ch.id
        );
        ch.quarantined = Some(reason);
        if std::mem::take(&mut ch.backpressured) {
            self.backpressured -= 1;
        } else {
            self.rings.remove(ch.id);
        }
        ch.end.quarantine(reason);
        self.quarantined += 1;
    }

    /// Detaches the channels quarantined in this step and records them in the ledger. Call
    /// at the end of every step (positions change when one goes).
    pub fn reap(&mut self) {
        if self.quarantined == 0 {
            return;
        }
        self.quarantined = 0;
        let ledger = &self.ledger;
        self.list.retain(|c| match c.quarantined {
            Some(reason) => {
                ledger.record_quarantine(c.id, reason.to_string());
                false
            }
            None => true,
        });
        self.marked.clear();
        if self.cursor >= self.list.len() {
            self.cursor = 0;
        }
        self.sources_changed = true;
    }

    /// Whether a channel left since the last call (its doorbell must leave the epoll set).
    pub fn take_sources_changed(&mut self) -> bool {
        std::mem::take(&mut self.sources_changed)
    }

    /// Channel `i` has a request but its response ring is full: flags "space wanted" and,
    /// if the ring is still full after that (no lost wakeup, see `snap_ipc::doorbell`),
    /// stops serving it until the app pops. Returns whether it did; `false` means room
    /// appeared meanwhile and the caller may go on.
    pub fn backpressure(&mut self, i: usize) -> bool {
        let ch = &mut self.list[i];
        if ch.backpressured {
            return true;
        }
        if !ch.end.wait_for_space() {
            return false;
        }
        ch.backpressured = true;
        self.rings.remove(ch.id);
        self.backpressured += 1;
        self.ledger.record_backpressure();
        true
    }

    /// Serves again the backpressured channels whose app made room. Call at the start of
    /// every step (the app's doorbell ring only wakes the thread). Costs nothing while no
    /// channel waits.
    ///
    /// A channel still full is flagged again: the ring that woke us cleared the flag, and
    /// it may have been for room this engine filled again before it backpressured (a
    /// producer rings after it frees slots, not at once), so without the flag no later pop
    /// would wake us.
    pub fn resume_backpressured(&mut self) {
        if self.backpressured == 0 {
            return;
        }
        for ch in &mut self.list {
            if ch.backpressured && !ch.end.wait_for_space() {
                ch.backpressured = false;
                self.rings.insert(ch.id, ch.end.request_probe());
                self.backpressured -= 1;
            }
        }
    }

    /// Adds a channel; returns its id.
    pub fn attach(&mut self, end: ChannelEngineEnd) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.rings.insert(id, end.request_probe());
        self.list.push(Attached {
            id,
            end,
            quarantined: None,
            backpressured: false,
        });
        id
    }

    /// The channels' state and duplicates of their descriptors, for a new host process.
    /// Called between steps, so no channel is awaiting its reap; a backpressured channel
    /// moves as a plain one (the new engine finds its response ring full and waits again).
    pub fn export(&self) -> Result<(ChannelsState, Vec<OwnedFd>), String> {
        let mut fds = Vec::new();
        let mut channels = Vec::with_capacity(self.list.len());
        for c in self.list.iter().filter(|c| c.quarantined.is_none()) {
            let mine = c.end.dup_fds().map_err(|e| format!("channel {}: {e}", c.id))?;
            channels.push((c.id, mine.len()));
            fds.extend(mine);
        }
        let state = ChannelsState {
            next_id: self.next_id,
            channels,
        };
        Ok((state, fds))
    }

    /// Channels taken over from another process: `state` and the descriptors
    /// [`Self::export`] gave there, in order. Every channel's descriptors are validated; a
    /// count that does not add up, a repeated id or an id at or above `next_id` is an
    /// error, and nothing is kept.
    pub fn adopt(rings: RingSet, state: ChannelsState, fds: Vec<OwnedFd>) -> Result<Self, String> {
        let needed: usize = state.channels.iter().map(|&(_, n)| n).sum();
        if needed != fds.len() {
            return Err(format!(
                "the state names {needed} channel descriptors, {} were handed over",
                fds.len()
            ));
        }
        let mut fds = fds.into_iter();
        let mut list: Vec<Attached> = Vec::with_capacity(state.channels.len());
        for (id, n) in state.channels {
            if id >= state.next_id || list.iter().any(|c| c.id == id) {
                return Err(format!("channel id {id} repeated or not below the next id"));
            }
            let end = ChannelEngineEnd::from_fds(fds.by_ref().take(n).collect())
                .map_err(|e| format!("channel {id}: {e}"))?;
            list.push(Attached {
                id,
                end,
                quarantined: None,
                backpressured: false,
            });
        }
        let mut channels = Self::new(rings, state.next_id);
        for c in &list {
            channels.rings.insert(c.id, c.end.request_probe());
        }
        channels.list = list;
        Ok(channels)
    }

    /// Takes every channel out of the work probe (`paused`), or puts the serving ones back:
    /// a frozen engine's thread must not be woken by input it will not read.
    pub fn set_paused(&mut self, paused: bool) {
        for c in &self.list {
            if paused {
                self.rings.remove(c.id);
            } else if c.serving() {
                self.rings.insert(c.id, c.end.request_probe());
            }
        }
    }

    /// Makes a new [`AppChannel`] of `shape` for an app's attach request (echo-style
    /// engines: request and response rings, the engine's doorbell, and the app's completion
    /// doorbell when it asked for one), adds its engine end, and returns the app's
    /// descriptors ([`snap_ipc::channel::HOST_FDS`] order).
    pub fn attach_app(&mut self, request: AttachRequest, shape: ChannelShape) -> Result<AttachReply, String> {
        let expected = if request.notify { APP_FDS } else { 0 };
        if request.fds.len() != expected {
            return Err(format!(
                "attach with notify={} needs {expected} descriptors, got {}",
                request.notify,
                request.fds.len()
            ));
        }
        let completion = if request.notify {
            Some(completion_ringer(request.fds).map_err(|e| e.to_string())?)
        } else {
            None
        };
        let channel = AppChannel::create(shape, completion).map_err(|e| e.to_string())?;
        let (end, fds) = channel.into_parts();
        let id = self.attach(end);
        let details = serde_json::json!({ "capacity": shape.capacity, "slot_size": shape.slot_size });
        Ok(AttachReply { id, fds, details })
    }

    /// Removes channel `id`; returns whether it was attached.
    pub fn detach(&mut self, id: u64) -> bool {
        let before = self.list.len();
        let (mut backpressured, mut quarantined) = (0, 0);
        self.list.retain(|c| {
            let keep = c.id != id;
            if !keep {
                backpressured += usize::from(c.backpressured);
                quarantined += usize::from(c.quarantined.is_some());
            }
            keep
        });
        self.backpressured -= backpressured;
        self.quarantined -= quarantined;
        self.rings.remove(id);
        self.marked.clear();
        if self.cursor >= self.list.len() {
            self.cursor = 0;
        }
        before != self.list.len()
    }

    /// Ids of attached channels.
    pub fn ids(&self) -> Vec<u64> {
        self.list.iter().map(|c| c.id).collect()
    }

    /// Number of channels.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether none is attached.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Channel at position `i` (positions change on detach; ids do not).
    pub fn get_mut(&mut self, i: usize) -> &mut Attached {
        &mut self.list[i]
    }

    /// Position of channel `id`.
    pub fn position(&self, id: u64) -> Option<usize> {
        self.list.iter().position(|c| c.id == id)
    }

    /// Positions in this step's round-robin order: from the cursor, wrapping. The iterator
    /// borrows nothing (clone it for another pass), so the engine may mutate channels while
    /// walking it.
    pub fn round_robin(&self) -> impl Iterator<Item = usize> + Clone {
        let (start, n) = (self.cursor, self.list.len());
        (0..n).map(move |k| (start + k) % n)
    }

    /// Moves the cursor on by one: call once per step.
    pub fn advance(&mut self) {
        if !self.list.is_empty() {
            self.cursor = (self.cursor + 1) % self.list.len();
        }
    }

    /// Records that channel `i` got responses in this step.
    pub fn mark(&mut self, i: usize) {
        if self.marked.len() < self.list.len() {
            self.marked.resize(self.list.len(), false);
        }
        self.marked[i] = true;
    }

    /// Rings the completion doorbell of every channel marked in this step (apps that asked
    /// to be notified and are blocked), wakes the ones that wait for room in their request
    /// ring (the engine consumed from it), and clears the marks.
    pub fn notify_marked(&mut self) {
        for (ch, marked) in self.list.iter().zip(self.marked.iter_mut()) {
            if std::mem::take(marked) {
                ch.end.notify_app();
                ch.end.space_freed();
            }
        }
    }

    /// Whether a channel the engine serves has a request waiting: what an engine that
    /// stopped at its bound reports as `pending`. Only the request rings, unlike
    /// [`Self::rings`], which may hold the engine's other inputs.
    pub fn any_requests(&self) -> bool {
        self.list.iter().any(|c| c.serving() && c.end.has_requests())
    }

    /// The doorbells apps ring after posting.
    pub fn doorbells(&self) -> impl Iterator<Item = WakeSource> + '_ {
        self.list
            .iter()
            .map(|c| WakeSource::Doorbell(c.end.doorbell().clone()))
    }

    /// The request rings (and whatever else the engine put in the set).
    pub fn rings(&self) -> &RingSet {
        &self.rings
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use snap_ipc::channel::{AppChannel, ChannelAppEnd, ChannelShape};

    #[test]
    fn any_requests_skips_corrupt_channels() {
        let mut set = AppChannels::new(RingSet::default(), 1);
        let shape = ChannelShape {
            capacity: 4,
            slot_size: 64,
        };
        let (eng, mut app) = AppChannel::pair(shape, false).unwrap();
        set.attach(eng);
        set.attach(end());
        assert!(!set.any_requests());
        app.send(b"x").unwrap();
        assert!(set.any_requests());
        set.quarantine("t", 0, CloseReason::BadLength, "test");
        assert!(!set.any_requests());
        assert!(!set.rings().any_pending());
        // The app learns why.
        assert_eq!(app.quarantined(), Some(CloseReason::BadLength));
        // Detached at the end of the step, counted, handed to the control plane once.
        assert_eq!(set.len(), 2);
        set.reap();
        assert_eq!(set.ids(), vec![2]);
        assert!(set.take_sources_changed());
        assert!(!set.take_sources_changed());
        let ledger = set.ledger();
        assert_eq!(ledger.quarantined(), 1);
        let taken = ledger.take_quarantined();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].channel, 1);
        assert!(ledger.take_quarantined().is_empty());
    }

    /// A set with one app channel of 2 slots; `full`: its response ring filled and one
    /// request waiting.
    fn one_app(full: bool) -> (AppChannels, ChannelAppEnd) {
        let mut set = AppChannels::new(RingSet::default(), 1);
        let shape = ChannelShape {
            capacity: 2,
            slot_size: 64,
        };
        let (eng, mut app) = AppChannel::pair(shape, false).unwrap();
        set.attach(eng);
        if full {
            let (_, responses) = set.get_mut(0).end.rings();
            responses.push(b"1").unwrap();
            responses.push(b"2").unwrap();
            app.send(b"q").unwrap();
        }
        (set, app)
    }

    #[test]
    fn backpressure_parks_until_the_app_pops() {
        // Room: nothing to wait for.
        assert!(!one_app(false).0.backpressure(0));
        let (mut set, mut app) = one_app(true);
        assert!(set.backpressure(0));
        assert!(set.get_mut(0).end.doorbell().wants_space());
        // Its request stays, but it no longer counts as work.
        assert!(!set.rings().any_pending());
        assert!(!set.any_requests());
        set.resume_backpressured();
        assert!(set.get_mut(0).backpressured);
        // The app pops: it rings the engine doorbell (not armed: the flag is what counts).
        let mut buf = [0u8; 64];
        assert_eq!(app.try_recv(&mut buf).unwrap(), Some(1));
        assert_eq!(set.get_mut(0).end.doorbell().drain(), 1);
        set.resume_backpressured();
        assert!(!set.get_mut(0).backpressured);
        assert!(set.rings().any_pending());
        assert!(set.any_requests());
        assert_eq!(set.ledger().backpressured(), 1);
    }

    #[test]
    fn a_ring_for_room_already_used_leaves_the_wait_armed() {
        let (mut set, mut app) = one_app(true);
        assert!(set.backpressure(0));
        // The app rings for room the engine filled again before it backpressured (a relay
        // rings after its step for the pops of that step): the ring finds the flag, clears
        // it, and wakes the engine, which finds the ring still full.
        assert!(app.space_freed());
        assert_eq!(set.get_mut(0).end.doorbell().drain(), 1);
        set.resume_backpressured();
        assert!(set.get_mut(0).backpressured);
        assert!(
            set.get_mut(0).end.doorbell().wants_space(),
            "still full: the wait is flagged again, or no later pop would wake the engine"
        );
        let mut buf = [0u8; 64];
        assert_eq!(app.try_recv(&mut buf).unwrap(), Some(1));
        assert_eq!(
            set.get_mut(0).end.doorbell().drain(),
            1,
            "the pop woke the engine"
        );
        set.resume_backpressured();
        assert!(!set.get_mut(0).backpressured);
        assert!(!set.get_mut(0).end.doorbell().wants_space());
    }

    fn end() -> ChannelEngineEnd {
        let shape = ChannelShape {
            capacity: 4,
            slot_size: 64,
        };
        AppChannel::pair(shape, false).unwrap().0
    }

    #[test]
    fn ids_are_never_reused_and_round_robin_rotates() {
        let mut set = AppChannels::new(RingSet::default(), 1);
        let (a, b, c) = (set.attach(end()), set.attach(end()), set.attach(end()));
        assert_eq!((a, b, c), (1, 2, 3));
        assert_eq!(set.round_robin().collect::<Vec<_>>(), vec![0, 1, 2]);
        set.advance();
        assert_eq!(set.round_robin().collect::<Vec<_>>(), vec![1, 2, 0]);
        assert!(set.detach(b));
        assert!(!set.detach(b));
        assert_eq!(set.attach(end()), 4);
        assert_eq!(set.ids(), vec![1, 3, 4]);
        assert_eq!(set.position(4), Some(2));
    }
}
