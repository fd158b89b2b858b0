//! An app channel: one application's connection to one engine, made of two rings and two
//! doorbells that can cross the process boundary.
//!
//! ```text
//!        app process                                             Snap host (engine thread)
//!  ┌──────────────────┐   request ring (memfd, host-made)   ┌───────────────────────┐
//!  │ ChannelAppEnd    │ ──push──────────────────────────▶── │ ChannelEngineEnd      │
//!  │  Producer        │   engine doorbell (host-made) ring  │  Consumer             │
//!  │  Consumer        │ ◀─────────────────────────pop────── │  Producer             │
//!  │  Doorbell (own)  │   response ring (memfd, host-made)  │  Doorbell (engine's)  │
//!  └──────────────────┘ ◀── completion doorbell (app-made) ─│  Ringer (app's)       │
//! ```
//!
//! The host makes both rings and the engine's doorbell and hands their descriptors to the
//! app in a fixed order ([`HOST_FDS`]); the app maps them with [`ChannelAppEnd::from_fds`],
//! which validates every one (ring headers, doorbell magic, eventfd kind) and returns an
//! error, never panics, on anything else. The completion doorbell is optional and goes the
//! other way: an app that wants to block instead of spinning makes a [`Doorbell`] and sends
//! its two descriptors with its attach request ([`APP_FDS`]); the engine rings it after
//! pushing responses, but only while the app has armed it (so a polling app pays nothing).
//!
//! The rings sit in two memfds rather than one because a [`Ring`] owns its whole region;
//! the cost is two descriptors more, once per attach.
//!
//! Two signals travel in the engine doorbell's page besides the armed flag (see
//! [`crate::doorbell`]):
//!
//! - **Backpressure.** An engine whose response ring is full leaves the app's requests in
//!   the request ring and flags "space wanted"; the app end rings the engine doorbell after
//!   it pops a response while that flag is set ([`ChannelAppEnd::try_recv`] does it, an
//!   in-process consumer that reads in place calls [`ChannelAppEnd::space_freed`]). The same
//!   pair works the other way on the completion doorbell: a producer of requests that
//!   found the request ring full waits for the engine's [`ChannelEngineEnd::space_freed`].
//! - **Quarantine.** An engine that finds the channel broken (corrupt indices, a bad
//!   length, a malformed message) stores a [`CloseReason`] code in the page, rings the
//!   completion doorbell and drops its end. The app end reports it as
//!   [`ChannelError::Quarantined`] from [`ChannelAppEnd::recv_timeout`] once no response is
//!   left, and [`ChannelAppEnd::quarantined`] says it at any time.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};

use crate::doorbell::{Doorbell, DoorbellError, Ringer};
use crate::ring::{Consumer, PopError, Producer, PushError, Ring, RingError, RingProbe};
use crate::shm::{SharedMem, ShmError};

/// Descriptors the host sends to the app, in this order: request ring memfd, response ring
/// memfd, engine doorbell page memfd, engine doorbell eventfd.
pub const HOST_FDS: usize = 4;

/// Descriptors an engine end is made of without the app's completion doorbell
/// ([`ChannelEngineEnd::dup_fds`]): request ring memfd, response ring memfd, engine doorbell
/// page memfd, engine doorbell eventfd.
pub const ENGINE_END_FDS: usize = 4;

/// Descriptors an app that asked for completion notifications sends to the host, in this
/// order: completion doorbell page memfd, completion doorbell eventfd (from
/// [`Doorbell::fds`]).
pub const APP_FDS: usize = 2;

/// How often a polling [`ChannelAppEnd::recv_timeout`] checks that the host is still there.
const HOST_CHECK_EVERY: Duration = Duration::from_millis(20);

