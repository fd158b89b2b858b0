//! The NIC side of the engine: packets in (parse, then the flow mapper routes them by
//! `dst_flow`, accepting Connects for the app listening on their service or rejecting them
//! with the reason) and out (emit, send, and the one-packet stash that holds a packet the
//! NIC refused until a later step).

use std::time::Instant;

use super::Stashed;
use super::{FlowEntry, Origin, PonyEngine};
use crate::nic::{NicError, PeerAddr};
use pony_proto::flow::{Flow, FlowError, OneSided};
use pony_proto::wire::{negotiate, RejectReason, Repr};

impl PonyEngine {
    /// Sends a packet not belonging to a flow (a Reject) straight to the NIC; on any error
    /// it is dropped (the initiator retransmits its Connect).
    pub(super) fn send_raw(&mut self, repr: &Repr<'_>, to: PeerAddr) {
        if let Ok(n) = repr.emit(&mut self.tx_buf) {
            match self.nic.send(&self.tx_buf[..n], &to) {
                Ok(()) => self.stats.packets_out += 1,
                Err(_) => self.stats.tx_errors += 1,
            }
        }
    }

    /// Receives, parses and routes up to `packet_batch` packets; returns how many.
    pub(super) fn receive(&mut self, now: Instant) -> (u32, bool) {
        let mut buf = std::mem::take(&mut self.rx_buf);
        let mut n = 0;
        let mut more = false;
        while n < self.cfg.packet_batch {
            let (len, from) = match self.nic.recv(&mut buf) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    log::warn!("{}: nic recv: {e}", self.name);
                    break;
                }
            };
            n += 1;
            self.stats.packets_in += 1;
            match Repr::parse(&buf[..len]) {
                Ok(repr) => self.route(&repr, from, now),
                Err(_) => self.stats.malformed += 1,
            }
            more = n == self.cfg.packet_batch;
        }
        self.rx_buf = buf;
        (n, more)
    }

    /// The flow mapper: hands a packet to its flow, or accepts / rejects a Connect (no
    /// common version, or nobody listening on its service).
    pub(super) fn route(&mut self, repr: &Repr<'_>, from: PeerAddr, now: Instant) {
        if let Some(dst) = repr.dst_flow() {
            let act_now = match self.flows.get_mut(&dst) {
                Some(e) if e.peer == from => e.flow.handle_in_place(repr, now),
                _ => {
                    self.stats.unknown_flow += 1;
                    return;
                }
            };
            // A new one-sided packet: served, or written to its target, straight from the
            // receive buffer.
            if let (true, Some((op, payload))) = (act_now, OneSided::from_repr_in_place(repr)) {
                if let Some(mut e) = self.flows.remove(&dst) {
                    self.one_sided(dst, &mut e, op, payload);
                    self.flows.insert(dst, e);
                }
            }
            return;
        }
        let Repr::Connect {
            src_flow,
            service,
            versions,
            ..
        } = *repr
        else {
            self.stats.malformed += 1;
            return;
        };
        if let Some(id) = self.by_peer.get(&(from, src_flow)) {
            if let Some(e) = self.flows.get_mut(id) {
                e.flow.handle(repr, now); // a retransmitted Connect: re-send the Accept
                return;
            }
        }
        // Versions first: an initiator we cannot talk to learns that, not that nobody
        // listens (it could not use the listener anyway).
        let listener = match negotiate(self.cfg.flow.versions, versions) {
            None => Err(RejectReason::NoCommonVersion),
            Some(_) => self
                .listeners
                .get(&service)
                .copied()
                .ok_or(RejectReason::NoListener),
        };
        let (session, cookie) = match listener {
            Ok(listener) => listener,
            Err(reason) => {
                self.stats.connects_rejected += 1;
                let reject = Repr::Reject {
                    dst_flow: src_flow,
                    versions: self.cfg.flow.versions,
                    reason,
                };
                self.send_raw(&reject, from);
                return;
            }
        };
        let Some(bufs) = self.sessions.get(&session).map(|s| s.recv_buffers()) else {
            return;
        };
        let id = self.next_flow;
        match Flow::accept_with(self.cfg.flow.clone(), id, repr, now, bufs) {
            Ok(flow) => {
                self.next_flow += 1;
                self.stats.flows_accepted += 1;
                self.by_peer.insert((from, src_flow), id);
                let mut e = FlowEntry::new(flow, from, session, Origin::Accepted(cookie));
                e.peer_key = Some(src_flow);
                self.flows.insert(id, e);
            }
            Err(FlowError::Rejected { reject }) => {
                self.stats.connects_rejected += 1;
                self.send_raw(&reject, from);
            }
            Err(_) => self.stats.malformed += 1,
        }
    }

    /// Sends the stashed packets; returns whether the NIC is usable this step.
    pub(super) fn flush_stash(&mut self) -> bool {
        while let Some(st) = self.stash.pop_front() {
            if !self.send_batch(&st.packets, st.segment, st.to) {
                return false;
            }
        }
        true
    }

    /// Sends a batch (see `Nic::send_batch`), counting it. A refused rest goes to the
    /// front of the stash; returns false then (the NIC is full).
    fn send_batch(&mut self, packets: &[u8], segment: usize, to: PeerAddr) -> bool {
        let count = |bytes: usize| bytes.div_ceil(segment.max(1)) as u64;
        match self.nic.send_batch(packets, segment, &to) {
            Ok(()) => {
                self.stats.packets_out += count(packets.len());
                true
            }
            Err((sent, NicError::WouldBlock)) => {
                self.stats.packets_out += count(sent);
                self.stats.tx_would_block += 1;
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
                self.stats.packets_out += count(sent);
                self.stats.tx_errors += 1;
                true
            }
        }
    }

    /// Sends the batch in `tx_buf[..len]`, or stashes it behind what the NIC already
    /// refused (keeping the order).
    fn flush_batch(&mut self, len: usize, segment: usize, to: PeerAddr) {
        if !self.stash.is_empty() {
            let packets = self.tx_buf[..len].to_vec();
            self.stash.push_back(Stashed { packets, segment, to });
            return;
        }
        let batch = std::mem::take(&mut self.tx_buf);
        self.send_batch(&batch[..len], segment, to);
        self.tx_buf = batch;
    }

    /// Emits and sends a flow's packets until it has none, the budget is spent or the NIC
    /// is full. Packets are emitted end to end into `tx_buf` and go out in batches of up
    /// to `max_batch` (one `Nic::send_batch` each): a batch is packets of one size, but
    /// for a last shorter one (a message's tail, an ACK).
    pub(super) fn transmit(&mut self, e: &mut FlowEntry, budget: &mut u32, now: Instant) {
        let cap = self.tx_packet_cap;
        let (mut len, mut count, mut segment) = (0, 0, 0);
        while *budget > 0 && self.stash.is_empty() {
            let Some(t) = e.flow.poll_transmit(now) else { break };
            let n = match t.emit(&mut self.tx_buf[len..len + cap]) {
                Ok(n) => n,
                Err(err) => {
                    log::warn!("{}: emit: {err}", self.name);
                    self.stats.tx_errors += 1;
                    continue;
                }
            };
            *budget -= 1;
            if count > 0 && n > segment {
                // Longer than the batch's packets: the batch goes first, this one starts
                // the next.
                self.flush_batch(len, segment, e.peer);
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
                self.flush_batch(len, segment, e.peer);
                (len, count) = (0, 0);
            }
        }
        if count > 0 {
            self.flush_batch(len, segment, e.peer);
        }
    }
}
