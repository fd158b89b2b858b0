//! [`AppFacing`], the one interface through which the control plane attaches apps to any
//! app-facing engine (echo, relay, and transports such as Pony) without knowing its type:
//! the engine makes its side of the connection and hands back the descriptors the app maps,
//! so each engine kind has its own shared-memory layout. [`ChannelLedger`] is what such an
//! engine reports about its channels beyond work: the ones it quarantined and the times it
//! stopped serving an app to wait for room (backpressure).

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

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
    /// The engine's channel ledger, if it keeps one. Asked once, when the runtime takes the
    /// engine; the runtime reads its counters for `status` and the control plane collects
    /// the channels the engine quarantined ([`crate::EngineHandle::take_quarantined`]).
    fn ledger(&self) -> Option<Arc<ChannelLedger>> {
        None
    }
}

/// A channel an engine quarantined and detached on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// Its id (as returned by [`AppFacing::attach_app`]).
    pub channel: u64,
    /// What was wrong, for logs and status.
    pub reason: String,
}

/// Counters and events of an app-facing engine's channels, shared between the engine's
/// thread (which writes) and the runtime and control plane (which read). Not on the hot
/// path: it changes only when a channel breaks or an app stops draining.
#[derive(Debug, Default)]
pub struct ChannelLedger {
    quarantined: AtomicU64,
    backpressured: AtomicU64,
    /// Quarantined channels the control plane has not collected yet. Bounded by the
    /// number of channels attached between two collections; the control plane collects on
    /// every `status` and every attach.
    pending: Mutex<Vec<Quarantined>>,
}

impl ChannelLedger {
    /// Records that the engine quarantined and detached `channel`.
    pub fn record_quarantine(&self, channel: u64, reason: String) {
        self.quarantined.fetch_add(1, Relaxed);
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Quarantined { channel, reason });
    }

    /// Records that the engine stopped serving an app until it frees room.
    pub fn record_backpressure(&self) {
        self.backpressured.fetch_add(1, Relaxed);
    }

    /// Channels quarantined since start.
    pub fn quarantined(&self) -> u64 {
        self.quarantined.load(Relaxed)
    }

    /// Times an app was backpressured since start.
    pub fn backpressured(&self) -> u64 {
        self.backpressured.load(Relaxed)
    }

    /// Takes the quarantined channels not collected yet.
    pub fn take_quarantined(&self) -> Vec<Quarantined> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
