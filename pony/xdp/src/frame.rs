// SPDX-License-Identifier: MIT OR Apache-2.0
//! Ethernet + IPv4 + UDP framing of Pony packets: [`Headers::write`] fills the 42 header
//! bytes in front of a payload already in place (lengths and both checksums), [`parse`]
//! takes a received frame apart.
//!
//! Hand-written rather than taken from `etherparse` or `smoltcp`: the NIC needs one fixed
//! header layout (no IP options, no VLAN, no IPv6) written straight into a UMEM frame
//! around a payload that is already there, and both crates' writers want to own the
//! payload copy or the buffer layout. The proptests below check what they would have
//! guaranteed: a written frame parses back, its checksums verify, and no input panics.
//!
//! The UDP checksum is computed on send (a kernel UDP socket at the other end drops
//! datagrams whose checksum is wrong) but not checked on receive: a kernel sender on veth
//! leaves it partial (`CHECKSUM_PARTIAL`, only the pseudo-header sum) for offload, and
//! Pony's own CRC covers every packet anyway.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::Range;

/// Ethernet (14) + IPv4 without options (20) + UDP (8).
pub const HEADER_LEN: usize = ETH_LEN + IP_LEN + UDP_LEN;
const ETH_LEN: usize = 14;
const IP_LEN: usize = 20;
const UDP_LEN: usize = 8;
const ETHERTYPE_IPV4: u16 = 0x0800;
const PROTO_UDP: u8 = 17;
/// Don't fragment: Pony sizes its packets to the path MTU itself.
const IP_DF: u16 = 0x4000;
const TTL: u8 = 64;

/// A MAC address.
pub type Mac = [u8; 6];

/// The headers of one direction of a UDP conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headers {
    /// Our interface's MAC.
    pub src_mac: Mac,
    /// The next hop's MAC.
    pub dst_mac: Mac,
    /// Our address and port.
    pub src: SocketAddrV4,
    /// The peer's address and port.
    pub dst: SocketAddrV4,
}

impl Headers {
    /// Writes the headers into `frame[..HEADER_LEN]` for the payload in `frame[HEADER_LEN..]`
    /// (the whole rest of `frame`). Panics if `frame` is shorter than the headers or the
    /// payload longer than an IPv4 datagram can carry (callers bound it by the MTU).
    pub fn write(&self, frame: &mut [u8], ip_id: u16) {
        let payload = frame.len() - HEADER_LEN;
        let udp_len = u16::try_from(UDP_LEN + payload).expect("payload fits a UDP datagram");
        let ip_len = u16::try_from(IP_LEN + UDP_LEN + payload).expect("payload fits an IPv4 datagram");
        let (eth, rest) = frame.split_at_mut(ETH_LEN);
        eth[0..6].copy_from_slice(&self.dst_mac);
        eth[6..12].copy_from_slice(&self.src_mac);
        eth[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());

        let (ip, udp) = rest.split_at_mut(IP_LEN);
        ip[0] = 0x45; // version 4, 5 words of header
        ip[1] = 0;
        ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
        ip[4..6].copy_from_slice(&ip_id.to_be_bytes());
        ip[6..8].copy_from_slice(&IP_DF.to_be_bytes());
        ip[8] = TTL;
        ip[9] = PROTO_UDP;
        ip[10..12].fill(0);
        ip[12..16].copy_from_slice(&self.src.ip().octets());
        ip[16..20].copy_from_slice(&self.dst.ip().octets());
        let ip_sum = !fold(sum(ip, 0));
        ip[10..12].copy_from_slice(&ip_sum.to_be_bytes());

        udp[0..2].copy_from_slice(&self.src.port().to_be_bytes());
        udp[2..4].copy_from_slice(&self.dst.port().to_be_bytes());
        udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
        udp[6..8].fill(0);
        let pseudo = pseudo_header_sum(*self.src.ip(), *self.dst.ip(), udp_len);
        // A zero checksum means "none" in UDP over IPv4, so a computed 0 is sent as 0xffff.
        let udp_sum = match !fold(sum(udp, pseudo)) {
            0 => 0xffff,
            s => s,
        };
        udp[6..8].copy_from_slice(&udp_sum.to_be_bytes());
    }
}

/// A parsed frame: who sent it to whom, and where its UDP payload lies in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// Sender address and port.
    pub src: SocketAddrV4,
    /// Destination address and port.
    pub dst: SocketAddrV4,
    /// The sender's MAC.
    pub src_mac: Mac,
    /// The UDP payload's bytes within the frame.
    pub payload: Range<usize>,
}

/// Takes an Ethernet frame apart; `None` for anything but an unfragmented UDP-over-IPv4
/// datagram whose lengths are consistent with the frame (trailing Ethernet padding is
/// allowed and ignored).
pub fn parse(frame: &[u8]) -> Option<Parsed> {
    if frame.len() < HEADER_LEN || u16::from_be_bytes([frame[12], frame[13]]) != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = &frame[ETH_LEN..];
    if ip[0] >> 4 != 4 || ip[9] != PROTO_UDP {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    if ihl < IP_LEN || total < ihl + UDP_LEN || total > ip.len() || frag & 0x3fff != 0 {
        return None;
    }
    let udp = &ip[ihl..total];
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if udp_len < UDP_LEN || udp_len > udp.len() {
        return None;
    }
    let addr = |at: usize| Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]);
    let port = |at: usize| u16::from_be_bytes([udp[at], udp[at + 1]]);
    let start = ETH_LEN + ihl + UDP_LEN;
    let mut src_mac = [0; 6];
    src_mac.copy_from_slice(&frame[6..12]);
    Some(Parsed {
        src: SocketAddrV4::new(addr(12), port(0)),
        dst: SocketAddrV4::new(addr(16), port(2)),
        src_mac,
        payload: start..start + udp_len - UDP_LEN,
    })
}

