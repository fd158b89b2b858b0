//! Pony Express's protocol, sans-IO (see docs/PONY.md and docs/WIRE.md).
//!
//! [`wire`] is the versioned packet format (`Packet`/`Repr`, CRC32C, parsing that never
//! panics); [`flow`] is a flow between two engines: reliability, delay-based congestion
//! control, receiver credits, segmentation and per-stream reassembly, driven by packets and
//! a `now: Instant` and handing out packets to send and the next timer to arm.
//!
//! There are no sockets, clocks, threads or shared memory here, so loss, reordering and
//! timeouts are tested deterministically. The Pony engine (`pony-engine`) owns the I/O.

pub mod flow;
pub mod wire;
