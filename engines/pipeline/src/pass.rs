//! The `pass` stage: forwards every packet unchanged. It measures what the framework
//! itself costs (queues, descriptors, a thread hop) and stands in for a real stage in tests.

use crate::packet::Packet;
use crate::stage::{Output, Stage, UpdateError};

/// See the module documentation.
#[derive(Debug, Default)]
pub struct PassStage;

impl Stage for PassStage {
    fn kind(&self) -> &'static str {
        "pass"
    }

    fn process(&mut self, pkt: Packet, out: &mut Output<'_>) {
        // The engine guarantees room for the packet it gives us (see `Stage`).
        if let Err(pkt) = out.forward(pkt) {
            out.drop(pkt, "output_full");
        }
    }

    /// `pass` has no settings: only an empty table is accepted, so that a typo is not
    /// silently ignored.
    fn update(&mut self, settings: &str) -> Result<(), UpdateError> {
        if settings.trim().is_empty() {
            Ok(())
        } else {
            Err(UpdateError::new("stage kind \"pass\" has no settings"))
        }
    }
}
