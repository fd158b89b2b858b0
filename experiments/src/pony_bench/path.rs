// SPDX-License-Identifier: GPL-2.0-only
//! What joins the two in-process hosts, and the NICs each host's engines get on it.
//!
//! [`Path`] is where the two sides live: a veth pair between two network namespaces
//! ([`super::netns::Veth`], the default) or loopback (127.0.0.1, where namespaces are not
//! available, e.g. in the VM). [`NicKind`] is the factory a row runner uses per side: it
//! opens a `Box<dyn Nic>` inside that side's namespace (a socket keeps the namespace it was
//! created in), and names the row's `nic`. Adding a NIC kind is one variant here, one arm in
//! [`NicKind::open_side`] and one name in [`NicKind::parse`].

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path as FsPath;
use std::process::Command;

use anyhow::{bail, Context, Result};
use pony_engine::nic::{Nic, ShmWire, ShmWireConfig, UdpNic};
use pony_xdp::{XdpConfig, XdpMode, XdpNic};

use super::netns::{Side, Veth};

/// First UDP port of Pony's engine pairs on the veth path (pair `i` uses `PORT + i`).
pub const PORT: u16 = 7000;

/// The path between the hosts.
pub enum Path {
    Veth(Veth),
    Loopback,
}

impl Path {
    /// `veth` or `loopback`, the rows' `path`.
    pub fn name(&self) -> &'static str {
        match self {
            Path::Veth(_) => "veth",
            Path::Loopback => "loopback",
        }
    }

    /// `side`'s address on the path.
    pub fn addr(&self, side: Side) -> Ipv4Addr {
        match self {
            Path::Veth(_) => super::netns::ADDR[side],
            Path::Loopback => Ipv4Addr::LOCALHOST,
        }
    }

    /// Runs `f` where `side`'s sockets must be created (in its namespace).
    pub fn open_in<T: Send>(&self, side: Side, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        match self {
            Path::Veth(v) => v.open_in(side, f),
            Path::Loopback => f(),
        }
    }

    /// Moves a thread of the benchmark's own into `side`'s namespace (nothing on loopback).
    pub fn enter(&self, side: Side) -> Result<()> {
        match self {
            Path::Veth(v) => v.enter(side),
            Path::Loopback => Ok(()),
        }
    }

    /// A command running `program` on `side`.
    pub fn exec(&self, side: Side, program: &FsPath) -> Command {
        match self {
            Path::Veth(v) => v.exec(side, program),
            Path::Loopback => Command::new(program),
        }
    }

    /// The interface `side`'s NIC binds to (`lo` on loopback).
    pub fn device(&self, side: Side) -> &str {
        match self {
            Path::Veth(v) => v.device(side),
            Path::Loopback => "lo",
        }
    }

    /// Where pair `i`'s NIC on `side` binds: a fixed port on the veth (a NIC that filters
    /// by port needs to know it), any free port on loopback (shared with the machine).
    pub fn bind(&self, side: Side, i: usize) -> SocketAddrV4 {
        match self {
            Path::Veth(_) => SocketAddrV4::new(self.addr(side), PORT + i as u16),
            Path::Loopback => SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
        }
    }

    /// A note on how the hosts run, for the report.
    pub fn hosts_note(&self) -> String {
        let between = match self {
            Path::Veth(v) => format!(
                "each host's NIC sockets in its own network namespace ({} and {}), joined by a \
                 veth pair ({} {} ⇄ {} {}); TCP server in B, client in A",
                v.namespace(0),
                v.namespace(1),
                v.device(0),
                self.addr(0),
                v.device(1),
                self.addr(1)
            ),
            Path::Loopback => "joined over 127.0.0.1 (kernel loopback; no namespaces)".into(),
        };
        format!(
            "in-process hosts: two engine runtimes in one process, apps attached in-process (no \
             control socket); {between}; the shm wire and the floor stay inside the process"
        )
    }
}

