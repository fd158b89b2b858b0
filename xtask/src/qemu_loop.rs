//! Host scheduling of qemu's main-loop thread under TCG.
//!
//! Under TCG every guest timer (the LAPIC's TSC deadline) is a qemu timer that fires on
//! qemu's main-loop thread, which then kicks the vCPU. On a 2-core host the two vCPU
//! threads of a busy guest keep both cores, so the main loop waits for a host time slice
//! and every guest timer fires up to a few ms late: the ~4 ms wakeup p99 floor every
//! policy showed (even SCHED_FIFO), and most of the "stalls" the probe counted. Running
//! that one thread SCHED_FIFO on the host lets it preempt the vCPU threads when a timer
//! is due; `SCHED_RESET_ON_FORK` keeps every thread it creates (the vCPUs among them) at
//! SCHED_OTHER. The host's RT throttling bounds what a busy main loop could take; where it
//! is off we leave the thread alone.
//!
//! The latency measurements ask for it (`cargo xtask demo`, `cargo xtask bench`, `cargo
//! xtask vm --main-loop-fifo`); `cargo xtask test` and `cargo xtask experiments` do not. One
//! 4-vCPU test boot with it died in early boot on an unexpected int3 while the kernel patched
//! its own text (`sched_clock: Marking stable`), which points at the emulator's handling of
//! cross-modifying code; until that is understood the pass/fail boots keep the default.

use std::fmt;

/// The SCHED_FIFO priority given to the main loop: low, above every SCHED_OTHER thread.
const PRIORITY: i32 = 10;

/// How qemu's main-loop thread is scheduled on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MainLoop {
    /// SCHED_FIFO at this priority.
    Fifo(i32),
    /// Left at SCHED_OTHER, and why.
    Other(String),
}

impl fmt::Display for MainLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MainLoop::Fifo(prio) => write!(f, "SCHED_FIFO {prio}"),
            MainLoop::Other(why) => write!(f, "SCHED_OTHER ({why})"),
        }
    }
}

impl MainLoop {
    /// The short form recorded in summaries: `fifo` or `other`.
    pub fn key(&self) -> &'static str {
        match self {
            MainLoop::Fifo(_) => "fifo",
            MainLoop::Other(_) => "other",
        }
    }
}

/// Makes the thread `pid` (qemu's main thread, whose id is the process id) SCHED_FIFO.
pub fn raise(pid: u32) -> MainLoop {
    match std::fs::read_to_string("/proc/sys/kernel/sched_rt_runtime_us") {
        Ok(v) if v.trim() == "-1" => return MainLoop::Other("RT throttling is off on this host".into()),
        Ok(_) => {}
        Err(e) => return MainLoop::Other(format!("cannot read RT throttling: {e}")),
    }
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return MainLoop::Other(format!("pid {pid} out of range"));
    };
    let param = libc::sched_param {
        sched_priority: PRIORITY,
    };
    // SAFETY: plain syscall on another thread; `param` outlives it.
    let rc = unsafe { libc::sched_setscheduler(pid, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param) };
    if rc == 0 {
        MainLoop::Fifo(PRIORITY)
    } else {
        MainLoop::Other(format!("sched_setscheduler: {}", std::io::Error::last_os_error()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_of_ours_gets_fifo_with_reset_on_fork_or_says_why_not() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let got = raise(child.id());
        // SAFETY: plain syscall reading another thread's policy.
        let policy = unsafe { libc::sched_getscheduler(child.id() as libc::pid_t) };
        let _ = child.kill();
        let _ = child.wait();
        match got {
            MainLoop::Fifo(prio) => {
                assert_eq!(prio, PRIORITY);
                assert_eq!(policy, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK);
            }
            // Not root, or RT throttling off: the thread is left as it was, and we say why.
            MainLoop::Other(why) => {
                assert!(!why.is_empty());
                assert_eq!(policy, libc::SCHED_OTHER);
            }
        }
    }

    #[test]
    fn display_names_the_policy() {
        assert_eq!(MainLoop::Fifo(10).to_string(), "SCHED_FIFO 10");
        assert_eq!(MainLoop::Fifo(10).key(), "fifo");
        assert!(MainLoop::Other("x".into()).to_string().contains("(x)"));
        assert_eq!(MainLoop::Other("x".into()).key(), "other");
    }
}
