//! Engines rebuilt from the state and descriptors another host process handed over (an
//! upgrade, `crate::takeover`), kind by kind: the counterpart of [`super::engines`]'s
//! building from the configuration. Each kind checks its own state format first, so an
//! unreadable state is refused before the old engine freezes.
//!
//! Test hook: `SNAP_HOST_TEST_STATE_FORMAT=N` makes this host claim it reads state format
//! `N` only (every kind), standing in for a new binary that cannot read the running one's
//! state; nothing else reaches that failure with real processes.

use std::os::fd::OwnedFd;

use snap_engines::echo::EchoEngine;
use snap_engines::moving;
use snap_engines::relay::RelayEngine;
use snap_engines::udp_echo::UdpEchoEngine;
use snap_runtime::Engine;

use super::{Config, EngineConfig, EngineKind};

/// The test hook's variable (see the module documentation).
pub const TEST_STATE_FORMAT_VAR: &str = "SNAP_HOST_TEST_STATE_FORMAT";

fn claimed_format() -> Option<u16> {
    std::env::var(TEST_STATE_FORMAT_VAR).ok()?.parse().ok()
}

/// Why engine `e` of `config` cannot move to a new host, as far as the configuration
/// tells (`None`: it can if the running engine agrees, `snap_runtime::Engine::movable`).
/// Said before anything moves, so an upgrade that cannot complete refuses whole.
pub fn why_cannot_move(config: &Config, e: &EngineConfig) -> Option<String> {
    if e.kind != EngineKind::Pony {
        return None;
    }
    let options = e.options.as_ref()?;
    if let Some(p) = super::pony::pipeline_of(options) {
        let stages: Vec<String> = config
            .pipeline
            .iter()
            .filter(|x| x.name == p)
            .flat_map(|x| &x.stage)
            .map(|s| format!("{:?} ({})", s.name, s.kind))
            .collect();
        return Some(format!(
            "its NIC side is packet pipeline {p:?} (stages {}), and packet-pipeline stages do not move yet",
            stages.join(", ")
        ));
    }
    match options.get("nic").and_then(toml::Value::as_str) {
        Some(n @ ("shm_listen" | "shm_connect")) => Some(format!(
            "its NIC is the shared-memory wire (nic = {n:?}), which does not move yet"
        )),
        _ => None,
    }
}

/// Whether this host can read `state`, an export of engine `e` (full snapshot or final
/// delta). `Err` says why not.
pub fn check_state(e: &EngineConfig, state: &[u8]) -> Result<(), String> {
    match e.kind {
        EngineKind::Echo | EngineKind::UdpEcho | EngineKind::Relay => {
            let found = moving::state_format(state)?;
            let supported = claimed_format().unwrap_or(moving::STATE_FORMAT);
            if found != supported {
                return Err(format!(
                    "state format {found} is not supported (this host reads format {supported})"
                ));
            }
            Ok(())
        }
        EngineKind::Pony => super::pony::check_state(state, claimed_format()),
    }
}

/// Engine `e` rebuilt from its exports (`full`, then `deltas` in order, the last one the
/// final delta) and the descriptors handed over with them.
pub fn import(
    e: &EngineConfig,
    full: &[u8],
    deltas: &[Vec<u8>],
    groups: Vec<Vec<OwnedFd>>,
) -> Result<Box<dyn Engine>, String> {
    let last = deltas.last().map_or(full, Vec::as_slice);
    let flat = |g: Vec<Vec<OwnedFd>>| g.into_iter().flatten().collect::<Vec<_>>();
    match e.kind {
        // Every export of these kinds is whole: the last one is the state.
        EngineKind::Echo => Ok(Box::new(EchoEngine::import(
            e.name.clone(),
            e.work_ns,
            last,
            flat(groups),
        )?)),
        EngineKind::UdpEcho => Ok(Box::new(UdpEchoEngine::import(
            e.name.clone(),
            e.work_ns,
            last,
            flat(groups),
        )?)),
        EngineKind::Pony => {
            let empty = toml::Table::new();
            let options = e.options.as_ref().unwrap_or(&empty);
            super::pony::import(&e.name, options, full, deltas, groups)
        }
        // Its internal channel is among the descriptors; the next engine, moved on its
        // own, holds the other end among its app channels.
        EngineKind::Relay => Ok(Box::new(RelayEngine::import(
            e.name.clone(),
            e.work_ns,
            last,
            flat(groups),
        )?)),
    }
}
