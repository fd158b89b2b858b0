//! Reading memory a peer can write: copy it in, never borrow it.
//!
//! Every byte our code reads from memory another process can write concurrently (a ring
//! slot the app filled, a pool buffer, a registered region, a peer host's wire ring) goes
//! through this module: [`copy_in`] for byte ranges, [`SharedMem::read_at`] for the same with
//! a bounds check, [`load_u64`]/[`load_u32`] for single structured values (indices, lengths,
//! links) that are not already atomics in a `#[repr(C)]` header. Every other place that reads
//! peer-writable memory refers here instead of repeating the argument below.
//!
//! # Why this is sound
//!
//! 1. **No reference is ever made over the shared bytes.** A `&[u8]` or `&T` tells the
//!    compiler the bytes do not change while it lives (it may re-read them, or read them
//!    once and reuse the value, or assume two reads agree). A peer that writes the bytes
//!    anyway would make those assumptions false, which is undefined behaviour, whatever the
//!    peer's motives. So we only hold raw pointers into a mapping, and copy.
//! 2. **Each byte is read exactly once, with a volatile load.** The mapping is memory this
//!    process did not allocate and that changes outside the compiler's view, the situation
//!    volatile accesses exist for (like device memory): the compiler emits each load once,
//!    as written, and assumes nothing about the value. No thread of *this* process writes a
//!    range while another of its threads copies it in (the ring, pool and region protocols
//!    give one side a range at a time, and our own writers finish before they publish), so
//!    within our process there is no data race; the peer is another process, outside our
//!    memory model, and can only change which bits we load.
//! 3. **A torn read gives garbage, never UB.** Loads are of `u8`, `u32` and `u64`, types
//!    for which every bit pattern is a valid value. A word the peer writes while we load it
//!    may mix old and new bytes; the result is still some integer. Callers treat what they
//!    copied as untrusted input and validate it (lengths against slot and buffer sizes,
//!    indices against counts, offsets with overflow-checked arithmetic) before using it to
//!    address anything; each such check has a counted error of its own at its call site.
//! 4. **The copy stays in bounds and the mapping stays alive.** The caller proves the range
//!    lies inside a live mapping (see each `# Safety` section); sizes are sealed
//!    ([`SharedMem::from_fd`] refuses an unsealed memfd), so the peer cannot shrink the file
//!    under us and turn an in-bounds read into `SIGBUS`.
//!
//! After the copy, the bytes are ours: a checksum, a decode or a comparison reads our copy,
//! never the shared memory a second time (reading twice would let the peer show us two
//! different values: a classic time-of-check/time-of-use bug).
//!
//! # Who writes what
//!
//! The app is hostile to its host; the host is trusted by its apps. So every read the host
//! (an engine) makes of memory an app or a peer host can write is a copy-in, while an app
//! may read what its host wrote in place:
//!
//! | memory | written by | read by the host with |
//! |---|---|---|
//! | request ring slots (app channel, Pony command ring) | the app | `Peeked::copy_into` |
//! | response ring slots (completions) | the engine | (the app reads them; the ring copies anyway) |
//! | ring header indices | each side its own index | atomic loads, checked (`PopError::Corrupt`) |
//! | ring header `Meta` | the creator, once | one copy-in at attach, validated |
//! | Pony pool buffers of a Send / Write | the app | `PoolPiece` (`HeldBytes`) into the packet, `ChainSnapshot::read_into` |
//! | Pony pool buffers of a received message or Read | the engine, then handed to the app | (the app may read in place: `ChainSnapshot::chain_segments`) |
//! | pool `BufHeader`s, free-list head, free count | both | atomic loads, checked; bounded CAS loops |
//! | registered regions | the app | `RegionSpan::read_into`/`read_part` (`SharedMem::read_at`) |
//! | the shm wire's rings | the peer host | `Peeked::copy_into` |
//! | doorbell pages | both | atomics only |
//!
//! # Speed
//!
//! Volatile loads are not merged or vectorised by the compiler, so [`copy_in`] does it by
//! hand: after at most five loads to align the source, 64 bytes per iteration as four
//! 16-byte SSE2 loads on x86_64 (eight words elsewhere), then words, then bytes. `cargo test -p snap-ipc --release -- --ignored copy_in_speed
//! --nocapture` prints its cost next to `copy_from_slice`.

