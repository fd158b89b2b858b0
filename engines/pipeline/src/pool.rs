//! The packet-buffer pool of one pipeline: fixed-size buffers in one shared-memory region,
//! a lock-free free list, and one ownership state per buffer.
//!
//! ```text
//!   SharedMem: │ buf 0 │ buf 1 │ … │ buf n-1 │      each `buf_size` bytes; a packet starts
//!                                                 `headroom` bytes in (room to prepend headers)
//!   free list: crossbeam ArrayQueue<u32>          any stage's thread allocates and frees
//!   state[i]:  Free ──alloc──▶ Held ──push──▶ Queued ──pop──▶ Held ──free──▶ Free
//! ```
//!
//! A buffer has exactly one owner at a time: the free list, one [`Packet`] (Held), or one
//! descriptor in a queue's ring (Queued). The state word is what makes a descriptor read
//! from a ring trustworthy: popping moves Queued → Held with a compare-and-swap, so a
//! duplicated or stale descriptor is refused ([`DescError::NotQueued`]) instead of giving
//! two stages the same bytes. The region is the host's own: it is never handed to an app or
//! a peer, which is why a [`Packet`] may borrow its bytes (apps' memory is read by copy).
//!
//! The free list is crossbeam's bounded MPMC queue rather than a hand-written one: stages
//! of one pipeline run on different threads and each allocates (the first and last stage)
//! or frees (whoever drops or delivers a packet).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;
use snap_ipc::{SharedMem, ShmError};

use crate::desc::{DescError, DescRepr};
use crate::packet::{Direction, Meta, Packet, Peer};

const FREE: u8 = 0;
const HELD: u8 = 1;
const QUEUED: u8 = 2;

/// Shape of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Number of buffers: every packet in flight anywhere in the pipeline holds one.
    pub buffers: u32,
    /// Bytes per buffer, headroom included.
    pub buf_size: u32,
    /// Bytes left free before a new packet, for stages that prepend a header.
    pub headroom: u32,
}

impl PoolConfig {
    /// A pool for packets of up to `mtu` bytes with `headroom` bytes in front.
    pub fn for_mtu(buffers: u32, mtu: u32, headroom: u32) -> Self {
        Self {
            buffers,
            buf_size: (mtu + headroom).next_multiple_of(64),
            headroom,
        }
    }
}

/// Why a pool could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Zero buffers, a headroom that leaves no room, or a region too large.
    #[error("pool config: {0}")]
    Config(String),
    /// The region could not be made.
    #[error("pool memory: {0}")]
    Shm(#[from] ShmError),
}

/// Counters of a pool (cumulative, any thread).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PoolStats {
    /// Buffers in the pool.
    pub buffers: u32,
    /// Buffers on the free list now.
    pub free: u32,
}

/// See the module documentation. Shared by every stage of one pipeline (`Arc`).
pub struct Pool {
    mem: SharedMem,
    cfg: PoolConfig,
    free: ArrayQueue<u32>,
    state: Box<[AtomicU8]>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("cfg", &self.cfg)
            .field("free", &self.free.len())
            .finish()
    }
}

impl Pool {
    /// A pool with every buffer free.
    pub fn new(name: &str, cfg: PoolConfig) -> Result<Arc<Self>, PoolError> {
        if cfg.buffers == 0 || cfg.headroom >= cfg.buf_size {
            return Err(PoolError::Config(format!(
                "{} buffers of {} bytes with {} bytes of headroom",
                cfg.buffers, cfg.buf_size, cfg.headroom
            )));
        }
        let len = (cfg.buffers as usize)
            .checked_mul(cfg.buf_size as usize)
            .ok_or_else(|| PoolError::Config("pool size overflows".into()))?;
        let mem = SharedMem::create(name, len)?;
        let free = ArrayQueue::new(cfg.buffers as usize);
        for i in 0..cfg.buffers {
            // Cannot fail: the queue holds exactly `buffers` entries.
            let _ = free.push(i);
        }
        let state = (0..cfg.buffers).map(|_| AtomicU8::new(FREE)).collect();
        Ok(Arc::new(Self {
            mem,
            cfg,
            free,
            state,
        }))
    }

    /// The pool's shape.
    pub fn config(&self) -> PoolConfig {
        self.cfg
    }

    /// Largest packet a buffer holds after the headroom.
    pub fn mtu(&self) -> usize {
        (self.cfg.buf_size - self.cfg.headroom) as usize
    }

