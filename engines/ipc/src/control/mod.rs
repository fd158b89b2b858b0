//! The host's control protocol: the messages through which applications attach channels
//! to engines and tools read the host's status, and the app-side client.
//!
//! ```text
//!   app ── SnapClient ──(SOCK_SEQPACKET, JSON + SCM_RIGHTS)──▶ control server (snap-host)
//!        ◀──── ring and doorbell descriptors ───────────────────┘   (attach runs on the engine's thread)
//! ```
//!
//! [`protocol`] defines the messages and their framing, [`status`] the host's status
//! report, [`client`] the app side. The server is `snap-host`'s (`snap_host::control`).
//! Nothing here is on the data path: once attached, an app talks to its engine through
//! shared memory only.

pub mod client;
mod fuzz;
pub mod protocol;
pub mod status;

pub use client::{ClientError, SnapClient};
pub use fuzz::{fuzz_recv, ControlFuzzOutcome};
pub use protocol::{ChannelInfo, ControlStats, EngineMove, HostStatus, Request, Response, UpgradeReport};
pub use status::{EngineHealth, EngineStatus, GroupStatus, Status, ThreadStatus};