use core::ptr;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use crate::shm::SharedMem;

const WORD: usize = core::mem::size_of::<u64>();

/// Copies `dst.len()` bytes starting at `src`, which a peer may be writing, into `dst`.
///
/// # Safety
/// `src..src + dst.len()` must lie inside one live mapping readable by this process (see
/// the module documentation for why concurrent writes by a peer are then harmless).
#[inline]
pub unsafe fn copy_in(dst: &mut [u8], src: *const u8) {
    let len = dst.len();
    let out = dst.as_mut_ptr();
    // Up to the alignment of the wide loads in at most five steps: bytes to 4, one u32 to
    // 8, one u64 to 16 (a ring payload, 4 bytes into an 8-aligned slot, takes two). Each
    // step runs only if its load fits, so any later loop that runs starts aligned.
    let mut i = 0;
    while i < len && !(src.addr() + i).is_multiple_of(4) {
        // SAFETY: i < len, inside the caller's range; `out` is our own buffer.
        unsafe { out.add(i).write(src.add(i).read_volatile()) };
        i += 1;
    }
    if i + 4 <= len && !(src.addr() + i).is_multiple_of(8) {
        // SAFETY: 4-aligned and inside the range.
        unsafe {
            let v = src.add(i).cast::<u32>().read_volatile();
            out.add(i).cast::<u32>().write_unaligned(v);
        }
        i += 4;
    }
    if i + WORD <= len && !(src.addr() + i).is_multiple_of(HEAD_ALIGN) {
        // SAFETY: 8-aligned and inside the range.
        unsafe {
            let v = src.add(i).cast::<u64>().read_volatile();
            out.add(i).cast::<u64>().write_unaligned(v);
        }
        i += WORD;
    }
    // 64 bytes per iteration: four 16-byte SSE2 loads on x86_64 (baseline there), four
    // words elsewhere.
    while i + 64 <= len {
        // SAFETY: src + i is HEAD_ALIGN-aligned (head, then multiples of 64) and the 64
        // bytes lie inside the range.
        unsafe { copy_64(out.add(i), src.add(i)) };
        i += 64;
    }
    while i + WORD <= len {
        // SAFETY: as above, one word.
        unsafe {
            let w = src.add(i).cast::<u64>().read_volatile();
            out.add(i).cast::<u64>().write_unaligned(w);
        }
        i += WORD;
    }
    while i < len {
        // SAFETY: i < len, inside the range.
        unsafe { out.add(i).write(src.add(i).read_volatile()) };
        i += 1;
    }
}

/// Copies 64 bytes from `src`, aligned to [`HEAD_ALIGN`], (volatile loads) to `dst`.
///
/// # Safety
/// Both ranges are 64 bytes long and valid; `src` is aligned to [`HEAD_ALIGN`].
#[inline(always)]
unsafe fn copy_64(dst: *mut u8, src: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::__m128i;
        let s = src.cast::<__m128i>();
        let d = dst.cast::<__m128i>();
        // SAFETY: in bounds and 16-byte aligned (caller): four aligned SSE2 loads, each
        // emitted exactly once; the destination may be unaligned.
        unsafe {
            let a = s.read_volatile();
            let b = s.add(1).read_volatile();
            let c = s.add(2).read_volatile();
            let e = s.add(3).read_volatile();
            d.write_unaligned(a);
            d.add(1).write_unaligned(b);
            d.add(2).write_unaligned(c);
            d.add(3).write_unaligned(e);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let s = src.cast::<u64>();
        let d = dst.cast::<u64>();
        for k in 0..8 {
            // SAFETY: in bounds and aligned (caller).
            unsafe { d.add(k).write_unaligned(s.add(k).read_volatile()) };
        }
    }
}

/// Alignment of the source for the 64-byte loop: an SSE2 register on x86_64, a word
/// elsewhere.
#[cfg(target_arch = "x86_64")]
const HEAD_ALIGN: usize = 16;
#[cfg(not(target_arch = "x86_64"))]
const HEAD_ALIGN: usize = WORD;

