//! The packet and timer side of [`Flow`]: `handle`, `poll_transmit`, `poll_timeout`,
//! `handle_timeout`. Kept apart from the API surface in `mod.rs` so each file reads alone.
//!
//! Order of what `poll_transmit` sends: handshake, ACK (cheap and it unblocks the peer),
//! retransmissions (oldest first: they gate in-order delivery), new one-sided packets, new
//! segments, a zero-window probe, and Close once everything is acknowledged.

use std::time::Instant;

use super::send::{decode_echo, encode_ts};
use super::*;

impl<R: RecvBuffers> Flow<R> {
    /// Processes one packet addressed to this flow.
    pub fn handle(&mut self, repr: &Repr<'_>, now: Instant) {
        self.handle_packet(repr, now, false);
    }

    /// Like [`Flow::handle`], except that a new one-sided packet is not queued as a
    /// [`FlowEvent::OneSided`] (whose payload would be a copy): `true` says the caller must
    /// act on `repr` now, reading its payload in place (e.g. with
    /// [`OneSided::from_repr_in_place`]), since the flow has recorded and will acknowledge
    /// it. Duplicates and refused packets give `false`, as do all other kinds.
    pub fn handle_in_place(&mut self, repr: &Repr<'_>, now: Instant) -> bool {
        self.handle_packet(repr, now, true)
    }

    fn handle_packet(&mut self, repr: &Repr<'_>, now: Instant, in_place: bool) -> bool {
        self.stats.packets_received += 1;
        self.liveness.on_receive(now);
        match self.state {
            State::Failed => return false,
            State::Closed => {
                // Tell a peer that missed our Close (it is retransmitting).
                if !matches!(
                    repr,
                    Repr::Close { .. } | Repr::Connect { .. } | Repr::Reject { .. }
                ) {
                    self.pending_close = true;
                }
                return false;
            }
            _ => {}
        }
        match *repr {
            Repr::Connect { src_flow, .. } => {
                // The initiator did not get our Accept and retransmitted its Connect.
                if !matches!(self.state, State::Connecting { .. }) && src_flow == self.peer_id {
                    self.pending_accept = true;
                }
            }
            Repr::Accept {
                version,
                src_flow,
                credit,
                ..
            } => self.on_accept(version, src_flow, credit, now),
            Repr::Reject { versions, reason, .. } => {
                if matches!(self.state, State::Connecting { .. }) {
                    self.fail(match reason {
                        RejectReason::NoCommonVersion => FailReason::NoCommonVersion { peer: versions },
                        RejectReason::NoListener => FailReason::NoListener,
                        RejectReason::Other(code) => FailReason::Refused { code },
                    });
                }
            }
            Repr::Close { .. } => {
                if !matches!(self.state, State::Connecting { .. }) {
                    self.finish_closed();
                }
            }
            Repr::Ack {
                cumulative,
                ref sacks,
                credit,
                echo_timestamp_ns,
                ..
            } => self.on_ack(cumulative, sacks, credit, echo_timestamp_ns, now),
            Repr::Data {
                seq, timestamp_ns, ..
            } => return self.on_reliable(repr, seq, timestamp_ns, now, false),
            Repr::ReadRequest { seq, .. }
            | Repr::IndirectReadRequest { seq, .. }
            | Repr::WriteRequest { seq, .. }
            | Repr::OpResponse { seq, .. }
            | Repr::OpError { seq, .. } => {
                // One-sided packets carry no timestamp; echo 0 ("no RTT sample").
                return self.on_reliable(repr, seq, 0, now, in_place);
            }
        }
        false
    }

    fn on_accept(&mut self, version: u8, src_flow: FlowId, credit: u64, now: Instant) {
        let State::Connecting { attempts, .. } = self.state else {
            return; // a duplicate Accept
        };
        if version < self.cfg.versions.min || version > self.cfg.versions.max {
            self.fail(FailReason::ProtocolViolation);
            return;
        }
        // The handshake is a fine first RTT sample, unless the Connect was retransmitted.
        if let (1, Some(at)) = (attempts, self.connect_sent_at) {
            self.rtt.on_sample(now.saturating_duration_since(at));
        }
        self.peer_id = src_flow;
        self.version = version;
        self.peer_credit = PeerCredit::new(credit);
        self.state = State::Connected;
        self.rto.reset_backoff();
        self.events.push_back(FlowEvent::Connected { version });
    }

