//! The relay engine: the first link of a relay chain. Apps attach to it exactly as
//! to an [`EchoEngine`](crate::echo::EchoEngine) (through [`crate::control`]); it forwards
//! their requests over one internal channel ([`crate::channel`]) to the next engine in the
//! chain (an echo engine or another relay), and routes that engine's responses back to
//! the app each came from.
//!
//! ```text
//!  app A ──req──▶ ┌───────┐  [id A|msg] ──▶ internal request ring  ──▶ ┌──────────┐
//!  app B ──req──▶ │ relay │                                             │ next     │
//!  app A ◀─resp── │       │  ◀── internal response ring ◀── [id A|msg] │ engine   │
//!  app B ◀─resp── └───────┘                                             └──────────┘
//! ```
//!
//! Every forwarded message is prefixed with the 8-byte (little-endian) id of the app
//! channel it came from; the next engine treats the relay as one app and echoes the prefix
//! back, and the relay strips it to route the response. The relay holds the *app* end of
//! the internal channel (made with completion notifications), so the next engine wakes it
//! when responses are ready, and the relay rings the next engine's doorbell after pushing.
//!
//! Nothing is dropped for lack of room: an app request is only popped once the internal
//! request ring took it, and a response stays at the head of the internal response ring
//! while its app's response ring is full (which holds back the responses of the other apps
//! behind it: one internal ring is FIFO). Only messages that cannot be delivered at all are
//! dropped, each with a counter: requests too long to fit with the prefix, and responses
//! whose app detached in the meantime (ids are never reused, so a late response cannot reach
//! a different app).
//!
//! Waiting for room never spins. When the internal request ring is full, the relay flags
//! "space wanted" on its completion doorbell and stops forwarding (app requests no longer
//! count as work) until the next engine consumes and rings it. When the response at the
//! head is for an app whose ring is full, that app is backpressured (see
//! [`crate::app_channels`]) and the relay stops returning until the app pops and rings.
//! After returning responses the relay rings the next engine if it waits for room in the
//! internal response ring. A broken app channel is quarantined as in the echo engine.
//!
//! A relay moves to a new host process like an echo engine ([`Movable`]): its app
//! channels' descriptors and ids, and the internal channel's app end as descriptors too;
//! the next engine moves on its own and keeps the internal channel's engine end among its
//! app channels, so the two meet again on the same shared memory.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::os::fd::OwnedFd;

use crate::app_channels::{AppChannels, ChannelsState};
use crate::echo::{spin, DEFAULT_BATCH};
use crate::moving;
use snap_ipc::channel::{
    AppChannel, ChannelAppEnd, ChannelEngineEnd, ChannelError, ChannelShape, CloseReason,
};
use snap_ipc::PushError;
use snap_runtime::{AppFacing, AttachReply, AttachRequest, ChannelLedger};
use snap_runtime::{Engine, Movable, RingSet, RunOutcome, WakeSource, WorkProbe};

/// Bytes of the routing prefix (the app channel id) on every internal message.
pub const PREFIX_LEN: usize = 8;

/// App ids start here (0 stays free for the internal channel in logs).
const FIRST_APP_ID: u64 = 1;

/// Counters of a relay engine, read through the control mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct RelayStats {
    /// App channels attached now.
    pub channels: usize,
    /// Requests forwarded to the next engine.
    pub forwarded: u64,
    /// Responses returned to their apps.
    pub returned: u64,
    /// Responses dropped because their app had detached.
    pub dropped_detached: u64,
    /// Messages dropped because they do not fit the next ring (a request plus its prefix,
    /// or a response in its app's ring).
    pub too_large: u64,
    /// Times a message had to wait for room (internal request ring or an app's response
    /// ring full).
    pub stalls: u64,
    /// Malformed messages from the next engine, a corrupt internal response ring (then
    /// ignored), or app channels found broken (quarantined and detached).
    pub corrupt: u64,
}

