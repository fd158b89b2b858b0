// SPDX-License-Identifier: MIT OR Apache-2.0
//! The XDP program (`bpf/pony_xdp.bpf.c`) loaded, attached to one interface through a BPF
//! link, and its two maps: the XSKMAP that routes Pony's packets to the AF_XDP socket of
//! their receive queue, and the per-CPU counters of what it did.
//!
//! The program is attached with a BPF link (`BPF_LINK_CREATE`), not the netlink
//! `XDP_SETUP_PROG` request: a link is a file descriptor, so closing it detaches exactly
//! this program, from whatever thread and network namespace the drop runs in (netlink
//! would address the interface by index in the dropping thread's namespace), and a process
//! that dies detaches too.

use std::mem::MaybeUninit;
use std::net::SocketAddrV4;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::bpf_skel::BpfSkelBuilder;

/// How the program runs on the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver (`XDP_FLAGS_DRV_MODE`), before an skb exists.
    Native,
    /// After the kernel built an skb (`XDP_FLAGS_SKB_MODE`), for drivers without XDP.
    Generic,
}

impl AttachMode {
    fn flags(self) -> u32 {
        match self {
            AttachMode::Native => libbpf_sys::XDP_FLAGS_DRV_MODE,
            AttachMode::Generic => libbpf_sys::XDP_FLAGS_SKB_MODE,
        }
    }
}

impl std::fmt::Display for AttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AttachMode::Native => "native (driver)",
            AttachMode::Generic => "generic (skb)",
        })
    }
}

/// What the program did, summed over CPUs (slots of `enum pony_counter`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProgramCounters {
    /// Pony packets redirected to an AF_XDP socket.
    pub redirected: u64,
    /// Other frames passed to the kernel.
    pub passed: u64,
    /// Pony packets that arrived on a queue without a socket (passed to the kernel).
    pub no_socket: u64,
}

/// A loaded program (not yet attached) and its maps.
pub(crate) struct Program {
    prog: OwnedFd,
    xsks: MapHandle,
    counters: MapHandle,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("prog", &self.prog)
            .finish_non_exhaustive()
    }
}

impl Program {
    /// Loads the program for packets to `bind` (an unspecified IP matches any).
    pub(crate) fn load(bind: SocketAddrV4) -> Result<Self, libbpf_rs::Error> {
        let mut object = MaybeUninit::uninit();
        let mut open = BpfSkelBuilder::default().open(&mut object)?;
        let rodata = open
            .maps
            .rodata_data
            .as_mut()
            .expect("pony_xdp.bpf.c has read-only data");
        // Both compared with header fields as they are on the wire: network byte order.
        rodata.pony_ip = u32::from_ne_bytes(bind.ip().octets());
        rodata.pony_port = bind.port().to_be();
        let skel = open.load()?;
        // Own duplicates of the descriptors so that the skeleton (and its borrow of
        // `object`) can go: the program and maps live as long as a descriptor does.
        let prog = skel
            .progs
            .pony_xdp
            .as_fd()
            .try_clone_to_owned()
            .map_err(libbpf_rs::Error::from)?;
        let xsks = MapHandle::try_from(&skel.maps.pony_xsks)?;
        let counters = MapHandle::try_from(&skel.maps.pony_counters)?;
        Ok(Self { prog, xsks, counters })
    }

    /// Duplicates of the program's and its two maps' descriptors (program, XSKMAP,
    /// counters), for a process taking the NIC over.
    pub(crate) fn dup_fds(&self) -> std::io::Result<[OwnedFd; 3]> {
        Ok([
            self.prog.try_clone()?,
            self.xsks.as_fd().try_clone_to_owned()?,
            self.counters.as_fd().try_clone_to_owned()?,
        ])
    }

