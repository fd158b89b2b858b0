//! Chains: messages longer than a buffer, as buffers linked through their `next` field.
//!
//! Two ways to look at a chain. The *live* walk ([`Pool::read_chain`],
//! [`Pool::chain_segments`], [`Pool::release_chain`]) follows links in shared memory as
//! it goes; it is what the chain's holder uses on chains it built itself. Every step is
//! checked (index in range, segment length ≤ buffer size) and the walk gives up after
//! `count` steps, so a peer that rewired the links gets an error, not a hang or a panic.
//!
//! A [`ChainSnapshot`] is what the engine takes when it accepts a command naming a chain:
//! one validated walk, recorded as a list of (buffer, length). From then on the engine
//! reads, writes and frees through the snapshot only, so the app cannot redirect it by
//! relinking the chain after posting. The engine copies a snapshot's bytes out
//! ([`ChainSnapshot::read_into`], or pieces that copy themselves into packets,
//! `held.rs`); only the app reads a snapshot in place ([`ChainSnapshot::chain_segments`]).

use core::ptr;
use core::sync::atomic::Ordering::Relaxed;

use super::{BufIdx, Chain, Pool, PoolError, NONE};

impl Pool {
    /// Allocates a chain with room for `len` bytes (at least one buffer, so an empty
    /// message still has a head). Segment lengths are preset: full buffers, then the rest.
    /// On exhaustion nothing stays allocated.
    pub fn alloc_chain(&self, len: usize) -> Result<Chain, PoolError> {
        let bs = self.buf_size() as usize;
        if len > self.max_message_len() || len > u32::MAX as usize {
            return Err(PoolError::TooLarge {
                len,
                max: self.max_message_len().min(u32::MAX as usize),
            });
        }
        let segments = len.div_ceil(bs).max(1) as u32;
        // Built back to front so each new buffer links to the previous head.
        let mut head = NONE;
        let mut remaining = len;
        for i in (0..segments).rev() {
            let Some(idx) = self.try_alloc()? else {
                if head != NONE {
                    self.release_chain(BufIdx(head))?;
                }
                return Err(PoolError::Exhausted { needed: segments });
            };
            let seg_len = if i + 1 == segments {
                len - (segments as usize - 1) * bs
            } else {
                bs
            };
            remaining -= seg_len;
            let b = self.buf(idx.0)?;
            b.len.store(seg_len as u32, Relaxed);
            b.next.store(head, Relaxed);
            head = idx.0;
        }
        debug_assert_eq!(remaining, 0);
        Ok(Chain {
            head: BufIdx(head),
            len: len as u32,
            segments,
        })
    }

    /// Allocates a chain and copies `data` into it: the one copy of a payload on the send
    /// path.
    pub fn write_chain(&self, data: &[u8]) -> Result<Chain, PoolError> {
        let chain = self.alloc_chain(data.len())?;
        let mut idx = chain.head.0;
        for piece in data.chunks(self.buf_size() as usize) {
            // SAFETY: we just allocated idx (in range), nobody else holds it, and a piece
            // is at most buf_size bytes.
            unsafe { ptr::copy_nonoverlapping(piece.as_ptr(), self.data_ptr(idx), piece.len()) };
            idx = self.buf(idx)?.next.load(Relaxed);
        }
        Ok(chain)
    }

    /// Walks the chain at `head` and appends its bytes to `out` (copied in); returns how
    /// many.
    pub fn read_chain(&self, head: BufIdx, out: &mut Vec<u8>) -> Result<usize, PoolError> {
        let start = out.len();
        for seg in self.chain_segments(head) {
            let (idx, len) = seg?;
            let at = out.len();
            out.resize(at + len as usize, 0);
            self.copy_in(idx, 0, &mut out[at..])?;
        }
        Ok(out.len() - start)
    }

