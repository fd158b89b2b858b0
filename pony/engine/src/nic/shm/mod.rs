//! [`ShmWire`]: a point-to-point "wire" between two Snap hosts on one machine, made of
//! shared-memory rings, for tests and benchmarks that want two real Pony engines without a
//! network.
//!
//! ```text
//!        host L (listen)                                         host C (connect)
//!   tx Producer ──▶ ring L→C (memfd, made by L) ──────────────▶ rx Consumer
//!   rx Consumer ◀── ring C→L (memfd, made by L) ◀────────────── tx Producer
//!   Doorbell L  ◀── rung by C after a push, only while L is armed (blocked)
//!   Ringer C    ──▶ Doorbell C, made by C, armed by C's engine when it blocks
//! ```
//!
//! Setup runs once over a `SOCK_SEQPACKET` Unix socket, with the engines control
//! protocol's framing ([`snap_ipc::control::protocol`]: one JSON message per packet,
//! descriptors in `SCM_RIGHTS`):
//!
//! 1. L → C: `Hello {version, mtu}` + \[ring L→C, ring C→L, L's doorbell page, L's eventfd\]
//! 2. C → L: `Ready {version}` + \[C's doorbell page, C's eventfd\]
//!
//! Each side makes the doorbell it waits on and hands the peer only a [`Ringer`]: the
//! engines crate can rebuild a producer's `Ringer` from descriptors but not the waiting
//! `Doorbell`, and this keeps each host the owner of its own wake-up. Every descriptor
//! received is validated before use: rings through [`Ring::attach`] (size-sealed memfd,
//! header, indices), doorbells through [`Ringer::from_fds`] (page magic) plus a check that
//! the eventfd really is one. After setup the socket is closed: the data path is shared
//! memory only, and a ring push plus (rarely) an eventfd write is all a packet costs.
//!
//! The wire is lossless and in order; a full ring is [`NicError::WouldBlock`]. It does not
//! notice that the peer went away (there is no one to tell it); the transport's timeouts
//! do.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use serde::{Deserialize, Serialize};
use snap_ipc::control::protocol::{self, ProtocolError};
use snap_ipc::{
    Consumer, Doorbell, DoorbellError, Producer, PushError, Ring, RingError, RingProbe, Ringer, SharedMem,
    ShmError,
};

use super::{Nic, NicError, NicStats, PeerAddr, WakeSource, WorkProbe};

/// Version of the setup handshake; both sides must agree.
const VERSION: u32 = 1;
/// How long either side waits for the other's handshake message.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Ring length prefix (see `snap_ipc::ring`).
const LEN_PREFIX: usize = 4;

/// Shape of a wire, chosen by the listening side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShmWireConfig {
    /// Largest packet. The default, 8972, matches [`super::UdpNic::JUMBO_MTU`] so a
    /// transport sees the same MTU on both backends.
    pub mtu: usize,
    /// Packets in flight per direction (a power of two).
    pub capacity: u64,
}

impl Default for ShmWireConfig {
    /// 512 packets of up to 8972 bytes each way: about 4.6 MB per direction.
    fn default() -> Self {
        Self {
            mtu: 8972,
            capacity: 512,
        }
    }
}

impl ShmWireConfig {
    fn slot_size(&self) -> Result<u32, ShmSetupError> {
        let slot = (self.mtu + LEN_PREFIX).next_multiple_of(8);
        u32::try_from(slot).map_err(|_| ShmSetupError::Config(format!("mtu {} is too large", self.mtu)))
    }
}

