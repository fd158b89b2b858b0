//! Doorbells: how an app (or an upstream engine) wakes a blocked engine, and why a polled
//! engine does not pay for them.
//!
//! A doorbell is an eventfd plus one word of shared memory, the *armed* flag. The engine's
//! thread arms its doorbells just before it blocks and disarms them when it wakes; a producer
//! rings (writes the eventfd, a system call) only when it finds the doorbell armed. While the
//! engine is being run or spin-polled, the producer's cost is one load. This is the
//! notification suppression of Snap and TAS (and of virtio's `EVENT_IDX`).
//!
//! The race (producer pushes just as the engine decides to block) is closed Dekker-style:
//!
//! ```text
//!   producer                              engine thread
//!   push (Release store of its index)     armed = 1
//!   fence(SeqCst)                         fence(SeqCst)
//!   if armed.swap(0) == 1 { write efd }   if ring not empty { disarm; run } else { block }
//! ```
//!
//! With both fences, at least one side sees the other's store: either the producer sees the
//! flag and rings, or the engine sees the message and does not block. The flag lives in its
//! own small memfd so that both descriptors can be handed to another process
//! ([`Doorbell::fds`] / [`Ringer::from_fds`]).
//!
//! The page carries two more words for the doorbell's owner:
//!
//! - *space wanted*: the owner produces into a ring whose consumer holds this doorbell's
//!   [`Ringer`] (an engine pushing responses to an app, a relay pushing requests to the
//!   next engine). When the ring is full, the owner stops producing and sets the flag
//!   ([`Doorbell::want_space`]); the consumer, after it frees slots, calls
//!   [`Ringer::ring_for_space`], which writes the eventfd only if the flag is set. It is the
//!   same Dekker pair as above with the roles swapped:
//!
//!   ```text
//!     consumer (frees slots)                owner (producer, ring full)
//!     release (Release store of its index)  want = 1
//!     fence(SeqCst)                         fence(SeqCst)
//!     if want.swap(0) == 1 { write efd }    if ring still full { park } else { want = 0; go on }
//!   ```
//!
//!   Either the consumer sees the flag and rings, or the owner sees the free slot and does
//!   not park: no lost wakeup. The ring clears the flag, and a consumer may ring after its
//!   pops for slots the owner has already filled again (it frees, the owner produces into
//!   the room and then parks, the consumer rings): an owner woken to a ring still full
//!   sets the flag and checks again, exactly as when it parked, or the consumer's next
//!   pops find no flag.
//! - *closed*: a reason code the owner stores when it quarantines the channel
//!   ([`Doorbell::close`]), for the peer to read with [`Ringer::closed`]. The peer keeps its
//!   own mapping of the page, so it can read the reason after the owner dropped its end.
//!
//! The peer can write every word of the page. None of them is trusted: a peer that sets or
//! clears a flag only changes when *it* gets rung or woken.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use rustix::event::{eventfd, EventfdFlags};

use crate::shm::{SharedMem, ShmError};

const ARMED: u32 = 1;
const DISARMED: u32 = 0;
const MAGIC: u32 = 0x5344_4231; // "SDB1"

/// The shared page: written by both sides, so every field is atomic.
#[repr(C)]
struct Page {
    magic: AtomicU32,
    armed: AtomicU32,
    /// Times a producer wrote the eventfd.
    rung: AtomicU64,
    /// Times a producer skipped the write because the engine was not armed.
    suppressed: AtomicU64,
    /// The owner waits for its peer to free slots in a ring (see the module documentation).
    want_space: AtomicU32,
    /// Why the owner closed the channel; 0 while it is open.
    closed: AtomicU32,
}

const PAGE_LEN: usize = 4096;

