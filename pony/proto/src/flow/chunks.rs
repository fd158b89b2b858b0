//! [`Chunks`]: bytes the flow sends, held as a list of pieces that are never made
//! contiguous. The engine builds a message from an app's pool buffers (one held [`Piece`]
//! per buffer, owning the buffer's reference), the flow cuts segments as sub-lists of slices,
//! and emitting gathers them into the packet ([`crate::wire::Repr::emit_gather`]). So a
//! payload is written once by the app and copied once more, into the packet, by the NIC
//! side: the zero-copy path of Snap's Pony Express.
//!
//! One piece is the common case (small messages, tests, one-sided packets), kept inline
//! so that cutting a segment does not allocate.

use std::fmt;

use bytes::Bytes;

use super::Piece;

/// Bytes as pieces; see the module documentation.
#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Chunks {
    parts: Parts,
    len: usize,
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
enum Parts {
    One(Piece),
    Many(Vec<Piece>),
}

impl Default for Parts {
    fn default() -> Self {
        Parts::One(Piece::default())
    }
}

impl Chunks {
    /// No bytes.
    pub const EMPTY: Chunks = Chunks {
        parts: Parts::Many(Vec::new()),
        len: 0,
    };

    /// The concatenation of `parts` (empty ones are dropped).
    pub fn from_parts<P: Into<Piece>>(parts: impl IntoIterator<Item = P>) -> Self {
        let mut v: Vec<Piece> = parts
            .into_iter()
            .map(Into::into)
            .filter(|b| !b.is_empty())
            .collect();
        let len = v.iter().map(Piece::len).sum();
        let parts = match v.len() {
            0 => Parts::default(),
            1 => Parts::One(v.pop().unwrap_or_default()),
            _ => Parts::Many(v),
        };
        Chunks { parts, len }
    }

    /// Total bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The pieces, in order.
    pub fn parts(&self) -> &[Piece] {
        match &self.parts {
            Parts::One(b) => std::slice::from_ref(b),
            Parts::Many(v) => v,
        }
    }

    /// The first piece if it is owned, and the rest: a packet's payload as
    /// [`crate::wire::Repr`] holds it plus what [`crate::wire::Repr::emit_gather`] copies
    /// in. A held first piece is never borrowed: then the Repr's own payload is empty and
    /// every piece is gathered.
    pub(crate) fn split_first(&self) -> (&[u8], &[Piece]) {
        match self.parts() {
            [first, rest @ ..] => match first.as_owned() {
                Some(b) => (b, rest),
                None => (&[], self.parts()),
            },
            [] => (&[], &[]),
        }
    }

    /// Copies the bytes into `dst`, which must be exactly [`Chunks::len`] bytes.
    pub fn copy_to(&self, dst: &mut [u8]) {
        assert_eq!(
            dst.len(),
            self.len,
            "copy_to needs a buffer of the chunks' length"
        );
        let mut at = 0;
        for p in self.parts() {
            p.copy_to(&mut dst[at..at + p.len()]);
            at += p.len();
        }
    }

    /// A contiguous copy.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.len];
        self.copy_to(&mut v);
        v
    }

    /// The pieces, owned.
    pub(crate) fn into_parts(self) -> Vec<Piece> {
        match self.parts {
            Parts::One(b) if b.is_empty() => Vec::new(),
            Parts::One(b) => vec![b],
            Parts::Many(v) => v,
        }
    }
}

/// A cursor cutting a [`Chunks`] front to back into segments, zero-copy.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Cutter {
    parts: Vec<Piece>,
    /// The first piece not yet wholly cut (it may have been advanced).
    next: usize,
    remaining: usize,
}

impl Cutter {
    pub fn new(chunks: Chunks) -> Self {
        let remaining = chunks.len();
        Cutter {
            parts: chunks.into_parts(),
            next: 0,
            remaining,
        }
    }

    /// Bytes not yet cut.
    pub fn remaining(&self) -> usize {
        self.remaining
    }

    /// The next `n` bytes (fewer if fewer remain) as slices of the pieces.
    pub fn cut(&mut self, n: usize) -> Chunks {
        let n = n.min(self.remaining);
        self.remaining -= n;
        let mut need = n;
        let mut out = Vec::new();
        while need > 0 {
            let part = &mut self.parts[self.next];
            let k = need.min(part.len());
            if k == part.len() {
                out.push(std::mem::take(part));
                self.next += 1;
            } else {
                out.push(part.split_to(k));
            }
            need -= k;
            // A segment inside one piece stays on the inline path.
            if need == 0 && out.len() == 1 {
                return Chunks {
                    len: n,
                    parts: Parts::One(out.pop().unwrap_or_default()),
                };
            }
        }
        Chunks::from_parts(out)
    }
}

impl From<Bytes> for Chunks {
    fn from(b: Bytes) -> Self {
        Chunks {
            len: b.len(),
            parts: Parts::One(b.into()),
        }
    }
}

impl From<Vec<u8>> for Chunks {
    fn from(v: Vec<u8>) -> Self {
        Bytes::from(v).into()
    }
}

impl From<&'static [u8]> for Chunks {
    fn from(s: &'static [u8]) -> Self {
        Bytes::from_static(s).into()
    }
}

impl PartialEq for Chunks {
    /// Equal bytes, however they are split (copies both: tests and diagnostics only).
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.to_vec() == other.to_vec()
    }
}

impl Eq for Chunks {}

impl fmt::Debug for Chunks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Chunks({} bytes in {} pieces)", self.len, self.parts().len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutting_across_pieces_is_zero_copy_and_exact() {
        let a = Bytes::from((0..10u8).collect::<Vec<_>>());
        let b = Bytes::from((10..15u8).collect::<Vec<_>>());
        let c = Bytes::from((15..40u8).collect::<Vec<_>>());
        let whole = Chunks::from_parts([a.clone(), Bytes::new(), b, c]);
        assert_eq!(whole.len(), 40);
        assert_eq!(whole.parts().len(), 3, "empty pieces are dropped");
        let mut cut = Cutter::new(whole.clone());
        let s1 = cut.cut(4);
        assert_eq!(s1.parts().len(), 1);
        assert_eq!(
            s1.parts()[0].as_owned().unwrap().as_ptr(),
            a.as_ptr(),
            "a slice of the piece, not a copy"
        );
        let s2 = cut.cut(12); // 6 of a, 5 of b, 1 of c
        assert_eq!(s2.parts().len(), 3);
        assert_eq!(s2.to_vec(), (4..16u8).collect::<Vec<_>>());
        let lens: Vec<usize> = s2.parts().iter().map(Piece::len).collect();
        assert_eq!(lens, vec![6, 5, 1], "pieces start at 0, 6 and 11");
        let s3 = cut.cut(100);
        assert_eq!(s3.to_vec(), (16..40u8).collect::<Vec<_>>());
        assert_eq!(cut.remaining(), 0);
        assert!(cut.cut(5).is_empty());
        assert_eq!(
            Chunks::from_parts([s1, s2, s3].into_iter().flat_map(Chunks::into_parts)),
            whole
        );
        assert_ne!(Chunks::from(vec![1u8, 2]), Chunks::from(vec![1u8, 3]));
    }
}
