//! The [`Stage`] interface: what one step of a pipeline (ACL, shaper, overlay, `pass`)
//! implements, and [`Output`], through which it hands packets on.
//!
//! A stage is sans-IO: it sees packets, never rings, NICs or clocks. The stage engine
//! ([`crate::StageEngine`]) pops packets from the queues on either side, calls
//! [`Stage::process`] for each, and pushes what the stage forwarded:
//!
//! ```text
//!            upstream queue (toward Pony)                downstream queue or NIC
//!   Tx ──pop──▶ process(pkt, out) ── out.forward ──▶ push ─────────────────▶
//!   ◀──push──── out.forward ◀──────── process(pkt, out) ◀──pop── Rx ────────
//!               poll(now, out): packets the stage held, released when due
//! ```
//!
//! Every packet given to a stage ends in exactly one of three ways: [`Output::forward`]
//! (on in its own direction), [`Output::drop`] (freed, counted under a reason), or kept by
//! the stage (a shaper's timing wheel) and forwarded or dropped later from
//! [`Stage::poll`]. Dropping a [`Packet`] value without `Output::drop` frees it too, and
//! the engine counts it under the reason `"unaccounted"`.
//!
//! Backpressure: the engine calls `process` only while the output in the packet's
//! direction has room for one more packet, so `forward` from `process` never fails for the
//! packet being processed; a stage that wants to stop taking input (its wheel is full)
//! says so in [`Stage::accepts`], and the engine leaves packets in the upstream ring:
//! that ring fills and its producer (ultimately Pony's NIC side) sees `WouldBlock`.
//! `forward` from `poll` may fail with the packet handed back when the output is full:
//! the stage keeps it and tries again at the next poll.

use std::time::Instant;

use crate::packet::{Direction, Packet};

/// Why a stage refused new settings (it then changed nothing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UpdateError(pub String);

impl UpdateError {
    /// An error with a message for the operator.
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

/// One step of a pipeline. See the module documentation.
pub trait Stage: Send {
    /// The stage's kind as written in the configuration (`"pass"`, `"acl"`, …).
    fn kind(&self) -> &'static str;

    /// Takes one packet travelling in `pkt.direction()`: forward it, drop it, or keep it.
    fn process(&mut self, pkt: Packet, out: &mut Output<'_>);

    /// Whether the stage takes another packet in `dir` now. `false` leaves input in the
    /// upstream ring (backpressure) instead of dropping it. Asked before every packet.
    fn accepts(&self, _dir: Direction) -> bool {
        true
    }

    /// Releases packets the stage holds whose time has come (called at the start of every
    /// engine step, and when [`Stage::poll_at`] is reached).
    fn poll(&mut self, _now: Instant, _out: &mut Output<'_>) {}

    /// When the stage next needs [`Stage::poll`] even if no packet arrives; `None`: never.
    fn poll_at(&self) -> Option<Instant> {
        None
    }

    /// Bytes the stage may prepend to a packet (an encapsulation header): the pipeline
    /// reserves the sum over its stages in front of every packet, and gives Pony an MTU
    /// that much smaller than the NIC's so that the packet still fits the NIC after it.
    fn headroom(&self) -> usize {
        0
    }

    /// Packets the stage holds now (shown in status).
    fn held(&self) -> u64 {
        0
    }

    /// New settings at run time, as TOML text in the stage's own format (the same table as
    /// its `settings` in the configuration). Applied whole, between two packets, or refused
    /// with a clear error and nothing changed.
    fn update(&mut self, _settings: &str) -> Result<(), UpdateError> {
        Err(UpdateError::new(format!(
            "stage kind {:?} has no settings",
            self.kind()
        )))
    }

    /// The stage's own counters (per rule, per tenant, …) for status, beside the ones the
    /// engine keeps for every stage.
    fn counters(&self) -> Option<serde_json::Value> {
        None
    }
}

/// Where a stage hands packets on, one batch per direction, and how it counts drops.
/// Made by the stage engine for each call into the stage.
pub struct Output<'a> {
    now: Instant,
    tx: &'a mut Vec<Packet>,
    rx: &'a mut Vec<Packet>,
    limits: [usize; 2],
    drops: &'a mut DropCounts,
}

impl<'a> Output<'a> {
    /// An output over two batches that hold at most `limit` packets each (the engine
    /// flushes them to the queues after the call). Public so that stage kinds can be
    /// tested without an engine.
    pub fn new(
        now: Instant,
        tx: &'a mut Vec<Packet>,
        rx: &'a mut Vec<Packet>,
        limit: usize,
        drops: &'a mut DropCounts,
    ) -> Self {
        Self::with_limits(now, tx, rx, [limit, limit], drops)
    }

