//! What the engine holds in an app's pool, in engine-private memory: the zero-copy data
//! path's ownership.
//!
//! ```text
//!   Send{head}  ─snapshot─▶ ChainSnapshot ─into_pieces─▶ Piece × n (held PoolPieces)
//!                                                        flow segments slice them, emit
//!                                                        copies them in; the last clone
//!                                                        dropped (acked) releases the buffer
//!   first Data segment ─▶ RecvChain::alloc ─write_at (the NIC copy)─▶ into_chain ─▶ app
//! ```
//!
//! [`Holds`] counts, per buffer, the references the engine holds. It lives outside shared
//! memory because the app can write anything there: when the app dies, the pool is rebuilt
//! from these counts ([`Pool::rebuild_after_peer_death`]), so a buffer a flow still
//! retransmits from, or reassembles into, is never handed out again while in use. The same
//! counts refuse a command that names a buffer the engine still holds (it would let the
//! app make the engine release a buffer twice).
//!
//! A [`PoolPiece`] is one held buffer as a [`pony_proto::flow::Piece`] (held bytes):
//! slicing and cloning the piece are free, and dropping the last clone releases the
//! buffer. The app can still write the buffer (it is hostile to the engine), so the piece
//! is never borrowed as `&[u8]`: emitting a packet copies its bytes in with
//! `snap_ipc::peer`, the payload's one copy, and the packet's checksum covers that copy. A [`RecvChain`] is a message being reassembled: buffers the engine allocated,
//! recorded privately (the app may relink them in shared memory; we never follow its
//! links), released on drop unless handed to the app with [`RecvChain::into_chain`].

use core::ptr;
use core::sync::atomic::AtomicU32;
use core::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use pony_proto::flow::state::{self, BufRef, HeldRef};
use pony_proto::flow::{HeldBytes, Piece};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{BufIdx, Chain, ChainSnapshot, Pool, PoolError, NONE};

/// Engine-held references per buffer of one pool.
#[derive(Debug)]
pub struct Holds {
    counts: Box<[AtomicU32]>,
}

impl Holds {
    /// No buffer held, for a pool of `buffers`.
    pub fn new(buffers: u32) -> Arc<Self> {
        Arc::new(Self {
            counts: (0..buffers).map(|_| AtomicU32::new(0)).collect(),
        })
    }

    /// Whether the engine holds buffer `idx` (out of range: no).
    pub fn is_held(&self, idx: u32) -> bool {
        self.counts.get(idx as usize).is_some_and(|c| c.load(Relaxed) > 0)
    }

    /// Buffers held now.
    pub fn held_buffers(&self) -> u32 {
        self.counts.iter().filter(|c| c.load(Relaxed) > 0).count() as u32
    }

    /// Counts one more engine hold on buffer `idx` (an out-of-range index is ignored: it
    /// was validated when its chain was accepted).
    pub fn hold(&self, idx: u32) {
        if let Some(c) = self.counts.get(idx as usize) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Drops one engine hold on buffer `idx`.
    pub fn unhold(&self, idx: u32) {
        if let Some(c) = self.counts.get(idx as usize) {
            let _ = c.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
        }
    }
}

/// One engine-held buffer as [`HeldBytes`]: its `len` bytes, copied in on demand.
#[derive(Debug)]
pub struct PoolPiece {
    pool: Arc<Pool>,
    holds: Arc<Holds>,
    idx: u32,
    len: u32,
}

impl PoolPiece {
    /// Buffer `idx` (`len` bytes) of `pool`, whose pool reference the caller already owns
    /// (a moved flow's piece: the old engine's reference passes to this one); counted in
    /// `holds`. `None` if `idx` or `len` do not fit the pool.
    pub fn adopt(pool: &Arc<Pool>, holds: &Arc<Holds>, idx: u32, len: u32) -> Option<Self> {
        if idx >= pool.shape().buffers || len > pool.buf_size() {
            return None;
        }
        holds.hold(idx);
        Some(PoolPiece {
            pool: pool.clone(),
            holds: holds.clone(),
            idx,
            len,
        })
    }
}

/// The name a pool has in an engine's state snapshot: its address in the exporting
/// process, unique while the pool lives (the snapshot's session table maps it to the
/// session, whose pool the importer maps again).
pub fn pool_key(pool: &Arc<Pool>) -> u64 {
    Arc::as_ptr(pool) as usize as u64
}

impl HeldBytes for PoolPiece {
    fn len(&self) -> usize {
        self.len as usize
    }

