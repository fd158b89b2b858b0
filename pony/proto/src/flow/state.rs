//! A flow's state as serde data, for moving a live flow into another engine (a transparent
//! upgrade: docs/UPGRADE.md).
//!
//! Every sub-state derives serde directly, so what is serialized is exactly what the flow
//! holds. Two kinds of field cannot be written as plain values, and go through a context
//! that the caller installs for the duration of one (de)serialization ([`with_export`],
//! [`with_import`]):
//!
//! - **instants**: an `Instant` is only meaningful in its clock. They are written as signed
//!   nanoseconds from a base instant the caller gives on both sides (the engine takes the
//!   same `CLOCK_MONOTONIC` reading for both: one machine, one clock), so timers keep their
//!   deadlines across the move;
//! - **bytes held elsewhere**: a [`Piece`] over [`HeldBytes`] (an app's pool buffer) is
//!   written as a [`HeldRef`] (which pool, which buffer) when the holder can name it
//!   ([`HeldBytes::locate`]), not as a copy: the importer maps the same memory and turns
//!   the reference back into held bytes ([`Adopter::adopt_held`]). Bytes the flow owns
//!   (its heap) are written inline. Message buffers being reassembled ([`MessageBuf`])
//!   likewise serialize themselves (a pool chain as a [`BufRef`], heap messages inline).
//!
//! serde has no deserialization context short of threading a `DeserializeSeed` through
//! every derived type; a scoped thread-local is the small way to give one, and it is
//! cleared on every exit from the scope (panic included).
//!
//! Reading damaged bytes never panics (a serde error; proptest in `tests/state.rs`), and a
//! held reference is checked against its buffer. The state's internal consistency is not
//! checked field by field: the engine's snapshot carries a checksum, and its source is the
//! old engine of the same host, not a peer.

use std::any::Any;
use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::piece::HeldBytes;
#[cfg(doc)]
use super::{MessageBuf, Piece};

/// Where held bytes live: buffer `buf` of the pool known as `pool` in the snapshot (the
/// engine's name for one app's pool), `len` bytes of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HeldRef {
    /// The pool, as the snapshot's session table names it.
    pub pool: u64,
    /// The buffer's index in that pool.
    pub buf: u32,
    /// Bytes of the buffer the piece covers (from its start).
    pub len: u32,
}

/// Where a message being reassembled lives: the buffers of a pool chain, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BufRef {
    /// The pool, as the snapshot's session table names it.
    pub pool: u64,
    /// The chain's buffers, in message order.
    pub bufs: Vec<u32>,
    /// The message length.
    pub len: u64,
}

/// Turns references back into the objects that hold them, on the importing side.
pub trait Adopter {
    /// The held bytes `r` names (one object per buffer: the caller dedups, since every
    /// piece sliced from one buffer must share its one release).
    fn adopt_held(&mut self, r: HeldRef) -> Result<Arc<dyn HeldBytes>, String>;

    /// The message buffer `r` names, as the flow's `MessageBuf` type (boxed as `Any`; the
    /// buffer type's `Deserialize` downcasts it).
    fn adopt_buf(&mut self, r: BufRef) -> Result<Box<dyn Any>, String>;
}

enum Context {
    Export {
        base: Instant,
    },
    Import {
        base: Instant,
        adopter: Box<dyn Adopter>,
    },
}

thread_local! {
    static CONTEXT: RefCell<Option<Context>> = const { RefCell::new(None) };
}

/// Clears the context however the scope ends.
struct Scope;

impl Drop for Scope {
    fn drop(&mut self) {
        CONTEXT.with(|c| c.borrow_mut().take());
    }
}

/// Runs `f` (a serialization of flow state) with instants written relative to `base`.
pub fn with_export<T>(base: Instant, f: impl FnOnce() -> T) -> T {
    CONTEXT.with(|c| *c.borrow_mut() = Some(Context::Export { base }));
    let _scope = Scope;
    f()
}

/// Runs `f` (a deserialization of flow state) with instants read relative to `base` and
/// references resolved by `adopter`.
pub fn with_import<T>(base: Instant, adopter: Box<dyn Adopter>, f: impl FnOnce() -> T) -> T {
    CONTEXT.with(|c| *c.borrow_mut() = Some(Context::Import { base, adopter }));
    let _scope = Scope;
    f()
}

