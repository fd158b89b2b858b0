//! NIC backends: how a Pony engine puts packets on a wire and takes them off.
//!
//! ```text
//!   pony engine ── Nic ──┬── UdpNic      a nonblocking UDP socket (loopback, veth, real NICs)
//!                        ├── ShmWire     two shared-memory rings between two Snap hosts on
//!                        │               one machine, one per direction, with doorbells
//!                        ├── PipeNic     the first queue of a pipeline of stage engines
//!                        │               (snap-pipeline); its last stage owns a NicWire<any Nic>
//!                        └── FaultyNic<N> wraps any of them: loss, reordering, duplication,
//!                                        corruption and delay from a seeded RNG (tests)
//! ```
//!
//! The [`Nic`] trait is the one in docs/PONY.md, refined where the engine runtime needed
//! more than a descriptor:
//!
//! - `wake_source` returns an engines [`WakeSource`] rather than a raw fd, because the shared
//!   memory wire wakes through a [`Doorbell`](snap_engines::Doorbell), which the runtime must
//!   *arm* before it blocks (a producer only rings an armed doorbell), not just poll.
//! - `work_probe` exists for the same reason: after arming, the runtime asks "is input already
//!   waiting?" to close the race with a sender that pushed just before the arm. A UDP socket
//!   needs no probe (the runtime polls its readiness itself).
//! - `poll_at` lets a NIC that holds packets back in time ([`FaultyNic`]'s delay and reorder)
//!   tell the engine when to call it again even if nothing else happens.
//! - `stats` counts packets, bytes and drops so that tests and status can see the wire.
//! - `recv_in_place` hands received packets to the engine as slices of the NIC's own
//!   buffer (smoltcp's `RxToken` idea), so the engine parses and copies a payload straight
//!   from where the NIC received it: from a GRO segment of [`UdpNic`], a UMEM frame of
//!   pony-xdp's `XdpNic`. [`ShmWire`] still copies each packet once out of the wire ring
//!   first (the peer host can write that memory, so it is read by copy only).
//! - `emit_in_place` is the transmit side of the same idea (smoltcp's `TxToken`): a NIC
//!   whose transmit buffers are its own frames (`XdpNic`'s UMEM) lets the engine emit each
//!   packet straight into one. `UdpNic` and `ShmWire` keep `send_batch`: for them the
//!   engine's transmit buffer already is the buffer the system call or the ring push
//!   copies from.
//!
//! Contracts shared by every backend: `send` and `recv` never block; a full TX queue is
//! [`NicError::WouldBlock`] (the caller retries later, or treats it as loss: the transport
//! recovers either way); an incoming packet that does not fit the caller's buffer is
//! dropped and counted in [`NicStats::rx_oversize`] rather than wedging the queue, so `recv`
//! fails only when the backend itself is broken (`recv_in_place` drops packets longer than
//! the MTU the same way).

mod faulty;
mod pipe;
mod shm;
mod udp;

use std::net::SocketAddr;
use std::time::Instant;

pub use faulty::{FaultConfig, FaultStats, FaultyNic};
pub use pipe::{NicWire, PipeNic};
pub use shm::{ShmListener, ShmSetupError, ShmWire, ShmWireConfig};
pub use snap_runtime::{WakeSource, WorkProbe};
pub use udp::UdpNic;

/// Where a packet goes to or came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerAddr {
    /// A UDP peer.
    Udp(SocketAddr),
    /// The one peer at the other end of a point-to-point wire ([`ShmWire`]).
    Shm,
}

/// Why a NIC operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NicError {
    /// The transmit queue is full; nothing was sent. Retry later (or count it as loss).
    #[error("transmit queue full")]
    WouldBlock,
    /// The packet is longer than the NIC's MTU; it will never be sent.
    #[error("packet of {len} bytes exceeds the MTU of {mtu} bytes")]
    TooLarge {
        /// Length of the packet.
        len: usize,
        /// The NIC's MTU.
        mtu: usize,
    },
    /// The address is not of this NIC's kind (a UDP address on the shared-memory wire, or
    /// the reverse).
    #[error("peer address {0:?} is not reachable through this NIC")]
    WrongPeer(PeerAddr),
    /// The socket failed.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The peer broke the shared-memory ring protocol; the wire is unusable.
    #[error("shared-memory wire: {0}")]
    Ring(#[from] snap_ipc::PopError),
}

