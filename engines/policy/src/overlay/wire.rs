//! The overlay's encapsulation header, smoltcp-style: [`Packet`] reads and writes fields
//! in place, [`Repr`] is the checked form with `parse` and `emit`. All integers are big
//! endian; the header is 56 bytes, a multiple of 8, in front of the inner (Pony) packet:
//!
//! ```text
//!  0      2     3     4       8          12        16               32               48     50     52       56
//!  +------+-----+-----+-------+----------+---------+----------------+----------------+------+------+--------+
//!  |magic | ver |rsvd |  VNI  |inner len | CRC32C  | inner src addr | inner dst addr |src pt|dst pt|reserved|
//!  +------+-----+-----+-------+----------+---------+----------------+----------------+------+------+--------+
//! ```
//!
//! - magic `"OV"` (0x4F56), version 1; reserved bytes zero.
//! - VNI: the tenant's virtual network id, never 0.
//! - inner len: bytes after the header; the outer datagram holds exactly header + inner.
//! - CRC32C over the 56 header bytes with this field zero. It guards the fields the
//!   receiver decides on (VNI, addresses) against corruption; the inner Pony packet
//!   carries its own CRC32C over itself, so the payload is not summed twice.
//! - Addresses: the inner packet's virtual source and destination, IPv6 or IPv4 as
//!   IPv4-mapped IPv6 (`::ffff:a.b.c.d`, read back as IPv4; that range is therefore not
//!   usable as IPv6 virtual addresses), with their ports.
//!
//! Parsing never panics and reads nothing out of bounds; emitting never allocates.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// `"OV"`.
pub const MAGIC: u16 = 0x4F56;
/// The version written and read.
pub const VERSION: u8 = 1;
/// Header length.
pub const HEADER_LEN: usize = 56;

mod field {
    pub type Field = core::ops::Range<usize>;
    pub const MAGIC: Field = 0..2;
    pub const VERSION: usize = 2;
    pub const RESERVED0: usize = 3;
    pub const VNI: Field = 4..8;
    pub const INNER_LEN: Field = 8..12;
    pub const CHECKSUM: Field = 12..16;
    pub const SRC_ADDR: Field = 16..32;
    pub const DST_ADDR: Field = 32..48;
    pub const SRC_PORT: Field = 48..50;
    pub const DST_PORT: Field = 50..52;
    pub const RESERVED1: Field = 52..56;
}

/// Why bytes are not a valid overlay packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than the header.
    #[error("truncated")]
    Truncated,
    /// Not [`MAGIC`].
    #[error("bad magic")]
    BadMagic,
    /// Not [`VERSION`].
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
    /// The header's CRC32C does not match.
    #[error("bad checksum")]
    BadChecksum,
    /// A field breaks an invariant.
    #[error("malformed: {0}")]
    Malformed(&'static str),
}

/// A view of an overlay packet (header and inner packet) in `buffer`.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn addr(b: &[u8]) -> IpAddr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(b);
    let v6 = Ipv6Addr::from(octets);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

