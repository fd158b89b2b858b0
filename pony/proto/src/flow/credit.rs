//! Flow control by receiver credits, in bytes.
//!
//! The receiver has `recv_buffer` bytes for payload it has received but the application has
//! not yet taken (partial messages, complete messages and one-sided packets waiting in the
//! event queue). Every ACK advertises `credit = recv_buffer - buffered`: what it can still
//! take beyond what that ACK acknowledges. The sender keeps the payload bytes it has sent but
//! not seen acknowledged (`unacked`) within the latest credit, so a receiver whose
//! application stops polling stops the sender instead of dropping packets. Retransmissions
//! are always allowed: their bytes were already counted when first sent.
//!
//! ACKs can be reordered, and an old ACK may carry an old (larger) credit. The sender only
//! takes credit from ACKs at least as *fresh* as the freshest seen, freshness being
//! (cumulative ack, highest SACKed sequence); of equally fresh ACKs (window updates, sent
//! with no new data in between) the latest to arrive wins, as in TCP's window update rule:
//! the credit may have grown (the application drained) or shrunk (an outside limit, such
//! as the app's pool filling up, cut it). A packet that fills a hole
//! between SACK blocks changes neither, which can make the sender briefly optimistic; the
//! receiver then drops what does not fit (counted in `credit_drops`) and the packet is
//! retransmitted, so correctness never rests on the sender's view.
//!
//! When the application drains a significant amount (a quarter of the buffer, or enough for
//! a segment after the credit had fallen below one), the receiver sends a window update
//! (a plain ACK). If that is lost while the sender has nothing in flight, no ACK would ever
//! come back; the sender's zero-window probe timer (`probe.rs`) breaks that deadlock.

use crate::wire::PacketSeq;

/// The sender's view of the peer's credit.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct PeerCredit {
    credit: u64,
    freshest: (PacketSeq, PacketSeq),
}

impl PeerCredit {
    /// Starts from the credit the peer announced in Connect/Accept.
    pub(crate) fn new(initial: u64) -> Self {
        PeerCredit {
            credit: initial,
            freshest: (0, 0),
        }
    }

    /// Takes the credit of an ACK with `cumulative` and highest SACKed end `sack_end`,
    /// unless it is older than one already seen.
    pub(crate) fn on_ack(&mut self, cumulative: PacketSeq, sack_end: PacketSeq, credit: u64) {
        let key = (cumulative, sack_end.max(cumulative));
        if key > self.freshest {
            self.freshest = key;
            self.credit = credit;
        } else if key == self.freshest {
            self.credit = credit;
        }
    }

    /// The credit itself.
    pub(crate) fn credit(&self) -> u64 {
        self.credit
    }

    /// Whether `more` new payload bytes may be sent with `unacked` already outstanding.
    pub(crate) fn allows(&self, unacked: u64, more: u64) -> bool {
        unacked.saturating_add(more) <= self.credit
    }
}

/// The receiver's buffer accounting.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct RecvBuffer {
    capacity: u64,
    /// A cap from outside the flow (the memory messages land in), `u64::MAX` for none.
    limit: u64,
    buffered: u64,
    last_advertised: u64,
    segment: u64,
}

impl RecvBuffer {
    /// `segment` is the largest payload of one packet, used to decide when a window update
    /// is worth sending.
    pub(crate) fn new(capacity: u64, segment: u64) -> Self {
        RecvBuffer {
            capacity,
            limit: u64::MAX,
            buffered: 0,
            last_advertised: capacity,
            segment,
        }
    }

    /// Space left, i.e. the credit to advertise.
    pub(crate) fn available(&self) -> u64 {
        self.capacity.saturating_sub(self.buffered).min(self.limit)
    }

    /// Caps what [`Self::available`] says at `limit`. Returns whether a window update
    /// should be sent now (the cap rose enough to matter, as in [`Self::release`]).
    /// The cap last set by [`RecvBuffer::set_limit`].
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    pub(crate) fn set_limit(&mut self, limit: u64) -> bool {
        self.limit = limit;
        self.update_due()
    }

    /// Bytes held for the application.
    pub(crate) fn buffered(&self) -> u64 {
        self.buffered
    }

    /// Takes `n` bytes of a newly received packet; false if they do not fit (drop it).
    pub(crate) fn try_charge(&mut self, n: u64) -> bool {
        if n > self.available() {
            return false;
        }
        self.buffered += n;
        true
    }

    /// The application took `n` bytes. Returns whether a window update should be sent now.
    pub(crate) fn release(&mut self, n: u64) -> bool {
        self.buffered = self.buffered.saturating_sub(n);
        self.update_due()
    }

    /// Whether the credit changed enough since it was last advertised to tell the peer
    /// now: it grew by a quarter of the buffer or past one segment from below (so a
    /// stalled sender resumes), or an outside limit cut it below half (so the sender stops
    /// before it sends what would be dropped).
    fn update_due(&self) -> bool {
        let now = self.available();
        let grew = now.saturating_sub(self.last_advertised);
        grew >= self.capacity / 4
            || (self.last_advertised < self.segment && now >= self.segment)
            || now < self.last_advertised / 2
    }

    /// Records what an outgoing ACK advertised.
    pub(crate) fn advertised(&mut self, credit: u64) {
        self.last_advertised = credit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_acks_do_not_raise_credit() {
        let mut c = PeerCredit::new(100);
        c.on_ack(10, 12, 50);
        c.on_ack(8, 0, 90); // older ACK, reordered
        assert_eq!(c.credit(), 50);
        c.on_ack(10, 12, 70); // window update (same freshness)
        assert_eq!(c.credit(), 70);
        assert!(c.allows(60, 10));
        assert!(!c.allows(61, 10));
        c.on_ack(10, 12, 20); // a cut (same freshness): the latest wins
        assert_eq!(c.credit(), 20);
    }

    #[test]
    fn window_update_when_drained() {
        let mut b = RecvBuffer::new(1000, 100);
        assert!(b.try_charge(950));
        assert!(!b.try_charge(100));
        b.advertised(b.available());
        assert!(!b.release(10)); // 60 available: still below a segment
        assert!(b.release(100)); // 160: crossed one segment
        b.advertised(b.available());
        assert!(!b.release(100));
        assert!(b.release(200)); // grew by >= capacity / 4 since last advertised
    }

    #[test]
    fn an_outside_limit_caps_credit_and_its_rise_updates_the_window() {
        let mut b = RecvBuffer::new(1000, 100);
        b.advertised(b.available());
        assert!(b.set_limit(50), "a cut to below half is news");
        assert_eq!(b.available(), 50);
        assert!(!b.try_charge(60), "past the limit: dropped");
        b.advertised(b.available());
        assert!(!b.set_limit(90));
        assert!(b.set_limit(800), "the cap rose by a quarter of the buffer");
        assert_eq!(b.available(), 800);
    }
}
