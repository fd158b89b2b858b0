//! The free list: a Treiber stack of buffer indices with a tagged head, shared by every
//! thread of both processes, separated from the memory layout so that `loom` can check it.
//!
//! Why a stack and not per-direction rings of free indices (Machnet's choice): both the app
//! (sending) and the engine (receiving) allocate, and either side may drop the last
//! reference to a buffer, so frees and allocations come from both processes and several
//! threads. A Treiber stack is multi-producer/multi-consumer and lock-free: a process
//! killed in the middle of a push or pop leaves the stack consistent (the head moves by one
//! compare-and-swap), so the survivor can never be blocked by a dead peer's half-done
//! operation, which a lock would risk.
//!
//! ABA: the head is `tag << 32 | index`, and every successful CAS bumps the tag. A pop that
//! read `next` of a buffer which was popped, reused and pushed back in the meantime sees a
//! different tag and retries instead of installing the stale `next`. The tag wraps after
//! 2^32 operations inside one pop's window, which is not a practical concern.
//!
//! The peer is not trusted: an index read from the head or from a link may be anything.
//! Out-of-range values are reported as [`Corrupt`] (never dereferenced), and a pop reads
//! exactly one link, so a cyclic free list cannot make us loop: at worst the peer makes us
//! hand out a buffer that is also in use, which corrupts data in shared memory (its own
//! business) but not our memory.
//!
//! Bounded: every compare-and-swap loop here and on refcounts gives up after
//! [`MAX_CAS_ATTEMPTS`] failures. Honest contention (a few threads of two processes) never
//! comes near that; a peer that rewrites the head or a refcount in a tight loop to starve
//! us gets an error instead of a spinning engine.
//!
//! Ordering: a push writes the link (Relaxed) and then publishes with a Release CAS; a pop
//! loads the head with Acquire, so the link it then reads is the pusher's. Successful CASes
//! are AcqRel so that whatever the freeing side did with the buffer happens-before the
//! allocating side's writes into it.

use core::sync::atomic::Ordering::{self, AcqRel, Acquire, Relaxed};

use super::layout::NONE;

/// What the stack needs from memory: a head word and one link per buffer. The pool
/// implements it over shared memory; the loom model over loom's atomics.
pub(crate) trait StackMem {
    fn count(&self) -> u32;
    fn load_head(&self, order: Ordering) -> u64;
    fn cas_head(&self, current: u64, new: u64) -> Result<u64, u64>;
    /// Only called with `idx < count()`.
    fn load_link(&self, idx: u32) -> u32;
    /// Only called with `idx < count()`.
    fn store_link(&self, idx: u32, next: u32);
}

/// The free list's shape is impossible (an out-of-range index in the head or a link), or
/// its head kept changing under us for [`MAX_CAS_ATTEMPTS`] tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Corrupt;

/// Failed compare-and-swaps after which a loop on shared memory gives up; see the module
/// documentation.
pub(crate) const MAX_CAS_ATTEMPTS: u32 = 1 << 16;

#[inline]
pub(crate) fn pack(tag: u32, idx: u32) -> u64 {
    (u64::from(tag) << 32) | u64::from(idx)
}

#[inline]
fn unpack(head: u64) -> (u32, u32) {
    ((head >> 32) as u32, head as u32)
}

/// Pushes buffer `idx` (< count, not on the stack, owned by the caller). `Err` if the head
/// kept changing for [`MAX_CAS_ATTEMPTS`] tries: the buffer is then not on the list.
pub(crate) fn push(mem: &impl StackMem, idx: u32) -> Result<(), Corrupt> {
    debug_assert!(idx < mem.count());
    let mut head = mem.load_head(Relaxed);
    for _ in 0..MAX_CAS_ATTEMPTS {
        let (tag, top) = unpack(head);
        mem.store_link(idx, top);
        match mem.cas_head(head, pack(tag.wrapping_add(1), idx)) {
            Ok(_) => return Ok(()),
            Err(now) => head = now,
        }
    }
    Err(Corrupt)
}

