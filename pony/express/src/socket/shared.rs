//! The session a [`super::PonyListener`] shares with the streams it accepts (or that one
//! connected [`super::PonyStream`] owns): completions filed per stream, and the one waiting
//! thread at a time (the leader) that takes them off the ring.
//!
//! ```text
//!   waiting threads ── Core::wait(ready?) ──┬─ no leader: lead ── pump: arm doorbell,
//!                                           │                    dispatch, poll eventfd,
//!                                           │                    dispatch ─┐
//!                                           └─ else: condvar ◀── notify_all ┘
//!   dispatch: Received → inbox (chain stays in the pool), Sent/Error → the send's flow,
//!             FlowClosed → inbox closed, FlowAccepted → accept queue
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use snap_ipc::{Doorbell, PushError, Ringer};

use super::SocketError;
use crate::app::{CloseReason, Command, Completion, Cookie, FlowId, OpErrorCode, SessionError};
use crate::client::{ClientError, PonyClient, HOST_CHECK};
use crate::pool::{BufIdx, Owner, Pool};

/// Most completions filed per turn, so the client is not held for long.
const DISPATCH_BATCH: usize = 256;

/// A received message still in the pool.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pending {
    pub(super) stream: u32,
    pub(super) head: u32,
    pub(super) len: u32,
}

/// What a stream has coming.
#[derive(Debug, Default)]
pub(super) struct Inbox {
    pub(super) messages: VecDeque<Pending>,
    /// The engine reported the flow gone (`FlowClosed`).
    pub(super) closed: bool,
    /// Why, from its `FlowClosed`.
    pub(super) reason: Option<CloseReason>,
    /// The first failure of a send, reported once by the next call.
    pub(super) error: Option<OpErrorCode>,
    /// Sends without their completion yet.
    pub(super) unacked: usize,
}

/// Everything the session's completions update.
#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) flows: HashMap<FlowId, Inbox>,
    pub(super) listening: bool,
    pub(super) accepted: VecDeque<FlowId>,
    /// Which flow each outstanding Send's cookie belongs to.
    pub(super) sends: HashMap<Cookie, FlowId>,
    /// The dropped listener's Unlisten: its cookie, and whether the engine answered.
    pub(super) unlisten: Option<(Cookie, bool)>,
    /// A thread is waiting on the doorbell and dispatching completions.
    leader: bool,
    host_gone: bool,
}

impl State {
    /// The engine answered the listener's Unlisten (done or refused: either way it is over).
    fn unlistened(&mut self, cookie: Cookie) {
        if let Some((c, done)) = &mut self.unlisten {
            *done |= *c == cookie;
        }
    }

    /// A Send completed (an error other commands' may carry is ignored: not a send's).
    fn send_done(&mut self, cookie: Cookie, error: Option<OpErrorCode>) {
        let Some(flow) = self.sends.remove(&cookie) else {
            return;
        };
        if let Some(inbox) = self.flows.get_mut(&flow) {
            inbox.unacked = inbox.unacked.saturating_sub(1);
            inbox.error = inbox.error.or(error);
        }
    }
}

/// One session shared by a listener and its streams (or owned by one connected stream).
/// Lock order: `client` before `state`, never the other way round while blocking.
#[derive(Debug)]
pub(super) struct Core {
    client: Mutex<PonyClient>,
    /// A second handle on the session's pool, so a message is copied out of it without
    /// holding the client.
    pub(super) pool: Pool,
    bell: Doorbell,
    /// Rings `bell` (if armed: only the leader arms it).
    wake_leader: Ringer,
    pub(super) max_message_len: usize,
    state: Mutex<State>,
    changed: Condvar,
}

impl Core {
    pub(super) fn new(mut client: PonyClient) -> Result<Arc<Self>, SocketError> {
        let bell = client
            .completion_doorbell()
            .cloned()
            .expect("sockets attach with Completions::Block, which has a doorbell");
        let pool = client.session().pool().try_clone(Owner::App)?;
        let engine_max = client.details()["max_message_len"].as_u64().unwrap_or(u64::MAX);
        let max_message_len = usize::try_from(engine_max)
            .unwrap_or(usize::MAX)
            .min(pool.max_message_len());
        Ok(Arc::new(Self {
            client: Mutex::new(client),
            pool,
            wake_leader: bell.ringer(),
            bell,
            max_message_len,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        }))
    }

    // A panic elsewhere while holding a lock leaves nothing half-updated that these types
    // rely on, so a poisoned lock is used as is.
    pub(super) fn client(&self) -> MutexGuard<'_, PonyClient> {
        self.client.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `flow` may be sent on; a pending failure is reported (once) here.
    pub(super) fn sendable(&self, flow: FlowId) -> Result<(), SocketError> {
        let mut st = self.state();
        if st.host_gone {
            return Err(ClientError::HostGone.into());
        }
        match st.flows.get_mut(&flow) {
            None => Err(SocketError::Closed { reason: None }),
            Some(inbox) => match inbox.error.take() {
                Some(code) => Err(SocketError::Op(code)),
                None if inbox.closed => Err(SocketError::Closed { reason: inbox.reason }),
                None => Ok(()),
            },
        }
    }

