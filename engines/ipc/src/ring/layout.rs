//! The ring's header in shared memory, and the checks that make attaching to a region safe.
//!
//! ```text
//! offset 0    Meta        magic, version, slot_size, capacity         (64-byte line)
//! offset 64   producer    AtomicU64 free-running push count           (own 64-byte line)
//! offset 128  consumer    AtomicU64 free-running pop count            (own 64-byte line)
//! offset 192  slots       capacity * slot_size bytes;
//!                         slot = u32 length (little-endian) + payload
//! ```
//!
//! The two indices sit on separate cache lines so that the producer's stores do not
//! invalidate the line the consumer writes, and vice versa (false sharing).

use core::mem::{align_of, offset_of, size_of};
use core::sync::atomic::AtomicU64;

use super::RingError;

/// "SNAPRING" in ASCII, read as a little-endian u64.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"SNAPRING");
/// Bumped on any change to this layout or to the slot format.
pub(crate) const VERSION: u32 = 1;
/// Bytes of the length prefix at the start of every slot.
pub(crate) const LEN_PREFIX: usize = size_of::<u32>();
/// Slot sizes are multiples of this, so every length prefix is aligned.
pub(crate) const SLOT_ALIGN: u32 = 8;

#[repr(C, align(64))]
pub(crate) struct Meta {
    pub magic: u64,
    pub version: u32,
    pub slot_size: u32,
    pub capacity: u64,
}

#[repr(C, align(64))]
pub(crate) struct IndexLine {
    pub value: AtomicU64,
}

#[repr(C)]
pub(crate) struct Header {
    pub meta: Meta,
    pub producer: IndexLine,
    pub consumer: IndexLine,
}

/// Byte offset of slot 0 from the start of the region.
pub(crate) const SLOTS_OFFSET: usize = size_of::<Header>();

const _: () = assert!(SLOTS_OFFSET == 192);
const _: () = assert!(align_of::<Header>() == 64);

/// Checks capacity and slot size and returns the number of bytes a ring of that shape needs.
pub(crate) fn required_len(capacity: u64, slot_size: u32) -> Result<usize, RingError> {
    if capacity == 0 || !capacity.is_power_of_two() {
        return Err(RingError::InvalidCapacity(capacity));
    }
    if (slot_size as usize) <= LEN_PREFIX || !slot_size.is_multiple_of(SLOT_ALIGN) {
        return Err(RingError::InvalidSlotSize(slot_size));
    }
    usize::try_from(capacity)
        .ok()
        .and_then(|c| c.checked_mul(slot_size as usize))
        .and_then(|b| b.checked_add(SLOTS_OFFSET))
        .ok_or(RingError::TooBig { capacity, slot_size })
}

/// Validates an existing header against a region of `len` bytes starting at `base`.
///
/// # Safety
/// `base` must be valid for reads of `len` bytes and aligned to 64.
pub(crate) unsafe fn validate(base: *const u8, len: usize) -> Result<(u64, u32), RingError> {
    if len < SLOTS_OFFSET {
        return Err(RingError::Truncated {
            needed: SLOTS_OFFSET,
            len,
        });
    }
    // The peer may rewrite the header at any time, so its fields are copied in (see
    // `crate::peer`) and validated; nothing borrows them.
    let mut raw = [0u8; size_of::<Meta>()];
    // SAFETY: the caller guarantees `len >= SLOTS_OFFSET > size_of::<Meta>()` readable bytes.
    unsafe { crate::peer::copy_in(&mut raw, base) };
    let u64_at = |at: usize| u64::from_ne_bytes(raw[at..at + 8].try_into().unwrap_or_default());
    let u32_at = |at: usize| u32::from_ne_bytes(raw[at..at + 4].try_into().unwrap_or_default());
    let meta = Meta {
        magic: u64_at(offset_of!(Meta, magic)),
        version: u32_at(offset_of!(Meta, version)),
        slot_size: u32_at(offset_of!(Meta, slot_size)),
        capacity: u64_at(offset_of!(Meta, capacity)),
    };
    if meta.magic != MAGIC {
        return Err(RingError::BadMagic(meta.magic));
    }
    if meta.version != VERSION {
        return Err(RingError::UnsupportedVersion {
            found: meta.version,
            supported: VERSION,
        });
    }
    let needed = required_len(meta.capacity, meta.slot_size)?;
    if len < needed {
        return Err(RingError::Truncated { needed, len });
    }
    Ok((meta.capacity, meta.slot_size))
}