    /// As [`Output::new`] with a limit per direction (`[tx, rx]`): how the stage engine
    /// leaves no more room than the queue after it has.
    pub fn with_limits(
        now: Instant,
        tx: &'a mut Vec<Packet>,
        rx: &'a mut Vec<Packet>,
        limits: [usize; 2],
        drops: &'a mut DropCounts,
    ) -> Self {
        Self {
            now,
            tx,
            rx,
            limits,
            drops,
        }
    }

    /// The engine step's time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Whether [`Output::forward`] would take a packet travelling in `dir` now.
    pub fn has_room(&self, dir: Direction) -> bool {
        match dir {
            Direction::Tx => self.tx.len() < self.limits[0],
            Direction::Rx => self.rx.len() < self.limits[1],
        }
    }

    /// Hands the packet on in its direction. When the output is full the packet comes
    /// back (only possible outside `process`'s own packet): keep it and retry later.
    pub fn forward(&mut self, pkt: Packet) -> Result<(), Packet> {
        let (batch, limit) = match pkt.direction() {
            Direction::Tx => (&mut *self.tx, self.limits[0]),
            Direction::Rx => (&mut *self.rx, self.limits[1]),
        };
        if batch.len() >= limit {
            return Err(pkt);
        }
        batch.push(pkt);
        Ok(())
    }

    /// Frees the packet and counts it under `reason` (a short static name, e.g.
    /// `"deny_rule"`, `"unknown_tenant"`).
    pub fn drop(&mut self, pkt: Packet, reason: &'static str) {
        self.drops.add(pkt.direction(), reason, pkt.len());
        drop(pkt);
    }

    /// Counts a drop of a packet that never got a buffer (the pool was empty).
    pub fn drop_unowned(&mut self, dir: Direction, reason: &'static str, len: usize) {
        self.drops.add(dir, reason, len);
    }
}

/// Drops by direction and reason: a short list searched linearly (a stage has a handful
/// of reasons).
#[derive(Debug, Clone, Default)]
pub struct DropCounts {
    entries: Vec<DropEntry>,
}

/// Packets and bytes dropped for one reason in one direction.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DropEntry {
    /// Direction of the dropped packets.
    pub direction: Direction,
    /// Why.
    pub reason: &'static str,
    /// How many.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
}

impl DropCounts {
    /// Counts one dropped packet of `len` bytes.
    pub fn add(&mut self, direction: Direction, reason: &'static str, len: usize) {
        match self
            .entries
            .iter_mut()
            .find(|e| e.direction == direction && e.reason == reason)
        {
            Some(e) => {
                e.packets += 1;
                e.bytes += len as u64;
            }
            None => self.entries.push(DropEntry {
                direction,
                reason,
                packets: 1,
                bytes: len as u64,
            }),
        }
    }

    /// Every reason seen, in first-seen order.
    pub fn entries(&self) -> &[DropEntry] {
        &self.entries
    }

    /// Packets dropped in `direction` for `reason`.
    pub fn get(&self, direction: Direction, reason: &str) -> u64 {
        self.entries
            .iter()
            .find(|e| e.direction == direction && e.reason == reason)
            .map_or(0, |e| e.packets)
    }

    /// Packets dropped in all.
    pub fn total(&self) -> u64 {
        self.entries.iter().map(|e| e.packets).sum()
    }
}