/// What one attempt to move a request did.
enum Forward {
    /// Pushed downstream.
    Sent,
    /// Consumed without forwarding (too large).
    Dropped,
    /// The internal request ring is full: the request stays with its app.
    Stalled,
    /// Nothing to do on this channel.
    Idle,
}

/// What one attempt to move a response did.
enum Return {
    /// Delivered to the app at this index of `channels`.
    Delivered(usize),
    /// Consumed without delivering (detached app, too large, malformed).
    Dropped,
    /// The response ring of the app at this index of `channels` is full: the response
    /// stays at the head.
    Stalled(usize),
    /// No response waiting.
    Idle,
}

/// See the module documentation.
#[derive(Debug)]
pub struct RelayEngine {
    name: String,
    work: Duration,
    batch: u32,
    /// App channels.
    channels: AppChannels,
    downstream: ChannelAppEnd,
    /// Set when the internal response ring is found corrupt.
    downstream_broken: bool,
    /// Set while forwarding waits for room in the internal request ring: app requests do
    /// not count as work then. Shared with the work probe.
    forward_parked: Arc<AtomicBool>,
    /// Set while returning responses waits (for a backpressured app, or for ever once the
    /// internal response ring is broken): the internal response ring does not count as
    /// work then. Shared with the work probe.
    return_parked: Arc<AtomicBool>,
    /// The app whose full response ring holds the head response back.
    return_waits_for: Option<u64>,
    /// Where a prefixed request is assembled before the push (reused: no allocation per
    /// message).
    scratch: Vec<u8>,
    stats: RelayStats,
    /// Stopped for an upgrade ([`Movable::freeze`]): serves nothing.
    frozen: bool,
}

/// What moves to a new host (with the app channels' and the internal channel's
/// descriptors, in that order, in one group).
#[derive(serde::Serialize, serde::Deserialize)]
struct RelayState {
    channels: ChannelsState,
    /// Descriptors of the internal channel's app end, after the app channels'.
    downstream_fds: usize,
    downstream_broken: bool,
    stats: RelayStats,
}

impl RelayEngine {
    /// A relay that forwards over `downstream`, the app end of a channel whose engine end
    /// is attached to the next engine. It should have been made with completion
    /// notifications (`AppChannel::pair(shape, true)`): without them a blocked relay is
    /// not woken by responses. `work_ns` is busy-waited per forwarded request.
    pub fn new(name: impl Into<String>, work_ns: u64, downstream: ChannelAppEnd) -> Self {
        let name = name.into();
        if downstream.completion().is_none() {
            log::warn!("{name}: internal channel has no completion doorbell; responses will not wake it");
        }
        Self {
            name,
            work: Duration::from_nanos(work_ns),
            batch: DEFAULT_BATCH,
            channels: AppChannels::new(RingSet::default(), FIRST_APP_ID),
            downstream,
            downstream_broken: false,
            forward_parked: Arc::default(),
            return_parked: Arc::default(),
            return_waits_for: None,
            scratch: Vec::new(),
            stats: RelayStats::default(),
            frozen: false,
        }
    }

    /// The relay another host process exported ([`Movable`]): `state` is its final export
    /// and `fds` the descriptors it handed over (app channels, then the internal channel's
    /// app end). Apps keep their channels and ids; the next engine, moved on its own, keeps
    /// serving the internal channel where it stands.
    pub fn import(
        name: impl Into<String>,
        work_ns: u64,
        state: &[u8],
        mut fds: Vec<OwnedFd>,
    ) -> Result<Self, String> {
        let st: RelayState = moving::decode(state)?;
        let at = fds
            .len()
            .checked_sub(st.downstream_fds)
            .ok_or("fewer descriptors than the internal channel needs")?;
        let downstream = ChannelAppEnd::from_dup_fds(fds.split_off(at))
            .map_err(|e| format!("the internal channel: {e}"))?;
        let mut e = Self::new(name, work_ns, downstream);
        e.channels = AppChannels::adopt(RingSet::default(), st.channels, fds)?;
        e.downstream_broken = st.downstream_broken;
        e.return_parked.store(st.downstream_broken, Relaxed);
        e.stats = st.stats;
        Ok(e)
    }

