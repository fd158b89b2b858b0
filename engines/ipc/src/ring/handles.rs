//! The two ends of a ring: [`Producer`] writes slots and publishes them, [`Consumer`] copies
//! them out and frees them.
//!
//! Both wrap the private index state of `super::index` around the slot format of
//! `super::layout`: a little-endian `u32` length, then the bytes. Neither end is `Sync` or
//! `Clone`: the protocol allows exactly one thread per end.
//!
//! The consumer never borrows a slot: the producer may be a hostile process that rewrites
//! a published slot, so the length prefix is loaded once and checked, and the bytes are
//! copied in with [`crate::peer::copy_in`] (the safety argument lives there).

use core::cell::Cell;
use core::marker::PhantomData;
use core::ptr;
use std::sync::Arc;

use super::index::{ConsumerIndex, ProducerIndex};
use super::layout::LEN_PREFIX;
use super::Shared;

/// Why [`Producer::push`] did not enqueue a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// All slots hold unread messages; retry after the consumer catches up.
    #[error("ring is full")]
    Full,
    /// The message does not fit in a slot; it will never fit.
    #[error("message of {len} bytes exceeds the slot payload of {max} bytes")]
    TooLarge {
        /// Length of the message.
        len: usize,
        /// Largest message the ring takes.
        max: usize,
    },
}

/// Why the consumer could not read the next message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PopError {
    /// The caller's buffer is shorter than the next message, which stays in the ring.
    #[error("next message is {needed} bytes, buffer holds {len}")]
    BufferTooSmall {
        /// Length of the next message.
        needed: usize,
        /// Length of the caller's buffer.
        len: usize,
    },
    /// The producer index claims more messages than there are slots: the producer broke
    /// the protocol or the memory was overwritten.
    #[error("producer index {producer} is inconsistent with consumer index {consumer}")]
    Corrupt {
        /// Producer index read from shared memory.
        producer: u64,
        /// Our own index.
        consumer: u64,
    },
    /// A slot's length prefix is larger than a slot (same causes as `Corrupt`).
    #[error("slot length prefix {len} exceeds the slot payload of {max} bytes")]
    BadLength {
        /// Length read from the slot.
        len: usize,
        /// Largest valid length.
        max: usize,
    },
}

// `Cell` is `Send` but not `Sync`: exactly the bound we want for each end.
type NotSync = PhantomData<Cell<()>>;

/// The producing end of a ring. `Send`, not `Sync`: one thread at a time.
#[derive(Debug)]
pub struct Producer {
    shared: Arc<Shared>,
    index: ProducerIndex,
    _not_sync: NotSync,
}

impl Producer {
    pub(super) fn new(shared: Arc<Shared>, tail: u64, head: u64) -> Self {
        Self {
            shared,
            index: ProducerIndex::new(tail, head),
            _not_sync: PhantomData,
        }
    }

    /// Copies `msg` into the next free slot and publishes it. Never blocks.
    pub fn push(&mut self, msg: &[u8]) -> Result<(), PushError> {
        let max = self.shared.max_message_len();
        if msg.len() > max {
            return Err(PushError::TooLarge { len: msg.len(), max });
        }
        let seq = self
            .index
            .reserve(self.shared.consumer(), self.shared.capacity)
            .ok_or(PushError::Full)?;
        let slot = self.shared.slot(seq);
        let len = (msg.len() as u32).to_le_bytes();
        // SAFETY: the slot is slot_size = LEN_PREFIX + max bytes inside the region, and
        // `reserve` proved the consumer is done with it, so nobody else accesses it until
        // `publish` hands it over.
        unsafe {
            ptr::copy_nonoverlapping(len.as_ptr(), slot, LEN_PREFIX);
            ptr::copy_nonoverlapping(msg.as_ptr(), slot.add(LEN_PREFIX), msg.len());
        }
        self.index.publish(self.shared.producer());
        Ok(())
    }

    /// A thread-safe view of this ring's fill level.
    pub fn probe(&self) -> super::RingProbe {
        super::RingProbe {
            shared: self.shared.clone(),
        }
    }

    /// Largest message [`Producer::push`] accepts.
    pub fn max_message_len(&self) -> usize {
        self.shared.max_message_len()
    }

    /// The ring's region, e.g. to hand its descriptor to a process that takes this end over.
    pub fn shared_mem(&self) -> &crate::SharedMem {
        &self.shared.mem
    }
}

