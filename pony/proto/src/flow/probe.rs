//! The zero-window probe: how a sender held back by the peer's credit, with nothing in
//! flight, learns that the credit opened again.
//!
//! A window update (a plain ACK) that is lost while nothing is in flight would leave both
//! ends waiting forever: no data to acknowledge, so no ACK. When the sender is blocked by
//! credit with nothing outstanding it arms this timer; on expiry it sends a probe (a
//! zero-length segment under an already acknowledged sequence number, which the receiver
//! drops as a duplicate and answers with an ACK carrying its credit) and re-arms with the
//! interval doubled. Any ACK stops the timer; the backoff is only reset once credit lets
//! data flow again. After `max_retries` probes without an ACK the peer is presumed gone.

use std::time::Instant;

use super::rtt::RttEstimator;
use super::Expiry;

/// The zero-window probe timer of one flow.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct WindowProbe {
    #[serde(with = "super::state::opt_instant")]
    deadline: Option<Instant>,
    /// A probe should go out at the next transmit opportunity.
    due: bool,
    /// Doublings of the probe interval; reset only when credit lets data flow again.
    backoff: u32,
    /// Probes sent since the last ACK; too many and the peer is presumed gone.
    unanswered: u32,
    max_retries: u32,
}

impl WindowProbe {
    pub(crate) fn new(max_retries: u32) -> Self {
        WindowProbe {
            deadline: None,
            due: false,
            backoff: 0,
            unanswered: 0,
            max_retries,
        }
    }

    /// When the timer expires, if it runs.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Stops the timer (an ACK came, or the flow ended).
    pub(crate) fn stop(&mut self) {
        self.deadline = None;
    }

    /// An ACK arrived: it answers any probe.
    pub(crate) fn on_ack(&mut self) {
        self.unanswered = 0;
        self.deadline = None;
    }

    /// New data went out: credit is flowing again.
    pub(crate) fn on_data_sent(&mut self) {
        self.backoff = 0;
    }

    /// The sender is blocked by credit with nothing outstanding: starts the timer unless
    /// it already runs.
    pub(crate) fn arm(&mut self, now: Instant, rtt: &RttEstimator) {
        if self.deadline.is_none() {
            self.deadline = Some(now + rtt.backed_off(self.backoff));
        }
    }

    /// Whether a probe is due; clears the request.
    pub(crate) fn take_due(&mut self) -> bool {
        std::mem::take(&mut self.due)
    }

    /// Runs the timer at `now`: an expiry either gives up on a silent peer or asks for a
    /// probe and re-arms with one more doubling.
    pub(crate) fn on_timeout(&mut self, now: Instant, rtt: &RttEstimator) -> Option<Expiry> {
        if self.deadline.is_none_or(|d| d > now) {
            return None;
        }
        if self.unanswered >= self.max_retries {
            return Some(Expiry::GiveUp);
        }
        self.unanswered += 1;
        self.backoff += 1;
        self.due = true;
        self.deadline = Some(now + rtt.backed_off(self.backoff));
        Some(Expiry::Fired)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn probes_back_off_until_answered_or_given_up() {
        let us = Duration::from_micros;
        let rtt = RttEstimator::new(us(100), us(50), us(10_000));
        let t0 = Instant::now();
        let mut p = WindowProbe::new(2);
        assert_eq!(p.on_timeout(t0 + us(1_000), &rtt), None, "not armed");
        p.arm(t0, &rtt);
        p.arm(t0 + us(10), &rtt);
        assert_eq!(p.deadline(), Some(t0 + rtt.rto()), "armed once");
        let at = p.deadline().unwrap();
        assert_eq!(p.on_timeout(at, &rtt), Some(Expiry::Fired));
        assert!(p.take_due() && !p.take_due());
        assert_eq!(p.deadline(), Some(at + rtt.backed_off(1)));
        let at = p.deadline().unwrap();
        assert_eq!(p.on_timeout(at, &rtt), Some(Expiry::Fired));
        let at = p.deadline().unwrap();
        assert_eq!(p.on_timeout(at, &rtt), Some(Expiry::GiveUp));
        // An answer stops it and forgives the silence, not the backoff.
        p.on_ack();
        assert_eq!(p.deadline(), None);
        p.arm(at, &rtt);
        assert_eq!(p.deadline(), Some(at + rtt.backed_off(2)));
        p.stop();
        p.on_data_sent();
        p.arm(at, &rtt);
        assert_eq!(p.deadline(), Some(at + rtt.rto()));
    }
}
