//! [`Movable`]: how an engine's state and descriptors leave it for a new host process (a
//! transparent upgrade, docs/UPGRADE.md). The old host drives these calls on the engine's
//! own thread, through its mailbox, between two steps; the new host rebuilds the engine
//! from the state and the descriptors with its kind's importer (`snap-host`'s registry of
//! kinds), since only the kind knows its layout.
//!
//! ```text
//!   export_full ─▶ export_delta … (brownout: the engine keeps serving between exports)
//!   freeze ─▶ (new side checks the final delta) ─▶ hand_over ─▶ descriptors
//!          └─ refused ─▶ thaw (the engine resumes as if nothing happened)
//! ```

use std::os::fd::OwnedFd;

/// An engine whose state can move to another process. See the module documentation.
pub trait Movable {
    /// The whole state, while the engine keeps serving. Starts a transfer.
    fn export_full(&mut self) -> Result<Vec<u8>, String>;
    /// What changed since the previous export, while the engine keeps serving.
    fn export_delta(&mut self) -> Result<Vec<u8>, String>;
    /// Stops the engine (`run` does nothing from now on) and returns the final delta.
    fn freeze(&mut self) -> Result<Vec<u8>, String>;
    /// Resumes a frozen engine whose state was refused: nothing has moved.
    fn thaw(&mut self);
    /// Gives up the descriptors the state needs, one group per object (a channel is
    /// several descriptors, a socket one), in the order the state names the objects. The
    /// engine stays frozen and never serves again: its objects now belong to the new
    /// process, and dropping it must not touch them (a channel is not quarantined, a pool
    /// reference is not released).
    fn hand_over(&mut self) -> Result<Vec<Vec<OwnedFd>>, String>;
}
