//! Byte-level view of one Pony packet, smoltcp-style: [`Packet`] wraps any byte buffer and
//! reads or writes the fields in place at fixed offsets (all integers big endian). The
//! byte layout of every kind is in docs/WIRE.md; the offsets here are the source of truth.
//!
//! ```text
//!  0      2    3    4          8        10        12           16
//!  +------+----+----+----------+--------+---------+------------+-------------------+---------+
//!  |magic |ver |kind| checksum |hdr len |reserved |payload len | kind-specific ... | payload |
//!  +------+----+----+----------+--------+---------+------------+-------------------+---------+
//! ```
//!
//! Getters panic if the buffer is shorter than the field they read; after
//! [`Packet::new_checked`] every field of the packet's own kind is in bounds, which is what
//! [`super::Repr::parse`] relies on.

use super::{Kind, WireError, MAX_SACK_BLOCKS, VERSION};
use crate::wire::SackBlock;

/// Field offsets. Every u64 sits at an 8-aligned offset and every header is a multiple of
/// 8 bytes long, so a header can be read with aligned loads when the buffer is aligned.
pub(super) mod field {
    pub type Field = core::ops::Range<usize>;

    // Common header, every kind.
    pub const MAGIC: Field = 0..2;
    pub const VERSION: usize = 2;
    pub const KIND: usize = 3;
    pub const CHECKSUM: Field = 4..8;
    pub const HEADER_LEN: Field = 8..10;
    pub const RESERVED: Field = 10..12;
    pub const PAYLOAD_LEN: Field = 12..16;
    pub const COMMON_END: usize = 16;

    // Shared by several kinds.
    /// Every kind but Connect.
    pub const DST_FLOW: Field = 16..20;
    /// Data, one-sided requests, OpResponse, OpError; Ack's cumulative ack.
    pub const SEQ: Field = 24..32;
    /// One-sided requests, OpResponse, OpError.
    pub const OP: Field = 32..40;

    pub const CONNECT_SRC_FLOW: Field = 16..20;
    pub const CONNECT_VERSION_MIN: usize = 20;
    pub const CONNECT_VERSION_MAX: usize = 21;
    pub const CONNECT_CREDIT: Field = 24..32;
    pub const CONNECT_SERVICE: Field = 32..36;

    pub const ACCEPT_SRC_FLOW: Field = 20..24;
    pub const ACCEPT_CREDIT: Field = 24..32;
    pub const ACCEPT_VERSION: usize = 32;

    pub const REJECT_VERSION_MIN: usize = 20;
    pub const REJECT_VERSION_MAX: usize = 21;
    pub const REJECT_REASON: usize = 22;

    pub const DATA_STREAM: Field = 20..24;
    pub const DATA_TIMESTAMP: Field = 32..40;
    pub const DATA_MESSAGE: Field = 40..48;
    pub const DATA_MESSAGE_LEN: Field = 48..52;
    pub const DATA_OFFSET: Field = 52..56;

    pub const ACK_SACK_COUNT: usize = 20;
    pub const ACK_CREDIT: Field = 32..40;
    pub const ACK_ECHO_TIMESTAMP: Field = 40..48;
    /// First SACK block; block `i` is at `ACK_SACKS + i * SACK_BLOCK_LEN`.
    pub const ACK_SACKS: usize = 48;
    pub const SACK_BLOCK_LEN: usize = 16;

    // ReadRequest and WriteRequest.
    pub const REGION: Field = 20..24;
    pub const KEY: Field = 40..48;
    pub const REGION_OFFSET: Field = 48..56;
    pub const READ_LEN: Field = 56..60;
    pub const WRITE_TOTAL_LEN: Field = 56..60;
    pub const WRITE_PAYLOAD_OFFSET: Field = 60..64;

    pub const INDIRECT_TABLE: Field = 20..24;
    pub const INDIRECT_TABLE_KEY: Field = 40..48;
    pub const INDIRECT_KEY: Field = 48..56;
    pub const INDIRECT_INDEX: Field = 56..60;
    pub const INDIRECT_REGION: Field = 60..64;

    pub const RESPONSE_TOTAL_LEN: Field = 20..24;
    pub const RESPONSE_PAYLOAD_OFFSET: Field = 40..44;

    pub const ERROR_CODE: usize = 20;
}

/// `"PN"`: the first two bytes of every Pony packet.
pub const MAGIC: u16 = 0x504E;

/// Length of the header every kind starts with.
pub const COMMON_HEADER_LEN: usize = field::COMMON_END;

/// A read/write view of a Pony packet in `buffer` (the buffer is exactly the packet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