    fn on_ack(
        &mut self,
        cumulative: PacketSeq,
        sacks: &crate::wire::heapless_sacks::Sacks,
        credit: u64,
        echo: u64,
        now: Instant,
    ) {
        if matches!(self.state, State::Connecting { .. }) {
            return;
        }
        let sack_end = sacks.iter().map(|b| b.end).max().unwrap_or(0);
        self.peer_credit.on_ack(cumulative, sack_end, credit);
        // Any ACK proves the peer alive and answers a window probe.
        self.probe.on_ack();
        self.rto.on_ack();
        let out = self.send.on_ack(cumulative, sacks.iter());
        if out.duplicate {
            self.stats.dup_acks += 1;
        }
        self.check_spurious_rto(echo);
        let sample = decode_echo(echo)
            .and_then(|sent| self.now_ns(now).checked_sub(sent))
            .map(Duration::from_nanos);
        if let Some(rtt) = sample {
            self.rtt.on_sample(rtt);
        }
        if out.newly_acked > 0 {
            if let Some(rtt) = sample {
                self.cc.on_ack(rtt, out.newly_acked, now, self.rtt.srtt());
            }
            self.rto.on_progress(now, self.send.has_unacked(), &self.rtt);
        }
        if out.new_losses > 0 {
            self.stats.fast_retransmits += out.new_losses as u64;
            self.cc.on_fast_retransmit(now, self.rtt.srtt());
        }
        for (stream, message) in out.completed {
            self.events.push_back(FlowEvent::MessageSent { stream, message });
        }
    }

    /// An ACK that echoes an original transmission sent before the last RTO shows the RTO
    /// was spurious: its window cut is undone (see `rto.rs`).
    fn check_spurious_rto(&mut self, echo: u64) {
        if let Some(cwnd_before) = self.rto.spurious(echo) {
            self.stats.spurious_rtos += 1;
            self.cc.undo_rto(cwnd_before);
        }
    }

    /// A packet with a sequence number, for the receiving half once connected. With
    /// `in_place`, a new one-sided packet is left to the caller (returns true).
    fn on_reliable(
        &mut self,
        repr: &Repr<'_>,
        seq: PacketSeq,
        timestamp: u64,
        now: Instant,
        in_place: bool,
    ) -> bool {
        if matches!(self.state, State::Connecting { .. }) {
            // Sent by a responder whose Accept we have not seen; it will be retransmitted.
            return false;
        }
        self.rx
            .on_packet(repr, seq, timestamp, now, in_place, &mut self.events)
    }

