// SPDX-License-Identifier: MIT OR Apache-2.0
//! [`XdpNic`]: a Pony [`Nic`] on one queue of one interface through AF_XDP.
//!
//! `open` does everything in the calling thread's network namespace: it reserves Pony's UDP
//! port with a kernel socket (so nothing else binds it, and so the kernel can be asked to
//! resolve neighbours), loads and attaches `pony_xdp`, makes the AF_XDP socket and puts it
//! in the program's XSKMAP at the queue's index. From then on the program hands every
//! UDP datagram to `bind` on that queue to the socket, and the NIC:
//!
//! - receives: takes a batch of RX descriptors, parses each frame ([`crate::frame`]),
//!   hands the UDP payload to the engine in place ([`Nic::recv_in_place`]: the engine
//!   parses it and copies the message bytes into the app's pool straight from the UMEM
//!   frame), learns the sender's MAC, and returns the frames to the fill ring
//!   (`need_wakeup` honoured);
//! - sends: the engine emits each packet straight into a free UMEM frame
//!   ([`Nic::emit_in_place`]), behind the Ethernet/IPv4/UDP headers written after it
//!   (checksums included, so a kernel UDP socket accepts it), a batch per TX ring
//!   submission and one wakeup `sendto` when the kernel asks for one (always, in copy
//!   mode). A peer whose MAC is not known yet costs that packet (counted in
//!   [`XdpStats::tx_unresolved`], reported as an error so the engine counts it too) while
//!   the kernel resolves it ([`crate::neighbour`]); the transport retransmits.
//!
//! An upgrade moves the NIC to a new process: [`Nic::dup_for_handover`] gives its
//! descriptors and state, [`XdpNic::adopt`] rebuilds it from them (see [`crate::handover`]).
//!
//! Addresses are [`PeerAddr::Udp`], the same as [`pony_engine::nic::UdpNic`]'s, so an engine
//! on AF_XDP and one on a UDP socket talk to each other.

use std::io;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Instant;

use pony_engine::nic::{Nic, NicError, NicStats, PeerAddr, WakeSource};
use rustix::io::Errno;
use rustix::net::xdp::XdpDesc;

use crate::frame::{self, Headers, Mac, HEADER_LEN};
use crate::handover::{self, NicState};
use crate::neighbour::Neighbours;
use crate::program::{AttachMode, Program, ProgramCounters};
use crate::xsk::{SetupError, Xsk, XskSizes, XDP_PACKET_HEADROOM};

/// Received descriptors taken per RX ring visit.
const RX_BATCH: u32 = 64;
/// Most packets per [`Nic::send_batch`]: one TX ring submission and one wakeup.
const TX_BATCH: usize = 32;

/// Copy or zero-copy AF_XDP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum XdpMode {
    /// Zero-copy where the driver offers it, else copy mode.
    #[default]
    Auto,
    /// The kernel copies frames between its buffers and the UMEM (every driver, veth).
    Copy,
    /// The driver DMAs straight into the UMEM; an error where it cannot.
    ZeroCopy,
}

/// How to open an [`XdpNic`].
#[derive(Debug, Clone)]
pub struct XdpConfig {
    /// The interface, in the calling thread's network namespace.
    pub interface: String,
    /// Its receive queue to bind (the NIC receives only what arrives there).
    pub queue: u32,
    /// The local IPv4 address and UDP port Pony uses on the interface (0.0.0.0 takes
    /// datagrams to any local address, and sends from the interface's first one: give
    /// the address).
    pub bind: SocketAddrV4,
    /// Copy or zero-copy.
    pub mode: XdpMode,
    /// Bytes per UMEM frame: a power of two, 2048 or 4096. A frame holds one packet with
    /// its headers, and the kernel keeps 256 bytes in front of received ones.
    pub frame_size: u32,
    /// UMEM frames, half for receiving and half for sending.
    pub frame_count: u32,
    /// Entries in each of the four rings (a power of two).
    pub ring_size: u32,
}