/// Loads a `u64` a peer may be writing (a relaxed atomic load: never torn).
///
/// # Safety
/// `src` must be 8-byte aligned and point at 8 readable bytes of a live mapping.
#[inline]
pub unsafe fn load_u64(src: *const u64) -> u64 {
    // SAFETY: aligned and live (caller); AtomicU64 has u64's layout, and every access our
    // process makes to this word is atomic, so the shared reference to the atomic is sound.
    unsafe { AtomicU64::from_ptr(src.cast_mut()) }.load(Relaxed)
}

/// Loads a `u32` a peer may be writing (a relaxed atomic load: never torn).
///
/// # Safety
/// `src` must be 4-byte aligned and point at 4 readable bytes of a live mapping.
#[inline]
pub unsafe fn load_u32(src: *const u32) -> u32 {
    // SAFETY: as in load_u64.
    unsafe { AtomicU32::from_ptr(src.cast_mut()) }.load(Relaxed)
}

/// A read outside the mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("read of {len} bytes at offset {offset} is outside the {size}-byte mapping")]
pub struct OutOfBounds {
    /// Offset asked for.
    pub offset: usize,
    /// Bytes asked for.
    pub len: usize,
    /// Size of the mapping.
    pub size: usize,
}

impl SharedMem {
    /// Copies `dst.len()` bytes at `offset` of the mapping into `dst` with [`copy_in`],
    /// after checking (overflow-safe) that they lie inside it.
    pub fn read_at(&self, offset: usize, dst: &mut [u8]) -> Result<(), OutOfBounds> {
        let size = self.len();
        let len = dst.len();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(OutOfBounds { offset, len, size });
        }
        // SAFETY: offset + len <= size, so the range lies inside this live mapping.
        unsafe { copy_in(dst, self.as_ptr().add(offset)) };
        Ok(())
    }

    /// Copies `src` to `offset` of the mapping, after the same bounds check as
    /// [`SharedMem::read_at`]. Plain stores: the peer may read them torn, which is its
    /// problem to validate, and our own process never reads these bytes concurrently.
    pub fn write_at(&self, offset: usize, src: &[u8]) -> Result<(), OutOfBounds> {
        let size = self.len();
        let len = src.len();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(OutOfBounds { offset, len, size });
        }
        // SAFETY: in bounds (checked), and `src` is our own memory, so it cannot overlap a
        // mapping we never hand out as a slice.
        unsafe { ptr::copy_nonoverlapping(src.as_ptr(), self.as_ptr().add(offset), len) };
        Ok(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::AtomicBool;
    use std::time::Instant;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
    }

    proptest! {
        /// Any source alignment, destination alignment and length copies exactly what
        /// `copy_from_slice` copies.
        #[test]
        fn matches_copy_from_slice(src_off in 0usize..64, dst_off in 0usize..16, len in 0usize..600) {
            let src = pattern(700);
            let mut got = vec![0xAAu8; 700];
            let mut want = got.clone();
            // SAFETY: src_off + len <= 664 < 700: inside `src`.
            unsafe { copy_in(&mut got[dst_off..dst_off + len], src.as_ptr().add(src_off)) };
            want[dst_off..dst_off + len].copy_from_slice(&src[src_off..src_off + len]);
            prop_assert_eq!(got, want);
        }

        /// The checked form refuses anything that does not fit, overflow included.
        #[test]
        fn read_at_checks_bounds(offset in 0usize..5000, len in 0usize..5000) {
            let mem = SharedMem::create("peer-test", 4096).unwrap();
            mem.write_at(0, &pattern(4096)).unwrap();
            let mut dst = vec![0u8; len];
            let r = mem.read_at(offset, &mut dst);
            if offset + len <= 4096 {
                prop_assert_eq!(r, Ok(()));
                prop_assert_eq!(&dst[..], &pattern(4096)[offset..offset + len]);
            } else {
                prop_assert_eq!(r, Err(OutOfBounds { offset, len, size: 4096 }));
            }
        }
    }

    #[test]
    fn overflowing_offset_is_refused() {
        let mem = SharedMem::create("peer-test", 64).unwrap();
        let mut dst = [0u8; 2];
        assert!(mem.read_at(usize::MAX, &mut dst).is_err());
        assert!(mem.write_at(usize::MAX - 1, &dst).is_err());
    }

    /// A second thread rewrites the source (through a second mapping, as a peer process
    /// would) while we copy it in: every copy is some mix of the two fill bytes, and the
    /// copy never reads outside the range (it would fault, or show other bytes).
    #[test]
    fn scribbled_source_gives_garbage_not_ub() {
        let mem = SharedMem::create("peer-test", 8192).unwrap();
        let fd = std::os::fd::AsFd::as_fd(&mem).try_clone_to_owned().unwrap();
        let peer = SharedMem::from_fd(fd).unwrap();
        mem.write_at(0, &[0xEE; 8192]).unwrap();
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut fill = 0u8;
                while !stop.load(Relaxed) {
                    fill ^= 0xFF;
                    for i in 0..4096 {
                        // SAFETY: in bounds of the 8192-byte mapping.
                        unsafe { peer.as_ptr().add(1000 + i).write_volatile(fill) };
                    }
                }
            });
            let mut buf = vec![0u8; 4096 + 100];
            let mut one = [0u8; 1];
            while {
                mem.read_at(1000, &mut one).unwrap();
                one[0] == 0xEE
            } {
                std::hint::spin_loop();
            }
            let mut mixed = 0;
            for _ in 0..20_000 {
                mem.read_at(950, &mut buf).unwrap();
                assert!(buf[..50].iter().all(|&b| b == 0xEE), "bytes before the scribble");
                assert!(buf[50 + 4096..].iter().all(|&b| b == 0xEE), "bytes after it");
                let body = &buf[50..50 + 4096];
                assert!(body.iter().all(|&b| b == 0 || b == 0xFF || b == 0xEE));
                mixed += usize::from(body.contains(&0) && body.contains(&0xFF));
            }
            stop.store(true, Relaxed);
            // Not asserted (scheduling decides), but shows the race was exercised.
            eprintln!("{mixed} of 20000 copies saw both fills");
        });
    }

    #[test]
    fn structured_loads() {
        let mem = SharedMem::create("peer-test", 64).unwrap();
        mem.write_at(8, &0x0102_0304_0506_0708u64.to_ne_bytes()).unwrap();
        mem.write_at(16, &0xA0B0_C0D0u32.to_ne_bytes()).unwrap();
        // SAFETY: page-aligned mapping: offsets 8 and 16 are aligned and in bounds.
        unsafe {
            assert_eq!(load_u64(mem.as_ptr().add(8).cast()), 0x0102_0304_0506_0708);
            assert_eq!(load_u32(mem.as_ptr().add(16).cast()), 0xA0B0_C0D0);
        }
    }

    /// Cost of the copy-in next to `copy_from_slice`, in ns per KiB, for message sizes of
    /// the ring (64 B..256 B), a pool buffer (2 KiB) and a large region read (1 MiB). Run
    /// with `cargo test -p snap-ipc --release -- --ignored copy_in_speed --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn copy_in_speed() {
        let mem = SharedMem::create("peer-bench", 2 << 20).unwrap();
        mem.write_at(0, &pattern(2 << 20)).unwrap();
        let plain = pattern(2 << 20);
        for &(len, off) in &[(64usize, 4usize), (256, 4), (2048, 0), (2048, 3), (1 << 20, 0)] {
            let mut dst = vec![0u8; len];
            let iters = (256 << 20) / len;
            let t = Instant::now();
            for _ in 0..iters {
                mem.read_at(off, &mut dst).unwrap();
                core::hint::black_box(&mut dst);
            }
            let ours = t.elapsed().as_nanos() as f64 / iters as f64 / (len as f64 / 1024.0);
            let t = Instant::now();
            for _ in 0..iters {
                dst.copy_from_slice(core::hint::black_box(&plain[off..off + len]));
                core::hint::black_box(&mut dst);
            }
            let std = t.elapsed().as_nanos() as f64 / iters as f64 / (len as f64 / 1024.0);
            println!(
                "len {len:>8} src offset {off}: copy_in {ours:7.1} ns/KiB, copy_from_slice {std:7.1} ns/KiB"
            );
        }
    }
}
