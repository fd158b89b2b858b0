// SPDX-License-Identifier: MIT OR Apache-2.0
//! The four AF_XDP rings: single-producer single-consumer queues in memory shared with the
//! kernel, each a power-of-two array of descriptors and two free-running `u32` indices.
//!
//! ```text
//!   producer ──► [ desc | desc | desc | ... ] ──► consumer      index & mask = slot
//!   fill (user → kernel): free UMEM frames for the kernel to receive into
//!   rx   (kernel → user): received frames             tx (user → kernel): frames to send
//!   completion (kernel → user): sent frames, free again
//! ```
//!
//! The side that produces owns the producer index and only reads the consumer index (and
//! the reverse), so one side's [`Producer`] or [`Consumer`] needs no lock: it keeps cached
//! copies of both indices and touches the shared ones only when its cache says the ring is
//! full (producer) or empty (consumer). Publishing is a release store after the descriptors
//! are written; reading the other side's index is an acquire load before the descriptors
//! are read, the pairing the kernel's `xsk_queue.h` documents. The indices wrap at 2^32
//! (they are never masked in memory); [`Producer::reserve`] and [`Consumer::peek`] compute
//! fill levels with wrapping subtraction, which the proptests below check across the wrap.

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// Where one ring lives: its two indices, its flags word and its descriptor array. The
/// memory belongs to a mapping kept alive by the owner of the ring.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RingMem<T> {
    pub(crate) producer: NonNull<AtomicU32>,
    pub(crate) consumer: NonNull<AtomicU32>,
    /// `XDP_RING_NEED_WAKEUP` lives here (fill and TX rings).
    pub(crate) flags: NonNull<AtomicU32>,
    pub(crate) descs: NonNull<T>,
    /// A power of two.
    pub(crate) size: u32,
}

/// `XDP_RING_NEED_WAKEUP`: the kernel wants a system call before it looks at the ring again.
const NEED_WAKEUP: u32 = 1;

impl<T> RingMem<T> {
    fn producer(&self) -> &AtomicU32 {
        // SAFETY: the owner keeps the mapping alive for as long as the ring exists.
        unsafe { self.producer.as_ref() }
    }
    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as above.
        unsafe { self.consumer.as_ref() }
    }
    fn slot(&self, index: u32) -> *mut T {
        // SAFETY: the mask keeps the offset inside the `size`-element array.
        unsafe { self.descs.as_ptr().add((index & (self.size - 1)) as usize) }
    }
    /// Whether the kernel asked for a wakeup (`need_wakeup`).
    pub(crate) fn needs_wakeup(&self) -> bool {
        // SAFETY: as above.
        unsafe { self.flags.as_ref() }.load(Ordering::Relaxed) & NEED_WAKEUP != 0
    }
}

/// The producing side of a ring (fill and TX for us).
#[derive(Debug)]
pub(crate) struct Producer<T: Copy> {
    mem: RingMem<T>,
    /// Our producer index: slots before it are published or reserved.
    cached_prod: u32,
    /// The consumer index as last read.
    cached_cons: u32,
    /// Reserved but not yet published.
    reserved: u32,
    _t: PhantomData<T>,
}

// SAFETY: a ring side is used by one thread at a time (the engine's); the memory it points
// into is a mapping owned alongside it.
unsafe impl<T: Copy> Send for Producer<T> {}
unsafe impl<T: Copy> Send for Consumer<T> {}

impl<T: Copy> Producer<T> {
    pub(crate) fn new(mem: RingMem<T>) -> Self {
        let cached_prod = mem.producer().load(Ordering::Relaxed);
        let cached_cons = mem.consumer().load(Ordering::Acquire);
        Self {
            mem,
            cached_prod,
            cached_cons,
            reserved: 0,
            _t: PhantomData,
        }
    }