/// Why a channel could not be made, exported or rebuilt from descriptors.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// Wrong number of descriptors received.
    #[error("expected {expected} descriptors, got {got}")]
    FdCount {
        /// How many the protocol requires.
        expected: usize,
        /// How many arrived.
        got: usize,
    },
    /// A ring could not be created or is not a valid ring.
    #[error("{which} ring: {source}")]
    Ring {
        /// `request` or `response`.
        which: &'static str,
        /// What was wrong.
        source: RingError,
    },
    /// A region could not be created or mapped.
    #[error("{which}: {source}")]
    Shm {
        /// Which region.
        which: &'static str,
        /// What failed.
        source: ShmError,
    },
    /// A doorbell could not be made or is not a doorbell.
    #[error("{which} doorbell: {source}")]
    Doorbell {
        /// `engine` or `completion`.
        which: &'static str,
        /// What was wrong.
        source: DoorbellError,
    },
    /// A descriptor that must be an eventfd is something else.
    #[error("{which} doorbell: descriptor is not an eventfd ({found})")]
    NotAnEventfd {
        /// `engine` or `completion`.
        which: &'static str,
        /// What `/proc/self/fd` says it is.
        found: String,
    },
    /// Duplicating a descriptor for export failed.
    #[error("duplicating a descriptor: {0}")]
    Dup(#[source] std::io::Error),
    /// Waiting for a completion failed.
    #[error("waiting on the completion doorbell: {0}")]
    Wait(#[source] rustix::io::Errno),
    /// The response ring is corrupt.
    #[error("response ring: {0}")]
    Pop(#[from] PopError),
    /// The engine quarantined the channel and detached it: nothing more will come.
    #[error("the engine quarantined this channel: {0}")]
    Quarantined(CloseReason),
    /// The control connection the channel belongs to is closed: the host exited, crashed
    /// or was killed (or the app dropped its client, which detaches the channel).
    #[error("the Snap host is gone (control connection closed)")]
    HostGone,
}

/// Why an engine quarantined a channel: the code it leaves in the engine doorbell's page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// The request ring's indices are inconsistent (the producer index is ahead of what the
    /// ring can hold, or went back).
    CorruptIndices = 1,
    /// A slot's length prefix is larger than a slot.
    BadLength = 2,
    /// A message the engine cannot handle (too large for the answer, malformed).
    BadMessage = 3,
    /// The app broke the engine's protocol in some other way.
    Protocol = 4,
}

impl CloseReason {
    /// The code stored in shared memory.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The reason for a code read from shared memory; an unknown non-zero code (a peer
    /// scribbled the page) reads as [`Self::Protocol`], 0 as open.
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            0 => None,
            1 => Some(Self::CorruptIndices),
            2 => Some(Self::BadLength),
            3 => Some(Self::BadMessage),
            _ => Some(Self::Protocol),
        }
    }

    /// The reason a request ring read failed.
    pub fn of_pop(e: &PopError) -> Self {
        match e {
            PopError::Corrupt { .. } => Self::CorruptIndices,
            PopError::BadLength { .. } => Self::BadLength,
            PopError::BufferTooSmall { .. } => Self::BadMessage,
        }
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::CorruptIndices => "corrupt ring indices",
            Self::BadLength => "bad message length",
            Self::BadMessage => "malformed message",
            Self::Protocol => "protocol violation",
        })
    }
}

/// Shape of both rings of a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelShape {
    /// Messages in flight per direction (a power of two).
    pub capacity: u64,
    /// Bytes per slot, 4-byte length prefix included (a multiple of 8).
    pub slot_size: u32,
}

impl Default for ChannelShape {
    /// 256 messages of up to 2044 bytes each way: a few hundred KiB per channel.
    fn default() -> Self {
        Self {
            capacity: 256,
            slot_size: 2048,
        }
    }
}

/// A freshly made channel on the host: the engine's end plus the descriptors for the app.
#[derive(Debug)]
pub struct AppChannel {
    engine: ChannelEngineEnd,
    fds: Vec<OwnedFd>,
}

impl AppChannel {
    /// Makes both rings and the engine's doorbell. `completion` is the app's doorbell (built
    /// from [`APP_FDS`] with [`completion_ringer`]) if it asked to be notified.
    pub fn create(shape: ChannelShape, completion: Option<Ringer>) -> Result<Self, ChannelError> {
        let request = make_ring("snap-channel-req", shape, "request")?;
        let response = make_ring("snap-channel-resp", shape, "response")?;
        let doorbell = Doorbell::new().map_err(|source| ChannelError::Doorbell {
            which: "engine",
            source,
        })?;
        let (page, efd) = doorbell.fds();
        let fds = [
            request.shared_mem().as_fd(),
            response.shared_mem().as_fd(),
            page,
            efd,
        ]
        .into_iter()
        .map(dup)
        .collect::<Result<Vec<_>, _>>()?;
        let requests = request.into_consumer();
        let request_probe = requests.probe();
        let responses = response.into_producer();
        let response_probe = responses.probe();
        Ok(Self {
            engine: ChannelEngineEnd {
                requests,
                request_probe,
                responses,
                response_probe,
                capacity: shape.capacity,
                doorbell,
                completion,
            },
            fds,
        })
    }

