//! Sessions: one app's connection to its Pony engine. A session is a `snap_ipc::channel`
//! (command ring, completion ring, the engine's doorbell and optionally the app's
//! completion doorbell) plus a buffer [`Pool`], with Pony's records on the rings.
//!
//! Setup mirrors `snap_ipc::channel`: the host makes everything and sends the app
//! [`SESSION_FDS`] descriptors (the channel's [`HOST_FDS`], then the pool's memfd); the app
//! validates each in [`AppSession::from_fds`]. An app that wants to block rather than spin
//! ([`Completions::Block`]) makes a [`Doorbell`] first and sends its two descriptors with
//! its attach request; the engine rings it after pushing completions, only while armed.
//!
//! This module is the layout both ends agree on and the app's end ([`AppSession`]: posting
//! commands, taking completions, reading received messages in place with [`Received`]);
//! the engine's end is `pony_engine::session`.

use std::os::fd::OwnedFd;
use std::time::Duration;

use snap_ipc::channel::{ChannelAppEnd, ChannelError, ChannelShape, HOST_FDS};
use snap_ipc::{Doorbell, PopError, PushError, RingProbe, SharedMem};

use crate::app::proto::{Command, Completion, Cookie, DecodeError, FlowId, MAX_RECORD_LEN};
use crate::pool::{BufIdx, Chain, ChainSnapshot, Owner, Pool, PoolError, PoolShape};

/// Descriptors the host sends the app: [`HOST_FDS`] channel descriptors, then the pool.
pub const SESSION_FDS: usize = HOST_FDS + 1;

/// How the app learns of completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completions {
    /// The app polls the completion ring; the engine never makes a system call for it.
    Poll,
    /// The app may block on its completion doorbell; the engine rings it when armed.
    Block,
}

/// How long [`AppSession::wait_completion`] spins on the completion ring by default
/// before it arms the completion doorbell and blocks: not at all, from `mq-bench-pony`
/// measurements on a 2-CPU machine, where every spin raised the round trip (docs/PONY.md,
/// "Waiting for completions"). An app with a core of its own may want one.
pub const DEFAULT_COMPLETION_SPIN: Duration = Duration::ZERO;

/// Shape of a session's rings and pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionShape {
    /// Records in flight per direction (a power of two).
    pub ring_capacity: u64,
    /// The pool.
    pub pool: PoolShape,
}

impl Default for SessionShape {
    /// 256 records each way; the default pool (8192 × 2 KiB).
    fn default() -> Self {
        Self {
            ring_capacity: 256,
            pool: PoolShape::default(),
        }
    }
}

impl SessionShape {
    /// The channel that carries this session's records.
    pub fn channel(&self) -> ChannelShape {
        ChannelShape {
            capacity: self.ring_capacity,
            // Length prefix plus the longest record, rounded up to the ring's 8-byte slots.
            slot_size: (4 + MAX_RECORD_LEN as u32).next_multiple_of(8),
        }
    }
}