impl Default for XdpConfig {
    fn default() -> Self {
        Self {
            interface: String::new(),
            queue: 0,
            bind: SocketAddrV4::new([0, 0, 0, 0].into(), 0),
            mode: XdpMode::Auto,
            frame_size: 4096,
            frame_count: 4096,
            ring_size: 2048,
        }
    }
}

/// Why [`XdpNic::open`] failed. Each names what is missing.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// The kernel has no AF_XDP (`CONFIG_XDP_SOCKETS`).
    #[error("this kernel has no AF_XDP sockets (CONFIG_XDP_SOCKETS is off)")]
    NoAfXdp,
    /// Not allowed: AF_XDP and XDP programs need root, or CAP_NET_ADMIN, CAP_NET_RAW and CAP_BPF.
    #[error("{what}: permission denied (AF_XDP needs root, or CAP_NET_ADMIN + CAP_NET_RAW + CAP_BPF)")]
    Permission {
        /// What was refused.
        what: &'static str,
    },
    /// No interface of that name in the calling thread's network namespace.
    #[error("no network interface {0:?} in this network namespace")]
    NoSuchInterface(String),
    /// The configuration is unusable.
    #[error("invalid XDP configuration: {0}")]
    Config(String),
    /// Pony's UDP port could not be reserved (in use, or the address is not local).
    #[error("reserving UDP {bind}: {source}")]
    Bind {
        /// The address.
        bind: SocketAddrV4,
        /// Why.
        source: io::Error,
    },
    /// Reading the interface's properties failed.
    #[error("interface {interface}: {source}")]
    Interface {
        /// The interface.
        interface: String,
        /// Why.
        source: io::Error,
    },
    /// The BPF program did not load (verifier, or no BPF support).
    #[error("loading the XDP program: {0}")]
    Load(libbpf_rs::Error),
    /// The program did not attach.
    #[error("attaching the XDP program to {interface} in {mode} mode: {source}{hint}")]
    Attach {
        /// The interface.
        interface: String,
        /// The attach mode tried last.
        mode: AttachMode,
        /// Why.
        source: io::Error,
        /// What usually causes it.
        hint: &'static str,
    },
    /// Zero-copy was asked for and the driver does not do it.
    #[error(
        "zero-copy AF_XDP requested but the driver of {interface} does not offer it (use copy or auto mode)"
    )]
    ZeroCopyUnsupported {
        /// The interface.
        interface: String,
    },
    /// A handed-over NIC could not be rebuilt ([`XdpNic::adopt`]).
    #[error("taking over AF_XDP on {interface}: {why}")]
    Handover {
        /// The interface.
        interface: String,
        /// What was wrong with the descriptors or state.
        why: String,
    },
    /// Setting up the socket, UMEM or rings failed.
    #[error("AF_XDP socket on {interface} queue {queue}: {step}: {source}")]
    Socket {
        /// The interface.
        interface: String,
        /// The queue.
        queue: u32,
        /// Which step.
        step: &'static str,
        /// Why.
        source: io::Error,
    },
}

/// What the XDP side saw, besides [`NicStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XdpStats {
    /// The program's counters (all queues of the interface).
    pub program: ProgramCounters,
    /// Packets not sent because the peer's MAC was not resolved yet.
    pub tx_unresolved: u64,
    /// Received frames that were not a well-formed datagram to `bind` (dropped).
    pub rx_invalid: u64,
    /// Frames the kernel dropped for this socket (`XDP_STATISTICS`: RX ring full, no
    /// free frame in the fill ring, too long for a frame).
    pub kernel_rx_dropped: u64,
    /// Of them, how often the RX ring was full.
    pub kernel_rx_ring_full: u64,
    /// How the program runs.
    pub attach: AttachMode,
    /// Whether the socket is in zero-copy mode.
    pub zero_copy: bool,
}

/// A Pony NIC on one interface queue through AF_XDP. See the module documentation.
pub struct XdpNic {
    // Drop order: the socket, then the link (detaching the program), then the program.
    xsk: Xsk,
    link: OwnedFd,
    program: Program,
    neighbours: Neighbours,
    port: UdpSocket,
    queue: u32,
    interface: String,
    bind: SocketAddrV4,
    src_mac: Mac,
    mtu: usize,
    attach: AttachMode,
    ip_id: u16,
    rx_queue: Vec<XdpDesc>,
    rx_at: usize,
    stats: NicStats,
    tx_unresolved: u64,
    rx_invalid: u64,
}