    /// Makes a channel whose app end lives in this process (tests, in-process apps). Goes
    /// through the same descriptor export and validation as a remote app.
    pub fn pair(
        shape: ChannelShape,
        notify: bool,
    ) -> Result<(ChannelEngineEnd, ChannelAppEnd), ChannelError> {
        let completion = if notify {
            Some(Doorbell::new().map_err(|source| ChannelError::Doorbell {
                which: "completion",
                source,
            })?)
        } else {
            None
        };
        let ringer = match &completion {
            Some(bell) => {
                let (page, efd) = bell.fds();
                Some(completion_ringer(vec![dup(page)?, dup(efd)?])?)
            }
            None => None,
        };
        let (engine, fds) = Self::create(shape, ringer)?.into_parts();
        Ok((engine, ChannelAppEnd::from_fds(fds, completion)?))
    }

    /// The descriptors to send to the app, in [`HOST_FDS`] order.
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        self.fds.iter().map(|fd| fd.as_fd()).collect()
    }

    /// The engine's end and the app's descriptors (send them, then drop them).
    pub fn into_parts(self) -> (ChannelEngineEnd, Vec<OwnedFd>) {
        (self.engine, self.fds)
    }
}

fn dup(fd: BorrowedFd<'_>) -> Result<OwnedFd, ChannelError> {
    fd.try_clone_to_owned().map_err(ChannelError::Dup)
}

fn make_ring(name: &str, shape: ChannelShape, which: &'static str) -> Result<Ring, ChannelError> {
    let ring_err = |source| ChannelError::Ring { which, source };
    let len = Ring::required_len(shape.capacity, shape.slot_size).map_err(ring_err)?;
    let mem = SharedMem::create(name, len).map_err(|source| ChannelError::Shm { which, source })?;
    Ring::create(mem, shape.capacity, shape.slot_size).map_err(ring_err)
}

fn attach_ring(fd: OwnedFd, which: &'static str) -> Result<Ring, ChannelError> {
    let mem = SharedMem::from_fd(fd).map_err(|source| ChannelError::Shm { which, source })?;
    Ring::attach(mem).map_err(|source| ChannelError::Ring { which, source })
}

fn ringer(page: OwnedFd, efd: OwnedFd, which: &'static str) -> Result<Ringer, ChannelError> {
    Ringer::from_fds(page, efd).map_err(|source| match source {
        DoorbellError::NotAnEventfd { found } => ChannelError::NotAnEventfd { which, found },
        source => ChannelError::Doorbell { which, source },
    })
}

/// Builds the engine's ringer for an app's completion doorbell from the [`APP_FDS`]
/// descriptors it sent, validating them.
pub fn completion_ringer(fds: Vec<OwnedFd>) -> Result<Ringer, ChannelError> {
    let [page, efd]: [OwnedFd; APP_FDS] =
        fds.try_into().map_err(|v: Vec<OwnedFd>| ChannelError::FdCount {
            expected: APP_FDS,
            got: v.len(),
        })?;
    ringer(page, efd, "completion")
}

/// The engine's end of a channel: it pops requests and pushes responses.
#[derive(Debug)]
pub struct ChannelEngineEnd {
    requests: Consumer,
    request_probe: RingProbe,
    responses: Producer,
    response_probe: RingProbe,
    capacity: u64,
    doorbell: Doorbell,
    completion: Option<Ringer>,
}

impl ChannelEngineEnd {
    /// The request ring (app to engine).
    pub fn requests(&mut self) -> &mut Consumer {
        &mut self.requests
    }

    /// The response ring (engine to app).
    pub fn responses(&mut self) -> &mut Producer {
        &mut self.responses
    }

    /// Both rings at once, for code that copies from one to the other in place.
    pub fn rings(&mut self) -> (&mut Consumer, &mut Producer) {
        (&mut self.requests, &mut self.responses)
    }

    /// Fill level of the request ring, for `snap_runtime::WorkProbe`.
    pub fn request_probe(&self) -> RingProbe {
        self.request_probe.clone()
    }

    /// Whether a request is waiting.
    pub fn has_requests(&self) -> bool {
        !self.request_probe.is_empty()
    }

    /// Fill level of the response ring (e.g. to learn, without running the engine, when
    /// an app that stopped consuming frees a slot).
    pub fn response_probe(&self) -> RingProbe {
        self.response_probe.clone()
    }

    /// Whether the response ring has no free slot (the app is not consuming).
    pub fn responses_full(&self) -> bool {
        self.response_probe.len() >= self.capacity
    }

    /// The doorbell the app rings after pushing requests.
    pub fn doorbell(&self) -> &Doorbell {
        &self.doorbell
    }

    /// Whether the app asked for completion notifications.
    pub fn notifies(&self) -> bool {
        self.completion.is_some()
    }

    /// Call after pushing responses: wakes the app if it is blocked waiting for them.
    /// Returns whether a wakeup was written.
    pub fn notify_app(&self) -> bool {
        self.completion.as_ref().is_some_and(Ringer::ring)
    }

