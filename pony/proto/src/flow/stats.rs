//! [`FlowStats`]: a flow's counters and gauges, read with `Flow::stats`.

use std::time::Duration;

/// Counters and gauges.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FlowStats {
    /// Packets handed out by `poll_transmit` (ACKs and control included).
    pub packets_sent: u64,
    /// Packets given to `handle`.
    pub packets_received: u64,
    /// ACKs sent.
    pub acks_sent: u64,
    /// Retransmitted packets (all causes).
    pub retransmits: u64,
    /// Packets declared lost by SACK / duplicate ACKs.
    pub fast_retransmits: u64,
    /// Retransmission timeouts.
    pub rtos: u64,
    /// Duplicate ACKs received.
    pub dup_acks: u64,
    /// Received packets dropped as duplicates.
    pub dups_dropped: u64,
    /// Received packets dropped for lack of buffer (the sender overran our credit).
    pub credit_drops: u64,
    /// Data packets dropped because no buffer could be had for a new message
    /// ([`RecvBuffers::alloc`](super::RecvBuffers::alloc) said no); the peer resends them.
    pub buffer_drops: u64,
    /// Received packets dropped as malformed.
    pub malformed: u64,
    /// Zero-window probes sent.
    pub probes_sent: u64,
    /// ACKs sent as heartbeats on an idle flow.
    pub keepalives_sent: u64,
    /// Retransmission timeouts found spurious afterwards (their window cut was undone).
    pub spurious_rtos: u64,
    /// Smoothed RTT.
    pub srtt: Duration,
    /// Current RTO (without backoff).
    pub rto: Duration,
    /// Congestion window, packets.
    pub cwnd: f64,
    /// Payload bytes sent and not yet acknowledged.
    pub bytes_in_flight: u64,
    /// The peer's latest credit.
    pub peer_credit: u64,
    /// Bytes we hold for our application.
    pub recv_buffered: u64,
    /// Bytes allocated for messages being reassembled (whole messages from their first
    /// segment; capped, see `credit_drops`).
    pub reassembly_reserved: u64,
}
