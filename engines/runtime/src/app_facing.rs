//! [`AppFacing`], the one interface through which the control plane attaches apps to any
//! app-facing engine (echo, relay, and transports such as Pony) without knowing its type:
//! the engine makes its side of the connection and hands back the descriptors the app maps,
//! so each engine kind has its own shared-memory layout.

use std::os::fd::OwnedFd;

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
