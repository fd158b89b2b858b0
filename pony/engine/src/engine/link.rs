//! [`Link`]: the engine's NIC and what is on its way out to it.
//!
//! A flow's packets are emitted end to end into one transmit buffer and go out in batches
//! of up to the NIC's `max_batch` (one [`Nic::send_batch`] each): a batch is packets of one
//! size, but for a last shorter one (a message's tail, an ACK). What the NIC refuses
//! ([`NicError::WouldBlock`]) is stashed, in order, and sent before anything else in a
//! later step; while the stash is not empty new batches queue behind it.

use std::collections::VecDeque;
use std::time::Instant;

use super::PonyStats;
use crate::nic::{Nic, NicError, PeerAddr};
use pony_proto::flow::{Flow, RecvBuffers};
use pony_proto::wire::{self, Repr};

/// Packets the NIC refused: a batch of `segment`-sized packets (the last may be shorter).
#[derive(Debug)]
struct Stashed {
    packets: Vec<u8>,
    segment: usize,
    to: PeerAddr,
}

/// The NIC, the transmit buffer and the stash of refused packets.
pub(super) struct Link {
    /// `None` while the engine holds it to receive in place ([`Link::detach_nic`]).
    nic: Option<Box<dyn Nic>>,
    /// Raw packets (Rejects) sent while the NIC was detached, sent when it is back.
    deferred: Vec<(Vec<u8>, PeerAddr)>,
    /// The engine's name, for log lines.
    name: String,
    /// Room for `max_batch` packets of `tx_packet_cap` bytes: a flow's packets are emitted
    /// end to end and sent with one [`Nic::send_batch`].
    tx_buf: Vec<u8>,
    tx_packet_cap: usize,
    max_batch: usize,
    /// Packets the NIC refused (queue full), sent before anything else.
    stash: VecDeque<Stashed>,
    /// An in-place NIC had no free frame for a flow with packets to send: the engine
    /// retries soon, as with a stash (see [`Link::is_stalled`]).
    frames_full: bool,
}

impl Link {
    /// A link on `nic` for flows whose packets are at most `flow_mtu` bytes.
    pub(super) fn new(name: &str, nic: Box<dyn Nic>, flow_mtu: usize) -> Self {
        let tx_packet_cap = flow_mtu.max(wire::MAX_HEADER_LEN) + 64;
        let max_batch = nic.max_batch().max(1);
        Link {
            nic: Some(nic),
            deferred: Vec::new(),
            name: name.to_owned(),
            tx_buf: vec![0; max_batch * tx_packet_cap],
            tx_packet_cap,
            max_batch,
            stash: VecDeque::new(),
            frames_full: false,
        }
    }

    /// The NIC. Panics while it is detached (only `receive` detaches it, and gives it back
    /// before anything else runs).
    pub(super) fn nic(&self) -> &dyn Nic {
        self.nic.as_deref().expect("the NIC is attached")
    }

    fn nic_mut_inner(&mut self) -> &mut dyn Nic {
        self.nic.as_deref_mut().expect("the NIC is attached")
    }

    /// The NIC, to send behind the engine's back (tests of malformed input).
    #[cfg(test)]
    pub(super) fn nic_mut(&mut self) -> &mut dyn Nic {
        self.nic_mut_inner()
    }

    /// Takes the NIC out so that the engine can receive in place from the NIC's buffer
    /// ([`Nic::recv_in_place`]) while routing packets with the rest of itself, this link
    /// included: a Reject sent meanwhile waits in `deferred`. Give it back with
    /// [`Link::attach_nic`].
    pub(super) fn detach_nic(&mut self) -> Box<dyn Nic> {
        self.nic.take().expect("the NIC is attached")
    }

    /// Puts the NIC back and sends what was deferred while it was out.
    pub(super) fn attach_nic(&mut self, nic: Box<dyn Nic>, stats: &mut PonyStats) {
        self.nic = Some(nic);
        for (packet, to) in std::mem::take(&mut self.deferred) {
            match self.nic_mut_inner().send(&packet, &to) {
                Ok(()) => stats.packets_out += 1,
                Err(_) => stats.tx_errors += 1,
            }
        }
    }

    /// Whether packets the NIC refused are waiting.
    pub(super) fn is_stalled(&self) -> bool {
        !self.stash.is_empty() || self.frames_full
    }

    /// Sends a packet not belonging to a flow (a Reject) straight to the NIC; on any error
    /// it is dropped (the initiator retransmits its Connect).
    pub(super) fn send_raw(&mut self, repr: &Repr<'_>, to: PeerAddr, stats: &mut PonyStats) {
        if let Ok(n) = repr.emit(&mut self.tx_buf) {
            let Some(nic) = self.nic.as_deref_mut() else {
                // Bounded by the receive batch: one Reject at most per received packet.
                self.deferred.push((self.tx_buf[..n].to_vec(), to));
                return;
            };
            match nic.send(&self.tx_buf[..n], &to) {
                Ok(()) => stats.packets_out += 1,
                Err(_) => stats.tx_errors += 1,
            }
        }
    }