    /// Free slots, refreshing the consumer index only when the cache says fewer than `want`.
    pub(crate) fn free(&mut self, want: u32) -> u32 {
        let free = self.mem.size - self.cached_prod.wrapping_sub(self.cached_cons);
        if free >= want {
            return free;
        }
        self.cached_cons = self.mem.consumer().load(Ordering::Acquire);
        self.mem.size - self.cached_prod.wrapping_sub(self.cached_cons)
    }

    /// Reserves up to `n` slots (fewer if the ring is fuller); returns how many. Fill them
    /// with [`Producer::write`] (0-based within the reservation), then [`Producer::submit`].
    pub(crate) fn reserve(&mut self, n: u32) -> u32 {
        let n = n.min(self.free(n));
        self.reserved = n;
        n
    }

    /// Writes the `i`th reserved slot.
    pub(crate) fn write(&mut self, i: u32, desc: T) {
        assert!(i < self.reserved, "write outside the reservation");
        // SAFETY: a reserved slot is ours until published; the kernel does not read it.
        unsafe {
            self.mem
                .slot(self.cached_prod.wrapping_add(i))
                .write_volatile(desc)
        }
    }

    /// Publishes the first `n` reserved slots.
    pub(crate) fn submit(&mut self, n: u32) {
        assert!(n <= self.reserved, "submitting more than was reserved");
        self.cached_prod = self.cached_prod.wrapping_add(n);
        self.reserved = 0;
        self.mem.producer().store(self.cached_prod, Ordering::Release);
    }

    /// Slots published and not yet consumed, as last seen.
    pub(crate) fn outstanding(&mut self) -> u32 {
        self.cached_cons = self.mem.consumer().load(Ordering::Acquire);
        self.cached_prod.wrapping_sub(self.cached_cons)
    }

    pub(crate) fn needs_wakeup(&self) -> bool {
        self.mem.needs_wakeup()
    }
}

/// The consuming side of a ring (RX and completion for us).
#[derive(Debug)]
pub(crate) struct Consumer<T: Copy> {
    mem: RingMem<T>,
    cached_prod: u32,
    cached_cons: u32,
    _t: PhantomData<T>,
}

impl<T: Copy> Consumer<T> {
    pub(crate) fn new(mem: RingMem<T>) -> Self {
        let cached_cons = mem.consumer().load(Ordering::Relaxed);
        let cached_prod = mem.producer().load(Ordering::Acquire);
        Self {
            mem,
            cached_prod,
            cached_cons,
            _t: PhantomData,
        }
    }

    /// Entries ready to read, up to `n`, refreshing the producer index when the cache has
    /// fewer. Read them with [`Consumer::read`], then [`Consumer::release`] them.
    pub(crate) fn peek(&mut self, n: u32) -> u32 {
        let mut ready = self.cached_prod.wrapping_sub(self.cached_cons);
        if ready < n {
            self.cached_prod = self.mem.producer().load(Ordering::Acquire);
            ready = self.cached_prod.wrapping_sub(self.cached_cons);
        }
        // A producer that published more than the ring holds is broken; never read past it.
        ready.min(self.mem.size).min(n)
    }

    /// Whether anything is ready, reading the shared producer index (any thread's view).
    #[cfg(test)]
    pub(crate) fn is_ready(&self) -> bool {
        self.mem.producer().load(Ordering::Acquire) != self.cached_cons
    }

    /// The `i`th ready entry.
    pub(crate) fn read(&self, i: u32) -> T {
        // SAFETY: a published slot is not written again until we release it.
        unsafe { self.mem.slot(self.cached_cons.wrapping_add(i)).read_volatile() }
    }

    /// Gives the first `n` peeked entries back to the producer.
    pub(crate) fn release(&mut self, n: u32) {
        self.cached_cons = self.cached_cons.wrapping_add(n);
        self.mem.consumer().store(self.cached_cons, Ordering::Release);
    }
}

/// A ring in ordinary memory: the unit tests' stand-in for a kernel mapping.
#[cfg(test)]
pub(crate) mod heap {
    use super::*;

