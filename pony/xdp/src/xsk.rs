// SPDX-License-Identifier: MIT OR Apache-2.0
//! One AF_XDP socket with its own UMEM: the frame memory (a memfd, so that another process
//! can take the socket over and map the same frames), the four rings mapped from the
//! kernel, and the frame accounting between them.
//!
//! ```text
//!   UMEM: frame_count frames of frame_size bytes
//!   ├── first half: receive frames, always either in the fill ring, in the kernel, in the
//!   │   RX ring or held by us between `rx_peek` and `rx_return`
//!   └── second half: transmit frames, either in `tx_free` or in flight (TX ring, kernel,
//!       completion ring) until the completion ring gives them back
//! ```
//!
//! Ownership of a frame passes through the rings, so a frame is only ever written by one
//! side: the kernel writes a receive frame between fill and RX; we write a transmit frame
//! only while it is in `tx_free`. Every descriptor the kernel hands back is bounds-checked
//! against the UMEM before use.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

use rustix::io::Errno;
use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};
use rustix::net::xdp::{
    SocketAddrXdp, SocketAddrXdpFlags, XdpDesc, XdpDescOptions, XdpRingOffset, XdpUmemReg, XdpUmemRegFlags,
    XDP_PGOFF_RX_RING, XDP_PGOFF_TX_RING, XDP_UMEM_PGOFF_COMPLETION_RING, XDP_UMEM_PGOFF_FILL_RING,
};
use rustix::net::{sockopt, AddressFamily, SendFlags, SocketFlags, SocketType};

use crate::ring::{Consumer, Producer, RingMem};

/// Room the kernel keeps in front of a received frame in copy and zero-copy mode alike
/// (`XDP_PACKET_HEADROOM`): a receive frame holds at most `frame_size` less this.
pub(crate) const XDP_PACKET_HEADROOM: usize = 256;

/// Sizes of the UMEM and rings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct XskSizes {
    pub(crate) frame_size: u32,
    pub(crate) frame_count: u32,
    pub(crate) ring_size: u32,
}