    /// Call after consuming requests: wakes a producer that waits for room in the request
    /// ring (it flagged "space wanted" on its completion doorbell). Returns whether a
    /// wakeup was written.
    pub fn space_freed(&self) -> bool {
        self.completion.as_ref().is_some_and(Ringer::ring_for_space)
    }

    /// The response ring is full: flags "space wanted" so that the app rings the engine
    /// doorbell when it pops, then checks again (Dekker, see [`crate::doorbell`]). Returns
    /// `true` if the ring is still full, so the engine may stop serving this channel until
    /// the doorbell rings; `false` (flag cleared) if room appeared meanwhile.
    pub fn wait_for_space(&self) -> bool {
        self.doorbell.want_space();
        if self.responses_full() {
            true
        } else {
            self.doorbell.cancel_want_space();
            false
        }
    }

    /// Stops waiting for space (the ring has room again, or the channel goes away).
    pub fn cancel_wait_for_space(&self) {
        self.doorbell.cancel_want_space();
    }

    /// Duplicates of the descriptors this end is made of, to hand it to another process (a
    /// host upgrade; see [`ChannelEngineEnd::from_fds`]): request ring memfd, response ring
    /// memfd, engine doorbell page memfd and eventfd, then the app's completion doorbell
    /// page memfd and eventfd if the app asked to be notified ([`ENGINE_END_FDS`] or
    /// [`ENGINE_END_FDS`] + [`APP_FDS`] in all).
    pub fn dup_fds(&self) -> Result<Vec<OwnedFd>, ChannelError> {
        dup_channel_fds(
            [
                self.requests.shared_mem().as_fd(),
                self.responses.shared_mem().as_fd(),
            ],
            self.doorbell.fds(),
            self.completion.as_ref().map(Ringer::fds),
        )
    }

    /// Takes over an engine end from the descriptors [`ChannelEngineEnd::dup_fds`] gave in
    /// another process: both rings where they stand (messages not yet popped are still
    /// there), the doorbell with its armed state. Every descriptor is validated as the app
    /// validates the host's (ring headers, sealed memfds, doorbell pages, eventfds).
    pub fn from_fds(fds: Vec<OwnedFd>) -> Result<Self, ChannelError> {
        let got = fds.len();
        if got != ENGINE_END_FDS && got != ENGINE_END_FDS + APP_FDS {
            return Err(ChannelError::FdCount {
                expected: ENGINE_END_FDS,
                got,
            });
        }
        let mut fds = fds.into_iter();
        let mut next = || fds.next().expect("counted above");
        let requests = attach_ring(next(), "request")?.into_consumer();
        let response = attach_ring(next(), "response")?;
        // What `responses_full` compares with: the response ring's own capacity.
        let capacity = response.capacity();
        let responses = response.into_producer();
        let doorbell = Doorbell::from_fds(next(), next()).map_err(|source| match source {
            DoorbellError::NotAnEventfd { found } => ChannelError::NotAnEventfd {
                which: "engine",
                found,
            },
            source => ChannelError::Doorbell {
                which: "engine",
                source,
            },
        })?;
        let completion = if got > ENGINE_END_FDS {
            Some(ringer(next(), next(), "completion")?)
        } else {
            None
        };
        Ok(Self {
            request_probe: requests.probe(),
            requests,
            response_probe: responses.probe(),
            responses,
            capacity,
            doorbell,
            completion,
        })
    }

    /// Tells the app that the engine quarantined this channel and why, and wakes it if it
    /// is blocked. The engine drops its end afterwards.
    pub fn quarantine(&self, reason: CloseReason) {
        self.doorbell.cancel_want_space();
        self.doorbell.close(reason.code());
        if let Some(bell) = &self.completion {
            bell.ring();
        }
    }
}

/// The app's end of a channel: it pushes requests and pops responses.
#[derive(Debug)]
pub struct ChannelAppEnd {
    requests: Producer,
    request_probe: RingProbe,
    request_capacity: u64,
    responses: Consumer,
    response_probe: RingProbe,
    engine_bell: Ringer,
    completion: Option<Doorbell>,
    /// The control connection the channel was attached on, watched for hang-up while
    /// blocking ([`Self::with_host`]).
    host: Option<OwnedFd>,
}

