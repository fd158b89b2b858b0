//! The control protocol: JSON messages over a `SOCK_SEQPACKET` Unix socket, one message
//! per packet, descriptors alongside in `SCM_RIGHTS`.
//!
//! A seqpacket socket keeps message boundaries, so a message and the descriptors sent with
//! it arrive together and never split or merge (with a stream socket, descriptors attach to
//! byte ranges and the reader must reassemble). Each message is one JSON object followed by
//! a newline, so a transcript reads as newline-delimited JSON.
//!
//! | request                      | fds in      | response    | fds out               |
//! |------------------------------|-------------|-------------|-----------------------|
//! | `attach {engine, notify}`    | 2 if notify | `attached`  | [`HOST_FDS`] (4)      |
//! | `detach {channel}`           | 0           | `detached`  | 0                     |
//! | `stage_fd {engine, channel}` | 1           | `staged`    | 0                     |
//! | `status`                     | 0           | `status`    | 0                     |
//! | `engine_add {group, table}`  | 0           | `changed`   | 0                     |
//! | `engine_remove {engine}`     | 0           | `changed`   | 0                     |
//! | `group_add {table}`          | 0           | `changed`   | 0                     |
//! | `group_remove {group}`       | 0           | `changed`   | 0                     |
//! | `stage_update {engine, settings}` | 0      | `changed`   | 0                     |
//! | `upgrade {binary}`           | 0           | `upgraded`  | 0                     |
//!
//! Any request can be answered with `error {message}`. The last six are the operator's
//! (`snapctl`): they change the running engines, and only root and the host's own user may
//! send them. `table` is the body of one `[[group.engine]]` or `[[group]]` table of the
//! host's TOML configuration, with the same keys and meaning.
//!
//! [`HOST_FDS`]: crate::channel::HOST_FDS

use std::collections::BTreeMap;
use std::io::IoSlice;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::net::{socket_with, AddressFamily, SocketFlags, SocketType};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::status::Status;
use crate::fd_passing;

/// Largest message either side sends or accepts (a status of many engines fits easily).
pub const MAX_MESSAGE: usize = 128 * 1024;

/// Most descriptors a message carries.
pub const MAX_FDS: usize = 8;

/// What an app asks the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Connect to an app-facing engine. The descriptors carried with the request, and those
    /// of the answer, are the engine's to define: for echo-style engines, with `notify` the
    /// request carries the app's completion doorbell ([`crate::channel::APP_FDS`]) and the
    /// answer the channel ([`crate::channel::HOST_FDS`]).
    Attach {
        /// Engine name.
        engine: String,
        /// Whether the engine should ring the app's completion doorbell.
        notify: bool,
    },
    /// Disconnect a channel attached on this connection.
    Detach {
        /// The id from `attached`.
        channel: u64,
    },
    /// Hand the engine a descriptor for a channel attached on this connection (e.g. a
    /// memory region's memfd); the answer's cookie names it in the channel's own protocol.
    StageFd {
        /// Engine name.
        engine: String,
        /// The channel id from `attached`.
        channel: u64,
    },
    /// The host's status.
    Status,
    /// Operator: start an engine in a running group.
    EngineAdd {
        /// The group.
        group: String,
        /// The engine, as the body of a `[[group.engine]]` table of the host's configuration.
        table: String,
    },
    /// Operator: stop and drop an engine; its apps' connections are closed.
    EngineRemove {
        /// Engine name.
        engine: String,
    },
    /// Operator: start a group with its engines.
    GroupAdd {
        /// The group, as the body of a `[[group]]` table of the host's configuration.
        table: String,
    },
    /// Operator: stop a group and drop its engines; their apps' connections are closed.
    GroupRemove {
        /// Group name.
        group: String,
    },
    /// Operator: replace a pipeline stage's settings; the stage applies them whole or
    /// refuses them, changing nothing.
    StageUpdate {
        /// The stage's engine name.
        engine: String,
        /// The new settings, as the body of the stage's `settings` table.
        settings: String,
    },
    /// Operator: replace this host process by a new one that takes over its engines, apps
    /// and control socket (docs/UPGRADE.md). Answered once the new host serves.
    Upgrade {
        /// The new host's binary; by default the binary the running host was started from.
        binary: Option<String>,
    },
}

impl Request {
    /// Whether the request changes the running engines (an operator's request).
    pub fn is_operator(&self) -> bool {
        matches!(
            self,
            Self::EngineAdd { .. }
                | Self::EngineRemove { .. }
                | Self::GroupAdd { .. }
                | Self::GroupRemove { .. }
                | Self::StageUpdate { .. }
                | Self::Upgrade { .. }
        )
    }
}

