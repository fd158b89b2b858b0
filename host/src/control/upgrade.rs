//! The running (old) host's side of an upgrade (`snapctl upgrade`; docs/UPGRADE.md): it
//! starts the new host process with one end of a socketpair (`--takeover-fd`), so the new
//! process inherits its environment, cgroup and stdout/stderr, and moves to it, in order,
//! the running configuration, every engine (brownout: full snapshot and deltas while the
//! engine serves; blackout: freeze, final delta, descriptors) and the control socket with
//! every app connection. The exports run on each engine's own thread through its mailbox,
//! so the other engines are undisturbed.
//!
//! Nothing moves before every engine is known to be movable, and the new host checks each
//! engine's full snapshot before that engine freezes, so a new host that cannot read the
//! state refuses while the old one serves. If the transfer fails after an engine froze but
//! before it handed over its descriptors, the engine thaws and keeps serving here; the apps
//! of engines already handed over are disconnected (they see `HostGone` at once, rather
//! than waiting on rings nobody serves), the new process is killed, and this host keeps
//! serving the rest.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::net::{socketpair, sockopt, AddressFamily, Shutdown, SocketFlags, SocketType};
use snap_ipc::control::protocol::{EngineMove, Response, UpgradeReport};
use snap_runtime::EngineHandle;

use super::{Reply, Shared};
use crate::takeover::wire::{self, Conn, Msg, Phase};

/// How long the new host may take to answer any one step (reading the configuration,
/// checking a snapshot, rebuilding an engine): a new host that hangs fails the upgrade
/// rather than the old one.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// Brownout rounds (full snapshot included) before the freeze, at most.
const MAX_ROUNDS: u32 = 8;
/// A delta this small ends the brownout: the final delta will be about as small.
const SMALL_DELTA: usize = 16 * 1024;

/// Serves `snapctl upgrade` from `uid` on connection `conn` (which does not move: it gets
/// the report, then this process exits).
pub(super) fn serve(shared: &Shared, binary: Option<String>, (pid, uid): (i32, u32), conn: u64) -> Reply {
    if uid != 0 && uid != shared.own_uid {
        log::warn!("pid {pid} uid {uid}: upgrade refused: not root or the host's user");
        return Err(format!(
            "uid {uid} may not upgrade this Snap host: only root and uid {} (the host's own user) may",
            shared.own_uid
        ));
    }
    if shared.upgrading.swap(true, Ordering::SeqCst) {
        return Err("an upgrade of this Snap host is already running; wait for it to finish".into());
    }
    log::info!("pid {pid} uid {uid}: upgrade requested");
    match upgrade(shared, binary, conn) {
        Ok(report) => {
            log::info!(
                "upgrade done: pid {} serves now ({:.1} ms); this process exits",
                report.new_pid,
                report.total_ms
            );
            Ok((Response::Upgraded { report }, Vec::new()))
        }
        Err(e) => {
            log::warn!("upgrade failed: {e}");
            shared.upgrading.store(false, Ordering::SeqCst);
            Err(format!("upgrade failed: {e}"))
        }
    }
}

/// The transfer's state, for the clean-up when it fails.
struct Transfer<'a> {
    shared: &'a Shared,
    socket: OwnedFd,
    child: Child,
    /// The engine frozen and not handed over yet, if any.
    frozen: Option<(String, EngineHandle)>,
    /// Engines whose descriptors went to the new host.
    moved: Vec<String>,
    done: bool,
}

