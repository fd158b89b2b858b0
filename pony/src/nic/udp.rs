//! [`UdpNic`]: Pony packets as UDP datagrams on a nonblocking socket.
//!
//! One datagram is one Pony packet, so the MTU here is the largest UDP payload that crosses
//! the path without IP fragmentation: the link MTU less 28 bytes of IPv4 + UDP header
//! (48 for IPv6). Defaults: 1472 for IPv4 and 1452 for IPv6 (a 1500-byte Ethernet or veth
//! link); [`UdpNic::JUMBO_MTU`] (8972) for links set to `mtu 9000`, e.g. a veth pair between
//! two Snap hosts on one machine, where larger packets mean fewer per-packet costs.
//! Nothing checks that the path really carries the configured MTU: a too-large setting shows
//! up as loss (fragments dropped) or as `EMSGSIZE` from the kernel.
//!
//! Batching with `sendmmsg`/`recvmmsg` is not done: rustix does not wrap them, and a
//! datagram per call is enough for the tests and veth runs this backend is for.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::fd::AsFd;
use std::sync::Arc;

use rustix::net::RecvFlags;

use super::{Nic, NicError, NicStats, PeerAddr, WakeSource};

/// A Pony NIC over a nonblocking UDP socket.
#[derive(Debug)]
pub struct UdpNic {
    // Arc: the engine runtime keeps a clone as the wake source and polls it for readability.
    socket: Arc<UdpSocket>,
    mtu: usize,
    stats: NicStats,
}

impl UdpNic {
    /// Largest UDP payload in one unfragmented IPv4 packet on a 1500-byte link.
    pub const IPV4_MTU: usize = 1500 - 20 - 8;
    /// Largest UDP payload in one unfragmented IPv6 packet on a 1500-byte link.
    pub const IPV6_MTU: usize = 1500 - 40 - 8;
    /// Largest UDP payload on a 9000-byte (jumbo) IPv4 link, e.g. a veth pair after
    /// `ip link set DEV mtu 9000`.
    pub const JUMBO_MTU: usize = 9000 - 20 - 8;

    /// Binds a nonblocking socket to `addr` (port 0 picks one) with the default MTU for its
    /// address family.
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        Self::from_socket(UdpSocket::bind(addr)?)
    }

    /// Wraps an existing socket (made nonblocking here), e.g. one bound in another network
    /// namespace or with options set by the caller.
    pub fn from_socket(socket: UdpSocket) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        let mtu = match socket.local_addr()? {
            SocketAddr::V4(_) => Self::IPV4_MTU,
            SocketAddr::V6(_) => Self::IPV6_MTU,
        };
        Ok(Self {
            socket: Arc::new(socket),
            mtu,
            stats: NicStats::default(),
        })
    }

    /// Sets the MTU (largest datagram payload sent). See the module documentation.
    pub fn with_mtu(mut self, mtu: usize) -> Self {
        self.mtu = mtu;
        self
    }

    /// The bound address (with the port the kernel picked).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The socket.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }
}

