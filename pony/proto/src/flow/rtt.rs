//! Round-trip time estimation and the retransmission timeout (RFC 6298).
//!
//! Samples come from echoed timestamps in ACKs (see `send.rs`): the receiver echoes the
//! timestamp of the packet that triggered the ACK, adjusted by how long it held the ACK, so a
//! sample is the network round trip without the delayed-ACK wait. Samples of retransmitted
//! packets are never taken (Karn), because the sender marks them (see `send::encode_ts`).

use std::time::Duration;

/// Smoothed RTT, its variation and the RTO derived from them.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    min_rto: Duration,
    max_rto: Duration,
    initial_rto: Duration,
}

/// Clock granularity term `G` of RFC 6298: our clock is the caller's `Instant`, so this only
/// keeps the RTO above SRTT when the variance collapses to zero in a perfectly steady network.
const GRANULARITY: Duration = Duration::from_micros(1);

impl RttEstimator {
    pub(crate) fn new(initial_rto: Duration, min_rto: Duration, max_rto: Duration) -> Self {
        RttEstimator {
            srtt: None,
            rttvar: Duration::ZERO,
            min_rto,
            max_rto,
            initial_rto,
        }
    }

    /// Feeds one RTT sample (RFC 6298 section 2 with alpha = 1/8, beta = 1/4).
    pub(crate) fn on_sample(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let err = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + err) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
    }

    /// The smoothed RTT, or the initial RTO before any sample (a pessimistic stand-in that
    /// callers use for "once per RTT" decisions).
    pub(crate) fn srtt(&self) -> Duration {
        self.srtt.unwrap_or(self.initial_rto)
    }

    /// The base RTO (before exponential backoff), clamped to `[min_rto, max_rto]`.
    pub(crate) fn rto(&self) -> Duration {
        match self.srtt {
            None => self.initial_rto,
            Some(srtt) => (srtt + (self.rttvar * 4).max(GRANULARITY)).clamp(self.min_rto, self.max_rto),
        }
    }

    /// The RTO after `backoff` doublings, still capped at `max_rto`.
    pub(crate) fn backed_off(&self, backoff: u32) -> Duration {
        let base = self.rto();
        base.checked_mul(1u32 << backoff.min(20))
            .unwrap_or(self.max_rto)
            .min(self.max_rto.max(base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6298_first_and_later_samples() {
        let us = Duration::from_micros;
        let mut r = RttEstimator::new(us(1000), us(50), us(100_000));
        assert_eq!(r.rto(), us(1000));
        r.on_sample(us(100));
        assert_eq!(r.srtt(), us(100));
        // 100 + 4 * 50
        assert_eq!(r.rto(), us(300));
        r.on_sample(us(100));
        assert_eq!(r.srtt(), us(100));
        assert!(r.rto() < us(300));
        assert_eq!(r.backed_off(1), r.rto() * 2);
        assert_eq!(r.backed_off(30), us(100_000));
    }
}
