//! The app channels an app-facing engine serves (echo and relay; Pony keeps sessions of
//! its own). [`AppChannels`] is the bookkeeping every app-facing engine needs and would otherwise
//! repeat: ids that are never reused (so a late response cannot reach a different app),
//! the round-robin cursor that keeps a busy app from starving the others across steps, the
//! [`RingSet`] that the runtime probes for input, and the doorbells that wake the engine.

use snap_ipc::channel::{completion_ringer, AppChannel, ChannelEngineEnd, ChannelShape, APP_FDS};
use snap_runtime::{AttachReply, AttachRequest, RingSet, WakeSource};

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
    use snap_ipc::channel::{AppChannel, ChannelShape};

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
