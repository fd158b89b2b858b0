// SPDX-License-Identifier: GPL-2.0-only
//! The processes of the CPU-efficiency benchmark and where they run: the veth pair between
//! the apps' namespace (A) and the peer's (B), the echo peer (a `snap-host` with one
//! spreading Pony engine in B and the echo app), a `snap-host` in A with one Pony engine in
//! the mode under test, and the apps ([`super::app`]) started from this binary.
//!
//! Processes inherit the network namespace of the thread that starts them, so each is
//! started on a thread inside its side's namespace ([`Veth::open_in`]); control sockets
//! are paths, reachable from any namespace.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use snap_host::process::HostProcess;
use snap_ipc::control::SnapClient;

use super::app::{AppArgs, ENGINE, READY, ROLE_APP, ROLE_ECHO, TALLY};
use super::app::{Stack, Tally};
use crate::pony_bench::netns::{Veth, ADDR};

/// The apps' side and the peer's side of the veth pair.
pub const APPS: usize = 0;
pub const PEER: usize = 1;
/// The UDP port of the peer's Pony engine; Snap's host number `k` binds `PORT + 1 + k % 64`,
/// library-OS apps from `LINKED_PORT` on ([`linked_stack`]).
pub const PORT: u16 = 7000;
pub const LINKED_PORT: u16 = 7100;
/// The service the echo app listens on.
pub const SERVICE: u32 = 7;
/// How long a host may take to start and to stop.
const HOST_TIMEOUT: Duration = Duration::from_secs(30);

/// The processes this run started and has not seen end, for the Ctrl-C handler
/// ([`kill_children`]): it exits without running destructors.
static CHILDREN: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

fn track(pid: u32) {
    CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
}

fn untrack(pid: u32) {
    CHILDREN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|&p| p != pid);
}

/// Removes this run's directories under the temporary directory (hosts' configurations and
/// sockets, the apps' round-trip files): the Ctrl-C handler's job, destructors do it
/// otherwise.
pub fn remove_dirs() {
    let pid = std::process::id();
    let ours = |name: &str| {
        name.starts_with(&format!("mq-bench-efficiency-{pid}-"))
            || name == format!("mq-bench-efficiency-{pid}")
            || name == format!("mq-bench-idle-{pid}")
    };
    let tmp = std::env::temp_dir();
    for e in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
        if e.file_name().to_str().is_some_and(ours) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// SIGKILL to every process this run started that is still tracked (hosts, apps).
pub fn kill_children() {
    for pid in std::mem::take(&mut *CHILDREN.lock().unwrap_or_else(|e| e.into_inner())) {
        // SAFETY: kill has no memory preconditions; a pid that already exited and was
        // reaped is untracked first, so this never signals a stranger.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
}

/// The peer's Pony address, as apps open their flows to it.
pub fn peer_addr() -> String {
    format!("{}:{PORT}", ADDR[PEER])
}

/// The `snap-host` configuration of one Pony engine in `mode` on `cores` (empty: any),
/// its UDP NIC bound to `bind`.
pub fn host_config(mode: &str, cores: &[usize], bind: &str, microquanta: bool) -> String {
    let cores = if cores.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = cores.iter().map(usize::to_string).collect();
        format!("cores = [{}]\n", list.join(", "))
    };
    format!(
        "microquanta = {microquanta}\n\n[[group]]\nname = \"stack\"\nmode = \"{mode}\"\n{cores}\n\
         [[group.engine]]\nname = \"{ENGINE}\"\nkind = \"pony\"\n\
         [group.engine.options]\nnic = \"udp\"\nbind = \"{bind}\"\n"
    )
}

/// A `snap-host` with one Pony engine, started in one side's namespace.
pub struct Host {
    process: Option<HostProcess>,
    dir: PathBuf,
}

impl Host {
    pub fn start(veth: &Veth, side: usize, bin: &Path, tag: &str, config: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("mq-bench-efficiency-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let process = veth.open_in(side, || {
            HostProcess::start(bin, &dir, config, HOST_TIMEOUT, Some("  snap-host| ")).map_err(Into::into)
        })?;
        track(process.pid());
        // Ready means its control socket answers.
        SnapClient::connect(process.socket())
            .context("connecting to snap-host")?
            .status()
            .context("snap-host status")?;
        Ok(Self {
            process: Some(process),
            dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.process.as_ref().map_or(0, HostProcess::pid)
    }

    pub fn socket(&self) -> &Path {
        self.process.as_ref().expect("running until stop").socket()
    }

    /// SIGTERM; it must exit with status 0.
    pub fn stop(mut self) -> Result<()> {
        let status = self
            .process
            .take()
            .expect("running until stop")
            .terminate(HOST_TIMEOUT)?;
        if !status.success() {
            bail!("snap-host exited with {status} after SIGTERM (expected 0)");
        }
        Ok(())
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(p) = self.process.take() {
            let pid = p.pid();
            drop(p);
            untrack(pid);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// CPU time of thread `tid` of process `pid` (its schedstat, in ns); 0 once it is gone.
pub fn thread_cpu_ns(pid: u32, tid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A process started from this binary in one of the roles of [`super::app`].
pub struct RoleProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    what: String,
}

impl RoleProcess {
    fn spawn(veth: &Veth, side: usize, args: Vec<String>, what: String) -> Result<Self> {
        let exe = std::env::current_exe().context("finding this binary")?;
        let mut child = veth.open_in(side, || {
            Command::new(&exe)
                .args(&args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .with_context(|| format!("starting {what}"))
        })?;
        track(child.id());
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        Ok(Self {
            child,
            stdin,
            stdout,
            what,
        })
    }

    /// An app of `args` in the apps' namespace.
    pub fn app(veth: &Veth, args: &AppArgs, what: String) -> Result<Self> {
        let mut v = vec![ROLE_APP.to_string()];
        v.extend(args.to_args());
        Self::spawn(veth, APPS, v, what)
    }

    /// The echo app of the peer host at `socket`.
    pub fn echo(veth: &Veth, socket: &Path) -> Result<Self> {
        let args = vec![
            ROLE_ECHO.into(),
            socket.display().to_string(),
            SERVICE.to_string(),
        ];
        Self::spawn(veth, PEER, args, "the echo app".into())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first line starting with `prefix`, from after it; an error if the process ends
    /// its output first.
    fn line(&mut self, prefix: &str) -> Result<String> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line)? == 0 {
                let status = self.child.wait()?;
                untrack(self.child.id());
                bail!("{} ended ({status}) before saying {prefix:?}", self.what);
            }
            if let Some(rest) = line.trim_end().strip_prefix(prefix) {
                return Ok(rest.to_owned());
            }
        }
    }

    /// Waits for [`READY`].
    pub fn ready(&mut self) -> Result<()> {
        self.line(READY).map(drop)
    }

    /// Starts its clock.
    pub fn go(&mut self) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin closed")?;
        stdin.write_all(b"go\n")?;
        stdin.flush()?;
        Ok(())
    }

    /// Its tally and round trips, once it is done; it must exit with status 0.
    pub fn finish(mut self, rtts: &Path) -> Result<(Tally, Vec<u64>)> {
        let tally: Tally =
            serde_json::from_str(&self.line(TALLY)?).with_context(|| format!("{}'s tally", self.what))?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("{} exited with {status}", self.what);
        }
        let bytes = std::fs::read(rtts).with_context(|| format!("reading {}", rtts.display()))?;
        let _ = std::fs::remove_file(rtts);
        let rtts = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        Ok((tally, rtts))
    }

    /// Closes its stdin (the echo app's signal to stop) and waits for it.
    pub fn stop(mut self) -> Result<()> {
        drop(self.stdin.take());
        let status = self.child.wait()?;
        untrack(self.child.id());
        if !status.success() {
            bail!("{} exited with {status}", self.what);
        }
        Ok(())
    }
}

impl Drop for RoleProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        untrack(self.child.id());
    }
}

