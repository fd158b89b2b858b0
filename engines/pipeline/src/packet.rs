//! [`Packet`]: one packet owned by one stage, its bytes in a pool buffer (never copied
//! between stages), with where it goes, which way it travels and the metadata stages
//! attach to it.
//!
//! ```text
//!   pool buffer:  │ headroom … │◀──── bytes() ────▶│ … tailroom │
//!                 0          offset          offset+len      buf_size
//!   prepend(n): offset -= n (an encapsulation header, no payload copy)
//!   strip(n):   offset += n (decapsulation)
//! ```
//!
//! A `Packet` is a move-only token: forwarding it hands the buffer on, dropping it returns
//! the buffer to the pool. A stage that holds packets (a shaper) simply keeps them.

use std::mem::ManuallyDrop;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::desc::DescRepr;
use crate::pool::Pool;

/// Which way a packet travels through the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From Pony toward the NIC.
    Tx,
    /// From the NIC toward Pony.
    Rx,
}

impl Direction {
    /// `"tx"` or `"rx"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tx => "tx",
            Self::Rx => "rx",
        }
    }
}

/// The remote end of a packet: where a Tx packet goes, where an Rx packet came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// Not set (a fresh buffer).
    None,
    /// The one peer of a point-to-point wire (the shared-memory wire).
    Wire,
    /// A UDP/IP peer.
    Ip(SocketAddr),
}

/// Per-packet metadata that travels in the descriptor, set by a stage for the stages
/// after it (e.g. the tenant an upstream stage classified the packet into).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Meta {
    /// Tenant the packet belongs to (0: none assigned).
    pub tenant: u32,
    /// Traffic class within the tenant.
    pub class: u8,
}

/// Not enough room in the buffer for the asked change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("needs {needed} bytes, {available} available")]
pub struct RoomError {
    /// Bytes asked for.
    pub needed: usize,
    /// Bytes there were.
    pub available: usize,
}

/// See the module documentation.
pub struct Packet {
    pool: Arc<Pool>,
    desc: DescRepr,
    dir: Direction,
}

impl std::fmt::Debug for Packet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packet")
            .field("dir", &self.dir)
            .field("desc", &self.desc)
            .finish()
    }
}

// SAFETY-relevant invariant for every accessor below: a `Packet` exists only for a buffer
// whose pool state is Held and which no other `Packet` names (alloc and claim are the only
// constructors; both take the buffer from the free list or a Queued state exclusively), and
// `offset + len <= buf_size` always holds (checked at claim, kept by every mutator).
impl Packet {
    pub(crate) fn new(pool: Arc<Pool>, desc: DescRepr, dir: Direction) -> Self {
        Self { pool, desc, dir }
    }

    /// Which way it travels.
    pub fn direction(&self) -> Direction {
        self.dir
    }

    /// Where it goes (Tx) or came from (Rx).
    pub fn peer(&self) -> Peer {
        self.desc.peer
    }

    /// Sets the peer (the stage that knows it: Pony on Tx, the NIC stage on Rx, an overlay
    /// that maps a virtual address to a physical one).
    pub fn set_peer(&mut self, peer: Peer) {
        self.desc.peer = peer;
    }

    /// Metadata set upstream.
    pub fn meta(&self) -> Meta {
        self.desc.meta
    }

    /// Sets the metadata for the stages after this one.
    pub fn set_meta(&mut self, meta: Meta) {
        self.desc.meta = meta;
    }

    /// Packet length.
    pub fn len(&self) -> usize {
        self.desc.len as usize
    }

    /// Whether the packet has no bytes.
    pub fn is_empty(&self) -> bool {
        self.desc.len == 0
    }

