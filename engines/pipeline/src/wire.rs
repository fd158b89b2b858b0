//! [`Wire`]: what the last stage of a pipeline sends to and receives from, the NIC. It is
//! the pipeline's view of a NIC, kept this small so that this crate does not depend on
//! Pony's: pony-engine implements it for every `Nic` (UDP, AF_XDP, the shared-memory
//! wire), as it is configured for a Pony engine today.

use std::time::Instant;

use snap_runtime::{WakeSource, WorkProbe};

use crate::packet::Peer;

/// Why a wire operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The transmit queue is full: nothing was sent; the stage engine keeps the packet and
    /// retries.
    #[error("transmit queue full")]
    WouldBlock,
    /// Any other failure (the packet is dropped and counted under this error).
    #[error("{0}")]
    Failed(String),
}

/// The NIC owned by a pipeline's last stage. Never blocks.
pub trait Wire: Send {
    /// Sends one packet to `to`.
    fn send(&mut self, packet: &[u8], to: Peer) -> Result<(), WireError>;

    /// Hands up to `max` received packets to `deliver` (each a slice of the NIC's own
    /// buffer, valid during the call) and returns how many.
    fn recv(&mut self, max: usize, deliver: &mut dyn FnMut(&[u8], Peer)) -> Result<usize, WireError>;

    /// What wakes the engine when packets arrive.
    fn wake_source(&self) -> Option<WakeSource>;

    /// Whether packets are waiting (for NICs woken by doorbells; see `snap_runtime`).
    fn work_probe(&self) -> WorkProbe {
        WorkProbe::never()
    }

    /// When the NIC next needs a call even without input.
    fn poll_at(&self) -> Option<Instant> {
        None
    }

    /// The NIC's counters, for status.
    fn counters(&self) -> Option<serde_json::Value> {
        None
    }
}
