// SPDX-License-Identifier: GPL-2.0-only
//! The real `scx_microquanta` binary as a child process: start it, wait until
//! the kernel reports it enabled, stop it with SIGINT (clean detach) or kill
//! it with SIGKILL (the kernel must then revert to the fair class alone).

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mq_class::{sysfs, SchedExtState};

/// A running scheduler process.
#[derive(Debug)]
pub struct SchedulerProcess {
    child: Option<Child>,
}

/// How long attaching may take: BPF verification is slow under TCG.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
const DETACH_TIMEOUT: Duration = Duration::from_secs(30);

impl SchedulerProcess {
    /// Starts `bin` with `args` and waits until the kernel runs it.
    pub fn start(bin: &Path, args: &[&str]) -> Result<Self> {
        Self::start_as(bin, args, "microquanta")
    }

    /// Starts `bin` with `args` and waits until the kernel runs a scheduler whose ops name
    /// starts with `ops` (`mqland` for `scx_mqland`).
    pub fn start_as(bin: &Path, args: &[&str], ops: &str) -> Result<Self> {
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut sched = Self { child: Some(child) };
        let deadline = Instant::now() + ATTACH_TIMEOUT;
        let loaded = || {
            sysfs::state() == SchedExtState::Enabled && sysfs::root_ops().is_some_and(|o| o.starts_with(ops))
        };
        while !loaded() {
            if let Some(status) = sched.child_mut().try_wait()? {
                bail!("{} exited before attaching: {status}", bin.display());
            }
            if Instant::now() > deadline {
                bail!("{} did not attach within {ATTACH_TIMEOUT:?}", bin.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(sched)
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("child is present until stop/kill")
    }

    /// The scheduler's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Whether the process is still alive.
    pub fn running(&mut self) -> bool {
        matches!(self.child_mut().try_wait(), Ok(None))
    }

    /// SIGINT, then waits for the process to exit and sched_ext to be
    /// disabled. Returns the process's exit status.
    pub fn stop(mut self) -> Result<ExitStatus> {
        self.signal(libc::SIGINT);
        let status = self.wait_exit()?;
        wait_for_state(SchedExtState::Disabled, DETACH_TIMEOUT)?;
        Ok(status)
    }

    /// SIGKILL: no clean detach; the kernel must unload the scheduler itself.
    pub fn kill(mut self) -> Result<ExitStatus> {
        self.signal(libc::SIGKILL);
        self.wait_exit()
    }

    fn signal(&mut self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.pid() as i32, sig) };
    }

    fn wait_exit(&mut self) -> Result<ExitStatus> {
        let deadline = Instant::now() + DETACH_TIMEOUT;
        loop {
            if let Some(status) = self.child_mut().try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("scx_microquanta did not exit within {DETACH_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SchedulerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let _ = child.wait();
        }
    }
}

/// Polls `/sys/kernel/sched_ext/state` until it reads `want`.
pub fn wait_for_state(want: SchedExtState, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let state = sysfs::state();
        if state == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("sched_ext state is {state:?}, expected {want:?} within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One scheduler at a time within a test process, whatever --test-threads says.
static EXCLUSIVE: Mutex<()> = Mutex::new(());

/// For tests that load the scheduler: panics with the reason if this host
/// cannot (no sched_ext, another scheduler loaded, not root), else returns a
/// guard that keeps other such tests of this process waiting.
pub fn exclusive_sched_ext_host() -> MutexGuard<'static, ()> {
    let guard = EXCLUSIVE.lock().unwrap_or_else(|e| e.into_inner());
    match sysfs::state() {
        SchedExtState::Unsupported => panic!(
            "kernel {} has no sched_ext: run these tests with `cargo xtask test`",
            sysfs::kernel_release()
        ),
        SchedExtState::Disabled => {}
        other => panic!("sched_ext is {other:?}: another scheduler is loaded"),
    }
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "loading a scheduler needs root");
    guard
}
