//! The app's side of the control socket: connect, attach channels, read status.
//!
//! A channel lives as long as the connection that attached it: keep the [`SnapClient`]
//! alive while using its channels. Dropping the client (or the process exiting) makes the
//! host detach them all. Each channel end keeps a duplicate of the connection to notice a
//! host that is gone ([`ChannelError::HostGone`](crate::channel::ChannelError::HostGone)).

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use rustix::net::{connect, sockopt, SocketAddrUnix};

use super::protocol::{self, HostStatus, ProtocolError, Request, Response, UpgradeReport};
use crate::channel::{ChannelAppEnd, ChannelError};
use crate::doorbell::{Doorbell, DoorbellError};

/// How long a request waits for the host's answer before giving up.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`SnapClient::upgrade`] waits: every engine's brownout and blackout, bounded by
/// the host's own limits on rounds and on each step of the transfer.
pub const UPGRADE_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a control request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not connect to the socket.
    #[error("cannot connect to {path}: {source}")]
    Connect {
        /// The socket path.
        path: String,
        /// Why.
        source: rustix::io::Errno,
    },
    /// Sending or receiving failed.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The host closed the connection (it stopped, or refused us after the first message).
    #[error("the Snap host closed the connection")]
    Closed,
    /// The host answered with an error.
    #[error("the Snap host refused: {0}")]
    Refused(String),
    /// The host answered something that does not fit the request.
    #[error("unexpected answer from the Snap host: {0}")]
    Unexpected(String),
    /// The channel descriptors were not valid.
    #[error("channel from the Snap host: {0}")]
    Channel(#[from] ChannelError),
    /// The completion doorbell could not be made.
    #[error("completion doorbell: {0}")]
    Doorbell(#[from] DoorbellError),
}

/// A connection to a Snap host's control socket.
#[derive(Debug)]
pub struct SnapClient {
    socket: OwnedFd,
    buf: Vec<u8>,
}

impl SnapClient {
    /// Connects to the host listening at `path`.
    pub fn connect(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        let path = path.as_ref();
        let err = |source| ClientError::Connect {
            path: path.display().to_string(),
            source,
        };
        let addr = SocketAddrUnix::new(path).map_err(err)?;
        let socket = protocol::socket().map_err(err)?;
        connect(&socket, &addr).map_err(err)?;
        sockopt::set_socket_timeout(&socket, sockopt::Timeout::Recv, Some(REPLY_TIMEOUT)).map_err(err)?;
        Ok(Self {
            socket,
            buf: Vec::new(),
        })
    }

    fn call(
        &mut self,
        req: &Request,
        fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> Result<(Response, Vec<OwnedFd>), ClientError> {
        let got = match protocol::send(self.socket.as_fd(), req, fds) {
            Ok(()) => protocol::recv::<Response>(self.socket.as_fd(), &mut self.buf),
            Err(e) => Err(e),
        };
        let got = match got {
            Ok(got) => got,
            // The host may have closed the connection with an error waiting for us (it
            // refused the connection, or closed it for idling): say that, not "broken pipe".
            Err(ProtocolError::Io(rustix::io::Errno::PIPE | rustix::io::Errno::CONNRESET)) => {
                return Err(self.closing_error())
            }
            Err(e) => return Err(e.into()),
        };
        let got = got.ok_or(ClientError::Closed)?;
        match got.msg {
            Response::Error { message } => Err(ClientError::Refused(message)),
            msg => Ok((msg, got.fds)),
        }
    }

    /// What the host said before it closed the connection, if it said anything. The kernel
    /// reports a reset first when the host closed with our request unread; the message it
    /// sent before is still queued behind that.
    fn closing_error(&mut self) -> ClientError {
        for _ in 0..2 {
            match protocol::recv::<Response>(self.socket.as_fd(), &mut self.buf) {
                Ok(Some(got)) => {
                    return match got.msg {
                        Response::Error { message } => ClientError::Refused(message),
                        other => ClientError::Unexpected(format!("{other:?}")),
                    }
                }
                Ok(None) => break,
                Err(ProtocolError::Io(rustix::io::Errno::CONNRESET)) => continue,
                Err(e) => return e.into(),
            }
        }
        ClientError::Closed
    }

    /// Attaches a new channel to the echo-style engine `engine`. With `notify`, the engine
    /// rings the returned end's completion doorbell, so that
    /// [`ChannelAppEnd::recv_timeout`] blocks instead of spinning.
    pub fn attach(&mut self, engine: &str, notify: bool) -> Result<ChannelAppEnd, ClientError> {
        self.attach_channel(engine, notify).map(|(_, end)| end)
    }

    /// [`Self::attach`], also returning the channel id for [`Self::detach`].
    pub fn attach_channel(
        &mut self,
        engine: &str,
        notify: bool,
    ) -> Result<(u64, ChannelAppEnd), ClientError> {
        let completion = if notify { Some(Doorbell::new()?) } else { None };
        let req = Request::Attach {
            engine: engine.to_owned(),
            notify,
        };
        let fds = completion.as_ref().map(|bell| {
            let (page, efd) = bell.fds();
            [page, efd]
        });
        let (resp, fds) = self.call(&req, fds.as_ref().map_or(&[], |f| &f[..]))?;
        match resp {
            Response::Attached { channel, .. } => {
                let host = self.socket.try_clone().map_err(ChannelError::Dup)?;
                Ok((channel, ChannelAppEnd::from_fds(fds, completion)?.with_host(host)))
            }
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Attaches to an engine with its own descriptor layout (e.g. Pony's sessions): sends
    /// `fds` with the request and returns the channel id, the engine's `details` and the
    /// descriptors of its answer, for the caller to validate.
    pub fn attach_raw(
        &mut self,
        engine: &str,
        notify: bool,
        fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> Result<(u64, serde_json::Value, Vec<OwnedFd>), ClientError> {
        let req = Request::Attach {
            engine: engine.to_owned(),
            notify,
        };
        match self.call(&req, fds)? {
            (Response::Attached { channel, details }, fds) => Ok((channel, details, fds)),
            (other, _) => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Detaches a channel attached on this connection (dropping the connection detaches
    /// them all).
    pub fn detach(&mut self, channel: u64) -> Result<(), ClientError> {
        match self.call(&Request::Detach { channel }, &[])?.0 {
            Response::Detached { .. } => Ok(()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Sends `fd` to `engine` for `channel` (attached on this connection); returns the
    /// engine's cookie for it (see `snap_runtime::AppFacing::stage_fd`).
    pub fn stage_fd(
        &mut self,
        engine: &str,
        channel: u64,
        fd: std::os::fd::BorrowedFd<'_>,
    ) -> Result<u64, ClientError> {
        let req = Request::StageFd {
            engine: engine.to_owned(),
            channel,
        };
        match self.call(&req, &[fd])?.0 {
            Response::Staged { cookie } => Ok(cookie),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Whether the host is still there: false once it closed the connection (it exited,
    /// crashed or was killed; the kernel hangs up our end in every case). Does not block.
    pub fn host_alive(&self) -> bool {
        let mut fds = [rustix::event::PollFd::new(
            &self.socket,
            rustix::event::PollFlags::IN,
        )];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        match rustix::event::poll(&mut fds, Some(&zero)) {
            // A closed seqpacket peer shows as HUP (with IN for the EOF).
            Ok(_) => !fds[0]
                .revents()
                .intersects(rustix::event::PollFlags::HUP | rustix::event::PollFlags::ERR),
            Err(rustix::io::Errno::INTR) => true,
            Err(_) => false,
        }
    }

    /// Operator: adds the engine described by `table` (the body of a `[[group.engine]]`
    /// table of the host's configuration) to `group`. Returns the host's summary.
    pub fn engine_add(&mut self, group: &str, table: &str) -> Result<String, ClientError> {
        self.change(Request::EngineAdd {
            group: group.to_owned(),
            table: table.to_owned(),
        })
    }

    /// Operator: removes engine `engine`.
    pub fn engine_remove(&mut self, engine: &str) -> Result<String, ClientError> {
        self.change(Request::EngineRemove {
            engine: engine.to_owned(),
        })
    }

    /// Operator: adds the group described by `table` (the body of a `[[group]]` table).
    pub fn group_add(&mut self, table: &str) -> Result<String, ClientError> {
        self.change(Request::GroupAdd {
            table: table.to_owned(),
        })
    }

    /// Operator: removes group `group` with its engines.
    pub fn group_remove(&mut self, group: &str) -> Result<String, ClientError> {
        self.change(Request::GroupRemove {
            group: group.to_owned(),
        })
    }

    fn change(&mut self, request: Request) -> Result<String, ClientError> {
        match self.call(&request, &[])? {
            (Response::Changed { summary }, _) => Ok(summary),
            (other, _) => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Operator: replaces the host process by a new one (`binary`, or the host's own) that
    /// takes over its engines and apps. Waits up to [`UPGRADE_TIMEOUT`] for the report.
    pub fn upgrade(&mut self, binary: Option<&str>) -> Result<UpgradeReport, ClientError> {
        let timeout = Some(UPGRADE_TIMEOUT);
        sockopt::set_socket_timeout(&self.socket, sockopt::Timeout::Recv, timeout)
            .map_err(|e| ClientError::Protocol(ProtocolError::Io(e)))?;
        let request = Request::Upgrade {
            binary: binary.map(str::to_owned),
        };
        let got = self.call(&request, &[]);
        let timeout = Some(REPLY_TIMEOUT);
        let _ = sockopt::set_socket_timeout(&self.socket, sockopt::Timeout::Recv, timeout);
        match got? {
            (Response::Upgraded { report }, _) => Ok(report),
            (other, _) => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The host's status.
    pub fn status(&mut self) -> Result<HostStatus, ClientError> {
        match self.call(&Request::Status, &[])?.0 {
            Response::Status { status } => Ok(*status),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }
}

impl Drop for SnapClient {
    /// Hangs up even though the channels keep a duplicate of the socket (to notice a dead
    /// host): the host then detaches them, as it always did when the client went away.
    fn drop(&mut self) {
        let _ = rustix::net::shutdown(&self.socket, rustix::net::Shutdown::Both);
    }
}
