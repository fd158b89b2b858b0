// SPDX-License-Identifier: GPL-2.0-only
//! Starting and stopping the scheduler of a setup: `scx_microquanta` at the accelerator's
//! latency bandwidth for the `microquanta` setup, or a policy experiment's binary
//! (`scx_microquanta`, `scx_mqland`), which is attached once sched_ext says it is enabled,
//! whatever its ops are called.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mq_class::SchedExtState;

use crate::scheduler_process::{wait_for_state, SchedulerProcess};

/// How long a scheduler may take to attach and to detach (a TCG guest is slow).
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);
const DETACH_TIMEOUT: Duration = Duration::from_secs(30);

/// How a setup's scheduler starts.
#[derive(Debug, Clone, Copy)]
pub enum Scheduler<'a> {
    /// scx_microquanta through [`crate::sched_bench::start_scheduler`].
    Microquanta(&'a Path),
    /// A policy binary by name (`--period-us`/`--runtime-us` at the latency bandwidth).
    Policy { name: &'a str, bin: &'a Path },
}

/// A scheduler this benchmark started.
pub enum Running {
    Microquanta(SchedulerProcess),
    Policy(PolicyProcess),
}

/// A policy binary's process; dropped without [`Running::stop`], it gets SIGINT.
pub struct PolicyProcess {
    name: String,
    child: Option<Child>,
}

impl<'a> Scheduler<'a> {
    pub fn microquanta(bin: &'a Path) -> Self {
        Self::Microquanta(bin)
    }

    pub fn policy(name: &'a str, bin: &'a Path) -> Self {
        Self::Policy { name, bin }
    }

    /// Starts it and waits until sched_ext runs it.
    pub fn start(&self) -> Result<Running> {
        let (period, runtime) = crate::accel::latency_bandwidth_us();
        match *self {
            Self::Microquanta(bin) => Ok(Running::Microquanta(
                crate::sched_bench::start_scheduler(bin, period, runtime)?.0,
            )),
            Self::Policy { name, bin } => {
                if mq_class::sysfs::state() != SchedExtState::Disabled {
                    bail!(
                        "sched_ext is {:?} before starting {name}",
                        mq_class::sysfs::state()
                    );
                }
                // Both binaries of the policy experiment take the class's bandwidth.
                let mut cmd = Command::new(bin);
                cmd.args([
                    "--period-us",
                    &period.to_string(),
                    "--runtime-us",
                    &runtime.to_string(),
                ]);
                let mut child = cmd
                    .stdin(Stdio::null())
                    .spawn()
                    .with_context(|| format!("starting {}", bin.display()))?;
                let deadline = Instant::now() + ATTACH_TIMEOUT;
                while mq_class::sysfs::state() != SchedExtState::Enabled {
                    if let Some(status) = child.try_wait()? {
                        bail!("{name} exited before attaching: {status}");
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        bail!("{name} did not attach within {ATTACH_TIMEOUT:?}");
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                std::thread::sleep(crate::settle::SETTLE);
                Ok(Running::Policy(PolicyProcess {
                    name: name.to_string(),
                    child: Some(child),
                }))
            }
        }
    }
}

impl Running {
    /// SIGINT, and it must exit successfully and detach.
    pub fn stop(self) -> Result<()> {
        match self {
            Running::Microquanta(s) => {
                let status = s.stop()?;
                if !status.success() {
                    bail!("scx_microquanta exited with {status}");
                }
                Ok(())
            }
            Running::Policy(mut p) => {
                let name = p.name.clone();
                let mut c = p.child.take().expect("present until stopped");
                // SAFETY: kill(2) on our own child.
                unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
                let deadline = Instant::now() + DETACH_TIMEOUT;
                let status = loop {
                    if let Some(status) = c.try_wait()? {
                        break status;
                    }
                    if Instant::now() > deadline {
                        let _ = c.kill();
                        let _ = c.wait();
                        bail!("{name} did not exit within {DETACH_TIMEOUT:?} of SIGINT");
                    }
                    std::thread::sleep(Duration::from_millis(20));
                };
                wait_for_state(SchedExtState::Disabled, DETACH_TIMEOUT)?;
                if !status.success() {
                    bail!("{name} exited with {status}");
                }
                Ok(())
            }
        }
    }
}

impl Drop for PolicyProcess {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
            let _ = c.wait();
        }
    }
}
