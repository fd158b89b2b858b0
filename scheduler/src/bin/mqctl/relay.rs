// SPDX-License-Identifier: GPL-2.0-only
//! How `mqctl run` waits for the command it starts: as its parent, passing on the signals
//! somebody sends `mqctl`, and exiting as the command did.
//!
//! `mqctl run` starts the command as a child rather than exec'ing it because of the class's
//! timer slack (`mq_class::CLASS_TIMER_SLACK_NS`). The kernel gives a task leaving an RT
//! policy its *default* slack back, and a task's default is the slack of the task that
//! created it. A command exec'd in place keeps the default of whoever started `mqctl` (the
//! fair class's 50 µs), so one that goes to SCHED_FIFO and back, as cyclictest does to check
//! its privileges, slept 50 µs late ever after while still in the class. Created by
//! `mqctl` after it joined, the command's default is the class's slack, and its threads and
//! processes inherit that.
//!
//! The relay is single-threaded: the signals are blocked and taken with `sigtimedwait()`
//! together with SIGCHLD, so no handler thread joins the class with `mqctl` and no exit is
//! missed between a check and a wait. `ctrlc` (the handler crate used elsewhere) cannot
//! say which signal arrived, and the relay passes on each as it came. The wait also ends
//! every [`RECHECK`]: in a process with other threads a SIGCHLD can go to one of them.

use std::io;
use std::mem::MaybeUninit;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};

/// Signals passed on to the command: those that ask a process to stop, hang up or report.
const RELAYED: [libc::c_int; 6] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// The longest the relay waits for a signal before it looks at the child again.
const RECHECK: libc::timespec = libc::timespec {
    tv_sec: 1,
    tv_nsec: 0,
};

/// The relayed signals and SIGCHLD, blocked in this process until it exits.
pub struct Relay {
    set: libc::sigset_t,
    /// The mask before [`Relay::block`], which the child gets back.
    old: libc::sigset_t,
}

impl Relay {
    /// Blocks the signals; call before starting the child, so that none sent in between is
    /// lost, and only while the process has one thread (the mask is that thread's).
    pub fn block() -> io::Result<Self> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        let mut old = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set; sigaddset and pthread_sigmask read it
        // after that, with signal numbers the C library defines; pthread_sigmask fills old.
        unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            let mut set = set.assume_init();
            for sig in RELAYED.iter().chain(&[libc::SIGCHLD]) {
                libc::sigaddset(&mut set, *sig);
            }
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, old.as_mut_ptr());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            Ok(Self {
                set,
                old: old.assume_init(),
            })
        }
    }

    /// Makes `cmd`'s process start with the mask this one had before [`Relay::block`]: a
    /// child inherits its parent's mask, and `Command` leaves it as it is.
    pub fn restore_mask_in(&self, cmd: &mut Command) {
        let old = self.old;
        // SAFETY: the closure runs in the child between fork and exec, where only
        // async-signal-safe calls are allowed; sigprocmask is one, and touches only `old`.
        unsafe {
            cmd.pre_exec(move || {
                if libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// Waits for `child` to exit, passing on to it each relayed signal this process gets.
    /// A signal the kernel sent (the terminal's Ctrl-C to its foreground process group) is
    /// not passed on: the child, in the same group, got it too.
    pub fn wait(&self, child: &mut Child) -> io::Result<ExitStatus> {
        let pid = libc::pid_t::try_from(child.id()).map_err(io::Error::other)?;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            let mut info = MaybeUninit::<libc::siginfo_t>::zeroed();
            // SAFETY: the set was initialised by block(); info is written by the kernel.
            let sig = unsafe { libc::sigtimedwait(&self.set, info.as_mut_ptr(), &RECHECK) };
            if sig < 0 {
                let err = io::Error::last_os_error();
                if matches!(err.raw_os_error(), Some(libc::EINTR | libc::EAGAIN)) {
                    continue;
                }
                return Err(err);
            }
            // SAFETY: sigtimedwait returned a signal, so it filled info in.
            let info = unsafe { info.assume_init() };
            if sig == libc::SIGCHLD || info.si_code == libc::SI_KERNEL {
                continue;
            }
            // SAFETY: kill has no memory effects; the child is not reaped until try_wait
            // sees it exit, so its pid cannot name another process.
            if unsafe { libc::kill(pid, sig) } != 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::ESRCH) {
                    return Err(err);
                }
            }
        }
    }
}

/// The exit code a shell reports for `status`: the command's own, or 128 plus the signal
/// that ended it.
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|sig| 128 + sig))
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn exit_code_is_the_commands_or_128_plus_its_signal() {
        let status = |cmd: &str| Command::new("sh").args(["-c", cmd]).status().unwrap();
        assert_eq!(exit_code(status("exit 3")), 3);
        assert_eq!(exit_code(status("kill -TERM $$")), 128 + libc::SIGTERM);
    }

    #[test]
    fn a_signal_sent_to_the_relay_reaches_the_child_and_its_exit_is_returned() {
        // The mask is this test thread's: the signal goes to this thread alone (the harness
        // runs others, which would die of a SIGTERM sent to the process).
        let relay = Relay::block().unwrap();
        let mut cmd = Command::new("sleep");
        relay.restore_mask_in(cmd.arg("30"));
        let mut child = cmd.spawn().unwrap();
        // SAFETY: a signal to this thread; it stays pending (blocked) until wait() takes it.
        assert_eq!(
            unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGTERM) },
            0
        );
        let status = relay.wait(&mut child).unwrap();
        assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    }
}