fn addr_bytes(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without checks (getters panic on a buffer shorter than the header).
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps `buffer` after checking the header is there: then every getter is in bounds.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, WireError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Packet { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The magic number.
    #[inline]
    pub fn magic(&self) -> u16 {
        be16(&self.b()[field::MAGIC])
    }
    /// The version byte.
    #[inline]
    pub fn version(&self) -> u8 {
        self.b()[field::VERSION]
    }
    /// The virtual network id.
    #[inline]
    pub fn vni(&self) -> u32 {
        be32(&self.b()[field::VNI])
    }
    /// The inner packet's length as the header says.
    #[inline]
    pub fn inner_len(&self) -> u32 {
        be32(&self.b()[field::INNER_LEN])
    }
    /// The checksum field.
    #[inline]
    pub fn checksum(&self) -> u32 {
        be32(&self.b()[field::CHECKSUM])
    }
    /// The inner source address and port.
    #[inline]
    pub fn src(&self) -> SocketAddr {
        SocketAddr::new(addr(&self.b()[field::SRC_ADDR]), be16(&self.b()[field::SRC_PORT]))
    }
    /// The inner destination address and port.
    #[inline]
    pub fn dst(&self) -> SocketAddr {
        SocketAddr::new(addr(&self.b()[field::DST_ADDR]), be16(&self.b()[field::DST_PORT]))
    }
    /// Whether the reserved bytes are zero.
    pub fn reserved_zero(&self) -> bool {
        self.b()[field::RESERVED0] == 0 && self.b()[field::RESERVED1].iter().all(|&b| b == 0)
    }
    /// The CRC32C of the header with the checksum field taken as zero.
    pub fn compute_checksum(&self) -> u32 {
        let b = &self.b()[..HEADER_LEN];
        let crc = crc32c::crc32c(&b[..field::CHECKSUM.start]);
        let crc = crc32c::crc32c_append(crc, &[0; 4]);
        crc32c::crc32c_append(crc, &b[field::CHECKSUM.end..])
    }
    /// The inner packet.
    pub fn inner(&self) -> &[u8] {
        &self.b()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn m(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }
    /// Sets the VNI (tests: a hostile peer's rewrite).
    pub fn set_vni(&mut self, vni: u32) {
        self.m()[field::VNI].copy_from_slice(&vni.to_be_bytes());
    }
    /// Sets the inner source.
    pub fn set_src(&mut self, src: SocketAddr) {
        self.m()[field::SRC_ADDR].copy_from_slice(&addr_bytes(src.ip()));
        self.m()[field::SRC_PORT].copy_from_slice(&src.port().to_be_bytes());
    }
    /// Writes the checksum of the header as it is.
    pub fn fill_checksum(&mut self) {
        self.m()[field::CHECKSUM].copy_from_slice(&[0; 4]);
        let crc = self.compute_checksum();
        self.m()[field::CHECKSUM].copy_from_slice(&crc.to_be_bytes());
    }
}

/// The parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Virtual network id (≥ 1).
    pub vni: u32,
    /// Inner source (virtual).
    pub src: SocketAddr,
    /// Inner destination (virtual).
    pub dst: SocketAddr,
    /// Bytes of the inner packet.
    pub inner_len: u32,
}

impl Repr {
    /// Checks a whole overlay packet (header and inner bytes) and returns its header:
    /// magic, version, reserved zero, checksum, VNI ≠ 0, and the inner length equal to the
    /// bytes that follow.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, WireError> {
        if packet.b().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if packet.magic() != MAGIC {
            return Err(WireError::BadMagic);
        }
        if packet.version() != VERSION {
            return Err(WireError::UnsupportedVersion(packet.version()));
        }
        if packet.checksum() != packet.compute_checksum() {
            return Err(WireError::BadChecksum);
        }
        if !packet.reserved_zero() {
            return Err(WireError::Malformed("reserved bytes set"));
        }
        if packet.vni() == 0 {
            return Err(WireError::Malformed("VNI 0"));
        }
        if packet.inner_len() as usize != packet.b().len() - HEADER_LEN {
            return Err(WireError::Malformed("inner length does not match the datagram"));
        }
        Ok(Repr {
            vni: packet.vni(),
            src: packet.src(),
            dst: packet.dst(),
            inner_len: packet.inner_len(),
        })
    }

    /// Writes the header into `header` (exactly [`HEADER_LEN`] bytes), checksum included.
    pub fn emit(&self, header: &mut [u8; HEADER_LEN]) {
        header.fill(0);
        header[field::MAGIC].copy_from_slice(&MAGIC.to_be_bytes());
        header[field::VERSION] = VERSION;
        header[field::VNI].copy_from_slice(&self.vni.to_be_bytes());
        header[field::INNER_LEN].copy_from_slice(&self.inner_len.to_be_bytes());
        header[field::SRC_ADDR].copy_from_slice(&addr_bytes(self.src.ip()));
        header[field::DST_ADDR].copy_from_slice(&addr_bytes(self.dst.ip()));
        header[field::SRC_PORT].copy_from_slice(&self.src.port().to_be_bytes());
        header[field::DST_PORT].copy_from_slice(&self.dst.port().to_be_bytes());
        Packet::new_unchecked(&mut header[..]).fill_checksum();
    }
}