/// An anonymous or ring mapping, unmapped on drop.
#[derive(Debug)]
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: plain memory; who may touch which part is the rings' protocol.
unsafe impl Send for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: we mapped exactly this range and nothing refers to it past the owner.
        let _ = unsafe { munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Which step of setting the socket up failed, for the caller's error.
#[derive(Debug)]
pub(crate) enum SetupError {
    Socket(Errno),
    Umem(Errno),
    Rings(Errno),
    Bind(Errno),
}

/// An AF_XDP socket bound to one queue, with its UMEM and rings.
#[derive(Debug)]
pub(crate) struct Xsk {
    fd: Arc<OwnedFd>,
    // Rings before the UMEM: they are unmapped first on drop.
    fill: Producer<u64>,
    completion: Consumer<u64>,
    rx: Consumer<XdpDesc>,
    tx: Producer<XdpDesc>,
    _ring_maps: Vec<Mapping>,
    umem: Mapping,
    umem_fd: OwnedFd,
    frame_size: u32,
    ring_size: u32,
    /// Transmit frames we may write (their UMEM addresses).
    tx_free: Vec<u64>,
    /// Receive frames back from the engine, waiting to go into the fill ring.
    rx_done: Vec<u64>,
    zero_copy: bool,
}

impl Xsk {
    /// Makes the socket, registers the UMEM, maps the rings, fills the fill ring and binds
    /// to `queue` of `ifindex` in the calling thread's network namespace.
    pub(crate) fn new(
        ifindex: u32,
        queue: u32,
        sizes: XskSizes,
        zero_copy: bool,
    ) -> Result<Self, SetupError> {
        let fd = rustix::net::socket_with(AddressFamily::XDP, SocketType::RAW, SocketFlags::CLOEXEC, None)
            .map_err(SetupError::Socket)?;
        let umem_len = sizes.frame_size as usize * sizes.frame_count as usize;
        // A memfd, not anonymous memory: a new host process taking the socket over maps
        // the same frames from it (`Xsk::adopt`).
        let umem_fd = rustix::fs::memfd_create("pony-xdp-umem", rustix::fs::MemfdFlags::CLOEXEC)
            .map_err(SetupError::Umem)?;
        rustix::fs::ftruncate(&umem_fd, umem_len as u64).map_err(SetupError::Umem)?;
        let umem = map_umem(&umem_fd, umem_len).map_err(SetupError::Umem)?;
        sockopt::set_xdp_umem_reg(
            &fd,
            XdpUmemReg {
                addr: umem.ptr.as_ptr() as u64,
                len: umem_len as u64,
                chunk_size: sizes.frame_size,
                headroom: 0,
                flags: XdpUmemRegFlags::empty(),
                tx_metadata_len: 0,
            },
        )
        .map_err(SetupError::Umem)?;
        let n = sizes.ring_size;
        sockopt::set_xdp_umem_fill_ring_size(&fd, n).map_err(SetupError::Rings)?;
        sockopt::set_xdp_umem_completion_ring_size(&fd, n).map_err(SetupError::Rings)?;
        sockopt::set_xdp_rx_ring_size(&fd, n).map_err(SetupError::Rings)?;
        sockopt::set_xdp_tx_ring_size(&fd, n).map_err(SetupError::Rings)?;
        let half = sizes.frame_count / 2;
        let frame = u64::from(sizes.frame_size);
        let frames = Frames {
            tx_free: (half..sizes.frame_count).map(|i| u64::from(i) * frame).collect(),
            rx_done: (0..half).map(|i| u64::from(i) * frame).collect(),
        };
        let mut xsk = Self::with_rings(fd, umem_fd, umem, sizes, zero_copy, frames)?;
        xsk.refill();
        let mode = if zero_copy {
            SocketAddrXdpFlags::XDP_ZEROCOPY
        } else {
            SocketAddrXdpFlags::XDP_COPY
        };
        let addr = SocketAddrXdp::new(mode | SocketAddrXdpFlags::XDP_USE_NEED_WAKEUP, ifindex, queue);
        rustix::net::bind(&*xsk.fd, &addr).map_err(SetupError::Bind)?;
        Ok(xsk)
    }

    /// The socket of another process, handed over with the UMEM's memfd and where its
    /// frames are (`frames`, checked by the caller against `sizes`): maps the same UMEM
    /// and the socket's rings again; the rings' positions are in the rings themselves.
    pub(crate) fn adopt(
        fd: OwnedFd,
        umem_fd: OwnedFd,
        sizes: XskSizes,
        zero_copy: bool,
        frames: Frames,
    ) -> Result<Self, SetupError> {
        let umem_len = sizes.frame_size as usize * sizes.frame_count as usize;
        let st = rustix::fs::fstat(&umem_fd).map_err(SetupError::Umem)?;
        if st.st_size as u64 != umem_len as u64 {
            return Err(SetupError::Umem(Errno::INVAL));
        }
        let umem = map_umem(&umem_fd, umem_len).map_err(SetupError::Umem)?;
        Self::with_rings(fd, umem_fd, umem, sizes, zero_copy, frames)
    }

    /// Maps the four rings of `fd` (their sizes set already) around the mapped UMEM.
    fn with_rings(
        fd: OwnedFd,
        umem_fd: OwnedFd,
        umem: Mapping,
        sizes: XskSizes,
        zero_copy: bool,
        frames: Frames,
    ) -> Result<Self, SetupError> {
        let n = sizes.ring_size;
        let off = sockopt::xdp_mmap_offsets(&fd).map_err(SetupError::Rings)?;
        let mut maps = Vec::new();
        let fill = map_ring::<u64>(&fd, &off.fr, n, XDP_UMEM_PGOFF_FILL_RING, &mut maps)?;
        let completion = map_ring::<u64>(&fd, &off.cr, n, XDP_UMEM_PGOFF_COMPLETION_RING, &mut maps)?;
        let rx = map_ring::<XdpDesc>(&fd, &off.rx, n, XDP_PGOFF_RX_RING, &mut maps)?;
        let tx = map_ring::<XdpDesc>(&fd, &off.tx, n, XDP_PGOFF_TX_RING, &mut maps)?;
        Ok(Xsk {
            fd: Arc::new(fd),
            fill: Producer::new(fill),
            completion: Consumer::new(completion),
            rx: Consumer::new(rx),
            tx: Producer::new(tx),
            _ring_maps: maps,
            umem,
            umem_fd,
            frame_size: sizes.frame_size,
            ring_size: sizes.ring_size,
            tx_free: frames.tx_free,
            rx_done: frames.rx_done,
            zero_copy,
        })
    }

    /// The UMEM's memfd.
    pub(crate) fn umem_fd(&self) -> BorrowedFd<'_> {
        self.umem_fd.as_fd()
    }

    /// The frames that are ours (not in a ring or the kernel): transmit frames free to
    /// write, receive frames waiting for the fill ring.
    pub(crate) fn frames(&self) -> Frames {
        Frames {
            tx_free: self.tx_free.clone(),
            rx_done: self.rx_done.clone(),
        }
    }

    pub(crate) fn frame_size(&self) -> u32 {
        self.frame_size
    }

    /// Entries per ring (all four are the same size).
    pub(crate) fn ring_size(&self) -> u32 {
        self.ring_size
    }

    /// Bytes of the UMEM.
    pub(crate) fn umem_len(&self) -> usize {
        self.umem.len
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The socket, shared: it is readable when the RX ring has entries.
    pub(crate) fn shared_fd(&self) -> Arc<OwnedFd> {
        self.fd.clone()
    }

    pub(crate) fn is_zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// Gives the frames in `rx_done` back to the kernel through the fill ring, waking it if
    /// it asked for that.
    pub(crate) fn refill(&mut self) {
        if self.rx_done.is_empty() {
            return;
        }
        let n = self.fill.reserve(self.rx_done.len() as u32);
        for i in 0..n {
            let addr = self.rx_done.pop().expect("counted");
            self.fill.write(i, addr);
        }
        self.fill.submit(n);
        if n > 0 && self.fill.needs_wakeup() {
            // A receive-side wakeup: any nonblocking receive call does it.
            let _ = rustix::net::recv(&*self.fd, &mut [0u8; 0][..], rustix::net::RecvFlags::DONTWAIT);
        }
    }

    /// Takes up to `max` received descriptors out of the RX ring into `out`; the frames
    /// they point to are ours until given back with [`Xsk::rx_return`]. Descriptors that
    /// point outside the UMEM are dropped (counted in the return's second element).
    pub(crate) fn rx_take(&mut self, max: u32, out: &mut Vec<XdpDesc>) -> u32 {
        let n = self.rx.peek(max);
        let mut bad = 0;
        for i in 0..n {
            let d = self.rx.read(i);
            if d.addr
                .checked_add(u64::from(d.len))
                .is_some_and(|end| end <= self.umem.len as u64)
            {
                out.push(d);
            } else {
                bad += 1;
            }
        }
        self.rx.release(n);
        bad
    }

    /// The bytes of a received frame (a descriptor from [`Xsk::rx_take`]).
    pub(crate) fn rx_frame(&self, d: &XdpDesc) -> &[u8] {
        // SAFETY: rx_take checked the range against the UMEM, and the frame is ours (the
        // kernel does not write it until it is back in the fill ring).
        unsafe { std::slice::from_raw_parts(self.umem.ptr.as_ptr().add(d.addr as usize), d.len as usize) }
    }

    /// Gives a received frame back (it goes to the fill ring at the next [`Xsk::refill`]).
    pub(crate) fn rx_return(&mut self, d: &XdpDesc) {
        // Aligned mode: the descriptor's address is inside its frame; the frame starts at
        // the multiple of the frame size below it.
        self.rx_done.push(d.addr - d.addr % u64::from(self.frame_size));
    }

    /// Moves completed transmit frames back to `tx_free`.
    pub(crate) fn reclaim(&mut self) {
        let n = self.completion.peek(u32::MAX);
        let frame = u64::from(self.frame_size);
        for i in 0..n {
            let addr = self.completion.read(i);
            if addr < self.umem.len as u64 {
                self.tx_free.push(addr - addr % frame);
            }
        }
        self.completion.release(n);
    }

    /// Writes up to `max` packets into free transmit frames and submits them (one TX ring
    /// submission, one wakeup if the kernel wants one): `write` gets a whole frame and
    /// returns the frame's length, or `None` to stop (that frame stays free). Returns how
    /// many went into the ring; fewer than `max` also when frames or ring slots ran out.
    pub(crate) fn tx_fill(
        &mut self,
        max: u32,
        mut write: impl FnMut(&mut [u8]) -> Option<usize>,
    ) -> io::Result<u32> {
        if (self.tx_free.len() as u32) < max {
            self.reclaim();
        }
        let room = (self.tx_free.len() as u32).min(max);
        let reserved = self.tx.reserve(room);
        let mut n = 0;
        while n < reserved {
            let addr = *self.tx_free.last().expect("reserved at most the free frames");
            // SAFETY: a frame in tx_free is ours alone, inside the UMEM by construction.
            let frame = unsafe {
                std::slice::from_raw_parts_mut(
                    self.umem.ptr.as_ptr().add(addr as usize),
                    self.frame_size as usize,
                )
            };
            let Some(len) = write(frame) else { break };
            self.tx_free.pop();
            self.tx.write(
                n,
                XdpDesc {
                    addr,
                    len: len.min(self.frame_size as usize) as u32,
                    options: XdpDescOptions::empty(),
                },
            );
            n += 1;
        }
        if n > 0 {
            self.tx.submit(n);
            self.kick()?;
        }
        Ok(n)
    }

    /// The transmit wakeup, if the kernel wants one. `EAGAIN`/`EBUSY`/`ENOBUFS` mean the
    /// device queue is busy: the frames stay in the TX ring for the next kick.
    pub(crate) fn kick(&mut self) -> io::Result<()> {
        if !self.tx.needs_wakeup() || self.tx.outstanding() == 0 {
            return Ok(());
        }
        match rustix::net::send(&*self.fd, &[], SendFlags::DONTWAIT) {
            Ok(_) => Ok(()),
            Err(Errno::AGAIN | Errno::BUSY | Errno::NOBUFS | Errno::INTR) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Where the frames that are ours are (see [`Xsk`]): what a hand-over carries besides the
/// descriptors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Frames {
    /// Transmit frames free to write.
    pub(crate) tx_free: Vec<u64>,
    /// Receive frames to give back to the kernel through the fill ring.
    pub(crate) rx_done: Vec<u64>,
}

/// Maps the UMEM's memfd, shared (so two processes see the same frames).
fn map_umem(umem_fd: &OwnedFd, len: usize) -> Result<Mapping, Errno> {
    // SAFETY: a shared mapping of a memfd we checked or sized to `len`.
    let ptr = unsafe {
        mmap(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED | MapFlags::POPULATE,
            umem_fd,
            0,
        )
    }?;
    Ok(Mapping {
        ptr: NonNull::new(ptr.cast()).expect("mmap returned null"),
        len,
    })
}

/// Maps one ring of `n` entries at `pgoff` and describes it.
fn map_ring<T>(
    fd: &OwnedFd,
    off: &XdpRingOffset,
    n: u32,
    pgoff: u64,
    maps: &mut Vec<Mapping>,
) -> Result<RingMem<T>, SetupError> {
    let len = off.desc as usize + n as usize * std::mem::size_of::<T>();
    // SAFETY: a shared mapping of the socket's ring; the kernel sized it for n entries.
    let ptr = unsafe {
        mmap(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED | MapFlags::POPULATE,
            fd,
            pgoff,
        )
    }
    .map_err(SetupError::Rings)?;
    let base = NonNull::new(ptr.cast::<u8>()).expect("mmap returned null");
    maps.push(Mapping { ptr: base, len });
    // Kernels before 5.4 have no flags word; it sits before the descriptors since then.
    let flags = off.flags.ok_or(SetupError::Rings(Errno::NOSYS))?;
    // SAFETY: the offsets are inside the mapping (the kernel's layout).
    let at = |o: u64| unsafe { NonNull::new_unchecked(base.as_ptr().add(o as usize)) };
    Ok(RingMem {
        producer: at(off.producer).cast::<AtomicU32>(),
        consumer: at(off.consumer).cast::<AtomicU32>(),
        flags: at(flags).cast::<AtomicU32>(),
        descs: at(off.desc).cast::<T>(),
        size: n,
    })
}
