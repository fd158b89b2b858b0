//! The pool fuzz target's body (`pony/express/fuzz`, target `pool`), also run by the stable
//! tests on a checked-in corpus and generated inputs (`tests/fuzz_corpus.rs`): the engine's
//! pool operations on a pool whose shared part (free-stack head, buffer headers: refcounts,
//! lengths, chain links; payloads) a hostile app overwrites at will.
//!
//! The input is a small program, one operation per leading byte:
//!
//! | op | who    | what                                                                |
//! |----|--------|---------------------------------------------------------------------|
//! | 0  | app    | writes up to 15 bytes anywhere past the meta line                   |
//! | 1  | app    | stores a word into a buffer header (link, length, refcount, …)      |
//! | 2  | app    | stores an arbitrary free-stack head                                 |
//! | 3  | engine | `try_alloc`                                                         |
//! | 4  | engine | `snapshot` (chain validation), then copies the chain out            |
//! | 5  | engine | `read_chain` into its own buffer                                    |
//! | 6  | engine | `release_chain`                                                     |
//! | 7  | engine | `retain_chain`                                                      |
//! | 8  | engine | `count_free`                                                        |
//! | 9  | engine | `rebuild_after_peer_death`                                          |
//!
//! The meta line is left alone: it is read once at attach and never again. Whatever the
//! program: no panic, no access outside the region, every refusal a [`PoolError`], and a
//! chain that validates copies out exactly its validated length, at most a whole pool.
//! Only engine operations that copy into memory the engine owns are used here.

use core::ptr;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::layout::{Line64, HEADERS_OFFSET};
use super::{BufIdx, Pool, PoolShape, NONE};

/// Buffers of the fuzzed pool (few, so links hit real buffers often).
const BUFFERS: u32 = 16;
/// Bytes per buffer (the smallest allowed).
const BUF_SIZE: u32 = 64;
/// Bytes per buffer header (`BufHeader`), in 4-byte words.
const HEADER_WORDS: usize = 8;

/// What a run did, so tests can see that inputs reach both accepted and refused chains.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PoolFuzzOutcome {
    /// Engine operations that succeeded.
    pub ok: u64,
    /// Engine operations refused with a `PoolError`.
    pub errors: u64,
    /// Chains that validated (`snapshot`) and were copied out.
    pub chains: u64,
}

/// Reads the program's operands; past the end everything is zero.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(core::array::from_fn(|_| self.byte()))
    }

    /// A buffer index: mostly real ones, sometimes just out of range, sometimes `NONE`.
    fn idx(&mut self) -> BufIdx {
        match self.byte() {
            255 => BufIdx(NONE),
            b => BufIdx(u32::from(b) % (BUFFERS + 2)),
        }
    }
}

/// Runs `data` as a hostile app's program interleaved with the engine's operations.
pub fn fuzz_engine_ops(data: &[u8]) -> PoolFuzzOutcome {
    let pool = Pool::create(PoolShape {
        buffers: BUFFERS,
        buf_size: BUF_SIZE,
    })
    .expect("a valid shape");
    let base = pool.shared_mem().as_ptr();
    let len = pool.shared_mem().len();
    let max = pool.max_message_len();
    let mut out = PoolFuzzOutcome::default();
    let mut count = |r: Result<(), super::PoolError>| match r {
        Ok(()) => out.ok += 1,
        Err(_) => out.errors += 1,
    };
    let mut input = Input(data);
    let mut copy = Vec::new();
    while !input.0.is_empty() {
        match input.byte() % 10 {
            0 => {
                let writable = len - size_of::<Line64>();
                let at = size_of::<Line64>() + (input.u32() as usize * 4) % writable;
                let n = usize::from(input.byte() % 16).min(len - at);
                let bytes: Vec<u8> = (0..n).map(|_| input.byte()).collect();
                // SAFETY: `at + n <= len`, inside the mapping; no reference to these bytes
                // is alive between the engine's operations (as with an app in another
                // process, which can write at any time).
                unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), base.add(at), n) };
            }
            1 => {
                let idx = usize::from(input.byte()) % BUFFERS as usize;
                let word = usize::from(input.byte()) % HEADER_WORDS;
                let v = match input.byte() {
                    0 => NONE,
                    1 => input.u32(),
                    // Lengths around the buffer size; links, counts near the real range.
                    b if word == 0 => u32::from(b) % (BUF_SIZE + 16),
                    b => u32::from(b) % (BUFFERS + 2),
                };
                let at = HEADERS_OFFSET + (idx * HEADER_WORDS + word) * 4;
                // SAFETY: inside the header table, 4-aligned; header words are atomics.
                unsafe { &*base.add(at).cast::<AtomicU32>() }.store(v, Ordering::Release);
            }
            2 => {
                let v = u64::from(input.u32()) << 32 | u64::from(input.idx().0);
                // SAFETY: the free-head line is inside the mapping, 64-aligned, an atomic.
                unsafe { &*base.add(size_of::<Line64>()).cast::<AtomicU64>() }.store(v, Ordering::Release);
            }
            3 => count(pool.try_alloc().map(drop)),
            4 => {
                let head = input.idx();
                let expected = match input.byte() {
                    0 => None,
                    b => Some(u64::from(b)),
                };
                match pool.snapshot(head, expected) {
                    Ok(snap) => {
                        copy.clear();
                        snap.read_into(&pool, &mut copy);
                        assert_eq!(copy.len() as u64, snap.len());
                        assert!(copy.len() <= max);
                        if let Some(e) = expected {
                            assert_eq!(snap.len(), e);
                        }
                        out.chains += 1;
                        count(Ok(()));
                    }
                    Err(e) => count(Err(e)),
                }
            }
            5 => {
                copy.clear();
                let r = pool.read_chain(input.idx(), &mut copy);
                if let Ok(n) = r {
                    assert!(n == copy.len() && n <= BUFFERS as usize * BUF_SIZE as usize);
                }
                count(r.map(drop));
            }
            6 => count(pool.release_chain(input.idx()).map(drop)),
            7 => count(pool.retain_chain(input.idx())),
            8 => {
                let r = pool.count_free();
                if let Ok(n) = r {
                    assert!(n <= BUFFERS);
                }
                count(r.map(drop));
            }
            _ => {
                let held = input.byte();
                pool.rebuild_after_peer_death(|i| held & (1 << (i % 8)) != 0);
            }
        }
    }
    out
}