/// Why a wire could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ShmSetupError {
    /// The configuration cannot be built.
    #[error("shm wire config: {0}")]
    Config(String),
    /// A ring region could not be made or mapped (including: the descriptor is not a
    /// size-sealed memfd).
    #[error("{which} ring memory: {source}")]
    Shm {
        /// Which ring.
        which: &'static str,
        /// Cause.
        source: ShmError,
    },
    /// A ring could not be made, or what was received is not a valid ring.
    #[error("{which} ring: {source}")]
    Ring {
        /// Which ring.
        which: &'static str,
        /// Cause.
        source: RingError,
    },
    /// A doorbell could not be made, or what was received is not a doorbell page.
    #[error("{which} doorbell: {source}")]
    Doorbell {
        /// Whose doorbell.
        which: &'static str,
        /// Cause.
        source: DoorbellError,
    },
    /// The doorbell's second descriptor is not an eventfd (a pipe would "work" and never
    /// wake anyone).
    #[error("{which} doorbell: descriptor is not an eventfd ({found})")]
    NotAnEventfd {
        /// Whose doorbell.
        which: &'static str,
        /// What `/proc/self/fd` says it is.
        found: String,
    },
    /// The handshake message came with the wrong number of descriptors.
    #[error("handshake carried {got} descriptors, expected {expected}")]
    FdCount {
        /// Expected count.
        expected: usize,
        /// Received count.
        got: usize,
    },
    /// The peer speaks something else, or its rings do not fit the announced MTU.
    #[error("handshake: {0}")]
    Handshake(String),
    /// The peer did not answer within the handshake timeout.
    #[error("handshake timed out")]
    Timeout,
    /// The peer closed the socket mid-handshake.
    #[error("peer closed the socket during the handshake")]
    Closed,
    /// A socket call failed.
    #[error("unix socket {0}: {1}")]
    Socket(&'static str, #[source] rustix::io::Errno),
    /// A file-system operation on the socket path failed, or it is in use.
    #[error("socket path {0}: {1}")]
    Path(PathBuf, #[source] std::io::Error),
    /// Framing or JSON error from the control protocol.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

/// The handshake messages (see the module documentation).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case", deny_unknown_fields)]
enum Handshake {
    /// From the listener, with four descriptors.
    Hello { version: u32, mtu: usize },
    /// From the connector, with two.
    Ready { version: u32 },
}

/// One end of a shared-memory wire. See the module documentation.
#[derive(Debug)]
pub struct ShmWire {
    tx: Producer,
    peer_bell: Ringer,
    rx: Consumer,
    rx_probe: RingProbe,
    bell: Doorbell,
    mtu: usize,
    stats: NicStats,
    /// Where `recv_in_place` copies a packet in from the wire ring (empty until used).
    scratch: Vec<u8>,
}

impl ShmWire {
    /// Both ends of a wire in this process (tests). They go through the same descriptor
    /// export, handshake and validation as two processes do.
    pub fn pair(cfg: ShmWireConfig) -> Result<(Self, Self), ShmSetupError> {
        let (l, c) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| ShmSetupError::Socket("socketpair", e))?;
        // Sequential, no threads: each message fits in the socket buffer.
        let offer = Offer::send(l.as_fd(), cfg)?;
        let connector = connect_on(c.as_fd())?;
        let listener = offer.finish(l.as_fd())?;
        Ok((listener, connector))
    }

    /// Binds `path`, waits for one peer (no timeout) and serves it the wire. For a bounded
    /// wait, or to learn the path is bound before the peer starts, use [`ShmListener`].
    pub fn listen(path: impl AsRef<Path>, cfg: ShmWireConfig) -> Result<Self, ShmSetupError> {
        ShmListener::bind(path, cfg)?.accept(None)
    }

    /// Connects to a [`ShmListener`] at `path` and attaches to the wire it serves.
    pub fn connect(path: impl AsRef<Path>) -> Result<Self, ShmSetupError> {
        let path = path.as_ref();
        let sock = unix_socket()?;
        let addr = SocketAddrUnix::new(path).map_err(|e| ShmSetupError::Socket("socket path", e))?;
        rustix::net::connect(&sock, &addr).map_err(|e| ShmSetupError::Socket("connect", e))?;
        connect_on(sock.as_fd())
    }

    /// This end's doorbell: the engine arms it before blocking (the peer then rings it
    /// after its next push). Also in [`Nic::wake_source`].
    pub fn doorbell(&self) -> &Doorbell {
        &self.bell
    }

    fn new(tx: Ring, rx: Ring, bell: Doorbell, peer_bell: Ringer, mtu: usize) -> Self {
        let rx = rx.into_consumer();
        Self {
            tx: tx.into_producer(),
            peer_bell,
            rx_probe: rx.probe(),
            rx,
            bell,
            mtu,
            stats: NicStats::default(),
            scratch: Vec::new(),
        }
    }
}

impl Nic for ShmWire {
    fn send(&mut self, packet: &[u8], to: &PeerAddr) -> Result<(), NicError> {
        if *to != PeerAddr::Shm {
            return Err(NicError::WrongPeer(*to));
        }
        if packet.len() > self.mtu {
            return Err(NicError::TooLarge {
                len: packet.len(),
                mtu: self.mtu,
            });
        }
        match self.tx.push(packet) {
            Ok(()) => {}
            Err(PushError::Full) => {
                self.stats.tx_full += 1;
                return Err(NicError::WouldBlock);
            }
            // Cannot happen: the handshake checked that slots hold `mtu` bytes.
            Err(PushError::TooLarge { len, max }) => return Err(NicError::TooLarge { len, mtu: max }),
        }
        // A load while the peer polls; an eventfd write only if it is blocked.
        self.peer_bell.ring();
        self.stats.tx_packets += 1;
        self.stats.tx_bytes += packet.len() as u64;
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<(usize, PeerAddr)>, NicError> {
        loop {
            let Some(msg) = self.rx.peek()? else {
                return Ok(None);
            };
            let n = msg.len();
            // Copied in: the peer host writes the wire ring (snap_ipc::peer).
            if msg.copy_into(buf).is_err() {
                // Dropped rather than left at the head, where it would wedge the wire.
                msg.release();
                self.stats.rx_oversize += 1;
                continue;
            }
            msg.release();
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += n as u64;
            return Ok(Some((n, PeerAddr::Shm)));
        }
    }

    /// Still one copy per packet, into a scratch buffer: the peer host can write the wire
    /// ring, so its slots are read by copy only, never through a reference.
    fn recv_in_place(
        &mut self,
        max: usize,
        deliver: &mut dyn FnMut(&[u8], PeerAddr),
    ) -> Result<usize, NicError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.resize(self.mtu, 0);
        let mut n = 0;
        let result = loop {
            if n == max {
                break Ok(n);
            }
            match self.recv(&mut scratch) {
                Ok(Some((len, from))) => {
                    deliver(&scratch[..len], from);
                    n += 1;
                }
                Ok(None) => break Ok(n),
                Err(e) => break Err(e),
            }
        };
        self.scratch = scratch;
        result
    }

    fn wake_source(&self) -> Option<WakeSource> {
        Some(WakeSource::Doorbell(self.bell.clone()))
    }

    fn work_probe(&self) -> WorkProbe {
        let probe = self.rx_probe.clone();
        WorkProbe::new(move || !probe.is_empty())
    }

    fn mtu(&self) -> usize {
        self.mtu
    }

    fn stats(&self) -> NicStats {
        self.stats
    }
}

/// The listening side: a bound Unix socket that serves one wire. The socket file is
/// removed when the wire is served or the listener dropped.
#[derive(Debug)]
pub struct ShmListener {
    path: PathBuf,
    socket: OwnedFd,
    cfg: ShmWireConfig,
}

impl ShmListener {
    /// Binds `path`. A stale socket file (nobody listening) is replaced; a live one, or a
    /// file that is not a socket, is an error.
    pub fn bind(path: impl AsRef<Path>, cfg: ShmWireConfig) -> Result<Self, ShmSetupError> {
        let path = path.as_ref().to_owned();
        cfg.slot_size()?;
        let addr = SocketAddrUnix::new(&path).map_err(|e| ShmSetupError::Socket("socket path", e))?;
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            let in_use = |what| ShmSetupError::Path(path.clone(), std::io::Error::other(what));
            if !meta.file_type().is_socket() {
                return Err(in_use("exists and is not a socket"));
            }
            if rustix::net::connect(unix_socket()?, &addr).is_ok() {
                return Err(in_use("another listener is serving it"));
            }
            std::fs::remove_file(&path).map_err(|e| ShmSetupError::Path(path.clone(), e))?;
        }
        let socket = unix_socket()?;
        rustix::net::bind(&socket, &addr).map_err(|e| ShmSetupError::Socket("bind", e))?;
        rustix::net::listen(&socket, 1).map_err(|e| ShmSetupError::Socket("listen", e))?;
        Ok(Self { path, socket, cfg })
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits (up to `timeout`, or forever) for one peer, serves it the wire and returns
    /// this end.
    pub fn accept(self, timeout: Option<Duration>) -> Result<ShmWire, ShmSetupError> {
        wait_readable(self.socket.as_fd(), timeout)?;
        let conn = rustix::net::accept_with(&self.socket, SocketFlags::CLOEXEC)
            .map_err(|e| ShmSetupError::Socket("accept", e))?;
        // Served once: nobody else may connect from here on.
        let cfg = self.cfg;
        drop(self);
        let offer = Offer::send(conn.as_fd(), cfg)?;
        offer.finish(conn.as_fd())
    }
}

impl Drop for ShmListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The listener's half-done handshake: rings and doorbell made and sent.
struct Offer {
    tx: Ring,
    rx: Ring,
    bell: Doorbell,
    mtu: usize,
}

impl Offer {
    /// Makes both rings and the listener's doorbell and sends them with `Hello`.
    fn send(sock: BorrowedFd<'_>, cfg: ShmWireConfig) -> Result<Self, ShmSetupError> {
        let slot = cfg.slot_size()?;
        let tx = make_ring("pony-shm-wire-l2c", cfg.capacity, slot, "listener-to-connector")?;
        let rx = make_ring("pony-shm-wire-c2l", cfg.capacity, slot, "connector-to-listener")?;
        let bell = Doorbell::new().map_err(|source| ShmSetupError::Doorbell {
            which: "listener",
            source,
        })?;
        let (page, efd) = bell.fds();
        let hello = Handshake::Hello {
            version: VERSION,
            mtu: cfg.mtu,
        };
        let fds = [tx.shared_mem().as_fd(), rx.shared_mem().as_fd(), page, efd];
        protocol::send(sock, &hello, &fds)?;
        Ok(Self {
            tx,
            rx,
            bell,
            mtu: cfg.mtu,
        })
    }

    /// Takes the connector's `Ready` and doorbell.
    fn finish(self, sock: BorrowedFd<'_>) -> Result<ShmWire, ShmSetupError> {
        let (msg, fds) = recv_handshake(sock)?;
        match msg {
            Handshake::Ready { version: VERSION } => {}
            other => return Err(ShmSetupError::Handshake(format!("expected ready, got {other:?}"))),
        }
        let [page, efd] = take_fds(fds)?;
        let peer_bell = ringer(page, efd, "connector")?;
        Ok(ShmWire::new(self.tx, self.rx, self.bell, peer_bell, self.mtu))
    }
}

/// The connector's side of the handshake on a connected socket.
fn connect_on(sock: BorrowedFd<'_>) -> Result<ShmWire, ShmSetupError> {
    let (msg, fds) = recv_handshake(sock)?;
    let mtu = match msg {
        Handshake::Hello {
            version: VERSION,
            mtu,
        } => mtu,
        other => {
            return Err(ShmSetupError::Handshake(format!(
                "expected hello v{VERSION}, got {other:?}"
            )))
        }
    };
    let [l2c, c2l, page, efd] = take_fds(fds)?;
    let rx = attach_ring(l2c, "listener-to-connector")?;
    let tx = attach_ring(c2l, "connector-to-listener")?;
    if rx.max_message_len() < mtu || tx.max_message_len() < mtu {
        return Err(ShmSetupError::Handshake(format!(
            "rings hold {} and {} bytes per packet, less than the announced mtu {mtu}",
            rx.max_message_len(),
            tx.max_message_len()
        )));
    }
    let peer_bell = ringer(page, efd, "listener")?;
    let bell = Doorbell::new().map_err(|source| ShmSetupError::Doorbell {
        which: "connector",
        source,
    })?;
    let (page, efd) = bell.fds();
    protocol::send(sock, &Handshake::Ready { version: VERSION }, &[page, efd])?;
    Ok(ShmWire::new(tx, rx, bell, peer_bell, mtu))
}

fn unix_socket() -> Result<OwnedFd, ShmSetupError> {
    rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| ShmSetupError::Socket("socket", e))
}