/// Why a doorbell could not be made or attached.
#[derive(Debug, thiserror::Error)]
pub enum DoorbellError {
    /// The shared page could not be created or mapped.
    #[error("doorbell page: {0}")]
    Shm(#[from] ShmError),
    /// The eventfd could not be created.
    #[error("eventfd: {0}")]
    Eventfd(#[source] rustix::io::Errno),
    /// The memory handed over is not a doorbell page.
    #[error("not a doorbell page (bad magic or size)")]
    NotADoorbell,
    /// The descriptor handed over as the eventfd is something else: writing 8 bytes to a
    /// pipe or a file would "work" and never wake anyone, which is much harder to debug
    /// than an error at attach.
    #[error("descriptor is not an eventfd ({found})")]
    NotAnEventfd {
        /// What `/proc/self/fd` says it is.
        found: String,
    },
}

struct Inner {
    mem: SharedMem,
    eventfd: OwnedFd,
}

impl Inner {
    fn page(&self) -> &Page {
        // SAFETY: the region is at least PAGE_LEN bytes (checked at create/attach), page
        // aligned, and every field of `Page` is an atomic, so shared access is sound.
        unsafe { &*self.mem.as_ptr().cast::<Page>() }
    }

    fn check(mem: SharedMem, eventfd: OwnedFd) -> Result<Self, DoorbellError> {
        if mem.len() < std::mem::size_of::<Page>() {
            return Err(DoorbellError::NotADoorbell);
        }
        let inner = Self { mem, eventfd };
        if inner.page().magic.load(Ordering::Relaxed) != MAGIC {
            return Err(DoorbellError::NotADoorbell);
        }
        Ok(inner)
    }
}

/// The engine's end of a doorbell. Cheap to clone (the runtime keeps a clone to arm it).
#[derive(Clone)]
pub struct Doorbell {
    inner: Arc<Inner>,
}

impl Doorbell {
    /// A new, disarmed doorbell.
    pub fn new() -> Result<Self, DoorbellError> {
        let mem = SharedMem::create("snap-doorbell", PAGE_LEN)?;
        let efd =
            eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).map_err(DoorbellError::Eventfd)?;
        // SAFETY: fresh, zeroed, page-sized mapping; see Inner::page.
        unsafe { &*mem.as_ptr().cast::<Page>() }
            .magic
            .store(MAGIC, Ordering::Relaxed);
        Ok(Self {
            inner: Arc::new(Inner::check(mem, efd)?),
        })
    }

    /// Arms the doorbell: from now on a producer rings. Follow with a check of the engine's
    /// input (the fence is included) and disarm again if work is already there.
    pub fn arm(&self) {
        self.inner.page().armed.store(ARMED, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// Disarms: producers stop ringing (the engine is about to run or poll).
    pub fn disarm(&self) {
        self.inner.page().armed.store(DISARMED, Ordering::Relaxed);
    }

    /// Whether the doorbell is armed (for tests and status).
    pub fn is_armed(&self) -> bool {
        self.inner.page().armed.load(Ordering::Relaxed) == ARMED
    }

    /// Flags that the owner waits for free slots in a ring the peer consumes (the peer
    /// then rings with [`Ringer::ring_for_space`]). The fence is included: re-check the ring
    /// afterwards and [`Self::cancel_want_space`] if it has room already.
    pub fn want_space(&self) {
        self.inner.page().want_space.store(ARMED, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// Clears the space-wanted flag (the ring has room, or the owner stopped waiting).
    pub fn cancel_want_space(&self) {
        self.inner.page().want_space.store(DISARMED, Ordering::Relaxed);
    }

    /// Whether the space-wanted flag is set (for tests and status).
    pub fn wants_space(&self) -> bool {
        self.inner.page().want_space.load(Ordering::Relaxed) == ARMED
    }

    /// Records why the owner closed the channel (a non-zero code), for the peer to read
    /// with [`Ringer::closed`].
    pub fn close(&self, reason: u32) {
        self.inner.page().closed.store(reason, Ordering::Release);
        // Ordered before whatever wakeup the caller sends next (see Ringer::ring's fence).
        fence(Ordering::SeqCst);
    }

    /// Consumes pending rings; returns how many there were (0 if none).
    pub fn drain(&self) -> u64 {
        let mut buf = [0u8; 8];
        match rustix::io::read(&self.inner.eventfd, &mut buf) {
            Ok(8) => u64::from_ne_bytes(buf),
            _ => 0,
        }
    }

    /// The eventfd to wait on.
    pub fn eventfd(&self) -> BorrowedFd<'_> {
        self.inner.eventfd.as_fd()
    }

    /// `(rung, suppressed)` as counted by producers. Informational only: a producer in
    /// another process writes these.
    pub fn counters(&self) -> (u64, u64) {
        let page = self.inner.page();
        (
            page.rung.load(Ordering::Relaxed),
            page.suppressed.load(Ordering::Relaxed),
        )
    }

    /// The descriptors (page memfd, eventfd) to hand to a producer in another process.
    pub fn fds(&self) -> (BorrowedFd<'_>, BorrowedFd<'_>) {
        (self.inner.mem.as_fd(), self.inner.eventfd.as_fd())
    }

    /// Takes over a doorbell whose descriptors came from [`Doorbell::fds`] of its owner in
    /// another process (a host upgrade: the new host becomes the owner). Its state (armed,
    /// counters, close reason) is kept where it stands. Refuses memory that is not a
    /// doorbell page and a descriptor that is not an eventfd.
    pub fn from_fds(page: OwnedFd, eventfd: OwnedFd) -> Result<Self, DoorbellError> {
        check_eventfd(&eventfd)?;
        let mem = SharedMem::from_fd(page)?;
        Ok(Self {
            inner: Arc::new(Inner::check(mem, eventfd)?),
        })
    }

    /// A producer end in this process.
    pub fn ringer(&self) -> Ringer {
        Ringer {
            inner: self.inner.clone(),
        }
    }
}

impl fmt::Debug for Doorbell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Doorbell")
            .field("eventfd", &self.inner.eventfd)
            .field("armed", &self.is_armed())
            .finish()
    }
}

/// Refuses a descriptor that `/proc/self/fd` does not show as an eventfd. Without /proc
/// nothing can be checked; the page's magic is still validated.
fn check_eventfd(fd: &OwnedFd) -> Result<(), DoorbellError> {
    use std::os::fd::AsRawFd;
    match std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())) {
        Ok(target) if target.as_os_str() != "anon_inode:[eventfd]" => Err(DoorbellError::NotAnEventfd {
            found: target.display().to_string(),
        }),
        _ => Ok(()),
    }
}