    fn state(&self) -> Result<(Vec<u8>, Vec<OwnedFd>), String> {
        let (channels, mut fds) = self.channels.export()?;
        let down = self
            .downstream
            .dup_fds()
            .map_err(|e| format!("the internal channel: {e}"))?;
        let bytes = moving::encode(&RelayState {
            channels,
            downstream_fds: down.len(),
            downstream_broken: self.downstream_broken,
            stats: self.stats,
        })?;
        fds.extend(down);
        Ok((bytes, fds))
    }

    /// Makes the internal channel too: returns the relay and the engine end to attach to
    /// the next engine (before the runtime starts, or through its mailbox).
    pub fn connect(
        name: impl Into<String>,
        work_ns: u64,
        shape: ChannelShape,
    ) -> Result<(Self, ChannelEngineEnd), ChannelError> {
        let (engine_end, app_end) = AppChannel::pair(shape, true)?;
        Ok((Self::new(name, work_ns, app_end), engine_end))
    }

    /// Changes the per-step bound (at least 1), applied to requests and responses each.
    pub fn with_batch(mut self, batch: u32) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Starts serving an app channel; returns its id for [`Self::detach`].
    pub fn attach(&mut self, end: ChannelEngineEnd) -> u64 {
        self.channels.attach(end)
    }

    /// Stops serving an app channel; its responses still in the chain are dropped when
    /// they come back. Returns whether it was attached.
    pub fn detach(&mut self, id: u64) -> bool {
        self.channels.detach(id)
    }

    /// Ids of attached app channels.
    pub fn channel_ids(&self) -> Vec<u64> {
        self.channels.ids()
    }

    /// Counters.
    pub fn stats(&self) -> RelayStats {
        RelayStats {
            channels: self.channels.len(),
            ..self.stats
        }
    }

    /// Lifts the waits whose cause is gone: apps that made room, the internal request ring
    /// that has room again, an app the head response waited for that left.
    fn resume(&mut self) {
        self.channels.resume_backpressured();
        if let Some(id) = self.return_waits_for {
            let still_waiting = self
                .channels
                .position(id)
                .is_some_and(|i| self.channels.get_mut(i).backpressured);
            if !still_waiting {
                self.return_waits_for = None;
                self.return_parked.store(self.downstream_broken, Relaxed);
            }
        }
        // Still full: flagged again, as for a backpressured app (AppChannels::
        // resume_backpressured), since the ring that woke us may have been for room the
        // relay had already filled.
        if self.forward_parked.load(Relaxed) && !self.downstream.wait_for_space() {
            self.forward_parked.store(false, Relaxed);
        }
    }

    /// Moves one request of app channel `i` into the internal request ring.
    fn forward_one(&mut self, i: usize) -> Forward {
        let ch = self.channels.get_mut(i);
        if !ch.serving() {
            return Forward::Idle;
        }
        let id = ch.id;
        let msg = match ch.end.requests().peek() {
            Ok(Some(msg)) => msg,
            Ok(None) => return Forward::Idle,
            Err(e) => {
                self.channels
                    .quarantine(&self.name, i, CloseReason::of_pop(&e), e);
                self.stats.corrupt += 1;
                return Forward::Idle;
            }
        };
        if msg.len() + PREFIX_LEN > self.downstream.max_message_len() {
            // It can never fit: waiting would block the app forever.
            msg.release();
            self.stats.too_large += 1;
            return Forward::Dropped;
        }
        // The request is copied in from the app's ring (never read in place: snap_ipc::peer).
        self.scratch.resize(PREFIX_LEN + msg.len(), 0);
        self.scratch[..PREFIX_LEN].copy_from_slice(&id.to_le_bytes());
        let _ = msg.copy_into(&mut self.scratch[PREFIX_LEN..]);
        match self.downstream.push(&self.scratch) {
            Ok(()) => {
                msg.release();
                spin(self.work);
                self.stats.forwarded += 1;
                Forward::Sent
            }
            // The request stays in the app's ring until the next engine makes room.
            Err(PushError::Full) => {
                self.stats.stalls += 1;
                Forward::Stalled
            }
            Err(PushError::TooLarge { .. }) => {
                msg.release();
                self.stats.too_large += 1;
                Forward::Dropped
            }
        }
    }

