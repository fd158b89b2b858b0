//! The Pony Express app library: what an application links to use Snap's transport (see
//! docs/PONY.md).
//!
//! [`client`] attaches to a Pony engine of a running `snap-host` over its control socket and
//! offers messages, one-sided reads and writes of registered regions, and completions;
//! [`socket`] puts blocking listeners and message streams on top of it, for apps that want
//! sockets; [`pool`] is the shared-memory buffer pool through which the app and the engine
//! exchange payloads without copying; [`app`] is the command and completion protocol on the
//! session's rings and the app's end of a session.
//!
//! This crate depends on the IPC layer (`snap-ipc`) and the protocol's types (`pony-proto`)
//! only: no engine runtime, BPF, configuration format or procfs reaches an application. The
//! engine is `pony-engine`; the benchmarks live in `experiments/` (`mq-bench-pony`,
//! `cargo xtask bench pony`).

pub mod app;
pub mod client;
pub mod pool;
pub mod socket;