/// Reads a big-endian integer of type `$ty` from `$field` of `$buf`.
macro_rules! read_be {
    ($buf:expr, $ty:ty, $field:expr) => {{
        let mut bytes = [0u8; core::mem::size_of::<$ty>()];
        bytes.copy_from_slice(&$buf[$field]);
        <$ty>::from_be_bytes(bytes)
    }};
}

/// Getter and setter pairs for fixed fields: `getter / setter: type = range;`.
macro_rules! fields {
    ($( $(#[$doc:meta])* $get:ident / $set:ident : $ty:ty = $field:expr; )*) => {
        impl<T: AsRef<[u8]>> Packet<T> {
            $(
                $(#[$doc])*
                #[inline]
                pub fn $get(&self) -> $ty {
                    read_be!(self.buffer.as_ref(), $ty, $field)
                }
            )*
        }
        impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
            $(
                #[doc = concat!("Sets the field read by [`Packet::", stringify!($get), "`].")]
                #[inline]
                pub fn $set(&mut self, value: $ty) {
                    self.buffer.as_mut()[$field].copy_from_slice(&value.to_be_bytes());
                }
            )*
        }
    };
}

fields! {
    /// The magic number ([`MAGIC`] in a Pony packet).
    magic / set_magic: u16 = field::MAGIC;
    /// The wire version the packet is written in.
    version / set_version: u8 = field::VERSION..field::VERSION + 1;
    /// The raw kind byte (see [`Kind`]).
    kind_byte / set_kind_byte: u8 = field::KIND..field::KIND + 1;
    /// The CRC32C of the whole packet with this field zeroed.
    checksum / set_checksum: u32 = field::CHECKSUM;
    /// Header length in bytes, common header included.
    header_len / set_header_len: u16 = field::HEADER_LEN;
    /// Reserved bytes of the common header (zero).
    reserved / set_reserved: u16 = field::RESERVED;
    /// Payload length in bytes.
    payload_len / set_payload_len: u32 = field::PAYLOAD_LEN;

    /// Receiver's flow id (every kind but Connect).
    dst_flow / set_dst_flow: u32 = field::DST_FLOW;
    /// Packet sequence number (Data, one-sided kinds); the cumulative ack in an Ack.
    seq / set_seq: u64 = field::SEQ;
    /// Operation id (ReadRequest, IndirectReadRequest, WriteRequest, OpResponse, OpError).
    op / set_op: u64 = field::OP;

    /// Connect: the initiator's flow id.
    connect_src_flow / set_connect_src_flow: u32 = field::CONNECT_SRC_FLOW;
    /// Connect: oldest version spoken.
    connect_version_min / set_connect_version_min: u8 =
        field::CONNECT_VERSION_MIN..field::CONNECT_VERSION_MIN + 1;
    /// Connect: newest version spoken.
    connect_version_max / set_connect_version_max: u8 =
        field::CONNECT_VERSION_MAX..field::CONNECT_VERSION_MAX + 1;
    /// Connect: initial credit in bytes.
    connect_credit / set_connect_credit: u64 = field::CONNECT_CREDIT;
    /// Connect: the service wanted.
    connect_service / set_connect_service: u32 = field::CONNECT_SERVICE;

    /// Accept: the responder's flow id.
    accept_src_flow / set_accept_src_flow: u32 = field::ACCEPT_SRC_FLOW;
    /// Accept: initial credit in bytes.
    accept_credit / set_accept_credit: u64 = field::ACCEPT_CREDIT;
    /// Accept: the chosen version.
    accept_version / set_accept_version: u8 = field::ACCEPT_VERSION..field::ACCEPT_VERSION + 1;

    /// Reject: oldest version the responder speaks.
    reject_version_min / set_reject_version_min: u8 =
        field::REJECT_VERSION_MIN..field::REJECT_VERSION_MIN + 1;
    /// Reject: newest version the responder speaks.
    reject_version_max / set_reject_version_max: u8 =
        field::REJECT_VERSION_MAX..field::REJECT_VERSION_MAX + 1;
    /// Reject: the raw reason code (see [`super::RejectReason`]).
    reject_reason / set_reject_reason: u8 = field::REJECT_REASON..field::REJECT_REASON + 1;

    /// Data: stream id.
    data_stream / set_data_stream: u32 = field::DATA_STREAM;
    /// Data: sender's timestamp in ns.
    data_timestamp / set_data_timestamp: u64 = field::DATA_TIMESTAMP;
    /// Data: message id.
    data_message / set_data_message: u64 = field::DATA_MESSAGE;
    /// Data: total message length.
    data_message_len / set_data_message_len: u32 = field::DATA_MESSAGE_LEN;
    /// Data: offset of the payload in the message.
    data_offset / set_data_offset: u32 = field::DATA_OFFSET;

    /// Ack: number of SACK blocks that follow the fixed fields.
    ack_sack_count / set_ack_sack_count: u8 = field::ACK_SACK_COUNT..field::ACK_SACK_COUNT + 1;
    /// Ack: credit in bytes.
    ack_credit / set_ack_credit: u64 = field::ACK_CREDIT;
    /// Ack: echoed timestamp in ns.
    ack_echo_timestamp / set_ack_echo_timestamp: u64 = field::ACK_ECHO_TIMESTAMP;

    /// ReadRequest, WriteRequest: region id.
    region / set_region: u32 = field::REGION;
    /// ReadRequest, WriteRequest: region key.
    key / set_key: u64 = field::KEY;
    /// ReadRequest, WriteRequest: offset in the region.
    region_offset / set_region_offset: u64 = field::REGION_OFFSET;
    /// ReadRequest: bytes wanted.
    read_len / set_read_len: u32 = field::READ_LEN;
    /// WriteRequest: total bytes of the write.
    write_total_len / set_write_total_len: u32 = field::WRITE_TOTAL_LEN;
    /// WriteRequest: offset of this segment within the write.
    write_payload_offset / set_write_payload_offset: u32 = field::WRITE_PAYLOAD_OFFSET;

    /// IndirectReadRequest: table region id.
    indirect_table / set_indirect_table: u32 = field::INDIRECT_TABLE;
    /// IndirectReadRequest: table region key.
    indirect_table_key / set_indirect_table_key: u64 = field::INDIRECT_TABLE_KEY;
    /// IndirectReadRequest: target region key.
    indirect_key / set_indirect_key: u64 = field::INDIRECT_KEY;
    /// IndirectReadRequest: table entry index.
    indirect_index / set_indirect_index: u32 = field::INDIRECT_INDEX;
    /// IndirectReadRequest: target region id.
    indirect_region / set_indirect_region: u32 = field::INDIRECT_REGION;

    /// OpResponse: total bytes of the response.
    response_total_len / set_response_total_len: u32 = field::RESPONSE_TOTAL_LEN;
    /// OpResponse: offset of this segment.
    response_payload_offset / set_response_payload_offset: u32 = field::RESPONSE_PAYLOAD_OFFSET;

    /// OpError: the raw error code.
    error_code / set_error_code: u8 = field::ERROR_CODE..field::ERROR_CODE + 1;
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without any check; getters may panic on a short buffer.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after [`Packet::check_len`]: then every getter of the packet's kind
    /// and [`Packet::payload`] are in bounds.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks what the getters rely on, in this order: the common header is there, the
    /// magic, the version (any for Connect/Accept/Reject, [`VERSION`] for the rest), the
    /// kind, the header length for that kind (for an Ack: with its SACK count), no payload
    /// on kinds that carry none, and header + payload filling the buffer exactly.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < COMMON_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.magic() != MAGIC {
            return Err(WireError::BadMagic);
        }
        let kind = match Kind::from_byte(self.kind_byte()) {
            Some(kind) if kind.is_handshake() || self.version() == VERSION => kind,
            _ if self.version() != VERSION => {
                return Err(WireError::UnsupportedVersion {
                    found: self.version(),
                })
            }
            _ => return Err(WireError::UnknownKind(self.kind_byte())),
        };
        let header_len = usize::from(self.header_len());
        if header_len < kind.header_len(0) {
            return Err(WireError::Malformed("header length too short for the kind"));
        }
        if len < header_len {
            return Err(WireError::Truncated);
        }
        let sacks = if kind == Kind::Ack {
            usize::from(self.ack_sack_count())
        } else {
            0
        };
        if sacks > MAX_SACK_BLOCKS {
            return Err(WireError::Malformed("too many SACK blocks"));
        }
        if header_len != kind.header_len(sacks) {
            return Err(WireError::Malformed("header length does not match the kind"));
        }
        let payload_len = usize::try_from(self.payload_len()).map_err(|_| WireError::Truncated)?;
        if payload_len != 0 && !kind.has_payload() {
            return Err(WireError::Malformed("payload on a kind that carries none"));
        }
        match header_len.checked_add(payload_len) {
            Some(total) if total == len => Ok(()),
            Some(total) if total < len => Err(WireError::Malformed("bytes after the payload")),
            _ => Err(WireError::Truncated),
        }
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The packet's kind, if known.
    pub fn kind(&self) -> Option<Kind> {
        Kind::from_byte(self.kind_byte())
    }

    /// SACK block `index` of an Ack. Panics if it is outside the header.
    pub fn ack_sack(&self, index: usize) -> SackBlock {
        let at = field::ACK_SACKS + index * field::SACK_BLOCK_LEN;
        let buf = self.buffer.as_ref();
        SackBlock {
            start: read_be!(buf, u64, at..at + 8),
            end: read_be!(buf, u64, at + 8..at + 16),
        }
    }

    /// CRC32C over the whole buffer, with the checksum field taken as zero.
    pub fn compute_checksum(&self) -> u32 {
        let buf = self.buffer.as_ref();
        let crc = crc32c::crc32c(&buf[..field::CHECKSUM.start]);
        let crc = crc32c::crc32c_append(crc, &[0; 4]);
        crc32c::crc32c_append(crc, &buf[field::CHECKSUM.end..])
    }

    /// CRC32C of the first `header_len` bytes with the checksum field taken as zero: the
    /// start of [`Packet::compute_checksum`], for a writer that continues it over the
    /// payload as it copies it in. Panics if the buffer is shorter than `header_len` or
    /// `header_len` is shorter than the common header.
    pub fn header_checksum(&self, header_len: usize) -> u32 {
        let buf = &self.buffer.as_ref()[..header_len];
        let crc = crc32c::crc32c(&buf[..field::CHECKSUM.start]);
        let crc = crc32c::crc32c_append(crc, &[0; 4]);
        crc32c::crc32c_append(crc, &buf[field::CHECKSUM.end..])
    }

    /// Whether the checksum field matches the contents.
    pub fn verify_checksum(&self) -> bool {
        self.checksum() == self.compute_checksum()
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload, borrowed for the buffer's lifetime. Panics unless
    /// [`Packet::check_len`] passed.
    pub fn payload(&self) -> &'a [u8] {
        let start = usize::from(self.header_len());
        &self.buffer.as_ref()[start..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// The payload, mutable (everything after the header length). Panics if the buffer is
    /// shorter than the header length.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = usize::from(self.header_len());
        &mut self.buffer.as_mut()[start..]
    }

    /// Writes SACK block `index` of an Ack. Panics if it is outside the buffer.
    pub fn set_ack_sack(&mut self, index: usize, block: SackBlock) {
        let at = field::ACK_SACKS + index * field::SACK_BLOCK_LEN;
        let buf = self.buffer.as_mut();
        buf[at..at + 8].copy_from_slice(&block.start.to_be_bytes());
        buf[at + 8..at + 16].copy_from_slice(&block.end.to_be_bytes());
    }

    /// Zeroes the first `len` bytes (the header), so reserved bytes are zero.
    pub fn clear_header(&mut self, len: usize) {
        self.buffer.as_mut()[..len].fill(0);
    }

    /// Computes and writes the checksum; call it after every other field is written.
    pub fn fill_checksum(&mut self) {
        let crc = self.compute_checksum();
        self.set_checksum(crc);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// Reserved byte ranges of each kind's header (must be zero).
pub(super) fn reserved_ranges(kind: Kind) -> &'static [field::Field] {
    match kind {
        Kind::Connect => &[field::RESERVED, 22..24, 36..40],
        Kind::Reject => &[field::RESERVED, 23..24],
        Kind::Accept => &[field::RESERVED, 33..40],
        Kind::Ack | Kind::OpError => &[field::RESERVED, 21..24],
        Kind::Close => &[field::RESERVED, 20..24],
        Kind::ReadRequest => &[field::RESERVED, 60..64],
        Kind::OpResponse => &[field::RESERVED, 44..48],
        Kind::Data | Kind::IndirectReadRequest | Kind::WriteRequest => &[field::RESERVED],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getters_and_setters_are_big_endian() {
        let mut buf = [0u8; 24];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_magic(MAGIC);
        p.set_dst_flow(0x0102_0304);
        p.set_header_len(24);
        assert_eq!(&buf[..2], b"PN");
        assert_eq!(&buf[16..20], &[1, 2, 3, 4]);
        assert_eq!(&buf[8..10], &[0, 24]);
    }

    #[test]
    fn checksum_ignores_its_own_field() {
        let mut buf = [7u8; 32];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.fill_checksum();
        assert!(p.verify_checksum());
        let crc = p.checksum();
        p.set_checksum(!crc);
        assert_eq!(p.compute_checksum(), crc);
        assert!(!p.verify_checksum());
    }

    #[test]
    fn crc32c_check_value() {
        // The standard CRC-32C (Castagnoli) check value.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn short_buffers_are_truncated() {
        for len in 0..COMMON_HEADER_LEN {
            assert_eq!(Packet::new_checked(&[0u8; 16][..len]), Err(WireError::Truncated));
        }
    }
}