fn base(export: bool) -> Result<Instant, String> {
    CONTEXT.with(|c| match (&*c.borrow(), export) {
        (Some(Context::Export { base }), true) | (Some(Context::Import { base, .. }), false) => Ok(*base),
        _ => Err("flow state (de)serialized outside its context".into()),
    })
}

/// Runs `f` on the import context's adopter.
pub(crate) fn adopter<T>(f: impl FnOnce(&mut dyn Adopter) -> Result<T, String>) -> Result<T, String> {
    CONTEXT.with(|c| match &mut *c.borrow_mut() {
        Some(Context::Import { adopter, .. }) => f(adopter.as_mut()),
        _ => Err("flow state deserialized outside its import context".into()),
    })
}

/// [`Adopter::adopt_buf`] on the import context's adopter, downcast to `B`.
pub fn adopt_buf<B: 'static>(r: BufRef) -> Result<B, String> {
    let any = adopter(|a| a.adopt_buf(r))?;
    any.downcast::<B>()
        .map(|b| *b)
        .map_err(|_| "message buffer of another type".to_string())
}

fn to_nanos(t: Instant, base: Instant) -> i64 {
    match t.checked_duration_since(base) {
        Some(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        None => -i64::try_from(base.duration_since(t).as_nanos()).unwrap_or(i64::MAX),
    }
}

fn from_nanos(n: i64, base: Instant) -> Result<Instant, String> {
    let d = Duration::from_nanos(n.unsigned_abs());
    let t = if n >= 0 {
        base.checked_add(d)
    } else {
        base.checked_sub(d)
    };
    t.ok_or_else(|| format!("instant {n} ns from the base is out of range"))
}

/// `#[serde(with)]` for an `Instant` (see the module documentation).
pub(crate) mod instant {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(t: &Instant, s: S) -> Result<S::Ok, S::Error> {
        let base = base(true).map_err(serde::ser::Error::custom)?;
        to_nanos(*t, base).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Instant, D::Error> {
        let n = i64::deserialize(d)?;
        let base = base(false).map_err(serde::de::Error::custom)?;
        from_nanos(n, base).map_err(serde::de::Error::custom)
    }
}

/// `#[serde(with)]` for an `Option<Instant>`.
pub(crate) mod opt_instant {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(t: &Option<Instant>, s: S) -> Result<S::Ok, S::Error> {
        let base = base(true).map_err(serde::ser::Error::custom)?;
        t.map(|t| to_nanos(t, base)).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Instant>, D::Error> {
        let n = Option::<i64>::deserialize(d)?;
        let base = base(false).map_err(serde::de::Error::custom)?;
        n.map(|n| from_nanos(n, base))
            .transpose()
            .map_err(serde::de::Error::custom)
    }
}

/// `#[serde(with)]` for an `Option<(u64, Instant)>` (the ACK's echoed timestamp).
pub(crate) mod opt_echo {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(t: &Option<(u64, Instant)>, s: S) -> Result<S::Ok, S::Error> {
        let base = base(true).map_err(serde::ser::Error::custom)?;
        t.map(|(v, t)| (v, to_nanos(t, base))).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<(u64, Instant)>, D::Error> {
        let n = Option::<(u64, i64)>::deserialize(d)?;
        let base = base(false).map_err(serde::de::Error::custom)?;
        n.map(|(v, n)| from_nanos(n, base).map(|t| (v, t)))
            .transpose()
            .map_err(serde::de::Error::custom)
    }
}

impl<R: super::RecvBuffers> super::Flow<R> {
    /// Gives an imported flow the buffers it reassembles new messages in (they are not
    /// state: the importer's own view of the same memory).
    pub fn set_recv_buffers(&mut self, bufs: R) {
        self.rx.set_bufs(bufs);
    }

    /// Whether the flow's state may have changed since the last call (every mutating
    /// call sets it, conservatively), and clears it: what an engine's upgrade uses to
    /// re-export only the flows that changed since its previous export.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }
}
