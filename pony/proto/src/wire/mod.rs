//! The Pony wire format: how a [`Repr`] (what the flow and operation layers speak) becomes
//! bytes and back. Byte layout, checksum and versioning rules are in docs/WIRE.md.
//!
//! ```text
//!   flow / ops ──Repr──▶ Repr::emit(buf) ──bytes──▶ nic
//!   flow / ops ◀─Repr─── Repr::parse(bytes) ◀─────── nic   (Err(WireError): drop + count)
//!                              │
//!                        Packet<&[u8]>: field getters at fixed offsets (packet.rs)
//! ```
//!
//! Shaped like smoltcp's `wire`: [`Packet`] is a typed view over a byte buffer with
//! `new_checked` and big-endian field accessors; [`Repr`] is the parsed, validated form
//! with `parse`, `buffer_len` and `emit`.
//!
//! Guarantees:
//! - [`Repr::parse`] never panics and never reads out of bounds, whatever the input: it
//!   checks lengths before reading ([`Packet::check_len`]), then the CRC32C, then every
//!   field's invariants (reserved bytes zero, enums known, SACK blocks non-empty, segment
//!   offsets inside their totals). Property tests and the fuzz target in `pony/fuzz` hold
//!   it to that.
//! - [`Repr::emit`] never allocates and only writes packets that `parse` accepts: it runs
//!   the same invariant checks first. The encoding is canonical: re-emitting a parsed
//!   packet gives the same bytes (except the version byte of handshake packets, which
//!   receivers ignore).
//! - Connect, Accept and Reject have one layout for every version from 2 on, so two peers
//!   can always negotiate ([`negotiate`]); every other kind is only parsed in [`VERSION`].
//!   A Connect names the service it wants; a Reject says why ([`RejectReason`]).

mod codec;
mod gather;
mod packet;
#[cfg(test)]
mod proptests;
mod repr;
#[cfg(test)]
mod tests;

pub use codec::{check_parse_roundtrip, fuzz_parse};
pub use gather::PayloadPart;
pub use packet::{Packet, COMMON_HEADER_LEN, MAGIC};
pub use repr::*;

/// The wire version this code writes and reads for non-handshake packets.
///
/// 2 because the handshake layouts changed (Connect gained its service, Reject its
/// reason); version 1 was never deployed, so nothing speaks it and it is not supported.
pub const VERSION: u8 = 2;

/// The versions this code speaks (offered in Connect).
pub const SUPPORTED_VERSIONS: VersionRange = VersionRange {
    min: VERSION,
    max: VERSION,
};

/// The longest header of any kind: an Ack with [`MAX_SACK_BLOCKS`] blocks (112 bytes).
pub const MAX_HEADER_LEN: usize = Kind::Ack.header_len(MAX_SACK_BLOCKS);

/// Why bytes are not a valid Pony packet (or a [`Repr`] cannot be emitted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than its header, or than its header and payload lengths say.
    #[error("packet truncated")]
    Truncated,
    /// The first two bytes are not [`MAGIC`].
    #[error("bad magic number")]
    BadMagic,
    /// A non-handshake packet of a version other than [`VERSION`].
    #[error("unsupported wire version {found}")]
    UnsupportedVersion {
        /// The version byte of the packet.
        found: u8,
    },
    /// The CRC32C does not match.
    #[error("bad checksum")]
    BadChecksum,
    /// An unknown kind byte (in the current version).
    #[error("unknown packet kind {0}")]
    UnknownKind(u8),
    /// A field breaks an invariant (which one is said).
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// `emit` was given a buffer shorter than [`Repr::buffer_len`].
    #[error("buffer of {got} bytes, {needed} needed")]
    BufferTooSmall {
        /// [`Repr::buffer_len`].
        needed: usize,
        /// The buffer's length.
        got: usize,
    },
}

/// The kind byte of a packet, one per [`Repr`] variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// [`Repr::Connect`].
    Connect = 1,
    /// [`Repr::Accept`].
    Accept = 2,
    /// [`Repr::Reject`].
    Reject = 3,
    /// [`Repr::Data`].
    Data = 4,
    /// [`Repr::Ack`].
    Ack = 5,
    /// [`Repr::Close`].
    Close = 6,
    /// [`Repr::ReadRequest`].
    ReadRequest = 7,
    /// [`Repr::IndirectReadRequest`].
    IndirectReadRequest = 8,
    /// [`Repr::WriteRequest`].
    WriteRequest = 9,
    /// [`Repr::OpResponse`].
    OpResponse = 10,
    /// [`Repr::OpError`].
    OpError = 11,
}

impl Kind {
    /// Every kind, in kind-byte order.
    pub const ALL: [Kind; 11] = [
        Kind::Connect,
        Kind::Accept,
        Kind::Reject,
        Kind::Data,
        Kind::Ack,
        Kind::Close,
        Kind::ReadRequest,
        Kind::IndirectReadRequest,
        Kind::WriteRequest,
        Kind::OpResponse,
        Kind::OpError,
    ];