    /// Waits until `ready` (called with the state locked, after every change) has an
    /// answer, leading the session's completions while no other thread does.
    pub(super) fn wait<T>(
        &self,
        deadline: Option<Instant>,
        mut ready: impl FnMut(&mut State) -> Option<Result<T, SocketError>>,
    ) -> Result<T, SocketError> {
        let mut st = self.state();
        let mut pumped_once = false;
        loop {
            if let Some(answer) = ready(&mut st) {
                return answer;
            }
            if st.host_gone {
                return Err(ClientError::HostGone.into());
            }
            let left = deadline.map_or(HOST_CHECK, |d| d.saturating_duration_since(Instant::now()));
            // Even a zero timeout has the ring looked at once (by us or the leader).
            if left.is_zero() && (pumped_once || st.leader) {
                return Err(SocketError::TimedOut);
            }
            let slice = left.min(HOST_CHECK);
            if st.leader {
                st = self
                    .changed
                    .wait_timeout(st, slice)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                continue;
            }
            st.leader = true;
            drop(st);
            let pumped = self.pump(slice);
            pumped_once = true;
            st = self.state();
            st.leader = false;
            // Another waiter may have to lead now.
            self.changed.notify_all();
            pumped?;
        }
    }

    /// The leader's turn: dispatches what is there, else waits up to `slice` for the
    /// engine to ring, then dispatches again. A slice without any completion checks that
    /// the host is still there.
    fn pump(&self, slice: Duration) -> Result<(), SocketError> {
        // Dekker with the engine (see `snap_ipc::doorbell`): armed before looking, so
        // a completion pushed after the look rings.
        self.bell.arm();
        if self.dispatch()? > 0 {
            self.bell.disarm();
            return Ok(());
        }
        if !slice.is_zero() {
            let efd = self.bell.eventfd();
            let mut fds = [PollFd::new(&efd, PollFlags::IN)];
            let ts = Timespec::try_from(slice).unwrap_or(Timespec {
                tv_sec: i64::MAX,
                tv_nsec: 0,
            });
            match poll(&mut fds, Some(&ts)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => log::warn!("socket: waiting on the completion doorbell: {e}"),
            }
        }
        self.bell.disarm();
        self.bell.drain();
        if self.dispatch()? == 0 && !self.client().host_alive() {
            self.state().host_gone = true;
        }
        Ok(())
    }

    /// Takes the waiting completions (up to [`DISPATCH_BATCH`]) and files each with its
    /// stream; returns how many.
    fn dispatch(&self) -> Result<usize, SocketError> {
        let mut client = self.client();
        let mut batch = Vec::new();
        let mut failed = None;
        while batch.len() < DISPATCH_BATCH {
            match client.poll_completion() {
                Ok(Some(c)) => batch.push(c),
                Ok(None) => break,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let n = batch.len();
        let mut unwanted = Vec::new();
        let mut st = self.state();
        for c in batch {
            match c {
                Completion::Received {
                    flow,
                    stream,
                    head,
                    len,
                } => match st.flows.get_mut(&flow) {
                    Some(inbox) => inbox.messages.push_back(Pending { stream, head, len }),
                    // Its stream is gone: nobody will read it.
                    None => drop(self.pool.release_chain(BufIdx(head))),
                },
                Completion::Sent { cookie } => st.send_done(cookie, None),
                Completion::Error { cookie, code, .. } => {
                    st.unlistened(cookie);
                    st.send_done(cookie, Some(code));
                }
                Completion::Unlistened { cookie } => st.unlistened(cookie),
                Completion::FlowClosed { flow, reason } => {
                    if let Some(inbox) = st.flows.get_mut(&flow) {
                        inbox.closed = true;
                        inbox.reason = Some(reason);
                    }
                }
                Completion::FlowAccepted { flow, .. } if st.listening => {
                    st.flows.insert(flow, Inbox::default());
                    st.accepted.push_back(flow);
                }
                // Accepted while the listener was going away: nobody will take it.
                Completion::FlowAccepted { flow, .. } => unwanted.push(flow),
                _ => {}
            }
        }
        drop(st);
        for flow in unwanted {
            let _ = client.session().submit(&Command::CloseFlow { flow });
        }
        if n > 0 {
            self.changed.notify_all();
        }
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(n),
        }
    }

    /// Files waiting completions from outside the leader's turn (a sender waiting for
    /// room), and wakes the leader if any were filed: one of them may be what it waits
    /// for, and the engine rang for it before it was taken.
    pub(super) fn take_completions(&self) -> Result<(), SocketError> {
        if self.dispatch()? > 0 {
            self.wake_leader.ring();
        }
        Ok(())
    }

    /// A stream (or an unaccepted flow) is gone: its unread messages go back to the pool
    /// and, if `close`, its flow is closed (it still delivers every Send posted before;
    /// streams flush first so that a failure to deliver reaches their caller).
    pub(super) fn forget(&self, flow: FlowId, close: bool) {
        let inbox = {
            let mut st = self.state();
            st.sends.retain(|_, f| *f != flow);
            st.flows.remove(&flow)
        };
        let Some(inbox) = inbox else { return };
        for m in inbox.messages {
            let _ = self.pool.release_chain(BufIdx(m.head));
        }
        if close && !inbox.closed {
            self.submit_now(&Command::CloseFlow { flow });
        }
    }

    /// Submits without waiting long (for drops); returns whether the command went. If the
    /// command ring stays full for a few milliseconds, it is given up: the session's detach
    /// does the same later.
    pub(super) fn submit_now(&self, cmd: &Command) -> bool {
        for _ in 0..20 {
            match self.client().session().submit(cmd) {
                Err(SessionError::Push(PushError::Full)) => std::thread::sleep(Duration::from_micros(250)),
                Ok(()) => return true,
                Err(e) => {
                    log::debug!("socket: {cmd:?}: {e}");
                    return false;
                }
            }
        }
        log::debug!("socket: command ring full, {cmd:?} given up");
        false
    }
}
