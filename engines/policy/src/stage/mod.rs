//! The three cores as pipeline stages ([`snap_pipeline::Stage`]): each adapts packets,
//! their peer and metadata and the engine's `now` to its core, and reads its settings
//! (configuration and run-time updates alike) from TOML text, checked whole before use.
//!
//! Where they sit (Tx toward the NIC; Rx runs the same line backwards):
//!
//! ```text
//!  Pony ─▶ acl ─▶ overlay ─▶ shaper ─▶ NIC
//!          │       │          └ wire bytes, per tenant (set by the overlay)
//!          │       └ virtual peer → physical peer, tenant set on both directions
//!          └ Pony packets, virtual peers
//! ```
//!
//! The ACL must see Pony packets, so it sits between Pony and the overlay; the shaper
//! after the overlay shapes the bytes that go on the wire.

mod acl;
mod overlay;
mod shaper;

#[cfg(test)]
mod tests;

use std::time::Instant;

pub use acl::AclStage;
pub use overlay::OverlayStage;
pub use shaper::ShaperStage;

use snap_pipeline::UpdateError;

/// Reads a stage's TOML settings into its table type.
fn parse<T: serde::de::DeserializeOwned>(kind: &str, settings: &str) -> Result<T, UpdateError> {
    toml::from_str(settings).map_err(|error| UpdateError::new(format!("{kind} settings: {error}")))
}

/// The nanoseconds since a stage's epoch: the cores count time as plain integers.
fn ns_since(epoch: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}
