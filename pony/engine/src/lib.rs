//! The Pony engine: Pony Express's transport inside a Snap host, an engine
//! (`snap_runtime::Engine`) that joins apps' sessions to `pony_proto` flows over a NIC.
//!
//! [`engine`] is [`PonyEngine`] (the flow mapper, app commands, one-sided operations);
//! [`session`] is the engine's end of an app's session (commands taken and validated, chains
//! held, crash cleanup); [`regions`] is the registry of memory regions apps expose to
//! one-sided operations; [`nic`] is the NIC interface and its backends (UDP, a
//! shared-memory wire between two hosts on one machine, a fault injector).
//!
//! `snap-host` builds Pony engines from its configuration (`kind = "pony"`); applications
//! link `pony-express`, never this crate.

pub mod engine;
pub mod nic;
pub mod regions;
pub mod session;

pub use engine::upgrade::{FdUse, Handover, SnapshotInfo, StateError, FORMAT_VERSION};
pub use engine::{PonyConfig, PonyEngine, PonyLimits, PonyStats, MAX_FLOWS_LIMIT};
