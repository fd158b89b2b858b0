//! [`FlowConfig`]: the parameters of a flow (packet size, buffers, timers, versions,
//! congestion control, liveness).

use std::time::Duration;

use super::SwiftConfig;
use crate::wire::{self, Kind, VersionRange};

/// The default [`FlowConfig::idle_timeout`]: a dead peer is noticed within it, well under a
/// second, at the cost of one heartbeat ACK per idle flow every quarter of it (200 ms).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_millis(800);

/// Flow parameters. Both sides should use compatible values: `recv_buffer` must hold the
/// peer's largest message (it is reassembled whole before delivery).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FlowConfig {
    /// Largest packet, headers included.
    pub mtu: usize,
    /// Largest message accepted by `send_message` and from the peer.
    pub max_message_len: usize,
    /// `send_message` fails with `Busy` while this many bytes are accepted and not yet
    /// acknowledged (one message is always accepted when nothing is queued).
    pub send_buffer: u64,
    /// Bytes buffered for the application (the credit granted to the peer).
    pub recv_buffer: u64,
    /// RTO before any RTT sample (also the connect retry interval).
    pub initial_rto: Duration,
    /// Lower bound of the RTO.
    pub min_rto: Duration,
    /// Upper bound of the RTO, backoff included.
    pub max_rto: Duration,
    /// Consecutive timeouts without progress (RTOs, connect attempts, unanswered window
    /// probes) after which the flow fails.
    pub max_retries: u32,
    /// Acknowledge at least every this many packets.
    pub ack_every: u32,
    /// Longest an ACK is held for a packet that arrived in order.
    pub delayed_ack: Duration,
    /// Versions spoken.
    pub versions: VersionRange,
    /// Congestion control.
    pub cc: SwiftConfig,
    /// A connected flow that hears nothing from its peer for this long fails
    /// ([`FailReason::PeerUnresponsive`](super::FailReason::PeerUnresponsive)), even with nothing to send; to keep the peer's
    /// timer quiet, a flow that has sent nothing for a quarter of it sends an ACK as a
    /// heartbeat. `None`: an idle flow never notices a dead peer. Peers should agree.
    pub idle_timeout: Option<Duration>,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            mtu: 5000,
            max_message_len: 8 << 20,
            send_buffer: 32 << 20,
            recv_buffer: 16 << 20,
            initial_rto: Duration::from_millis(1),
            min_rto: Duration::from_millis(1),
            max_rto: Duration::from_millis(100),
            max_retries: 10,
            ack_every: 2,
            delayed_ack: Duration::from_micros(20),
            versions: wire::SUPPORTED_VERSIONS,
            cc: SwiftConfig::default(),
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
        }
    }
}

impl FlowConfig {
    /// Largest payload of one Data packet (at least 1, so that segmentation progresses
    /// even with an `mtu` too small for the header; such packets then exceed the `mtu`).
    pub fn max_payload(&self) -> usize {
        wire::max_payload(self.mtu, Kind::Data).max(1)
    }
}
