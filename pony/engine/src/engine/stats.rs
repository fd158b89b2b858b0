//! [`PonyStats`]: an engine's counters, read through `PonyEngine::stats` (the control
//! plane's status, tests and benchmarks).

use std::collections::BTreeMap;

use pony_proto::flow::FlowStats;

use crate::nic::FaultStats;
use crate::regions::Refusals;

/// Counters of an engine (cumulative unless said otherwise).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PonyStats {
    /// Sessions attached now.
    pub sessions: usize,
    /// Flows alive now (including ownerless ones still closing).
    pub flows: usize,
    /// Packets taken off the NIC.
    pub packets_in: u64,
    /// Packets handed to the NIC.
    pub packets_out: u64,
    /// Received packets that did not parse (bad checksum, truncated, unknown kind…).
    pub malformed: u64,
    /// Received packets for no flow of ours (or from the wrong peer).
    pub unknown_flow: u64,
    /// Connects refused (no app listening on the service, or no common version).
    pub connects_rejected: u64,
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
    pub faults: Option<[FaultStats; 2]>,
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

    /// The counters by name, for the host's `status` (`Engine::counters`). Injected faults
    /// appear as `faults_{tx,rx}_{dropped,corrupted,duplicated,reordered,delayed}` only on a
    /// fault-injecting NIC.
    pub fn counters(&self) -> BTreeMap<&'static str, u64> {
        let mut c = BTreeMap::from([
            ("sessions", self.sessions as u64),
            ("flows", self.flows as u64),
            ("packets_in", self.packets_in),
            ("packets_out", self.packets_out),
            ("malformed", self.malformed),
            ("unknown_flow", self.unknown_flow),
            ("connects_rejected", self.connects_rejected),
            ("flows_accepted", self.flows_accepted),
            ("flows_failed", self.flows_failed),
            ("tx_would_block", self.tx_would_block),
            ("tx_errors", self.tx_errors),
            ("commands", self.commands),
            ("messages_delivered", self.messages_delivered),
            ("buffer_drops", self.buffer_drops),
            ("ops_served", self.ops_served),
            ("ops_refused", self.ops_refused),
            ("refused_unknown_region", self.refusals.unknown_region),
            ("refused_bad_key", self.refusals.bad_key),
            ("refused_out_of_bounds", self.refusals.out_of_bounds),
            ("ops_failed_remote", self.ops_failed_remote),
            ("stray_responses", self.stray_responses),
            ("retransmits", self.retransmits),
            ("rtos", self.rtos),
            ("dups_dropped", self.dups_dropped),
        ]);
        if let Some([tx, rx]) = &self.faults {
            c.extend([
                ("faults_tx_dropped", tx.dropped),
                ("faults_tx_corrupted", tx.corrupted),
                ("faults_tx_duplicated", tx.duplicated),
                ("faults_tx_reordered", tx.reordered),
                ("faults_tx_delayed", tx.delayed),
                ("faults_rx_dropped", rx.dropped),
                ("faults_rx_corrupted", rx.corrupted),
                ("faults_rx_duplicated", rx.duplicated),
                ("faults_rx_reordered", rx.reordered),
                ("faults_rx_delayed", rx.delayed),
            ]);
        }
        c
    }
}