    fn locate(&self) -> Option<HeldRef> {
        Some(HeldRef {
            pool: pool_key(&self.pool),
            buf: self.idx,
            len: self.len,
        })
    }

    fn copy_to(&self, offset: usize, dst: &mut [u8]) {
        // Built from a validated snapshot (idx < count, len <= buf_size), so this only
        // fails if a caller breaks `offset + dst.len() <= len`; zeros then, not a panic on
        // the data path.
        let in_piece = offset
            .checked_add(dst.len())
            .is_some_and(|end| end <= self.len as usize);
        if !in_piece || self.pool.copy_in(self.idx, offset, dst).is_err() {
            dst.fill(0);
        }
    }
}

impl Drop for PoolPiece {
    fn drop(&mut self) {
        // Release before unhold: once unheld, a reclaim could count the buffer free.
        if let Err(e) = self.pool.release(BufIdx(self.idx)) {
            log::warn!("pool: releasing sent buffer {}: {e}", self.idx);
        }
        self.holds.unhold(self.idx);
    }
}

impl ChainSnapshot {
    /// Turns a held chain into one [`Piece`] per non-empty segment, each owning that
    /// buffer's reference and hold (empty segments are released at once). `pool` and
    /// `holds` must be the ones the snapshot was taken and held with.
    pub fn into_pieces(self, pool: &Arc<Pool>, holds: &Arc<Holds>) -> Vec<Piece> {
        let mut out = Vec::with_capacity(self.segs.len());
        for (idx, len) in self.segs {
            let piece = PoolPiece {
                pool: pool.clone(),
                holds: holds.clone(),
                idx,
                len,
            };
            if len > 0 {
                out.push(Piece::held(Arc::new(piece)));
            }
        }
        out
    }
}

/// A message being reassembled straight into an app's pool.
#[derive(Debug)]
pub struct RecvChain {
    pool: Arc<Pool>,
    holds: Arc<Holds>,
    bufs: Vec<u32>,
    len: usize,
}

impl RecvChain {
    /// Allocates buffers for a `len`-byte message (at least one), held by the engine.
    /// On exhaustion nothing stays allocated.
    pub fn alloc(pool: &Arc<Pool>, holds: &Arc<Holds>, len: usize) -> Result<Self, PoolError> {
        let max = pool.max_message_len().min(u32::MAX as usize);
        if len > max {
            return Err(PoolError::TooLarge { len, max });
        }
        let needed = len.div_ceil(pool.buf_size() as usize).max(1) as u32;
        let mut chain = RecvChain {
            pool: pool.clone(),
            holds: holds.clone(),
            bufs: Vec::with_capacity(needed as usize),
            len,
        };
        for _ in 0..needed {
            // Dropping `chain` releases what was taken so far.
            let idx = pool.try_alloc()?.ok_or(PoolError::Exhausted { needed })?;
            holds.hold(idx.0);
            chain.bufs.push(idx.0);
        }
        Ok(chain)
    }

    /// The chain of `bufs` for a `len`-byte message in `pool`, whose pool references the
    /// caller already owns (a moved flow's reassembly); counted in `holds`. `None` if the
    /// buffers do not fit the pool or the length.
    pub fn adopt(pool: &Arc<Pool>, holds: &Arc<Holds>, bufs: Vec<u32>, len: usize) -> Option<Self> {
        let needed = len.div_ceil(pool.buf_size() as usize).max(1);
        let count = pool.shape().buffers;
        if bufs.len() != needed || bufs.iter().any(|&b| b >= count) {
            return None;
        }
        for &b in &bufs {
            holds.hold(b);
        }
        Some(RecvChain {
            pool: pool.clone(),
            holds: holds.clone(),
            bufs,
            len,
        })
    }

