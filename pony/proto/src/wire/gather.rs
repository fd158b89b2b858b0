//! [`PayloadPart`]: a piece of a packet's payload that [`crate::wire::Repr::emit_gather`]
//! copies into the packet.
//!
//! A piece is either bytes we own (a slice, `Bytes`) or bytes held in memory another party
//! can write (an app's pool buffer, or a registered region, on the engine's send path).
//! The second kind must not be borrowed as `&[u8]` at all, so the gather asks each piece to
//! copy a range of itself out rather than to lend its bytes: the payload's one copy lands in
//! the packet, and the checksum is computed over each block of the packet right after that
//! block is copied in (our own memory, still in the cache), never by reading the piece again.

/// A payload piece that can copy itself into a packet; see the module documentation.
pub trait PayloadPart {
    /// Bytes in the piece.
    fn part_len(&self) -> usize;
    /// Copies `dst.len()` bytes of the piece, starting `offset` bytes in, into `dst`.
    /// Callers keep `offset + dst.len() <= part_len()`.
    fn copy_to(&self, offset: usize, dst: &mut [u8]);
}

impl PayloadPart for [u8] {
    fn part_len(&self) -> usize {
        self.len()
    }
    fn copy_to(&self, offset: usize, dst: &mut [u8]) {
        dst.copy_from_slice(&self[offset..offset + dst.len()]);
    }
}

impl<P: PayloadPart + ?Sized> PayloadPart for &P {
    fn part_len(&self) -> usize {
        (**self).part_len()
    }
    fn copy_to(&self, offset: usize, dst: &mut [u8]) {
        (**self).copy_to(offset, dst)
    }
}

impl PayloadPart for Vec<u8> {
    fn part_len(&self) -> usize {
        self.len()
    }
    fn copy_to(&self, offset: usize, dst: &mut [u8]) {
        self[..].copy_to(offset, dst)
    }
}

impl PayloadPart for bytes::Bytes {
    fn part_len(&self) -> usize {
        self.len()
    }
    fn copy_to(&self, offset: usize, dst: &mut [u8]) {
        self[..].copy_to(offset, dst)
    }
}
