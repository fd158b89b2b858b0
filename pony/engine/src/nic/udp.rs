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
//! Per-datagram costs dominate a software transport on UDP (a profile of the Pony benchmark
//! put a quarter of its CPU in `sendto` and `recvfrom`), so the socket is driven through
//! `quinn-udp`, the QUIC stack's UDP layer: [`Nic::send_batch`] hands the kernel up to
//! [`UdpNic::max_batch`] equal-sized packets in one `sendmsg` with UDP segmentation offload
//! (GSO), and receiving takes several datagrams per `recvmmsg`, each possibly a GRO-coalesced
//! run of packets that `recv` then hands out one at a time. Where the kernel lacks GSO,
//! `quinn-udp` reports one segment and sends go one by one.

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::Arc;

use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};

use super::{Nic, NicError, NicStats, PeerAddr, WakeSource};

/// Datagrams taken per `recvmmsg`.
const RX_BATCH: usize = 4;
/// Room for one datagram, GRO-coalesced or not (the largest UDP payload).
const RX_BUF: usize = 64 * 1024;
/// Most bytes one GSO send may carry (the kernel's limit is the largest UDP payload).
const GSO_MAX_BYTES: usize = 65_000;

/// Received datagrams not yet handed out: `RX_BATCH` buffers, each with its metadata
/// (`len` bytes, split every `stride`), and where the next packet starts.
struct RxQueue {
    bufs: Vec<Vec<u8>>,
    meta: Vec<RecvMeta>,
    filled: usize,
    /// Datagram being handed out, and the offset of its next packet.
    at: (usize, usize),
}

impl std::fmt::Debug for RxQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RxQueue")
            .field("filled", &self.filled)
            .field("at", &self.at)
            .finish()
    }
}

