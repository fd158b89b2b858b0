//! The buffer pool: fixed-size, reference-counted buffers in one shared-memory region that
//! an app and its Pony engine both map, so a payload is written once by the app and read in
//! place by the engine (and the reverse for received messages).
//!
//! ```text
//!  app process                      pool (memfd)                       engine (snap-host)
//!  alloc_chain / write_chain ─▶ ┌────────┬───────────┬──────────────┐ ◀─ snapshot(head)
//!  Send{head,len} on cmd ring   │ header │ BufHeader │ buf buf buf …│    chain_segments:
//!  release after Received  ◀──  │ free ▲ │ ×count    │ ×count       │    &[u8] in place
//!                               └──────┼─┴───────────┴──────────────┘
//!                                Treiber stack of free indices (tagged head)
//! ```
//!
//! A message larger than one buffer is a *chain*: buffers linked by their `next` field,
//! each holding `len` bytes. An 8 MiB message takes 4096 buffers of the default 2 KiB; the
//! default pool (8192 × 2 KiB = 16 MiB) holds two.
//!
//! Ownership is passed, not shared: a reference (one count of a buffer's refcount) is held
//! by exactly one side at a time, and moves with the command or completion that names the
//! chain. `retain`/`release` exist for holders that fan a buffer out (e.g. a retransmission
//! queue keeping a segment while the app also has it).
//!
//! Trust: the peer can write anything anywhere in the region. Nothing read from it is used
//! unchecked: indices are bounds-checked, segment lengths capped at the buffer size, chain
//! walks stop after `count` steps (so a cycle is an error, not a hang), and a refcount that
//! is already zero is refused rather than wrapped. The engine additionally takes a
//! [`ChainSnapshot`] when it accepts a command, so a chain relinked by the app afterwards
//! cannot redirect the engine's reads or frees. The engine reads buffer bytes only by copy
//! (`Pool::copy_in`, built on `snap_ipc::peer`, whose module documentation holds the
//! safety argument); the app, which trusts its host, may read what the engine wrote in
//! place ([`ChainSnapshot::chain_segments`]). Headers (`BufHeader`, the free-list head) are
//! all atomics, read with atomic loads and validated before use.
//!
//! `layout` is the region format, `stack` the free list (loom-checked), `chain` the chain
//! walks and snapshots, `held` what the engine holds for the zero-copy data path.

mod chain;
#[cfg(not(loom))]
mod fuzz;
mod held;
mod layout;
mod stack;
#[cfg(all(test, not(loom)))]
mod tests;

use core::mem::offset_of;
use core::sync::atomic::Ordering::{self, Relaxed};
use core::sync::atomic::{AtomicU32, AtomicU64};
use std::os::fd::AsFd;

pub use chain::{ChainSegments, ChainSnapshot};
#[cfg(not(loom))]
pub use fuzz::{fuzz_engine_ops, PoolFuzzOutcome};
pub use held::{pool_key, Holds, PoolPiece, RecvChain};
pub use layout::NONE;
use layout::{BufHeader, Geometry, Header, Line32, Line64, Meta, HEADERS_OFFSET, MAGIC, VERSION};
use snap_ipc::{SharedMem, ShmError};

