//! The index protocol of the ring, separated from memory layout so that `loom` can check it.
//!
//! Both indices are free-running `u64` counters of messages: the producer index counts pushes,
//! the consumer index counts pops, slot `i % capacity` holds message `i`, and
//! `producer - consumer` is the fill level. At one message per nanosecond a `u64` lasts
//! 584 years, so there is no wrap ambiguity and no "one empty slot" trick.
//!
//! Each side owns one index and is its only writer. It publishes with `Release` after it is
//! done with the slot (producer: message written; consumer: message read), and reads the other
//! side's index with `Acquire`, so the slot contents are handed over with the index. Each side
//! also keeps a cached copy of the other's index and only reloads it when the cache says the
//! ring is full (producer) or empty (consumer): in steady state each side touches the other's
//! cache line once per batch of messages, not once per message (the rte_ring / SPSC-queue trick).
//!
//! The peer may be another process that we do not control, so values read from its index are
//! checked: a fill level above capacity is reported as corruption rather than trusted.

use core::sync::atomic::Ordering;

/// An index shared with the other side: the real ring uses `core`'s `AtomicU64` in shared
/// memory; the loom model uses loom's.
pub(crate) trait SharedIndex {
    fn load(&self, order: Ordering) -> u64;
    fn store(&self, value: u64, order: Ordering);
}

impl SharedIndex for core::sync::atomic::AtomicU64 {
    #[inline]
    fn load(&self, order: Ordering) -> u64 {
        self.load(order)
    }
    #[inline]
    fn store(&self, value: u64, order: Ordering) {
        self.store(value, order)
    }
}

#[cfg(all(test, loom))]
impl SharedIndex for loom::sync::atomic::AtomicU64 {
    fn load(&self, order: Ordering) -> u64 {
        self.load(order)
    }
    fn store(&self, value: u64, order: Ordering) {
        self.store(value, order)
    }
}

/// The peer's index moved in a way the protocol forbids (e.g. memory was overwritten).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Corrupt {
    pub producer: u64,
    pub consumer: u64,
}

/// Producer-private state: its own index and a cached copy of the consumer's.
#[derive(Debug)]
pub(crate) struct ProducerIndex {
    tail: u64,
    cached_head: u64,
}

impl ProducerIndex {
    pub fn new(tail: u64, head: u64) -> Self {
        Self {
            tail,
            cached_head: head,
        }
    }

    /// Returns the sequence number of the next free slot, or `None` when the ring is full.
    /// A consumer index that runs ahead of ours or too far behind is treated as full: the
    /// producer never overwrites a slot it cannot prove is free.
    #[inline]
    pub fn reserve(&mut self, head: &impl SharedIndex, capacity: u64) -> Option<u64> {
        if self.tail.wrapping_sub(self.cached_head) >= capacity {
            self.cached_head = head.load(Ordering::Acquire);
            if self.tail.wrapping_sub(self.cached_head) >= capacity {
                return None;
            }
        }
        Some(self.tail)
    }

    /// Publishes the slot returned by the last `reserve`; its contents must be written.
    #[inline]
    pub fn publish(&mut self, tail: &impl SharedIndex) {
        self.tail = self.tail.wrapping_add(1);
        tail.store(self.tail, Ordering::Release);
    }
}

/// Consumer-private state: its own index and a cached copy of the producer's.
#[derive(Debug)]
pub(crate) struct ConsumerIndex {
    head: u64,
    cached_tail: u64,
}

impl ConsumerIndex {
    pub fn new(head: u64, tail: u64) -> Self {
        Self {
            head,
            cached_tail: tail,
        }
    }

