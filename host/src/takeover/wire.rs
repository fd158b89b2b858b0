//! The messages between the old and the new host process on their socketpair
//! (`SOCK_SEQPACKET`, so every message arrives whole or not at all), and their framing: a
//! message is a little-endian `u32` header length, the header as JSON ([`Msg`]), then raw
//! payload bytes (a piece of an engine's state), with descriptors attached as
//! `SCM_RIGHTS`. State longer than [`MAX_CHUNK`] goes as several [`Msg::Chunk`]s after its
//! [`Msg::State`]; more descriptors than [`MAX_FDS`] go as several [`Msg::Fds`].

use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use serde::{Deserialize, Serialize};
use snap_ipc::control::ChannelInfo;
use snap_ipc::fd_passing;

/// State bytes per message: well under the socket's default send buffer (about 208 KiB),
/// so a message never waits for the peer to read the previous one whole.
pub const MAX_CHUNK: usize = 60 * 1024;
/// Descriptors per message: under the kernel's per-message limit (`SCM_MAX_FD`, 253).
pub const MAX_FDS: usize = 200;
/// A header is a few hundred bytes; the configuration (in [`Msg::Hello`]) is the largest.
const MAX_HEADER: usize = 256 * 1024;

/// Which export of an engine's state a [`Msg::State`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The whole state, the engine still serving.
    Full,
    /// Changes since the previous export, the engine still serving.
    Delta,
    /// The final delta, written by the freeze.
    Final,
}

/// One control connection that moves, in the order of its descriptor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Conn {
    /// The channels it attached (their engines moved with them).
    pub channels: Vec<ChannelInfo>,
}

/// A message between the two hosts. "Old" is the running host, "new" the one it started.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case")]
pub enum Msg {
    /// Old → new, first: the running configuration (TOML) and the engines to move, in order.
    Hello {
        /// The old host's pid.
        old_pid: u32,
        /// The running configuration, operator changes included.
        config: String,
        /// Engines in the order they move (group by group).
        engines: Vec<String>,
    },
    /// New → old: the configuration is read; the new host's pid.
    Ready {
        /// The new host's pid.
        new_pid: u32,
    },
    /// Old → new: an export of `engine`'s state, `len` bytes in the following chunks.
    State {
        /// The engine.
        engine: String,
        /// Which export.
        phase: Phase,
        /// Total length of the state.
        len: u64,
        /// `CLOCK_MONOTONIC` (ns) at the freeze, for [`Phase::Final`]: where the blackout
        /// starts.
        frozen_ns: Option<u64>,
    },
    /// Old → new: a piece of the current state (the payload).
    Chunk,
    /// New → old: whether the full snapshot or the final delta of `engine` can be read.
    Verdict {
        /// The engine.
        engine: String,
        /// `None`: readable; else why not.
        refused: Option<String>,
    },
    /// Old → new: descriptors (attached), `last` on the final message of a set.
    Fds {
        /// Whose they are (an engine's name, or `control`).
        owner: String,
        /// Whether this is the set's last message.
        last: bool,
        /// On the set's first message: how the set's descriptors group into objects (a
        /// channel is several, a socket one), in order.
        groups: Vec<usize>,
    },
    /// New → old: `engine` was rebuilt from its state and descriptors, and its thread has
    /// taken it at `started_ns` (`CLOCK_MONOTONIC`); or why it could not be.
    Started {
        /// The engine.
        engine: String,
        /// When its thread took it.
        started_ns: u64,
    },
    /// New → old: rebuilding `engine` failed after its descriptors moved.
    Failed {
        /// The engine.
        engine: String,
        /// Why.
        reason: String,
    },
    /// Old → new: the control socket (first descriptor of the following [`Msg::Fds`] set)
    /// and these connections (the rest, in order).
    Control {
        /// The connections.
        conns: Vec<Conn>,
    },
    /// New → old: the control server runs on the moved socket and connections.
    Serving,
}

