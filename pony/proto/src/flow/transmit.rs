//! [`Transmit`]: a packet a flow hands out to send, borrowing the flow's buffers; emitting
//! it gathers its payload's pieces into the packet (the payload's one copy).

use std::ops::Deref;

use super::Piece;
use crate::wire::{self, Repr};

/// A packet to send, borrowing the flow's buffers: a [`Repr`] (deref to read it) whose
/// payload may continue in more pieces; [`Transmit::emit`] gathers them all.
#[derive(Debug)]
pub struct Transmit<'a> {
    repr: Repr<'a>,
    rest: &'a [Piece],
}

impl<'a> Transmit<'a> {
    /// A packet whose payload is `repr`'s and then `rest`'s pieces.
    pub(crate) fn new(repr: Repr<'a>, rest: &'a [Piece]) -> Self {
        Transmit { repr, rest }
    }
}

impl<'a> Deref for Transmit<'a> {
    type Target = Repr<'a>;
    fn deref(&self) -> &Repr<'a> {
        &self.repr
    }
}

impl Transmit<'_> {
    /// Writes the packet into `buf` (the payload's one copy); returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, wire::WireError> {
        self.repr.emit_gather(self.rest, buf)
    }

    /// Bytes [`Transmit::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        self.repr.buffer_len() + self.rest.iter().map(Piece::len).sum::<usize>()
    }
}