/// What carries one engine's packets: the `nic` of a Pony row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicKind {
    /// A UDP socket per engine on the path (`pony_engine::nic::UdpNic`).
    Udp,
    /// The shared-memory wire between the two engines, inside this process (no path).
    Shm,
    /// AF_XDP on each veth end (`pony_xdp::XdpNic`, mode `auto`: copy mode on veth): one
    /// socket per interface queue, so one engine per host.
    Xdp,
}

/// Both ends of one engine pair.
pub struct NicPair {
    pub a: Box<dyn Nic>,
    pub b: Box<dyn Nic>,
    /// B's address, for A's `OpenFlow`.
    pub peer: String,
    /// A's address (the source B sees), `shm` for the shared-memory wire.
    pub a_addr: String,
}

impl NicKind {
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "udp" => NicKind::Udp,
            "shm" => NicKind::Shm,
            "xdp" => NicKind::Xdp,
            other => bail!("unknown NIC {other:?} (expected udp, shm or xdp)"),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            NicKind::Udp => "udp",
            NicKind::Shm => "shm",
            NicKind::Xdp => "xdp",
        }
    }

    /// The rows' `path` for this NIC on `path`: the shm wire never leaves the process.
    pub fn path_name(self, path: &Path) -> &'static str {
        match self {
            NicKind::Shm => "local",
            _ => path.name(),
        }
    }

    /// The NICs of engine pair `i` (UDP payload `mtu`).
    pub fn open_pair(self, path: &Path, mtu: usize, i: usize) -> Result<NicPair> {
        if self == NicKind::Shm {
            let (a, b) = ShmWire::pair(ShmWireConfig::default()).context("shared-memory wire")?;
            return Ok(NicPair {
                a: Box::new(a),
                b: Box::new(b),
                peer: "shm".into(),
                a_addr: "shm".into(),
            });
        }
        let (a, a_addr) = self.open_side(path, 0, path.bind(0, i), mtu)?;
        let (b, peer) = self.open_side(path, 1, path.bind(1, i), mtu)?;
        Ok(NicPair {
            a,
            b,
            peer: peer.to_string(),
            a_addr: a_addr.to_string(),
        })
    }

    /// One side's NIC bound to `bind`, opened inside `side`'s namespace; and the address it
    /// got.
    fn open_side(
        self,
        path: &Path,
        side: Side,
        bind: SocketAddrV4,
        mtu: usize,
    ) -> Result<(Box<dyn Nic>, SocketAddr)> {
        match self {
            NicKind::Udp => path.open_in(side, || {
                let nic = udp_nic(bind, mtu)?;
                let addr = nic.local_addr()?;
                Ok((Box::new(nic) as Box<dyn Nic>, addr))
            }),
            NicKind::Shm => bail!("the shm wire is opened as a pair"),
            NicKind::Xdp => {
                if !matches!(path, Path::Veth(_)) {
                    bail!("AF_XDP needs the veth path (an interface of its own), not loopback");
                }
                let interface = path.device(side).to_owned();
                path.open_in(side, move || {
                    let config = XdpConfig {
                        interface,
                        queue: 0,
                        bind,
                        mode: XdpMode::Auto,
                        ..Default::default()
                    };
                    let nic = XdpNic::open(&config)?;
                    Ok((Box::new(nic) as Box<dyn Nic>, SocketAddr::V4(bind)))
                })
            }
        }
    }
}

/// A UDP NIC on `bind` with room for a throughput window in its socket buffers.
fn udp_nic(bind: SocketAddrV4, mtu: usize) -> Result<UdpNic> {
    let nic = UdpNic::bind(bind).with_context(|| format!("binding a UDP socket on {bind}"))?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(nic.socket());
    let bytes: libc::c_int = 8 << 20;
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: fd is a live socket; the option value is a c_int of the given size.
        // Best effort: the kernel caps it at rmem_max/wmem_max.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&bytes as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    Ok(nic.with_mtu(mtu))
}