/// Pops a buffer index; `Ok(None)` when the stack is empty.
pub(crate) fn pop(mem: &impl StackMem) -> Result<Option<u32>, Corrupt> {
    let mut head = mem.load_head(Acquire);
    for _ in 0..MAX_CAS_ATTEMPTS {
        let (tag, top) = unpack(head);
        if top == NONE {
            return Ok(None);
        }
        if top >= mem.count() {
            return Err(Corrupt);
        }
        let next = mem.load_link(top);
        if next != NONE && next >= mem.count() {
            // A concurrent pop-reuse-push may have changed the link under us; that is only
            // corruption if the head has not moved since.
            let now = mem.load_head(Acquire);
            if now == head {
                return Err(Corrupt);
            }
            head = now;
            continue;
        }
        match mem.cas_head(head, pack(tag.wrapping_add(1), next)) {
            Ok(_) => return Ok(Some(top)),
            Err(now) => head = now,
        }
    }
    Err(Corrupt)
}

/// The orderings every real implementation uses for [`StackMem::cas_head`].
pub(crate) const CAS_SUCCESS: Ordering = AcqRel;
pub(crate) const CAS_FAILURE: Ordering = Acquire;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use core::sync::atomic::{AtomicU32, AtomicU64};

    struct Mem {
        head: AtomicU64,
        links: Vec<AtomicU32>,
    }

    impl StackMem for Mem {
        fn count(&self) -> u32 {
            self.links.len() as u32
        }
        fn load_head(&self, order: Ordering) -> u64 {
            self.head.load(order)
        }
        fn cas_head(&self, current: u64, new: u64) -> Result<u64, u64> {
            self.head.compare_exchange(current, new, CAS_SUCCESS, CAS_FAILURE)
        }
        fn load_link(&self, idx: u32) -> u32 {
            self.links[idx as usize].load(Relaxed)
        }
        fn store_link(&self, idx: u32, next: u32) {
            self.links[idx as usize].store(next, Relaxed)
        }
    }

    fn mem(n: u32) -> Mem {
        Mem {
            head: AtomicU64::new(pack(0, NONE)),
            links: (0..n).map(|_| AtomicU32::new(NONE)).collect(),
        }
    }

    #[test]
    fn lifo_and_empty() {
        let m = mem(3);
        assert_eq!(pop(&m), Ok(None));
        for i in 0..3 {
            push(&m, i).unwrap();
        }
        assert_eq!(pop(&m), Ok(Some(2)));
        assert_eq!(pop(&m), Ok(Some(1)));
        push(&m, 2).unwrap();
        assert_eq!(pop(&m), Ok(Some(2)));
        assert_eq!(pop(&m), Ok(Some(0)));
        assert_eq!(pop(&m), Ok(None));
    }

    /// A peer that changes the head before every one of our CASes (it always wins the
    /// race) gets an error after MAX_CAS_ATTEMPTS tries, not an engine spinning forever.
    #[test]
    fn a_head_that_never_holds_still_is_an_error_not_a_spin() {
        struct Hostile(Mem);
        impl StackMem for Hostile {
            fn count(&self) -> u32 {
                self.0.count()
            }
            fn load_head(&self, order: Ordering) -> u64 {
                self.0.load_head(order)
            }
            fn cas_head(&self, _current: u64, _new: u64) -> Result<u64, u64> {
                // The peer bumped the tag just before us, every time.
                let now = self.0.head.fetch_add(1 << 32, Relaxed) + (1 << 32);
                Err(now)
            }
            fn load_link(&self, idx: u32) -> u32 {
                self.0.load_link(idx)
            }
            fn store_link(&self, idx: u32, next: u32) {
                self.0.store_link(idx, next)
            }
        }
        let m = Hostile(mem(3));
        assert_eq!(push(&m, 1), Err(Corrupt));
        m.0.head.store(pack(0, 2), Relaxed);
        assert_eq!(pop(&m), Err(Corrupt));
        let tries = (m.0.head.load(Relaxed) >> 32) as u32;
        assert_eq!(
            tries, MAX_CAS_ATTEMPTS,
            "every try was one CAS, and then it stopped"
        );
    }

    #[test]
    fn corrupt_head_and_links_are_errors_not_panics() {
        let m = mem(3);
        m.head.store(pack(7, 3), Relaxed);
        assert_eq!(pop(&m), Err(Corrupt));
        m.head.store(pack(7, 1), Relaxed);
        m.links[1].store(99, Relaxed);
        assert_eq!(pop(&m), Err(Corrupt));
        // A cycle is not detected by pop (it reads one link) but cannot make it loop.
        m.links[1].store(1, Relaxed);
        assert_eq!(pop(&m), Ok(Some(1)));
        assert_eq!(pop(&m), Ok(Some(1)));
    }
}