/// The consuming end of a ring. `Send`, not `Sync`: one thread at a time.
#[derive(Debug)]
pub struct Consumer {
    shared: Arc<Shared>,
    index: ConsumerIndex,
    _not_sync: NotSync,
}

impl Consumer {
    pub(super) fn new(shared: Arc<Shared>, head: u64, tail: u64) -> Self {
        Self {
            shared,
            index: ConsumerIndex::new(head, tail),
            _not_sync: PhantomData,
        }
    }

    /// A thread-safe view of this ring's fill level.
    pub fn probe(&self) -> super::RingProbe {
        super::RingProbe {
            shared: self.shared.clone(),
        }
    }

    /// The ring's region, e.g. to hand its descriptor to a process that takes this end over.
    pub fn shared_mem(&self) -> &crate::SharedMem {
        &self.shared.mem
    }

    /// Looks at the oldest message without consuming it: its length is known (checked
    /// against the slot size) and its bytes can be copied out with [`Peeked::copy_into`];
    /// it stays in the ring until [`Peeked::release`]. `Ok(None)` when the ring is empty.
    pub fn peek(&mut self) -> Result<Option<Peeked<'_>>, PopError> {
        let seq = match self.index.peek(self.shared.producer(), self.shared.capacity) {
            Ok(Some(seq)) => seq,
            Ok(None) => return Ok(None),
            Err(c) => {
                return Err(PopError::Corrupt {
                    producer: c.producer,
                    consumer: c.consumer,
                })
            }
        };
        let slot = self.shared.slot(seq);
        // SAFETY: the slot is in bounds, 8-aligned (slots start at offset 192 and slot sizes
        // are multiples of 8), and was published to us by the Acquire in `peek`.
        let len = u32::from_le(unsafe { crate::peer::load_u32(slot.cast::<u32>()) }) as usize;
        let max = self.shared.max_message_len();
        if len > max {
            return Err(PopError::BadLength { len, max });
        }
        Ok(Some(Peeked {
            // SAFETY: LEN_PREFIX + len <= slot_size, so the payload is inside the slot.
            data: unsafe { slot.add(LEN_PREFIX) },
            len,
            consumer: self,
        }))
    }

    /// Copies the oldest message into `buf` and frees its slot; returns its length, or
    /// `Ok(None)` when the ring is empty. If `buf` is too short the message stays queued.
    pub fn try_pop(&mut self, buf: &mut [u8]) -> Result<Option<usize>, PopError> {
        let Some(msg) = self.peek()? else {
            return Ok(None);
        };
        let n = msg.copy_into(buf)?.len();
        msg.release();
        Ok(Some(n))
    }

    /// Largest message the producer can push.
    pub fn max_message_len(&self) -> usize {
        self.shared.max_message_len()
    }
}

/// The oldest message, found by [`Consumer::peek`]: its length, and its bytes to copy out.
/// Dropping it without [`Peeked::release`] leaves the message at the head of the ring.
#[derive(Debug)]
pub struct Peeked<'a> {
    consumer: &'a mut Consumer,
    data: *const u8,
    len: usize,
}