/// What the host answers.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    /// A channel was attached; its descriptors come with this message.
    Attached {
        /// Id for `detach` (unique per engine).
        channel: u64,
        /// The engine's description of the layout (echo-style: `capacity`, `slot_size`).
        details: serde_json::Value,
    },
    /// The channel was detached.
    Detached {
        /// Its id.
        channel: u64,
    },
    /// The descriptor of a `stage_fd` was taken.
    Staged {
        /// The engine's name for it.
        cookie: u64,
    },
    /// The host's status.
    Status {
        /// Runtime and control-plane status.
        status: Box<HostStatus>,
    },
    /// An operator's change was made.
    Changed {
        /// What changed, for people.
        summary: String,
    },
    /// The host was upgraded: a new process serves from now on.
    Upgraded {
        /// What moved and how long it took.
        report: UpgradeReport,
    },
    /// The request failed, or the connection is refused.
    Error {
        /// Why, for people.
        message: String,
    },
}

/// What an upgrade did (`snapctl upgrade --json` prints it as is).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpgradeReport {
    /// The process that served before.
    pub old_pid: u32,
    /// The process that serves now.
    pub new_pid: u32,
    /// From the request to the new host serving every engine and app connection.
    pub total_ms: f64,
    /// Each engine, in the order it moved.
    pub engines: Vec<EngineMove>,
}

/// How one engine moved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineMove {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// From the first export to the freeze: the engine kept serving.
    pub brownout_ms: f64,
    /// From the freeze to the new engine's first step in the new process: the engine's
    /// flows and apps waited.
    pub blackout_ms: f64,
    /// Exports before the freeze (the full snapshot and the deltas).
    pub rounds: u32,
    /// Bytes of state sent, every export included.
    pub state_bytes: u64,
}

/// The runtime's status plus the control plane's view of attached apps.
#[derive(Debug, Serialize, Deserialize)]
pub struct HostStatus {
    /// Threads, engines and their counters, from the runtime.
    pub runtime: Status,
    /// Channels attached now, across all connections.
    pub channels: Vec<ChannelInfo>,
    /// Engine-specific counters by engine name, for engines that keep some (e.g. a Pony
    /// engine's flows, limits and refusals).
    #[serde(default)]
    pub counters: BTreeMap<String, serde_json::Value>,
    /// The control server's own counters.
    #[serde(default)]
    pub control: ControlStats,
    /// Each engine's kind (`echo`, `relay`, `pony`, …) by engine name, as configured (and
    /// changed by the operator since), so
    /// that a client can pick the engines it can attach to (e.g. the `pony` tool finds the
    /// host's Pony engines).
    #[serde(default)]
    pub kinds: BTreeMap<String, String>,
}

/// Counters of the control server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlStats {
    /// Connections open now (this one included).
    pub connections: usize,
    /// The most it serves at once.
    pub max_connections: usize,
    /// Connections refused because the cap was reached, since start.
    pub refused: u64,
    /// Connections closed because they idled with no channel attached, or did not take a
    /// reply in time, since start.
    pub timed_out: u64,
}

impl HostStatus {
    /// Counter `path` of `engine` (its fields joined by dots, e.g. `"flows_failed"` or
    /// `"faults.tx.dropped"`), if the engine reports it as a whole number.
    pub fn counter(&self, engine: &str, path: &str) -> Option<u64> {
        path.split('.')
            .try_fold(self.counters.get(engine)?, |v, key| v.get(key))?
            .as_u64()
    }

    /// The names of the engines of `kind`, in name order.
    pub fn engines_of_kind(&self, kind: &str) -> Vec<&str> {
        self.kinds
            .iter()
            .filter(|(_, k)| *k == kind)
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// Number of channels attached to `engine`.
    pub fn channels_of(&self, engine: &str) -> usize {
        self.channels.iter().filter(|c| c.engine == engine).count()
    }
}

/// One attached channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelInfo {
    /// Engine serving it.
    pub engine: String,
    /// Id within the engine.
    pub channel: u64,
    /// Process that attached it (from `SO_PEERCRED`).
    pub pid: i32,
    /// Its user.
    pub uid: u32,
    /// Whether the engine rings its completion doorbell.
    pub notify: bool,
}