/// Exhaustive interleavings of two threads allocating and freeing from a 2-buffer stack
/// (one taking both buffers, one taking one): no buffer is ever held by both at once, and
/// every buffer is back at the end. Dropping the tag bump makes this fail (ABA).
/// Run with `RUSTFLAGS="--cfg loom" cargo test -p pony-express --release --lib loom`.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::atomic::{AtomicU32, AtomicU64};
    use loom::sync::Arc;
    use loom::thread;

    const N: u32 = 2;

    struct Model {
        head: AtomicU64,
        links: [AtomicU32; N as usize],
        // Buffer payloads: loom flags any access not ordered by the stack protocol.
        data: [UnsafeCell<u32>; N as usize],
    }

    impl StackMem for Model {
        fn count(&self) -> u32 {
            N
        }
        fn load_head(&self, order: Ordering) -> u64 {
            self.head.load(order)
        }
        fn cas_head(&self, current: u64, new: u64) -> Result<u64, u64> {
            self.head.compare_exchange(current, new, CAS_SUCCESS, CAS_FAILURE)
        }
        fn load_link(&self, idx: u32) -> u32 {
            self.links[idx as usize].load(Relaxed)
        }
        fn store_link(&self, idx: u32, next: u32) {
            self.links[idx as usize].store(next, Relaxed)
        }
    }

    fn use_buf(m: &Model, i: u32, mark: u32) {
        // Exclusive use: write then read back our own mark.
        m.data[i as usize].with_mut(|p| unsafe { *p = mark });
        assert_eq!(m.data[i as usize].with(|p| unsafe { *p }), mark);
    }

    /// Takes both buffers if it can and gives them back in allocation order: the
    /// pop-pop-push sequence that makes a stale `next` in the other thread's pop an ABA hazard.
    fn hoarder(m: &Model) {
        let a = pop(m).expect("never corrupt");
        let b = pop(m).expect("never corrupt");
        for (k, i) in [a, b].into_iter().flatten().enumerate() {
            use_buf(m, i, 10 + k as u32);
        }
        for i in [a, b].into_iter().flatten() {
            push(m, i).expect("not contended that much");
        }
    }

    fn single(m: &Model) {
        if let Some(i) = pop(m).expect("never corrupt") {
            use_buf(m, i, 20);
            push(m, i).expect("not contended that much");
        }
    }

    #[test]
    fn loom_stack_exclusive_and_complete() {
        loom::model(|| {
            let m = Arc::new(Model {
                head: AtomicU64::new(pack(0, NONE)),
                links: [AtomicU32::new(NONE), AtomicU32::new(NONE)],
                data: [UnsafeCell::new(0), UnsafeCell::new(0)],
            });
            push(&*m, 0).unwrap();
            push(&*m, 1).unwrap();
            let m2 = m.clone();
            let t = thread::spawn(move || hoarder(&m2));
            single(&m);
            t.join().unwrap();
            let mut seen = [false; N as usize];
            while let Some(i) = pop(&*m).unwrap() {
                assert!(!seen[i as usize], "buffer {i} on the free list twice");
                seen[i as usize] = true;
            }
            assert_eq!(seen, [true; N as usize], "a buffer was lost");
        });
    }
}
