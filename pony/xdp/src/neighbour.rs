// SPDX-License-Identifier: MIT OR Apache-2.0
//! The peers' MAC addresses, from the kernel's neighbour (ARP) table.
//!
//! AF_XDP transmits whole Ethernet frames, so the NIC needs the next hop's MAC, which only
//! the kernel knows. [`Neighbours::lookup`] answers from a bounded cache; on a miss it reads
//! `/proc/…/net/arp` (opened once, in `XdpNic::open`, so it is the table of the namespace
//! the NIC was opened in, whatever thread asks later) and, if the peer is not there, makes
//! the kernel resolve it by sending an empty datagram to the peer's discard port (9) from a
//! kernel UDP socket, at most once per [`RETRIGGER`] per peer. The caller drops the packet
//! meanwhile (the transport retransmits). Senders of received packets are learnt from the
//! frames themselves ([`Neighbours::learn`]), so a server answers without a lookup.
//!
//! Peers must be on the link (same subnet): a peer behind a router would need the route's
//! gateway, which this module does not look up.

use std::collections::HashMap;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use crate::frame::Mac;

/// Longest wait between two resolution triggers for one peer.
pub(crate) const RETRIGGER: Duration = Duration::from_millis(20);
/// Most peers remembered (resolved or pending); past it the cache starts over.
const MAX_PEERS: usize = 4096;
/// The ARP table read at most this often on misses (a read walks the whole table).
const REREAD: Duration = Duration::from_micros(500);

#[derive(Debug)]
pub(crate) struct Neighbours {
    interface: String,
    arp: File,
    trigger: UdpSocket,
    known: HashMap<Ipv4Addr, Mac>,
    /// Peers being resolved: when the last trigger went out.
    pending: HashMap<Ipv4Addr, Instant>,
    last_read: Option<Instant>,
    buf: Vec<u8>,
}

impl Neighbours {
    /// For `interface`, in the calling thread's namespace; `trigger` is a kernel UDP socket
    /// of that namespace.
    pub(crate) fn new(interface: &str, trigger: UdpSocket) -> std::io::Result<Self> {
        Ok(Self {
            interface: interface.to_owned(),
            // thread-self: the calling thread's namespace, not the process's first thread's.
            arp: File::open("/proc/thread-self/net/arp")?,
            trigger,
            known: HashMap::new(),
            pending: HashMap::new(),
            last_read: None,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    /// Remembers that `ip` sent from `mac` (a received frame's source).
    pub(crate) fn learn(&mut self, ip: Ipv4Addr, mac: Mac) {
        if self.known.get(&ip) != Some(&mac) {
            self.bound();
            self.known.insert(ip, mac);
            self.pending.remove(&ip);
        }
    }

    /// The MAC of `ip`, or `None` while it is being resolved (see the module docs).
    pub(crate) fn lookup(&mut self, ip: Ipv4Addr, now: Instant) -> Option<Mac> {
        if let Some(mac) = self.known.get(&ip) {
            return Some(*mac);
        }
        if self.last_read.is_none_or(|t| now.duration_since(t) >= REREAD) {
            self.last_read = Some(now);
            if let Some(mac) = self.read_table(ip) {
                self.learn(ip, mac);
                return Some(mac);
            }
        }
        let due = self
            .pending
            .get(&ip)
            .is_none_or(|t| now.duration_since(*t) >= RETRIGGER);
        if due {
            self.bound();
            self.pending.insert(ip, now);
            // Errors (no route, EAGAIN) leave the peer unresolved: the next miss retries.
            let _ = self.trigger.send_to(&[], SocketAddrV4::new(ip, 9));
        }
        None
    }

    fn bound(&mut self) {
        if self.known.len() + self.pending.len() >= MAX_PEERS {
            self.known.clear();
            self.pending.clear();
        }
    }

    /// Reads the ARP table for a complete entry of `ip` on our interface.
    fn read_table(&mut self, ip: Ipv4Addr) -> Option<Mac> {
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        loop {
            let n = self.arp.read_at(&mut chunk, self.buf.len() as u64).ok()?;
            if n == 0 || self.buf.len() > 1 << 20 {
                break;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        parse_arp(std::str::from_utf8(&self.buf).ok()?, ip, &self.interface)
    }
}

/// Finds `ip`'s MAC in `/proc/net/arp` text: "IP HWtype Flags HWaddress Mask Device" with
/// flag 0x2 (complete) set.
fn parse_arp(table: &str, ip: Ipv4Addr, interface: &str) -> Option<Mac> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[0].parse::<Ipv4Addr>().ok()? != ip || f[5] != interface {
            return None;
        }
        let flags = u32::from_str_radix(f[2].trim_start_matches("0x"), 16).ok()?;
        if flags & 0x2 == 0 {
            return None;
        }
        let mut mac = [0u8; 6];
        let mut parts = f[3].split(':');
        for b in &mut mac {
            *b = u8::from_str_radix(parts.next()?, 16).ok()?;
        }
        (mac != [0; 6]).then_some(mac)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "IP address       HW type     Flags       HW address            Mask     Device
10.77.0.2        0x1         0x2         0a:1b:2c:3d:4e:5f     *        xdp1a
10.77.0.3        0x1         0x0         00:00:00:00:00:00     *        xdp1a
10.77.0.4        0x1         0x2         aa:bb:cc:dd:ee:ff     *        other
";

    #[test]
    fn complete_entries_on_our_interface_only() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            parse_arp(TABLE, ip("10.77.0.2"), "xdp1a"),
            Some([0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f])
        );
        // Incomplete (resolution in progress).
        assert_eq!(parse_arp(TABLE, ip("10.77.0.3"), "xdp1a"), None);
        // Another interface's entry.
        assert_eq!(parse_arp(TABLE, ip("10.77.0.4"), "xdp1a"), None);
        assert_eq!(parse_arp(TABLE, ip("10.77.0.9"), "xdp1a"), None);
        assert_eq!(parse_arp("garbage\nmore garbage", ip("10.77.0.2"), "xdp1a"), None);
    }
}
