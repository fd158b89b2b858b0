//! Swift-style delay-based congestion control (Kumar et al., SIGCOMM'20), simplified.
//!
//! The congestion window `cwnd` is counted in packets. Each ACK carries a delay sample (the
//! round trip measured from the echoed timestamp). Below the target delay the window grows
//! additively (`ai / cwnd` per acked packet, so about `ai` packets per RTT); above it the
//! window shrinks multiplicatively in proportion to how far the delay overshoots, at most
//! once per RTT so one burst of queueing is not punished once per ACK:
//!
//! ```text
//!   cwnd *= max(1 - beta * (delay - target) / delay, 1 - max_mdf)
//! ```
//!
//! The target is a base (fabric + host budget) plus Swift's *flow scaling*: flows with a
//! small window get a larger target, so many small flows sharing a bottleneck converge to
//! fairness instead of all backing off to the minimum.
//!
//! Simplifications (documented so nobody is surprised): no pacing, so `cwnd` never goes
//! below one packet (Swift allows fractional windows sent with pacing); no separate
//! fabric/endpoint windows; no hop-count scaling (the wire carries no hop count).

use std::time::{Duration, Instant};

/// Swift parameters. The default targets (500 µs + 500 µs of flow scaling) are for
/// software NICs whose engines share cores with other work: there the measured delay is
/// mostly endpoint scheduling, and Swift's hardware-fabric targets of tens of µs kept the
/// window at a few packets on a 2-CPU host (see docs/PONY.md, "Performance").
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SwiftConfig {
    /// Target delay with a large window (fabric + endpoint budget).
    pub base_target: Duration,
    /// Extra target granted to flows with a small window (flow scaling range).
    pub fs_range: Duration,
    /// Window (packets) at or below which a flow gets the whole `fs_range`.
    pub fs_min_cwnd: f64,
    /// Window (packets) at or above which a flow gets no extra target.
    pub fs_max_cwnd: f64,
    /// Additive increase, packets per RTT.
    pub ai: f64,
    /// Multiplicative decrease gain.
    pub beta: f64,
    /// Largest fraction removed by one decrease.
    pub max_mdf: f64,
    /// Smallest window (packets, at least 1: see the module doc).
    pub min_cwnd: f64,
    /// Largest window (packets).
    pub max_cwnd: f64,
    /// Window at the start of a flow.
    pub initial_cwnd: f64,
}

impl Default for SwiftConfig {
    fn default() -> Self {
        SwiftConfig {
            base_target: Duration::from_micros(500),
            fs_range: Duration::from_micros(500),
            fs_min_cwnd: 1.0,
            fs_max_cwnd: 100.0,
            ai: 1.0,
            beta: 0.8,
            max_mdf: 0.5,
            min_cwnd: 1.0,
            max_cwnd: 2048.0,
            initial_cwnd: 16.0,
        }
    }
}

/// Swift's state.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Swift {
    cfg: SwiftConfig,
    cwnd: f64,
    #[serde(with = "super::state::opt_instant")]
    last_decrease: Option<Instant>,
}

impl Swift {
    pub(crate) fn new(mut cfg: SwiftConfig) -> Self {
        cfg.min_cwnd = cfg.min_cwnd.max(1.0);
        cfg.max_cwnd = cfg.max_cwnd.max(cfg.min_cwnd);
        let cwnd = cfg.initial_cwnd.clamp(cfg.min_cwnd, cfg.max_cwnd);
        Swift {
            cfg,
            cwnd,
            last_decrease: None,
        }
    }

    /// The window (fractional).
    pub(crate) fn cwnd(&self) -> f64 {
        self.cwnd
    }

    /// Whole packets the window allows in flight (at least 1).
    pub(crate) fn window(&self) -> usize {
        (self.cwnd.floor() as usize).max(1)
    }