    /// Moves the response at the head of the internal response ring to its app.
    fn return_one(&mut self) -> Return {
        if self.downstream_broken {
            return Return::Idle;
        }
        let msg = match self.downstream.responses().peek() {
            Ok(Some(msg)) => msg,
            Ok(None) => return Return::Idle,
            Err(e) => {
                log::warn!("{}: internal response ring: {e}; no more responses", self.name);
                self.downstream_broken = true;
                self.return_parked.store(true, Relaxed);
                self.stats.corrupt += 1;
                return Return::Idle;
            }
        };
        if msg.len() < PREFIX_LEN {
            msg.release();
            self.stats.corrupt += 1;
            return Return::Dropped;
        }
        self.scratch.resize(msg.len(), 0);
        let _ = msg.copy_into(&mut self.scratch);
        let id = u64::from_le_bytes(self.scratch[..PREFIX_LEN].try_into().expect("8 bytes"));
        let Some(i) = self.channels.position(id) else {
            msg.release();
            self.stats.dropped_detached += 1;
            return Return::Dropped;
        };
        let ch = self.channels.get_mut(i);
        if ch.end.responses_full() {
            self.stats.stalls += 1;
            return Return::Stalled(i);
        }
        match ch.end.responses().push(&self.scratch[PREFIX_LEN..]) {
            Ok(()) => {
                msg.release();
                self.stats.returned += 1;
                Return::Delivered(i)
            }
            // Cannot happen while we are the only producer and checked for room.
            Err(PushError::Full) => {
                self.stats.stalls += 1;
                Return::Stalled(i)
            }
            // A next engine that answers with more than was asked, into a smaller ring.
            Err(PushError::TooLarge { .. }) => {
                msg.release();
                self.stats.too_large += 1;
                Return::Dropped
            }
        }
    }
}