    /// The next packet to send, if any. Call until `None` after anything happened.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit<'_>> {
        let next = self.next_transmit(now)?;
        self.stats.packets_sent += 1;
        self.liveness.on_send(now);
        let dst_flow = self.peer_id;
        let repr = match next {
            Next::Connect => Repr::Connect {
                versions: self.cfg.versions,
                src_flow: self.local_id,
                credit: self.rx.credit(),
                service: self.service,
            },
            Next::Accept => Repr::Accept {
                dst_flow,
                version: self.version,
                src_flow: self.local_id,
                credit: self.rx.credit(),
            },
            Next::Close => Repr::Close { dst_flow },
            Next::Ack(echo_timestamp_ns) => self.rx.ack(dst_flow, echo_timestamp_ns),
            Next::Packet(seq) => {
                let p = self.send.packet(seq);
                match &p.payload {
                    Payload::Data {
                        stream,
                        message,
                        message_len,
                        offset,
                        bytes,
                    } => {
                        let (payload, rest) = bytes.split_first();
                        let repr = Repr::Data {
                            dst_flow,
                            seq,
                            timestamp_ns: p.timestamp,
                            stream: *stream,
                            message: *message,
                            message_len: *message_len,
                            offset: *offset,
                            payload,
                        };
                        return Some(Transmit::new(repr, rest));
                    }
                    Payload::OneSided(op) => {
                        let (repr, rest) = op.to_repr(dst_flow, seq);
                        return Some(Transmit::new(repr, rest));
                    }
                }
            }
            Next::Probe(seq) => Repr::Data {
                dst_flow,
                seq,
                timestamp_ns: encode_ts(self.now_ns(now), false),
                stream: 0,
                message: 0,
                message_len: 0,
                offset: 0,
                payload: &[],
            },
        };
        Some(Transmit::new(repr, &[]))
    }

    fn next_transmit(&mut self, now: Instant) -> Option<Next> {
        match self.state {
            State::Failed => return None,
            State::Closed => {
                return std::mem::take(&mut self.pending_close).then_some(Next::Close);
            }
            State::Connecting { attempts, next } => {
                if now < next || attempts > self.cfg.max_retries {
                    return None;
                }
                self.state = State::Connecting {
                    attempts: attempts + 1,
                    next: now + self.rtt.backed_off(attempts),
                };
                self.connect_sent_at = Some(now);
                return Some(Next::Connect);
            }
            State::Connected | State::Closing => {}
        }
        if std::mem::take(&mut self.pending_accept) {
            return Some(Next::Accept);
        }
        if self.rx.ack_due(now) {
            let echo = self.rx.on_ack_sent(now);
            self.stats.acks_sent += 1;
            return Some(Next::Ack(echo));
        }
        let now_ns = self.now_ns(now);
        let window_open = self.send.in_flight_pkts() < self.cc.window();
        if window_open && self.send.has_lost() {
            let seq = self.send.retransmit(now_ns)?;
            self.stats.retransmits += 1;
            self.rto.arm(now, &self.rtt);
            return Some(Next::Packet(seq));
        }
        if window_open {
            if let Some(need) = self.send.next_new_need(self.cfg.max_payload()) {
                if self.peer_credit.allows(self.send.unacked_bytes(), need) {
                    let seq = self.send.send_new(self.cfg.max_payload(), now_ns)?;
                    self.probe.on_data_sent();
                    self.rto.arm(now, &self.rtt);
                    return Some(Next::Packet(seq));
                }
                // Blocked by credit with nothing outstanding: no ACK will come to lift it
                // unless we ask, so arm the zero-window probe timer.
                if !self.send.has_unacked() {
                    self.probe.arm(now, &self.rtt);
                }
            }
        }
        if self.probe.take_due() && !self.send.has_unacked() && self.send.next_seq() > 0 {
            // A zero-length segment under an already acknowledged sequence number: the
            // receiver drops it as a duplicate and answers with an ACK carrying its credit.
            self.stats.probes_sent += 1;
            return Some(Next::Probe(self.send.next_seq() - 1));
        }
        if self.state == State::Closing && self.send.is_idle() {
            self.finish_closed();
            return Some(Next::Close);
        }
        None
    }

    /// When `handle_timeout` should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timers = match self.state {
            State::Failed | State::Closed => return None,
            State::Connecting { attempts, next } => {
                // After the last attempt, `next` is when we give up.
                return Some(next).filter(|_| attempts <= self.cfg.max_retries + 1);
            }
            State::Connected | State::Closing => [
                self.rx.ack_timeout(),
                self.rto.deadline(),
                self.probe.deadline(),
                self.liveness.keepalive_deadline(),
                self.liveness.idle_deadline(),
            ],
        };
        timers.into_iter().flatten().min()
    }

    /// Runs the timers that expired at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Connecting { attempts, next } => {
                if now >= next && attempts > self.cfg.max_retries {
                    self.fail(FailReason::ConnectTimeout);
                }
                return;
            }
            State::Connected | State::Closing => {}
            State::Failed | State::Closed => return,
        }
        let (now_ns, cwnd, outstanding) = (self.now_ns(now), self.cc.cwnd(), self.send.has_unacked());
        match self.rto.on_timeout(now, now_ns, cwnd, outstanding, &self.rtt) {
            Some(Expiry::GiveUp) => {
                self.fail(FailReason::PeerUnresponsive);
                return;
            }
            Some(Expiry::Fired) => {
                self.stats.rtos += 1;
                self.send.on_rto();
                self.cc.on_rto(now);
            }
            None => {}
        }
        if self.probe.on_timeout(now, &self.rtt) == Some(Expiry::GiveUp) {
            self.fail(FailReason::PeerUnresponsive);
            return;
        }
        if self.liveness.peer_gone(now) {
            self.fail(FailReason::PeerUnresponsive);
            return;
        }
        if self.liveness.keepalive_due(now) {
            self.stats.keepalives_sent += 1;
            self.rx.request_ack();
        }
        // The delayed-ACK timer needs no action: `poll_transmit` sees it is due.
    }
}