/// The UDP pseudo-header's contribution to the checksum.
fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, udp_len: u16) -> u64 {
    let mut words = [0u8; 12];
    words[0..4].copy_from_slice(&src.octets());
    words[4..8].copy_from_slice(&dst.octets());
    words[9] = PROTO_UDP;
    words[10..12].copy_from_slice(&udp_len.to_be_bytes());
    sum(&words, 0)
}

/// The Internet checksum's running sum of `bytes` (big-endian 16-bit words, an odd last
/// byte padded with zero) added to `acc`, unfolded. Sums 4 bytes at a time into 64 bits:
/// the one's complement sum is the same whatever the word size, once folded.
fn sum(bytes: &[u8], mut acc: u64) -> u64 {
    let mut chunks = bytes.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    acc + u64::from(u32::from_be_bytes(tail))
}

/// Folds a running sum to 16 bits with end-around carry.
fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn headers() -> impl Strategy<Value = Headers> {
        (
            any::<Mac>(),
            any::<Mac>(),
            any::<[u8; 4]>(),
            any::<u16>(),
            any::<[u8; 4]>(),
            any::<u16>(),
        )
            .prop_map(|(s, d, sip, sport, dip, dport)| Headers {
                src_mac: s,
                dst_mac: d,
                src: SocketAddrV4::new(sip.into(), sport),
                dst: SocketAddrV4::new(dip.into(), dport),
            })
    }

    /// The slow, obviously right Internet checksum: 16-bit words, fold as you go.
    fn reference_sum(bytes: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for pair in bytes.chunks(2) {
            acc += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    proptest! {
        /// A written frame parses back to what was written, and both checksums verify the
        /// way a receiver checks them (the sum over the covered bytes is all ones).
        #[test]
        fn write_then_parse(h in headers(), payload in proptest::collection::vec(any::<u8>(), 0..1600), id: u16) {
            let mut frame = vec![0u8; HEADER_LEN];
            frame.extend_from_slice(&payload);
            h.write(&mut frame, id);
            let p = parse(&frame).expect("parses");
            prop_assert_eq!(p.src, h.src);
            prop_assert_eq!(p.dst, h.dst);
            prop_assert_eq!(p.src_mac, h.src_mac);
            prop_assert_eq!(&frame[p.payload.clone()], &payload[..]);
            prop_assert_eq!(&frame[0..6], &h.dst_mac[..]);
            prop_assert_eq!(reference_sum(&frame[ETH_LEN..ETH_LEN + IP_LEN]), 0xffff);
            let udp = &frame[ETH_LEN + IP_LEN..];
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&h.src.ip().octets());
            pseudo.extend_from_slice(&h.dst.ip().octets());
            pseudo.extend_from_slice(&[0, PROTO_UDP]);
            pseudo.extend_from_slice(&(udp.len() as u16).to_be_bytes());
            pseudo.extend_from_slice(udp);
            if pseudo.len() % 2 == 1 { pseudo.push(0); }
            prop_assert_eq!(reference_sum(&pseudo), 0xffff);
        }

        /// Ethernet padding after the datagram is not payload.
        #[test]
        fn padding_is_ignored(h in headers(), payload in proptest::collection::vec(any::<u8>(), 0..20), pad in 1usize..40) {
            let mut frame = vec![0u8; HEADER_LEN];
            frame.extend_from_slice(&payload);
            h.write(&mut frame, 1);
            frame.extend(std::iter::repeat_n(0xaa, pad));
            prop_assert_eq!(parse(&frame).unwrap().payload.len(), payload.len());
        }

        /// Any bytes at all: no panic, and a payload range inside the frame.
        #[test]
        fn parse_never_panics(frame in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Some(p) = parse(&frame) {
                prop_assert!(p.payload.end <= frame.len());
            }
        }

        /// Truncating a valid frame anywhere inside its datagram makes it unparsable.
        #[test]
        fn truncation_is_rejected(h in headers(), payload in proptest::collection::vec(any::<u8>(), 1..100), cut in 1usize..100) {
            let mut frame = vec![0u8; HEADER_LEN];
            frame.extend_from_slice(&payload);
            h.write(&mut frame, 1);
            let cut = cut.min(frame.len());
            prop_assert!(parse(&frame[..frame.len() - cut]).is_none());
        }
    }

    #[test]
    fn non_udp_and_fragments_are_rejected() {
        let h = Headers {
            src_mac: [2; 6],
            dst_mac: [4; 6],
            src: "10.0.0.1:1".parse().unwrap(),
            dst: "10.0.0.2:2".parse().unwrap(),
        };
        let mut frame = vec![0u8; HEADER_LEN + 8];
        h.write(&mut frame, 1);
        let mut tcp = frame.clone();
        tcp[ETH_LEN + 9] = 6;
        assert!(parse(&tcp).is_none());
        let mut frag = frame.clone();
        frag[ETH_LEN + 6] = 0x20; // more fragments
        assert!(parse(&frag).is_none());
        let mut arp = frame.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert!(parse(&arp).is_none());
        assert!(parse(&frame).is_some());
    }
}