/// Why a pool operation failed. Every corruption of shared state by the peer lands here,
/// never in a panic.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Count or buffer size unusable (zero, too large, buffer size not a multiple of 64).
    #[error("bad pool shape: {count} buffers of {buf_size} bytes")]
    BadShape {
        /// Buffer count.
        count: u32,
        /// Buffer size.
        buf_size: u32,
    },
    /// The region is smaller than the pool it claims to hold.
    #[error("region of {len} bytes is too small for the pool ({needed} bytes needed)")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        len: usize,
    },
    /// Not a pool.
    #[error("not a buffer pool: bad magic {0:#018x}")]
    BadMagic(u64),
    /// Written by an incompatible version of this code.
    #[error("pool layout version {0} is not supported")]
    UnsupportedVersion(u32),
    /// The region could not be created.
    #[error("pool memory: {0}")]
    Shm(#[from] ShmError),
    /// Not enough free buffers right now.
    #[error("pool exhausted: {needed} buffers needed")]
    Exhausted {
        /// Buffers the request needed.
        needed: u32,
    },
    /// The message can never fit in this pool.
    #[error("message of {len} bytes exceeds the pool's {max} bytes")]
    TooLarge {
        /// Requested length.
        len: usize,
        /// Pool capacity in bytes.
        max: usize,
    },
    /// A buffer index (from a command or from shared memory) is out of range.
    #[error("buffer index {0} out of range")]
    OutOfRange(u32),
    /// A chain has more links than the pool has buffers: it loops.
    #[error("chain starting at {0} does not end (cycle)")]
    Cycle(u32),
    /// A segment length exceeds the buffer size.
    #[error("buffer {idx} claims {len} bytes")]
    BadSegmentLen {
        /// The buffer.
        idx: u32,
        /// The length found.
        len: u32,
    },
    /// The chain's bytes do not add up to the length the command claims.
    #[error("chain holds {found} bytes, {expected} expected")]
    LengthMismatch {
        /// Length claimed.
        expected: u64,
        /// Sum of segment lengths.
        found: u64,
    },
    /// A buffer with refcount 0 was released, retained or named in a command.
    #[error("buffer {0} is not allocated")]
    NotAllocated(u32),
    /// A refcount would overflow.
    #[error("buffer {0} refcount overflow")]
    RefcountOverflow(u32),
    /// The free list names a buffer that does not exist, or its head kept changing under
    /// us beyond any honest contention (`stack::MAX_CAS_ATTEMPTS`).
    #[error("free list is corrupt")]
    CorruptFreeList,
    /// A buffer's refcount kept changing under us beyond any honest contention: the peer
    /// is rewriting it in a loop.
    #[error("buffer {0} refcount keeps changing")]
    Contended(u32),
    /// Data does not fit in the chain it is written into.
    #[error("{len} bytes do not fit in a chain of {capacity} bytes")]
    ChainTooSmall {
        /// Bytes to write.
        len: usize,
        /// Chain capacity.
        capacity: usize,
    },
}

/// Number and size of a pool's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolShape {
    /// Buffers in the pool.
    pub buffers: u32,
    /// Bytes per buffer (a multiple of 64, at most 1 MiB).
    pub buf_size: u32,
}

impl Default for PoolShape {
    /// 8192 buffers of 2 KiB: 16 MiB, room for two 8 MiB messages in flight.
    fn default() -> Self {
        Self {
            buffers: 8192,
            buf_size: 2048,
        }
    }
}

impl PoolShape {
    /// Bytes of shared memory this shape needs (headers included).
    pub fn required_len(&self) -> Result<usize, PoolError> {
        Ok(layout::geometry(self.buffers, self.buf_size)?.total_len)
    }
}

/// Which side of the session a [`Pool`] handle belongs to; stamped into buffers it
/// allocates. Informational: the peer can overwrite it, so no decision trusts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Owner {
    /// The application.
    App = 1,
    /// The Pony engine.
    Engine = 2,
}

/// Index of a buffer in its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufIdx(pub u32);

/// A chain this side allocated: its head, total bytes and number of buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain {
    /// First buffer.
    pub head: BufIdx,
    /// Total payload bytes.
    pub len: u32,
    /// Buffers in the chain.
    pub segments: u32,
}

/// Counters of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Buffers in the pool.
    pub buffers: u32,
    /// Bytes per buffer.
    pub buf_size: u32,
    /// Free buffers according to the shared counter (exact when nobody is mid-operation;
    /// the peer can skew it, so it is clamped to `buffers`).
    pub free: u32,
}

/// A handle to a pool in shared memory. `Sync`: any number of threads may allocate and
/// free concurrently (the free list is lock-free).
#[derive(Debug)]
pub struct Pool {
    mem: SharedMem,
    geo: Geometry,
    owner: Owner,
}

