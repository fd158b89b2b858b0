//! The descriptor: what a queue's ring carries for one packet, in a fixed 40-byte layout
//! (smoltcp's `Packet`/`Repr` idiom: [`DescRepr::parse`] never panics, [`DescRepr::emit`]
//! never allocates).
//!
//! ```text
//!   0      4        8     12   13     14    16            32       36    37   40
//!   index │ offset │ len │fam │class │port │ addr (16)    │tenant │ -- pad -- │
//! ```
//!
//! `fam` is 0 (no peer), 1 (the point-to-point wire), 4 or 6 (an IP peer: `addr` holds
//! the address, IPv4 in its first four bytes). Integers are little-endian. The buffer
//! named by `index` stays in the pool: a descriptor is how its ownership moves from one
//! stage to the next.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::packet::{Meta, Peer};

/// Bytes of one encoded descriptor.
pub const DESC_LEN: usize = 40;

mod field {
    use std::ops::Range;
    pub const INDEX: Range<usize> = 0..4;
    pub const OFFSET: Range<usize> = 4..8;
    pub const LEN: Range<usize> = 8..12;
    pub const FAMILY: usize = 12;
    pub const CLASS: usize = 13;
    pub const PORT: Range<usize> = 14..16;
    pub const ADDR: Range<usize> = 16..32;
    pub const TENANT: Range<usize> = 32..36;
}

const FAM_NONE: u8 = 0;
const FAM_WIRE: u8 = 1;
const FAM_V4: u8 = 4;
const FAM_V6: u8 = 6;

/// Why a descriptor read from a ring was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DescError {
    /// The ring message is not [`DESC_LEN`] bytes long.
    #[error("descriptor of {0} bytes (expected {DESC_LEN})")]
    Length(usize),
    /// The peer family byte is none of the known ones.
    #[error("unknown peer family {0}")]
    Family(u8),
    /// The buffer index is outside the pool.
    #[error("buffer index {index} outside a pool of {count}")]
    Index {
        /// Index read.
        index: u32,
        /// Buffers in the pool.
        count: u32,
    },
    /// `offset + len` runs past the end of the buffer.
    #[error("bytes {offset}..{offset}+{len} outside a buffer of {size}")]
    Bounds {
        /// Offset read.
        offset: u32,
        /// Length read.
        len: u32,
        /// Buffer size.
        size: u32,
    },
    /// The buffer is not one in flight on a queue (a duplicate or stale descriptor).
    #[error("buffer {0} is not in flight on a queue")]
    NotQueued(u32),
}

/// A parsed descriptor: which pool buffer, which bytes of it, and the packet's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescRepr {
    /// Pool buffer index.
    pub index: u32,
    /// First byte of the packet in the buffer.
    pub offset: u32,
    /// Packet length.
    pub len: u32,
    /// Where the packet goes (Tx) or came from (Rx).
    pub peer: Peer,
    /// Metadata set by the stages above.
    pub meta: Meta,
}

impl DescRepr {
    /// Parses a ring message. Checks only the format; bounds against a pool are the pool's
    /// job ([`crate::Pool`]).
    pub fn parse(b: &[u8]) -> Result<Self, DescError> {
        if b.len() != DESC_LEN {
            return Err(DescError::Length(b.len()));
        }
        let u32_at = |r: std::ops::Range<usize>| u32::from_le_bytes(b[r].try_into().unwrap_or([0; 4]));
        let port = u16::from_le_bytes([b[field::PORT.start], b[field::PORT.start + 1]]);
        let mut addr = [0u8; 16];
        addr.copy_from_slice(&b[field::ADDR]);
        let peer = match b[field::FAMILY] {
            FAM_NONE => Peer::None,
            FAM_WIRE => Peer::Wire,
            FAM_V4 => {
                let ip = Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]);
                Peer::Ip(SocketAddr::new(IpAddr::V4(ip), port))
            }
            FAM_V6 => Peer::Ip(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(addr)), port)),
            f => return Err(DescError::Family(f)),
        };
        Ok(Self {
            index: u32_at(field::INDEX),
            offset: u32_at(field::OFFSET),
            len: u32_at(field::LEN),
            peer,
            meta: Meta {
                tenant: u32_at(field::TENANT),
                class: b[field::CLASS],
            },
        })
    }

    /// Writes the descriptor into `b`.
    pub fn emit(&self, b: &mut [u8; DESC_LEN]) {
        *b = [0; DESC_LEN];
        b[field::INDEX].copy_from_slice(&self.index.to_le_bytes());
        b[field::OFFSET].copy_from_slice(&self.offset.to_le_bytes());
        b[field::LEN].copy_from_slice(&self.len.to_le_bytes());
        b[field::CLASS] = self.meta.class;
        b[field::TENANT].copy_from_slice(&self.meta.tenant.to_le_bytes());
        let (fam, port) = match self.peer {
            Peer::None => (FAM_NONE, 0),
            Peer::Wire => (FAM_WIRE, 0),
            Peer::Ip(SocketAddr::V4(a)) => {
                b[field::ADDR][..4].copy_from_slice(&a.ip().octets());
                (FAM_V4, a.port())
            }
            Peer::Ip(SocketAddr::V6(a)) => {
                b[field::ADDR].copy_from_slice(&a.ip().octets());
                (FAM_V6, a.port())
            }
        };
        b[field::FAMILY] = fam;
        b[field::PORT].copy_from_slice(&port.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn peer() -> impl Strategy<Value = Peer> {
        prop_oneof![
            Just(Peer::None),
            Just(Peer::Wire),
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(a, p)| Peer::Ip(SocketAddr::from((a, p)))),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(a, p)| Peer::Ip(SocketAddr::from((a, p)))),
        ]
    }

    proptest! {
        #[test]
        fn round_trips(index: u32, offset: u32, len: u32, tenant: u32, class: u8, peer in peer()) {
            let d = DescRepr { index, offset, len, peer, meta: Meta { tenant, class } };
            let mut b = [0; DESC_LEN];
            d.emit(&mut b);
            prop_assert_eq!(DescRepr::parse(&b), Ok(d));
        }

        #[test]
        fn parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = DescRepr::parse(&b);
        }
    }

    #[test]
    fn refuses_wrong_length_and_family() {
        assert_eq!(DescRepr::parse(&[0; 39]), Err(DescError::Length(39)));
        let mut b = [0; DESC_LEN];
        b[field::FAMILY] = 9;
        assert_eq!(DescRepr::parse(&b), Err(DescError::Family(9)));
    }
}