    /// The program and maps of [`Program::dup_fds`], in another process. Each descriptor
    /// is checked to be what it claims (a program, an XSKMAP, a per-CPU array).
    pub(crate) fn from_fds([prog, xsks, counters]: [OwnedFd; 3]) -> Result<Self, String> {
        let map = |fd: OwnedFd, what: &str, ty: libbpf_rs::MapType| -> Result<MapHandle, String> {
            let info = libbpf_rs::MapInfo::new(fd.as_fd()).map_err(|e| format!("{what}: {e}"))?;
            if info.map_type() != ty {
                return Err(format!("{what}: a {:?} map, expected {ty:?}", info.map_type()));
            }
            // libbpf-rs opens a map handle by id only (a new descriptor of the same map).
            MapHandle::from_map_id(info.info.id).map_err(|e| format!("{what}: {e}"))
        };
        let xsks = map(xsks, "the XSKMAP", libbpf_rs::MapType::Xskmap)?;
        let counters = map(counters, "the counters map", libbpf_rs::MapType::PercpuArray)?;
        // SAFETY: zero is a valid bpf_prog_info; the kernel fills at most `len` bytes.
        let mut info: libbpf_sys::bpf_prog_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of_val(&info) as u32;
        // SAFETY: a valid descriptor and a buffer of `len` bytes.
        let rc = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(prog.as_raw_fd(), &mut info, &mut len) };
        if rc < 0 {
            return Err(format!(
                "the XDP program: {}",
                std::io::Error::from_raw_os_error(-rc)
            ));
        }
        if info.type_ != libbpf_sys::BPF_PROG_TYPE_XDP {
            return Err(format!(
                "the XDP program: program type {}, expected XDP",
                info.type_
            ));
        }
        Ok(Self { prog, xsks, counters })
    }

    /// Whether `link` is a BPF link of an XDP program (the attachment handed over).
    pub(crate) fn check_link(link: BorrowedFd<'_>) -> Result<(), String> {
        // SAFETY: zero is a valid bpf_link_info; the kernel fills at most `len` bytes.
        let mut info: libbpf_sys::bpf_link_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of_val(&info) as u32;
        // SAFETY: a valid descriptor and a buffer of `len` bytes.
        let rc = unsafe { libbpf_sys::bpf_link_get_info_by_fd(link.as_raw_fd(), &mut info, &mut len) };
        if rc < 0 {
            return Err(format!(
                "the XDP link: {}",
                std::io::Error::from_raw_os_error(-rc)
            ));
        }
        if info.type_ != libbpf_sys::BPF_LINK_TYPE_XDP {
            return Err(format!("the XDP link: link type {}, expected XDP", info.type_));
        }
        Ok(())
    }

    /// Attaches to the interface `ifindex` of the calling thread's network namespace; the
    /// returned link detaches when dropped.
    pub(crate) fn attach(&self, ifindex: u32, mode: AttachMode) -> std::io::Result<OwnedFd> {
        // SAFETY: zero is a valid bit pattern for this plain C struct.
        let mut opts: libbpf_sys::bpf_link_create_opts = unsafe { std::mem::zeroed() };
        opts.sz = std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as _;
        opts.flags = mode.flags();
        // SAFETY: valid descriptors and a sized options struct; libbpf returns -errno.
        let fd = unsafe {
            libbpf_sys::bpf_link_create(self.prog.as_raw_fd(), ifindex as i32, libbpf_sys::BPF_XDP, &opts)
        };
        if fd < 0 {
            return Err(std::io::Error::from_raw_os_error(-fd));
        }
        // SAFETY: a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Routes queue `queue`'s Pony packets to the socket `xsk`.
    pub(crate) fn insert_socket(&self, queue: u32, xsk: BorrowedFd<'_>) -> Result<(), libbpf_rs::Error> {
        let fd = xsk.as_raw_fd() as u32;
        self.xsks
            .update(&queue.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
    }

    /// The counters, summed over CPUs.
    pub(crate) fn counters(&self) -> ProgramCounters {
        let slot = |i: u32| -> u64 {
            match self.counters.lookup_percpu(&i.to_ne_bytes(), MapFlags::ANY) {
                Ok(Some(per_cpu)) => per_cpu
                    .iter()
                    .filter_map(|v| v.get(..8).map(|b| u64::from_ne_bytes(b.try_into().unwrap())))
                    .sum(),
                _ => 0,
            }
        };
        ProgramCounters {
            redirected: slot(0),
            passed: slot(1),
            no_socket: slot(2),
        }
    }
}
