//! A sockets-like layer over [`PonyClient`]: blocking, message-oriented streams for apps
//! that want `bind`/`accept`/`connect`/`send`/`recv` rather than commands and completions.
//! The command/completion API stays the core; this is a convenience on top of it.
//!
//! ```text
//!   PonyListener::bind(socket, engine, service) ── Listen ──▶ Pony engine
//!        │ accept() ◀── FlowAccepted                            │
//!        ▼                                                      │
//!   PonyStream ─ send / send_on(stream) ── Send ──────────────▶ │ ── flow ──▶ peer
//!              ─ recv ◀── Received (message left in the pool) ◀ │
//!   PonyStream::connect(socket, engine, peer, service) ── OpenFlow (own session)
//! ```
//!
//! Sessions. A stream from [`PonyStream::connect`] owns a session of its own (one
//! [`PonyClient`]: rings, pool, control connection), which detaches when the stream is
//! dropped. Streams a [`PonyListener`] accepts share the listener's session, because the
//! engine gives an accepted flow to the session that listened and cannot move it to another
//! one; that session lives until the listener and all its streams are gone. Sharing has
//! two consequences, both documented on the types:
//! - received messages stay in the session's pool until their stream reads them (copying
//!   them out eagerly would free the pool and let a peer send without limit to a stream
//!   nobody reads), so one stream left unread long enough stalls delivery to the others;
//! - one thread at a time waits on the session's completions (the *leader*, whoever needs
//!   a completion first) and hands each to its stream; the others wait on a condvar. The
//!   leader waits on the completion doorbell without holding the client, so sending never
//!   waits for it.
//!
//! Every type is `Send + Sync` and every call takes `&self`: one thread may read a stream
//! while another writes it. A closed flow reads as the end of the stream (`Ok(None)`) once
//! its messages are read, and refuses sends with [`SocketError::Closed`], which carries the
//! engine's [`CloseReason`]; a flow that ended without a graceful close (the peer timed
//! out, or reset it) reads as that error rather than as the end of the stream. Dropping a stream
//! waits (up to [`LINGER`]) until the peer has what was sent, then closes its flow;
//! [`PonyStream::close`] does the same and reports errors. A dead host is
//! [`ClientError::HostGone`] within [`HOST_CHECK`], never a hang.
//!
//! Files: this one the API, `shared.rs` the session state and the leader's loop.

mod shared;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use snap_ipc::PushError;

use crate::app::{CloseReason, Command, Completions, FlowId, OpErrorCode, Received, ServiceId, SessionError};
use crate::client::{ClientError, PonyClient, HOST_CHECK};
use crate::pool::PoolError;
use shared::{Core, Inbox, Pending};

/// Why a socket call failed.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// The flow is closed (by either side, or it failed): nothing more can be sent on it.
    /// `reason` says why, once the engine said so (`None`: this stream is closed or its
    /// close is still under way).
    #[error("flow closed{}", reason.map_or(String::new(), |r| format!(": {r}")))]
    Closed {
        /// Why, as the engine reported it.
        reason: Option<CloseReason>,
    },
    /// Nothing arrived (or was acknowledged) within the timeout.
    #[error("timed out")]
    TimedOut,
    /// The message is larger than one message may be.
    #[error("message of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The message's length.
        len: usize,
        /// The engine's (or the pool's, if smaller) largest message.
        max: usize,
    },
    /// The engine refused or failed the operation: [`OpErrorCode::NoListener`] for a
    /// connect to a service nobody listens on, [`OpErrorCode::Unreachable`] for a peer
    /// that does not answer (or died with messages in flight), …
    #[error("operation failed: {0}")]
    Op(OpErrorCode),
    /// The host is gone, or the control socket or the session failed.
    #[error(transparent)]
    Client(ClientError),
}

impl From<ClientError> for SocketError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Op { code } => SocketError::Op(code),
            ClientError::Timeout(_) => SocketError::TimedOut,
            e => SocketError::Client(e),
        }
    }
}

impl From<SessionError> for SocketError {
    fn from(e: SessionError) -> Self {
        SocketError::Client(ClientError::Session(e))
    }
}

impl From<PoolError> for SocketError {
    fn from(e: PoolError) -> Self {
        SessionError::from(e).into()
    }
}