impl ChannelAppEnd {
    /// Rebuilds the app end from the [`HOST_FDS`] descriptors the host sent. `completion` is
    /// the doorbell whose descriptors the app sent with its attach request, if any.
    pub fn from_fds(fds: Vec<OwnedFd>, completion: Option<Doorbell>) -> Result<Self, ChannelError> {
        let [req, resp, page, efd]: [OwnedFd; HOST_FDS] =
            fds.try_into().map_err(|v: Vec<OwnedFd>| ChannelError::FdCount {
                expected: HOST_FDS,
                got: v.len(),
            })?;
        let request_ring = attach_ring(req, "request")?;
        let request_capacity = request_ring.capacity();
        let requests = request_ring.into_producer();
        let responses = attach_ring(resp, "response")?.into_consumer();
        let engine_bell = ringer(page, efd, "engine")?;
        Ok(Self {
            request_probe: requests.probe(),
            request_capacity,
            requests,
            response_probe: responses.probe(),
            responses,
            engine_bell,
            completion,
            host: None,
        })
    }

    /// Duplicates of the descriptors this end is made of, to hand it to another process (a
    /// host upgrade moving an engine that holds an app end, the relay): request ring memfd,
    /// response ring memfd, the engine doorbell's page memfd and eventfd ([`HOST_FDS`]),
    /// then the completion doorbell's page memfd and eventfd if it has one ([`APP_FDS`]).
    /// [`ChannelAppEnd::from_dup_fds`] rebuilds it.
    pub fn dup_fds(&self) -> Result<Vec<OwnedFd>, ChannelError> {
        dup_channel_fds(
            [
                self.requests.shared_mem().as_fd(),
                self.responses.shared_mem().as_fd(),
            ],
            self.engine_bell.fds(),
            self.completion.as_ref().map(Doorbell::fds),
        )
    }

    /// Takes over an app end from the descriptors [`ChannelAppEnd::dup_fds`] gave in
    /// another process, validated as [`ChannelAppEnd::from_fds`] validates the host's.
    pub fn from_dup_fds(mut fds: Vec<OwnedFd>) -> Result<Self, ChannelError> {
        let completion = match fds.len() {
            HOST_FDS => None,
            n if n == HOST_FDS + APP_FDS => {
                let efd = fds.pop().expect("counted");
                let page = fds.pop().expect("counted");
                Some(
                    Doorbell::from_fds(page, efd).map_err(|source| ChannelError::Doorbell {
                        which: "completion",
                        source,
                    })?,
                )
            }
            got => {
                return Err(ChannelError::FdCount {
                    expected: HOST_FDS,
                    got,
                })
            }
        };
        Self::from_fds(fds, completion)
    }

    /// Watches `control` (a duplicate of the control connection the channel was attached
    /// on) while blocking: [`Self::recv_timeout`] returns [`ChannelError::HostGone`] as soon
    /// as the host hangs it up, instead of waiting out its timeout.
    pub fn with_host(mut self, control: OwnedFd) -> Self {
        self.host = Some(control);
        self
    }

    /// Why the engine quarantined this channel, if it did.
    pub fn quarantined(&self) -> Option<CloseReason> {
        CloseReason::from_code(self.engine_bell.closed())
    }

    /// Call after consuming responses in place ([`Self::responses`]): wakes the engine if
    /// it waits for room in the response ring. [`Self::try_recv`] does it itself.
    pub fn space_freed(&self) -> bool {
        self.engine_bell.ring_for_space()
    }

    /// Whether the request ring has no free slot (the engine is not consuming).
    pub fn requests_full(&self) -> bool {
        self.request_probe.len() >= self.request_capacity
    }

    /// The request ring is full: flags "space wanted" on the completion doorbell so that the
    /// engine rings it when it consumes, then checks again (Dekker, see
    /// [`crate::doorbell`]). Returns `true` if the ring is still full (wait on the
    /// completion doorbell), `false` if room appeared meanwhile. Without a completion
    /// doorbell nothing can ring: returns whether the ring is full.
    pub fn wait_for_space(&self) -> bool {
        let Some(bell) = &self.completion else {
            return self.requests_full();
        };
        bell.want_space();
        if self.requests_full() {
            true
        } else {
            bell.cancel_want_space();
            false
        }
    }

    /// Whether the host hung up the watched control connection ([`Self::with_host`]).
    fn host_gone(&self) -> bool {
        let Some(host) = &self.host else { return false };
        let mut fds = [PollFd::new(host, PollFlags::empty())];
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        poll(&mut fds, Some(&zero)).is_ok() && fds[0].revents().intersects(PollFlags::HUP | PollFlags::ERR)
    }

    /// Queues a request without waking the engine; follow a batch with [`Self::kick`].
    pub fn push(&mut self, msg: &[u8]) -> Result<(), PushError> {
        self.requests.push(msg)
    }