impl Drop for Transfer<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Some((name, handle)) = self.frozen.take() {
            log::info!("{name}: resuming here (nothing of it moved)");
            let thawed = handle.control_dyn(|e| e.movable().map(|m| m.thaw()));
            if let Err(e) = thawed {
                log::warn!("{name}: thaw: {e}");
            }
        }
        if !self.moved.is_empty() {
            let names: Vec<&str> = self.moved.iter().map(String::as_str).collect();
            let n = super::operator::disconnect_apps(self.shared, &names);
            log::warn!(
                "engines {} were handed over to a new host that failed: {n} app connections closed",
                names.join(", ")
            );
        }
        let _ = rustix::net::shutdown(&self.socket, Shutdown::Both);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn upgrade(shared: &Shared, binary: Option<String>, conn: u64) -> Result<UpgradeReport, String> {
    let t0 = Instant::now();
    // Held to the end: the operator's changes would change what moves.
    let running = shared.config.lock().unwrap_or_else(|e| e.into_inner());
    let config = running
        .as_ref()
        .ok_or("this Snap host was started without a configuration; it cannot be upgraded")?;
    let mut engines = Vec::new();
    for e in config.group.iter().flat_map(|g| &g.engine) {
        let kind = e.kind.as_str();
        let cannot = |why: &str| {
            format!(
                "engine {:?} (kind {kind}) cannot move to a new host: {why}; nothing moved",
                e.name
            )
        };
        if let Some(why) = crate::config::import::why_cannot_move(config, e) {
            return Err(cannot(&why));
        }
        let handle = shared
            .runtime
            .engine(&e.name)
            .ok_or_else(|| cannot("not running"))?;
        let movable = handle
            .control_dyn(|e| e.movable().is_some())
            .map_err(|err| cannot(&err.to_string()))?;
        if !movable {
            return Err(cannot("its kind (or its NIC) does not move"));
        }
        engines.push((e.name.clone(), kind.to_owned(), handle));
    }
    let text = config.to_toml().map_err(|e| e.to_string())?;
    let binary = binary
        .map(PathBuf::from)
        .or_else(|| shared.opts.binary.clone())
        .ok_or("no binary to upgrade to: name one (--binary)")?;

    let (socket, theirs) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| format!("socketpair: {e}"))?;
    // The new process inherits exactly this descriptor (and stdout/stderr).
    rustix::io::fcntl_setfd(&theirs, rustix::io::FdFlags::empty()).map_err(|e| format!("fcntl: {e}"))?;
    let child = Command::new(&binary)
        .arg("--takeover-fd")
        .arg(theirs.as_raw_fd().to_string())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", binary.display()))?;
    drop(theirs);
    sockopt::set_socket_timeout(&socket, sockopt::Timeout::Recv, Some(STEP_TIMEOUT))
        .map_err(|e| format!("SO_RCVTIMEO: {e}"))?;
    let mut t = Transfer {
        shared,
        socket,
        child,
        frozen: None,
        moved: Vec::new(),
        done: false,
    };
    let new_pid = t.child.id();
    log::info!("upgrade: started {} (pid {new_pid})", binary.display());
    let hello = Msg::Hello {
        old_pid: std::process::id(),
        config: text,
        engines: engines.iter().map(|(n, _, _)| n.clone()).collect(),
    };
    t.send(&hello)?;
    match t.recv()? {
        Msg::Ready { .. } => {}
        Msg::Failed { reason, .. } => {
            return Err(format!("the new host refused the configuration: {reason}"))
        }
        other => return Err(format!("unexpected answer from the new host: {other:?}")),
    }

    let mut moves = Vec::new();
    for (name, kind, handle) in engines {
        let m = t.move_engine(&name, &kind, &handle)?;
        log::info!(
            "upgrade: {name} moved (brownout {:.2} ms, {} rounds, {} bytes; blackout {:.2} ms)",
            m.brownout_ms,
            m.rounds,
            m.state_bytes,
            m.blackout_ms
        );
        moves.push(m);
    }
    t.move_control(conn)?;
    t.done = true;
    drop(running);
    Ok(UpgradeReport {
        old_pid: std::process::id(),
        new_pid,
        total_ms: ms(t0.elapsed()),
        engines: moves,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs a `Movable` call on the engine's thread.
fn on_engine<R: Send + 'static>(
    handle: &EngineHandle,
    name: &str,
    f: impl FnOnce(&mut dyn snap_runtime::Movable) -> Result<R, String> + Send + 'static,
) -> Result<R, String> {
    handle
        .control_dyn(move |e| e.movable().map(f))
        .map_err(|e| format!("{name}: {e}"))?
        .ok_or_else(|| format!("{name}: not movable"))?
        .map_err(|e| format!("{name}: {e}"))
}

impl Transfer<'_> {
    fn send(&self, msg: &Msg) -> Result<(), String> {
        wire::send(self.socket.as_fd(), msg, &[], &[]).map_err(|e| self.lost(e))
    }

    fn recv(&self) -> Result<Msg, String> {
        wire::recv(self.socket.as_fd())
            .map(|r| r.msg)
            .map_err(|e| self.lost(e))
    }

    fn lost(&self, e: wire::WireError) -> String {
        match e {
            wire::WireError::Io(rustix::io::Errno::AGAIN) => {
                format!("the new host did not answer within {} s", STEP_TIMEOUT.as_secs())
            }
            e => format!("talking to the new host: {e}"),
        }
    }

    /// Expects the new host's verdict on `name`'s last state.
    fn verdict(&self, name: &str) -> Result<(), String> {
        match self.recv()? {
            Msg::Verdict {
                engine,
                refused: None,
            } if engine == name => Ok(()),
            Msg::Verdict {
                engine,
                refused: Some(reason),
            } if engine == name => Err(format!(
                "the new host cannot read engine {name:?}'s state: {reason}; it keeps running here"
            )),
            other => Err(format!("unexpected answer from the new host: {other:?}")),
        }
    }

    fn move_engine(&mut self, name: &str, kind: &str, handle: &EngineHandle) -> Result<EngineMove, String> {
        let start = Instant::now();
        let full = on_engine(handle, name, |m| m.export_full())?;
        let mut state_bytes = full.len() as u64;
        wire::send_state(self.socket.as_fd(), name, Phase::Full, None, &full).map_err(|e| self.lost(e))?;
        self.verdict(name)?;
        let mut rounds = 1;
        let mut last = full.len();
        while last > SMALL_DELTA && rounds < MAX_ROUNDS {
            let delta = on_engine(handle, name, |m| m.export_delta())?;
            wire::send_state(self.socket.as_fd(), name, Phase::Delta, None, &delta)
                .map_err(|e| self.lost(e))?;
            state_bytes += delta.len() as u64;
            last = delta.len();
            rounds += 1;
        }
        let brownout = start.elapsed();
        // Blackout from here.
        let frozen_ns = wire::monotonic_ns();
        let last_delta = on_engine(handle, name, |m| m.freeze())?;
        self.frozen = Some((name.to_owned(), handle.clone()));
        state_bytes += last_delta.len() as u64;
        wire::send_state(
            self.socket.as_fd(),
            name,
            Phase::Final,
            Some(frozen_ns),
            &last_delta,
        )
        .map_err(|e| self.lost(e))?;
        self.verdict(name)?;
        let fds: Vec<Vec<OwnedFd>> = on_engine(handle, name, |m| m.hand_over())?;
        self.frozen = None;
        self.moved.push(name.to_owned());
        wire::send_fds(self.socket.as_fd(), name, &fds).map_err(|e| self.lost(e))?;
        drop(fds);
        match self.recv()? {
            Msg::Started { engine, started_ns } if engine == name => Ok(EngineMove {
                name: name.to_owned(),
                kind: kind.to_owned(),
                brownout_ms: ms(brownout),
                blackout_ms: started_ns.saturating_sub(frozen_ns) as f64 / 1e6,
                rounds,
                state_bytes,
            }),
            Msg::Failed { engine, reason } if engine == name => Err(format!(
                "the new host could not rebuild engine {name:?}: {reason}"
            )),
            other => Err(format!("unexpected answer from the new host: {other:?}")),
        }
    }

    /// Hands over the listening socket and every app connection but `own` (the
    /// operator's, which gets the report from this process).
    fn move_control(&mut self, own: u64) -> Result<(), String> {
        let shared = self.shared;
        // From now on this process serves no request: a request it still reads is answered
        // with "send it again" (its listener accepts nothing more either).
        shared.handed_off.store(true, Ordering::SeqCst);
        let conns: Vec<(u64, Arc<OwnedFd>)> = shared
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(id, _)| **id != own)
            .map(|(id, c)| (*id, c.clone()))
            .collect();
        let registry = shared.channels.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut fds = vec![vec![shared
            .listener
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| format!("dup: {e}"))?]];
        let mut moving = Vec::with_capacity(conns.len());
        for (id, c) in &conns {
            fds.push(vec![c
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| format!("dup: {e}"))?]);
            let channels = registry
                .iter()
                .filter(|(conn, _)| conn == id)
                .map(|(_, c)| c.clone())
                .collect();
            moving.push(Conn { channels });
        }
        let result = (|| {
            self.send(&Msg::Control { conns: moving })?;
            wire::send_fds(self.socket.as_fd(), "control", &fds).map_err(|e| self.lost(e))?;
            match self.recv()? {
                Msg::Serving => Ok(()),
                Msg::Failed { reason, .. } => Err(format!(
                    "the new host could not serve the control socket: {reason}"
                )),
                other => Err(format!("unexpected answer from the new host: {other:?}")),
            }
        })();
        if result.is_err() {
            shared.handed_off.store(false, Ordering::SeqCst);
        }
        result
    }
}