    /// The kind with this byte, if any.
    pub const fn from_byte(byte: u8) -> Option<Kind> {
        if byte >= 1 && byte as usize <= Kind::ALL.len() {
            Some(Kind::ALL[byte as usize - 1])
        } else {
            None
        }
    }

    /// Header length in bytes (common header included). `sacks` counts only for an Ack
    /// (16 bytes per block); other kinds have a fixed header.
    pub const fn header_len(self, sacks: usize) -> usize {
        match self {
            Kind::Connect | Kind::Accept => 40,
            Kind::Reject | Kind::Close => 24,
            Kind::Data => 56,
            Kind::Ack => 48 + 16 * sacks,
            Kind::ReadRequest | Kind::IndirectReadRequest | Kind::WriteRequest => 64,
            Kind::OpResponse => 48,
            Kind::OpError => 40,
        }
    }

    /// Whether packets of this kind carry a payload (Data, WriteRequest, OpResponse).
    pub const fn has_payload(self) -> bool {
        matches!(self, Kind::Data | Kind::WriteRequest | Kind::OpResponse)
    }

    /// Whether the kind is part of version negotiation (parsed in every version).
    pub const fn is_handshake(self) -> bool {
        matches!(self, Kind::Connect | Kind::Accept | Kind::Reject)
    }
}

/// The most payload bytes a packet of `kind` can carry when the NIC takes packets of at
/// most `mtu` bytes (`Nic::mtu()`, Pony header included, UDP/IP headers not). Zero for
/// kinds without payload or an `mtu` below the header.
pub const fn max_payload(mtu: usize, kind: Kind) -> usize {
    if !kind.has_payload() || mtu <= kind.header_len(0) {
        return 0;
    }
    let room = mtu - kind.header_len(0);
    if room > u32::MAX as usize {
        u32::MAX as usize
    } else {
        room
    }
}

impl VersionRange {
    /// Whether the range holds no version (`min > max`, or version 0 in it).
    pub const fn is_valid(&self) -> bool {
        self.min >= 1 && self.min <= self.max
    }

    /// Whether `version` is in the range.
    pub const fn contains(&self, version: u8) -> bool {
        self.min <= version && version <= self.max
    }
}

/// The version two peers use: the highest in both ranges, or `None` (send a Reject) when
/// they share none or either range is invalid.
pub fn negotiate(ours: VersionRange, theirs: VersionRange) -> Option<u8> {
    if !ours.is_valid() || !theirs.is_valid() {
        return None;
    }
    let highest = ours.max.min(theirs.max);
    (highest >= ours.min.max(theirs.min)).then_some(highest)
}

/// Counters of packets a receiver dropped, by reason (what the engine keeps per NIC).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounters {
    /// [`WireError::Truncated`].
    pub truncated: u64,
    /// [`WireError::BadMagic`].
    pub bad_magic: u64,
    /// [`WireError::UnsupportedVersion`].
    pub unsupported_version: u64,
    /// [`WireError::BadChecksum`].
    pub bad_checksum: u64,
    /// [`WireError::UnknownKind`].
    pub unknown_kind: u64,
    /// [`WireError::Malformed`] (and [`WireError::BufferTooSmall`], which parse never returns).
    pub malformed: u64,
}

impl DropCounters {
    /// Counts one dropped packet.
    pub fn record(&mut self, error: &WireError) {
        let counter = match error {
            WireError::Truncated => &mut self.truncated,
            WireError::BadMagic => &mut self.bad_magic,
            WireError::UnsupportedVersion { .. } => &mut self.unsupported_version,
            WireError::BadChecksum => &mut self.bad_checksum,
            WireError::UnknownKind(_) => &mut self.unknown_kind,
            WireError::Malformed(_) | WireError::BufferTooSmall { .. } => &mut self.malformed,
        };
        *counter += 1;
    }

    /// All drops.
    pub fn total(&self) -> u64 {
        self.truncated
            + self.bad_magic
            + self.unsupported_version
            + self.bad_checksum
            + self.unknown_kind
            + self.malformed
    }
}

impl OpErrorCode {
    /// The code with this byte, if any.
    pub const fn from_byte(byte: u8) -> Option<OpErrorCode> {
        match byte {
            2 => Some(OpErrorCode::AccessDenied),
            3 => Some(OpErrorCode::OutOfBounds),
            4 => Some(OpErrorCode::TooLarge),
            _ => None,
        }
    }
}

impl RejectReason {
    /// The reason with this code; `None` for 0, which no version uses.
    pub const fn from_byte(byte: u8) -> Option<RejectReason> {
        match byte {
            0 => None,
            1 => Some(RejectReason::NoCommonVersion),
            2 => Some(RejectReason::NoListener),
            3 => Some(RejectReason::TooManyFlows),
            other => Some(RejectReason::Other(other)),
        }
    }

    /// The code on the wire.
    pub const fn to_byte(self) -> u8 {
        match self {
            RejectReason::NoCommonVersion => 1,
            RejectReason::NoListener => 2,
            RejectReason::TooManyFlows => 3,
            RejectReason::Other(code) => code,
        }
    }
}
