//! The ring fuzz target's body (`engines/ipc/fuzz`, target `ring`), also run by the stable
//! tests on a checked-in corpus and generated inputs (`tests/fuzz_corpus.rs`): the engine's
//! consumer on a ring whose shared part a hostile producer overwrites at will.
//!
//! The input is a small program, one operation per leading byte:
//!
//! | op | what the producer side does                                            |
//! |----|------------------------------------------------------------------------|
//! | 0  | writes up to 15 bytes anywhere past the meta line (indices, length prefixes, payloads) |
//! | 1  | stores an arbitrary producer index                                     |
//! | 2  | pushes a well-formed message through a real `Producer`                 |
//! | 3  | the engine `try_pop`s into a buffer of a chosen size                   |
//!
//! The meta line (magic, shape) is left alone: it is read once at attach and never again
//! (attach validation is a separate check). Whatever the program, the consumer must not
//! panic or read out of bounds; a popped message fits its slot and the caller's buffer;
//! every refusal is a [`PopError`].

use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use super::layout::IndexLine;
use super::{PopError, Ring};
use crate::shm::SharedMem;

/// Slots of the fuzzed ring (small, so indices wrap often).
const CAPACITY: u64 = 8;
/// Bytes per slot.
const SLOT_SIZE: u32 = 64;

/// What a run did, so tests can see that inputs reach pops and each kind of refusal.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RingFuzzOutcome {
    /// Messages popped.
    pub popped: u64,
    /// `try_pop` on an empty ring.
    pub empty: u64,
    /// `PopError::BufferTooSmall`.
    pub too_small: u64,
    /// `PopError::Corrupt` (indices).
    pub corrupt: u64,
    /// `PopError::BadLength` (length prefix).
    pub bad_length: u64,
}

/// Reads the program's operands; past the end everything is zero.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(core::array::from_fn(|_| self.byte()))
    }
}

/// Runs `data` as a hostile producer's program against the engine's consumer.
pub fn fuzz_consumer(data: &[u8]) -> RingFuzzOutcome {
    let len = Ring::required_len(CAPACITY, SLOT_SIZE).expect("a valid shape");
    let mem = SharedMem::create("fuzz-ring", len).expect("memfd");
    let ring = Ring::create(mem, CAPACITY, SLOT_SIZE).expect("a fresh ring");
    let base = ring.shared_mem().as_ptr();
    let (mut producer, mut consumer) = ring.split();
    let max = consumer.max_message_len();
    let mut out = RingFuzzOutcome::default();
    let mut input = Input(data);
    let mut buf = vec![0u8; SLOT_SIZE as usize];
    while !input.0.is_empty() {
        match input.byte() % 4 {
            0 => {
                let writable = len - size_of::<IndexLine>();
                let at = size_of::<IndexLine>() + usize::from(input.byte()) * 4 % writable;
                let n = usize::from(input.byte() % 16).min(len - at);
                let bytes: Vec<u8> = (0..n).map(|_| input.byte()).collect();
                // SAFETY: `at + n <= len`, inside the mapping; nothing holds a reference to
                // these bytes now (the consumer copies out of shared memory per call), as
                // with a producer in another process.
                unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), base.add(at), n) };
            }
            1 => {
                let v = input.u64();
                // SAFETY: the producer index line is inside the mapping, 64-aligned, and
                // only ever accessed atomically.
                let index = unsafe { &*base.add(size_of::<IndexLine>()).cast::<AtomicU64>() };
                index.store(v, Ordering::Release);
            }
            2 => {
                let n = usize::from(input.byte()) % (max + 1);
                let fill = input.byte();
                let _ = producer.push(&vec![fill; n]);
            }
            _ => {
                let want = usize::from(input.byte()) % (SLOT_SIZE as usize + 1);
                match consumer.try_pop(&mut buf[..want]) {
                    Ok(Some(n)) => {
                        assert!(n <= max && n <= want, "popped {n} bytes into {want} (max {max})");
                        out.popped += 1;
                    }
                    Ok(None) => out.empty += 1,
                    Err(PopError::BufferTooSmall { needed, len }) => {
                        assert!(needed > len && needed <= max);
                        out.too_small += 1;
                    }
                    Err(PopError::Corrupt { .. }) => out.corrupt += 1,
                    Err(PopError::BadLength { len, max: m }) => {
                        assert!(len > m && m == max);
                        out.bad_length += 1;
                    }
                }
            }
        }
    }
    out
}