/// Why a message could not be sent or received.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The socket failed.
    #[error("control socket: {0}")]
    Io(#[from] rustix::io::Errno),
    /// The bytes are not the expected JSON.
    #[error("malformed control message: {0}")]
    Json(#[from] serde_json::Error),
    /// A message longer than [`MAX_MESSAGE`], or more than [`MAX_FDS`] descriptors.
    #[error("control message too large (more than {MAX_MESSAGE} bytes or {MAX_FDS} descriptors)")]
    TooLarge,
}

/// A new, unconnected socket of the protocol's kind (Unix, `SOCK_SEQPACKET`, close-on-exec),
/// for the server's listener and liveness probe and for the client.
pub fn socket() -> rustix::io::Result<OwnedFd> {
    socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
}

/// Sends one message with `fds` attached.
pub fn send<T: Serialize>(
    socket: BorrowedFd<'_>,
    msg: &T,
    fds: &[BorrowedFd<'_>],
) -> Result<(), ProtocolError> {
    let mut bytes = serde_json::to_vec(msg)?;
    bytes.push(b'\n');
    if bytes.len() > MAX_MESSAGE || fds.len() > MAX_FDS {
        return Err(ProtocolError::TooLarge);
    }
    fd_passing::send(socket, &[IoSlice::new(&bytes)], fds, MAX_FDS)?;
    Ok(())
}

/// A received message and the descriptors that came with it.
pub struct Received<T> {
    /// The message.
    pub msg: T,
    /// Its descriptors, in the order sent (already close-on-exec).
    pub fds: Vec<OwnedFd>,
}

/// Receives one message into `buf` (at least [`MAX_MESSAGE`] bytes are used). `Ok(None)`
/// when the peer closed the connection.
pub fn recv<T: DeserializeOwned>(
    socket: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
) -> Result<Option<Received<T>>, ProtocolError> {
    buf.resize(MAX_MESSAGE + 1, 0);
    let got = fd_passing::recv(socket, buf, MAX_FDS)?;
    if got.is_end() {
        return Ok(None);
    }
    if got.bytes > MAX_MESSAGE || got.truncated {
        return Err(ProtocolError::TooLarge);
    }
    let msg = serde_json::from_slice(&buf[..got.bytes])?;
    Ok(Some(Received { msg, fds: got.fds }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::SendFlags;
    use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
    use std::os::fd::{AsFd, AsRawFd};

    fn pair() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap()
    }

    #[test]
    fn requests_round_trip_with_fds() {
        let (a, b) = pair();
        let (r, _w) = std::io::pipe().unwrap();
        let req = Request::Attach {
            engine: "echo0".into(),
            notify: true,
        };
        send(a.as_fd(), &req, &[r.as_fd(), r.as_fd()]).unwrap();
        send(a.as_fd(), &Request::Status, &[]).unwrap();
        let mut buf = Vec::new();
        let got = recv::<Request>(b.as_fd(), &mut buf).unwrap().unwrap();
        assert_eq!(got.msg, req);
        assert_eq!(got.fds.len(), 2);
        assert_ne!(got.fds[0].as_raw_fd(), r.as_raw_fd());
        let got = recv::<Request>(b.as_fd(), &mut buf).unwrap().unwrap();
        assert_eq!((got.msg, got.fds.len()), (Request::Status, 0));
        drop(a);
        assert!(recv::<Request>(b.as_fd(), &mut buf).unwrap().is_none());
    }

    #[test]
    fn wire_format_is_tagged_json_lines() {
        let json = serde_json::to_string(&Request::Detach { channel: 3 }).unwrap();
        assert_eq!(json, r#"{"op":"detach","channel":3}"#);
        let err: Response = serde_json::from_str(r#"{"result":"error","message":"no"}"#).unwrap();
        assert!(matches!(err, Response::Error { message } if message == "no"));
    }

    #[test]
    fn garbage_and_unknown_fields_are_errors() {
        let (a, b) = pair();
        rustix::net::send(&a, b"not json", SendFlags::empty()).unwrap();
        rustix::net::send(
            &a,
            br#"{"op":"detach","channel":1,"extra":1}"#,
            SendFlags::empty(),
        )
        .unwrap();
        let mut buf = Vec::new();
        assert!(matches!(
            recv::<Request>(b.as_fd(), &mut buf),
            Err(ProtocolError::Json(_))
        ));
        assert!(matches!(
            recv::<Request>(b.as_fd(), &mut buf),
            Err(ProtocolError::Json(_))
        ));
    }

    mod fuzz {
        use super::super::Request;
        use crate::control::fuzz_recv;
        use proptest::prelude::*;

        fn valid_requests() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                ("[a-z0-9]{0,12}", any::<bool>())
                    .prop_map(|(engine, notify)| Request::Attach { engine, notify }),
                any::<u64>().prop_map(|channel| Request::Detach { channel }),
                ("[a-z0-9]{0,12}", any::<u64>())
                    .prop_map(|(engine, channel)| Request::StageFd { engine, channel }),
                Just(Request::Status),
            ]
            .prop_map(|r| serde_json::to_vec(&r).unwrap())
        }

        proptest! {
            #[test]
            fn arbitrary_packets(data in proptest::collection::vec(any::<u8>(), 0..512)) {
                fuzz_recv(&data);
            }

            /// Valid requests with a few bytes flipped, truncated or extended: near misses
            /// explore the parser deeper than random bytes.
            #[test]
            fn mutated_requests(
                mut data in valid_requests(),
                flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
                cut in any::<usize>(),
            ) {
                fuzz_recv(&data);
                for (at, byte) in flips {
                    if !data.is_empty() {
                        let i = at % data.len();
                        data[i] = byte;
                    }
                }
                fuzz_recv(&data);
                data.truncate(cut % (data.len() + 1));
                fuzz_recv(&data);
            }
        }
    }

    #[test]
    fn too_many_fds_refused_on_send() {
        let (a, _b) = pair();
        let fds = [a.as_fd(); MAX_FDS + 1];
        assert!(matches!(
            send(a.as_fd(), &Request::Status, &fds),
            Err(ProtocolError::TooLarge)
        ));
    }
}