/// Accepts the flows peers open to one service of a Pony engine.
///
/// Accepted streams share this listener's session (see the module doc): the session, and
/// with it the flows of streams still alive, outlives the listener until they are dropped
/// too. Dropping the listener gives the service up, and waits (up to [`UNLISTEN_WAIT`])
/// for the engine to confirm, so that the service can be bound again at once; flows
/// accepted but not yet taken by [`Self::accept`] are closed.
#[derive(Debug)]
pub struct PonyListener {
    core: Arc<Core>,
    service: ServiceId,
}

impl PonyListener {
    /// Attaches to Pony engine `engine` of the host whose control socket is `socket` and
    /// listens on `service` there. A service another listener holds is
    /// [`SocketError::Op`]`(`[`OpErrorCode::ServiceTaken`]`)`.
    pub fn bind(socket: impl AsRef<Path>, engine: &str, service: ServiceId) -> Result<Self, SocketError> {
        let mut client = PonyClient::connect(socket, engine, Completions::Block)?;
        client.listen(service)?;
        let core = Core::new(client)?;
        core.state().listening = true;
        Ok(Self { core, service })
    }

    /// The service listened on.
    pub fn service(&self) -> ServiceId {
        self.service
    }

    /// Waits for the next flow a peer opens to the service.
    pub fn accept(&self) -> Result<PonyStream, SocketError> {
        self.accept_until(None)
    }

    /// Like [`Self::accept`], [`SocketError::TimedOut`] after `timeout`.
    pub fn accept_timeout(&self, timeout: Duration) -> Result<PonyStream, SocketError> {
        self.accept_until(Some(Instant::now() + timeout))
    }

    fn accept_until(&self, deadline: Option<Instant>) -> Result<PonyStream, SocketError> {
        let flow = self.core.wait(deadline, |st| st.accepted.pop_front().map(Ok))?;
        Ok(PonyStream::new(self.core.clone(), flow))
    }
}

/// How long dropping a [`PonyListener`] waits for the engine to confirm its Unlisten.
pub const UNLISTEN_WAIT: Duration = Duration::from_secs(1);

impl Drop for PonyListener {
    fn drop(&mut self) {
        let cookie = self.core.client().next_cookie();
        let unaccepted: Vec<FlowId> = {
            let mut st = self.core.state();
            st.listening = false;
            st.unlisten = Some((cookie, false));
            st.accepted.drain(..).collect()
        };
        for flow in unaccepted {
            self.core.forget(flow, true);
        }
        let service = self.service;
        if self.core.submit_now(&Command::Unlisten { cookie, service }) {
            let confirmed = self.core.wait(Some(Instant::now() + UNLISTEN_WAIT), |st| {
                matches!(st.unlisten, Some((_, true))).then_some(Ok(()))
            });
            if let Err(e) = confirmed {
                log::debug!("socket: unlisten of service {service}: {e}");
            }
        }
    }
}

/// One flow to a peer engine, as a blocking, message-oriented stream.
///
/// Messages keep their boundaries and arrive in order per stream id ([`Self::send_on`]);
/// [`Self::send`] and [`Self::recv`] use stream 0 and any stream. `send` returns once the
/// message is queued (copied into the pool), like a socket's write; [`Self::flush`] waits
/// until the peer's engine has everything.
#[derive(Debug)]
pub struct PonyStream {
    core: Arc<Core>,
    flow: FlowId,
    /// Nanoseconds; [`NONE`] for no timeout.
    read_timeout: AtomicU64,
    write_timeout: AtomicU64,
    /// [`Self::close`] closed the flow already: drop must not close it again.
    closed: AtomicBool,
}

/// A timeout of "none" in the atomics.
const NONE: u64 = u64::MAX;

impl PonyStream {
    /// Attaches to Pony engine `engine` of the host whose control socket is `socket`
    /// (a session of the stream's own) and opens a flow to `service` at `peer` (`ip:port`,
    /// or `shm` for a shared-memory wire). Nobody listening there is
    /// [`SocketError::Op`]`(`[`OpErrorCode::NoListener`]`)`.
    pub fn connect(
        socket: impl AsRef<Path>,
        engine: &str,
        peer: &str,
        service: ServiceId,
    ) -> Result<Self, SocketError> {
        let mut client = PonyClient::connect(socket, engine, Completions::Block)?;
        let flow = client.open_flow(peer, service)?;
        let core = Core::new(client)?;
        core.state().flows.insert(flow, Inbox::default());
        Ok(Self::new(core, flow))
    }