    /// Wakes the engine if it is blocked (cheap when it is not).
    pub fn kick(&self) -> bool {
        self.engine_bell.ring()
    }

    /// Queues a request and wakes the engine if needed.
    pub fn send(&mut self, msg: &[u8]) -> Result<(), PushError> {
        self.requests.push(msg)?;
        self.engine_bell.ring();
        Ok(())
    }

    /// Pops a response if one is there (see [`Consumer::try_pop`]), and wakes the engine
    /// if it waits for the room this frees.
    pub fn try_recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, PopError> {
        let got = self.responses.try_pop(buf)?;
        if got.is_some() {
            self.engine_bell.ring_for_space();
        }
        Ok(got)
    }

    /// Pops a response, waiting up to `timeout` for one. Blocks on the completion doorbell
    /// if this end has one, and otherwise yields the CPU between checks. `Ok(None)` on
    /// timeout; [`ChannelError::Quarantined`] once the engine quarantined the channel and
    /// no response is left; [`ChannelError::HostGone`] as soon as the host is gone (only
    /// for an end attached through `SnapClient`, which watches the control connection).
    pub fn recv_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> Result<Option<usize>, ChannelError> {
        let deadline = Instant::now() + timeout;
        let mut host_checked = Instant::now();
        loop {
            if let Some(n) = self.try_recv(buf)? {
                return Ok(Some(n));
            }
            if let Some(reason) = self.quarantined() {
                return Err(ChannelError::Quarantined(reason));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            match &self.completion {
                Some(bell) => {
                    bell.arm();
                    // Dekker check (see crate::doorbell): the engine may have pushed (or
                    // closed the channel) just before we armed, in which case it did not
                    // ring.
                    if self.response_probe.is_empty() && self.engine_bell.closed() == 0 {
                        let efd = bell.eventfd();
                        // A hung-up control connection shows as HUP whatever we ask for.
                        let host = self.host.as_ref().map(|h| PollFd::new(h, PollFlags::empty()));
                        let mut fds: Vec<PollFd<'_>> = std::iter::once(PollFd::new(&efd, PollFlags::IN))
                            .chain(host)
                            .collect();
                        let ts = Timespec::try_from(left).unwrap_or(Timespec {
                            tv_sec: i64::MAX,
                            tv_nsec: 0,
                        });
                        match poll(&mut fds, Some(&ts)) {
                            Ok(_) | Err(rustix::io::Errno::INTR) => {}
                            Err(e) => return Err(ChannelError::Wait(e)),
                        }
                        if fds
                            .get(1)
                            .is_some_and(|h| h.revents().intersects(PollFlags::HUP | PollFlags::ERR))
                        {
                            bell.disarm();
                            return Err(ChannelError::HostGone);
                        }
                    }
                    bell.disarm();
                    bell.drain();
                }
                None => {
                    // Polling app: look at the control connection every 20 ms, not on
                    // every round (a system call each).
                    if host_checked.elapsed() >= HOST_CHECK_EVERY {
                        host_checked = Instant::now();
                        if self.host_gone() {
                            return Err(ChannelError::HostGone);
                        }
                    }
                    std::thread::yield_now();
                }
            }
        }
    }

    /// Largest request the engine accepts.
    pub fn max_message_len(&self) -> usize {
        self.requests.max_message_len()
    }

    /// The completion doorbell, if this end has one (to wait on it in an event loop: arm,
    /// check [`Self::has_responses`], then poll its eventfd).
    pub fn completion(&self) -> Option<&Doorbell> {
        self.completion.as_ref()
    }

    /// Whether a response is waiting.
    pub fn has_responses(&self) -> bool {
        !self.response_probe.is_empty()
    }

    /// The response ring, for an in-process consumer that reads in place
    /// ([`Consumer::peek`]) and may leave a message at the head (the relay engine).
    pub fn responses(&mut self) -> &mut Consumer {
        &mut self.responses
    }

    /// Fill level of the response ring, for an in-process consumer's
    /// `snap_runtime::WorkProbe`.
    pub fn response_probe(&self) -> RingProbe {
        self.response_probe.clone()
    }
}

/// Duplicates a channel's descriptors in the order both ends hand them over: the two ring
/// memfds, the engine doorbell's page and eventfd, then the completion doorbell's if any.
fn dup_channel_fds(
    rings: [BorrowedFd<'_>; 2],
    engine_bell: (BorrowedFd<'_>, BorrowedFd<'_>),
    completion: Option<(BorrowedFd<'_>, BorrowedFd<'_>)>,
) -> Result<Vec<OwnedFd>, ChannelError> {
    let mut fds = vec![
        dup(rings[0])?,
        dup(rings[1])?,
        dup(engine_bell.0)?,
        dup(engine_bell.1)?,
    ];
    if let Some((page, efd)) = completion {
        fds.push(dup(page)?);
        fds.push(dup(efd)?);
    }
    Ok(fds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::event::{eventfd, EventfdFlags};

    fn small() -> ChannelShape {
        ChannelShape {
            capacity: 8,
            slot_size: 64,
        }
    }

    fn host_fds() -> Vec<OwnedFd> {
        AppChannel::create(small(), None).unwrap().into_parts().1
    }

    #[test]
    fn pair_carries_requests_and_responses() {
        let (mut eng, mut app) = AppChannel::pair(small(), false).unwrap();
        app.send(b"ping").unwrap();
        let mut buf = [0u8; 64];
        let n = eng.requests().try_pop(&mut buf).unwrap().unwrap();
        eng.responses().push(&buf[..n]).unwrap();
        assert_eq!(app.try_recv(&mut buf).unwrap(), Some(4));
        assert_eq!(&buf[..4], b"ping");
        assert!(!eng.notifies());
        assert_eq!(
            app.recv_timeout(&mut buf, Duration::from_millis(5)).unwrap(),
            None
        );
    }

    /// An engine end rebuilt from its descriptors (a host upgrade) serves where the old one
    /// stopped: a request pushed before the move is popped after it, the app's completion
    /// doorbell still rings, and the old end's armed doorbell is seen armed.
    #[test]
    fn engine_end_moves_by_its_descriptors() {
        let (old, mut app) = AppChannel::pair(small(), true).unwrap();
        app.send(b"before").unwrap();
        old.doorbell().arm();
        let fds = old.dup_fds().unwrap();
        assert_eq!(fds.len(), ENGINE_END_FDS + APP_FDS);
        drop(old);
        let mut new = ChannelEngineEnd::from_fds(fds).unwrap();
        assert!(new.notifies());
        assert!(new.doorbell().is_armed());
        let mut buf = [0u8; 64];
        let n = new.requests().try_pop(&mut buf).unwrap().unwrap();
        assert_eq!(&buf[..n], b"before");
        new.responses().push(b"after").unwrap();
        assert!(new.notify_app() || !app.completion().unwrap().is_armed());
        assert_eq!(app.try_recv(&mut buf).unwrap(), Some(5));
        assert_eq!(&buf[..5], b"after");
    }

    #[test]
    fn engine_end_from_wrong_descriptors_is_an_error() {
        let (old, _app) = AppChannel::pair(small(), false).unwrap();
        let mut fds = old.dup_fds().unwrap();
        assert_eq!(fds.len(), ENGINE_END_FDS);
        fds.pop();
        assert!(matches!(
            ChannelEngineEnd::from_fds(fds),
            Err(ChannelError::FdCount { .. })
        ));
        let mut fds = old.dup_fds().unwrap();
        fds.swap(0, 3);
        assert!(ChannelEngineEnd::from_fds(fds).is_err());
    }

    /// An app end rebuilt from its descriptors (a host upgrade moving a relay): a response
    /// pushed before the move is received after it, a request sent after it reaches the
    /// engine end, and the engine still rings the moved completion doorbell.
    #[test]
    fn app_end_moves_by_its_descriptors() {
        let (mut eng, old) = AppChannel::pair(small(), true).unwrap();
        eng.responses().push(b"before").unwrap();
        let fds = old.dup_fds().unwrap();
        assert_eq!(fds.len(), HOST_FDS + APP_FDS);
        drop(old);
        let mut new = ChannelAppEnd::from_dup_fds(fds).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(new.try_recv(&mut buf).unwrap(), Some(6));
        assert_eq!(&buf[..6], b"before");
        new.send(b"after").unwrap();
        let n = eng.requests().try_pop(&mut buf).unwrap().unwrap();
        assert_eq!(&buf[..n], b"after");
        new.completion().unwrap().arm();
        eng.responses().push(b"x").unwrap();
        assert!(eng.notify_app(), "the engine rings the moved completion doorbell");
        let mut fds = new.dup_fds().unwrap();
        fds.pop();
        assert!(matches!(
            ChannelAppEnd::from_dup_fds(fds),
            Err(ChannelError::FdCount { .. })
        ));
    }

    /// The backpressure pair under real threads: an engine that blocks whenever the
    /// response ring is full, and an app that pops as fast as it can. A lost wakeup (the
    /// app popped between the engine's flag and its re-check, and neither saw the other)
    /// shows as the engine's wait timing out.
    #[test]
    fn space_wakeup_is_never_lost() {
        const N: u32 = 20_000;
        let shape = ChannelShape {
            capacity: 2,
            slot_size: 64,
        };
        let (mut eng, mut app) = AppChannel::pair(shape, false).unwrap();
        let consumer = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let mut next = 0u32;
            while next < N {
                match app.try_recv(&mut buf).unwrap() {
                    Some(4) => {
                        assert_eq!(u32::from_le_bytes(buf[..4].try_into().unwrap()), next);
                        next += 1;
                    }
                    _ => std::hint::spin_loop(),
                }
            }
        });
        let (mut i, mut blocked) = (0u32, 0u32);
        while i < N {
            if !eng.responses_full() {
                eng.responses().push(&i.to_le_bytes()).unwrap();
                i += 1;
                continue;
            }
            if eng.wait_for_space() {
                blocked += 1;
                let efd = eng.doorbell().eventfd();
                let mut fds = [PollFd::new(&efd, PollFlags::IN)];
                let five_s = Timespec {
                    tv_sec: 5,
                    tv_nsec: 0,
                };
                let ready = poll(&mut fds, Some(&five_s)).unwrap();
                assert_eq!(ready, 1, "lost wakeup at message {i}");
                eng.doorbell().drain();
            }
        }
        consumer.join().unwrap();
        // The test exercised the blocking path, not only the re-check.
        assert!(blocked > 0);
    }

    #[test]
    fn engine_doorbell_rings_only_when_armed() {
        let (eng, mut app) = AppChannel::pair(small(), false).unwrap();
        app.send(b"a").unwrap();
        assert_eq!(eng.doorbell().drain(), 0);
        eng.doorbell().arm();
        app.send(b"b").unwrap();
        assert_eq!(eng.doorbell().drain(), 1);
    }

    #[test]
    fn blocked_app_is_woken_by_completion() {
        let (mut eng, mut app) = AppChannel::pair(small(), true).unwrap();
        assert!(eng.notifies());
        let waiter = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let n = app.recv_timeout(&mut buf, Duration::from_secs(10)).unwrap();
            (n, buf[0])
        });
        // Whether or not the app armed yet, the response must reach it.
        std::thread::sleep(Duration::from_millis(20));
        eng.responses().push(b"z").unwrap();
        eng.notify_app();
        assert_eq!(waiter.join().unwrap(), (Some(1), b'z'));
    }

    #[test]
    fn wrong_fd_count_is_an_error() {
        let mut fds = host_fds();
        fds.pop();
        let err = ChannelAppEnd::from_fds(fds, None).unwrap_err();
        assert!(
            matches!(err, ChannelError::FdCount { expected: 4, got: 3 }),
            "{err}"
        );
        let err = completion_ringer(vec![]).unwrap_err();
        assert!(
            matches!(err, ChannelError::FdCount { expected: 2, got: 0 }),
            "{err}"
        );
    }

    #[test]
    fn swapped_fds_are_errors() {
        // Doorbell page where a ring should be: not a ring.
        let mut fds = host_fds();
        fds.swap(0, 2);
        let err = ChannelAppEnd::from_fds(fds, None).unwrap_err();
        assert!(
            matches!(err, ChannelError::Ring { which: "request", .. }),
            "{err}"
        );
        // A ring where the doorbell page should be.
        let mut fds = host_fds();
        fds.swap(1, 2);
        let err = ChannelAppEnd::from_fds(fds, None).unwrap_err();
        assert!(
            matches!(
                err,
                ChannelError::Ring {
                    which: "response",
                    ..
                }
            ),
            "{err}"
        );
        // A memfd where the eventfd should be.
        let mut fds = host_fds();
        fds.swap(0, 3);
        assert!(ChannelAppEnd::from_fds(fds, None).is_err());
    }

    #[test]
    fn non_eventfd_is_refused() {
        let mut fds = host_fds();
        let (r, _w) = std::io::pipe().unwrap();
        fds[3] = r.into();
        let err = ChannelAppEnd::from_fds(fds, None).unwrap_err();
        assert!(
            matches!(err, ChannelError::NotAnEventfd { which: "engine", .. }),
            "{err}"
        );
        // A real eventfd with a page that is not a doorbell.
        let not_bell = SharedMem::create("x", 4096).unwrap();
        let efd = eventfd(0, EventfdFlags::CLOEXEC).unwrap();
        let err = completion_ringer(vec![not_bell.as_fd().try_clone_to_owned().unwrap(), efd]).unwrap_err();
        assert!(
            matches!(
                err,
                ChannelError::Doorbell {
                    which: "completion",
                    ..
                }
            ),
            "{err}"
        );
    }
}