/// Counters of one NIC. Cumulative since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NicStats {
    /// Packets handed to the wire.
    pub tx_packets: u64,
    /// Bytes handed to the wire.
    pub tx_bytes: u64,
    /// Sends refused with [`NicError::WouldBlock`] (queue full).
    pub tx_full: u64,
    /// Packets taken off the wire and returned by `recv`.
    pub rx_packets: u64,
    /// Bytes returned by `recv`.
    pub rx_bytes: u64,
    /// Incoming packets dropped because they were longer than the caller's buffer.
    pub rx_oversize: u64,
}

/// A network interface as the Pony engine sees it. See the module documentation for the
/// contracts.
pub trait Nic: Send {
    /// Sends one packet. Never blocks: a full queue is [`NicError::WouldBlock`].
    fn send(&mut self, packet: &[u8], to: &PeerAddr) -> Result<(), NicError>;

    /// Takes one packet into `buf`, returning its length and sender, or `Ok(None)` when
    /// nothing is waiting. Never blocks.
    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<(usize, PeerAddr)>, NicError>;

    /// Hands up to `max` waiting packets to `deliver`, each as a slice of the NIC's own
    /// receive buffer (a UMEM frame, a GRO segment) rather than a copy in a caller's
    /// buffer, and returns how many it delivered. Never blocks. A packet longer than
    /// [`Nic::mtu`] is dropped and counted in [`NicStats::rx_oversize`], as `recv` does with
    /// one longer than its buffer. On an error, packets delivered before it stay delivered.
    ///
    /// The default goes through [`Nic::recv`] and a buffer of the MTU it allocates per
    /// call, one copy more: the backends override it.
    fn recv_in_place(
        &mut self,
        max: usize,
        deliver: &mut dyn FnMut(&[u8], PeerAddr),
    ) -> Result<usize, NicError> {
        let mut buf = vec![0; self.mtu()];
        let mut n = 0;
        while n < max {
            let Some((len, from)) = self.recv(&mut buf)? else {
                break;
            };
            deliver(&buf[..len], from);
            n += 1;
        }
        Ok(n)
    }

    /// Whether [`Nic::emit_in_place`] writes packets straight into the NIC's own transmit
    /// frames, so the engine should use it instead of [`Nic::send_batch`] (false for the
    /// default implementation).
    fn emits_in_place(&self) -> bool {
        false
    }

    /// Sends up to `max` packets to `to`, each written by `emit` straight into a transmit
    /// frame of the NIC (smoltcp's `TxToken` idea): `emit` gets room for one packet of up to
    /// [`Nic::mtu`] bytes and returns the packet's length, or `None` when it has no more.
    /// Returns how many were sent. Never blocks: `emit` is called only while the NIC has a
    /// free frame, so a packet is never emitted and then refused (nothing to stash).
    ///
    /// The default emits into a buffer it allocates and sends each with [`Nic::send`] (a
    /// refused packet is then lost, for the transport to retransmit); backends that return
    /// true from [`Nic::emits_in_place`] override it.
    fn emit_in_place(
        &mut self,
        to: &PeerAddr,
        max: usize,
        emit: &mut dyn FnMut(&mut [u8]) -> Option<usize>,
    ) -> Result<usize, NicError> {
        let mut buf = vec![0; self.mtu()];
        let mut n = 0;
        while n < max {
            let Some(len) = emit(&mut buf) else { break };
            self.send(&buf[..len.min(buf.len())], to)?;
            n += 1;
        }
        Ok(n)
    }

    /// What wakes a blocked engine when packets arrive.
    fn wake_source(&self) -> Option<WakeSource>;

    /// Whether [`Nic::dup_for_handover`] gives this NIC's descriptors (cheap: asked before
    /// every step of an upgrade). False: this NIC cannot move between processes, and an
    /// upgrade refuses its engine before anything moves.
    fn can_hand_over(&self) -> bool {
        false
    }

    /// Duplicates of the descriptors this NIC is made of (one group, in the NIC's own
    /// order, its state written into a descriptor too if it has any), for a new host
    /// process that takes the engine over (an upgrade) and rebuilds the NIC from them.
    /// Called once the engine is frozen (no more `send`/`recv`). `None` when
    /// [`Nic::can_hand_over`] is false.
    fn dup_for_handover(&self) -> Option<std::io::Result<Vec<std::os::fd::OwnedFd>>> {
        None
    }

