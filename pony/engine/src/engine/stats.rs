//! [`PonyStats`]: an engine's counters, read through `PonyEngine::stats` (the control
//! plane's status, tests and benchmarks).

use pony_proto::flow::FlowStats;

use crate::nic::FaultStats;
use crate::regions::Refusals;

/// Counters of an engine (cumulative unless said otherwise). Serialized as the engine's
/// counters in the host's `status`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PonyStats {
    /// Sessions attached now.
    pub sessions: usize,
    /// Flows alive now (including ownerless ones still closing).
    pub flows: usize,
    /// Packets taken off the NIC.
    pub packets_in: u64,
    /// Packets handed to the NIC.
    pub packets_out: u64,
    /// Sessions whose command ring broke, quarantined and detached.
    pub sessions_quarantined: u64,
    /// Times a session's completions found its ring full, so the engine stopped taking its
    /// commands until it consumed some.
    pub backpressure_waits: u64,
    /// Sessions under backpressure now.
    pub sessions_backpressured: usize,
    /// Completions the engine holds now because their app's completion ring is full: the
    /// app is not reading its completions (`Sent` included), and the engine takes none of
    /// its commands until it has read enough for all of these to be pushed.
    #[serde(default)]
    pub completions_parked: u64,
    /// Operations (Sends, Reads, Writes, IndirectReads) of all apps in the engine now.
    pub ops_outstanding: u64,
    /// Regions registered now.
    pub regions: usize,
    /// Flows refused at a limit (`max_flows`, `max_flows_per_app`): peers' Connects
    /// (rejected with `TooManyFlows`, once per flow however often it is retransmitted) and
    /// apps' OpenFlows.
    pub limit_flows: u64,
    /// Commands refused with `TooManyOps` (`max_ops_per_app`).
    pub limit_ops: u64,
    /// Region registrations refused with `TooManyRegions` (`max_regions_per_app`).
    pub limit_regions: u64,
    /// Flow ids refused because they name a closed flow (an old generation): in apps'
    /// commands (answered `StaleFlow`) and in peers' packets (dropped, also counted in
    /// `unknown_flow`).
    pub stale_flow_ids: u64,
    /// Received packets that did not parse (bad checksum, truncated, unknown kind…).
    pub malformed: u64,
    /// Received packets for no flow of ours (or from the wrong peer).
    pub unknown_flow: u64,
    /// Connects refused (no common version, no app listening on the service, or
    /// `max_flows` reached: also in `limit_flows`), one per refused flow: a retransmission
    /// of a Connect already refused is answered the same way and counted in
    /// `connects_rejected_again` instead.
    pub connects_rejected: u64,
    /// Retransmitted Connects of a flow already refused (the initiator's Reject was still
    /// on its way), rejected again.
    #[serde(default)]
    pub connects_rejected_again: u64,
    /// Flows accepted for a listening app.
    pub flows_accepted: u64,
    /// Flows that failed (peer unreachable or unresponsive).
    pub flows_failed: u64,
    /// NIC sends that found the queue full (the packet was kept and sent later).
    pub tx_would_block: u64,
    /// NIC sends that failed otherwise (packet dropped; the flow retransmits).
    pub tx_errors: u64,
    /// App commands handled.
    pub commands: u64,
    /// Messages delivered to apps.
    pub messages_delivered: u64,
    /// Data packets dropped because the owner's pool had no room for a new message (the
    /// peer resends them; credit capped by free pool bytes keeps this rare).
    pub buffer_drops: u64,
    /// One-sided requests from peers served.
    pub ops_served: u64,
    /// One-sided requests from peers refused (by reason in `refusals`).
    pub ops_refused: u64,
    /// Region check refusals by reason.
    pub refusals: Refusals,
    /// One-sided requests from peers refused as larger than `max_onesided_bytes` (also in
    /// `ops_refused`).
    pub onesided_too_large: u64,
    /// Our apps' one-sided ops the peer refused.
    pub ops_failed_remote: u64,
    /// One-sided responses for no pending op (late, after a close) or inconsistent ones.
    pub stray_responses: u64,
    /// Packets retransmitted by all flows, past and present.
    pub retransmits: u64,
    /// Retransmission timeouts of all flows, past and present.
    pub rtos: u64,
    /// Received packets the flows dropped as duplicates.
    pub dups_dropped: u64,
    /// What a fault-injecting NIC did to packets sent and received (`None` on a plain NIC).
    /// (Read live from the NIC, never from a state snapshot's JSON.)
    #[serde(default, skip_deserializing)]
    pub faults: Option<InjectedFaults>,
    /// The NIC backend's own counters ([`crate::nic::Nic::backend_counters`]; `None` when
    /// it has none). Read live from the NIC, never from a state snapshot's JSON.
    #[serde(default, skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub nic: Option<std::collections::BTreeMap<String, u64>>,
}

/// What a fault-injecting NIC did, in each direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct InjectedFaults {
    /// To packets sent.
    pub tx: FaultStats,
    /// To packets received.
    pub rx: FaultStats,
}

impl PonyStats {
    /// Adds a flow's counters to the engine's (live flows' when read, finished flows' when
    /// they are forgotten).
    pub(super) fn add_flow(&mut self, f: &FlowStats) {
        self.retransmits += f.retransmits;
        self.rtos += f.rtos;
        self.dups_dropped += f.dups_dropped;
        self.buffer_drops += f.buffer_drops;
    }
}
