//! The app library: a Pony session with a `snap-host` across processes, behind calls that
//! wait for their own completion.
//!
//! ```text
//!   app process                               snap-host
//!   ───────────                               ─────────
//!   PonyClient ── SnapClient (control socket) ──▶ attach: session fds back
//!      │            stage_fd(region memfd)    ──▶ PonyEngine::stage_region_fd → cookie
//!      └── AppSession (shared-memory rings + pool) ◀──▶ PonyEngine (commands/completions)
//! ```
//!
//! The control connection stays open for the session's life, for two reasons: the host
//! detaches the session (and reclaims its pool) when it closes, so an app that dies is
//! cleaned up; and it is how the app learns the host died: shared memory does not tell
//! when the other side is gone, but the kernel hangs up the socket. Every wait is sliced
//! and checks [`PonyClient::host_alive`] between slices, so a dead host is an error
//! ([`ClientError::HostGone`]) within [`HOST_CHECK`], never a hang.
//!
//! Calls that wait for one completion (open_flow, read, register_region…) keep the others
//! that arrive meanwhile, in order, for [`PonyClient::wait_completion`] and
//! [`PonyClient::recv`]. Cookies come from [`PonyClient::next_cookie`]; cookies with the
//! top bit set are the engine's (staged descriptors).

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use snap_ipc::control::SnapClient;
use snap_ipc::{Doorbell, PushError, SharedMem};

use crate::app::{
    AppSession, Command, Completion, Completions, Cookie, FlowId, OpErrorCode, ServiceId, SessionError,
    DEFAULT_COMPLETION_SPIN,
};
use crate::pool::BufIdx;

/// How often a blocked wait checks that the host is still there.
pub const HOST_CHECK: Duration = Duration::from_millis(50);

/// How long the calls that wait for their own completion wait at most (a flow to a dead
/// peer fails well before this; see `FlowConfig::max_retries`).
pub const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The control socket refused or failed (connect, attach, stage).
    #[error(transparent)]
    Control(#[from] snap_ipc::control::ClientError),
    /// The session's rings or pool failed.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The host closed the control connection: it exited, crashed or was killed.
    #[error("the Snap host is gone")]
    HostGone,
    /// The engine completed the operation with an error.
    #[error("operation failed: {code}")]
    Op {
        /// Why.
        code: OpErrorCode,
    },
    /// No answer within the call's timeout.
    #[error("no completion within {0:?}")]
    Timeout(Duration),
}

/// A received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The flow it came on.
    pub flow: FlowId,
    /// Its stream.
    pub stream: u32,
    /// The bytes (copied out of the pool, whose buffers are released).
    pub data: Vec<u8>,
}

/// A registered region, as peers address it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// Region id.
    pub region: u32,
    /// Its key.
    pub key: u64,
    /// Its length in bytes.
    pub len: u64,
}

/// How a [`PonyClient`] attaches and waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    /// Whether the engine rings a doorbell for completions (so waits can block).
    pub completions: Completions,
    /// How long a wait spins on the completion ring before it blocks
    /// ([`AppSession::set_completion_spin`]).
    pub completion_spin: Duration,
}

impl Default for ClientOptions {
    /// Blocking waits after [`DEFAULT_COMPLETION_SPIN`].
    fn default() -> Self {
        Self {
            completions: Completions::Block,
            completion_spin: DEFAULT_COMPLETION_SPIN,
        }
    }
}

/// An app's session with one Pony engine of a `snap-host`.
#[derive(Debug)]
pub struct PonyClient {
    control: SnapClient,
    engine: String,
    channel: u64,
    details: serde_json::Value,
    session: AppSession,
    /// A second handle on the session's completion doorbell (`Completions::Block`).
    bell: Option<Doorbell>,
    backlog: VecDeque<Completion>,
    next_cookie: Cookie,
}

impl PonyClient {
    /// Connects to the host's control socket at `socket_path` and attaches a session to
    /// the Pony engine `engine`, waiting with the default spin.
    pub fn connect(
        socket_path: impl AsRef<Path>,
        engine: &str,
        completions: Completions,
    ) -> Result<Self, ClientError> {
        let options = ClientOptions {
            completions,
            ..ClientOptions::default()
        };
        Self::connect_with(socket_path, engine, &options)
    }