    /// Sends the stashed packets; returns whether the NIC is usable this step.
    pub(super) fn flush_stash(&mut self, stats: &mut PonyStats) -> bool {
        // Frames may have come back since: the next transmit finds out.
        self.frames_full = false;
        while let Some(st) = self.stash.pop_front() {
            if !self.send_batch(&st.packets, st.segment, st.to, stats) {
                return false;
            }
        }
        true
    }

    /// Sends a batch (see `Nic::send_batch`), counting it. A refused rest goes to the
    /// front of the stash; returns false then (the NIC is full).
    fn send_batch(&mut self, packets: &[u8], segment: usize, to: PeerAddr, stats: &mut PonyStats) -> bool {
        let count = |bytes: usize| bytes.div_ceil(segment.max(1)) as u64;
        match self.nic_mut_inner().send_batch(packets, segment, &to) {
            Ok(()) => {
                stats.packets_out += count(packets.len());
                true
            }
            Err((sent, NicError::WouldBlock)) => {
                stats.packets_out += count(sent);
                stats.tx_would_block += 1;
                let rest = Stashed {
                    packets: packets[sent..].to_vec(),
                    segment,
                    to,
                };
                self.stash.push_front(rest);
                false
            }
            Err((sent, err)) => {
                log::debug!("{}: nic send: {err}", self.name);
                stats.packets_out += count(sent);
                stats.tx_errors += 1;
                true
            }
        }
    }

    /// Sends the batch in `tx_buf[..len]`, or stashes it behind what the NIC already
    /// refused (keeping the order).
    fn flush_batch(&mut self, len: usize, segment: usize, to: PeerAddr, stats: &mut PonyStats) {
        if !self.stash.is_empty() {
            let packets = self.tx_buf[..len].to_vec();
            self.stash.push_back(Stashed { packets, segment, to });
            return;
        }
        let batch = std::mem::take(&mut self.tx_buf);
        self.send_batch(&batch[..len], segment, to, stats);
        self.tx_buf = batch;
    }

    /// Emits and sends `flow`'s packets to `peer` until it has none, the budget is spent or
    /// the NIC is full, in batches (see the module documentation).
    pub(super) fn transmit<R: RecvBuffers>(
        &mut self,
        flow: &mut Flow<R>,
        peer: PeerAddr,
        budget: &mut u32,
        now: Instant,
        stats: &mut PonyStats,
    ) {
        if self.nic().emits_in_place() {
            return self.transmit_in_place(flow, peer, budget, now, stats);
        }
        let cap = self.tx_packet_cap;
        let (mut len, mut count, mut segment) = (0, 0, 0);
        while *budget > 0 && self.stash.is_empty() {
            let Some(t) = flow.poll_transmit(now) else { break };
            let n = match t.emit(&mut self.tx_buf[len..len + cap]) {
                Ok(n) => n,
                Err(err) => {
                    log::warn!("{}: emit: {err}", self.name);
                    stats.tx_errors += 1;
                    continue;
                }
            };
            *budget -= 1;
            if count > 0 && n > segment {
                // Longer than the batch's packets: the batch goes first, this one starts
                // the next.
                self.flush_batch(len, segment, peer, stats);
                self.tx_buf.copy_within(len..len + n, 0);
                (len, count) = (0, 0);
            }
            if count == 0 {
                segment = n;
            }
            len += n;
            count += 1;
            // A shorter packet ends a batch; so does a full one.
            if n < segment || count == self.max_batch {
                self.flush_batch(len, segment, peer, stats);
                (len, count) = (0, 0);
            }
        }
        if count > 0 {
            self.flush_batch(len, segment, peer, stats);
        }
    }

    /// [`Link::transmit`] on a NIC that emits in place: each packet is emitted straight into
    /// a transmit frame of the NIC, in rounds of up to `max_batch` (one ring submission and
    /// wakeup each), while the flow has packets, the budget lasts and frames are free.
    fn transmit_in_place<R: RecvBuffers>(
        &mut self,
        flow: &mut Flow<R>,
        peer: PeerAddr,
        budget: &mut u32,
        now: Instant,
        stats: &mut PonyStats,
    ) {
        let name = &self.name;
        let nic = self.nic.as_deref_mut().expect("the NIC is attached");
        while *budget > 0 && self.stash.is_empty() {
            let max = (*budget as usize).min(self.max_batch);
            let (mut emitted, mut errors, mut drained) = (0u32, 0u64, false);
            let result = nic.emit_in_place(&peer, max, &mut |frame| loop {
                let Some(t) = flow.poll_transmit(now) else {
                    drained = true;
                    return None;
                };
                match t.emit(frame) {
                    Ok(n) => {
                        emitted += 1;
                        return Some(n);
                    }
                    Err(err) => {
                        log::warn!("{name}: emit: {err}");
                        errors += 1;
                    }
                }
            });
            *budget = budget.saturating_sub(emitted);
            stats.tx_errors += errors;
            match result {
                Ok(sent) => {
                    stats.packets_out += sent as u64;
                    if drained {
                        return;
                    }
                    if sent < max {
                        // No free frame: the flow keeps its packets until the next step.
                        stats.tx_would_block += 1;
                        self.frames_full = true;
                        return;
                    }
                }
                Err(err) => {
                    // Emitted packets are lost (the transport retransmits them).
                    log::debug!("{name}: nic emit: {err}");
                    stats.tx_errors += 1;
                    return;
                }
            }
        }
    }
}
