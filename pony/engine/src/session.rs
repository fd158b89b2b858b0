//! The engine's end of a session (one app's connection to its Pony engine; the layout and
//! the app's end are `pony_express::app::session`): it makes the channel and the pool, sends
//! the app `SESSION_FDS` descriptors, and takes the app's commands.
//!
//! The engine side keeps the bookkeeping that makes a hostile or crashed app harmless:
//! every chain a command names is validated and snapshotted on acceptance
//! ([`EngineSession::next_command`]), at most one command may hold a buffer, and the set of
//! held buffers is exactly what survives [`EngineSession::reclaim`]: everything else goes
//! back to the free list, whatever the dead app left in shared memory.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use pony_express::app::proto::{Command, Completion, Cookie, DecodeError, FlowId, MAX_RECORD_LEN};
use pony_express::app::session::{AppSession, Completions, SessionError, SessionShape};
use pony_express::app::OpErrorCode;
use pony_express::pool::{BufIdx, ChainSnapshot, Holds, Pool, PoolError, RecvChain};
use pony_proto::flow::{Chunks, RecvBuffers};
use snap_ipc::channel::{completion_ringer, AppChannel, ChannelEngineEnd, ChannelError};
use snap_ipc::{Doorbell, PopError, RingProbe};

/// A chain the engine holds for an accepted command (its head index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ChainId(pub u32);

/// A command the engine accepted: well-formed, and its chain (if any) validated and now
/// held by the engine until [`EngineSession::finish_chain`] or
/// [`EngineSession::return_chain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The command.
    pub cmd: Command,
    /// The chain it carries: Send/Write payload, Read/IndirectRead destination.
    pub chain: Option<ChainId>,
}

/// What [`EngineSession::reclaim`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReclaimStats {
    /// Buffers still held by in-flight commands (freed as those finish).
    pub held: u32,
    /// Buffers free after the rebuild.
    pub free: u32,
    /// Completions that were waiting for ring space and are dropped.
    pub dropped_completions: usize,
}

