// SPDX-License-Identifier: GPL-2.0-only
//! CPU hogs as interference: `stress-ng --cpu N` in its own process group,
//! killed as a group when the guard drops so no worker outlives a test.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// A running `stress-ng --cpu` process group.
#[derive(Debug)]
pub struct Hogs {
    child: Child,
    workers: usize,
}

impl Hogs {
    /// Starts `workers` CPU-bound stress-ng workers; `pin_cpu` pins them all
    /// to one CPU (`taskset` semantics), else they spread over all CPUs.
    pub fn start(workers: usize, pin_cpu: Option<usize>) -> Result<Self> {
        let stress_ng = crate::locate::on_path("stress-ng")
            .context("stress-ng is not installed (cargo xtask deps installs it)")?;
        let mut cmd = Command::new(stress_ng);
        cmd.args(["--cpu", &workers.to_string(), "--cpu-method", "loop", "--quiet"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0);
        if let Some(cpu) = pin_cpu {
            cmd.args(["--taskset", &cpu.to_string()]);
        }
        let child = cmd.spawn().context("starting stress-ng")?;
        let hogs = Self { child, workers };
        // stress-ng forks its workers after start-up; wait until they exist.
        for _ in 0..200 {
            if hogs.worker_count() >= workers {
                return Ok(hogs);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        bail!("stress-ng did not start {workers} workers within 5 s")
    }

    /// Number of CPU workers asked for.
    pub fn workers(&self) -> usize {
        self.workers
    }

    fn group_processes(&self) -> Vec<procfs::process::Stat> {
        let pgid = self.child.id() as i32;
        procfs::process::all_processes()
            .map(|procs| {
                procs
                    .filter_map(|p| p.ok()?.stat().ok())
                    .filter(|s| s.pgrp == pgid)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn worker_count(&self) -> usize {
        self.group_processes().len().saturating_sub(1)
    }

    /// CPU time the whole group has used so far: the way to tell that hogs
    /// are still making progress (e.g. after the scheduler was killed).
    pub fn cpu_time(&self) -> Duration {
        let ticks: u64 = self.group_processes().iter().map(|s| s.utime + s.stime).sum();
        let hz = procfs::ticks_per_second();
        Duration::from_secs_f64(ticks as f64 / hz as f64)
    }

    /// CPU time each worker has run so far (`/proc/PID/schedstat`, in ns), by
    /// process id: how evenly the scheduler shares a CPU among them.
    pub fn worker_run_times(&self) -> BTreeMap<i32, Duration> {
        let parent = self.child.id() as i32;
        self.group_processes()
            .iter()
            .filter(|s| s.pid != parent)
            .filter_map(|s| {
                let st = procfs::process::Process::new(s.pid).ok()?.schedstat().ok()?;
                Some((s.pid, Duration::from_nanos(st.sum_exec_runtime)))
            })
            .collect()
    }

    /// Whether the stress-ng parent is still alive.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's process group.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}
