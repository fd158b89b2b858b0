// SPDX-License-Identifier: GPL-2.0-only
//! The real `snap-host` as a child process (started through
//! `snap_host::process`): its TOML configuration, our control connection to it
//! as an app would have, and a stop by SIGTERM, which must end it with status 0.
//!
//! Everything the benchmark knows about the host's control API is in this
//! file, so a change there is adapted here only.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use snap_host::process::HostProcess;
use snap_ipc::channel::ChannelAppEnd;
use snap_ipc::control::SnapClient;
use snap_ipc::control::Status;

/// How long the host may take to build its engines and open its socket
/// (threads joining the class and a TCG guest make this slow).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long it may take to stop its engines after SIGTERM.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// One engine group of the generated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupLayout {
    /// `dedicated`, `spreading` or `compacting`.
    pub mode: &'static str,
    /// CPUs the group may use; empty: any.
    pub cores: Vec<usize>,
    /// Names of its echo engines.
    pub engines: Vec<String>,
    /// Busy-wait per request in every engine.
    pub work_ns: u64,
}

/// The `snap-host` configuration for one group of echo engines (the control
/// socket is [`HostProcess`]'s to choose).
pub fn config_toml(group: &GroupLayout, microquanta: bool) -> String {
    let mut toml = String::new();
    let _ = writeln!(toml, "microquanta = {microquanta}");
    let _ = writeln!(toml, "\n[[group]]\nname = \"bench\"\nmode = \"{}\"", group.mode);
    if !group.cores.is_empty() {
        let cores: Vec<String> = group.cores.iter().map(usize::to_string).collect();
        let _ = writeln!(toml, "cores = [{}]", cores.join(", "));
    }
    for name in &group.engines {
        let _ = writeln!(
            toml,
            "\n[[group.engine]]\nname = \"{name}\"\nkind = \"echo\"\nwork_ns = {}",
            group.work_ns
        );
    }
    toml
}

/// A running `snap-host` and our control connection to it.
pub struct SnapHost {
    process: Option<HostProcess>,
    client: SnapClient,
    dir: PathBuf,
}

impl SnapHost {
    /// Writes the configuration into a fresh directory under `/tmp`, starts
    /// `bin` on it and connects once it says it is ready. The host's output is
    /// forwarded to stderr (its reports are worth seeing).
    pub fn start(bin: &Path, group: &GroupLayout, microquanta: bool) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("mq-bench-modes-{}-{}", std::process::id(), group.mode));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let process = HostProcess::start(
            bin,
            &dir,
            &config_toml(group, microquanta),
            READY_TIMEOUT,
            Some("  snap-host| "),
        )?;
        let client = SnapClient::connect(process.socket())
            .with_context(|| format!("connecting to {}", process.socket().display()))?;
        Ok(Self {
            process: Some(process),
            client,
            dir,
        })
    }

    /// The host's process id.
    pub fn pid(&self) -> u32 {
        self.process.as_ref().map_or(0, HostProcess::pid)
    }

    /// Attaches a polling app channel (no completion doorbell: the app spins).
    pub fn attach(&mut self, engine: &str) -> Result<ChannelAppEnd> {
        self.client
            .attach(engine, false)
            .with_context(|| format!("attaching to engine {engine}"))
    }

    /// The runtime part of the host's status report.
    pub fn status(&mut self) -> Result<Status> {
        Ok(self.client.status().context("snap-host status")?.runtime)
    }

    /// SIGTERM, then the exit status must be 0.
    pub fn stop(mut self) -> Result<()> {
        let process = self.process.take().expect("the process is present until stop");
        let status = process.terminate(EXIT_TIMEOUT)?;
        if !status.success() {
            bail!("snap-host exited with {status} after SIGTERM (expected 0)");
        }
        Ok(())
    }
}

impl Drop for SnapHost {
    fn drop(&mut self) {
        // The process (if still running) is killed by its own drop, before the directory goes.
        drop(self.process.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// CPU time of every thread of process `pid`, from each thread's schedstat
/// (ns, unlike the tick-granular `/proc/PID/stat`); threads that already
/// exited are not counted.
pub fn process_cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// CPU time of the host's engine threads, as its status reports it.
pub fn engine_cpu_ns(status: &Status) -> u64 {
    status
        .groups
        .iter()
        .flat_map(|g| &g.threads)
        .map(|t| t.cpu_time_ns)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lists_cores_only_when_restricted() {
        let mut g = GroupLayout {
            mode: "dedicated",
            cores: vec![1],
            engines: vec!["echo0".into()],
            work_ns: 20_000,
        };
        let toml = config_toml(&g, false);
        assert!(toml.contains("mode = \"dedicated\"\ncores = [1]"), "{toml}");
        assert!(
            toml.contains("name = \"echo0\"\nkind = \"echo\"\nwork_ns = 20000"),
            "{toml}"
        );
        g.mode = "spreading";
        g.cores.clear();
        assert!(!config_toml(&g, true).contains("cores"));
    }

    #[test]
    fn the_host_accepts_every_generated_config() {
        let layout = super::super::Layout::new(4);
        for mode in mq_report::modes::MODES {
            let g = layout.group(mode, 2, 20_000).unwrap();
            let toml = config_toml(&g, true);
            let config =
                snap_host::config::Config::parse(&toml, 4).unwrap_or_else(|e| panic!("{mode}: {e}\n{toml}"));
            assert_eq!(config.group[0].engine.len(), 2);
        }
    }

    #[test]
    fn own_process_has_cpu_time() {
        assert!(process_cpu_ns(std::process::id()) > 0);
    }
}