    /// Owns the indices and descriptors; hands out both sides.
    pub(crate) struct HeapRing<T> {
        words: Box<[AtomicU32; 3]>,
        descs: Box<[T]>,
    }

    impl<T: Copy + Default> HeapRing<T> {
        pub(crate) fn new(size: u32, start: u32) -> Self {
            Self {
                words: Box::new([AtomicU32::new(start), AtomicU32::new(start), AtomicU32::new(0)]),
                descs: vec![T::default(); size as usize].into_boxed_slice(),
            }
        }
        pub(crate) fn mem(&mut self) -> RingMem<T> {
            RingMem {
                producer: NonNull::from(&self.words[0]),
                consumer: NonNull::from(&self.words[1]),
                flags: NonNull::from(&self.words[2]),
                descs: NonNull::new(self.descs.as_mut_ptr()).unwrap(),
                size: self.descs.len() as u32,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::heap::HeapRing;
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    #[derive(Debug, Clone)]
    enum Op {
        Produce(u32),
        Consume(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![(0u32..40).prop_map(Op::Produce), (0u32..40).prop_map(Op::Consume)]
    }

    proptest! {
        /// Whatever the interleaving of batched produce and consume, and wherever the indices
        /// start (across the 2^32 wrap), the consumer sees exactly the produced sequence, in
        /// order, and the producer never overwrites an unconsumed entry (the ring never holds
        /// more than its size).
        #[test]
        fn fifo_across_the_wrap(
            log_size in 0u32..6,
            start in prop_oneof![Just(u32::MAX - 20), Just(0u32), any::<u32>()],
            ops in proptest::collection::vec(op(), 1..200),
        ) {
            let size = 1u32 << log_size;
            let mut ring = HeapRing::<u64>::new(size, start);
            let mut prod = Producer::new(ring.mem());
            let mut cons = Consumer::new(ring.mem());
            let mut model = VecDeque::new();
            let mut next = 0u64;
            for op in ops {
                match op {
                    Op::Produce(n) => {
                        let got = prod.reserve(n);
                        prop_assert_eq!(got, n.min(size - model.len() as u32));
                        for i in 0..got {
                            prod.write(i, next);
                            model.push_back(next);
                            next += 1;
                        }
                        prod.submit(got);
                    }
                    Op::Consume(n) => {
                        let got = cons.peek(n);
                        prop_assert_eq!(got as usize, (n as usize).min(model.len()));
                        for i in 0..got {
                            prop_assert_eq!(Some(cons.read(i)), model.pop_front());
                        }
                        cons.release(got);
                    }
                }
                prop_assert_eq!(prod.outstanding() as usize, model.len());
                prop_assert_eq!(cons.is_ready(), !model.is_empty());
            }
        }

        /// A producer that claims more entries than the ring holds (a broken kernel, or
        /// memory scribbled on) never makes the consumer read more than one ring's worth.
        #[test]
        fn bogus_producer_index_is_bounded(log_size in 0u32..6, claim in any::<u32>(), n in any::<u32>()) {
            let size = 1u32 << log_size;
            let mut ring = HeapRing::<u64>::new(size, 0);
            let mem = ring.mem();
            let mut cons = Consumer::new(mem);
            // SAFETY: the test owns the ring.
            unsafe { mem.producer.as_ref() }.store(claim, Ordering::Release);
            prop_assert!(cons.peek(n) <= size);
        }
    }

    #[test]
    fn partial_submit_keeps_the_rest_unpublished() {
        let mut ring = HeapRing::<u64>::new(8, 0);
        let mut prod = Producer::new(ring.mem());
        let mut cons = Consumer::new(ring.mem());
        assert_eq!(prod.reserve(4), 4);
        for i in 0..4 {
            prod.write(i, u64::from(i));
        }
        prod.submit(2);
        assert_eq!(cons.peek(8), 2);
        assert_eq!((cons.read(0), cons.read(1)), (0, 1));
    }
}