impl Engine for RelayEngine {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(&mut self, _now: Instant) -> RunOutcome {
        if self.frozen {
            return RunOutcome::default();
        }
        self.resume();
        let n = self.channels.len();
        let mut pending = false;
        // Responses first: they complete work already in flight and free room downstream.
        let mut returned = 0u32;
        while returned < self.batch && !self.return_parked.load(Relaxed) {
            match self.return_one() {
                Return::Delivered(i) => {
                    self.channels.mark(i);
                    returned += 1;
                }
                Return::Dropped => returned += 1,
                Return::Stalled(i) => {
                    // The app is backpressured; its pop rings our doorbell for that app.
                    // If room appeared meanwhile, go round again.
                    if self.channels.backpressure(i) {
                        self.return_waits_for = Some(self.channels.get_mut(i).id);
                        self.return_parked.store(true, Relaxed);
                    }
                }
                Return::Idle => break,
            }
        }
        if returned > 0 {
            // The next engine may wait for room in the internal response ring.
            self.downstream.space_freed();
        }
        if returned >= self.batch && !self.return_parked.load(Relaxed) && self.downstream.has_responses() {
            pending = true;
        }
        // Requests: passes of one per app, from the cursor, as in the echo engine.
        let mut forwarded = 0u32;
        let mut sent = false;
        if n > 0 && !self.forward_parked.load(Relaxed) {
            let order = self.channels.round_robin();
            'passes: loop {
                let mut progress = false;
                for i in order.clone() {
                    if forwarded >= self.batch {
                        pending |= self.channels.any_requests();
                        break 'passes;
                    }
                    match self.forward_one(i) {
                        Forward::Sent => {
                            forwarded += 1;
                            sent = true;
                            progress = true;
                        }
                        Forward::Dropped => {
                            forwarded += 1;
                            progress = true;
                        }
                        // The shared internal ring is full for every app alike: wait for
                        // the next engine to ring (or go on at once if it made room
                        // meanwhile).
                        Forward::Stalled => {
                            if self.downstream.wait_for_space() {
                                self.forward_parked.store(true, Relaxed);
                            } else {
                                pending = true;
                            }
                            break 'passes;
                        }
                        Forward::Idle => {}
                    }
                }
                if !progress {
                    break;
                }
            }
            self.channels.advance();
        }
        if sent {
            self.downstream.kick();
        }
        self.channels.notify_marked();
        self.channels.reap();
        RunOutcome {
            items: returned + forwarded,
            pending,
        }
    }

    fn take_sources_changed(&mut self) -> bool {
        self.channels.take_sources_changed()
    }

    fn wake_sources(&self) -> Vec<WakeSource> {
        if self.frozen {
            return Vec::new();
        }
        self.channels
            .doorbells()
            .chain(
                self.downstream
                    .completion()
                    .map(|bell| WakeSource::Doorbell(bell.clone())),
            )
            .collect()
    }

    fn work_probe(&self) -> WorkProbe {
        let apps = self.channels.rings().clone();
        let responses = self.downstream.response_probe();
        let (forward_parked, return_parked) = (self.forward_parked.clone(), self.return_parked.clone());
        WorkProbe::new(move || {
            (!forward_parked.load(Relaxed) && apps.any_pending())
                || (!return_parked.load(Relaxed) && !responses.is_empty())
        })
    }

    fn app_facing(&mut self) -> Option<&mut dyn AppFacing> {
        Some(self)
    }

    fn movable(&mut self) -> Option<&mut dyn Movable> {
        Some(self)
    }
}

/// Every export is whole (see [`crate::moving`]), as the echo engine's. Freezing parks
/// both directions (the work probe then never sees work), so nothing is taken from a ring
/// after the final state; messages in the rings stay there for the new relay.
impl Movable for RelayEngine {
    fn export_full(&mut self) -> Result<Vec<u8>, String> {
        self.state().map(|(bytes, _)| bytes)
    }

    fn export_delta(&mut self) -> Result<Vec<u8>, String> {
        self.export_full()
    }

    fn freeze(&mut self) -> Result<Vec<u8>, String> {
        self.frozen = true;
        self.channels.set_paused(true);
        self.forward_parked.store(true, Relaxed);
        self.return_parked.store(true, Relaxed);
        self.export_full()
    }

    fn thaw(&mut self) {
        self.frozen = false;
        self.channels.set_paused(false);
        self.forward_parked.store(false, Relaxed);
        self.return_parked.store(self.downstream_broken, Relaxed);
        self.return_waits_for = None;
    }

    /// One group: the app channels' descriptors, then the internal channel's.
    fn hand_over(&mut self) -> Result<Vec<Vec<OwnedFd>>, String> {
        let (_, fds) = self.state()?;
        self.channels = AppChannels::new(RingSet::default(), FIRST_APP_ID);
        Ok(vec![fds])
    }
}

impl AppFacing for RelayEngine {
    fn attach_app(&mut self, request: AttachRequest) -> Result<AttachReply, String> {
        if self.frozen {
            // Its final state is already written: a channel made now would not move.
            return Err(format!(
                "engine {} is moving to a new host; attach again",
                self.name
            ));
        }
        self.channels.attach_app(request, ChannelShape::default())
    }

    fn detach(&mut self, id: u64) -> bool {
        RelayEngine::detach(self, id)
    }

    fn channel_ids(&self) -> Vec<u64> {
        RelayEngine::channel_ids(self)
    }

    fn ledger(&self) -> Option<Arc<ChannelLedger>> {
        Some(self.channels.ledger())
    }
}

#[cfg(test)]
mod tests;
