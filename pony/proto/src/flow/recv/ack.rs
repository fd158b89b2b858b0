//! [`AckState`]: delayed ACKs. Every `ack_every`-th packet is acknowledged at once, others
//! after at most `delayed_ack`; anything out of order (a hole, a duplicate) is acknowledged
//! immediately so the sender's loss detection sees it quickly. The ACK echoes the
//! timestamp of the packet that triggered it, advanced by how long it was held.

use std::time::{Duration, Instant};

/// When to send an ACK, and what timestamp to echo in it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct AckState {
    ack_every: u32,
    delayed_ack: Duration,
    /// Packets received since the last ACK.
    unacked: u32,
    /// Send an ACK at the next opportunity.
    now: bool,
    /// Send an ACK at this time at the latest.
    #[serde(with = "crate::flow::state::opt_instant")]
    deadline: Option<Instant>,
    /// Timestamp of the packet that will be echoed and when it arrived.
    #[serde(with = "crate::flow::state::opt_echo")]
    echo: Option<(u64, Instant)>,
}

impl AckState {
    pub(crate) fn new(ack_every: u32, delayed_ack: Duration) -> Self {
        AckState {
            ack_every: ack_every.max(1),
            delayed_ack,
            unacked: 0,
            now: false,
            deadline: None,
            echo: None,
        }
    }

    /// A reliable packet arrived (new or duplicate). `immediate` asks for an ACK right away
    /// (out of order, duplicate, dropped for lack of buffer).
    pub(crate) fn on_packet(&mut self, timestamp: u64, immediate: bool, now: Instant) {
        self.echo = Some((timestamp, now));
        self.unacked += 1;
        if immediate || self.unacked >= self.ack_every {
            self.now = true;
        } else if self.deadline.is_none() {
            self.deadline = Some(now + self.delayed_ack);
        }
    }

    /// Ask for an ACK without a packet to echo (a window update).
    pub(crate) fn request(&mut self) {
        self.now = true;
    }

    /// Whether an ACK should go out at `now`.
    pub(crate) fn due(&self, now: Instant) -> bool {
        self.now || self.deadline.is_some_and(|d| d <= now)
    }

    /// The delayed-ACK timer.
    pub(crate) fn timeout(&self) -> Option<Instant> {
        if self.now {
            None
        } else {
            self.deadline
        }
    }

    /// An ACK is being sent: returns the timestamp to echo, advanced by how long the ACK was
    /// held so the sender measures the network, not our delayed-ACK timer (kept even, since
    /// the low bit is the sender's retransmission mark). 0 means "no sample".
    pub(crate) fn on_sent(&mut self, now: Instant) -> u64 {
        self.unacked = 0;
        self.now = false;
        self.deadline = None;
        match self.echo.take() {
            Some((ts, at)) => {
                let held = now.saturating_duration_since(at).as_nanos() as u64;
                ts.wrapping_add(held & !1)
            }
            None => 0,
        }
    }
}
