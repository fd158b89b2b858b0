//! [`Piece`]: one piece of bytes a flow sends, either owned ([`Bytes`]) or held elsewhere
//! ([`HeldBytes`]: e.g. an app's pool buffer that the app can still write).
//!
//! Held bytes are never lent out as `&[u8]`: a reference over memory another process can
//! write is unsound, however briefly it lives. A piece only knows its length and how to
//! copy a range of itself into a buffer of ours; emitting a packet asks it to
//! ([`crate::wire::PayloadPart`]), so the one copy from the app's buffer into the packet is
//! the holder's (for the Pony engine, `pony_express`'s pool pieces, which copy with
//! `snap_ipc::peer`). Cloning and slicing a piece are free in both forms.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::state::{self, HeldRef};

/// Bytes held somewhere this crate cannot borrow from; see the module documentation.
pub trait HeldBytes: Send + Sync + 'static {
    /// Bytes held.
    fn len(&self) -> usize;

    /// Whether nothing is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies `dst.len()` bytes starting at `offset` into `dst`. Callers keep
    /// `offset + dst.len() <= len()`.
    fn copy_to(&self, offset: usize, dst: &mut [u8]);

    /// Where the bytes live, if another process mapping the same memory can find them
    /// there: a moved flow then carries this reference instead of a copy
    /// ([`super::state`]). `None` (the default): the bytes are copied into the state.
    fn locate(&self) -> Option<HeldRef> {
        None
    }
}

/// One piece of a payload; see the module documentation.
#[derive(Clone)]
pub struct Piece(Inner);

#[derive(Clone)]
enum Inner {
    Owned(Bytes),
    Held {
        src: Arc<dyn HeldBytes>,
        start: usize,
        len: usize,
    },
}

impl Piece {
    /// The whole of `src`.
    pub fn held(src: Arc<dyn HeldBytes>) -> Self {
        let len = src.len();
        Piece(Inner::Held { src, start: 0, len })
    }

    /// Bytes in the piece.
    pub fn len(&self) -> usize {
        match &self.0 {
            Inner::Owned(b) => b.len(),
            Inner::Held { len, .. } => *len,
        }
    }

    /// Whether the piece is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, if they are ours to borrow.
    pub fn as_owned(&self) -> Option<&Bytes> {
        match &self.0 {
            Inner::Owned(b) => Some(b),
            Inner::Held { .. } => None,
        }
    }

    /// Splits off and returns the first `at` bytes (`at <= len()`), zero-copy.
    pub fn split_to(&mut self, at: usize) -> Piece {
        assert!(
            at <= self.len(),
            "split_to({at}) past the end of a {}-byte piece",
            self.len()
        );
        match &mut self.0 {
            Inner::Owned(b) => Piece(Inner::Owned(b.split_to(at))),
            Inner::Held { src, start, len } => {
                let front = Piece(Inner::Held {
                    src: src.clone(),
                    start: *start,
                    len: at,
                });
                *start += at;
                *len -= at;
                front
            }
        }
    }

    /// Copies the piece into `dst`, which must be exactly [`Piece::len`] bytes.
    pub fn copy_to(&self, dst: &mut [u8]) {
        assert_eq!(
            dst.len(),
            self.len(),
            "copy_to needs a buffer of the piece's length"
        );
        self.copy_range(0, dst);
    }

    /// Copies `dst.len()` bytes of the piece, starting `offset` bytes in, into `dst`.
    /// Panics if that range is not inside the piece.
    pub fn copy_range(&self, offset: usize, dst: &mut [u8]) {
        let end = offset.checked_add(dst.len()).filter(|&e| e <= self.len());
        let Some(end) = end else {
            panic!(
                "copy_range({offset}, {} bytes) past the end of a {}-byte piece",
                dst.len(),
                self.len()
            );
        };
        match &self.0 {
            Inner::Owned(b) => dst.copy_from_slice(&b[offset..end]),
            Inner::Held { src, start, .. } => src.copy_to(start + offset, dst),
        }
    }
}

impl crate::wire::PayloadPart for Piece {
    fn part_len(&self) -> usize {
        self.len()
    }
    fn copy_to(&self, offset: usize, dst: &mut [u8]) {
        self.copy_range(offset, dst)
    }
}

impl Default for Piece {
    fn default() -> Self {
        Piece(Inner::Owned(Bytes::new()))
    }
}

impl From<Bytes> for Piece {
    fn from(b: Bytes) -> Self {
        Piece(Inner::Owned(b))
    }
}

/// A piece as written in a flow's state ([`super::state`]).
#[derive(Serialize, Deserialize)]
enum PieceState {
    /// Bytes of the flow's own (or held bytes that cannot be located), copied.
    Inline(Vec<u8>),
    /// `len` bytes from `start` of the held bytes `at` names.
    Held { at: HeldRef, start: u32, len: u32 },
}

impl Serialize for Piece {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let located = match &self.0 {
            Inner::Held { src, start, len } => src.locate().map(|at| PieceState::Held {
                at,
                start: *start as u32,
                len: *len as u32,
            }),
            Inner::Owned(_) => None,
        };
        let st = located.unwrap_or_else(|| {
            let mut v = vec![0; self.len()];
            self.copy_to(&mut v);
            PieceState::Inline(v)
        });
        st.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Piece {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match PieceState::deserialize(d)? {
            PieceState::Inline(v) => Ok(Piece::from(Bytes::from(v))),
            PieceState::Held { at, start, len } => {
                let src = state::adopter(|a| a.adopt_held(at)).map_err(serde::de::Error::custom)?;
                let (start, len) = (start as usize, len as usize);
                // Checked here so that a forged reference cannot make a later copy panic.
                if start.checked_add(len).is_none_or(|end| end > src.len()) {
                    return Err(serde::de::Error::custom(format!(
                        "piece {start}+{len} outside its {}-byte buffer",
                        src.len()
                    )));
                }
                Ok(Piece(Inner::Held { src, start, len }))
            }
        }
    }
}

impl fmt::Debug for Piece {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Inner::Owned(b) => write!(f, "Piece::Owned({} bytes)", b.len()),
            Inner::Held { start, len, .. } => write!(f, "Piece::Held({len} bytes at {start})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Held bytes backed by a vector, copying only through `copy_to`.
    struct Vecs(Vec<u8>);
    impl HeldBytes for Vecs {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn copy_to(&self, offset: usize, dst: &mut [u8]) {
            dst.copy_from_slice(&self.0[offset..offset + dst.len()]);
        }
    }

    #[test]
    fn held_pieces_split_and_copy_like_owned_ones() {
        let data: Vec<u8> = (0..100u8).collect();
        let mut held = Piece::held(Arc::new(Vecs(data.clone())));
        let mut owned = Piece::from(Bytes::from(data.clone()));
        assert!(held.as_owned().is_none() && owned.as_owned().is_some());
        for cut in [10, 0, 35, 55] {
            let (a, b) = (held.split_to(cut), owned.split_to(cut));
            let (mut x, mut y) = (vec![0; cut], vec![0; cut]);
            a.copy_to(&mut x);
            b.copy_to(&mut y);
            assert_eq!(x, y);
        }
        assert!(held.is_empty() && owned.is_empty());
    }
}
