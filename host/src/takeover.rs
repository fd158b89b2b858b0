//! The new host's side of an upgrade (docs/UPGRADE.md): a `snap-host` started with
//! `--takeover-fd N` by the running host receives, on that socketpair ([`wire`]), the
//! running configuration, every engine's state and descriptors, and the control socket
//! with every app connection, and serves them. The old host's side is
//! `crate::control`'s `upgrade` module.
//!
//! ```text
//!   old host                                   new host (--takeover-fd)
//!   Hello{config, engines} ──────────────────▶ parse the configuration ── Ready{pid}
//!   per engine: State(full) ─────────────────▶ check it ───────────────── Verdict
//!               State(delta) … ──────────────▶ keep
//!               freeze, State(final) ────────▶ check it ───────────────── Verdict
//!               hand_over, Fds … ────────────▶ rebuild, start ─────────── Started{ns}
//!   Control{conns}, Fds(listener, conns) ────▶ serve them ─────────────── Serving
//!   (answers snapctl, exits)                   prints the ready line
//! ```
//!
//! If the old host goes away before the control socket moved, this process exits: the
//! descriptors it holds close, so the apps of engines that moved see `HostGone` (the old
//! host, the only other holder, is gone too).
//!
//! Test hook: with `SNAP_HOST_TEST_TAKEOVER_PAUSE_MS=MS` the new host sleeps that long
//! after it has started `SNAP_HOST_TEST_TAKEOVER_PAUSE_AFTER` engines (default 0: before
//! the first), so that a test can kill either process in the middle of a transfer, or ask
//! for a second upgrade while one runs; nothing else makes those moments last long enough
//! to be hit with real processes.

pub mod wire;

use std::collections::HashSet;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rustix::net::sockopt;
use snap_runtime::Runtime;

use crate::config::{self, Config};
use crate::control::{ControlServer, ServerOptions};
use wire::{Msg, Phase};

/// How long the old host may take between two messages (an export of a large engine is
/// the longest).
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest state accepted for one export: a Pony engine at its flow limit is a few tens of
/// MiB.
const MAX_STATE: u64 = 512 << 20;
/// Most descriptors accepted for one engine or for the control socket's connections.
const MAX_FDS: usize = 1 << 16;

/// What the takeover leaves running.
pub struct TakenOver {
    /// The configuration, as the old host ran it.
    pub config: Config,
    /// The runtime with every engine.
    pub runtime: Arc<Runtime>,
    /// The control server on the moved socket and connections.
    pub server: ControlServer,
}

/// Takes over the host on the other end of `socket`; `server_opts` adds this process's
/// own settings (its binary, its hand-off signal) to the configuration's.
pub fn take_over(socket: OwnedFd, server_opts: impl FnOnce(&Config) -> ServerOptions) -> Result<TakenOver> {
    sockopt::set_socket_timeout(&socket, sockopt::Timeout::Recv, Some(STEP_TIMEOUT))
        .context("SO_RCVTIMEO on the takeover socket")?;
    let sock = socket.as_fd();
    let (config, engines) = match recv(sock)? {
        Msg::Hello {
            config,
            engines,
            old_pid,
        } => {
            log::info!("taking over from pid {old_pid}: {}", engines.join(", "));
            match Config::parse(&config, config::online_cpus()) {
                Ok(c) => (c, engines),
                Err(e) => {
                    let reason = e.to_string();
                    send(
                        sock,
                        &Msg::Failed {
                            engine: String::new(),
                            reason: reason.clone(),
                        },
                    )?;
                    bail!("the running configuration: {reason}");
                }
            }
        }
        other => bail!("expected the old host's hello, got {other:?}"),
    };
    send(
        sock,
        &Msg::Ready {
            new_pid: std::process::id(),
        },
    )?;

    let runtime = Arc::new(
        Runtime::start(Vec::new(), config.runtime_options()).context("starting the engine runtime")?,
    );
    let mut started_groups = HashSet::new();
    for (i, name) in engines.iter().enumerate() {
        test_pause(i, sock);
        let (group, e) = config
            .group
            .iter()
            .find_map(|g| g.engine.iter().find(|e| &e.name == name).map(|e| (g, e)))
            .ok_or_else(|| anyhow!("engine {name:?} is not in the configuration"))?;
        let full = recv_export(sock, name, Phase::Full)?.0;
        check(sock, name, config::import::check_state(e, &full))?;
        let mut deltas = Vec::new();
        loop {
            let (bytes, phase) = recv_export(sock, name, Phase::Delta)?;
            if phase == Phase::Final {
                check(sock, name, config::import::check_state(e, &bytes))?;
                deltas.push(bytes);
                break;
            }
            deltas.push(bytes);
        }
        let fds = wire::recv_fds(sock, name, MAX_FDS).map_err(|e| anyhow!("{name}'s descriptors: {e}"))?;
        let engine = match config::import::import(e, &full, &deltas, fds) {
            Ok(engine) => engine,
            Err(reason) => {
                send(
                    sock,
                    &Msg::Failed {
                        engine: name.clone(),
                        reason: reason.clone(),
                    },
                )?;
                bail!("rebuilding engine {name:?}: {reason}");
            }
        };
        let placed = if started_groups.insert(group.name.clone()) {
            runtime.add_group(group.spec(vec![engine]))
        } else {
            runtime.add_engine(&group.name, engine)
        };
        if let Err(err) = placed {
            let reason = err.to_string();
            send(
                sock,
                &Msg::Failed {
                    engine: name.clone(),
                    reason: reason.clone(),
                },
            )?;
            bail!("starting engine {name:?}: {reason}");
        }
        // Answered on the engine's thread, between its steps: it runs.
        let started_ns = runtime
            .engine(name)
            .ok_or_else(|| anyhow!("engine {name:?} vanished"))?
            .control_dyn(|_| wire::monotonic_ns())
            .map_err(|e| anyhow!("engine {name:?}: {e}"))?;
        send(
            sock,
            &Msg::Started {
                engine: name.clone(),
                started_ns,
            },
        )?;
    }

    let conns = match recv(sock)? {
        Msg::Control { conns } => conns,
        other => bail!("expected the control socket, got {other:?}"),
    };
    let groups = wire::recv_fds(sock, "control", conns.len() + 1)
        .map_err(|e| anyhow!("the control socket's descriptors: {e}"))?;
    if groups.len() != conns.len() + 1 || groups.iter().any(|g| g.len() != 1) {
        bail!(
            "{} control descriptors for {} connections",
            groups.len(),
            conns.len()
        );
    }
    let mut fds: Vec<OwnedFd> = groups.into_iter().flatten().collect();
    let listener = fds.remove(0);
    let conns = fds
        .into_iter()
        .zip(conns)
        .map(|(fd, c)| (fd, c.channels))
        .collect();
    let opts = server_opts(&config);
    let server = match ControlServer::adopt(&config.control_socket, listener, runtime.clone(), opts, conns) {
        Ok(s) => s,
        Err(e) => {
            let reason = e.to_string();
            send(
                sock,
                &Msg::Failed {
                    engine: String::new(),
                    reason: reason.clone(),
                },
            )?;
            bail!("the control server: {reason}");
        }
    };
    send(sock, &Msg::Serving)?;
    Ok(TakenOver {
        config,
        runtime,
        server,
    })
}