impl Pool {
    /// Makes a region for `shape`, lays the pool out in it with every buffer free. The
    /// handle is the engine's (the host makes the pool and hands the app its descriptor).
    pub fn create(shape: PoolShape) -> Result<Self, PoolError> {
        let geo = layout::geometry(shape.buffers, shape.buf_size)?;
        let mem = SharedMem::create("pony-pool", geo.total_len)?;
        let header = Header {
            meta: Meta {
                magic: MAGIC,
                version: VERSION,
                buf_size: geo.buf_size,
                count: geo.count,
                _reserved: 0,
                data_offset: geo.data_offset as u64,
            },
            free_head: Line64 {
                value: stack::pack(0, NONE).into(),
            },
            free_count: Line32 { value: 0.into() },
        };
        // SAFETY: the fresh region is total_len >= size_of::<Header>() bytes, page-aligned,
        // and not shared with anyone yet.
        unsafe { mem.as_ptr().cast::<Header>().write(header) };
        let pool = Self {
            mem,
            geo,
            owner: Owner::Engine,
        };
        // Push in reverse so that the first allocations come out in index order (nicer
        // to debug, and chains of a fresh pool are contiguous).
        for idx in (0..geo.count).rev() {
            pool.free(idx);
        }
        Ok(pool)
    }

    /// Validates the pool in `mem` (made by [`Pool::create`], typically in another process)
    /// and attaches to it. The handle is the app's; see [`Pool::with_owner`].
    pub fn attach(mem: SharedMem) -> Result<Self, PoolError> {
        // SAFETY: the mapping is readable for `len` bytes and page-aligned.
        let geo = unsafe { layout::validate(mem.as_ptr(), mem.len())? };
        Ok(Self {
            mem,
            geo,
            owner: Owner::App,
        })
    }

    /// The same handle stamping `owner` into the buffers it allocates.
    pub fn with_owner(mut self, owner: Owner) -> Self {
        self.owner = owner;
        self
    }

    /// The region, e.g. to hand its descriptor to the other process.
    pub fn shared_mem(&self) -> &SharedMem {
        &self.mem
    }

