//! The app ↔ engine side of Pony, transport-agnostic: what an app and its Pony engine
//! exchange through shared memory, and the state each keeps about the other.
//!
//! ```text
//!   app process (AppSession)                         snap-host (EngineSession, Regions)
//!   ──────────────────────────                       ─────────────────────────────────
//!   pool.write_chain(msg) ─┐                          ┌─ next_command(): decode, snapshot
//!   Command::Send{head,…} ─┴─▶ command ring ────────▶ │  and hold the chain (zero-copy)
//!   ring engine doorbell ───────────────────────────▶ │
//!                          ◀── completion ring ◀──────┤  complete(): Sent / Received{head}…
//!   (Block) wait on own doorbell ◀── ring if armed ───┘  deliver(): payload into pool chain
//!                                                        Regions: registered memfds + keys
//! ```
//!
//! * [`proto`]: [`Command`] and [`Completion`] records and their checked codec.
//! * [`session`]: the session layout (the rings and doorbells of a `snap_ipc::channel` plus
//!   a [`crate::pool::Pool`]) and the app's end, [`AppSession`].
//!
//! The engine's end (`EngineSession`: the bookkeeping of chains in flight that makes crash
//! cleanup exact) and its registry of memory regions live in `pony-engine`.

pub mod proto;
pub mod session;

pub use proto::{CloseReason, Command, Completion, Cookie, DecodeError, FlowId, ServiceId};
pub use session::{AppSession, Completions, Received, SessionError, SessionShape, DEFAULT_COMPLETION_SPIN};

/// Why an operation failed, as carried in completions (and on the wire to the peer engine
/// when a remote check refuses). Numbered from 1: 0 means success in records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[repr(u16)]
pub enum OpErrorCode {
    /// The app's own Unregister named a region it does not hold (never registered, already
    /// unregistered, or another app's: the three read the same). Local only: a remote peer
    /// never sees this code, it gets [`OpErrorCode::AccessDenied`].
    #[error("unknown region")]
    UnknownRegion = 1,
    /// A one-sided op named a region that does not exist or a key that does not match it.
    /// One code for both, so a peer probing region ids learns nothing about which exist.
    /// (Code 2 was `BadKey` before; its meaning only widened.)
    #[error("access denied: unknown region or wrong key")]
    AccessDenied = 2,
    /// Offset and length fall (partly) outside the region, or overflow.
    #[error("out of region bounds")]
    OutOfBounds = 3,
    /// No such flow.
    #[error("unknown flow")]
    UnknownFlow = 4,
    /// A buffer chain named by the command is invalid (out of range, not allocated,
    /// cyclic, wrong length, or already held by another command): the engine quarantines
    /// the session and names this code in the `Quarantined` error's `detail`.
    #[error("bad buffer chain")]
    BadChain = 5,
    /// The pool has no free buffers for the result.
    #[error("no free buffers")]
    NoBuffers = 6,
    /// The result does not fit in the buffers given.
    #[error("too large")]
    TooLarge = 7,
    /// The peer could not be reached.
    #[error("peer unreachable")]
    Unreachable = 8,
    /// The flow was closed while the operation was in flight.
    #[error("flow closed")]
    FlowClosed = 9,
    /// The command record could not be decoded: the engine quarantines the session and
    /// names this code in the `Quarantined` error's `detail`.
    #[error("malformed command")]
    BadCommand = 10,
    /// The engine failed for a reason of its own.
    #[error("internal engine error")]
    Internal = 11,
    /// A region could not be registered (not a sealed memfd, wrong length, too many).
    #[error("region registration refused")]
    RegionRefused = 12,
    /// Listen on a service another listener (of any app) already holds.
    #[error("service already has a listener")]
    ServiceTaken = 13,
    /// The peer engine has nobody listening on the service the flow was opened to.
    #[error("no listener on the service")]
    NoListener = 14,
    /// The peer engine speaks no wire version this one does.
    #[error("no common wire version with the peer")]
    VersionMismatch = 15,
    /// The flow id names a flow that is gone: its slot now holds a later flow, or none
    /// (ids carry a generation, so an old id never reaches a new flow).
    #[error("stale flow id (the flow is closed)")]
    StaleFlow = 16,
    /// The engine (or this app) holds as many flows as it may (`max_flows`,
    /// `max_flows_per_app`).
    #[error("too many flows")]
    TooManyFlows = 17,
    /// This app has as many operations in the engine as it may (`max_ops_per_app`); retry
    /// once some complete.
    #[error("too many operations in flight")]
    TooManyOps = 18,
    /// This app has registered as many regions as it may (`max_regions_per_app`).
    #[error("too many regions")]
    TooManyRegions = 19,
    /// The peer engine refused the flow: it holds as many flows as it may.
    #[error("the peer holds too many flows")]
    PeerBusy = 20,
    /// The engine quarantined this session: its command ring broke (indices or lengths
    /// that no correct app writes). The session is detached: its flows are closed and its
    /// buffers and regions reclaimed. Sent once, as an `Error` with cookie 0.
    #[error("session quarantined: its command ring is corrupt")]
    Quarantined = 21,
}

impl OpErrorCode {
    /// The highest code.
    pub const LAST: OpErrorCode = OpErrorCode::Quarantined;

    /// The code numbered `v`, if any.
    pub fn from_u16(v: u16) -> Option<Self> {
        use OpErrorCode::*;
        Some(match v {
            1 => UnknownRegion,
            2 => AccessDenied,
            3 => OutOfBounds,
            4 => UnknownFlow,
            5 => BadChain,
            6 => NoBuffers,
            7 => TooLarge,
            8 => Unreachable,
            9 => FlowClosed,
            10 => BadCommand,
            11 => Internal,
            12 => RegionRefused,
            13 => ServiceTaken,
            14 => NoListener,
            15 => VersionMismatch,
            16 => StaleFlow,
            17 => TooManyFlows,
            18 => TooManyOps,
            19 => TooManyRegions,
            20 => PeerBusy,
            21 => Quarantined,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::OpErrorCode;

    #[test]
    fn codes_round_trip() {
        for v in 0..=40u16 {
            match OpErrorCode::from_u16(v) {
                Some(c) => assert_eq!(c as u16, v),
                None => assert!(v == 0 || v > OpErrorCode::LAST as u16),
            }
        }
    }
}
