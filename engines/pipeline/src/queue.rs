//! A stage boundary: two lock-free single-producer/single-consumer rings of descriptors,
//! one per direction, and a doorbell for each side, in shared memory like an app's
//! channel (the rings are [`snap_ipc::Ring`]s, whose ordering protocol is loom-checked).
//!
//! ```text
//!            upper end (toward Pony)                      lower end (toward the NIC)
//!   push Tx ──▶ Tx ring (DESC_LEN-byte messages) ──────────▶ pop Tx
//!   pop Rx  ◀── Rx ring ◀──────────────────────────────────── push Rx
//!   bell U  ◀── rung by the lower end after an Rx push (if U is armed) or after it
//!               freed Tx slots (if U wants space)
//!               bell L, rung the same way by the upper end ──▶
//! ```
//!
//! Batching: pushes publish one by one (the consumer may start at once) but the doorbell
//! is rung once per batch, at [`QueueEnd::flush`]. Backpressure: a full ring refuses the
//! descriptor and the packet comes back to the producer, which flags that it wants space
//! and stops; the consumer's next pop rings it. Nothing is dropped by a queue. A consumer
//! validates every descriptor it pops (format, buffer index and bytes inside the pool,
//! buffer in flight) and counts and skips a bad one.

use std::sync::Arc;

use snap_ipc::{Consumer, Doorbell, DoorbellError, Producer, PushError, Ring, RingError, RingProbe, Ringer};
use snap_ipc::{SharedMem, ShmError};
use snap_runtime::{WakeSource, WorkProbe};

use crate::desc::{DescError, DescRepr, DESC_LEN};
use crate::packet::{Direction, Packet};
use crate::pool::Pool;

/// Ring slot: the descriptor plus the ring's 4-byte length prefix, rounded to 8.
const SLOT: u32 = (DESC_LEN as u32 + 4).next_multiple_of(8);

