//! [`FlowError`]: why a call on a flow (`accept`, `send_message`, `send_one_sided`) was
//! refused.

use crate::wire::Repr;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// The message (or one-sided payload) exceeds what may be sent in one go.
    #[error("{len} bytes exceed the maximum of {max}")]
    TooLarge {
        /// Bytes offered.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The send buffer is full; retry after `MessageSent` events.
    #[error("send buffer full")]
    Busy,
    /// The flow is closing, closed or failed.
    #[error("flow is closed")]
    Closed,
    /// `accept` was given something other than a Connect.
    #[error("not a Connect packet")]
    NotConnect,
    /// No common version: send `reject` to the initiator.
    #[error("no common wire version")]
    Rejected {
        /// The Reject packet to send back.
        reject: Box<Repr<'static>>,
    },
}
