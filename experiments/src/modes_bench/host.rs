// SPDX-License-Identifier: GPL-2.0-only
//! The real `snap-host` as a child process: write its TOML configuration,
//! start it, wait for its `ready` line, talk to it over its control socket
//! as an app would, and stop it with SIGTERM, which must end it with status 0.
//!
//! Everything the benchmark knows about the host's control API is in this
//! file, so a change there is adapted here only.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use snap_engines::channel::ChannelAppEnd;
use snap_engines::control::SnapClient;
use snap_engines::Status;

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

/// The `snap-host` configuration for one group of echo engines.
pub fn config_toml(socket: &Path, group: &GroupLayout, microquanta: bool) -> String {
    let mut toml = String::new();
    // Paths go through Debug: a TOML basic string has the same escapes for
    // the characters a temporary path can hold.
    let _ = writeln!(toml, "control_socket = {:?}", socket.display().to_string());
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
    child: Option<Child>,
    client: SnapClient,
    dir: PathBuf,
}

impl SnapHost {
    /// Writes the configuration into a fresh directory under `/tmp`, starts
    /// `bin` on it and connects once it says it is ready.
    pub fn start(bin: &Path, group: &GroupLayout, microquanta: bool) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("mq-bench-modes-{}-{}", std::process::id(), group.mode));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let socket = dir.join("snap.sock");
        let config = dir.join("snap.toml");
        std::fs::write(&config, config_toml(&socket, group, microquanta))
            .with_context(|| format!("writing {}", config.display()))?;

        let mut child = Command::new(bin)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().context("snap-host stdout")?;
        // The reader forwards everything (the host's reports are worth seeing)
        // and keeps draining the pipe so the host never blocks on it.
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut ready = Some(ready_tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // Its final status as JSON is one long line nobody reads here.
                if !line.starts_with('{') {
                    eprintln!("  snap-host| {line}");
                }
                // `snap-host: ready, control socket at ...`
                if line.contains("ready") {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                }
            }
        });
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if ready_rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                break;
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{} exited before it was ready ({status}); config {}",
                    bin.display(),
                    config.display()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{} printed no `ready` line within {READY_TIMEOUT:?}",
                    bin.display()
                );
            }
        }
        let client = match SnapClient::connect(&socket) {
            Ok(c) => c,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(anyhow::Error::new(e).context(format!("connecting to {}", socket.display())));
            }
        };
        Ok(Self {
            child: Some(child),
            client,
            dir,
        })
    }

    /// The host's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
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
        let mut child = self.child.take().expect("child is present until stop");
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + EXIT_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("snap-host did not exit within {EXIT_TIMEOUT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if !status.success() {
            bail!("snap-host exited with {status} after SIGTERM (expected 0)");
        }
        Ok(())
    }
}

impl Drop for SnapHost {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
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
        let toml = config_toml(Path::new("/tmp/x/snap.sock"), &g, false);
        assert!(toml.contains("control_socket = \"/tmp/x/snap.sock\""), "{toml}");
        assert!(toml.contains("mode = \"dedicated\"\ncores = [1]"), "{toml}");
        assert!(
            toml.contains("name = \"echo0\"\nkind = \"echo\"\nwork_ns = 20000"),
            "{toml}"
        );
        g.mode = "spreading";
        g.cores.clear();
        assert!(!config_toml(Path::new("/s"), &g, true).contains("cores"));
    }

    #[test]
    fn the_host_accepts_every_generated_config() {
        let layout = super::super::Layout::new(4);
        for mode in super::super::MODES {
            let g = layout.group(mode, 2, 20_000).unwrap();
            let toml = config_toml(Path::new("/tmp/s.sock"), &g, true);
            let config = snap_engines::config::Config::parse_for_cpus(&toml, 4)
                .unwrap_or_else(|e| panic!("{mode}: {e}\n{toml}"));
            assert_eq!(config.group[0].engine.len(), 2);
        }
    }

    #[test]
    fn own_process_has_cpu_time() {
        assert!(process_cpu_ns(std::process::id()) > 0);
    }
}
