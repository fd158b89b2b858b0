//! What a flow reports to the layer above: [`FlowEvent`]s, and the [`FailReason`] of a flow
//! that failed.

use super::OneSided;
use crate::wire::{MessageId, StreamId, VersionRange};

/// Why a flow failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FailReason {
    /// No Accept after `max_retries` Connect retransmissions.
    ConnectTimeout,
    /// The peer refused: it speaks `peer` only.
    NoCommonVersion {
        /// The peer's versions.
        peer: VersionRange,
    },
    /// The peer refused: nobody listens on the service the Connect named.
    NoListener,
    /// The peer refused: it holds as many flows as it may.
    PeerBusy,
    /// The peer refused for a reason this version does not know (a newer peer's code).
    Refused {
        /// The Reject's reason code.
        code: u8,
    },
    /// No ACK after `max_retries` consecutive retransmission timeouts or window probes.
    PeerUnresponsive,
    /// The peer sent something impossible (e.g. accepted a version we do not speak).
    ProtocolViolation,
}

/// What happened, for the layer above.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FlowEvent<B = Vec<u8>> {
    /// The handshake finished with this version.
    Connected {
        /// Negotiated version.
        version: u8,
    },
    /// A whole message arrived (per stream in order, exactly once).
    MessageReceived {
        /// Stream.
        stream: StreamId,
        /// Message id on that stream.
        message: MessageId,
        /// The bytes, in the buffer the flow's [`RecvBuffers`](super::RecvBuffers) gave.
        data: B,
    },
    /// Every segment of a message we sent was acknowledged.
    MessageSent {
        /// Stream.
        stream: StreamId,
        /// Message id.
        message: MessageId,
    },
    /// A one-sided request or response arrived (exactly once, not ordered).
    OneSided(OneSided),
    /// The flow closed (either side; [`Flow::closed_by`](super::Flow::closed_by) says which).
    Closed,
    /// The flow failed.
    Failed(FailReason),
}