/// Waits until `fd` is readable, or the timeout passes.
fn wait_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> Result<(), ShmSetupError> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let left = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) => Some(Timespec::try_from(left).unwrap_or(Timespec {
                    tv_sec: i64::MAX,
                    tv_nsec: 0,
                })),
                None => return Err(ShmSetupError::Timeout),
            },
            None => None,
        };
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        match poll(&mut fds, left.as_ref()) {
            Ok(0) => return Err(ShmSetupError::Timeout),
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(ShmSetupError::Socket("poll", e)),
        }
    }
}

fn recv_handshake(sock: BorrowedFd<'_>) -> Result<(Handshake, Vec<OwnedFd>), ShmSetupError> {
    wait_readable(sock, Some(HANDSHAKE_TIMEOUT))?;
    let mut buf = Vec::new();
    match protocol::recv::<Handshake>(sock, &mut buf)? {
        Some(r) => Ok((r.msg, r.fds)),
        None => Err(ShmSetupError::Closed),
    }
}

fn take_fds<const N: usize>(fds: Vec<OwnedFd>) -> Result<[OwnedFd; N], ShmSetupError> {
    fds.try_into().map_err(|v: Vec<OwnedFd>| ShmSetupError::FdCount {
        expected: N,
        got: v.len(),
    })
}