    /// [`Self::connect`] with every option.
    pub fn connect_with(
        socket_path: impl AsRef<Path>,
        engine: &str,
        options: &ClientOptions,
    ) -> Result<Self, ClientError> {
        let completions = options.completions;
        let mut control = SnapClient::connect(socket_path)?;
        let bell = match completions {
            Completions::Poll => None,
            Completions::Block => Some(AppSession::completion_doorbell()?),
        };
        let fds = bell.as_ref().map(|b| {
            let (page, efd) = b.fds();
            [page, efd]
        });
        let notify = bell.is_some();
        let (channel, details, fds) =
            control.attach_raw(engine, notify, fds.as_ref().map_or(&[], |f| &f[..]))?;
        let mine = bell.clone();
        let mut session = AppSession::from_fds(fds, bell)?;
        session.set_completion_spin(options.completion_spin);
        Ok(Self {
            control,
            engine: engine.to_owned(),
            channel,
            details,
            session,
            bell: mine,
            backlog: VecDeque::new(),
            next_cookie: 1,
        })
    }

    /// The session's id at the engine (as in the host's status).
    pub fn channel(&self) -> u64 {
        self.channel
    }

    /// The engine's description of the session (pool shape, MTU, largest message…).
    pub fn details(&self) -> &serde_json::Value {
        &self.details
    }

    /// The session itself, for what this wrapper does not cover (batching with
    /// [`AppSession::post`], zero-copy chains).
    pub fn session(&mut self) -> &mut AppSession {
        &mut self.session
    }

    /// The completion doorbell ([`Completions::Block`] only), for a caller that waits for
    /// completions in its own loop instead of this client's blocking calls (arm it, check
    /// [`Self::poll_completion`], poll its eventfd, disarm and drain it). Not to be mixed
    /// with this client's blocking waits at the same time: both would arm and drain it.
    pub fn completion_doorbell(&self) -> Option<&Doorbell> {
        self.bell.as_ref()
    }

    /// The control connection (e.g. for the host's status).
    pub fn control(&mut self) -> &mut SnapClient {
        &mut self.control
    }

    /// A cookie not used before by this client.
    pub fn next_cookie(&mut self) -> Cookie {
        let c = self.next_cookie;
        self.next_cookie += 1;
        c
    }

    /// Whether the host still holds our control connection (does not block).
    pub fn host_alive(&self) -> bool {
        self.control.host_alive()
    }

    /// Queues `cmd` and wakes the engine; while the command ring is full, waits for the
    /// engine to make room (keeping completions that arrive meanwhile).
    pub fn submit(&mut self, cmd: &Command) -> Result<(), ClientError> {
        let deadline = Instant::now() + OP_TIMEOUT;
        loop {
            match self.session.submit(cmd) {
                Err(SessionError::Push(PushError::Full)) => self.make_room(deadline)?,
                other => return Ok(other?),
            }
        }
    }

    /// The ring is full: drain completions into the backlog (the engine may be waiting
    /// for room on that ring) and give it a moment.
    fn make_room(&mut self, deadline: Instant) -> Result<(), ClientError> {
        if !self.host_alive() {
            return Err(ClientError::HostGone);
        }
        if Instant::now() >= deadline {
            return Err(ClientError::Timeout(OP_TIMEOUT));
        }
        match self.session.poll_completion()? {
            Some(c) => self.backlog.push_back(c),
            None => std::thread::sleep(Duration::from_micros(50)),
        }
        Ok(())
    }

    /// The next completion, if one is waiting (never blocks).
    pub fn poll_completion(&mut self) -> Result<Option<Completion>, ClientError> {
        if let Some(c) = self.backlog.pop_front() {
            return Ok(Some(c));
        }
        Ok(self.session.poll_completion()?)
    }

    /// The next completion, waiting up to `timeout` (`Ok(None)` then), or
    /// [`ClientError::HostGone`] as soon as the host is found dead.
    pub fn wait_completion(&mut self, timeout: Duration) -> Result<Option<Completion>, ClientError> {
        if let Some(c) = self.backlog.pop_front() {
            return Ok(Some(c));
        }
        self.wait_session(Instant::now() + timeout)
    }