impl Peeked<'_> {
    /// Length of the message (validated against the slot size).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies the message into the front of `buf` and returns that part of `buf`. The
    /// copy is the only view of the bytes: decode it, never the slot. If `buf` is too
    /// short nothing is copied.
    pub fn copy_into<'b>(&self, buf: &'b mut [u8]) -> Result<&'b mut [u8], PopError> {
        let len = buf.len();
        let Some(dst) = buf.get_mut(..self.len) else {
            return Err(PopError::BufferTooSmall {
                needed: self.len,
                len,
            });
        };
        // SAFETY: `data..data+len` lies in a published slot of the mapping `consumer` keeps
        // alive; a producer that rewrites it meanwhile only changes what we copy
        // (crate::peer).
        unsafe { crate::peer::copy_in(dst, self.data) };
        Ok(dst)
    }

    /// The message as a new vector (tests and cold paths).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.len];
        // Cannot fail: the buffer is exactly as long.
        let _ = self.copy_into(&mut v);
        v
    }

    /// Frees the slot for the producer; the message cannot be copied after this
    /// (enforced: `self` is consumed).
    pub fn release(self) {
        self.consumer.index.release(self.consumer.shared.consumer());
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::super::Ring;
    use super::*;
    use crate::shm::SharedMem;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    fn ring(capacity: u64, slot_size: u32) -> (Producer, Consumer) {
        let len = Ring::required_len(capacity, slot_size).unwrap();
        let mem = SharedMem::create("ring-test", len).unwrap();
        Ring::create(mem, capacity, slot_size).unwrap().split()
    }

    #[test]
    fn handles_are_send() {
        fn send<T: Send>() {}
        send::<Producer>();
        send::<Consumer>();
    }

    #[test]
    fn empty_full_and_wraparound() {
        let (mut p, mut c) = ring(4, 16);
        let mut buf = [0u8; 12];
        assert_eq!(c.try_pop(&mut buf), Ok(None));
        // Several laps around the 4 slots, with the ring filled each time.
        for lap in 0u8..5 {
            for i in 0..4 {
                p.push(&[lap, i]).unwrap();
            }
            assert_eq!(p.push(b"x"), Err(PushError::Full));
            for i in 0..4 {
                assert_eq!(c.try_pop(&mut buf), Ok(Some(2)));
                assert_eq!(&buf[..2], &[lap, i]);
            }
            assert_eq!(c.try_pop(&mut buf), Ok(None));
        }
    }

    #[test]
    fn message_sizes() {
        let (mut p, mut c) = ring(2, 16);
        assert_eq!(p.max_message_len(), 12);
        assert_eq!(p.push(&[0; 13]), Err(PushError::TooLarge { len: 13, max: 12 }));
        p.push(&[7; 12]).unwrap();
        p.push(b"").unwrap();
        let mut small = [0u8; 4];
        assert_eq!(
            c.try_pop(&mut small),
            Err(PopError::BufferTooSmall { needed: 12, len: 4 })
        );
        let mut buf = [0u8; 12];
        assert_eq!(c.try_pop(&mut buf), Ok(Some(12)), "still queued");
        assert_eq!(c.try_pop(&mut buf), Ok(Some(0)));
    }

    #[test]
    fn peek_then_release() {
        let (mut p, mut c) = ring(2, 16);
        p.push(b"ab").unwrap();
        p.push(b"cd").unwrap();
        assert_eq!(c.peek().unwrap().unwrap().to_vec(), b"ab");
        // Dropped without release: still there, and the ring is still full.
        assert_eq!(p.push(b"x"), Err(PushError::Full));
        let m = c.peek().unwrap().unwrap();
        assert_eq!(m.len(), 2);
        let mut small = [0u8; 1];
        assert_eq!(
            m.copy_into(&mut small).unwrap_err(),
            PopError::BufferTooSmall { needed: 2, len: 1 }
        );
        let mut buf = [0u8; 8];
        assert_eq!(m.copy_into(&mut buf).unwrap(), b"ab");
        m.release();
        p.push(b"ef").unwrap();
        assert_eq!(c.peek().unwrap().unwrap().to_vec(), b"cd");
    }

    #[test]
    fn corrupt_length_prefix_is_an_error() {
        let len = Ring::required_len(2, 16).unwrap();
        let mem = SharedMem::create("ring-test", len).unwrap();
        let ring = Ring::create(mem, 2, 16).unwrap();
        let base = ring.shared_mem().as_ptr();
        let (mut p, mut c) = ring.split();
        p.push(b"ok").unwrap();
        // SAFETY: slot 0's length prefix is at offset 192; nothing else is accessing it.
        unsafe { base.add(192).cast::<u32>().write(1000u32.to_le()) };
        assert_eq!(c.peek().unwrap_err(), PopError::BadLength { len: 1000, max: 12 });
    }

    /// A producer that keeps rewriting a published slot (payload and length prefix), as a
    /// hostile app could, while the consumer peeks and copies it in: every outcome is a
    /// checked length with bytes from the scribbler, or a counted `BadLength`, never a read
    /// outside the slot.
    #[test]
    fn scribbled_slot_is_copied_in_not_borrowed() {
        use std::os::fd::AsFd;
        use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
        let len = Ring::required_len(2, 64).unwrap();
        let ring = Ring::create(SharedMem::create("ring-test", len).unwrap(), 2, 64).unwrap();
        let fd = ring.shared_mem().as_fd().try_clone_to_owned().unwrap();
        let peer = SharedMem::from_fd(fd).unwrap();
        let (mut p, mut c) = ring.split();
        p.push(&[1; 60]).unwrap();
        let stop = AtomicBool::new(false);
        let (mut ok, mut bad) = (0u32, 0u32);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut i = 0u32;
                while !stop.load(Relaxed) {
                    i = i.wrapping_add(1);
                    let fake_len = if i.is_multiple_of(3) { 1000 + i } else { i % 61 };
                    // SAFETY: slot 0 (offset 192..256) of the mapping; volatile, like a peer.
                    unsafe {
                        peer.as_ptr()
                            .add(192)
                            .cast::<u32>()
                            .write_volatile(fake_len.to_le());
                        for j in 0..60 {
                            peer.as_ptr().add(196 + j).write_volatile(i as u8 | 1);
                        }
                    }
                }
            });
            let mut buf = [0u8; 60];
            for _ in 0..50_000 {
                match c.peek() {
                    Ok(Some(m)) => {
                        let got = m.copy_into(&mut buf).unwrap();
                        assert!(got.len() <= 60);
                        assert!(got.iter().all(|b| b & 1 == 1), "only bytes someone wrote");
                        ok += 1;
                    }
                    Err(PopError::BadLength { len, max: 60 }) => {
                        assert!(len > 60);
                        bad += 1;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            stop.store(true, Relaxed);
        });
        assert_eq!(ok + bad, 50_000);
        // The indices are untouched by the scribbling: with a sane prefix again, the
        // message releases and the ring is empty.
        // SAFETY: as above; the scribbler has stopped.
        unsafe { peer.as_ptr().add(192).cast::<u32>().write_volatile(5u32.to_le()) };
        c.peek().unwrap().unwrap().release();
        assert_eq!(c.try_pop(&mut [0u8; 60]), Ok(None));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(Vec<u8>),
        Pop(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..28).prop_map(Op::Push),
            (0usize..28).prop_map(Op::Pop),
        ]
    }

    proptest! {
        /// Any interleaving of pushes and pops behaves like a bounded `VecDeque`.
        #[test]
        fn matches_vecdeque_model(ops in proptest::collection::vec(op(), 0..300)) {
            const CAP: usize = 8;
            let (mut p, mut c) = ring(CAP as u64, 24);
            let mut model: VecDeque<Vec<u8>> = VecDeque::new();
            for op in ops {
                match op {
                    Op::Push(msg) => {
                        let expect = if msg.len() > 20 {
                            Err(PushError::TooLarge { len: msg.len(), max: 20 })
                        } else if model.len() == CAP {
                            Err(PushError::Full)
                        } else {
                            model.push_back(msg.clone());
                            Ok(())
                        };
                        prop_assert_eq!(p.push(&msg), expect);
                    }
                    Op::Pop(buf_len) => {
                        let mut buf = vec![0u8; buf_len];
                        let expect = match model.front() {
                            None => Ok(None),
                            Some(m) if m.len() > buf_len => Err(PopError::BufferTooSmall {
                                needed: m.len(),
                                len: buf_len,
                            }),
                            Some(_) => Ok(Some(model.pop_front().unwrap())),
                        };
                        let got = c.try_pop(&mut buf).map(|n| n.map(|n| buf[..n].to_vec()));
                        prop_assert_eq!(got, expect);
                    }
                }
            }
        }
    }

    /// Two threads, a million sequence-numbered messages of varying length: each must
    /// arrive exactly once, in order, intact.
    #[test]
    fn two_thread_stress() {
        const N: u64 = 1_000_000;
        let (mut p, mut c) = ring(64, 32);
        let producer = std::thread::spawn(move || {
            for seq in 0..N {
                let mut msg = [0u8; 24];
                msg[..8].copy_from_slice(&seq.to_le_bytes());
                let len = 8 + (seq % 17) as usize;
                msg[8..len].fill(seq as u8);
                while p.push(&msg[..len]) == Err(PushError::Full) {
                    std::hint::spin_loop();
                }
            }
        });
        let mut buf = [0u8; 28];
        let mut expect = 0u64;
        while expect < N {
            let Some(n) = c.try_pop(&mut buf).unwrap() else {
                std::hint::spin_loop();
                continue;
            };
            assert_eq!(n, 8 + (expect % 17) as usize);
            assert_eq!(u64::from_le_bytes(buf[..8].try_into().unwrap()), expect);
            assert!(buf[8..n].iter().all(|&b| b == expect as u8));
            expect += 1;
        }
        producer.join().unwrap();
        assert_eq!(c.try_pop(&mut buf), Ok(None));
    }
}