fn make_ring(name: &str, capacity: u64, slot: u32, which: &'static str) -> Result<Ring, ShmSetupError> {
    let ring_err = |source| ShmSetupError::Ring { which, source };
    let len = Ring::required_len(capacity, slot).map_err(ring_err)?;
    let mem = SharedMem::create(name, len).map_err(|source| ShmSetupError::Shm { which, source })?;
    Ring::create(mem, capacity, slot).map_err(ring_err)
}

fn attach_ring(fd: OwnedFd, which: &'static str) -> Result<Ring, ShmSetupError> {
    let mem = SharedMem::from_fd(fd).map_err(|source| ShmSetupError::Shm { which, source })?;
    Ring::attach(mem).map_err(|source| ShmSetupError::Ring { which, source })
}

/// A ringer for the peer's doorbell (`Ringer::from_fds` refuses an `efd` that is not an
/// eventfd).
fn ringer(page: OwnedFd, efd: OwnedFd, which: &'static str) -> Result<Ringer, ShmSetupError> {
    Ringer::from_fds(page, efd).map_err(|source| match source {
        DoorbellError::NotAnEventfd { found } => ShmSetupError::NotAnEventfd { which, found },
        source => ShmSetupError::Doorbell { which, source },
    })
}

#[cfg(test)]
mod tests;
