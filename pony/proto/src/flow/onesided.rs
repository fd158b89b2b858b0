//! One-sided requests and responses as the flow layer carries them.
//!
//! The flow does not interpret them (the ops layer does); it gives each a sequence number,
//! retransmits it until acknowledged, suppresses duplicates and hands received ones up as
//! [`FlowEvent::OneSided`](super::FlowEvent::OneSided). Each is a single packet: the ops layer
//! splits large writes and read responses itself (the packets carry `payload_offset`).
//! Received ones are not ordered among themselves.

use bytes::Bytes;

use super::Chunks;
use crate::wire::{FlowId, Kind, OpErrorCode, PacketSeq, Repr};

/// A one-sided packet with owned payload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[allow(missing_docs)] // the fields mean what they mean in `wire::Repr`
pub enum OneSided {
    /// See [`Repr::ReadRequest`].
    ReadRequest {
        op: u64,
        region: u32,
        key: u64,
        offset: u64,
        len: u32,
    },
    /// See [`Repr::IndirectReadRequest`].
    IndirectReadRequest {
        op: u64,
        table: u32,
        table_key: u64,
        index: u32,
        region: u32,
        key: u64,
    },
    /// See [`Repr::WriteRequest`].
    WriteRequest {
        op: u64,
        region: u32,
        key: u64,
        offset: u64,
        total_len: u32,
        payload_offset: u32,
        payload: Chunks,
    },
    /// See [`Repr::OpResponse`].
    OpResponse {
        op: u64,
        total_len: u32,
        payload_offset: u32,
        payload: Chunks,
    },
    /// See [`Repr::OpError`].
    OpError { op: u64, code: OpErrorCode },
}

impl OneSided {
    /// The payload (empty for requests without one).
    pub fn payload(&self) -> &Chunks {
        static EMPTY: Chunks = Chunks::EMPTY;
        match self {
            OneSided::WriteRequest { payload, .. } | OneSided::OpResponse { payload, .. } => payload,
            _ => &EMPTY,
        }
    }

    /// The packet kind that carries it.
    pub fn kind(&self) -> Kind {
        match self {
            OneSided::ReadRequest { .. } => Kind::ReadRequest,
            OneSided::IndirectReadRequest { .. } => Kind::IndirectReadRequest,
            OneSided::WriteRequest { .. } => Kind::WriteRequest,
            OneSided::OpResponse { .. } => Kind::OpResponse,
            OneSided::OpError { .. } => Kind::OpError,
        }
    }

    /// The packet for it, borrowing the payload: the Repr holds its first piece, the rest
    /// are gathered when it is emitted.
    pub(crate) fn to_repr(&self, dst_flow: FlowId, seq: PacketSeq) -> (Repr<'_>, &[super::Piece]) {
        let (payload, rest) = self.payload().split_first();
        let repr = match *self {
            OneSided::ReadRequest {
                op,
                region,
                key,
                offset,
                len,
            } => Repr::ReadRequest {
                dst_flow,
                seq,
                op,
                region,
                key,
                offset,
                len,
            },
            OneSided::IndirectReadRequest {
                op,
                table,
                table_key,
                index,
                region,
                key,
            } => Repr::IndirectReadRequest {
                dst_flow,
                seq,
                op,
                table,
                table_key,
                index,
                region,
                key,
            },
            OneSided::WriteRequest {
                op,
                region,
                key,
                offset,
                total_len,
                payload_offset,
                ..
            } => Repr::WriteRequest {
                dst_flow,
                seq,
                op,
                region,
                key,
                offset,
                total_len,
                payload_offset,
                payload,
            },
            OneSided::OpResponse {
                op,
                total_len,
                payload_offset,
                ..
            } => Repr::OpResponse {
                dst_flow,
                seq,
                op,
                total_len,
                payload_offset,
                payload,
            },
            OneSided::OpError { op, code } => Repr::OpError {
                dst_flow,
                seq,
                op,
                code,
            },
        };
        (repr, rest)
    }

    /// The one-sided content of a received packet (copying its payload once), if it is one.
    pub(crate) fn from_repr(repr: &Repr<'_>) -> Option<Self> {
        let (mut op, data) = OneSided::from_repr_in_place(repr)?;
        if let OneSided::WriteRequest { payload, .. } | OneSided::OpResponse { payload, .. } = &mut op {
            *payload = Bytes::copy_from_slice(data).into();
        }
        Some(op)
    }

    /// The one-sided content of a received packet without its payload (left empty), and
    /// the payload borrowed from the packet: for acting on it in place, without a copy.
    pub fn from_repr_in_place<'a>(repr: &Repr<'a>) -> Option<(Self, &'a [u8])> {
        Some(match *repr {
            Repr::ReadRequest {
                op,
                region,
                key,
                offset,
                len,
                ..
            } => (
                OneSided::ReadRequest {
                    op,
                    region,
                    key,
                    offset,
                    len,
                },
                &[],
            ),
            Repr::IndirectReadRequest {
                op,
                table,
                table_key,
                index,
                region,
                key,
                ..
            } => (
                OneSided::IndirectReadRequest {
                    op,
                    table,
                    table_key,
                    index,
                    region,
                    key,
                },
                &[],
            ),
            Repr::WriteRequest {
                op,
                region,
                key,
                offset,
                total_len,
                payload_offset,
                payload,
                ..
            } => (
                OneSided::WriteRequest {
                    op,
                    region,
                    key,
                    offset,
                    total_len,
                    payload_offset,
                    payload: Chunks::EMPTY,
                },
                payload,
            ),
            Repr::OpResponse {
                op,
                total_len,
                payload_offset,
                payload,
                ..
            } => (
                OneSided::OpResponse {
                    op,
                    total_len,
                    payload_offset,
                    payload: Chunks::EMPTY,
                },
                payload,
            ),
            Repr::OpError { op, code, .. } => (OneSided::OpError { op, code }, &[]),
            _ => return None,
        })
    }
}