    /// The message length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `bytes` to message offset `offset`. Out-of-range bytes are ignored (the flow
    /// checks segments against the message length before writing).
    pub fn write_at(&mut self, offset: usize, bytes: &[u8]) {
        let bs = self.pool.buf_size() as usize;
        let end = (offset + bytes.len()).min(self.len);
        let mut at = offset;
        while at < end {
            let (buf, within) = (at / bs, at % bs);
            let n = (bs - within).min(end - at);
            let src = &bytes[at - offset..at - offset + n];
            // SAFETY: bufs[buf] is ours (allocated above, in range) and within + n <= bs.
            unsafe {
                ptr::copy_nonoverlapping(src.as_ptr(), self.pool.data_ptr(self.bufs[buf]).add(within), n)
            };
            at += n;
        }
    }

    /// Hands the complete message to the app: links and lengths are written from our
    /// private record (whatever is in shared memory now), and the reference goes with the
    /// returned chain.
    pub fn into_chain(mut self) -> Chain {
        let bs = self.pool.buf_size() as usize;
        let bufs = std::mem::take(&mut self.bufs);
        for (i, &idx) in bufs.iter().enumerate() {
            let seg_len = self.len.saturating_sub(i * bs).min(bs);
            if let Ok(b) = self.pool.buf(idx) {
                b.len.store(seg_len as u32, Relaxed);
                b.next.store(bufs.get(i + 1).copied().unwrap_or(NONE), Relaxed);
            }
            self.holds.unhold(idx);
        }
        Chain {
            head: BufIdx(bufs[0]),
            len: self.len as u32,
            segments: bufs.len() as u32,
        }
    }
}

impl Drop for RecvChain {
    fn drop(&mut self) {
        for &idx in &self.bufs {
            if let Err(e) = self.pool.release(BufIdx(idx)) {
                log::warn!("pool: releasing reassembly buffer {idx}: {e}");
            }
            self.holds.unhold(idx);
        }
    }
}

/// A chain in a moved flow's state is its buffers, not their bytes (they are in the
/// pool, which the importer maps again).
impl Serialize for RecvChain {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        BufRef {
            pool: pool_key(&self.pool),
            bufs: self.bufs.clone(),
            len: self.len as u64,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for RecvChain {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = BufRef::deserialize(d)?;
        state::adopt_buf::<RecvChain>(r).map_err(serde::de::Error::custom)
    }
}

/// A chain is where the Pony engine's flows reassemble a message (one copy, from the packet).
impl pony_proto::flow::MessageBuf for RecvChain {
    fn len(&self) -> usize {
        RecvChain::len(self)
    }