    fn wait_session(&mut self, deadline: Instant) -> Result<Option<Completion>, ClientError> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Some(c) = self.session.wait_completion(left.min(HOST_CHECK))? {
                return Ok(Some(c));
            }
            // Checked after a completion-less slice only: a completion already in the ring
            // is still delivered after the host died.
            if !self.host_alive() {
                return Err(ClientError::HostGone);
            }
            if left.is_zero() {
                return Ok(None);
            }
        }
    }

    /// Waits for the first completion `want` picks (keeping the others, in order).
    pub fn wait_for<T>(
        &mut self,
        timeout: Duration,
        mut want: impl FnMut(&Completion) -> Option<T>,
    ) -> Result<T, ClientError> {
        if let Some(i) = self.backlog.iter().position(|c| want(c).is_some()) {
            let c = self.backlog.remove(i).expect("position is in range");
            return Ok(want(&c).expect("picked above"));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let Some(c) = self.wait_session(deadline)? else {
                return Err(ClientError::Timeout(timeout));
            };
            match want(&c) {
                Some(t) => return Ok(t),
                None => self.backlog.push_back(c),
            }
        }
    }

    /// Waits for the completion of the command with `cookie`: the expected one, or an
    /// `Error` completion for it.
    fn wait_cookie<T>(
        &mut self,
        cookie: Cookie,
        mut want: impl FnMut(&Completion) -> Option<T>,
    ) -> Result<T, ClientError> {
        let r = self.wait_for(OP_TIMEOUT, |c| match c {
            Completion::Error { cookie: k, code, .. } if *k == cookie => Some(Err(*code)),
            c => want(c).map(Ok),
        })?;
        r.map_err(|code| ClientError::Op { code })
    }

    /// Opens a flow to `service` at `peer` (e.g. `ip:port` for a UDP NIC). Nobody listening
    /// on it there is [`OpErrorCode::NoListener`]; a peer that does not answer,
    /// [`OpErrorCode::Unreachable`].
    pub fn open_flow(&mut self, peer: &str, service: ServiceId) -> Result<FlowId, ClientError> {
        let cookie = self.next_cookie();
        self.submit(&Command::OpenFlow {
            cookie,
            peer: peer.to_owned(),
            service,
        })?;
        self.wait_cookie(cookie, |c| match c {
            Completion::FlowOpened { cookie: k, result } if *k == cookie => Some(*result),
            _ => None,
        })?
        .map_err(|code| ClientError::Op { code })
    }

    /// Closes a flow (its `FlowClosed` arrives later among the completions).
    pub fn close_flow(&mut self, flow: FlowId) -> Result<(), ClientError> {
        self.submit(&Command::CloseFlow { flow })
    }

    /// Asks for the flows peers open to `service` of this engine; returns the Listen's
    /// cookie, which their `FlowAccepted` completions carry. A service another listener
    /// holds is [`OpErrorCode::ServiceTaken`]. The service is ours until this client
    /// detaches (is dropped).
    pub fn listen(&mut self, service: ServiceId) -> Result<Cookie, ClientError> {
        let cookie = self.next_cookie();
        self.submit(&Command::Listen { cookie, service })?;
        self.wait_cookie(cookie, |c| {
            matches!(c, Completion::Listening { cookie: k } if *k == cookie).then_some(())
        })?;
        Ok(cookie)
    }

    /// Gives `service` up: no more flows to it are accepted for this client (those already
    /// accepted stay). Not listening on it is [`OpErrorCode::NoListener`].
    pub fn unlisten(&mut self, service: ServiceId) -> Result<(), ClientError> {
        let cookie = self.next_cookie();
        self.submit(&Command::Unlisten { cookie, service })?;
        self.wait_cookie(cookie, |c| {
            matches!(c, Completion::Unlistened { cookie: k } if *k == cookie).then_some(())
        })
    }

    /// Waits up to `timeout` for a peer's flow to be accepted (on any of this client's
    /// listens).
    pub fn accept(&mut self, timeout: Duration) -> Result<FlowId, ClientError> {
        self.wait_for(timeout, |c| match c {
            Completion::FlowAccepted { flow, .. } => Some(*flow),
            _ => None,
        })
    }

    /// Sends `data` on `stream` of `flow` (copied once into the pool); returns the cookie
    /// its `Sent` (or `Error`) completion will carry.
    ///
    /// Returns once the command is queued, not once it is sent: the caller must read its
    /// completions ([`Self::wait_completion`], [`Self::poll_completion`]). An app that
    /// leaves a completion ring's worth unread is under the engine's backpressure: the
    /// engine takes none of its commands (these sends still return `Ok` while they fit the
    /// command ring) until it reads.
    pub fn send(&mut self, flow: FlowId, stream: u32, data: &[u8]) -> Result<Cookie, ClientError> {
        let cookie = self.next_cookie();
        let deadline = Instant::now() + OP_TIMEOUT;
        loop {
            match self.session.send(flow, stream, data, cookie) {
                Ok(_) => return Ok(cookie),
                // Ring full, or the pool is out of buffers until the peer acknowledges.
                Err(
                    SessionError::Push(PushError::Full)
                    | SessionError::Pool(crate::pool::PoolError::Exhausted { .. }),
                ) => self.make_room(deadline)?,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Waits up to `timeout` for the next message on any flow.
    pub fn recv(&mut self, timeout: Duration) -> Result<Message, ClientError> {
        let (flow, stream, head, len) = self.wait_for(timeout, |c| match c {
            Completion::Received {
                flow,
                stream,
                head,
                len,
            } => Some((*flow, *stream, *head, *len)),
            _ => None,
        })?;
        let mut data = Vec::with_capacity(len as usize);
        self.session.take_received(head, len, &mut data)?;
        Ok(Message { flow, stream, data })
    }

    /// Reads `len` bytes at `offset` of the peer's region.
    pub fn read(
        &mut self,
        flow: FlowId,
        region: Region,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, ClientError> {
        self.read_into_chain(len as usize, |local, cookie| Command::Read {
            flow,
            region: region.region,
            key: region.key,
            offset,
            len,
            local,
            cookie,
        })
    }

    /// Reads entry `index` of the peer's `table` region, then the bytes it points at in
    /// `region` (at most `max_len`).
    pub fn indirect_read(
        &mut self,
        flow: FlowId,
        table: Region,
        index: u64,
        region: Region,
        max_len: usize,
    ) -> Result<Vec<u8>, ClientError> {
        self.read_into_chain(max_len, |local, cookie| Command::IndirectRead {
            flow,
            table: table.region,
            table_key: table.key,
            index,
            region: region.region,
            key: region.key,
            local,
            cookie,
        })
    }

    fn read_into_chain(
        &mut self,
        capacity: usize,
        cmd: impl FnOnce(u32, Cookie) -> Command,
    ) -> Result<Vec<u8>, ClientError> {
        let cookie = self.next_cookie();
        let chain = self
            .session
            .pool()
            .alloc_chain(capacity)
            .map_err(SessionError::from)?;
        if let Err(e) = self.submit(&cmd(chain.head.0, cookie)) {
            let _ = self.session.pool().release_chain(chain.head);
            return Err(e);
        }
        let result = self.wait_cookie(cookie, |c| match c {
            Completion::ReadDone { cookie: k, result } if *k == cookie => Some(*result),
            _ => None,
        });
        // The chain came back with the completion (success or not): ours to release.
        match result {
            Ok(Ok(n)) => {
                let mut out = Vec::with_capacity(n as usize);
                self.session.take_received(chain.head.0, n, &mut out)?;
                Ok(out)
            }
            Ok(Err(code)) | Err(ClientError::Op { code }) => {
                let _ = self.session.pool().release_chain(BufIdx(chain.head.0));
                Err(ClientError::Op { code })
            }
            // No completion: the engine may still hold the chain, so it is not released.
            Err(e) => Err(e),
        }
    }

    /// Writes `data` at `offset` of the peer's region.
    pub fn write(
        &mut self,
        flow: FlowId,
        region: Region,
        offset: u64,
        data: &[u8],
    ) -> Result<(), ClientError> {
        let cookie = self.next_cookie();
        let chain = self
            .session
            .pool()
            .write_chain(data)
            .map_err(SessionError::from)?;
        let cmd = Command::Write {
            flow,
            region: region.region,
            key: region.key,
            offset,
            head: chain.head.0,
            len: chain.len,
            cookie,
        };
        if let Err(e) = self.submit(&cmd) {
            let _ = self.session.pool().release_chain(chain.head);
            return Err(e);
        }
        self.wait_cookie(cookie, |c| match c {
            Completion::WriteDone { cookie: k, result } if *k == cookie => Some(*result),
            _ => None,
        })?
        .map_err(|code| ClientError::Op { code })
    }

    /// Registers `mem` as a region peers may read and write: its memfd goes to the engine
    /// over the control socket, then the session's `RegisterRegion` claims it (so the
    /// registration is ordered with this session's other commands).
    pub fn register_region(&mut self, mem: &SharedMem) -> Result<Region, ClientError> {
        let cookie = self.control.stage_fd(&self.engine, self.channel, mem.as_fd())?;
        let len = mem.len() as u64;
        self.submit(&Command::RegisterRegion { cookie, len })?;
        self.wait_cookie(cookie, |c| match c {
            Completion::RegionRegistered {
                cookie: k,
                region,
                key,
                len,
            } if *k == cookie => Some(Region {
                region: *region,
                key: *key,
                len: *len,
            }),
            _ => None,
        })
    }

    /// Withdraws a region registered by this session.
    pub fn unregister_region(&mut self, region: u32) -> Result<(), ClientError> {
        let cookie = self.next_cookie();
        self.submit(&Command::UnregisterRegion { cookie, region })?;
        self.wait_cookie(cookie, |c| {
            matches!(c, Completion::RegionUnregistered { cookie: k, .. } if *k == cookie).then_some(())
        })
    }
}