/// Why a message could not be sent or received.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The socket call failed (the peer died: `EPIPE`, `ECONNRESET`; a timeout: `EAGAIN`).
    #[error("{0}")]
    Io(#[from] rustix::io::Errno),
    /// The peer closed the socketpair.
    #[error("the other host process closed the connection")]
    Closed,
    /// A message that is not one.
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// Sends `msg` with `payload` and `fds`.
pub fn send(
    socket: BorrowedFd<'_>,
    msg: &Msg,
    payload: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Result<(), WireError> {
    let header = serde_json::to_vec(msg).map_err(|e| WireError::Malformed(e.to_string()))?;
    if header.len() > MAX_HEADER || payload.len() > MAX_CHUNK || fds.len() > MAX_FDS {
        return Err(WireError::Malformed("message too large".into()));
    }
    let len = (header.len() as u32).to_le_bytes();
    let iov = [IoSlice::new(&len), IoSlice::new(&header), IoSlice::new(payload)];
    fd_passing::send(socket, &iov, fds, MAX_FDS)?;
    Ok(())
}

/// A received message: the header, the payload and the descriptors (close-on-exec).
pub struct Received {
    /// The header.
    pub msg: Msg,
    /// The payload.
    pub payload: Vec<u8>,
    /// The descriptors.
    pub fds: Vec<OwnedFd>,
}

/// Receives one message; [`WireError::Closed`] when the peer is gone.
pub fn recv(socket: BorrowedFd<'_>) -> Result<Received, WireError> {
    let mut buf = vec![0u8; 4 + MAX_HEADER + MAX_CHUNK + 1];
    let got = fd_passing::recv(socket, &mut buf, MAX_FDS)?;
    if got.is_end() {
        return Err(WireError::Closed);
    }
    if got.truncated || got.bytes < 4 {
        return Err(WireError::Malformed("truncated".into()));
    }
    let hlen = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if hlen > got.bytes - 4 {
        return Err(WireError::Malformed("header longer than the message".into()));
    }
    let msg = serde_json::from_slice(&buf[4..4 + hlen]).map_err(|e| WireError::Malformed(e.to_string()))?;
    let payload = buf[4 + hlen..got.bytes].to_vec();
    Ok(Received {
        msg,
        payload,
        fds: got.fds,
    })
}

/// Sends a state export: its [`Msg::State`] header, then its bytes in chunks.
pub fn send_state(
    socket: BorrowedFd<'_>,
    engine: &str,
    phase: Phase,
    frozen_ns: Option<u64>,
    bytes: &[u8],
) -> Result<(), WireError> {
    let head = Msg::State {
        engine: engine.to_owned(),
        phase,
        len: bytes.len() as u64,
        frozen_ns,
    };
    send(socket, &head, &[], &[])?;
    for chunk in bytes.chunks(MAX_CHUNK) {
        send(socket, &Msg::Chunk, chunk, &[])?;
    }
    Ok(())
}

/// Receives the `len` bytes of a state whose header was just received. `limit` bounds
/// `len` (a peer's length is not trusted with an allocation).
pub fn recv_state(socket: BorrowedFd<'_>, len: u64, limit: u64) -> Result<Vec<u8>, WireError> {
    if len > limit {
        return Err(WireError::Malformed(format!(
            "state of {len} bytes is over the {limit}-byte limit"
        )));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    while (bytes.len() as u64) < len {
        let r = recv(socket)?;
        if !matches!(r.msg, Msg::Chunk) || r.payload.is_empty() {
            return Err(WireError::Malformed(format!(
                "expected a state chunk, got {:?}",
                r.msg
            )));
        }
        bytes.extend_from_slice(&r.payload);
    }
    if bytes.len() as u64 != len {
        return Err(WireError::Malformed("state longer than announced".into()));
    }
    Ok(bytes)
}

/// Sends a set of descriptors, grouped by object, in as many [`Msg::Fds`] as needed (at
/// least one, so that an empty set is announced too).
pub fn send_fds(socket: BorrowedFd<'_>, owner: &str, groups: &[Vec<OwnedFd>]) -> Result<(), WireError> {
    let borrowed: Vec<BorrowedFd<'_>> = groups.iter().flatten().map(|f| f.as_fd()).collect();
    let mut chunks: Vec<&[BorrowedFd<'_>]> = borrowed.chunks(MAX_FDS).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let n = chunks.len();
    for (i, c) in chunks.into_iter().enumerate() {
        let msg = Msg::Fds {
            owner: owner.to_owned(),
            last: i + 1 == n,
            groups: if i == 0 {
                groups.iter().map(Vec::len).collect()
            } else {
                Vec::new()
            },
        };
        send(socket, &msg, &[], c)?;
    }
    Ok(())
}

/// Receives a set of descriptors sent by [`send_fds`] for `owner`, at most `limit`, in
/// their groups.
pub fn recv_fds(socket: BorrowedFd<'_>, owner: &str, limit: usize) -> Result<Vec<Vec<OwnedFd>>, WireError> {
    let mut all = Vec::new();
    let mut sizes: Option<Vec<usize>> = None;
    loop {
        let r = recv(socket)?;
        match r.msg {
            Msg::Fds {
                owner: o,
                last,
                groups,
            } if o == owner => {
                sizes.get_or_insert(groups);
                all.extend(r.fds);
                if all.len() > limit {
                    return Err(WireError::Malformed(format!(
                        "more than {limit} descriptors for {owner}"
                    )));
                }
                if last {
                    break;
                }
            }
            other => {
                return Err(WireError::Malformed(format!(
                    "expected descriptors of {owner}, got {other:?}"
                )))
            }
        }
    }
    let sizes = sizes.unwrap_or_default();
    if sizes.iter().sum::<usize>() != all.len() {
        return Err(WireError::Malformed(format!(
            "{} descriptors received for {owner}, the groups say {}",
            all.len(),
            sizes.iter().sum::<usize>()
        )));
    }
    let mut fds = all.into_iter();
    Ok(sizes
        .into_iter()
        .map(|n| fds.by_ref().take(n).collect())
        .collect())
}

/// `CLOCK_MONOTONIC` in nanoseconds: the two processes' common clock.
pub fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64).saturating_mul(1_000_000_000) + t.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};

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
    fn state_in_chunks_and_fds_in_sets() {
        let (a, b) = pair();
        let state: Vec<u8> = (0..3 * MAX_CHUNK + 17).map(|i| i as u8).collect();
        let t = std::thread::spawn(move || {
            send_state(a.as_fd(), "e", Phase::Full, None, &state).unwrap();
            let fd = || rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
            let groups: Vec<Vec<OwnedFd>> =
                vec![(0..MAX_FDS + 3).map(|_| fd()).collect(), vec![fd()], vec![fd()]];
            send_fds(a.as_fd(), "e", &groups).unwrap();
            send_fds(a.as_fd(), "none", &[]).unwrap();
            a
        });
        let r = recv(b.as_fd()).unwrap();
        let Msg::State { len, phase, .. } = r.msg else {
            panic!("{:?}", r.msg)
        };
        assert_eq!(phase, Phase::Full);
        let got = recv_state(b.as_fd(), len, 1 << 20).unwrap();
        assert_eq!(got.len(), 3 * MAX_CHUNK + 17);
        assert!(got.iter().enumerate().all(|(i, &x)| x == i as u8));
        let groups = recv_fds(b.as_fd(), "e", 1000).unwrap();
        let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![MAX_FDS + 3, 1, 1]);
        assert!(recv_fds(b.as_fd(), "none", 0).unwrap().is_empty());
        drop(t.join().unwrap());
        assert!(matches!(recv(b.as_fd()), Err(WireError::Closed)));
    }

    #[test]
    fn a_state_over_the_limit_is_refused_before_reading_it() {
        let (_a, b) = pair();
        assert!(matches!(
            recv_state(b.as_fd(), 1 << 40, 1 << 20),
            Err(WireError::Malformed(_))
        ));
    }
}
