// SPDX-License-Identifier: GPL-2.0-only
//! A trace instance of our own in tracefs (`instances/mq-trace-wakeups`): its own buffer,
//! clock and events, so the global trace and anyone else's tracing are untouched, and
//! removed when the guard drops.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

const TRACEFS: &str = "/sys/kernel/tracing";
const INSTANCE: &str = "mq-trace-wakeups";

/// A trace instance, recording `events` on `mono` (CLOCK_MONOTONIC) time once started.
#[derive(Debug)]
pub struct Instance {
    dir: PathBuf,
    /// The events of the list the kernel has.
    pub enabled: Vec<String>,
}

impl Instance {
    /// Creates the instance (mounting tracefs if nobody has), sized `buffer_kb` per CPU,
    /// with every event of `events` (`system/event`) the kernel has enabled.
    pub fn create(events: &[&str], buffer_kb: u64) -> Result<Self> {
        let root = Path::new(TRACEFS);
        if !root.join("instances").is_dir() {
            let status = std::process::Command::new("mount")
                .args(["-t", "tracefs", "nodev", TRACEFS])
                .status()
                .context("running mount")?;
            if !status.success() || !root.join("instances").is_dir() {
                bail!("tracefs is not available at {TRACEFS} (a kernel without ftrace?)");
            }
        }
        let dir = root.join("instances").join(INSTANCE);
        // One left by a run that was killed.
        if dir.exists() {
            fs::remove_dir(&dir).with_context(|| format!("removing the stale {}", dir.display()))?;
        }
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut instance = Self {
            dir,
            enabled: Vec::new(),
        };
        instance.write("tracing_on", "0")?;
        instance.write("trace_clock", "mono")?;
        instance.write("buffer_size_kb", &buffer_kb.to_string())?;
        for event in events {
            let enable = instance.dir.join("events").join(event).join("enable");
            if enable.exists() {
                fs::write(&enable, "1").with_context(|| format!("enabling {event}"))?;
                instance.enabled.push(event.to_string());
            }
        }
        if instance.enabled.is_empty() {
            bail!("none of the trace events exists in this kernel");
        }
        Ok(instance)
    }

    pub fn start(&self) -> Result<()> {
        self.write("trace", "")?;
        self.write("tracing_on", "1")
    }

    pub fn stop(&self) -> Result<()> {
        self.write("tracing_on", "0")
    }

    /// The buffer as text (read, not consumed).
    pub fn read(&self) -> Result<String> {
        fs::read_to_string(self.dir.join("trace")).context("reading the trace")
    }

    fn write(&self, file: &str, value: &str) -> Result<()> {
        fs::write(self.dir.join(file), value)
            .with_context(|| format!("writing {value:?} to {}", self.dir.join(file).display()))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.write("tracing_on", "0");
        // Events off first: if the removal fails, the instance at least stops recording.
        for event in &self.enabled {
            let _ = fs::write(self.dir.join("events").join(event).join("enable"), "0");
        }
        if let Err(e) = fs::remove_dir(&self.dir) {
            eprintln!("mq-trace-wakeups: warning: removing {}: {e}", self.dir.display());
        }
    }
}
