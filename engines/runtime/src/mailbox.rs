//! The control mailbox: a depth-one queue through which the control plane runs code on an
//! engine's own thread (attach an app, change a setting, read internal state).
//!
//! Engines hold no locks, so the control plane may never touch an engine from its own
//! thread. Instead it posts a closure; the thread that owns the engine runs it between two
//! `run()` steps, and the poster waits for the result. Depth one is Snap's choice: control
//! operations are rare and serialised per engine, and a second poster simply waits until the
//! slot is free, which bounds the control plane's memory and makes its effect on the data path
//! one closure at a time. Posting writes the mailbox's eventfd, which wakes a blocked thread.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use rustix::event::{eventfd, EventfdFlags};

use crate::engine::Engine;

/// A control operation: runs once, on the engine's thread, with the engine.
pub type ControlOp = Box<dyn FnOnce(&mut dyn Engine) + Send>;

/// Why a control operation was not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The slot stayed occupied, or the engine's thread did not take the operation, for the
    /// whole timeout: the engine is stuck in `run()` or its thread is starved.
    #[error("engine {engine} did not take the control operation within {timeout:?}")]
    Timeout {
        /// Engine name.
        engine: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// The engine failed (panicked) or the runtime shut down; nothing runs it any more.
    #[error("engine {0} is no longer running")]
    Gone(String),
    /// The operation expected a different engine type.
    #[error("engine {engine} is not a {expected}")]
    WrongType {
        /// Engine name.
        engine: String,
        /// The type the caller asked for.
        expected: &'static str,
    },
}

/// One engine's mailbox. Shared (`Arc`) by the control plane and the engine's thread.
#[derive(Debug)]
pub struct Mailbox {
    slot: Mutex<Slot>,
    freed: Condvar,
    /// Cheap "anything posted?" check for the run loop, so that it does not lock per step.
    posted: AtomicBool,
    wake: OwnedFd,
}

#[derive(Default)]
struct Slot {
    op: Option<ControlOp>,
    closed: bool,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("occupied", &self.op.is_some())
            .field("closed", &self.closed)
            .finish()
    }
}

impl Mailbox {
    /// An empty mailbox.
    pub fn new() -> rustix::io::Result<Self> {
        Ok(Self {
            slot: Mutex::new(Slot::default()),
            freed: Condvar::new(),
            posted: AtomicBool::new(false),
            wake: eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?,
        })
    }

    /// Puts `op` in the slot, waiting up to `timeout` for it to be free, and wakes the
    /// engine's thread. `engine` names the engine in errors.
    pub fn post(&self, engine: &str, op: ControlOp, timeout: Duration) -> Result<(), ControlError> {
        let deadline = Instant::now() + timeout;
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if slot.closed {
                return Err(ControlError::Gone(engine.to_owned()));
            }
            if slot.op.is_none() {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ControlError::Timeout {
                    engine: engine.to_owned(),
                    timeout,
                });
            }
            slot = self
                .freed
                .wait_timeout(slot, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        slot.op = Some(op);
        self.posted.store(true, Ordering::Release);
        drop(slot);
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
        Ok(())
    }

    /// Takes the posted operation, if any (engine thread). Lock-free when empty.
    pub fn take(&self) -> Option<ControlOp> {
        if !self.posted.load(Ordering::Acquire) {
            return None;
        }
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        self.posted.store(false, Ordering::Relaxed);
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.wake, &mut buf);
        let op = slot.op.take();
        drop(slot);
        self.freed.notify_one();
        op
    }

    /// Refuses all further posts and drops a pending operation (its poster sees `Gone`
    /// through its reply channel being dropped). Called when the engine fails or the
    /// runtime stops.
    pub fn close(&self) {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        slot.closed = true;
        slot.op = None;
        self.posted.store(false, Ordering::Relaxed);
        drop(slot);
        self.freed.notify_all();
    }

    /// The eventfd a blocked thread waits on.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn noop() -> ControlOp {
        Box::new(|_| {})
    }

    #[test]
    fn depth_one_second_post_waits_then_times_out() {
        let mb = Mailbox::new().unwrap();
        mb.post("e", noop(), Duration::from_millis(10)).unwrap();
        let err = mb.post("e", noop(), Duration::from_millis(20)).unwrap_err();
        assert!(matches!(err, ControlError::Timeout { .. }), "{err}");
        assert!(mb.take().is_some());
        assert!(mb.take().is_none());
        mb.post("e", noop(), Duration::from_millis(10)).unwrap();
    }

    #[test]
    fn waiting_poster_gets_the_slot_when_taken() {
        let mb = Arc::new(Mailbox::new().unwrap());
        mb.post("e", noop(), Duration::from_millis(10)).unwrap();
        let poster = {
            let mb = mb.clone();
            std::thread::spawn(move || mb.post("e", noop(), Duration::from_secs(10)))
        };
        std::thread::sleep(Duration::from_millis(20));
        assert!(mb.take().is_some());
        poster.join().unwrap().unwrap();
        assert!(mb.take().is_some());
    }

    #[test]
    fn closed_mailbox_refuses() {
        let mb = Mailbox::new().unwrap();
        mb.close();
        assert_eq!(
            mb.post("e", noop(), Duration::from_millis(1)).unwrap_err(),
            ControlError::Gone("e".into())
        );
    }
}