    /// The current target delay: base plus flow scaling, which interpolates linearly in
    /// `1/sqrt(cwnd)` between `fs_max_cwnd` (no extra) and `fs_min_cwnd` (all of `fs_range`).
    pub(crate) fn target(&self) -> Duration {
        let inv = |w: f64| 1.0 / w.max(1e-3).sqrt();
        let (lo, hi) = (inv(self.cfg.fs_max_cwnd), inv(self.cfg.fs_min_cwnd));
        let frac = if hi > lo {
            ((inv(self.cwnd) - lo) / (hi - lo)).clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.cfg.base_target + self.cfg.fs_range.mul_f64(frac)
    }

    fn can_decrease(&self, now: Instant, srtt: Duration) -> bool {
        self.last_decrease
            .is_none_or(|t| now.saturating_duration_since(t) >= srtt)
    }

    /// An ACK newly acknowledged `acked` packets and measured `delay`.
    pub(crate) fn on_ack(&mut self, delay: Duration, acked: usize, now: Instant, srtt: Duration) {
        let target = self.target();
        if delay < target {
            // ai / cwnd per packet: about `ai` packets per window's worth of ACKs.
            self.cwnd += self.cfg.ai * acked as f64 / self.cwnd;
        } else if self.can_decrease(now, srtt) {
            let over = (delay - target).as_secs_f64() / delay.as_secs_f64();
            let factor = (1.0 - self.cfg.beta * over).max(1.0 - self.cfg.max_mdf);
            self.cwnd *= factor;
            self.last_decrease = Some(now);
        }
        self.clamp();
    }

    /// Loss detected by SACK/duplicate ACKs: one maximal decrease, at most once per RTT.
    pub(crate) fn on_fast_retransmit(&mut self, now: Instant, srtt: Duration) {
        if self.can_decrease(now, srtt) {
            self.cwnd *= 1.0 - self.cfg.max_mdf;
            self.last_decrease = Some(now);
            self.clamp();
        }
    }

    /// A retransmission timeout: the path may be badly congested, start over from the minimum.
    pub(crate) fn on_rto(&mut self, now: Instant) {
        self.cwnd = self.cfg.min_cwnd;
        self.last_decrease = Some(now);
    }

    /// A timeout turned out spurious: back to the window it cut (never below the
    /// current one).
    pub(crate) fn undo_rto(&mut self, cwnd_before: f64) {
        self.cwnd = self.cwnd.max(cwnd_before);
        self.clamp();
    }

    fn clamp(&mut self) {
        self.cwnd = self.cwnd.clamp(self.cfg.min_cwnd, self.cfg.max_cwnd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increase_below_target_decrease_above_once_per_rtt() {
        let t0 = Instant::now();
        let us = Duration::from_micros;
        let mut s = Swift::new(SwiftConfig {
            initial_cwnd: 10.0,
            ..Default::default()
        });
        s.on_ack(us(10), 10, t0, us(20));
        assert!((s.cwnd() - 11.0).abs() < 1e-9);
        // delay far above target: decrease capped by max_mdf
        s.on_ack(us(10_000), 1, t0, us(20));
        assert!((s.cwnd() - 5.5).abs() < 1e-9);
        // a second decrease within the same RTT is ignored
        s.on_ack(us(10_000), 1, t0 + us(5), us(20));
        assert!((s.cwnd() - 5.5).abs() < 1e-9);
        s.on_ack(us(10_000), 1, t0 + us(25), us(20));
        assert!(s.cwnd() < 5.5);
        s.on_rto(t0);
        assert_eq!(s.window(), 1);
    }

    #[test]
    fn flow_scaling_gives_small_windows_a_larger_target() {
        let cfg = SwiftConfig {
            base_target: Duration::from_micros(50),
            fs_range: Duration::from_micros(50),
            ..Default::default()
        };
        let small = Swift::new(SwiftConfig {
            initial_cwnd: 1.0,
            ..cfg.clone()
        });
        let big = Swift::new(SwiftConfig {
            initial_cwnd: 1000.0,
            ..cfg
        });
        assert_eq!(small.target(), Duration::from_micros(100));
        assert_eq!(big.target(), Duration::from_micros(50));
    }
}
