//! A lock-free single-producer/single-consumer ring of variable-length messages in shared
//! memory, usable between threads or between processes.
//!
//! It is the queue that feeds engines: an application (or another engine) pushes, the
//! engine pops, and neither ever takes a lock or makes a system call on the data path.
//!
//! ```text
//!   producer process                 SharedMem (memfd)                 consumer process
//!  ┌──────────────┐    ┌──────────────────────────────────────────┐   ┌──────────────┐
//!  │ Producer     │───▶│ header │ prod idx │ cons idx │ slot slot …│◀──│ Consumer     │
//!  │ cached cons  │    └──────────────────────────────────────────┘   │ cached prod  │
//!  └──────────────┘                                                   └──────────────┘
//! ```
//!
//! One side calls [`Ring::create`] on a fresh [`SharedMem`]; the other maps the same memfd
//! with [`SharedMem::from_fd`] and calls [`Ring::attach`], which validates the header and
//! refuses a malformed or truncated region with a [`RingError`]. A [`Ring`] turns into one
//! [`Producer`] and/or one [`Consumer`]; both are `Send` but not `Sync` and not `Clone`, so
//! within a process there is exactly one of each per `Ring` value. Across processes (or if
//! `attach` is called twice on one region) keeping to one producer and one consumer is the
//! caller's contract: the ring cannot see the other process.
//!
//! Memory safety never depends on the peer: indices and length prefixes read from shared
//! memory are checked before use, and message bytes are copied in ([`crate::peer`]), never
//! borrowed. A peer that breaks the protocol can make us read garbage bytes or report
//! [`PopError::Corrupt`] or [`PopError::BadLength`], but never read or write outside the
//! region.
//!
//! `index` holds the ordering protocol (checked with `loom`), `layout` the header format
//! and its validation, `handles` the producer and consumer.

#[cfg(not(loom))]
mod fuzz;
mod handles;
mod index;
mod layout;

use std::sync::Arc;

#[cfg(not(loom))]
pub use fuzz::{fuzz_consumer, RingFuzzOutcome};
pub use handles::{Consumer, Peeked, PopError, Producer, PushError};

use core::mem::offset_of;
use core::sync::atomic::{AtomicU64, Ordering::Acquire};

use crate::shm::SharedMem;
use layout::{Header, IndexLine, Meta, LEN_PREFIX, MAGIC, SLOTS_OFFSET, VERSION};

/// Why a ring could not be created in, or attached to, a region.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// Capacity must be a non-zero power of two (slot lookup is a mask).
    #[error("ring capacity {0} is not a non-zero power of two")]
    InvalidCapacity(u64),
    /// Slot size must be a multiple of 8 and leave room for the 4-byte length prefix.
    #[error("ring slot size {0} is not a multiple of 8 greater than 4")]
    InvalidSlotSize(u32),
    /// `capacity * slot_size` overflows the address space.
    #[error("ring of {capacity} slots of {slot_size} bytes does not fit in memory")]
    TooBig {
        /// Requested slot count.
        capacity: u64,
        /// Requested slot size.
        slot_size: u32,
    },
    /// The region is smaller than the header, or than the header says the ring is.
    #[error("region of {len} bytes is too small for the ring ({needed} bytes needed)")]
    Truncated {
        /// Bytes the ring needs.
        needed: usize,
        /// Bytes the region has.
        len: usize,
    },
    /// The region does not start with the ring's magic number: not a ring.
    #[error("not a ring: bad magic {0:#018x}")]
    BadMagic(u64),
    /// The region was written by an incompatible version of this code.
    #[error("ring layout version {found} is not supported (this build supports {supported})")]
    UnsupportedVersion {
        /// Version in the header.
        found: u32,
        /// Version this build writes and reads.
        supported: u32,
    },
    /// The indices in the header cannot both be right (consumer ahead of producer, or
    /// more messages in flight than slots).
    #[error("ring indices are inconsistent: producer {producer}, consumer {consumer}")]
    CorruptIndices {
        /// Producer index in the header.
        producer: u64,
        /// Consumer index in the header.
        consumer: u64,
    },
}

/// The mapping plus the validated shape; shared by the producer and consumer handles.
#[derive(Debug)]
struct Shared {
    mem: SharedMem,
    capacity: u64,
    slot_size: u32,
}

impl Shared {
    /// The producer index. Only the two index lines are ever borrowed: they are atomics, so
    /// a `&AtomicU64` over peer-writable memory is sound; the plain `Meta` fields are never
    /// borrowed (see [`crate::peer`]).
    fn producer(&self) -> &AtomicU64 {
        // SAFETY: create/attach checked that the (page-aligned) region holds a header; the
        // field is an aligned AtomicU64 inside it, and the mapping lives as long as `self`.
        unsafe {
            &*self
                .mem
                .as_ptr()
                .add(offset_of!(Header, producer))
                .cast::<AtomicU64>()
        }
    }

