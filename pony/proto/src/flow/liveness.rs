//! Liveness of a connected flow: when the peer was last heard from and when we last sent.
//!
//! A flow that hears nothing for `idle_timeout` presumes its peer gone, even with nothing
//! to send; one that has sent nothing for a quarter of it sends an ACK as a heartbeat, so
//! a live but quiet peer's timer never fires. Without an `idle_timeout` neither happens.

use std::time::{Duration, Instant};

/// The idle and keepalive clocks of one flow.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Liveness {
    idle_timeout: Option<Duration>,
    #[serde(with = "super::state::instant")]
    last_rx: Instant,
    #[serde(with = "super::state::instant")]
    last_tx: Instant,
}

impl Liveness {
    pub(crate) fn new(idle_timeout: Option<Duration>, now: Instant) -> Self {
        Liveness {
            idle_timeout,
            last_rx: now,
            last_tx: now,
        }
    }

    /// A packet arrived from the peer.
    pub(crate) fn on_receive(&mut self, now: Instant) {
        self.last_rx = now;
    }

    /// A packet went out.
    pub(crate) fn on_send(&mut self, now: Instant) {
        self.last_tx = now;
    }

    /// When a silent peer is declared gone.
    pub(crate) fn idle_deadline(&self) -> Option<Instant> {
        self.idle_timeout.map(|t| self.last_rx + t)
    }

    /// When a flow that has sent nothing for a while sends a heartbeat ACK.
    pub(crate) fn keepalive_deadline(&self) -> Option<Instant> {
        self.idle_timeout.map(|t| self.last_tx + t / 4)
    }

    /// Whether the peer has been silent for too long at `now`.
    pub(crate) fn peer_gone(&self, now: Instant) -> bool {
        self.idle_deadline().is_some_and(|d| d <= now)
    }

    /// Whether a heartbeat is due at `now`.
    pub(crate) fn keepalive_due(&self, now: Instant) -> bool {
        self.keepalive_deadline().is_some_and(|d| d <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_and_keepalive_follow_the_last_packets() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut l = Liveness::new(Some(ms(400)), t0);
        assert!(!l.keepalive_due(t0 + ms(99)) && l.keepalive_due(t0 + ms(100)));
        l.on_send(t0 + ms(100));
        assert_eq!(l.keepalive_deadline(), Some(t0 + ms(200)));
        assert!(!l.peer_gone(t0 + ms(399)) && l.peer_gone(t0 + ms(400)));
        l.on_receive(t0 + ms(300));
        assert_eq!(l.idle_deadline(), Some(t0 + ms(700)));
        let never = Liveness::new(None, t0);
        assert!(!never.peer_gone(t0 + ms(1_000_000)) && never.keepalive_deadline().is_none());
    }
}