    /// Returns the sequence number of the oldest unread message, `None` when empty.
    #[inline]
    pub fn peek(&mut self, tail: &impl SharedIndex, capacity: u64) -> Result<Option<u64>, Corrupt> {
        if self.head == self.cached_tail {
            let t = tail.load(Ordering::Acquire);
            if t.wrapping_sub(self.head) > capacity {
                return Err(Corrupt {
                    producer: t,
                    consumer: self.head,
                });
            }
            self.cached_tail = t;
            if self.head == self.cached_tail {
                return Ok(None);
            }
        }
        Ok(Some(self.head))
    }

    /// Frees the slot returned by the last `peek`; the consumer must be done reading it.
    #[inline]
    pub fn release(&mut self, head: &impl SharedIndex) {
        self.head = self.head.wrapping_add(1);
        head.store(self.head, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicU64;

    #[test]
    fn full_and_empty() {
        let (head, tail) = (AtomicU64::new(0), AtomicU64::new(0));
        let mut p = ProducerIndex::new(0, 0);
        let mut c = ConsumerIndex::new(0, 0);
        assert_eq!(c.peek(&tail, 2), Ok(None));
        for i in 0..2 {
            assert_eq!(p.reserve(&head, 2), Some(i));
            p.publish(&tail);
        }
        assert_eq!(p.reserve(&head, 2), None);
        assert_eq!(c.peek(&tail, 2), Ok(Some(0)));
        c.release(&head);
        assert_eq!(p.reserve(&head, 2), Some(2));
    }

    #[test]
    fn runaway_producer_index_is_corruption() {
        let tail = AtomicU64::new(10);
        let mut c = ConsumerIndex::new(0, 0);
        assert!(c.peek(&tail, 4).is_err());
    }

    #[test]
    fn consumer_index_ahead_means_full() {
        // A consumer index ahead of ours is impossible; it must make the ring look full,
        // never hand out a slot.
        let head = AtomicU64::new(5);
        let mut p = ProducerIndex::new(0, 5);
        assert_eq!(p.reserve(&head, 4), None);
    }
}

/// Exhaustive interleaving check of the protocol with a capacity-2 ring of `u64` payloads.
/// Run with `RUSTFLAGS="--cfg loom" cargo test -p snap-engines --release --lib loom`.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::atomic::AtomicU64;
    use loom::sync::Arc;
    use loom::thread;

    const CAP: u64 = 2;
    const MESSAGES: u64 = 3;

    struct ModelRing {
        head: AtomicU64,
        tail: AtomicU64,
        // loom's UnsafeCell reports any slot access not ordered by the index protocol.
        slots: [UnsafeCell<u64>; CAP as usize],
    }

    #[test]
    fn loom_spsc_exactly_once_in_order() {
        loom::model(|| {
            let ring = Arc::new(ModelRing {
                head: AtomicU64::new(0),
                tail: AtomicU64::new(0),
                slots: [UnsafeCell::new(0), UnsafeCell::new(0)],
            });
            let r = ring.clone();
            let producer = thread::spawn(move || {
                let mut p = ProducerIndex::new(0, 0);
                for msg in 1..=MESSAGES {
                    let seq = loop {
                        match p.reserve(&r.head, CAP) {
                            Some(seq) => break seq,
                            None => thread::yield_now(),
                        }
                    };
                    r.slots[(seq % CAP) as usize].with_mut(|s| unsafe { *s = msg * 10 });
                    p.publish(&r.tail);
                }
            });
            let mut c = ConsumerIndex::new(0, 0);
            for expect in 1..=MESSAGES {
                let seq = loop {
                    match c.peek(&ring.tail, CAP).expect("no corruption") {
                        Some(seq) => break seq,
                        None => thread::yield_now(),
                    }
                };
                assert_eq!(seq, expect - 1, "in order, none skipped");
                let got = ring.slots[(seq % CAP) as usize].with(|s| unsafe { *s });
                assert_eq!(got, expect * 10, "payload written before publish is visible");
                c.release(&ring.head);
            }
            producer.join().unwrap();
            assert_eq!(c.peek(&ring.tail, CAP), Ok(None), "nothing duplicated");
        });
    }
}
