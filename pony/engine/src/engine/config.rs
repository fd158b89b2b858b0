//! [`PonyConfig`]: the settings of one Pony engine (flow parameters, session shape, the
//! per-step batch sizes, and the limits that bound what peers and apps can make it hold).

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
    /// Largest one-sided Read or Write (bytes) the engine serves for a peer or starts for
    /// an app; larger ones are refused with `TooLarge`. Default 16 MiB
    /// ([`DEFAULT_MAX_ONESIDED_BYTES`]).
    pub max_onesided_bytes: u32,
    /// What the engine holds at most; beyond, the request gets a clear refusal.
    pub limits: PonyLimits,
}

/// The engine's resource limits (see docs/PONY.md, "Limits"). Each refusal is counted in
/// [`PonyStats`](super::PonyStats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PonyLimits {
    /// Flows of the engine, accepted and opened together, closing ones included (at most
    /// 2^20 - 1: a flow id keeps 12 bits of generation). A peer's Connect beyond it gets a
    /// Reject (`TooManyFlows`), an app's OpenFlow the error `TooManyFlows`.
    pub max_flows: u32,
    /// Flows one app owns (opened and accepted).
    pub max_flows_per_app: u32,
    /// Operations of one app in the engine at once (Sends, Reads, Writes, IndirectReads
    /// not yet completed); a command beyond it is refused with `TooManyOps`.
    pub max_ops_per_app: u32,
    /// Regions one app has registered.
    pub max_regions_per_app: u32,
}

impl Default for PonyLimits {
    fn default() -> Self {
        PonyLimits {
            max_flows: 4096,
            max_flows_per_app: 1024,
            max_ops_per_app: 4096,
            max_regions_per_app: 64,
        }
    }
}

/// 16 MiB: the size of an app's default pool (`SessionShape::default()`: 8192 × 2 KiB), so
/// an app on defaults can receive any read it is allowed to ask for, and twice the largest
/// message (8 MiB). Reads are served in chunks whatever this is (`engine::target`), so it
/// bounds the time one op holds a flow and what a Write may touch, not the engine's memory.
pub const DEFAULT_MAX_ONESIDED_BYTES: u32 = 16 << 20;

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
            max_onesided_bytes: DEFAULT_MAX_ONESIDED_BYTES,
            limits: PonyLimits::default(),
        }
    }
}