/// How an app broke the session protocol. The engine quarantines the session for it
/// (`PonyEngine::quarantine`): a hostile or broken app is detached, never served on.
#[derive(Debug, thiserror::Error)]
pub enum Violation {
    /// The command ring itself is corrupt (indices, lengths).
    #[error("command ring: {0}")]
    Ring(#[from] PopError),
    /// A record that is not a command.
    #[error("malformed command: {0}")]
    Malformed(#[from] DecodeError),
    /// A command naming a chain the app cannot lend: out of the pool, not allocated, a
    /// cycle, not the length the command says, or buffers the engine already holds.
    #[error("command {cookie} names a bad chain at buffer {head}")]
    BadChain {
        /// The command's cookie.
        cookie: Cookie,
        /// The chain's first buffer, as the command named it.
        head: u32,
    },
}

impl Violation {
    /// The error code that names the violation, told to the app as the `detail` of its
    /// `Quarantined` error (`None` for a corrupt ring: `detail` 0).
    pub fn code(&self) -> Option<OpErrorCode> {
        match self {
            Violation::Ring(_) => None,
            Violation::Malformed(_) => Some(OpErrorCode::BadCommand),
            Violation::BadChain { .. } => Some(OpErrorCode::BadChain),
        }
    }
}

/// The engine's end of a session.
#[derive(Debug)]
pub struct EngineSession {
    chan: ChannelEngineEnd,
    pool: Arc<Pool>,
    held: HashMap<u32, ChainSnapshot>,
    /// The engine's references per buffer: chains of accepted commands, message pieces a
    /// flow still sends from, messages being reassembled. Makes overlap checks O(chain)
    /// and is what survives a reclaim.
    holds: Arc<Holds>,
    /// Completions that found the ring full, oldest first. While any wait, no new command
    /// is accepted, so an app that stops reading cannot make this grow without bound.
    pending: VecDeque<Completion>,
    /// Completions were pushed since the app's doorbell last rang ([`Self::ring`]).
    ring_due: bool,
    refused: u64,
    app_gone: bool,
    scratch: Vec<u8>,
    /// The command being decoded, copied in from the app's ring (`snap_ipc::peer`).
    command: Vec<u8>,
}

impl EngineSession {
    /// Makes a session's rings, doorbell and pool on the host. `completion_fds` are the
    /// app's completion doorbell descriptors ([`snap_ipc::channel::APP_FDS`]) if it
    /// chose [`Completions::Block`]. Returns the engine end and the [`SESSION_FDS`]
    /// descriptors for the app.
    pub fn create(
        shape: SessionShape,
        completion_fds: Option<Vec<OwnedFd>>,
    ) -> Result<(Self, Vec<OwnedFd>), SessionError> {
        let ringer = completion_fds.map(completion_ringer).transpose()?;
        let pool = Pool::create(shape.pool)?;
        let (chan, mut fds) = AppChannel::create(shape.channel(), ringer)?.into_parts();
        fds.push(dup(&pool.shared_mem().as_fd())?);
        Ok((Self::new(chan, pool), fds))
    }

    fn new(chan: ChannelEngineEnd, pool: Pool) -> Self {
        Self::new_shared(chan, Arc::new(pool))
    }

    fn new_shared(chan: ChannelEngineEnd, pool: Arc<Pool>) -> Self {
        let holds = Holds::new(pool.shape().buffers);
        Self {
            chan,
            pool,
            held: HashMap::new(),
            holds,
            pending: VecDeque::new(),
            ring_due: false,
            refused: 0,
            app_gone: false,
            scratch: Vec::with_capacity(MAX_RECORD_LEN),
            command: Vec::new(),
        }
    }

    /// Both ends in this process (tests, in-process apps), going through descriptors like
    /// a real app would, so the same validation runs.
    pub fn pair(shape: SessionShape, completions: Completions) -> Result<(Self, AppSession), SessionError> {
        let bell = match completions {
            Completions::Poll => None,
            Completions::Block => Some(Doorbell::new().map_err(|source| ChannelError::Doorbell {
                which: "completion",
                source,
            })?),
        };
        let app_fds = match &bell {
            Some(b) => {
                let (page, efd) = b.fds();
                Some(vec![dup(&page)?, dup(&efd)?])
            }
            None => None,
        };
        let (engine, fds) = Self::create(shape, app_fds)?;
        Ok((engine, AppSession::from_fds(fds, bell)?))
    }

    /// The pool (read payloads in place through [`Self::chain`]).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The doorbell the app rings after posting commands (the runtime arms it).
    pub fn doorbell(&self) -> &Doorbell {
        self.chan.doorbell()
    }

    /// Fill level of the command ring, for the engine's work probe.
    pub fn command_probe(&self) -> RingProbe {
        self.chan.request_probe()
    }

    /// Fill level of the completion ring (to learn when an app that stopped consuming
    /// frees a slot).
    pub fn completion_probe(&self) -> RingProbe {
        self.chan.response_probe()
    }

    /// Completions waiting for ring space; while any wait, no command is taken.
    pub fn parked(&self) -> usize {
        self.pending.len()
    }

    /// Commands refused so far (a Read into a chain too small for it).
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Takes the next command off the ring. A chain too small for a Read is answered with
    /// [`Completion::Error`] (`TooLarge`) here and skipped, so the caller only sees
    /// commands it can act on. `Ok(None)` when there is nothing to do, or while
    /// completions wait for ring space (backpressure on an app that does not read).
    /// `Err` when the app broke the protocol: a corrupt ring, a malformed record or a bad
    /// chain.
    pub fn next_command(&mut self) -> Result<Option<Accepted>, Violation> {
        loop {
            if !self.flush_pending() {
                return Ok(None);
            }
            let Some(msg) = self.chan.requests().peek()? else {
                return Ok(None);
            };
            self.command.resize(msg.len(), 0);
            let bytes = msg
                .copy_into(&mut self.command)
                .expect("buffer sized to the message");
            let decoded = Command::decode(bytes);
            msg.release();
            let cmd = decoded?;
            let named = match cmd {
                Command::Send { head, len, .. } | Command::Write { head, len, .. } => {
                    Some((head, Some(u64::from(len)), 0))
                }
                Command::Read { local, len, .. } => Some((local, None, len)),
                Command::IndirectRead { local, .. } => Some((local, None, 0)),
                _ => None,
            };
            let Some((head, expected, min_capacity)) = named else {
                return Ok(Some(Accepted { cmd, chain: None }));
            };
            match self.hold(head, expected, min_capacity) {
                Ok(id) => return Ok(Some(Accepted { cmd, chain: Some(id) })),
                Err(OpErrorCode::BadChain) => {
                    return Err(Violation::BadChain {
                        cookie: cmd.cookie(),
                        head,
                    })
                }
                Err(code) => self.refuse(cmd.cookie(), code, u64::from(head)),
            }
        }
    }

    fn refuse(&mut self, cookie: Cookie, code: OpErrorCode, detail: u64) {
        self.refused += 1;
        self.post(Completion::Error { cookie, code, detail });
    }

    /// Validates and snapshots the chain at `head` and marks its buffers held.
    fn hold(&mut self, head: u32, expected: Option<u64>, min_capacity: u32) -> Result<ChainId, OpErrorCode> {
        let snap = self
            .pool
            .snapshot(BufIdx(head), expected)
            .map_err(|_| OpErrorCode::BadChain)?;
        if snap.capacity(&self.pool) < min_capacity as usize {
            return Err(OpErrorCode::TooLarge);
        }
        // Two commands naming the same buffer would let the app make us free it twice.
        if snap.buffers().any(|b| self.holds.is_held(b)) {
            return Err(OpErrorCode::BadChain);
        }
        for b in snap.buffers() {
            self.holds.hold(b);
        }
        self.held.insert(head, snap);
        Ok(ChainId(head))
    }

    /// A held chain, to copy in ([`ChainSnapshot::read_into`]).
    pub fn chain(&self, id: ChainId) -> Option<&ChainSnapshot> {
        self.held.get(&id.0)
    }

    /// Writes `data` at `offset` of a held chain (a Read's destination, one response
    /// packet at a time, straight from the packet).
    pub fn write_chain_at(&mut self, id: ChainId, offset: usize, data: &[u8]) -> Result<(), OpErrorCode> {
        let snap = self.held.get_mut(&id.0).ok_or(OpErrorCode::BadChain)?;
        snap.write_at(&self.pool, offset, data)
            .map_err(|_| OpErrorCode::TooLarge)
    }

    /// Sets a held chain's length to `len` (its segments full, then the rest), once a Read's
    /// bytes are all written.
    pub fn set_chain_len(&mut self, id: ChainId, len: usize) -> Result<(), OpErrorCode> {
        let snap = self.held.get_mut(&id.0).ok_or(OpErrorCode::BadChain)?;
        snap.set_len(&self.pool, len).map_err(|_| OpErrorCode::TooLarge)
    }

    /// A Send's or Write's held chain as message pieces, zero-copy: each piece owns its
    /// buffer's reference and hold, so the buffer goes back to the pool when the flow drops
    /// the last slice of it (acknowledged, or the flow is gone).
    pub fn take_chain_pieces(&mut self, id: ChainId) -> Option<Chunks> {
        let snap = self.held.remove(&id.0)?;
        Some(Chunks::from_parts(snap.into_pieces(&self.pool, &self.holds)))
    }

    /// Where flows of this session reassemble received messages: the session's pool.
    pub fn recv_buffers(&self) -> SessionBuffers {
        SessionBuffers(Some((self.pool.clone(), self.holds.clone())))
    }

    /// Bytes of free pool buffers (what received messages can still land in).
    pub fn free_bytes(&self) -> u64 {
        let s = self.pool.stats();
        u64::from(s.free) * u64::from(s.buf_size)
    }

    fn unhold(&mut self, id: ChainId) -> Option<ChainSnapshot> {
        let snap = self.held.remove(&id.0)?;
        for b in snap.buffers() {
            self.holds.unhold(b);
        }
        Some(snap)
    }

    /// The engine is done with a chain (Send acknowledged, Write done): drop its reference.
    pub fn finish_chain(&mut self, id: ChainId) -> Result<(), PoolError> {
        match self.unhold(id) {
            Some(snap) => snap.release(&self.pool).map(drop),
            None => Ok(()),
        }
    }

    /// Hands a chain back to the app (a Read's destination, with its ReadDone). After
    /// [`Self::reclaim`] there is no app: the chain is released instead.
    pub fn return_chain(&mut self, id: ChainId) -> Result<(), PoolError> {
        if self.app_gone {
            return self.finish_chain(id);
        }
        self.unhold(id);
        Ok(())
    }

    /// Queues a completion for the app and wakes it if it blocks. Never fails: a full ring
    /// parks the completion (see `next_command`).
    pub fn complete(&mut self, c: Completion) {
        self.post(c);
        self.ring();
    }

    /// Queues a completion for the app without waking it: the engine posts a step's
    /// completions this way and rings once at the end of the step ([`Self::ring`]), so an
    /// app woken by the first completion does not preempt the engine before the rest.
    pub fn post(&mut self, c: Completion) {
        if self.app_gone {
            return;
        }
        self.pending.push_back(c);
        self.flush_pending();
    }

    /// Wakes the app if completions were pushed since the last ring (the doorbell itself
    /// writes only if the app blocks on it). Returns whether the doorbell was written.
    pub fn ring(&mut self) -> bool {
        std::mem::take(&mut self.ring_due) && self.chan.notify_app()
    }

    /// Pushes parked completions (the ring is due if any went); returns whether none are
    /// left.
    fn flush_pending(&mut self) -> bool {
        while let Some(c) = self.pending.front() {
            self.scratch.clear();
            c.encode_into(&mut self.scratch);
            if self.chan.responses().push(&self.scratch).is_err() {
                break;
            }
            self.pending.pop_front();
            self.ring_due = true;
        }
        self.pending.is_empty()
    }

    /// Hands a message reassembled in this session's pool to the app: the chain's
    /// reference goes with the completion (posted: the app wakes at the next
    /// [`Self::ring`]). After a reclaim it is released instead.
    pub fn deliver_chain(&mut self, flow: FlowId, stream: u32, msg: RecvChain) {
        if self.app_gone {
            return; // dropping it releases its buffers
        }
        let chain = msg.into_chain();
        self.post(Completion::Received {
            flow,
            stream,
            head: chain.head.0,
            len: chain.len,
        });
    }

    /// Copies `data` into a fresh chain, delivers it and wakes the app (in-process callers
    /// and tests; the engine's flows reassemble in place through [`Self::recv_buffers`]).
    pub fn deliver(&mut self, flow: FlowId, stream: u32, data: &[u8]) -> Result<(), PoolError> {
        let mut msg = RecvChain::alloc(&self.pool, &self.holds, data.len())?;
        msg.write_at(0, data);
        self.deliver_chain(flow, stream, msg);
        self.ring();
        Ok(())
    }

    /// The app is gone (its process died or it detached without cleaning up): returns
    /// every buffer it held to the pool. Buffers of commands still in flight stay held and
    /// are freed by [`Self::finish_chain`] / [`Self::return_chain`] as they complete;
    /// completions not yet delivered are dropped. Afterwards the free count is the pool
    /// size minus the held buffers. Must only be called once the app can no longer touch
    /// the pool (it is dead, or its mapping is otherwise gone).
    pub fn reclaim(&mut self) -> ReclaimStats {
        self.app_gone = true;
        let dropped_completions = self.pending.len();
        self.pending.clear();
        let holds = &self.holds;
        self.pool.rebuild_after_peer_death(|i| holds.is_held(i));
        ReclaimStats {
            held: self.holds.held_buffers(),
            free: self.pool.stats().free,
            dropped_completions,
        }
    }
}

/// A session's pool as the place its flows reassemble messages ([`RecvBuffers`]). The
/// default has no pool (it allocates nothing): a flow read from a state snapshot has it
/// until the importer gives the flow its session's buffers.
#[derive(Debug, Default)]
pub struct SessionBuffers(Option<(Arc<Pool>, Arc<Holds>)>);

impl RecvBuffers for SessionBuffers {
    type Buf = RecvChain;

    fn alloc(&mut self, len: usize) -> Option<RecvChain> {
        let (pool, holds) = self.0.as_ref()?;
        RecvChain::alloc(pool, holds, len).ok()
    }
}

/// What a session is beyond its shared memory, for an engine's state snapshot
/// ([`crate::engine::upgrade`]): the rings' positions and the pool's contents are in the
/// shared memory itself, which the importer maps again.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SessionState {
    /// The pool's name in the snapshot ([`pony_express::pool::pool_key`]).
    pub pool_key: u64,
    /// Chains of accepted commands the engine holds, by head.
    held: Vec<(u32, ChainSnapshot)>,
    /// Completions waiting for ring space, encoded as on the ring.
    pending: Vec<Vec<u8>>,
    refused: u64,
    app_gone: bool,
}

impl EngineSession {
    /// The session's state (see [`SessionState`]).
    pub fn state(&self) -> SessionState {
        SessionState {
            pool_key: pony_express::pool::pool_key(&self.pool),
            held: self.held.iter().map(|(&k, c)| (k, c.clone())).collect(),
            pending: self.pending.iter().map(|c| c.encode()).collect(),
            refused: self.refused,
            app_gone: self.app_gone,
        }
    }