impl std::fmt::Debug for XdpNic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpNic")
            .field("interface", &self.interface)
            .field("bind", &self.bind)
            .field("attach", &self.attach)
            .field("zero_copy", &self.xsk.is_zero_copy())
            .finish_non_exhaustive()
    }
}

impl XdpNic {
    /// Opens the NIC in the calling thread's network namespace. See [`XdpError`] for what
    /// can be missing.
    pub fn open(config: &XdpConfig) -> Result<XdpNic, XdpError> {
        validate(config)?;
        let interface = config.interface.clone();
        // Probe AF_XDP first: its absence or a lack of privilege is the clearest error.
        match rustix::net::socket(
            rustix::net::AddressFamily::XDP,
            rustix::net::SocketType::RAW,
            None,
        ) {
            Ok(_) => {}
            Err(Errno::AFNOSUPPORT) => return Err(XdpError::NoAfXdp),
            Err(Errno::PERM | Errno::ACCESS) => {
                return Err(XdpError::Permission {
                    what: "an AF_XDP socket",
                })
            }
            Err(e) => {
                return Err(XdpError::Socket {
                    interface,
                    queue: config.queue,
                    step: "socket",
                    source: e.into(),
                })
            }
        }
        let probe = rustix::net::socket(
            rustix::net::AddressFamily::INET,
            rustix::net::SocketType::DGRAM,
            None,
        )
        .map_err(|e| XdpError::Interface {
            interface: interface.clone(),
            source: e.into(),
        })?;
        let info = InterfaceInfo::query(&probe, &interface)?;
        let port = UdpSocket::bind(config.bind).map_err(|source| XdpError::Bind {
            bind: config.bind,
            source,
        })?;
        let program = Program::load(config.bind).map_err(|e| {
            if matches!(e.kind(), libbpf_rs::ErrorKind::PermissionDenied) {
                XdpError::Permission {
                    what: "loading a BPF program",
                }
            } else {
                XdpError::Load(e)
            }
        })?;
        let modes: &[AttachMode] = match config.mode {
            XdpMode::ZeroCopy => &[AttachMode::Native],
            XdpMode::Auto | XdpMode::Copy => &[AttachMode::Native, AttachMode::Generic],
        };
        let (link, attach) = attach(&program, &interface, info.index, modes)?;
        let sizes = XskSizes {
            frame_size: config.frame_size,
            frame_count: config.frame_count,
            ring_size: config.ring_size,
        };
        let socket_error = |step: &'static str, source: io::Error| XdpError::Socket {
            interface: interface.clone(),
            queue: config.queue,
            step,
            source,
        };
        let setup = |zc: bool| {
            Xsk::new(info.index, config.queue, sizes, zc).map_err(|e| match e {
                SetupError::Socket(e) => socket_error("socket", e.into()),
                SetupError::Umem(e) => socket_error("registering the UMEM", e.into()),
                SetupError::Rings(e) => socket_error("mapping the rings", e.into()),
                SetupError::Bind(Errno::OPNOTSUPP | Errno::PROTONOSUPPORT) if zc => {
                    XdpError::ZeroCopyUnsupported {
                        interface: interface.clone(),
                    }
                }
                SetupError::Bind(e) => socket_error("binding to the queue", e.into()),
            })
        };
        let xsk = match config.mode {
            XdpMode::Copy => setup(false)?,
            XdpMode::ZeroCopy => setup(true)?,
            XdpMode::Auto if attach == AttachMode::Native => match setup(true) {
                Ok(xsk) => xsk,
                Err(XdpError::ZeroCopyUnsupported { .. }) => setup(false)?,
                Err(e) => return Err(e),
            },
            XdpMode::Auto => setup(false)?,
        };
        program
            .insert_socket(config.queue, xsk.fd())
            .map_err(|e| socket_error("adding the socket to the XSKMAP", io::Error::other(e)))?;
        let trigger = port.try_clone().map_err(|e| XdpError::Bind {
            bind: config.bind,
            source: e,
        })?;
        let neighbours = Neighbours::new(&interface, trigger).map_err(|source| XdpError::Interface {
            interface: interface.clone(),
            source,
        })?;
        let mtu = payload_mtu(info.mtu, config.frame_size);
        log::info!(
            "pony-xdp: {interface} queue {} for {}: program attached {attach}, {} mode, MTU {mtu}",
            config.queue,
            config.bind,
            if xsk.is_zero_copy() { "zero-copy" } else { "copy" },
        );
        Ok(XdpNic {
            xsk,
            link,
            program,
            neighbours,
            port,
            queue: config.queue,
            interface,
            bind: config.bind,
            src_mac: info.mac,
            mtu,
            attach,
            ip_id: 0,
            rx_queue: Vec::with_capacity(RX_BATCH as usize),
            rx_at: 0,
            stats: NicStats::default(),
            tx_unresolved: 0,
            rx_invalid: 0,
        })
    }

    /// Rebuilds a NIC another process handed over ([`Nic::dup_for_handover`]: the
    /// descriptors of [`crate::handover`], in its order) in the calling thread's network
    /// namespace, which must be the one it was opened in; `config` names the interface,
    /// queue and address (the sizes and mode come from the handed-over state). The program
    /// stays attached and the socket stays in the XSKMAP: nothing is set up again but the
    /// mappings.
    pub fn adopt(config: &XdpConfig, fds: Vec<OwnedFd>) -> Result<XdpNic, XdpError> {
        let interface = config.interface.clone();
        let bad = |why: String| XdpError::Handover {
            interface: interface.clone(),
            why,
        };
        let fds: [OwnedFd; handover::FDS] = fds
            .try_into()
            .map_err(|v: Vec<OwnedFd>| bad(format!("{} descriptors, expected {}", v.len(), handover::FDS)))?;
        let [xsk_fd, umem_fd, state_fd, prog, xsks, counters, link, port] = fds;
        let state = NicState::from_memfd(state_fd).map_err(&bad)?;
        if state.queue != config.queue {
            return Err(bad(format!(
                "the state is for queue {}, the configuration names queue {}",
                state.queue, config.queue
            )));
        }
        let domain =
            rustix::net::sockopt::socket_domain(&xsk_fd).map_err(|e| bad(format!("the socket: {e}")))?;
        if domain != rustix::net::AddressFamily::XDP {
            return Err(bad(format!("the socket is not AF_XDP ({domain:?})")));
        }
        let port = UdpSocket::from(port);
        match port.local_addr() {
            Ok(SocketAddr::V4(a)) if a == config.bind => {}
            other => {
                return Err(bad(format!(
                    "the reserved port is {other:?}, the configuration binds {}",
                    config.bind
                )))
            }
        }
        let program = Program::from_fds([prog, xsks, counters]).map_err(&bad)?;
        Program::check_link(link.as_fd()).map_err(&bad)?;
        let probe = rustix::net::socket(
            rustix::net::AddressFamily::INET,
            rustix::net::SocketType::DGRAM,
            None,
        )
        .map_err(|e| XdpError::Interface {
            interface: interface.clone(),
            source: e.into(),
        })?;
        let info = InterfaceInfo::query(&probe, &interface)?;
        let sizes = XskSizes {
            frame_size: state.frame_size,
            frame_count: state.frame_count,
            ring_size: state.ring_size,
        };
        let xsk = Xsk::adopt(xsk_fd, umem_fd, sizes, state.zero_copy, state.frames).map_err(|e| {
            bad(match e {
                SetupError::Umem(e) => format!("mapping the UMEM: {e}"),
                SetupError::Rings(e) => format!("mapping the rings: {e}"),
                SetupError::Socket(e) | SetupError::Bind(e) => format!("the socket: {e}"),
            })
        })?;
        let trigger = port
            .try_clone()
            .map_err(|e| bad(format!("the reserved port: {e}")))?;
        let neighbours = Neighbours::new(&interface, trigger).map_err(|source| XdpError::Interface {
            interface: interface.clone(),
            source,
        })?;
        let mtu = payload_mtu(info.mtu, state.frame_size);
        log::info!(
            "pony-xdp: {interface} queue {} for {}: taken over ({} frames received and not yet delivered), program still attached {}",
            config.queue,
            config.bind,
            state.pending.len(),
            state.attach,
        );
        Ok(XdpNic {
            xsk,
            link,
            program,
            neighbours,
            port,
            queue: config.queue,
            interface,
            bind: config.bind,
            src_mac: info.mac,
            mtu,
            attach: state.attach,
            ip_id: state.ip_id,
            rx_queue: state.pending,
            rx_at: 0,
            stats: state.stats,
            tx_unresolved: state.tx_unresolved,
            rx_invalid: state.rx_invalid,
        })
    }

    /// The descriptors and state of [`XdpNic::adopt`].
    fn hand_over(&self) -> io::Result<Vec<OwnedFd>> {
        let state = NicState {
            frame_size: self.xsk.frame_size(),
            frame_count: (self.xsk.umem_len() / self.xsk.frame_size() as usize) as u32,
            ring_size: self.xsk.ring_size(),
            queue: self.queue,
            zero_copy: self.xsk.is_zero_copy(),
            attach: self.attach,
            ip_id: self.ip_id,
            stats: self.stats,
            tx_unresolved: self.tx_unresolved,
            rx_invalid: self.rx_invalid,
            frames: self.xsk.frames(),
            pending: self.rx_queue[self.rx_at..].to_vec(),
        };
        let [prog, xsks, counters] = self.program.dup_fds()?;
        Ok(vec![
            self.xsk.fd().try_clone_to_owned()?,
            self.xsk.umem_fd().try_clone_to_owned()?,
            state.to_memfd()?,
            prog,
            xsks,
            counters,
            self.link.try_clone()?,
            self.port.as_fd().try_clone_to_owned()?,
        ])
    }

    /// The XDP side's counters and mode.
    pub fn xdp_stats(&self) -> XdpStats {
        let kernel = rustix::net::sockopt::xdp_statistics(self.xsk.fd()).ok();
        XdpStats {
            kernel_rx_dropped: kernel.map_or(0, |k| k.rx_dropped),
            kernel_rx_ring_full: kernel.and_then(|k| k.rx_ring_full).unwrap_or(0),
            program: self.program.counters(),
            tx_unresolved: self.tx_unresolved,
            rx_invalid: self.rx_invalid,
            attach: self.attach,
            zero_copy: self.xsk.is_zero_copy(),
        }
    }

    /// Whether the socket runs in zero-copy mode (false: copy mode).
    pub fn is_zero_copy(&self) -> bool {
        self.xsk.is_zero_copy()
    }

    /// How the XDP program runs on the interface.
    pub fn attach_mode(&self) -> AttachMode {
        self.attach
    }

    /// The address Pony's packets go to and come from.
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.bind
    }

    /// Headers for a packet to `to`, or `None` (counted) while its MAC is unresolved.
    fn headers_to(&mut self, to: &PeerAddr) -> Result<Headers, NicError> {
        let PeerAddr::Udp(SocketAddr::V4(dst)) = *to else {
            return Err(NicError::WrongPeer(*to));
        };
        match self.neighbours.lookup(*dst.ip(), Instant::now()) {
            Some(dst_mac) => Ok(Headers {
                src_mac: self.src_mac,
                dst_mac,
                src: self.bind,
                dst,
            }),
            None => {
                self.tx_unresolved += 1;
                Err(NicError::Io(io::Error::new(
                    io::ErrorKind::HostUnreachable,
                    format!("{}: MAC of {} not resolved yet", self.interface, dst.ip()),
                )))
            }
        }
    }

    /// Sends up to `max` packets to one peer, each written by `payload` into the room
    /// behind the headers of a UMEM frame (it returns the payload's length, or `None` to
    /// stop): one TX submission. Returns how many went out; fewer than asked also when the
    /// TX ring or the transmit frames ran out (counted in `tx_full`).
    fn transmit(
        &mut self,
        headers: &Headers,
        max: usize,
        mut payload: impl FnMut(&mut [u8]) -> Option<usize>,
    ) -> Result<usize, NicError> {
        let (mtu, mut ip_id, mut bytes, mut stopped) = (self.mtu, self.ip_id, 0, false);
        let n = self.xsk.tx_fill(max as u32, |frame| {
            let Some(len) = payload(&mut frame[HEADER_LEN..HEADER_LEN + mtu]) else {
                stopped = true;
                return None;
            };
            let len = len.min(mtu);
            ip_id = ip_id.wrapping_add(1);
            headers.write(&mut frame[..HEADER_LEN + len], ip_id);
            bytes += len;
            Some(HEADER_LEN + len)
        })?;
        self.ip_id = ip_id;
        self.stats.tx_packets += u64::from(n);
        self.stats.tx_bytes += bytes as u64;
        if (n as usize) < max && !stopped {
            self.stats.tx_full += 1;
        }
        Ok(n as usize)
    }

    /// The next received frame's payload, handed to `deliver` in place (from the UMEM
    /// frame) if it is at most `max_len` bytes; the frame goes back to the kernel after.
    fn next_received<R>(&mut self, max_len: usize, deliver: impl FnOnce(&[u8], PeerAddr) -> R) -> Option<R> {
        let mut deliver = Some(deliver);
        while self.rx_at < self.rx_queue.len() {
            let d = self.rx_queue[self.rx_at];
            self.rx_at += 1;
            let frame = self.xsk.rx_frame(&d);
            let parsed = frame::parse(frame).filter(|p| {
                p.dst.port() == self.bind.port()
                    && (self.bind.ip().is_unspecified() || p.dst.ip() == self.bind.ip())
            });
            let result = match parsed {
                None => {
                    self.rx_invalid += 1;
                    None
                }
                Some(p) if p.payload.len() > max_len => {
                    self.stats.rx_oversize += 1;
                    None
                }
                Some(p) => {
                    let len = p.payload.len();
                    self.stats.rx_packets += 1;
                    self.stats.rx_bytes += len as u64;
                    self.neighbours.learn(*p.src.ip(), p.src_mac);
                    let from = PeerAddr::Udp(SocketAddr::V4(p.src));
                    // The frame is ours until rx_return below: the kernel does not write it.
                    let frame = self.xsk.rx_frame(&d);
                    Some((deliver.take().expect("delivers once"))(&frame[p.payload], from))
                }
            };
            self.xsk.rx_return(&d);
            if result.is_some() {
                return result;
            }
        }
        None
    }

    /// Takes the next batch of RX descriptors, after giving the last batch's frames back
    /// to the kernel; false when nothing was received.
    fn next_batch(&mut self) -> Result<bool, NicError> {
        self.xsk.refill();
        self.rx_queue.clear();
        self.rx_at = 0;
        self.rx_invalid += u64::from(self.xsk.rx_take(RX_BATCH, &mut self.rx_queue));
        if self.rx_queue.is_empty() {
            // Frames a busy device left in the TX ring go out now.
            self.xsk.kick()?;
            return Ok(false);
        }
        Ok(true)
    }
}