    /// The consumer index; see [`Shared::producer`].
    fn consumer(&self) -> &AtomicU64 {
        // SAFETY: as in `producer`.
        unsafe {
            &*self
                .mem
                .as_ptr()
                .add(offset_of!(Header, consumer))
                .cast::<AtomicU64>()
        }
    }

    /// Pointer to the slot of message number `seq`.
    fn slot(&self, seq: u64) -> *mut u8 {
        let i = (seq & (self.capacity - 1)) as usize;
        // SAFETY: i < capacity, and create/attach checked that capacity * slot_size bytes
        // follow the header inside the region, so the offset stays in bounds.
        unsafe { self.mem.as_ptr().add(SLOTS_OFFSET + i * self.slot_size as usize) }
    }

    fn max_message_len(&self) -> usize {
        self.slot_size as usize - LEN_PREFIX
    }
}

/// A read-only view of a ring's fill level that any thread may hold: how the engine
/// runtime decides, without running the consumer, whether it has work (before blocking, and
/// when the compacting rebalancer measures queueing delay). Two loads, no side effects.
#[derive(Debug, Clone)]
pub struct RingProbe {
    shared: Arc<Shared>,
}

impl RingProbe {
    /// Messages published and not yet released, clamped to the capacity (a corrupt peer
    /// cannot make this report more than the ring holds).
    pub fn len(&self) -> u64 {
        // Consumer first: it only grows, so a producer loaded afterwards is never behind it
        // unless the peer broke the protocol, which saturates to 0 below.
        let consumer = self.shared.consumer().load(Acquire);
        let producer = self.shared.producer().load(Acquire);
        producer.saturating_sub(consumer).min(self.shared.capacity)
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages the ring holds at most.
    pub fn capacity(&self) -> u64 {
        self.shared.capacity
    }
}

/// A validated ring in a shared region, not yet split into its producer and consumer.
#[derive(Debug)]
pub struct Ring {
    shared: Arc<Shared>,
}

impl Ring {
    /// Bytes of shared memory a ring of this shape needs (header included).
    pub fn required_len(capacity: u64, slot_size: u32) -> Result<usize, RingError> {
        layout::required_len(capacity, slot_size)
    }

    /// Writes a fresh, empty ring header into `mem`. Whatever the region held is discarded:
    /// call this before any other process attaches, never on a ring in use.
    ///
    /// `capacity` (a power of two) is the number of messages in flight; each message may be
    /// up to `slot_size - 4` bytes (`slot_size` a multiple of 8).
    pub fn create(mem: SharedMem, capacity: u64, slot_size: u32) -> Result<Self, RingError> {
        let needed = layout::required_len(capacity, slot_size)?;
        if mem.len() < needed {
            return Err(RingError::Truncated {
                needed,
                len: mem.len(),
            });
        }
        let header = Header {
            meta: Meta {
                magic: MAGIC,
                version: VERSION,
                slot_size,
                capacity,
            },
            producer: IndexLine { value: 0.into() },
            consumer: IndexLine { value: 0.into() },
        };
        // SAFETY: the region is at least `needed >= size_of::<Header>()` bytes and
        // page-aligned; the caller promises nobody else uses it yet.
        unsafe { mem.as_ptr().cast::<Header>().write(header) };
        Ok(Self::new(mem, capacity, slot_size))
    }

    /// Validates a ring created (possibly by another process) in `mem` and attaches to it
    /// where it stands: messages already pushed and not popped are still there.
    pub fn attach(mem: SharedMem) -> Result<Self, RingError> {
        // SAFETY: the mapping is readable for `len` bytes and page-aligned.
        let (capacity, slot_size) = unsafe { layout::validate(mem.as_ptr(), mem.len())? };
        let ring = Self::new(mem, capacity, slot_size);
        let (producer, consumer) = ring.indices();
        if producer.wrapping_sub(consumer) > capacity {
            return Err(RingError::CorruptIndices { producer, consumer });
        }
        Ok(ring)
    }

    fn new(mem: SharedMem, capacity: u64, slot_size: u32) -> Self {
        Self {
            shared: Arc::new(Shared {
                mem,
                capacity,
                slot_size,
            }),
        }
    }

    fn indices(&self) -> (u64, u64) {
        (
            self.shared.producer().load(Acquire),
            self.shared.consumer().load(Acquire),
        )
    }

    /// A thread-safe, read-only view of the fill level (see [`RingProbe`]).
    pub fn probe(&self) -> RingProbe {
        RingProbe {
            shared: self.shared.clone(),
        }
    }

    /// Number of slots (messages that can be in flight at once).
    pub fn capacity(&self) -> u64 {
        self.shared.capacity
    }

    /// Bytes per slot, length prefix included.
    pub fn slot_size(&self) -> u32 {
        self.shared.slot_size
    }

    /// Largest message [`Producer::push`] accepts.
    pub fn max_message_len(&self) -> usize {
        self.shared.max_message_len()
    }

