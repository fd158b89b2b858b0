// SPDX-License-Identifier: GPL-2.0-only
//! The two `snap-host` processes, each with one Pony engine (`pony0`, UDP NIC) in its own
//! network namespace (or both on loopback), and the upgrades of host A through the
//! `snapctl` binary.
//!
//! A process keeps the network namespace it was started in, so each host is spawned from a
//! thread inside its namespace ([`Veth::open_in`]); the host that an upgrade starts is the
//! old one's child and inherits it. `HostProcess` follows the upgrade (this process is the
//! child subreaper, so the successor is reparented here and reaped), and [`Hosts`] stops
//! whichever process serves host A after the upgrades, and host B, when dropped, before the
//! namespaces go.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use mq_report::upgrade::EngineMove;
use rustix::process::{kill_process, Pid, Signal};
use serde::Deserialize;
use snap_host::process::HostProcess;

use crate::pony_bench::netns::{Veth, ADDR};

/// How long a host may take to print its ready line, and `snapctl upgrade` to answer.
const START: Duration = Duration::from_secs(20);
const UPGRADE: Duration = Duration::from_secs(60);
/// Pony's UDP port on the veth path.
const PORT: u16 = 7100;

/// Host processes alive now (for the Ctrl-C handler, which must stop them before it
/// removes their namespaces).
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// SIGKILLs every live host (the Ctrl-C handler).
pub fn kill_all() {
    for pid in std::mem::take(&mut *LIVE.lock().unwrap_or_else(|e| e.into_inner())) {
        if let Some(pid) = Pid::from_raw(pid as i32) {
            let _ = kill_process(pid, Signal::KILL);
        }
    }
}

fn track(pid: u32, alive: bool) {
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    live.retain(|&p| p != pid);
    if alive {
        live.push(pid);
    }
}

/// The configuration of a host whose Pony engine binds `bind`.
fn config(bind: &str) -> String {
    format!(
        "microquanta = false\n\
         [[group]]\nname = \"pony\"\nmode = \"spreading\"\n\
         [[group.engine]]\nname = \"pony0\"\nkind = \"pony\"\n\
         [group.engine.options]\nnic = \"udp\"\nbind = \"{bind}\"\n"
    )
}

/// Host A (the upgraded one) and host B, and where their Pony engines listen.
pub struct Hosts {
    a: HostProcess,
    b: HostProcess,
    socket: [PathBuf; 2],
    addr: [String; 2],
    dir: PathBuf,
}

impl Hosts {
    /// Starts both hosts of `bin`, in `veth`'s namespaces or on loopback; their files go in
    /// `dir` (removed on drop).
    pub fn start(bin: &Path, veth: Option<&Veth>, dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let addr: [String; 2] = match veth {
            Some(_) => ADDR.map(|a| format!("{a}:{PORT}")),
            None => [free_port()?, free_port()?],
        };
        let start = |side: usize| -> Result<HostProcess> {
            let d = dir.join(["a", "b"][side]);
            std::fs::create_dir_all(&d)?;
            let cfg = config(&addr[side]);
            let spawn = || HostProcess::start(bin, &d, &cfg, START, None).map_err(anyhow::Error::from);
            let host = match veth {
                Some(v) => v.open_in(side, spawn),
                None => spawn(),
            }
            .with_context(|| format!("starting host {}", ["A", "B"][side]))?;
            track(host.pid(), true);
            Ok(host)
        };
        let a = start(0)?;
        let b = start(1)?;
        Ok(Self {
            socket: [a.socket().to_owned(), b.socket().to_owned()],
            a,
            b,
            addr,
            dir,
        })
    }

    /// Side `side`'s control socket (0: A, 1: B).
    pub fn socket(&self, side: usize) -> &Path {
        &self.socket[side]
    }

    /// Side `side`'s Pony address, `ip:port`.
    pub fn addr(&self, side: usize) -> &str {
        &self.addr[side]
    }

    /// Upgrades host A with `snapctl --socket A upgrade --json` (and `--binary` if given);
    /// returns snapctl's wall time and its report, or why it failed.
    pub fn upgrade(&mut self, snapctl: &Path, binary: Option<&Path>) -> (Duration, Result<SnapctlUpgrade>) {
        let t0 = Instant::now();
        let r = run_snapctl(snapctl, &self.socket[0], binary);
        let took = t0.elapsed();
        let r = r.and_then(|u| {
            let old = self.a.pid();
            if u.new_pid != old {
                // The old process exits once every engine has moved; wait for it, so that
                // the next upgrade starts from one host process.
                let status = self.a.upgraded(u.new_pid, Duration::from_secs(10));
                track(old, false);
                track(u.new_pid, true);
                status.with_context(|| format!("the old host (pid {old}) after the upgrade"))?;
            }
            Ok(u)
        });
        (took, r)
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for host in [&mut self.a, &mut self.b] {
            let pid = host.pid();
            host.kill();
            track(pid, false);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A UDP address on 127.0.0.1 the kernel just handed out.
fn free_port() -> Result<String> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .to_string())
}

/// What `snapctl upgrade --json` prints.
#[derive(Debug, Clone, Deserialize)]
pub struct SnapctlUpgrade {
    pub old_pid: u32,
    pub new_pid: u32,
    pub total_ms: f64,
    pub engines: Vec<EngineMove>,
}

fn run_snapctl(snapctl: &Path, socket: &Path, binary: Option<&Path>) -> Result<SnapctlUpgrade> {
    let mut cmd = Command::new(snapctl);
    cmd.arg("--socket").arg(socket).args(["upgrade", "--json"]);
    if let Some(b) = binary {
        cmd.arg("--binary").arg(b);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", snapctl.display()))?;
    let deadline = Instant::now() + UPGRADE;
    while child.try_wait()?.is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("snapctl upgrade did not answer within {UPGRADE:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "snapctl upgrade failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_str(stdout.trim()).map_err(|e| anyhow!("snapctl upgrade --json printed {stdout:?}: {e}"))
}
