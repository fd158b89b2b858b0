//! Pony Express, Snap's transport, being built bottom-up (see docs/PONY.md).
//!
//! Here so far: [`wire`], the versioned packet format (`Packet`/`Repr`, CRC32C, parsing
//! that never panics); [`flow`], sans-IO flows (reliability, delay-based congestion
//! control, receiver credits, segmentation and per-stream reassembly); [`nic`], the NIC
//! backends (UDP, a shared-memory wire between two hosts on one machine, a fault
//! injector); [`pool`], the shared-memory buffer pool apps and the engine exchange payloads
//! through; [`app`], the app/engine command and completion protocol, registered memory
//! regions and sessions; [`engine`], the Pony engine that ties them together inside the
//! Snap host (an `engines::Engine`); [`client`], the app library that attaches to a Pony
//! engine of a `snap-host` over its control socket; [`socket`], blocking listeners and
//! message streams on top of it, for apps that want sockets. The benchmarks live in
//! `experiments/` (`mq-bench-pony`, `cargo xtask bench pony`). Not yet: zero-copy on the
//! engine's data path (it copies a payload once on send and once on receive; see `engine`).

pub mod app;
pub mod client;
pub mod engine;
pub mod flow;
pub mod nic;
pub mod pool;
pub mod socket;
pub mod wire;