    fn new(core: Arc<Core>, flow: FlowId) -> Self {
        Self {
            core,
            flow,
            read_timeout: AtomicU64::new(NONE),
            write_timeout: AtomicU64::new(NONE),
            closed: AtomicBool::new(false),
        }
    }

    /// The engine's id of the flow (as in [`crate::app::Completion`]s).
    pub fn flow(&self) -> FlowId {
        self.flow
    }

    /// The largest message [`Self::send`] takes.
    pub fn max_message_len(&self) -> usize {
        self.core.max_message_len
    }

    /// How long [`Self::recv`] waits; `None` (the default) waits as long as it takes. A
    /// zero timeout only takes what already arrived.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) {
        store(&self.read_timeout, timeout);
    }

    /// How long [`Self::send`] waits for room (ring or pool full), and [`Self::flush`] and
    /// [`Self::close`] for the peer; `None` (the default) waits as long as it takes.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) {
        store(&self.write_timeout, timeout);
    }

    /// See [`Self::set_read_timeout`].
    pub fn read_timeout(&self) -> Option<Duration> {
        load(&self.read_timeout)
    }

    /// See [`Self::set_write_timeout`].
    pub fn write_timeout(&self) -> Option<Duration> {
        load(&self.write_timeout)
    }

    /// Sends `data` as one message on stream 0.
    pub fn send(&self, data: &[u8]) -> Result<(), SocketError> {
        self.send_on(0, data)
    }

    /// Sends `data` as one message on `stream` (messages of one stream arrive in order,
    /// streams are independent). Returns once it is queued; an error the engine reports
    /// later (the flow failed) comes back from the next call. Waits (up to the write
    /// timeout) while the command ring or the pool is full; as with TCP, two sides that
    /// only send, never reading, can fill each other's pools and wait for ever.
    pub fn send_on(&self, stream: u32, data: &[u8]) -> Result<(), SocketError> {
        let max = self.core.max_message_len;
        if data.len() > max {
            return Err(SocketError::TooLarge { len: data.len(), max });
        }
        let deadline = deadline(&self.write_timeout);
        let mut pause = Duration::from_micros(20);
        let mut alive_checked = Instant::now();
        loop {
            self.core.sendable(self.flow)?;
            {
                let mut client = self.core.client();
                let cookie = client.next_cookie();
                match client.session().send(self.flow, stream, data, cookie) {
                    Ok(_) => {
                        let mut st = self.core.state();
                        st.sends.insert(cookie, self.flow);
                        if let Some(inbox) = st.flows.get_mut(&self.flow) {
                            inbox.unacked += 1;
                        }
                        return Ok(());
                    }
                    // The engine has not taken earlier commands yet, or the pool is full
                    // (of messages in flight, or of received ones nobody has read).
                    Err(
                        SessionError::Push(PushError::Full) | SessionError::Pool(PoolError::Exhausted { .. }),
                    ) => {
                        if alive_checked.elapsed() >= HOST_CHECK {
                            if !client.host_alive() {
                                return Err(ClientError::HostGone.into());
                            }
                            alive_checked = Instant::now();
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(SocketError::TimedOut);
            }
            // The engine takes no commands while it cannot hand us completions: take them.
            self.core.take_completions()?;
            // Nothing signals room: back off up to a millisecond.
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(1));
        }
    }

    /// The next message (from any stream); `Ok(None)` once the flow is closed and every
    /// message that came before the close was read.
    pub fn recv(&self) -> Result<Option<Vec<u8>>, SocketError> {
        Ok(self.recv_with_stream()?.map(|(_, data)| data))
    }

    /// Like [`Self::recv`], with the stream the message came on.
    pub fn recv_with_stream(&self) -> Result<Option<(u32, Vec<u8>)>, SocketError> {
        let flow = self.flow;
        let got = self.core.wait(deadline(&self.read_timeout), |st| {
            let Some(inbox) = st.flows.get_mut(&flow) else {
                return Some(Ok(None));
            };
            if let Some(m) = inbox.messages.pop_front() {
                return Some(Ok(Some(m)));
            }
            // A failure seen by a send (the peer died) is not a clean end of stream, nor is
            // a flow that timed out or was reset.
            inbox.closed.then(|| match (inbox.error.take(), inbox.reason) {
                (Some(code), _) => Err(SocketError::Op(code)),
                (None, Some(r @ (CloseReason::PeerTimeout | CloseReason::Reset))) => {
                    Err(SocketError::Closed { reason: Some(r) })
                }
                (None, _) => Ok(None),
            })
        })?;
        let Some(Pending { stream, head, len }) = got else {
            return Ok(None);
        };
        let msg = Received::in_pool(&self.core.pool, head, len)?;
        let mut data = Vec::with_capacity(len as usize);
        msg.read_into(&mut data);
        msg.release()?;
        Ok(Some((stream, data)))
    }

    /// Waits until the peer's engine has acknowledged every message sent so far.
    pub fn flush(&self) -> Result<(), SocketError> {
        let flow = self.flow;
        self.core.wait(deadline(&self.write_timeout), |st| {
            let Some(inbox) = st.flows.get_mut(&flow) else {
                return Some(Err(SocketError::Closed { reason: None }));
            };
            if let Some(code) = inbox.error.take() {
                return Some(Err(SocketError::Op(code)));
            }
            match (inbox.unacked, inbox.closed) {
                (0, _) => Some(Ok(())),
                (_, true) => Some(Err(SocketError::Closed { reason: inbox.reason })),
                _ => None,
            }
        })
    }

    /// Flushes, then closes the flow and waits until it is closed. Messages that arrived
    /// and were not read are dropped. An error means what was sent may not all have
    /// arrived (the flow failed, or the write timeout passed).
    pub fn close(self) -> Result<(), SocketError> {
        let flow = self.flow;
        // The engine fails Sends it still holds when the flow closes (and drops them when
        // the session detaches), so close only once they have all been acknowledged.
        match self.flush() {
            Ok(()) | Err(SocketError::Closed { .. }) => {}
            Err(e) => return Err(e),
        }
        let already = self.core.state().flows.get(&flow).is_none_or(|i| i.closed);
        if !already {
            self.core.client().close_flow(flow)?;
        }
        self.closed.store(true, Ordering::Relaxed);
        self.core.wait(deadline(&self.write_timeout), |st| {
            let Some(inbox) = st.flows.get_mut(&flow) else {
                return Some(Ok(()));
            };
            inbox.closed.then(|| {
                inbox
                    .error
                    .take()
                    .map_or(Ok(()), |code| Err(SocketError::Op(code)))
            })
        })
    }
}

/// How long dropping a [`PonyStream`] waits at most, unless its write timeout says
/// otherwise, for the peer to acknowledge what was sent (see [`PonyStream`]'s `Drop`).
pub const LINGER: Duration = Duration::from_secs(10);

/// Flushes (waiting up to the write timeout, or [`LINGER`] without one; errors are
/// ignored), then closes the flow. The wait is what makes `send` then drop deliver: the
/// engine fails the Sends it still holds when a flow closes, and drops them when the
/// session detaches. A peer that stopped answering fails the flow within seconds; a dead
/// host is noticed within [`HOST_CHECK`].
impl Drop for PonyStream {
    fn drop(&mut self) {
        let close = !self.closed.load(Ordering::Relaxed);
        if close {
            if self.write_timeout().is_none() {
                self.set_write_timeout(Some(LINGER));
            }
            let _ = self.flush();
        }
        self.core.forget(self.flow, close);
    }
}

fn store(atomic: &AtomicU64, timeout: Option<Duration>) {
    let nanos = timeout.map_or(NONE, |t| u64::try_from(t.as_nanos()).unwrap_or(NONE - 1));
    atomic.store(nanos, Ordering::Relaxed);
}

fn load(atomic: &AtomicU64) -> Option<Duration> {
    match atomic.load(Ordering::Relaxed) {
        NONE => None,
        nanos => Some(Duration::from_nanos(nanos)),
    }
}

fn deadline(timeout: &AtomicU64) -> Option<Instant> {
    load(timeout).and_then(|t| Instant::now().checked_add(t))
}
