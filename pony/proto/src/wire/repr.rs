//! The high-level representation of every Pony packet: what the flow and operation layers
//! produce and consume. `super` turns a [`Repr`] into bytes (`emit`) and bytes into a
//! [`Repr`] (`parse`), smoltcp-style; this file only defines the shapes.
//!
//! Payloads borrow from the packet buffer (`&'a [u8]`), so parsing copies nothing.

/// Identifies a flow at the receiver (each side picks its own id for a flow and tells the
/// peer at connect; packets carry the *receiver's* id, like QUIC connection ids).
pub type FlowId = u32;

/// Packet sequence number within a flow (per-flow, every packet that needs reliability).
pub type PacketSeq = u64;

/// A stream within a flow; messages on one stream are delivered in order, streams are
/// independent.
pub type StreamId = u32;

/// A message within a stream, numbered from 0 by the sender.
pub type MessageId = u64;

/// A service on an engine: a Connect names one, and the engine hands the flow to the app
/// listening on it (like a port; any value, 0 included).
pub type ServiceId = u32;

/// Range of wire versions a peer speaks (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VersionRange {
    /// Oldest version spoken.
    pub min: u8,
    /// Newest version spoken.
    pub max: u8,
}

/// A SACK block: packets `start..end` (half-open) were received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SackBlock {
    /// First received sequence number of the block.
    pub start: PacketSeq,
    /// One past the last.
    pub end: PacketSeq,
}

/// At most this many SACK blocks per ACK.
pub const MAX_SACK_BLOCKS: usize = 4;

/// Why a one-sided operation was refused by the remote side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum OpErrorCode {
    /// No region with that id, or the key does not match it: one code for both, so that a
    /// peer probing region ids cannot tell which exist. (Code 1, `NoSuchRegion`, is
    /// retired: never sent, and read as malformed.)
    AccessDenied = 2,
    /// offset + len is outside the region (or the indirection table entry is).
    OutOfBounds = 3,
    /// The operation is larger than the peer accepts in one go.
    TooLarge = 4,
}

/// Why a responder refused a Connect (the `reason` of [`Repr::Reject`]).
///
/// Handshake packets parse in every version, so a code this version does not know is kept
/// as [`RejectReason::Other`] rather than refused: the initiator still learns that it was
/// rejected instead of retransmitting its Connect until it gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// No version in both ranges (code 1).
    NoCommonVersion,
    /// Nobody listens on the Connect's service (code 2).
    NoListener,
    /// The responder holds as many flows as it may (code 3).
    TooManyFlows,
    /// A code from a newer version: never 0 (invalid) nor one of the codes above.
    Other(u8),
}

