// SPDX-License-Identifier: GPL-2.0-only
//! What the loader's main loop sleeps on between two looks at the scheduler: Ctrl-C (an
//! eventfd that the handler signals), the scheduler's exit (the BPF `exit()` callback writes
//! to a ring buffer, whose descriptor then polls readable), or a timeout (the next
//! statistics report, and a bound should the exit notice be lost). The loop therefore wakes
//! when something happened rather than every few milliseconds: each of its wakeups is a
//! context switch on a CPU whose class threads it may delay.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustix::event::{eventfd, poll, EventfdFlags, PollFd, PollFlags, Timespec};

/// A shutdown request: a flag, and an eventfd that wakes [`Shutdown::wait`] at once.
pub struct Shutdown {
    requested: AtomicBool,
    wake: OwnedFd,
}

/// Why [`Shutdown::wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// Shutdown was requested.
    Shutdown,
    /// The exit descriptor became readable (or hung up): the scheduler exited.
    Exited,
    /// The timeout passed.
    Timeout,
}

impl Shutdown {
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            requested: AtomicBool::new(false),
            wake: eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?,
        })
    }

    /// Asks for shutdown; callable from any thread (the Ctrl-C handler's).
    pub fn request(&self) {
        self.requested.store(true, Ordering::Relaxed);
        // A full counter (2^64 - 2 requests) cannot happen; a failed write leaves the flag,
        // which the next timeout finds.
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
    }

    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::Relaxed)
    }

    /// The flag, for loops that only check it (`--monitor`).
    pub fn flag(&self) -> &AtomicBool {
        &self.requested
    }

    /// Sleeps until shutdown is requested, `exit` (if any) polls readable, or `timeout` passes.
    pub fn wait(&self, exit: Option<BorrowedFd<'_>>, timeout: Duration) -> io::Result<Woken> {
        if self.requested() {
            return Ok(Woken::Shutdown);
        }
        let timeout = Timespec {
            tv_sec: timeout.as_secs().try_into().unwrap_or(i64::MAX),
            tv_nsec: timeout.subsec_nanos().into(),
        };
        let mut fds = vec![PollFd::new(&self.wake, PollFlags::IN)];
        if let Some(exit) = exit {
            fds.push(PollFd::from_borrowed_fd(exit, PollFlags::IN));
        }
        match poll(&mut fds, Some(&timeout)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        if self.requested() {
            return Ok(Woken::Shutdown);
        }
        let exited = PollFlags::IN | PollFlags::HUP | PollFlags::ERR;
        if fds.get(1).is_some_and(|fd| fd.revents().intersects(exited)) {
            return Ok(Woken::Exited);
        }
        Ok(Woken::Timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn a_request_from_another_thread_ends_the_wait_at_once() {
        let shutdown = Arc::new(Shutdown::new().unwrap());
        let other = shutdown.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            other.request();
        });
        let start = Instant::now();
        let woken = shutdown.wait(None, Duration::from_secs(30)).unwrap();
        t.join().unwrap();
        assert_eq!(woken, Woken::Shutdown);
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
        // Once requested, every later wait returns at once.
        assert_eq!(
            shutdown.wait(None, Duration::from_secs(30)).unwrap(),
            Woken::Shutdown
        );
    }

    #[test]
    fn without_an_event_the_wait_times_out() {
        let shutdown = Shutdown::new().unwrap();
        let woken = shutdown.wait(None, Duration::from_millis(20)).unwrap();
        assert_eq!(woken, Woken::Timeout);
        assert!(!shutdown.requested());
    }

    #[test]
    fn a_readable_exit_descriptor_is_reported() {
        let (read, write) = rustix::pipe::pipe().unwrap();
        let shutdown = Shutdown::new().unwrap();
        let quiet = shutdown
            .wait(Some(read.as_fd()), Duration::from_millis(20))
            .unwrap();
        assert_eq!(quiet, Woken::Timeout);
        rustix::io::write(&write, b"x").unwrap();
        let woken = shutdown
            .wait(Some(read.as_fd()), Duration::from_secs(30))
            .unwrap();
        assert_eq!(woken, Woken::Exited);
    }
}