    /// A second handle on the same region (same process), for tests and for the two ends
    /// of an in-process session.
    pub fn try_clone(&self, owner: Owner) -> Result<Self, PoolError> {
        let fd = self
            .mem
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| PoolError::Shm(ShmError::Map(e)))?;
        Ok(Self::attach(SharedMem::from_fd(fd)?)?.with_owner(owner))
    }

    /// Number and size of buffers.
    pub fn shape(&self) -> PoolShape {
        PoolShape {
            buffers: self.geo.count,
            buf_size: self.geo.buf_size,
        }
    }

    /// Bytes per buffer.
    pub fn buf_size(&self) -> u32 {
        self.geo.buf_size
    }

    /// Largest message a chain can carry if the whole pool is free.
    pub fn max_message_len(&self) -> usize {
        self.geo.count as usize * self.geo.buf_size as usize
    }

    /// The free-list head. Only the header's atomics are ever borrowed (a `&AtomicU64`
    /// over peer-writable memory is sound); its plain `Meta` fields are read once, by
    /// value, at attach (`snap_ipc::peer`).
    fn free_head(&self) -> &AtomicU64 {
        // SAFETY: create/attach checked the region holds a header; the field is an aligned
        // atomic inside it, and the mapping lives as long as `self`.
        unsafe {
            &*self
                .mem
                .as_ptr()
                .add(offset_of!(Header, free_head))
                .cast::<AtomicU64>()
        }
    }

    /// The free-buffer count (advisory: clamped wherever it is reported).
    fn free_count(&self) -> &AtomicU32 {
        // SAFETY: as in `free_head`.
        unsafe {
            &*self
                .mem
                .as_ptr()
                .add(offset_of!(Header, free_count))
                .cast::<AtomicU32>()
        }
    }

    /// The header of buffer `idx`, or an error if it does not exist.
    pub(crate) fn buf(&self, idx: u32) -> Result<&BufHeader, PoolError> {
        if idx >= self.geo.count {
            return Err(PoolError::OutOfRange(idx));
        }
        // SAFETY: idx < count, and validation proved count headers follow HEADERS_OFFSET
        // inside the region; BufHeader is all atomics, so shared access is sound.
        Ok(unsafe {
            &*self
                .mem
                .as_ptr()
                .add(HEADERS_OFFSET)
                .cast::<BufHeader>()
                .add(idx as usize)
        })
    }

    /// Start of buffer `idx`'s payload. Caller checked `idx < count`.
    pub(crate) fn data_ptr(&self, idx: u32) -> *mut u8 {
        debug_assert!(idx < self.geo.count);
        // SAFETY: validation proved count * buf_size bytes follow data_offset in the region.
        unsafe {
            self.mem
                .as_ptr()
                .add(self.geo.data_offset + idx as usize * self.geo.buf_size as usize)
        }
    }

    /// Copies `dst.len()` bytes at `offset` of buffer `idx` into `dst`, checking that they
    /// lie inside the buffer. The peer may be writing them: this is a copy-in
    /// (`snap_ipc::peer`), never a borrow.
    pub(crate) fn copy_in(&self, idx: u32, offset: usize, dst: &mut [u8]) -> Result<(), PoolError> {
        if idx >= self.geo.count {
            return Err(PoolError::OutOfRange(idx));
        }
        let fits = offset
            .checked_add(dst.len())
            .is_some_and(|end| end <= self.geo.buf_size as usize);
        if !fits {
            return Err(PoolError::BadSegmentLen {
                idx,
                len: offset.saturating_add(dst.len()).min(u32::MAX as usize) as u32,
            });
        }
        // SAFETY: idx < count and offset + len <= buf_size: inside buffer idx of the live
        // mapping; see snap_ipc::peer for why a concurrent writer is harmless.
        unsafe { snap_ipc::peer::copy_in(dst, self.data_ptr(idx).add(offset)) };
        Ok(())
    }

    /// Takes one buffer off the free list: refcount 1, empty, unlinked. `None` when the
    /// pool is exhausted (or its free list is corrupt; see [`Pool::try_alloc`]).
    pub fn alloc(&self) -> Option<BufIdx> {
        self.try_alloc().ok().flatten()
    }

    /// Like [`Pool::alloc`] but tells exhaustion (`Ok(None)`) from corruption.
    pub fn try_alloc(&self) -> Result<Option<BufIdx>, PoolError> {
        let Some(idx) = stack::pop(self).map_err(|_| PoolError::CorruptFreeList)? else {
            return Ok(None);
        };
        self.free_count().fetch_sub(1, Relaxed);
        let b = self.buf(idx)?;
        b.len.store(0, Relaxed);
        b.next.store(NONE, Relaxed);
        b.owner.store(self.owner as u32, Relaxed);
        b.generation.fetch_add(1, Relaxed);
        b.refcount.store(1, Relaxed);
        Ok(Some(BufIdx(idx)))
    }

    /// Puts `idx` (< count, refcount already 0) back on the free list.
    fn free(&self, idx: u32) {
        if let Ok(b) = self.buf(idx) {
            b.owner.store(0, Relaxed);
        }
        if stack::push(self, idx).is_err() {
            // Only a peer hammering the head gets here; the buffer is off the list until
            // `rebuild_after_peer_death` (the peer's own loss, not ours).
            log::warn!("pool: free list head contended; buffer {idx} not freed");
            return;
        }
        self.free_count().fetch_add(1, Relaxed);
    }

    /// Adds a reference to buffer `idx`.
    pub fn retain(&self, idx: BufIdx) -> Result<(), PoolError> {
        let rc = &self.buf(idx.0)?.refcount;
        let mut cur = rc.load(Relaxed);
        for _ in 0..stack::MAX_CAS_ATTEMPTS {
            let new = match cur {
                0 => return Err(PoolError::NotAllocated(idx.0)),
                u32::MAX => return Err(PoolError::RefcountOverflow(idx.0)),
                n => n + 1,
            };
            match rc.compare_exchange_weak(cur, new, Relaxed, Relaxed) {
                Ok(_) => return Ok(()),
                Err(now) => cur = now,
            }
        }
        Err(PoolError::Contended(idx.0))
    }

    /// Drops a reference to buffer `idx`; frees it when it was the last. Returns whether
    /// it was freed. A buffer that is already free is an error, not a wrap to 2^32 - 1.
    pub fn release(&self, idx: BufIdx) -> Result<bool, PoolError> {
        let rc = &self.buf(idx.0)?.refcount;
        let mut cur = rc.load(Relaxed);
        for _ in 0..stack::MAX_CAS_ATTEMPTS {
            if cur == 0 {
                return Err(PoolError::NotAllocated(idx.0));
            }
            // AcqRel: our last reads of the buffer happen before whoever frees it reuses it.
            match rc.compare_exchange_weak(cur, cur - 1, Ordering::AcqRel, Relaxed) {
                Ok(1) => {
                    self.free(idx.0);
                    return Ok(true);
                }
                Ok(_) => return Ok(false),
                Err(now) => cur = now,
            }
        }
        Err(PoolError::Contended(idx.0))
    }

    /// Current refcount of a buffer (0 = free), for tests and debugging.
    pub fn refcount(&self, idx: BufIdx) -> Result<u32, PoolError> {
        Ok(self.buf(idx.0)?.refcount.load(Relaxed))
    }

    /// Counters.
    pub fn stats(&self) -> PoolStats {
        let free = self.free_count().load(Relaxed);
        PoolStats {
            buffers: self.geo.count,
            buf_size: self.geo.buf_size,
            free: free.min(self.geo.count),
        }
    }

    /// Counts the free list by walking it (at most `count` steps). Exact only while no one
    /// allocates or frees; meant for tests and post-mortems.
    pub fn count_free(&self) -> Result<u32, PoolError> {
        let mut idx = (self.free_head().load(Ordering::Acquire)) as u32;
        let mut n = 0u32;
        while idx != NONE {
            if n == self.geo.count {
                return Err(PoolError::CorruptFreeList);
            }
            idx = self
                .buf(idx)
                .map_err(|_| PoolError::CorruptFreeList)?
                .free_next
                .load(Relaxed);
            n += 1;
        }
        Ok(n)
    }

    /// Rebuilds the free list after the peer died: every buffer for which `held` is false
    /// becomes free (refcount 0), every held one keeps exactly one reference (the
    /// survivor's). Ignores whatever the dead peer left in the free list and counters, so
    /// a peer that corrupted them before dying still leaks nothing.
    ///
    /// Only sound when no other process uses the pool any more, and no other thread of
    /// this one is allocating or freeing.
    pub fn rebuild_after_peer_death(&self, held: impl Fn(u32) -> bool) {
        let tag = (self.free_head().load(Relaxed) >> 32) as u32;
        self.free_head()
            .store(stack::pack(tag.wrapping_add(1), NONE), Relaxed);
        self.free_count().store(0, Relaxed);
        for idx in (0..self.geo.count).rev() {
            let Ok(b) = self.buf(idx) else { continue };
            if held(idx) {
                b.refcount.store(1, Relaxed);
            } else {
                b.refcount.store(0, Relaxed);
                b.next.store(NONE, Relaxed);
                self.free(idx);
            }
        }
    }
}

impl stack::StackMem for Pool {
    fn count(&self) -> u32 {
        self.geo.count
    }
    fn load_head(&self, order: Ordering) -> u64 {
        self.free_head().load(order)
    }
    fn cas_head(&self, current: u64, new: u64) -> Result<u64, u64> {
        self.free_head()
            .compare_exchange(current, new, stack::CAS_SUCCESS, stack::CAS_FAILURE)
    }
    fn load_link(&self, idx: u32) -> u32 {
        self.buf(idx).map_or(NONE, |b| b.free_next.load(Relaxed))
    }
    fn store_link(&self, idx: u32, next: u32) {
        if let Ok(b) = self.buf(idx) {
            b.free_next.store(next, Relaxed);
        }
    }
}
