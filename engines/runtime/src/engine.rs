//! What an engine is: the [`Engine`] trait the runtime schedules, what one `run()` step
//! reports, and how an engine tells the runtime what can wake it.
//!
//! An engine is Snap's unit of work: a single-threaded, stateful task (a transport, an echo
//! server, a shaper) whose `run()` does a *bounded* amount of work and returns. The runtime
//! decides on which thread and when `run()` is called (the three modes in
//! [`crate::runtime`]); it never calls one engine from two threads at once, so an engine needs
//! no locks inside. Everything an engine needs from outside arrives through rings
//! ([`crate::ring`]), readable descriptors (NIC queues) or its control mailbox
//! ([`crate::mailbox`]).

use std::any::Any;
use std::fmt;
use std::os::fd::AsFd;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use crate::app_facing::AppFacing;
use crate::movable::Movable;
use snap_ipc::Doorbell;
use snap_ipc::RingProbe;

/// What one bounded `run()` step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunOutcome {
    /// Units of work done (messages, packets): zero means the step made no progress.
    pub items: u32,
    /// Whether the engine knows more work is waiting (it stopped at its bound). A thread never
    /// blocks while one of its engines says this.
    pub pending: bool,
}

impl RunOutcome {
    /// Nothing done, nothing waiting.
    pub const IDLE: Self = Self {
        items: 0,
        pending: false,
    };

    /// Whether the step did anything.
    pub fn progressed(&self) -> bool {
        self.items > 0
    }
}

/// Something that wakes an engine whose thread is blocked.
#[derive(Clone)]
pub enum WakeSource {
    /// An app's (or another engine's) doorbell: an eventfd the producer rings after posting,
    /// only while the engine is armed (blocked), so a polled engine pays nothing for it.
    Doorbell(Doorbell),
    /// A descriptor whose readability means work, e.g. a NIC queue or socket. Level
    /// triggered: the engine does not have to drain it in one step.
    Readable(Arc<dyn AsFd + Send + Sync>),
}

impl fmt::Debug for WakeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Doorbell(d) => f.debug_tuple("Doorbell").field(d).finish(),
            Self::Readable(fd) => f.debug_tuple("Readable").field(&fd.as_fd()).finish(),
        }
    }
}

/// A thread-safe "does this engine have input waiting?" check, callable without running the
/// engine: the runtime asks it before blocking (after arming doorbells, to close the race
/// with a producer that just pushed) and the compacting rebalancer polls it to measure
/// queueing delay.
#[derive(Clone)]
pub struct WorkProbe(Arc<dyn Fn() -> bool + Send + Sync>);

impl WorkProbe {
    /// A probe from any check.
    pub fn new(check: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(check))
    }

    /// A probe that never sees work: for engines only woken by descriptors, whose readiness
    /// the runtime checks itself.
    pub fn never() -> Self {
        Self::new(|| false)
    }

    /// A probe over a set of input rings that may change (apps attach and leave).
    pub fn rings(set: RingSet) -> Self {
        Self::new(move || set.any_pending())
    }

    /// Whether input is waiting.
    pub fn has_work(&self) -> bool {
        (self.0)()
    }
}

impl fmt::Debug for WorkProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WorkProbe")
    }
}

/// A shared, growable list of input rings to probe. The engine adds a ring when an app
/// attaches and removes it when the app leaves (both rare, so a `RwLock` is fine); probing
/// takes the read lock and two atomic loads per ring.
#[derive(Debug, Clone, Default)]
pub struct RingSet(Arc<RwLock<Vec<(u64, RingProbe)>>>);

impl RingSet {
    /// Adds a ring under a key chosen by the engine.
    pub fn insert(&self, key: u64, probe: RingProbe) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push((key, probe));
    }

    /// Removes the ring added under `key`.
    pub fn remove(&self, key: u64) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(k, _)| *k != key);
    }

    /// Whether any ring holds a message.
    pub fn any_pending(&self) -> bool {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|(_, p)| !p.is_empty())
    }
}

/// A Snap engine. See the module documentation.
///
/// `Any` lets control-plane code reach the concrete type through the mailbox
/// ([`crate::runtime::EngineHandle::control`]).
pub trait Engine: Any + Send {
    /// Unique name within the host, used in status and logs.
    fn name(&self) -> &str;

    /// Does a bounded amount of work. `now` is taken once per step by the runtime.
    fn run(&mut self, now: Instant) -> RunOutcome;

    /// What can wake this engine when its thread blocks. Asked when the engine is placed on a
    /// thread and again after every control operation (which may attach an app).
    fn wake_sources(&self) -> Vec<WakeSource>;

    /// The input check used before blocking and by the compacting rebalancer.
    fn work_probe(&self) -> WorkProbe;

    /// When the engine next needs a `run()` even if no interrupt arrives (a retransmission
    /// timer, a delayed packet). A blocked thread wakes by then; `None` means only
    /// interrupts. Asked after every step.
    fn poll_at(&self) -> Option<Instant> {
        None
    }

    /// The engine's app-attachment interface, if apps attach to it (the control plane's
    /// `attach` uses this, so it works for any app-facing engine type).
    fn app_facing(&mut self) -> Option<&mut dyn AppFacing> {
        None
    }

    /// The engine's upgrade interface, if its state can move to a new host process. `None`:
    /// an upgrade refuses this engine's host before anything moves.
    fn movable(&mut self) -> Option<&mut dyn Movable> {
        None
    }

    /// Whether the engine's [`Engine::wake_sources`] changed during its last step (not
    /// through a control operation, after which they are always read again); reading it
    /// resets it. The worker then watches the new set, so that, e.g., an app session the
    /// engine dropped cannot wake its thread any more.
    fn take_sources_changed(&mut self) -> bool {
        false
    }

    /// The engine's own counters, for the control plane's `status` (asked through the
    /// mailbox, so the engine answers between steps). `None`: it has none beyond the
    /// runtime's.
    fn counters(&self) -> Option<serde_json::Value> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use snap_ipc::Ring;
    use snap_ipc::SharedMem;

    #[test]
    fn ring_set_probe_sees_pushes_and_removal() {
        let len = Ring::required_len(8, 64).unwrap();
        let ring = Ring::create(SharedMem::create("t", len).unwrap(), 8, 64).unwrap();
        let (mut tx, mut rx) = ring.split();
        let set = RingSet::default();
        let probe = WorkProbe::rings(set.clone());
        set.insert(7, rx.probe());
        assert!(!probe.has_work());
        tx.push(b"x").unwrap();
        assert!(probe.has_work());
        let mut buf = [0u8; 64];
        rx.try_pop(&mut buf).unwrap();
        assert!(!probe.has_work());
        tx.push(b"y").unwrap();
        set.remove(7);
        assert!(!probe.has_work());
    }
}