/// One Pony packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repr<'a> {
    /// Opens a flow: sent by the initiator, `src_flow` is the id it chose for the flow.
    Connect {
        /// Versions the initiator speaks.
        versions: VersionRange,
        /// Initiator's id for this flow (the responder puts it in packets it sends back).
        src_flow: FlowId,
        /// Bytes the initiator can buffer for received messages (initial credit).
        credit: u64,
        /// The service the initiator wants (the responder's listening app).
        service: ServiceId,
    },
    /// Accepts a flow: the chosen version and the responder's own id.
    Accept {
        /// Flow id of the initiator (the receiver of this packet).
        dst_flow: FlowId,
        /// Version both speak (the highest common one).
        version: u8,
        /// Responder's id for this flow.
        src_flow: FlowId,
        /// Bytes the responder can buffer (initial credit).
        credit: u64,
    },
    /// Refuses a connect (no common version, or no such service).
    Reject {
        /// Flow id of the initiator.
        dst_flow: FlowId,
        /// Versions the responder speaks, so the initiator can say why.
        versions: VersionRange,
        /// Why.
        reason: RejectReason,
    },
    /// A segment of a message.
    Data {
        /// Receiver's flow id.
        dst_flow: FlowId,
        /// Packet sequence number.
        seq: PacketSeq,
        /// Sender's clock when sent (ns, sender's epoch), echoed in ACKs for delay.
        timestamp_ns: u64,
        /// Stream.
        stream: StreamId,
        /// Message within the stream.
        message: MessageId,
        /// Total message length in bytes (≤ 2^32 - 1).
        message_len: u32,
        /// Offset of `payload` within the message.
        offset: u32,
        /// The bytes.
        payload: &'a [u8],
    },
    /// Acknowledges received packets and grants credit.
    Ack {
        /// Receiver's flow id (the data sender's id).
        dst_flow: FlowId,
        /// Every packet below this was received.
        cumulative: PacketSeq,
        /// Received ranges above `cumulative` (at most [`MAX_SACK_BLOCKS`]).
        sacks: heapless_sacks::Sacks,
        /// Bytes the receiver can still buffer beyond what it has acknowledged.
        credit: u64,
        /// `timestamp_ns` of the packet that triggered this ACK (for delay measurement).
        echo_timestamp_ns: u64,
    },
    /// Closes the flow.
    Close {
        /// Receiver's flow id.
        dst_flow: FlowId,
    },
    /// One-sided read of `len` bytes at `offset` of the peer's region.
    ReadRequest {
        /// Receiver's flow id.
        dst_flow: FlowId,
        /// Packet sequence number (one-sided requests are reliable like data).
        seq: PacketSeq,
        /// Operation id chosen by the requester, echoed in the response.
        op: u64,
        /// Remote region id.
        region: u32,
        /// The region's key.
        key: u64,
        /// Offset in the region.
        offset: u64,
        /// Bytes wanted.
        len: u32,
    },
    /// One-sided read whose address comes from the peer's indirection table: entry `index`
    /// of table region `table` holds (offset: u64, len: u32) into region `region`.
    IndirectReadRequest {
        /// Receiver's flow id.
        dst_flow: FlowId,
        /// Packet sequence number.
        seq: PacketSeq,
        /// Operation id.
        op: u64,
        /// Region holding the indirection table.
        table: u32,
        /// The table region's key.
        table_key: u64,
        /// Entry index.
        index: u32,
        /// Region the entry points into.
        region: u32,
        /// That region's key.
        key: u64,
    },
    /// One-sided write of `payload` at `offset` of the peer's region (a segment of it:
    /// `total_len` bytes in all, this one at `payload_offset`).
    WriteRequest {
        /// Receiver's flow id.
        dst_flow: FlowId,
        /// Packet sequence number.
        seq: PacketSeq,
        /// Operation id.
        op: u64,
        /// Remote region id.
        region: u32,
        /// The region's key.
        key: u64,
        /// Offset in the region where the whole write starts.
        offset: u64,
        /// Total bytes of the write.
        total_len: u32,
        /// Offset of this segment within the write.
        payload_offset: u32,
        /// The bytes.
        payload: &'a [u8],
    },
    /// A segment of the data answering a read (`total_len` in all, this one at
    /// `payload_offset`), or the completion of a write (`payload` empty, `total_len` 0).
    OpResponse {
        /// Receiver's flow id.
        dst_flow: FlowId,
        /// Packet sequence number.
        seq: PacketSeq,
        /// Operation id from the request.
        op: u64,
        /// Total bytes of the response.
        total_len: u32,
        /// Offset of this segment.
        payload_offset: u32,
        /// The bytes.
        payload: &'a [u8],
    },
    /// A refused one-sided operation.
    OpError {
        /// Receiver's flow id.
        dst_flow: FlowId,
        /// Packet sequence number.
        seq: PacketSeq,
        /// Operation id from the request.
        op: u64,
        /// Why.
        code: OpErrorCode,
    },
}

/// A fixed-capacity list of SACK blocks (no allocation per ACK).
pub mod heapless_sacks {
    use super::{SackBlock, MAX_SACK_BLOCKS};

    /// Up to [`MAX_SACK_BLOCKS`] blocks.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct Sacks {
        blocks: [Option<SackBlock>; MAX_SACK_BLOCKS],
        len: usize,
    }

    impl Sacks {
        /// Adds a block; returns false (and drops it) when full.
        pub fn push(&mut self, block: SackBlock) -> bool {
            if self.len == MAX_SACK_BLOCKS {
                return false;
            }
            self.blocks[self.len] = Some(block);
            self.len += 1;
            true
        }

        /// The blocks in order of insertion.
        pub fn iter(&self) -> impl Iterator<Item = SackBlock> + '_ {
            self.blocks[..self.len].iter().flatten().copied()
        }

        /// Number of blocks.
        pub fn len(&self) -> usize {
            self.len
        }

        /// Whether there are none.
        pub fn is_empty(&self) -> bool {
            self.len == 0
        }
    }
}
