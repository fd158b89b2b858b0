//! The byte-level pieces of the record codec in `proto.rs`: a writer that appends
//! little-endian fields, and a reader that checks every length before it reads (so a hostile
//! record is a [`DecodeError`], never a panic). Apart so that `proto.rs` reads as the list
//! of records.

use super::{DecodeError, OpErrorCode};

pub(super) struct W<'a>(pub(super) &'a mut Vec<u8>);

impl W<'_> {
    pub(super) fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub(super) fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(super) fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(super) fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Status, then the value (zero when the status is an error, so records stay fixed-size).
    pub(super) fn status<T: Copy + Default>(
        &mut self,
        r: Result<T, OpErrorCode>,
        put: impl Fn(&mut Self, T),
    ) {
        match r {
            Ok(v) => {
                self.u16(0);
                put(self, v);
            }
            Err(code) => {
                self.u16(code as u16);
                put(self, T::default());
            }
        }
    }
}

pub(super) struct R<'a> {
    buf: &'a [u8],
    pub(super) kind: u8,
}

impl<'a> R<'a> {
    pub(super) fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self
            .buf
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Truncated { kind: self.kind })?;
        self.buf = rest;
        Ok(*head)
    }
    pub(super) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take::<1>()?[0])
    }
    pub(super) fn u16(&mut self) -> Result<u16, DecodeError> {
        self.take().map(u16::from_le_bytes)
    }
    pub(super) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.take().map(u32::from_le_bytes)
    }
    pub(super) fn u64(&mut self) -> Result<u64, DecodeError> {
        self.take().map(u64::from_le_bytes)
    }
    pub(super) fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated { kind: self.kind });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    /// A status code: `Ok(())` for 0, else the error it names.
    pub(super) fn status(&mut self) -> Result<Result<(), OpErrorCode>, DecodeError> {
        match self.u16()? {
            0 => Ok(Ok(())),
            c => OpErrorCode::from_u16(c).map(Err).ok_or(DecodeError::BadCode(c)),
        }
    }
    pub(super) fn code(&mut self) -> Result<OpErrorCode, DecodeError> {
        let c = self.u16()?;
        OpErrorCode::from_u16(c).ok_or(DecodeError::BadCode(c))
    }
    pub(super) fn finish<T>(self, value: T) -> Result<T, DecodeError> {
        match self.buf.len() {
            0 => Ok(value),
            extra => Err(DecodeError::Trailing {
                kind: self.kind,
                extra,
            }),
        }
    }
}

pub(super) fn reader(buf: &[u8]) -> Result<R<'_>, DecodeError> {
    let (&kind, rest) = buf.split_first().ok_or(DecodeError::Empty)?;
    Ok(R { buf: rest, kind })
}