    /// Whether packets are already waiting, callable from the runtime's thread (see the
    /// module documentation). The default never sees work: right for descriptor-woken NICs.
    fn work_probe(&self) -> WorkProbe {
        WorkProbe::never()
    }

    /// When this NIC next needs a call (`send`/`recv`) even if no packet arrives: the
    /// release time of a packet it holds back. `None` for NICs that never hold packets.
    fn poll_at(&self) -> Option<Instant> {
        None
    }

    /// Sends the packets laid end to end in `batch`, each `segment` bytes long except the
    /// last, which may be shorter, all to `to`: one system call for all of them where the
    /// backend can (UDP segmentation offload). On an error, the first element is how many
    /// bytes (whole packets) went out before it. The default sends them one by one.
    fn send_batch(&mut self, batch: &[u8], segment: usize, to: &PeerAddr) -> Result<(), (usize, NicError)> {
        let mut sent = 0;
        for packet in batch.chunks(segment.max(1)) {
            self.send(packet, to).map_err(|e| (sent, e))?;
            sent += packet.len();
        }
        Ok(())
    }

    /// Most packets worth gathering into one [`Nic::send_batch`]: 1 for backends that
    /// gain nothing from it (the default).
    fn max_batch(&self) -> usize {
        1
    }

    /// Largest packet `send` accepts (and the buffer `recv` needs).
    fn mtu(&self) -> usize;

    /// Counters.
    fn stats(&self) -> NicStats;

    /// What a fault injector did to packets sent and received (`[send, recv]`): `None`
    /// for every NIC but [`FaultyNic`], so status can show that faults were injected.
    fn fault_stats(&self) -> Option<[FaultStats; 2]> {
        None
    }

    /// The backend's own counters by name, beyond [`NicStats`] (AF_XDP: what its XDP
    /// program redirected, what the kernel dropped), shown in status under the engine's
    /// `nic` key. `None` (the default) for backends that have none.
    fn backend_counters(&self) -> Option<Vec<(&'static str, u64)>> {
        None
    }
}

impl<N: Nic + ?Sized> Nic for Box<N> {
    fn send(&mut self, packet: &[u8], to: &PeerAddr) -> Result<(), NicError> {
        (**self).send(packet, to)
    }
    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<(usize, PeerAddr)>, NicError> {
        (**self).recv(buf)
    }
    fn recv_in_place(
        &mut self,
        max: usize,
        deliver: &mut dyn FnMut(&[u8], PeerAddr),
    ) -> Result<usize, NicError> {
        (**self).recv_in_place(max, deliver)
    }
    fn emits_in_place(&self) -> bool {
        (**self).emits_in_place()
    }
    fn emit_in_place(
        &mut self,
        to: &PeerAddr,
        max: usize,
        emit: &mut dyn FnMut(&mut [u8]) -> Option<usize>,
    ) -> Result<usize, NicError> {
        (**self).emit_in_place(to, max, emit)
    }
    fn wake_source(&self) -> Option<WakeSource> {
        (**self).wake_source()
    }
    fn can_hand_over(&self) -> bool {
        (**self).can_hand_over()
    }
    fn dup_for_handover(&self) -> Option<std::io::Result<Vec<std::os::fd::OwnedFd>>> {
        (**self).dup_for_handover()
    }
    fn work_probe(&self) -> WorkProbe {
        (**self).work_probe()
    }
    fn poll_at(&self) -> Option<Instant> {
        (**self).poll_at()
    }
    fn send_batch(&mut self, batch: &[u8], segment: usize, to: &PeerAddr) -> Result<(), (usize, NicError)> {
        (**self).send_batch(batch, segment, to)
    }
    fn max_batch(&self) -> usize {
        (**self).max_batch()
    }
    fn mtu(&self) -> usize {
        (**self).mtu()
    }
    fn stats(&self) -> NicStats {
        (**self).stats()
    }
    fn backend_counters(&self) -> Option<Vec<(&'static str, u64)>> {
        (**self).backend_counters()
    }
    fn fault_stats(&self) -> Option<[FaultStats; 2]> {
        (**self).fault_stats()
    }
}
