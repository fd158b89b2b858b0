//! The app channels an app-facing engine serves, and [`AppFacing`], the one interface
//! through which the control plane attaches apps to any such engine (echo, relay, and
//! transports such as Pony) without knowing its type: the engine makes its side of the
//! connection and hands back the descriptors the app maps, so each engine type can have
//! its own shared-memory layout.
//!
//! [`AppChannels`] is the bookkeeping every app-facing engine needs and would otherwise
//! repeat: ids that are never reused (so a late response cannot reach a different app),
//! the round-robin cursor that keeps a busy app from starving the others across steps, the
//! [`RingSet`] that the runtime probes for input, and the doorbells that wake the engine.

use std::os::fd::OwnedFd;

use crate::channel::{completion_ringer, AppChannel, ChannelEngineEnd, ChannelShape, APP_FDS};
use crate::engine::{RingSet, WakeSource};

/// An app's request to attach, as the control plane received it.
#[derive(Debug)]
pub struct AttachRequest {
    /// Whether the app wants the engine to ring a completion doorbell (it blocks instead of
    /// polling).
    pub notify: bool,
    /// Descriptors the app sent (e.g. its completion doorbell), in the engine's order.
    pub fds: Vec<OwnedFd>,
    /// The app's process id (from SO_PEERCRED), for logs and per-app accounting.
    pub pid: i32,
    /// The app's user id.
    pub uid: u32,
}

/// The engine's answer: the connection's id and what the app needs to map it.
#[derive(Debug)]
pub struct AttachReply {
    /// Id for `detach`, unique within the engine.
    pub id: u64,
    /// Descriptors for the app, in the engine's documented order.
    pub fds: Vec<OwnedFd>,
    /// Engine-defined description of the layout (ring shape, pool size…), sent as JSON.
    pub details: serde_json::Value,
}

/// An engine that apps attach to. The control plane reaches it through
/// [`crate::Engine::app_facing`], on the engine's own thread (mailbox).
pub trait AppFacing {
    /// Makes the engine's side of a new app connection; an error is shown to the app.
    fn attach_app(&mut self, request: AttachRequest) -> Result<AttachReply, String>;
    /// Drops a connection (its shared memory is unmapped on our side); returns whether it
    /// was attached. Called when the app asks, and when its control connection closes
    /// (exit or crash).
    fn detach(&mut self, id: u64) -> bool;
    /// Ids of attached connections.
    fn channel_ids(&self) -> Vec<u64>;
    /// Takes a descriptor an app sent after attaching (e.g. a memory region's memfd) for
    /// its connection `id`, and returns a cookie the app names it by on its own channel.
    /// Descriptors cannot travel through shared-memory rings, so they come over the
    /// control socket and are staged here; the app's next command claims them, which keeps
    /// their use ordered with its other commands. Engines without such a need refuse.
    fn stage_fd(&mut self, id: u64, fd: OwnedFd) -> Result<u64, String> {
        let _ = (id, fd);
        Err("this engine takes no descriptors after attach".into())
    }
}

/// One attached channel.
#[derive(Debug)]
pub struct Attached {
    /// Id given at attach.
    pub id: u64,
    /// The engine's end of the channel.
    pub end: ChannelEngineEnd,
    /// Set when the channel's rings were found corrupt: nothing more is read from it until
    /// it is detached.
    pub broken: bool,
}

impl Attached {
    /// Marks the channel broken (its rings are corrupt or malformed) and says so in the
    /// log: the engine `engine` ignores it from now on, until the app detaches.
    pub fn set_broken(&mut self, engine: &str, why: impl std::fmt::Display) {
        log::warn!("{engine}: channel {}: {why}; ignoring it until detached", self.id);
        self.broken = true;
    }
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
            broken: false,
        });
        id
    }

    /// Makes a new [`AppChannel`] of `shape` for an app's attach request (echo-style
    /// engines: request and response rings, the engine's doorbell, and the app's completion
    /// doorbell when it asked for one), adds its engine end, and returns the app's
    /// descriptors ([`crate::channel::HOST_FDS`] order).
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
        self.list.retain(|c| c.id != id);
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
    /// to be notified and are blocked), and clears the marks.
    pub fn notify_marked(&mut self) {
        for (ch, marked) in self.list.iter().zip(self.marked.iter_mut()) {
            if std::mem::take(marked) {
                ch.end.notify_app();
            }
        }
    }

    /// Whether a channel not found corrupt has a request waiting: what an engine that
    /// stopped at its bound reports as `pending`. Only the request rings, unlike
    /// [`Self::rings`], which may hold the engine's other inputs.
    pub fn any_requests(&self) -> bool {
        self.list.iter().any(|c| !c.broken && c.end.has_requests())
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
    use crate::channel::{AppChannel, ChannelShape};

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
        set.get_mut(0).broken = true;
        assert!(!set.any_requests());
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