    /// The packet's bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: see the invariant above: in bounds, and exclusively ours.
        unsafe {
            std::slice::from_raw_parts(
                self.pool.buf_ptr(self.desc.index).add(self.desc.offset as usize),
                self.desc.len as usize,
            )
        }
    }

    /// The packet's bytes, to rewrite in place.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; `&mut self` makes the borrow unique.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.pool.buf_ptr(self.desc.index).add(self.desc.offset as usize),
                self.desc.len as usize,
            )
        }
    }

    /// Bytes free in front of the packet.
    pub fn headroom(&self) -> usize {
        self.desc.offset as usize
    }

    /// Bytes free after the packet.
    pub fn tailroom(&self) -> usize {
        (self.pool.config().buf_size - self.desc.offset - self.desc.len) as usize
    }

    /// Grows the packet by `n` bytes at the front (from the headroom) and returns them, to
    /// write a header into. The payload does not move.
    pub fn prepend(&mut self, n: usize) -> Result<&mut [u8], RoomError> {
        if n > self.headroom() {
            return Err(RoomError {
                needed: n,
                available: self.headroom(),
            });
        }
        self.desc.offset -= n as u32;
        self.desc.len += n as u32;
        Ok(&mut self.bytes_mut()[..n])
    }

    /// Removes `n` bytes from the front (a header already checked).
    pub fn strip(&mut self, n: usize) -> Result<(), RoomError> {
        if n > self.len() {
            return Err(RoomError {
                needed: n,
                available: self.len(),
            });
        }
        self.desc.offset += n as u32;
        self.desc.len -= n as u32;
        Ok(())
    }

    /// Room for the whole packet from its current start to the end of the buffer, and
    /// then sets its length to what the writer says it wrote (clamped to the room): how a
    /// producer fills a fresh buffer in place.
    pub fn fill(&mut self, write: impl FnOnce(&mut [u8]) -> usize) -> usize {
        let room = self.len() + self.tailroom();
        self.desc.len = room as u32;
        let n = write(self.bytes_mut()).min(room);
        self.desc.len = n as u32;
        n
    }

    /// Copies `data` in as the packet's bytes (after the headroom it has).
    pub fn copy_from(&mut self, data: &[u8]) -> Result<(), RoomError> {
        let room = self.len() + self.tailroom();
        if data.len() > room {
            return Err(RoomError {
                needed: data.len(),
                available: room,
            });
        }
        self.fill(|b| {
            b[..data.len()].copy_from_slice(data);
            data.len()
        });
        Ok(())
    }

    /// Pool buffer index (for tests and counters).
    pub fn index(&self) -> u32 {
        self.desc.index
    }

    /// Turns the packet into its descriptor, marking the buffer Queued: the caller pushes
    /// the descriptor into a ring (or undoes with [`Pool::unmark_queued`]).
    pub(crate) fn into_desc(self) -> DescRepr {
        let me = ManuallyDrop::new(self);
        me.pool.mark_queued(me.desc.index);
        let desc = me.desc;
        // SAFETY: `me` is never used again and never dropped; this moves its Arc out once.
        drop(unsafe { std::ptr::read(&me.pool) });
        desc
    }
}

impl Drop for Packet {
    fn drop(&mut self) {
        self.pool.free(self.desc.index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::PoolConfig;

    #[test]
    fn prepend_and_strip_move_the_start_not_the_payload() {
        let pool = Pool::new("pkt-test", PoolConfig::for_mtu(2, 1500, 16)).unwrap();
        let mut p = pool.alloc(Direction::Tx).unwrap();
        p.copy_from(b"payload").unwrap();
        assert_eq!(p.headroom(), 16);
        p.prepend(4).unwrap().copy_from_slice(b"HDR:");
        assert_eq!(p.bytes(), b"HDR:payload");
        assert_eq!(
            p.prepend(13).unwrap_err(),
            RoomError {
                needed: 13,
                available: 12
            }
        );
        p.strip(4).unwrap();
        assert_eq!(p.bytes(), b"payload");
        assert!(p.strip(8).is_err());
        let room = p.len() + p.tailroom();
        assert!(p.copy_from(&vec![0; room + 1]).is_err());
        p.copy_from(&vec![7; room]).unwrap();
        assert_eq!(p.len(), room);
    }
}