    fn write_at(&mut self, offset: usize, bytes: &[u8]) {
        RecvChain::write_at(self, offset, bytes)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::pool::{Owner, PoolShape};

    fn pool() -> (Arc<Pool>, Arc<Holds>) {
        let p = Pool::create(PoolShape {
            buffers: 8,
            buf_size: 64,
        })
        .unwrap();
        let holds = Holds::new(8);
        (Arc::new(p), holds)
    }

    #[test]
    fn pieces_copy_in_and_release_on_last_drop() {
        let (pool, holds) = pool();
        let app = pool.try_clone(Owner::App).unwrap();
        let data: Vec<u8> = (0..150u8).collect();
        let chain = app.write_chain(&data).unwrap();
        let snap = pool.snapshot(chain.head, Some(150)).unwrap();
        let bufs: Vec<u32> = snap.buffers().collect();
        for &b in &bufs {
            holds.hold(b);
        }
        let pieces = snap.into_pieces(&pool, &holds);
        assert_eq!(pieces.len(), 3);
        assert_eq!(
            pony_proto::flow::Chunks::from_parts(pieces.clone()).to_vec(),
            data
        );
        assert_eq!(holds.held_buffers(), 3);
        let mut rest = pieces[1].clone();
        rest.split_to(10);
        let slice = rest.split_to(10); // a segment keeps its buffer alive
        drop(rest);
        drop(pieces);
        assert_eq!(pool.stats().free, 7);
        assert!(holds.is_held(bufs[1]) && !holds.is_held(bufs[0]));
        let mut got = [0u8; 10];
        slice.copy_to(&mut got);
        assert_eq!(&got[..], &data[74..84]);
        drop(slice);
        assert_eq!(pool.stats().free, 8);
        assert_eq!(holds.held_buffers(), 0);
    }

    /// The app keeps scribbling over buffers it sent while the engine gathers them into
    /// packets: each packet is built from the engine's one copy, so it always parses with
    /// a valid checksum (the CRC covers our copy, not the shared buffer), and its payload
    /// holds only bytes the app wrote.
    #[test]
    fn app_scribbling_sent_buffers_cannot_break_the_packet() {
        use pony_proto::wire::Repr;
        use std::sync::atomic::AtomicBool;
        let (pool, holds) = pool();
        let app = pool.try_clone(Owner::App).unwrap();
        let chain = app.write_chain(&[0x11; 150]).unwrap();
        let snap = pool.snapshot(chain.head, Some(150)).unwrap();
        let bufs: Vec<u32> = snap.buffers().collect();
        for &b in &bufs {
            holds.hold(b);
        }
        let pieces = snap.into_pieces(&pool, &holds);
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut fill = 0x11u8;
                while !stop.load(Relaxed) {
                    fill = fill.wrapping_add(0x22) | 1;
                    for &b in &bufs {
                        for i in 0..64 {
                            // SAFETY: buffer b of the app's own mapping; volatile, as a
                            // peer process writes.
                            unsafe { app.data_ptr(b).add(i).write_volatile(fill) };
                        }
                    }
                }
            });
            let repr = Repr::Data {
                dst_flow: 1,
                seq: 2,
                timestamp_ns: 3,
                stream: 4,
                message: 5,
                message_len: 150,
                offset: 0,
                payload: &[],
            };
            let mut packet = vec![0u8; 2048];
            for _ in 0..20_000 {
                let n = repr.emit_gather(&pieces, &mut packet).unwrap();
                let Ok(Repr::Data { payload, .. }) = Repr::parse(&packet[..n]) else {
                    panic!("the packet must parse, checksum included");
                };
                assert_eq!(payload.len(), 150);
                assert!(payload.iter().all(|b| b & 1 == 1), "only bytes the app wrote");
            }
            stop.store(true, Relaxed);
        });
        drop(pieces);
        assert_eq!((pool.stats().free, holds.held_buffers()), (8, 0));
    }

    #[test]
    fn recv_chain_scatters_and_hands_over_or_releases() {
        let (pool, holds) = pool();
        let data: Vec<u8> = (0..130u8).collect();
        let mut rc = RecvChain::alloc(&pool, &holds, 130).unwrap();
        assert_eq!(holds.held_buffers(), 3);
        rc.write_at(100, &data[100..]);
        rc.write_at(0, &data[..100]);
        let chain = rc.into_chain();
        assert_eq!(holds.held_buffers(), 0, "the app owns it now");
        let mut out = Vec::new();
        pool.read_chain(chain.head, &mut out).unwrap();
        assert_eq!(out, data);
        pool.release_chain(chain.head).unwrap();

        let rc = RecvChain::alloc(&pool, &holds, 500).unwrap();
        assert_eq!(pool.stats().free, 0);
        assert!(matches!(
            RecvChain::alloc(&pool, &holds, 1),
            Err(PoolError::Exhausted { .. })
        ));
        drop(rc);
        assert_eq!((pool.stats().free, holds.held_buffers()), (8, 0));
        assert!(matches!(
            RecvChain::alloc(&pool, &holds, 9 * 64),
            Err(PoolError::TooLarge { .. })
        ));
        assert_eq!(pool.stats().free, 8, "a failed allocation leaves nothing behind");
    }
}