/// Why a queue could not be made.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Ring memory.
    #[error("queue memory: {0}")]
    Shm(#[from] ShmError),
    /// Ring shape (capacity not a power of two).
    #[error("queue ring: {0}")]
    Ring(#[from] RingError),
    /// Doorbell.
    #[error("queue doorbell: {0}")]
    Doorbell(#[from] DoorbellError),
}

/// Counters of one end (cumulative).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EndStats {
    /// Descriptors pushed.
    pub pushed: u64,
    /// Pushes refused because the ring was full (the packet stayed with the producer).
    pub full: u64,
    /// Descriptors popped and accepted.
    pub popped: u64,
    /// Descriptors popped and refused by validation (skipped).
    pub bad: u64,
}

/// One side of a boundary. See the module documentation.
#[derive(Debug)]
pub struct QueueEnd {
    out: Producer,
    /// Probes of both rings, made once: `probe()` clones an `Arc`, and a polled engine
    /// asks for room and input every step.
    out_probe: RingProbe,
    inp_probe: RingProbe,
    out_dir: Direction,
    peer_bell: Ringer,
    inp: Consumer,
    inp_dir: Direction,
    bell: Doorbell,
    pool: Arc<Pool>,
    unflushed: bool,
    popped_since_flush: bool,
    stats: EndStats,
    last_bad: Option<DescError>,
}

/// Makes a boundary with `capacity` descriptors per direction (a power of two) over
/// `pool`; returns its (upper, lower) ends.
pub fn queue(name: &str, capacity: u64, pool: &Arc<Pool>) -> Result<(QueueEnd, QueueEnd), QueueError> {
    let ring = |dir: &str| -> Result<Ring, QueueError> {
        let len = Ring::required_len(capacity, SLOT)?;
        let mem = SharedMem::create(&format!("{name}-{dir}"), len)?;
        Ok(Ring::create(mem, capacity, SLOT)?)
    };
    let (tx_p, tx_c) = ring("tx")?.split();
    let (rx_p, rx_c) = ring("rx")?.split();
    let upper_bell = Doorbell::new()?;
    let lower_bell = Doorbell::new()?;
    let upper = QueueEnd::new(
        tx_p,
        Direction::Tx,
        lower_bell.ringer(),
        rx_c,
        upper_bell.clone(),
        pool,
    );
    let lower = QueueEnd::new(rx_p, Direction::Rx, upper_bell.ringer(), tx_c, lower_bell, pool);
    Ok((upper, lower))
}

impl QueueEnd {
    fn new(
        out: Producer,
        out_dir: Direction,
        peer_bell: Ringer,
        inp: Consumer,
        bell: Doorbell,
        pool: &Arc<Pool>,
    ) -> Self {
        let inp_dir = match out_dir {
            Direction::Tx => Direction::Rx,
            Direction::Rx => Direction::Tx,
        };
        Self {
            out_probe: out.probe(),
            inp_probe: inp.probe(),
            out,
            out_dir,
            peer_bell,
            inp,
            inp_dir,
            bell,
            pool: pool.clone(),
            unflushed: false,
            popped_since_flush: false,
            stats: EndStats::default(),
            last_bad: None,
        }
    }

    /// The direction this end pushes (Tx for the upper end, Rx for the lower).
    pub fn out_direction(&self) -> Direction {
        self.out_dir
    }

    /// The pool the boundary's packets live in.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Hands a packet to the other side. A full ring gives it back (backpressure) and
    /// flags that this side wants space: the other side's next pop wakes it.
    pub fn push(&mut self, pkt: Packet) -> Result<(), Packet> {
        debug_assert_eq!(pkt.direction(), self.out_dir);
        let index = pkt.index();
        let pool = self.pool.clone();
        let desc = pkt.into_desc();
        let mut b = [0u8; DESC_LEN];
        desc.emit(&mut b);
        match self.out.push(&b) {
            Ok(()) => {
                self.stats.pushed += 1;
                self.unflushed = true;
                Ok(())
            }
            Err(PushError::Full) | Err(PushError::TooLarge { .. }) => {
                self.stats.full += 1;
                pool.unmark_queued(index);
                self.bell.want_space();
                Err(Packet::new(pool, desc, self.out_dir))
            }
        }
    }

    /// Free descriptor slots in the outgoing ring.
    pub fn room(&self) -> usize {
        (self.out_probe.capacity() - self.out_probe.len()) as usize
    }

    /// Whether the outgoing ring has room; if not, flags that this side wants space (so
    /// the other side's next pop wakes it) and checks again to close the race.
    pub fn has_room(&mut self) -> bool {
        if self.room() > 0 {
            return true;
        }
        self.bell.want_space();
        if self.room() > 0 {
            self.bell.cancel_want_space();
            return true;
        }
        false
    }

    /// Takes the next valid packet from the other side, skipping (and counting) invalid
    /// descriptors; `None` when the ring is empty.
    pub fn pop(&mut self) -> Option<Packet> {
        loop {
            let msg = match self.inp.peek() {
                Ok(Some(m)) => m,
                Ok(None) => return None,
                // Our own process writes this ring: a corrupt index means a bug here, and
                // the ring cannot be read past it. Count it and report empty.
                Err(e) => {
                    log::error!("pipeline queue ring corrupt: {e}");
                    self.stats.bad += 1;
                    return None;
                }
            };
            let mut b = [0u8; DESC_LEN + 1];
            let parsed = match msg.copy_into(&mut b) {
                Ok(s) => DescRepr::parse(s),
                Err(_) => Err(DescError::Length(msg.len())),
            };
            msg.release();
            self.popped_since_flush = true;
            match parsed.and_then(|d| self.pool.claim(d, self.inp_dir)) {
                Ok(pkt) => {
                    self.stats.popped += 1;
                    return Some(pkt);
                }
                Err(e) => {
                    self.stats.bad += 1;
                    self.last_bad = Some(e);
                }
            }
        }
    }

    /// Ends a batch: wakes the other side if it sleeps and this side pushed, or if it
    /// waits for space and this side popped.
    pub fn flush(&mut self) {
        if std::mem::take(&mut self.unflushed) {
            self.peer_bell.ring();
        }
        if std::mem::take(&mut self.popped_since_flush) {
            self.peer_bell.ring_for_space();
        }
    }

    /// Whether the other side pushed something not yet popped.
    pub fn has_input(&self) -> bool {
        !self.inp_probe.is_empty()
    }

    /// Probe of the incoming ring (for the runtime's work probe).
    pub fn input_probe(&self) -> RingProbe {
        self.inp_probe.clone()
    }

    /// What wakes the engine holding this end: the doorbell the other side rings.
    pub fn wake_source(&self) -> WakeSource {
        WakeSource::Doorbell(self.bell.clone())
    }

    /// Input waiting on this end, callable from any thread.
    pub fn work_probe(&self) -> WorkProbe {
        let p = self.inp_probe.clone();
        WorkProbe::new(move || !p.is_empty())
    }

    /// Counters.
    pub fn stats(&self) -> EndStats {
        self.stats
    }

    /// The last descriptor refused, for logs and tests.
    pub fn last_bad(&self) -> Option<DescError> {
        self.last_bad
    }
}

#[cfg(test)]
mod tests;
