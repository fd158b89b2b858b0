//! The pool's memory layout, and the checks that make attaching to a region safe.
//!
//! ```text
//! offset 0      Meta         magic, version, buf_size, count, data_offset   (64-byte line)
//! offset 64     free head    AtomicU64: generation tag << 32 | buffer index (own line)
//! offset 128    free count   AtomicU32, statistics only                     (own line)
//! offset 192    headers      count × BufHeader (32 bytes each)
//! data_offset   buffers      count × buf_size bytes, data_offset 4096-aligned
//! ```
//!
//! Headers and payloads are kept apart (unlike an `rte_mbuf`, whose header sits in front
//! of its data) so that payload buffers stay page- and cache-line-aligned whatever the
//! header size, and so that walking a chain touches only the compact header table.
//!
//! Every field another process can write is an atomic: the peer may store into any of them
//! at any time, and a plain read racing with its write would be undefined behaviour. The
//! `Meta` line is the exception: it is written once before the region is shared, read once
//! at attach, and never trusted again (both sides keep validated copies).

use core::mem::{align_of, size_of};
use core::sync::atomic::{AtomicU32, AtomicU64};

use super::PoolError;

/// "PONYPOOL" in ASCII, read as a little-endian u64.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"PONYPOOL");
/// Bumped on any change to this layout.
pub(crate) const VERSION: u32 = 1;
/// Buffer sizes are multiples of this (cache line), and at most [`MAX_BUF_SIZE`].
pub(crate) const BUF_ALIGN: u32 = 64;
/// Large enough for jumbo frames and huge-page-friendly pools, small enough that a
/// segment length always fits the u32 fields with room to spare.
pub(crate) const MAX_BUF_SIZE: u32 = 1 << 20;
/// Index value meaning "no buffer" (end of chain, empty free list). Counts stay below it.
pub const NONE: u32 = u32::MAX;
/// Largest buffer count: indices must stay below [`NONE`], and a count this size already
/// means terabytes of pool.
pub(crate) const MAX_BUFFERS: u32 = 1 << 31;
const DATA_ALIGN: usize = 4096;

#[repr(C, align(64))]
pub(crate) struct Meta {
    pub magic: u64,
    pub version: u32,
    pub buf_size: u32,
    pub count: u32,
    pub _reserved: u32,
    pub data_offset: u64,
}

#[repr(C, align(64))]
pub(crate) struct Line64 {
    pub value: AtomicU64,
}

#[repr(C, align(64))]
pub(crate) struct Line32 {
    pub value: AtomicU32,
}

#[repr(C)]
pub(crate) struct Header {
    pub meta: Meta,
    pub free_head: Line64,
    pub free_count: Line32,
}

/// Per-buffer metadata, mbuf-like. All atomics: see the module comment.
#[repr(C)]
#[derive(Debug)]
pub struct BufHeader {
    /// Bytes of payload in this segment (≤ buf_size).
    pub(crate) len: AtomicU32,
    /// Next segment of the chain, or [`NONE`].
    pub(crate) next: AtomicU32,
    /// Holders of this buffer; 0 means free.
    pub(crate) refcount: AtomicU32,
    /// Link in the free stack; meaningful only while the buffer is free.
    pub(crate) free_next: AtomicU32,
    /// Which side allocated it last ([`super::Owner`] as u32), for debugging and stats.
    pub(crate) owner: AtomicU32,
    /// Bumped on every allocation, so a stale handle can be told from a live one.
    pub(crate) generation: AtomicU32,
    pub(crate) _reserved: [AtomicU32; 2],
}

pub(crate) const HEADERS_OFFSET: usize = size_of::<Header>();
const _: () = assert!(HEADERS_OFFSET == 192);
const _: () = assert!(size_of::<BufHeader>() == 32);
const _: () = assert!(align_of::<Header>() == 64);

/// The validated shape of a pool: the only copy of the header either side trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub buf_size: u32,
    pub count: u32,
    pub data_offset: usize,
    pub total_len: usize,
}

/// Checks a shape and computes where everything goes.
pub(crate) fn geometry(count: u32, buf_size: u32) -> Result<Geometry, PoolError> {
    if count == 0 || count > MAX_BUFFERS || buf_size == 0 || buf_size > MAX_BUF_SIZE {
        return Err(PoolError::BadShape { count, buf_size });
    }
    if !buf_size.is_multiple_of(BUF_ALIGN) {
        return Err(PoolError::BadShape { count, buf_size });
    }
    let headers = (count as usize).checked_mul(size_of::<BufHeader>());
    let data_offset = headers
        .and_then(|h| h.checked_add(HEADERS_OFFSET))
        .and_then(|end| end.checked_next_multiple_of(DATA_ALIGN));
    let total_len = data_offset.and_then(|d| (count as usize).checked_mul(buf_size as usize)?.checked_add(d));
    match (data_offset, total_len) {
        (Some(data_offset), Some(total_len)) => Ok(Geometry {
            buf_size,
            count,
            data_offset,
            total_len,
        }),
        _ => Err(PoolError::BadShape { count, buf_size }),
    }
}

/// Validates an existing header against a region of `len` bytes starting at `base`.
///
/// # Safety
/// `base` must be valid for reads of `len` bytes and aligned to 64.
pub(crate) unsafe fn validate(base: *const u8, len: usize) -> Result<Geometry, PoolError> {
    if len < HEADERS_OFFSET {
        return Err(PoolError::Truncated {
            needed: HEADERS_OFFSET,
            len,
        });
    }
    // SAFETY: the caller guarantees `len >= HEADERS_OFFSET` readable, aligned bytes. One
    // volatile read by value, never a reference (the argument of `snap_ipc::peer`): the
    // fields are plain integers, so any bit pattern is a valid value; they are checked below.
    let meta = unsafe { base.cast::<Meta>().read_volatile() };
    if meta.magic != MAGIC {
        return Err(PoolError::BadMagic(meta.magic));
    }
    if meta.version != VERSION {
        return Err(PoolError::UnsupportedVersion(meta.version));
    }
    let geo = geometry(meta.count, meta.buf_size)?;
    if meta.data_offset != geo.data_offset as u64 {
        return Err(PoolError::BadShape {
            count: meta.count,
            buf_size: meta.buf_size,
        });
    }
    if len < geo.total_len {
        return Err(PoolError::Truncated {
            needed: geo.total_len,
            len,
        });
    }
    Ok(geo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let g = geometry(8192, 2048).unwrap();
        assert_eq!(g.data_offset, (192 + 8192 * 32usize).next_multiple_of(4096));
        assert_eq!(g.total_len, g.data_offset + (16 << 20));
        assert!(geometry(0, 2048).is_err());
        assert!(geometry(4, 100).is_err());
        assert!(geometry(4, 0).is_err());
        assert!(geometry(4, MAX_BUF_SIZE * 2).is_err());
        assert!(geometry(u32::MAX, 64).is_err());
    }
}