impl Nic for XdpNic {
    fn send(&mut self, packet: &[u8], to: &PeerAddr) -> Result<(), NicError> {
        if packet.len() > self.mtu {
            return Err(NicError::TooLarge {
                len: packet.len(),
                mtu: self.mtu,
            });
        }
        let headers = self.headers_to(to)?;
        let mut once = Some(packet);
        let copy = |room: &mut [u8]| {
            let p = once.take()?;
            room[..p.len()].copy_from_slice(p);
            Some(p.len())
        };
        match self.transmit(&headers, 1, copy)? {
            0 => Err(NicError::WouldBlock),
            _ => Ok(()),
        }
    }

    /// One TX ring submission (and at most one wakeup) for the whole batch.
    fn send_batch(&mut self, batch: &[u8], segment: usize, to: &PeerAddr) -> Result<(), (usize, NicError)> {
        let segment = segment.max(1);
        if segment.min(batch.len()) > self.mtu {
            return Err((
                0,
                NicError::TooLarge {
                    len: segment.min(batch.len()),
                    mtu: self.mtu,
                },
            ));
        }
        let headers = self.headers_to(to).map_err(|e| (0, e))?;
        let count = batch.len().div_ceil(segment);
        let mut chunks = batch.chunks(segment);
        let copy = |room: &mut [u8]| {
            let p = chunks.next()?;
            room[..p.len()].copy_from_slice(p);
            Some(p.len())
        };
        let sent = self.transmit(&headers, count, copy).map_err(|e| (0, e))?;
        if sent < count {
            return Err((sent * segment, NicError::WouldBlock));
        }
        Ok(())
    }

