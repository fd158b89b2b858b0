//! [`RejectedConnects`]: the Connects this engine rejected lately, so that an initiator's
//! retransmission of one is told the same and counted as what it is.
//!
//! An initiator retransmits its Connect every RTO (1 ms before any RTT sample) until an
//! Accept or a Reject arrives, so on a slow path one refused flow reaches the responder as
//! several Connects. Each is decided afresh (a listener may have come, a flow may have
//! closed) and each rejected one is answered with a Reject; this table only says whether
//! the rejection repeats one already counted, so that `connects_rejected` and
//! `limit_flows` count refused flows, not the initiator's timer. An accepted flow's
//! retransmitted Connect needs no table: the flow mapper finds the flow by the peer's id.
//!
//! Bounded: the last [`REMEMBERED`] rejections, the oldest forgotten first. A peer that
//! floods Connects only pushes its own and others' entries out early, and a Connect
//! retransmitted after its entry is gone is counted again: an overcount, never a lost
//! refusal.

use std::collections::VecDeque;

use pony_proto::wire::{FlowId, RejectReason};

use crate::nic::PeerAddr;

/// Rejections remembered. An initiator retransmits its Connect at most `max_retries` times,
/// its interval doubling from `initial_rto` up to `max_rto` (with the defaults, 1 ms to
/// 100 ms and 10 retries: about half a second in all), so this covers every retransmission
/// unless more than this many Connects are rejected in that time.
pub(super) const REMEMBERED: usize = 64;

/// The last [`REMEMBERED`] rejected Connects: (peer, the peer's flow id, reason).
#[derive(Debug, Default)]
pub(super) struct RejectedConnects {
    /// Oldest first.
    ring: VecDeque<(PeerAddr, FlowId, RejectReason)>,
}

impl RejectedConnects {
    /// Records that `peer`'s Connect for its flow `src_flow` was rejected for `reason`;
    /// false if that same rejection is already recorded (a retransmitted Connect).
    pub(super) fn first_time(&mut self, peer: PeerAddr, src_flow: FlowId, reason: RejectReason) -> bool {
        let entry = (peer, src_flow, reason);
        if self.ring.contains(&entry) {
            return false;
        }
        if self.ring.len() == REMEMBERED {
            self.ring.pop_front();
        }
        self.ring.push_back(entry);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_rejection_is_recognized_and_a_different_one_is_not() {
        let mut r = RejectedConnects::default();
        assert!(r.first_time(PeerAddr::Shm, 7, RejectReason::TooManyFlows));
        assert!(!r.first_time(PeerAddr::Shm, 7, RejectReason::TooManyFlows));
        // Another flow of the same peer, or the same flow refused for another reason (the
        // listener went away meanwhile), is a rejection of its own.
        assert!(r.first_time(PeerAddr::Shm, 8, RejectReason::TooManyFlows));
        assert!(r.first_time(PeerAddr::Shm, 7, RejectReason::NoListener));
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_oldest_first() {
        let mut r = RejectedConnects::default();
        for id in 0..REMEMBERED as FlowId + 1 {
            assert!(r.first_time(PeerAddr::Shm, id, RejectReason::NoListener));
        }
        assert_eq!(r.ring.len(), REMEMBERED);
        // Flow 0 was pushed out by the last one; flow 1 is still remembered.
        assert!(!r.first_time(PeerAddr::Shm, 1, RejectReason::NoListener));
        assert!(r.first_time(PeerAddr::Shm, 0, RejectReason::NoListener));
    }
}