/// The echo peer: its host and its app, in the peer's namespace.
pub struct Peer {
    host: Host,
    app: Option<RoleProcess>,
}

impl Peer {
    pub fn start(veth: &Veth, snap_host: &Path, microquanta: bool) -> Result<Self> {
        let config = host_config("spreading", &[], &peer_addr(), microquanta);
        let host = Host::start(veth, PEER, snap_host, "peer", &config)?;
        let mut app = RoleProcess::echo(veth, host.socket())?;
        app.ready()?;
        Ok(Self { host, app: Some(app) })
    }

    /// CPU time of the peer's host and app processes.
    pub fn cpu_ns(&self) -> u64 {
        let app = self
            .app
            .as_ref()
            .map_or(0, |a| crate::modes_bench::host::process_cpu_ns(a.pid()));
        crate::modes_bench::host::process_cpu_ns(self.host.pid()) + app
    }

    pub fn stop(mut self) -> Result<()> {
        if let Some(app) = self.app.take() {
            app.stop()?;
        }
        self.host.stop()
    }
}

/// What app `i` of the library-OS design binds in point number `point`: its own UDP port on
/// the apps' side, a different one from point to point (the peer never sees a new flow from
/// an address whose old flow it may still hold).
pub fn linked_stack(point: usize, i: usize) -> Stack {
    let slot = (point % 32) * 64 + i % 64;
    Stack::Linked {
        bind: format!("{}:{}", ADDR[APPS], LINKED_PORT as usize + slot),
    }
}

/// Where Snap's host number `k` of the run binds its engine on the apps' side: a new port
/// for each host, so that the peer never sees a new host's flows from the address of an
/// old host's flows with the same ids (flow ids start again in every host process).
pub fn host_bind(k: usize) -> String {
    format!("{}:{}", ADDR[APPS], PORT as usize + 1 + k % 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linked_apps_of_neighbouring_points_bind_different_ports() {
        let bind = |p, i| match linked_stack(p, i) {
            Stack::Linked { bind } => bind,
            other => panic!("{other:?}"),
        };
        assert_eq!(bind(0, 0), "10.78.0.1:7100");
        assert_eq!(bind(0, 7), "10.78.0.1:7107");
        assert_eq!(bind(1, 0), "10.78.0.1:7164");
        assert_ne!(bind(1, 0), bind(2, 0));
        assert_eq!(host_bind(0), "10.78.0.1:7001");
        assert_eq!(host_bind(63), "10.78.0.1:7064");
        assert_eq!(host_bind(64), host_bind(0));
        assert_eq!(bind(32, 3), bind(0, 3));
    }

    #[test]
    fn the_host_accepts_every_generated_config() {
        for (mode, cores) in [
            ("dedicated", vec![1]),
            ("spreading", vec![]),
            ("compacting", vec![0, 1]),
        ] {
            let toml = host_config(mode, &cores, &host_bind(0), false);
            let config =
                snap_host::config::Config::parse(&toml, 2).unwrap_or_else(|e| panic!("{mode}: {e}\n{toml}"));
            assert_eq!(config.group[0].engine.len(), 1, "{toml}");
        }
        assert!(!host_config("spreading", &[], &peer_addr(), true).contains("cores"));
    }
}
