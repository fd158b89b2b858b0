//! The host's control plane: a Unix socket through which applications attach channels to
//! engines and tools read the host's status.
//!
//! ```text
//!   app ── SnapClient ──(SOCK_SEQPACKET, JSON + SCM_RIGHTS)──▶ ControlServer ── mailbox ──▶ engine
//!        ◀──── ring and doorbell descriptors ───────────────────┘   (runs attach on the engine's thread)
//! ```
//!
//! [`protocol`] defines the messages and their framing, [`server`] the host side (access
//! control with `SO_PEERCRED`, one thread per connection, channels detached when their
//! connection closes), [`client`] the app side. Nothing here is on the data path: once
//! attached, an app talks to its engine through shared memory only.

pub mod client;
pub mod protocol;
pub mod server;

use std::path::PathBuf;

pub use client::{ClientError, SnapClient};
pub use protocol::{ChannelInfo, HostStatus, Request, Response};
pub use server::{ControlServer, ServerOptions};

/// Why the control server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A socket call failed.
    #[error("control socket: {0}: {1}")]
    Socket(&'static str, #[source] rustix::io::Errno),
    /// A file-system operation on the socket path or its directory failed.
    #[error("control socket {0}: {1}")]
    Path(PathBuf, #[source] std::io::Error),
    /// Something that is not a socket is in the way.
    #[error("control socket {0}: exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// Another host is listening there.
    #[error("control socket {0}: another Snap host is listening there")]
    InUse(PathBuf),
    /// The listener thread could not be started.
    #[error("control thread: {0}")]
    Thread(#[source] std::io::Error),
}

#[cfg(test)]
mod tests;