/// Why a session operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Setting up or waiting on the channel failed.
    #[error("channel: {0}")]
    Channel(#[from] ChannelError),
    /// A pool operation failed.
    #[error("pool: {0}")]
    Pool(#[from] PoolError),
    /// The ring is full; retry after the other side catches up.
    #[error("ring: {0}")]
    Push(#[from] PushError),
    /// A ring is corrupt: the session is unusable.
    #[error("ring: {0}")]
    Pop(#[from] PopError),
    /// The engine sent a record this app does not understand.
    #[error("completion record: {0}")]
    Decode(#[from] DecodeError),
    /// Wrong number of descriptors.
    #[error("expected {expected} descriptors, got {got}")]
    FdCount {
        /// Required.
        expected: usize,
        /// Received.
        got: usize,
    },
}

/// The app's end of a session.
#[derive(Debug)]
pub struct AppSession {
    chan: ChannelAppEnd,
    /// The completion ring's fill level: a pop that leaves it one short of full may be
    /// the one an engine waiting for space needs (see [`AppSession::popped`]).
    completions: RingProbe,
    pool: Pool,
    buf: Vec<u8>,
    scratch: Vec<u8>,
    /// How long a wait spins before it blocks ([`Self::set_completion_spin`]).
    completion_spin: Duration,
}

impl AppSession {
    /// Rebuilds the app end from the [`SESSION_FDS`] descriptors the host sent, validating
    /// every one. `completion` is the doorbell whose descriptors the app sent with its
    /// attach request ([`Completions::Block`]), if any.
    pub fn from_fds(mut fds: Vec<OwnedFd>, completion: Option<Doorbell>) -> Result<Self, SessionError> {
        if fds.len() != SESSION_FDS {
            return Err(SessionError::FdCount {
                expected: SESSION_FDS,
                got: fds.len(),
            });
        }
        let pool_fd = fds.pop().ok_or(SessionError::FdCount {
            expected: SESSION_FDS,
            got: 0,
        })?;
        let chan = ChannelAppEnd::from_fds(fds, completion)?;
        let mem = SharedMem::from_fd(pool_fd).map_err(PoolError::from)?;
        let pool = Pool::attach(mem)?.with_owner(Owner::App);
        let buf = vec![0; chan.max_message_len()];
        Ok(Self {
            completions: chan.response_probe(),
            chan,
            pool,
            buf,
            scratch: Vec::with_capacity(MAX_RECORD_LEN),
            completion_spin: DEFAULT_COMPLETION_SPIN,
        })
    }

    /// A doorbell for [`Completions::Block`]: send its [`Doorbell::fds`] to the host with
    /// the attach request and pass it to [`Self::from_fds`].
    pub fn completion_doorbell() -> Result<Doorbell, SessionError> {
        Doorbell::new().map_err(|source| {
            SessionError::Channel(ChannelError::Doorbell {
                which: "completion",
                source,
            })
        })
    }

    /// How long [`Self::wait_completion`] polls the completion ring before it arms the
    /// completion doorbell and blocks ([`DEFAULT_COMPLETION_SPIN`] unless set; zero blocks
    /// at once). A completion that arrives within the spin costs no system call on either
    /// side and no context switch; the price is up to that much CPU per wait that ends up
    /// blocking anyway. A polling session ([`Completions::Poll`]) yields between checks
    /// after the spin instead of blocking.
    pub fn set_completion_spin(&mut self, spin: Duration) {
        self.completion_spin = spin;
    }

    /// The spin set by [`Self::set_completion_spin`].
    pub fn completion_spin(&self) -> Duration {
        self.completion_spin
    }

    /// The shared pool: allocate and write chains here before posting them.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The session's channel, below the record codec. Whatever is pushed here reaches the
    /// engine as-is: tests use it to play an app that writes garbage.
    pub fn channel_mut(&mut self) -> &mut ChannelAppEnd {
        &mut self.chan
    }

    /// Queues a command without waking the engine; follow a batch with [`Self::kick`].
    pub fn post(&mut self, cmd: &Command) -> Result<(), SessionError> {
        self.scratch.clear();
        cmd.encode_into(&mut self.scratch);
        Ok(self.chan.push(&self.scratch)?)
    }

    /// Wakes the engine if it is blocked (one load when it is not).
    pub fn kick(&self) -> bool {
        self.chan.kick()
    }

    /// Queues a command and wakes the engine if needed.
    pub fn submit(&mut self, cmd: &Command) -> Result<(), SessionError> {
        self.post(cmd)?;
        self.kick();
        Ok(())
    }

    /// Writes `data` into a new chain and submits a Send of it. The chain now belongs to
    /// the engine; if the command cannot be queued the chain is released again.
    pub fn send(
        &mut self,
        flow: FlowId,
        stream: u32,
        data: &[u8],
        cookie: Cookie,
    ) -> Result<Chain, SessionError> {
        let chain = self.pool.write_chain(data)?;
        let cmd = Command::Send {
            flow,
            stream,
            head: chain.head.0,
            len: chain.len,
            cookie,
        };
        if let Err(e) = self.submit(&cmd) {
            self.pool.release_chain(chain.head)?;
            return Err(e);
        }
        Ok(chain)
    }

    /// The next completion, if one is waiting.
    pub fn poll_completion(&mut self) -> Result<Option<Completion>, SessionError> {
        match self.chan.try_recv(&mut self.buf)? {
            Some(n) => {
                self.popped();
                Ok(Some(Completion::decode(&self.buf[..n])?))
            }
            None => Ok(None),
        }
    }

    /// Backpressure's wakeup: an engine whose completions found this ring full stops
    /// taking this app's commands and may block until a slot frees. The pop that frees
    /// the first slot (the ring now holds `capacity - 1`) rings the engine's doorbell.
    ///
    /// No wakeup is lost. The engine parks completions only after a push found the ring
    /// full, and before blocking it arms its doorbell, fences, and checks whether this
    /// ring has a free slot. This side stores its consumer index (the pop), then `kick`
    /// fences and reads the armed flag (Dekker, as in `snap_ipc::doorbell`): either the
    /// engine sees the freed slot and does not block, or this side sees it armed and
    /// rings. While the engine is blocked it pushes nothing, so the first pop after its
    /// check reads exactly `capacity - 1`; when it is not blocked it retries by itself
    /// on its next step. Costs one load per pop, and a doorbell check only after a full
    /// ring.
    fn popped(&self) {
        if self.completions.len() + 1 == self.completions.capacity() {
            self.chan.kick();
        }
    }

    /// The next completion, waiting up to `timeout`: spinning on the completion ring for
    /// up to [`Self::completion_spin`], then blocking on the completion doorbell with
    /// [`Completions::Block`], yielding between checks otherwise.
    pub fn wait_completion(&mut self, timeout: Duration) -> Result<Option<Completion>, SessionError> {
        let spin = self.completion_spin.min(timeout);
        let mut left = timeout;
        if !spin.is_zero() {
            let start = std::time::Instant::now();
            loop {
                if let Some(c) = self.poll_completion()? {
                    return Ok(Some(c));
                }
                let spent = start.elapsed();
                if spent >= spin {
                    left = timeout.saturating_sub(spent);
                    break;
                }
                std::hint::spin_loop();
            }
        }
        match self.chan.recv_timeout(&mut self.buf, left)? {
            Some(n) => {
                self.popped();
                Ok(Some(Completion::decode(&self.buf[..n])?))
            }
            None => Ok(None),
        }
    }

    /// Copies a received message (from [`Completion::Received`]) out of the pool and
    /// releases its chain.
    pub fn take_received(&mut self, head: u32, len: u32, out: &mut Vec<u8>) -> Result<(), SessionError> {
        let msg = self.received(head, len)?;
        msg.read_into(out);
        msg.release()
    }

    /// A received message (from [`Completion::Received`]) read in place, where the engine
    /// reassembled it: no copy. Dropping it gives its buffers back to the pool.
    pub fn received(&self, head: u32, len: u32) -> Result<Received<'_>, SessionError> {
        Received::in_pool(&self.pool, head, len)
    }
}

/// A received message in the app's pool; see [`AppSession::received`].
#[derive(Debug)]
pub struct Received<'a> {
    pool: &'a Pool,
    snap: Option<ChainSnapshot>,
}

impl<'a> Received<'a> {
    /// The message a `Received { head, len }` completion names, in `pool` (the app's
    /// pool, through any handle on it), validated like any chain the peer could have
    /// touched.
    pub fn in_pool(pool: &'a Pool, head: u32, len: u32) -> Result<Self, SessionError> {
        let snap = pool.snapshot(BufIdx(head), Some(u64::from(len)))?;
        Ok(Received {
            pool,
            snap: Some(snap),
        })
    }

    /// Appends the bytes to `out` (the copy [`AppSession::take_received`] makes).
    pub fn read_into(&self, out: &mut Vec<u8>) {
        for seg in self.segments() {
            out.extend_from_slice(seg);
        }
    }

    /// Total bytes.
    pub fn len(&self) -> usize {
        self.snap.as_ref().map_or(0, |s| s.len() as usize)
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, one slice per pool buffer, in place.
    pub fn segments(&self) -> impl Iterator<Item = &[u8]> {
        self.snap.iter().flat_map(|s| s.chain_segments(self.pool))
    }

    /// Gives the buffers back now, reporting a pool error (dropping does the same
    /// silently).
    pub fn release(mut self) -> Result<(), SessionError> {
        match self.snap.take() {
            Some(snap) => Ok(snap.release(self.pool).map(drop)?),
            None => Ok(()),
        }
    }
}

impl Drop for Received<'_> {
    fn drop(&mut self) {
        if let Some(snap) = self.snap.take() {
            let _ = snap.release(self.pool);
        }
    }
}
