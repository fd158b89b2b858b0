//! Pony Express, Snap's transport (not built yet; see the Pony Express issue).
//!
//! What will live here: the app library (shared-memory command/completion
//! rings and a zero-copy buffer pool), the Pony engine (operation state
//! machines over a flow mapper over sans-IO reliable, congestion-controlled
//! flows), the versioned wire format, and NIC backends. This crate is
//! deliberately empty until then: nothing here pretends to work.
