//! Snap's engine pipeline: packet queues between engines, the [`Stage`] interface a step
//! of the pipeline implements, and the engine that runs one stage.
//!
//! ```text
//!  Pony engine ── PipeNic ─ queue 0 ─▶ stage engine A ─ queue 1 ─▶ stage engine B ── Wire (NIC)
//!              (pony-engine)  Tx ring ──▶           Tx ring ──▶          (last stage owns the NIC)
//!                             ◀── Rx ring           ◀── Rx ring
//!  every packet: one buffer of one shared Pool; descriptors move, bytes stay
//! ```
//!
//! - [`Pool`]: the packet buffers of one pipeline, in one shared-memory region, with a
//!   lock-free free list; [`Packet`] owns one buffer at a time.
//! - [`queue`]: a stage boundary: two single-producer/single-consumer rings of
//!   descriptors ([`desc`]), one per [`Direction`], plus a doorbell per side, so that the
//!   two stages may run on different threads, in different groups and modes.
//! - [`Stage`]: what ACL, shaping, overlay and `pass` implement; sans-IO.
//! - [`StageEngine`]: a runtime engine running one stage between its upstream queue and
//!   its downstream queue or [`Wire`] (the NIC, for the last stage).
//!
//! It is not a general dataflow system: a pipeline is a line (no fan-out), all its stages
//! live in one host process, and its pool is never shared with apps or peers.

pub mod desc;
pub mod engine;
pub mod pass;
pub mod stage;
pub mod wire;

pub mod queue;

mod packet;
mod pool;

pub use desc::{DescError, DescRepr, DESC_LEN};
pub use engine::{Downstream, StageCounters, StageEngine};
pub use packet::{Direction, Meta, Packet, Peer, RoomError};
pub use pass::PassStage;
pub use pool::{Pool, PoolConfig, PoolError, PoolStats};
pub use queue::{queue, EndStats, QueueEnd, QueueError};
pub use stage::{DropCounts, DropEntry, Output, Stage, UpdateError};
pub use wire::{Wire, WireError};