    /// The segments `(buffer, length)` of the chain at `head`, following live links. Yields
    /// an error (then stops) on an out-of-range link, a bad length or more than `count`
    /// segments.
    pub fn chain_segments(&self, head: BufIdx) -> ChainSegments<'_> {
        ChainSegments {
            pool: self,
            head: head.0,
            next: head.0,
            steps: 0,
        }
    }

    /// Adds a reference to every buffer of the chain.
    pub fn retain_chain(&self, head: BufIdx) -> Result<(), PoolError> {
        self.walk(head.0, |idx| self.retain(BufIdx(idx)))
    }

    /// Drops a reference to every buffer of the chain; returns how many were freed. Each
    /// link is read before its buffer is released (once free, it may be reused at once).
    pub fn release_chain(&self, head: BufIdx) -> Result<u32, PoolError> {
        let mut freed = 0;
        self.walk(head.0, |idx| {
            freed += u32::from(self.release(BufIdx(idx))?);
            Ok(())
        })?;
        Ok(freed)
    }

    /// Calls `f` on each buffer of a live chain, reading the link before the call.
    fn walk(&self, head: u32, mut f: impl FnMut(u32) -> Result<(), PoolError>) -> Result<(), PoolError> {
        let mut idx = head;
        let mut steps = 0u32;
        loop {
            if steps == self.shape().buffers {
                return Err(PoolError::Cycle(head));
            }
            let next = self.buf(idx)?.next.load(Relaxed);
            f(idx)?;
            steps += 1;
            if next == NONE {
                return Ok(());
            }
            idx = next;
        }
    }

    /// Validates the chain at `head` as the engine accepts it: every buffer in range and
    /// allocated, lengths ≤ buffer size, no cycle, and (if given) `expected_len` bytes in
    /// total. The result is the only view of the chain the engine uses afterwards.
    pub fn snapshot(&self, head: BufIdx, expected_len: Option<u64>) -> Result<ChainSnapshot, PoolError> {
        let mut segs = Vec::new();
        let mut total = 0u64;
        self.walk(head.0, |idx| {
            let b = self.buf(idx)?;
            if b.refcount.load(Relaxed) == 0 {
                return Err(PoolError::NotAllocated(idx));
            }
            let len = b.len.load(Relaxed);
            if len > self.buf_size() {
                return Err(PoolError::BadSegmentLen { idx, len });
            }
            total += u64::from(len);
            segs.push((idx, len));
            Ok(())
        })?;
        if let Some(expected) = expected_len {
            if expected != total {
                return Err(PoolError::LengthMismatch {
                    expected,
                    found: total,
                });
            }
        }
        Ok(ChainSnapshot { segs, len: total })
    }
}

/// Iterator over a live chain's segments; see [`Pool::chain_segments`].
#[derive(Debug)]
pub struct ChainSegments<'a> {
    pool: &'a Pool,
    head: u32,
    next: u32,
    steps: u32,
}

impl Iterator for ChainSegments<'_> {
    type Item = Result<(u32, u32), PoolError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next == NONE {
            return None;
        }
        let idx = self.next;
        // Whatever happens below, this iterator yields at most one more item on error.
        self.next = NONE;
        if self.steps == self.pool.shape().buffers {
            return Some(Err(PoolError::Cycle(self.head)));
        }
        let b = match self.pool.buf(idx) {
            Ok(b) => b,
            Err(e) => return Some(Err(e)),
        };
        let len = b.len.load(Relaxed);
        if len > self.pool.buf_size() {
            return Some(Err(PoolError::BadSegmentLen { idx, len }));
        }
        self.steps += 1;
        self.next = b.next.load(Relaxed);
        Some(Ok((idx, len)))
    }
}

/// A chain as the engine accepted it: validated (buffer, length) pairs. Indices are in
/// range and lengths at most the buffer size for the pool it was taken from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChainSnapshot {
    pub(super) segs: Vec<(u32, u32)>,
    len: u64,
}

impl ChainSnapshot {
    /// First buffer.
    pub fn head(&self) -> BufIdx {
        BufIdx(self.segs[0].0)
    }

