//! The retransmission timer (RFC 6298 section 5) and what rides on it: exponential backoff,
//! the count of timeouts the peer left unanswered, and the record that lets a later ACK
//! undo a spurious timeout's window cut.
//!
//! The timer runs while anything sent is unacknowledged: armed by the first packet sent
//! with none pending, restarted without backoff by every ACK that makes progress, and
//! stopped when nothing is outstanding. Each expiry doubles the backoff; only silence
//! counts towards failure: a peer that answers but takes nothing (no buffer for it yet) is
//! alive, and is retried at the backed-off pace for as long as it answers, while
//! `max_retries` expiries without any ACK in between give up on it.
//!
//! Spurious timeouts are detected Eifel-style (RFC 3522): the first expiry of an episode
//! records when it fired and the window it cut; an ACK echoing an *original* transmission
//! sent before that means the packets were only late (a busy peer or a descheduled engine,
//! common on shared cores), so the cut is undone. An echo of a retransmission means they
//! were lost: the cut stands.

use std::time::Instant;

use super::rtt::RttEstimator;
use super::send::decode_echo;
use super::Expiry;

/// The retransmission timer of one flow.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct RtoTimer {
    #[serde(with = "super::state::opt_instant")]
    deadline: Option<Instant>,
    /// Doublings of the RTO since the last progress.
    backoff: u32,
    /// Expiries since the peer last sent an ACK.
    unanswered: u32,
    /// Expiries without an ACK after which the peer is presumed gone.
    max_retries: u32,
    /// Since the first expiry of an episode: when it fired (ns since the flow's epoch) and
    /// the window it cut, to undo it if an ACK shows the original packets were not lost.
    undo: Option<(u64, f64)>,
}

impl RtoTimer {
    pub(crate) fn new(max_retries: u32) -> Self {
        RtoTimer {
            deadline: None,
            backoff: 0,
            unanswered: 0,
            max_retries,
            undo: None,
        }
    }

    /// When the timer expires, if it runs.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Stops the timer (the flow ended).
    pub(crate) fn stop(&mut self) {
        self.deadline = None;
    }

    /// Forgets the backoff (the handshake finished).
    pub(crate) fn reset_backoff(&mut self) {
        self.backoff = 0;
    }

    /// A packet went out: starts the timer unless it already runs.
    pub(crate) fn arm(&mut self, now: Instant, rtt: &RttEstimator) {
        if self.deadline.is_none() {
            self.deadline = Some(now + rtt.backed_off(self.backoff));
        }
    }

    /// An ACK arrived: the peer is alive.
    pub(crate) fn on_ack(&mut self) {
        self.unanswered = 0;
    }

    /// An ACK acknowledged new packets: restarts the timer without backoff (RFC 6298 5.3)
    /// if anything is still `outstanding`, else stops it.
    pub(crate) fn on_progress(&mut self, now: Instant, outstanding: bool, rtt: &RttEstimator) {
        self.backoff = 0;
        self.deadline = outstanding.then(|| now + rtt.rto());
    }

    /// Checks an ACK's echoed timestamp against the last timeout episode: returns the
    /// window to restore when the timeout was spurious. An echo of 0 (no timestamp) leaves
    /// the episode open.
    pub(crate) fn spurious(&mut self, echo: u64) -> Option<f64> {
        let (rto_at, cwnd_before) = self.undo?;
        if echo == 0 {
            return None; // no timestamp to judge by
        }
        self.undo = None;
        if decode_echo(echo).is_some_and(|sent| sent < rto_at) {
            self.backoff = 0;
            return Some(cwnd_before);
        }
        None
    }

    /// Runs the timer at `now` (`now_ns` since the flow's epoch; `cwnd` is the window a
    /// timeout would cut). Nothing `outstanding` stops it; otherwise an expiry either gives
    /// up on a silent peer or fires: the caller then retransmits and cuts the window, and
    /// the timer is re-armed with one more doubling.
    pub(crate) fn on_timeout(
        &mut self,
        now: Instant,
        now_ns: u64,
        cwnd: f64,
        outstanding: bool,
        rtt: &RttEstimator,
    ) -> Option<Expiry> {
        if self.deadline.is_none_or(|d| d > now) {
            return None;
        }
        if !outstanding {
            self.deadline = None;
            return None;
        }
        if self.unanswered >= self.max_retries {
            return Some(Expiry::GiveUp);
        }
        self.undo.get_or_insert((now_ns, cwnd));
        self.backoff += 1;
        self.unanswered += 1;
        self.deadline = Some(now + rtt.backed_off(self.backoff));
        Some(Expiry::Fired)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::flow::send::encode_ts;

    fn rtt() -> RttEstimator {
        let us = Duration::from_micros;
        RttEstimator::new(us(100), us(50), us(10_000))
    }

    #[test]
    fn backs_off_and_gives_up_on_silence_only() {
        let (rtt, t0) = (rtt(), Instant::now());
        let mut t = RtoTimer::new(2);
        t.arm(t0, &rtt);
        assert_eq!(t.deadline(), Some(t0 + rtt.rto()));
        let at = t.deadline().unwrap();
        assert_eq!(t.on_timeout(at, 1, 10.0, true, &rtt), Some(Expiry::Fired));
        assert_eq!(t.deadline(), Some(at + rtt.backed_off(1)));
        // An ACK that answers but acknowledges nothing new keeps the backoff.
        t.on_ack();
        let at = t.deadline().unwrap();
        assert_eq!(t.on_timeout(at, 2, 10.0, true, &rtt), Some(Expiry::Fired));
        assert_eq!(t.deadline(), Some(at + rtt.backed_off(2)));
        let at = t.deadline().unwrap();
        assert_eq!(t.on_timeout(at, 3, 10.0, true, &rtt), Some(Expiry::Fired));
        let at = t.deadline().unwrap();
        assert_eq!(t.on_timeout(at, 4, 10.0, true, &rtt), Some(Expiry::GiveUp));
        // Progress restarts it without backoff; nothing outstanding stops it.
        t.on_progress(at, true, &rtt);
        assert_eq!(t.deadline(), Some(at + rtt.rto()));
        let later = at + Duration::from_secs(1);
        assert_eq!(t.on_timeout(later, 5, 10.0, false, &rtt), None);
        assert_eq!(t.deadline(), None);
    }

    #[test]
    fn an_echo_from_before_the_timeout_undoes_it() {
        let (rtt, t0) = (rtt(), Instant::now());
        let mut t = RtoTimer::new(5);
        t.arm(t0, &rtt);
        let at = t.deadline().unwrap();
        assert_eq!(t.on_timeout(at, 1_000, 8.0, true, &rtt), Some(Expiry::Fired));
        assert_eq!(t.spurious(0), None, "no timestamp: still undecided");
        assert_eq!(t.spurious(encode_ts(500, false)), Some(8.0));
        assert_eq!(t.spurious(encode_ts(500, false)), None, "undone once");
        let at = t.deadline().unwrap();
        assert_eq!(t.on_timeout(at, 2_000, 4.0, true, &rtt), Some(Expiry::Fired));
        assert_eq!(t.spurious(encode_ts(500, true)), None, "a retransmission's echo");
    }
}