/// The producer's end of a doorbell.
#[derive(Clone)]
pub struct Ringer {
    inner: Arc<Inner>,
}

impl Ringer {
    /// Attaches to a doorbell whose descriptors came from [`Doorbell::fds`] (e.g. over a Unix
    /// socket). Refuses memory that is not a doorbell page.
    pub fn from_fds(page: OwnedFd, eventfd: OwnedFd) -> Result<Self, DoorbellError> {
        check_eventfd(&eventfd)?;
        let mem = SharedMem::from_fd(page)?;
        Ok(Self {
            inner: Arc::new(Inner::check(mem, eventfd)?),
        })
    }

    /// Call after publishing work. Rings only if the engine is armed (blocked or about to
    /// block); returns whether it did. Only one of several quick pushes pays the write: the
    /// first one disarms.
    pub fn ring(&self) -> bool {
        fence(Ordering::SeqCst);
        let page = self.inner.page();
        if page.armed.load(Ordering::Relaxed) == ARMED
            && page.armed.swap(DISARMED, Ordering::Relaxed) == ARMED
        {
            page.rung.fetch_add(1, Ordering::Relaxed);
            // A full counter (2^64 - 2 unread rings) is the only failure; the engine is awake
            // then anyway.
            let _ = rustix::io::write(&self.inner.eventfd, &1u64.to_ne_bytes());
            true
        } else {
            page.suppressed.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Call after freeing slots in a ring the doorbell's owner produces into: rings only if
    /// the owner flagged that it waits for space ([`Doorbell::want_space`]); returns
    /// whether it did. One load after the fence when nobody waits.
    pub fn ring_for_space(&self) -> bool {
        fence(Ordering::SeqCst);
        let page = self.inner.page();
        if page.want_space.load(Ordering::Relaxed) == ARMED
            && page.want_space.swap(DISARMED, Ordering::Relaxed) == ARMED
        {
            page.rung.fetch_add(1, Ordering::Relaxed);
            let _ = rustix::io::write(&self.inner.eventfd, &1u64.to_ne_bytes());
            true
        } else {
            false
        }
    }

    /// The descriptors (page memfd, eventfd), to hand this producer end to another process.
    pub fn fds(&self) -> (BorrowedFd<'_>, BorrowedFd<'_>) {
        (self.inner.mem.as_fd(), self.inner.eventfd.as_fd())
    }

    /// The owner's close reason code, 0 while the channel is open.
    pub fn closed(&self) -> u32 {
        self.inner.page().closed.load(Ordering::Acquire)
    }
}

impl fmt::Debug for Ringer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ringer")
            .field("eventfd", &self.inner.eventfd)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn dup(fd: BorrowedFd<'_>) -> OwnedFd {
        fd.try_clone_to_owned().unwrap()
    }

    #[test]
    fn suppressed_while_disarmed_rung_once_when_armed() {
        let bell = Doorbell::new().unwrap();
        let ringer = bell.ringer();
        assert!(!ringer.ring());
        assert_eq!(bell.drain(), 0);
        bell.arm();
        assert!(ringer.ring());
        // The first ring disarmed it: the second is free.
        assert!(!ringer.ring());
        assert_eq!(bell.drain(), 1);
        assert_eq!(bell.counters(), (1, 2));
    }

    #[test]
    fn space_ring_only_while_wanted_and_once() {
        let bell = Doorbell::new().unwrap();
        let ringer = bell.ringer();
        // Nobody waits: freeing slots costs no write.
        assert!(!ringer.ring_for_space());
        assert_eq!(bell.drain(), 0);
        bell.want_space();
        assert!(bell.wants_space());
        // Independent of the armed flag: the owner may be running, not blocked.
        assert!(!bell.is_armed());
        assert!(ringer.ring_for_space());
        assert!(!ringer.ring_for_space());
        assert!(!bell.wants_space());
        assert_eq!(bell.drain(), 1);
        bell.want_space();
        bell.cancel_want_space();
        assert!(!ringer.ring_for_space());
    }

    #[test]
    fn close_reason_survives_the_owner() {
        let bell = Doorbell::new().unwrap();
        let (page, efd) = bell.fds();
        let ringer = Ringer::from_fds(dup(page), dup(efd)).unwrap();
        assert_eq!(ringer.closed(), 0);
        bell.close(3);
        drop(bell);
        assert_eq!(ringer.closed(), 3);
    }

    #[test]
    fn ringer_from_fds_shares_the_flag_and_eventfd() {
        let bell = Doorbell::new().unwrap();
        let (page, efd) = bell.fds();
        let ringer = Ringer::from_fds(dup(page), dup(efd)).unwrap();
        bell.arm();
        assert!(ringer.ring());
        assert_eq!(bell.drain(), 1);
        assert!(!bell.is_armed());
    }

    #[test]
    fn from_fds_refuses_other_memory() {
        let other = SharedMem::create("not-a-bell", 4096).unwrap();
        let efd = eventfd(0, EventfdFlags::CLOEXEC).unwrap();
        let err = Ringer::from_fds(dup(other.as_fd()), efd).unwrap_err();
        assert!(matches!(err, DoorbellError::NotADoorbell), "{err}");
        assert!(other.as_fd().as_raw_fd() >= 0);
    }

    #[test]
    fn from_fds_refuses_a_descriptor_that_is_not_an_eventfd() {
        let bell = Doorbell::new().unwrap();
        let (page, _) = bell.fds();
        let (pipe_read, _pipe_write) = rustix::pipe::pipe().unwrap();
        let err = Ringer::from_fds(dup(page), pipe_read).unwrap_err();
        assert!(
            matches!(&err, DoorbellError::NotAnEventfd { found } if found.starts_with("pipe:")),
            "{err}"
        );
    }
}
