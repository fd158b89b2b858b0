//! [`PonyConfig`]: the settings of one Pony engine (flow parameters, session shape, and
//! the per-step batch sizes).

use std::time::Duration;

use pony_express::app::SessionShape;
use pony_proto::flow::FlowConfig;

/// Settings of one Pony engine.
#[derive(Debug, Clone)]
pub struct PonyConfig {
    /// Flow parameters; `mtu` is lowered to the NIC's (by default it is the NIC's).
    pub flow: FlowConfig,
    /// Rings and pool of each app session.
    pub session: SessionShape,
    /// Packets taken off the NIC per step.
    pub packet_batch: u32,
    /// App commands taken per step (all sessions together).
    pub command_batch: u32,
    /// Packets sent per step (all flows together).
    pub transmit_batch: u32,
    /// Retry interval when the NIC is full (nothing else would wake the engine for it).
    pub retry_after: Duration,
}

impl Default for PonyConfig {
    /// Flow defaults except the MTU, which is the NIC's.
    fn default() -> Self {
        Self {
            flow: FlowConfig {
                mtu: usize::MAX,
                ..FlowConfig::default()
            },
            session: SessionShape::default(),
            packet_batch: 64,
            command_batch: 64,
            transmit_batch: 128,
            retry_after: Duration::from_micros(50),
        }
    }
}