    /// The region, e.g. to hand its descriptor to the process that will attach.
    pub fn shared_mem(&self) -> &SharedMem {
        &self.shared.mem
    }

    /// Both ends, for use within one process (typically moved to two threads).
    pub fn split(self) -> (Producer, Consumer) {
        let (p, c) = self.indices();
        (
            Producer::new(self.shared.clone(), p, c),
            Consumer::new(self.shared, c, p),
        )
    }

    /// The producing end only; the consumer is in another process.
    pub fn into_producer(self) -> Producer {
        let (p, c) = self.indices();
        Producer::new(self.shared, p, c)
    }

    /// The consuming end only; the producer is in another process.
    pub fn into_consumer(self) -> Consumer {
        let (p, c) = self.indices();
        Consumer::new(self.shared, c, p)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn mem(len: usize) -> SharedMem {
        SharedMem::create("ring-test", len).unwrap()
    }

    fn reattach(ring: &Ring) -> Result<Ring, RingError> {
        let fd = ring.shared_mem().as_fd().try_clone_to_owned().unwrap();
        Ring::attach(SharedMem::from_fd(fd).unwrap())
    }

    fn header_bytes(ring: &Ring) -> *mut u8 {
        ring.shared_mem().as_ptr()
    }

    #[test]
    fn shape_is_validated() {
        assert_eq!(Ring::required_len(4, 64), Ok(192 + 256));
        assert_eq!(
            Ring::create(mem(4096), 3, 64).unwrap_err(),
            RingError::InvalidCapacity(3)
        );
        assert_eq!(
            Ring::create(mem(4096), 0, 64).unwrap_err(),
            RingError::InvalidCapacity(0)
        );
        assert_eq!(
            Ring::create(mem(4096), 4, 12).unwrap_err(),
            RingError::InvalidSlotSize(12)
        );
        assert_eq!(
            Ring::create(mem(4096), 4, 0).unwrap_err(),
            RingError::InvalidSlotSize(0)
        );
        assert!(matches!(
            Ring::create(mem(4096), 1 << 62, 1 << 16).unwrap_err(),
            RingError::TooBig { .. }
        ));
        assert_eq!(
            Ring::create(mem(400), 4, 64).unwrap_err(),
            RingError::Truncated {
                needed: 448,
                len: 400
            }
        );
    }

    #[test]
    fn attach_round_trips_shape() {
        let ring = Ring::create(mem(4096), 8, 128).unwrap();
        let other = reattach(&ring).unwrap();
        assert_eq!((other.capacity(), other.slot_size()), (8, 128));
        assert_eq!(other.max_message_len(), 124);
    }

    #[test]
    fn attach_rejects_bad_magic() {
        let ring = Ring::create(mem(4096), 8, 64).unwrap();
        // SAFETY: the region is 4096 bytes; magic is the first u64.
        unsafe { header_bytes(&ring).write(b'X') };
        assert!(matches!(reattach(&ring), Err(RingError::BadMagic(_))));
        // An all-zero region is not a ring either.
        assert_eq!(Ring::attach(mem(4096)).unwrap_err(), RingError::BadMagic(0));
    }

    #[test]
    fn attach_rejects_wrong_version() {
        let ring = Ring::create(mem(4096), 8, 64).unwrap();
        // SAFETY: version is the u32 at offset 8 of the page-aligned header.
        unsafe { header_bytes(&ring).add(8).cast::<u32>().write(99) };
        assert_eq!(
            reattach(&ring).unwrap_err(),
            RingError::UnsupportedVersion {
                found: 99,
                supported: VERSION
            }
        );
    }

    #[test]
    fn attach_rejects_truncated_region() {
        assert_eq!(
            Ring::attach(mem(100)).unwrap_err(),
            RingError::Truncated {
                needed: 192,
                len: 100
            }
        );
        // A valid header claiming more slots than the region holds.
        let ring = Ring::create(mem(4096), 8, 64).unwrap();
        // SAFETY: capacity is the u64 at offset 16 of the header.
        unsafe { header_bytes(&ring).add(16).cast::<u64>().write(1024) };
        assert_eq!(
            reattach(&ring).unwrap_err(),
            RingError::Truncated {
                needed: 192 + 1024 * 64,
                len: 4096
            }
        );
        // Garbage shape values are errors too, not panics.
        // SAFETY: as above.
        unsafe { header_bytes(&ring).add(16).cast::<u64>().write(7) };
        assert_eq!(reattach(&ring).unwrap_err(), RingError::InvalidCapacity(7));
    }

    #[test]
    fn attach_rejects_inconsistent_indices() {
        let ring = Ring::create(mem(4096), 8, 64).unwrap();
        // SAFETY: the producer index is the u64 at offset 64.
        unsafe { header_bytes(&ring).add(64).cast::<u64>().write(9) };
        assert_eq!(
            reattach(&ring).unwrap_err(),
            RingError::CorruptIndices {
                producer: 9,
                consumer: 0
            }
        );
    }
}