impl Nic for UdpNic {
    fn send(&mut self, packet: &[u8], to: &PeerAddr) -> Result<(), NicError> {
        let PeerAddr::Udp(addr) = to else {
            return Err(NicError::WrongPeer(*to));
        };
        if packet.len() > self.mtu {
            return Err(NicError::TooLarge {
                len: packet.len(),
                mtu: self.mtu,
            });
        }
        loop {
            match self.socket.send_to(packet, addr) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The socket buffer is full (or ENOBUFS from the qdisc): the queue is full.
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.raw_os_error() == Some(rustix::io::Errno::NOBUFS.raw_os_error()) =>
                {
                    self.stats.tx_full += 1;
                    return Err(NicError::WouldBlock);
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.stats.tx_packets += 1;
        self.stats.tx_bytes += packet.len() as u64;
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<(usize, PeerAddr)>, NicError> {
        loop {
            // MSG_TRUNC makes the kernel report the datagram's real length, so an oversized
            // one is noticed (and dropped) instead of being handed on silently cut short.
            match rustix::net::recvfrom(self.socket.as_fd(), &mut *buf, RecvFlags::TRUNC) {
                Ok((_, len, from)) => {
                    if len > buf.len() {
                        self.stats.rx_oversize += 1;
                        continue;
                    }
                    let Some(from) = from.and_then(|a| SocketAddr::try_from(a).ok()) else {
                        // Not an IP sender: impossible on a UDP socket; skip rather than trust.
                        continue;
                    };
                    self.stats.rx_packets += 1;
                    self.stats.rx_bytes += len as u64;
                    return Ok(Some((len, PeerAddr::Udp(from))));
                }
                Err(rustix::io::Errno::AGAIN) => return Ok(None),
                Err(rustix::io::Errno::INTR) => continue,
                // An ICMP error queued for an earlier send (port unreachable): a loss for the
                // transport, not a reason to stop receiving.
                Err(rustix::io::Errno::CONNREFUSED) => continue,
                Err(e) => return Err(io::Error::from(e).into()),
            }
        }
    }

    fn wake_source(&self) -> Option<WakeSource> {
        Some(WakeSource::Readable(self.socket.clone()))
    }

    fn mtu(&self) -> usize {
        self.mtu
    }

    fn stats(&self) -> NicStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::event::{poll, PollFd, PollFlags, Timespec};

    fn wait_readable(nic: &UdpNic) {
        let Some(WakeSource::Readable(fd)) = nic.wake_source() else {
            panic!("a UDP NIC is woken by its socket");
        };
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        let timeout = Timespec {
            tv_sec: 5,
            tv_nsec: 0,
        };
        assert_eq!(poll(&mut fds, Some(&timeout)).unwrap(), 1, "timed out");
    }

    #[test]
    fn nic_udp_loopback_send_recv() {
        let mut a = UdpNic::bind("127.0.0.1:0").unwrap();
        let mut b = UdpNic::bind("127.0.0.1:0").unwrap();
        assert_eq!(a.mtu(), UdpNic::IPV4_MTU);
        let to_b = PeerAddr::Udp(b.local_addr().unwrap());
        let mut buf = [0u8; 2048];
        assert!(b.recv(&mut buf).unwrap().is_none(), "nonblocking when empty");
        for i in 0..100u32 {
            a.send(&i.to_le_bytes(), &to_b).unwrap();
        }
        let mut got = Vec::new();
        while got.len() < 100 {
            match b.recv(&mut buf).unwrap() {
                Some((n, from)) => {
                    assert_eq!(n, 4);
                    assert_eq!(from, PeerAddr::Udp(a.local_addr().unwrap()));
                    got.push(u32::from_le_bytes(buf[..4].try_into().unwrap()));
                }
                None => wait_readable(&b),
            }
        }
        // Loopback does not reorder or lose 100 small datagrams.
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        let (sa, sb) = (a.stats(), b.stats());
        assert_eq!((sa.tx_packets, sa.tx_bytes), (100, 400));
        assert_eq!((sb.rx_packets, sb.rx_bytes), (100, 400));
    }

    #[test]
    fn nic_udp_refuses_oversize_and_wrong_peer_and_drops_oversize_input() {
        let mut a = UdpNic::bind("127.0.0.1:0").unwrap().with_mtu(100);
        let mut b = UdpNic::bind("127.0.0.1:0").unwrap();
        let to_b = PeerAddr::Udp(b.local_addr().unwrap());
        assert!(matches!(
            a.send(&[0; 101], &to_b),
            Err(NicError::TooLarge { len: 101, mtu: 100 })
        ));
        assert!(matches!(
            a.send(&[0; 10], &PeerAddr::Shm),
            Err(NicError::WrongPeer(_))
        ));
        a.send(&[7; 100], &to_b).unwrap();
        a.send(&[8; 10], &to_b).unwrap();
        let mut small = [0u8; 50];
        let mut got = None;
        for _ in 0..100 {
            wait_readable(&b);
            if let Some(r) = b.recv(&mut small).unwrap() {
                got = Some(r);
                break;
            }
        }
        let (n, _) = got.expect("the small datagram arrives");
        assert_eq!(&small[..n], &[8; 10]);
        assert_eq!(b.stats().rx_oversize, 1);
    }
}