    /// The session's shared objects, given up to the engine that adopts the session
    /// (the engine holds no other reference that releases anything).
    pub fn into_handles(self) -> (ChannelEngineEnd, Arc<Pool>) {
        (self.chan, self.pool)
    }

    /// The session `st` describes, on its channel and pool. The engine's holds are
    /// counted afresh: the held chains' here, the flows' as the flows are adopted.
    pub fn adopt(chan: ChannelEngineEnd, pool: Arc<Pool>, st: SessionState) -> Result<Self, String> {
        let mut s = Self::new_shared(chan, pool);
        for (head, chain) in st.held {
            if chain.buffers().any(|b| b >= s.pool.shape().buffers) {
                return Err(format!("held chain {head} outside the pool"));
            }
            for b in chain.buffers() {
                s.holds.hold(b);
            }
            s.held.insert(head, chain);
        }
        for c in st.pending {
            s.pending
                .push_back(Completion::decode(&c).map_err(|e| format!("parked completion: {e}"))?);
        }
        s.refused = st.refused;
        s.app_gone = st.app_gone;
        Ok(s)
    }

    /// The holds of this session's pool (for adopting flows' pieces and chains).
    pub fn holds(&self) -> &Arc<Holds> {
        &self.holds
    }

    /// The pool, shared.
    pub fn pool_arc(&self) -> &Arc<Pool> {
        &self.pool
    }
}

fn dup(fd: &impl AsFd) -> Result<OwnedFd, SessionError> {
    fd.as_fd()
        .try_clone_to_owned()
        .map_err(|e| SessionError::Channel(ChannelError::Dup(e)))
}

#[cfg(test)]
mod tests;