    /// Total bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the chain holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The buffers, in order.
    pub fn buffers(&self) -> impl Iterator<Item = u32> + '_ {
        self.segs.iter().map(|&(idx, _)| idx)
    }

    /// Bytes the chain can hold (full buffers).
    pub fn capacity(&self, pool: &Pool) -> usize {
        self.segs.len() * pool.buf_size() as usize
    }

    /// The payload in place, zero-copy: **for the app only**, reading a message its host
    /// wrote (the app trusts its host, and the engine does not write a buffer it has handed
    /// over). The engine, which must not trust the app, never calls this: it copies with
    /// [`ChainSnapshot::read_into`] or [`ChainSnapshot::into_pieces`]. `pool` must be the
    /// pool the snapshot was taken from (any handle on it); with another pool the indices
    /// are re-checked and segments out of its range are skipped rather than read out of
    /// bounds.
    pub fn chain_segments<'p>(&'p self, pool: &'p Pool) -> impl Iterator<Item = &'p [u8]> + 'p {
        self.segs.iter().filter_map(move |&(idx, len)| {
            if idx >= pool.shape().buffers || len > pool.buf_size() {
                return None;
            }
            // SAFETY: bounds re-checked just above. Sharing: by the ownership protocol the
            // engine has handed these buffers to the app and writes them no more, and the
            // app trusts the engine, so nothing changes them while the app borrows them.
            Some(unsafe { core::slice::from_raw_parts(pool.data_ptr(idx), len as usize) })
        })
    }

    /// Appends the payload to `out`, copied in (`snap_ipc::peer`): how the engine reads a
    /// chain the app may still be writing. Segments outside `pool` are skipped, as in
    /// [`ChainSnapshot::chain_segments`].
    pub fn read_into(&self, pool: &Pool, out: &mut Vec<u8>) {
        for &(idx, len) in &self.segs {
            let at = out.len();
            out.resize(at + len as usize, 0);
            if pool.copy_in(idx, 0, &mut out[at..]).is_err() {
                out.truncate(at);
            }
        }
    }

    /// Overwrites the chain's contents with `data` (e.g. the engine filling an app's
    /// receive buffer for a Read), setting every segment's length in shared memory and
    /// in the snapshot. Unused trailing buffers are left with length 0.
    pub fn fill(&mut self, pool: &Pool, data: &[u8]) -> Result<(), PoolError> {
        self.write_at(pool, 0, data)?;
        self.set_len(pool, data.len())
    }

    /// Copies `data` to byte `offset` of the chain's capacity (full buffers, whatever the
    /// segment lengths say now); see [`Self::set_len`] to publish the result.
    pub fn write_at(&mut self, pool: &Pool, offset: usize, data: &[u8]) -> Result<(), PoolError> {
        let capacity = self.capacity(pool);
        let end = offset.saturating_add(data.len());
        if end > capacity {
            return Err(PoolError::ChainTooSmall { len: end, capacity });
        }
        let bs = pool.buf_size() as usize;
        let mut at = offset;
        while at < end {
            let (seg, within) = (at / bs, at % bs);
            let n = (bs - within).min(end - at);
            let idx = self.segs[seg].0;
            pool.buf(idx)?;
            let src = &data[at - offset..at - offset + n];
            // SAFETY: buf() proved idx in range; within + n <= buf_size.
            unsafe { ptr::copy_nonoverlapping(src.as_ptr(), pool.data_ptr(idx).add(within), n) };
            at += n;
        }
        Ok(())
    }

    /// Sets the chain's length to `len` (segments full, then the rest, then empty) in
    /// shared memory and in the snapshot.
    pub fn set_len(&mut self, pool: &Pool, len: usize) -> Result<(), PoolError> {
        let capacity = self.capacity(pool);
        if len > capacity {
            return Err(PoolError::ChainTooSmall { len, capacity });
        }
        let bs = pool.buf_size() as usize;
        for (i, seg) in self.segs.iter_mut().enumerate() {
            let seg_len = len.saturating_sub(i * bs).min(bs) as u32;
            pool.buf(seg.0)?.len.store(seg_len, Relaxed);
            seg.1 = seg_len;
        }
        self.len = len as u64;
        Ok(())
    }

    /// Drops the reference this snapshot stands for on every buffer; returns how many were
    /// freed. Uses the recorded indices, not the live links. Every buffer is released
    /// even if one fails (the peer zeroed a refcount); the first error is returned.
    pub fn release(self, pool: &Pool) -> Result<u32, PoolError> {
        let mut freed = 0;
        let mut first_err = None;
        for (idx, _) in self.segs {
            match pool.release(BufIdx(idx)) {
                Ok(f) => freed += u32::from(f),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(freed), Err)
    }
}