    /// Counters.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            buffers: self.cfg.buffers,
            free: self.free.len() as u32,
        }
    }

    /// A free buffer as an empty packet travelling in `dir`, its data starting after the
    /// headroom; `None` when every buffer is in use (the caller backs off: that is
    /// backpressure too).
    pub fn alloc(self: &Arc<Self>, dir: Direction) -> Option<Packet> {
        let index = self.free.pop()?;
        let was = self.state[index as usize].swap(HELD, Ordering::Acquire);
        debug_assert_eq!(was, FREE, "buffer {index} on the free list was not free");
        Some(Packet::new(
            self.clone(),
            DescRepr {
                index,
                offset: self.cfg.headroom,
                len: 0,
                peer: Peer::None,
                meta: Meta::default(),
            },
            dir,
        ))
    }

    /// Returns a held buffer to the free list (from [`Packet`]'s drop).
    pub(crate) fn free(&self, index: u32) {
        self.state[index as usize].store(FREE, Ordering::Release);
        // Cannot fail: a buffer is on the free list at most once (its state says Held).
        let _ = self.free.push(index);
    }

    /// Marks a held buffer as travelling in a queue's ring (the packet turned into a
    /// descriptor).
    pub(crate) fn mark_queued(&self, index: u32) {
        self.state[index as usize].store(QUEUED, Ordering::Release);
    }

    /// Undoes [`Pool::mark_queued`] when the ring refused the descriptor.
    pub(crate) fn unmark_queued(&self, index: u32) {
        self.state[index as usize].store(HELD, Ordering::Relaxed);
    }

    /// Turns a descriptor read from a ring back into a packet, after checking that it
    /// names a buffer of this pool, bytes inside it, and a buffer that is in flight.
    pub(crate) fn claim(self: &Arc<Self>, d: DescRepr, dir: Direction) -> Result<Packet, DescError> {
        if d.index >= self.cfg.buffers {
            return Err(DescError::Index {
                index: d.index,
                count: self.cfg.buffers,
            });
        }
        let end = d.offset.checked_add(d.len);
        if end.is_none_or(|end| end > self.cfg.buf_size) {
            return Err(DescError::Bounds {
                offset: d.offset,
                len: d.len,
                size: self.cfg.buf_size,
            });
        }
        self.state[d.index as usize]
            .compare_exchange(QUEUED, HELD, Ordering::Acquire, Ordering::Relaxed)
            .map_err(|_| DescError::NotQueued(d.index))?;
        Ok(Packet::new(self.clone(), d, dir))
    }

    /// Start of buffer `index`.
    pub(crate) fn buf_ptr(&self, index: u32) -> *mut u8 {
        debug_assert!(index < self.cfg.buffers);
        // SAFETY: index < buffers (checked by alloc/claim, the only makers of packets), so
        // the offset stays inside the region of buffers * buf_size bytes.
        unsafe { self.mem.as_ptr().add(index as usize * self.cfg.buf_size as usize) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: u32) -> Arc<Pool> {
        Pool::new("pool-test", PoolConfig::for_mtu(n, 1500, 64)).unwrap()
    }

    #[test]
    fn alloc_until_empty_then_free_makes_room() {
        let p = pool(3);
        let a: Vec<Packet> = (0..3).map(|_| p.alloc(Direction::Tx).unwrap()).collect();
        assert!(p.alloc(Direction::Tx).is_none());
        assert_eq!(p.stats().free, 0);
        drop(a);
        assert_eq!(p.stats().free, 3);
        assert!(p.alloc(Direction::Rx).is_some());
    }

    #[test]
    fn claim_checks_index_bounds_and_state() {
        let p = pool(2);
        let d = |index, offset, len| DescRepr {
            index,
            offset,
            len,
            peer: Peer::None,
            meta: Meta::default(),
        };
        assert!(matches!(
            p.claim(d(2, 0, 0), Direction::Tx),
            Err(DescError::Index { .. })
        ));
        let size = p.config().buf_size;
        assert!(matches!(
            p.claim(d(0, size - 10, 11), Direction::Tx),
            Err(DescError::Bounds { .. })
        ));
        assert!(matches!(
            p.claim(d(0, u32::MAX, 2), Direction::Tx),
            Err(DescError::Bounds { .. })
        ));
        // A free buffer is not in flight: a forged descriptor for it is refused.
        assert_eq!(
            p.claim(d(0, 0, 10), Direction::Tx).unwrap_err(),
            DescError::NotQueued(0)
        );
        // A queued one is claimed once, never twice.
        let pkt = p.alloc(Direction::Tx).unwrap();
        let i = pkt.index();
        let repr = pkt.into_desc();
        assert!(p.claim(repr, Direction::Tx).is_ok());
        assert_eq!(p.claim(repr, Direction::Tx).unwrap_err(), DescError::NotQueued(i));
    }
}