    fn emits_in_place(&self) -> bool {
        true
    }

    /// Each packet emitted straight into a UMEM frame, behind the headers written after it.
    /// An unresolved peer is an error before anything is emitted: the flow keeps its packets.
    fn emit_in_place(
        &mut self,
        to: &PeerAddr,
        max: usize,
        emit: &mut dyn FnMut(&mut [u8]) -> Option<usize>,
    ) -> Result<usize, NicError> {
        let headers = self.headers_to(to)?;
        self.transmit(&headers, max, emit)
    }

    fn max_batch(&self) -> usize {
        TX_BATCH
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<(usize, PeerAddr)>, NicError> {
        let max_len = buf.len();
        loop {
            let copy = |payload: &[u8], from| {
                buf[..payload.len()].copy_from_slice(payload);
                (payload.len(), from)
            };
            if let Some(p) = self.next_received(max_len, copy) {
                return Ok(Some(p));
            }
            if !self.next_batch()? {
                return Ok(None);
            }
        }
    }

    /// Each payload straight from its UMEM frame.
    fn recv_in_place(
        &mut self,
        max: usize,
        deliver: &mut dyn FnMut(&[u8], PeerAddr),
    ) -> Result<usize, NicError> {
        let mut n = 0;
        while n < max {
            if self.next_received(self.mtu, &mut *deliver).is_some() {
                n += 1;
                continue;
            }
            if !self.next_batch()? {
                break;
            }
        }
        Ok(n)
    }

    fn wake_source(&self) -> Option<WakeSource> {
        Some(WakeSource::Readable(self.xsk.shared_fd()))
    }

    fn can_hand_over(&self) -> bool {
        true
    }

    /// [`XdpNic::xdp_stats`]' counters. The program's are the interface's (all queues)
    /// and live in its map, so they carry on across a hand-over.
    fn backend_counters(&self) -> Option<Vec<(&'static str, u64)>> {
        let s = self.xdp_stats();
        Some(vec![
            ("redirected", s.program.redirected),
            ("passed", s.program.passed),
            ("no_socket", s.program.no_socket),
            ("tx_unresolved", s.tx_unresolved),
            ("rx_invalid", s.rx_invalid),
            ("kernel_rx_dropped", s.kernel_rx_dropped),
            ("kernel_rx_ring_full", s.kernel_rx_ring_full),
        ])
    }

    /// The socket, the UMEM's memfd, the state, the program, its maps and link, the
    /// reserved port ([`crate::handover`]); [`XdpNic::adopt`] rebuilds the NIC from them.
    fn dup_for_handover(&self) -> Option<io::Result<Vec<OwnedFd>>> {
        Some(self.hand_over())
    }

    fn mtu(&self) -> usize {
        self.mtu
    }

    fn stats(&self) -> NicStats {
        self.stats
    }
}

fn validate(c: &XdpConfig) -> Result<(), XdpError> {
    let bad = |m: String| Err(XdpError::Config(m));
    if c.interface.is_empty() {
        return bad("no interface".into());
    }
    if c.bind.port() == 0 {
        return bad(format!("bind address {} has no port", c.bind));
    }
    if !matches!(c.frame_size, 2048 | 4096) {
        return bad(format!("frame_size {} is not 2048 or 4096", c.frame_size));
    }
    if !c.ring_size.is_power_of_two() || c.ring_size < 8 {
        return bad(format!("ring_size {} is not a power of two >= 8", c.ring_size));
    }
    if c.frame_count < 16 || c.frame_count > 1 << 20 {
        return bad(format!("frame_count {} is not in 16..=1048576", c.frame_count));
    }
    Ok(())
}

/// Attaches in the first mode that works; the error is the last mode's.
fn attach(
    program: &Program,
    interface: &str,
    index: u32,
    modes: &[AttachMode],
) -> Result<(OwnedFd, AttachMode), XdpError> {
    let mut last = None;
    for &mode in modes {
        match program.attach(index, mode) {
            Ok(link) => {
                if let Some((failed, e)) = &last {
                    // Works, but slower, and on veth an MTU above ~3500 is the usual cause.
                    log::warn!("pony-xdp: {interface}: {failed} XDP failed ({e}); using {mode} XDP");
                }
                return Ok((link, mode));
            }
            Err(e) => last = Some((mode, e)),
        }
    }
    let (mode, source) = last.expect("at least one mode");
    let hint = match source.raw_os_error().map(Errno::from_raw_os_error) {
        Some(Errno::BUSY | Errno::EXIST) => " (another XDP program is attached to this interface)",
        Some(Errno::PERM | Errno::ACCESS) => " (needs root, or CAP_NET_ADMIN + CAP_BPF)",
        Some(Errno::INVAL | Errno::RANGE) => {
            " (native XDP on veth needs an MTU of at most about 3500 bytes on both ends; check `ip link`)"
        }
        Some(Errno::OPNOTSUPP) => " (the driver has no native XDP)",
        _ => "",
    };
    Err(XdpError::Attach {
        interface: interface.to_owned(),
        mode,
        source,
        hint,
    })
}

/// Index, MTU and MAC of an interface, by ioctl on a socket of the right namespace.
struct InterfaceInfo {
    index: u32,
    mtu: usize,
    mac: Mac,
}

impl InterfaceInfo {
    fn query(socket: &OwnedFd, interface: &str) -> Result<Self, XdpError> {
        let name = interface.as_bytes();
        if name.len() >= libc::IFNAMSIZ || name.contains(&0) {
            return Err(XdpError::NoSuchInterface(interface.to_owned()));
        }
        let ioctl = |request: libc::c_ulong| -> Result<libc::ifreq, XdpError> {
            // SAFETY: zero is a valid ifreq; the name is NUL-terminated (checked above).
            let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
            for (d, s) in req.ifr_name.iter_mut().zip(name) {
                *d = *s as libc::c_char;
            }
            // SAFETY: these requests read the name and write the union.
            let rc = unsafe { libc::ioctl(socket.as_fd().as_raw_fd(), request as _, &mut req) };
            if rc == 0 {
                return Ok(req);
            }
            let err = io::Error::last_os_error();
            Err(if err.raw_os_error() == Some(libc::ENODEV) {
                XdpError::NoSuchInterface(interface.to_owned())
            } else {
                XdpError::Interface {
                    interface: interface.to_owned(),
                    source: err,
                }
            })
        };
        // SAFETY (unions below): each request fills the member read.
        let index = unsafe { ioctl(libc::SIOCGIFINDEX)?.ifr_ifru.ifru_ifindex } as u32;
        let mtu = unsafe { ioctl(libc::SIOCGIFMTU)?.ifr_ifru.ifru_mtu } as usize;
        let hw = unsafe { ioctl(libc::SIOCGIFHWADDR)?.ifr_ifru.ifru_hwaddr };
        let mut mac = [0u8; 6];
        for (d, s) in mac.iter_mut().zip(hw.sa_data.iter()) {
            *d = *s as u8;
        }
        Ok(Self { index, mtu, mac })
    }
}

/// The largest Pony packet (UDP payload) that fits both the interface's MTU (an IP MTU:
/// our headers less Ethernet's) and one UMEM frame after the kernel's XDP headroom.
fn payload_mtu(interface_mtu: usize, frame_size: u32) -> usize {
    let frame_room = frame_size as usize - XDP_PACKET_HEADROOM;
    interface_mtu
        .saturating_sub(HEADER_LEN - 14)
        .min(frame_room - HEADER_LEN)
}