/// A Pony NIC over a nonblocking UDP socket.
#[derive(Debug)]
pub struct UdpNic {
    // Arc: the engine runtime keeps a clone as the wake source and polls it for readability.
    socket: Arc<UdpSocket>,
    state: UdpSocketState,
    mtu: usize,
    rx: RxQueue,
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
        // Enables GRO and the control messages quinn-udp reads.
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        let rx = RxQueue {
            bufs: (0..RX_BATCH).map(|_| vec![0; RX_BUF]).collect(),
            meta: vec![RecvMeta::default(); RX_BATCH],
            filled: 0,
            at: (0, 0),
        };
        Ok(Self {
            socket: Arc::new(socket),
            state,
            mtu,
            rx,
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

impl UdpNic {
    /// One `sendmsg`: a single packet (`segment` = `None`) or a GSO run.
    fn transmit(&mut self, contents: &[u8], segment: Option<usize>, to: &PeerAddr) -> Result<(), NicError> {
        let PeerAddr::Udp(destination) = *to else {
            return Err(NicError::WrongPeer(*to));
        };
        let longest = segment.unwrap_or(contents.len()).min(contents.len());
        if longest > self.mtu {
            return Err(NicError::TooLarge {
                len: longest,
                mtu: self.mtu,
            });
        }
        let t = Transmit {
            destination,
            ecn: None,
            contents,
            segment_size: segment.filter(|&s| s < contents.len()),
            src_ip: None,
        };
        loop {
            match self.state.try_send(UdpSockRef::from(&*self.socket), &t) {
                Ok(()) => break,
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
        self.stats.tx_packets += contents.len().div_ceil(longest.max(1)).max(1) as u64;
        self.stats.tx_bytes += contents.len() as u64;
        Ok(())
    }

    /// The next packet of the datagrams already received, if any, handed to `deliver` in
    /// place if it is at most `max_len` bytes (longer ones are counted and skipped).
    fn next_queued<R>(&mut self, max_len: usize, deliver: impl FnOnce(&[u8], PeerAddr) -> R) -> Option<R> {
        let rx = &mut self.rx;
        while rx.at.0 < rx.filled {
            let (d, off) = rx.at;
            let meta = &rx.meta[d];
            if off >= meta.len {
                rx.at = (d + 1, 0);
                continue;
            }
            let stride = if meta.stride == 0 { meta.len } else { meta.stride };
            let end = (off + stride).min(meta.len);
            rx.at.1 = end;
            let packet = &rx.bufs[d][off..end];
            if packet.len() > max_len {
                self.stats.rx_oversize += 1;
                continue;
            }
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += packet.len() as u64;
            return Some(deliver(packet, PeerAddr::Udp(meta.addr)));
        }
        None
    }

    /// One `recvmmsg` into the queue; false when nothing was waiting.
    fn refill(&mut self) -> Result<bool, NicError> {
        loop {
            let rx = &mut self.rx;
            let mut bufs = rx.bufs.iter_mut();
            let mut slices: [IoSliceMut<'_>; RX_BATCH] =
                std::array::from_fn(|_| IoSliceMut::new(bufs.next().map_or(&mut [][..], |b| &mut b[..])));
            match self
                .state
                .recv(UdpSockRef::from(&*self.socket), &mut slices, &mut rx.meta)
            {
                Ok(n) => {
                    rx.filled = n;
                    rx.at = (0, 0);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // An ICMP error queued for an earlier send (port unreachable): a loss for the
                // transport, not a reason to stop receiving.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Nic for UdpNic {
    fn send(&mut self, packet: &[u8], to: &PeerAddr) -> Result<(), NicError> {
        self.transmit(packet, None, to)
    }

    /// One GSO `sendmsg` for the whole batch (all or nothing), when the kernel has GSO.
    fn send_batch(&mut self, batch: &[u8], segment: usize, to: &PeerAddr) -> Result<(), (usize, NicError)> {
        if self.max_batch() == 1 {
            let mut sent = 0;
            for packet in batch.chunks(segment.max(1)) {
                self.transmit(packet, None, to).map_err(|e| (sent, e))?;
                sent += packet.len();
            }
            return Ok(());
        }
        self.transmit(batch, Some(segment), to).map_err(|e| (0, e))
    }

    fn max_batch(&self) -> usize {
        self.state
            .max_gso_segments()
            .min(GSO_MAX_BYTES / self.mtu.max(1))
            .max(1)
    }

    /// Packets of a GRO-coalesced datagram are copied out one at a time (the cost of
    /// keeping `recv`'s one-packet contract; the kernel's per-datagram work is what GRO
    /// saves). [`Nic::recv_in_place`] does without that copy.
    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<(usize, PeerAddr)>, NicError> {
        let max_len = buf.len();
        loop {
            let copy = |packet: &[u8], from| {
                buf[..packet.len()].copy_from_slice(packet);
                (packet.len(), from)
            };
            if let Some(p) = self.next_queued(max_len, copy) {
                return Ok(Some(p));
            }
            if !self.refill()? {
                return Ok(None);
            }
        }
    }

    /// Each packet straight from its (GRO) receive buffer.
    fn recv_in_place(
        &mut self,
        max: usize,
        deliver: &mut dyn FnMut(&[u8], PeerAddr),
    ) -> Result<usize, NicError> {
        let mut n = 0;
        while n < max {
            if self.next_queued(self.mtu, &mut *deliver).is_some() {
                n += 1;
                continue;
            }
            if !self.refill()? {
                break;
            }
        }
        Ok(n)
    }

    fn wake_source(&self) -> Option<WakeSource> {
        Some(WakeSource::Readable(self.socket.clone()))
    }

    /// The socket: datagrams queued in it stay queued for the new host.
    fn dup_for_handover(&self) -> Option<std::io::Result<Vec<std::os::fd::OwnedFd>>> {
        use std::os::fd::AsFd;
        Some(self.socket.as_fd().try_clone_to_owned().map(|fd| vec![fd]))
    }

    fn can_hand_over(&self) -> bool {
        true
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

    #[test]
    fn nic_udp_batches_leave_in_one_send_and_arrive_as_packets() {
        let mut a = UdpNic::bind("127.0.0.1:0").unwrap().with_mtu(UdpNic::JUMBO_MTU);
        let mut b = UdpNic::bind("127.0.0.1:0").unwrap().with_mtu(UdpNic::JUMBO_MTU);
        assert!(a.max_batch() > 1, "this kernel has UDP GSO (Linux >= 4.18)");
        let to_b = PeerAddr::Udp(b.local_addr().unwrap());
        // Six packets: five of 1000 bytes, a last one of 300, each filled with its index.
        let mut batch = Vec::new();
        for i in 0..6u8 {
            batch.extend(std::iter::repeat_n(i, if i < 5 { 1000 } else { 300 }));
        }
        a.send_batch(&batch, 1000, &to_b).unwrap();
        assert_eq!(a.stats().tx_packets, 6);
        let mut buf = [0u8; UdpNic::JUMBO_MTU];
        let mut got = Vec::new();
        while got.len() < 6 {
            match b.recv(&mut buf).unwrap() {
                Some((n, _)) => got.push(buf[..n].to_vec()),
                None => wait_readable(&b),
            }
        }
        for (i, p) in got.iter().enumerate() {
            let len = if i < 5 { 1000 } else { 300 };
            assert_eq!(p, &vec![i as u8; len], "packet {i}");
        }
        let over = UdpNic::JUMBO_MTU + 1;
        assert!(matches!(
            a.send_batch(&vec![0; 2 * over], over, &to_b),
            Err((0, NicError::TooLarge { .. }))
        ));
    }

    /// In-place delivery hands out a GSO batch's packets one by one (from the GRO buffer),
    /// at most `max` per call, and drops a datagram longer than the MTU with a count.
    #[test]
    fn nic_udp_delivers_in_place_bounded_and_drops_oversize() {
        let mut a = UdpNic::bind("127.0.0.1:0").unwrap().with_mtu(UdpNic::JUMBO_MTU);
        let mut b = UdpNic::bind("127.0.0.1:0").unwrap().with_mtu(1000);
        let to_b = PeerAddr::Udp(b.local_addr().unwrap());
        a.send(&[9; 1001], &to_b).unwrap();
        let mut batch = Vec::new();
        for i in 0..6u8 {
            batch.extend(std::iter::repeat_n(i, if i < 5 { 1000 } else { 300 }));
        }
        a.send_batch(&batch, 1000, &to_b).unwrap();
        let mut got: Vec<Vec<u8>> = Vec::new();
        while got.len() < 6 {
            let before = got.len();
            let n = b
                .recv_in_place(4, &mut |p, from| {
                    assert_eq!(from, PeerAddr::Udp(a.local_addr().unwrap()));
                    got.push(p.to_vec());
                })
                .unwrap();
            assert!(n <= 4, "at most max per call");
            assert_eq!(n, got.len() - before);
            if n == 0 {
                wait_readable(&b);
            }
        }
        for (i, p) in got.iter().enumerate() {
            let len = if i < 5 { 1000 } else { 300 };
            assert_eq!(p, &vec![i as u8; len], "packet {i}");
        }
        assert_eq!(b.stats().rx_oversize, 1, "the 1001-byte datagram");
        assert_eq!(b.stats().rx_packets, 6);
    }
}
