//! Ctrl-C (and SIGTERM): the handler only sets a flag; every loop that may wait (for a
//! peer, stdin, a flow) waits in slices of [`SLICE`] and returns
//! [`Interrupted`](crate::fail::Interrupted) once it is set, so the tool leaves through its
//! ordinary error path: the session detaches as the control connection closes, stdout is
//! flushed, and the exit code says what happened.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;

use crate::fail::Interrupted;

/// How long a wait runs before it looks at the flag again.
pub const SLICE: Duration = Duration::from_millis(100);

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Installs the handler.
pub fn install() -> anyhow::Result<()> {
    ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::Relaxed)).context("installing the Ctrl-C handler")
}

/// Whether Ctrl-C was pressed.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// `Err(Interrupted)` once Ctrl-C was pressed.
pub fn check() -> Result<(), Interrupted> {
    if interrupted() {
        Err(Interrupted)
    } else {
        Ok(())
    }
}