/// The test hook (see the module documentation), before engine `i` moves. The pause ends
/// early if the old host goes away, as a real new host would notice at once.
fn test_pause(i: usize, sock: std::os::fd::BorrowedFd<'_>) {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    if let Some(ms) = var("SNAP_HOST_TEST_TAKEOVER_PAUSE_MS") {
        if var("SNAP_HOST_TEST_TAKEOVER_PAUSE_AFTER").unwrap_or(0) == i as u64 {
            log::warn!("test hook: pausing {ms} ms before engine {i} moves");
            // No event asked for: only a hang-up (or error) ends the wait early.
            let mut fds = [rustix::event::PollFd::new(
                &sock,
                rustix::event::PollFlags::empty(),
            )];
            let ts = rustix::event::Timespec {
                tv_sec: (ms / 1000) as i64,
                tv_nsec: ((ms % 1000) * 1_000_000) as i64,
            };
            let _ = rustix::event::poll(&mut fds, Some(&ts));
        }
    }
}

fn send(sock: std::os::fd::BorrowedFd<'_>, msg: &Msg) -> Result<()> {
    wire::send(sock, msg, &[], &[]).map_err(|e| anyhow!("talking to the old host: {e}"))
}

fn recv(sock: std::os::fd::BorrowedFd<'_>) -> Result<Msg> {
    wire::recv(sock)
        .map(|r| r.msg)
        .map_err(|e| anyhow!("talking to the old host: {e}"))
}

/// Receives an export of `name`: the full snapshot (`want` = Full) or a delta or the final
/// delta (`want` = Delta).
fn recv_export(sock: std::os::fd::BorrowedFd<'_>, name: &str, want: Phase) -> Result<(Vec<u8>, Phase)> {
    match recv(sock)? {
        Msg::State {
            engine, phase, len, ..
        } if engine == name && (phase == want || (want == Phase::Delta && phase == Phase::Final)) => {
            let bytes = wire::recv_state(sock, len, MAX_STATE).map_err(|e| anyhow!("{name}'s state: {e}"))?;
            Ok((bytes, phase))
        }
        other => bail!("expected a {want:?} export of {name:?}, got {other:?}"),
    }
}

/// Sends the verdict on a state; a refusal ends the takeover (the old host keeps serving).
fn check(sock: std::os::fd::BorrowedFd<'_>, name: &str, readable: Result<(), String>) -> Result<()> {
    let refused = readable.err();
    send(
        sock,
        &Msg::Verdict {
            engine: name.to_owned(),
            refused: refused.clone(),
        },
    )?;
    match refused {
        Some(reason) => bail!("engine {name:?}: {reason}; the old host keeps serving"),
        None => Ok(()),
    }
}
