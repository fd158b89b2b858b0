//! The operator's requests (`snapctl`): add and remove engines and groups in the running
//! host, and replace a pipeline stage's settings.
//!
//! Only root and the host's own user may change the engines; `allowed_uids` are apps'
//! users, served attach and status only. Each change is checked by the configuration
//! (`crate::config`, the same parsing and validation as the file) before anything is built,
//! then made by the runtime, and recorded in the running configuration only once the runtime
//! has made it: a refused change changes nothing. Changes are serialised by the running
//! configuration's lock.
//!
//! Apps attached to a removed engine lose their control connection: they see the host gone
//! (`HostGone`) at their next call or wait, as when the host exits, rather than waiting on
//! rings nobody serves.

use std::collections::HashSet;

use rustix::net::Shutdown;
use snap_ipc::control::protocol::{Request, Response};
use snap_pipeline::StageEngine;

use super::{Reply, Shared};
use crate::config::{online_cpus, Config};

/// Serves one operator request from `uid`.
pub(super) fn serve(shared: &Shared, request: Request, (pid, uid): (i32, u32)) -> Reply {
    if uid != 0 && uid != shared.own_uid {
        log::warn!("pid {pid} uid {uid}: engine change refused: not root or the host's user");
        return Err(format!(
            "uid {uid} may not change this Snap host's engines: only root and uid {} (the host's \
             own user) may",
            shared.own_uid
        ));
    }
    let mut running = shared.config.lock().unwrap_or_else(|e| e.into_inner());
    let Some(config) = running.as_mut() else {
        return Err(
            "this Snap host was started without a configuration; it cannot change its engines".into(),
        );
    };
    let summary = match request {
        Request::EngineAdd { group, table } => engine_add(shared, config, &group, &table)?,
        Request::EngineRemove { engine } => engine_remove(shared, config, &engine)?,
        Request::GroupAdd { table } => group_add(shared, config, &table)?,
        Request::GroupRemove { group } => group_remove(shared, config, &group)?,
        Request::StageUpdate { engine, settings } => stage_update(shared, config, &engine, &settings)?,
        other => return Err(format!("not an operator request: {other:?}")),
    };
    log::info!("pid {pid} uid {uid}: {summary}");
    Ok((Response::Changed { summary }, Vec::new()))
}

fn engine_add(shared: &Shared, config: &mut Config, group: &str, table: &str) -> Result<String, String> {
    let (next, engine) = config
        .with_engine(group, table, online_cpus())
        .map_err(|e| format!("invalid engine: {e}"))?;
    let built = engine
        .build_standalone()
        .map_err(|e| format!("invalid engine: {e}"))?;
    shared
        .runtime
        .add_engine(group, built)
        .map_err(|e| e.to_string())?;
    *config = next;
    let kind = engine.kind.as_str();
    set_kinds(shared, [(engine.name.clone(), kind.to_owned())], []);
    Ok(format!("engine {} ({kind}) added to group {group}", engine.name))
}

fn engine_remove(shared: &Shared, config: &mut Config, name: &str) -> Result<String, String> {
    let next = config.without_engine(name).map_err(|e| e.to_string())?;
    shared.runtime.remove_engine(name).map_err(|e| e.to_string())?;
    *config = next;
    set_kinds(shared, [], [name.to_owned()]);
    let apps = disconnect_apps(shared, &[name]);
    Ok(format!("engine {name} removed ({apps} app connections closed)"))
}

fn group_add(shared: &Shared, config: &mut Config, table: &str) -> Result<String, String> {
    let (next, group) = config
        .with_group(table, online_cpus())
        .map_err(|e| format!("invalid group: {e}"))?;
    let spec = group
        .build_standalone()
        .map_err(|e| format!("invalid group: {e}"))?;
    let class_groups = &shared.opts.class_groups;
    let class_group = class_groups.ensure(&group)?;
    if let Err(e) = shared.runtime.add_group(spec) {
        // A refused change changes nothing: the class group goes if this made it, or gets
        // its budget back if it was there.
        if let Some(Err(undo)) = class_group.as_ref().map(|c| class_groups.undo(c)) {
            log::warn!("{undo}");
        }
        return Err(e.to_string());
    }
    *config = next;
    let kinds = group
        .engine
        .iter()
        .map(|e| (e.name.clone(), e.kind.as_str().to_owned()));
    set_kinds(shared, kinds, []);
    let class_group = class_group.map_or_else(String::new, |c| {
        format!(", in MicroQuanta class group {}", c.name)
    });
    Ok(format!(
        "group {} ({}) added with {} engines{class_group}",
        group.name,
        group.mode,
        group.engine.len()
    ))
}

fn group_remove(shared: &Shared, config: &mut Config, name: &str) -> Result<String, String> {
    let next = config.without_group(name).map_err(|e| e.to_string())?;
    let engines: Vec<String> = config
        .group
        .iter()
        .filter(|g| g.name == name)
        .flat_map(|g| &g.engine)
        .map(|e| e.name.clone())
        .collect();
    shared.runtime.remove_group(name).map_err(|e| e.to_string())?;
    *config = next;
    // After its threads stopped: the group is gone whatever the class map says.
    let class_group = match shared.opts.class_groups.release(name) {
        Ok(true) => ", and its MicroQuanta class group".to_owned(),
        Ok(false) => String::new(),
        Err(e) => {
            log::warn!("{e}");
            format!(" ({e})")
        }
    };
    set_kinds(shared, [], engines.iter().cloned());
    let names: Vec<&str> = engines.iter().map(String::as_str).collect();
    let apps = disconnect_apps(shared, &names);
    Ok(format!(
        "group {name} removed with engines {} ({apps} app connections closed){class_group}",
        names.join(", ")
    ))
}

/// Hands a pipeline stage new settings through its engine's mailbox (applied between two
/// packets, or refused with nothing changed), then records them in the running
/// configuration.
fn stage_update(shared: &Shared, config: &mut Config, name: &str, settings: &str) -> Result<String, String> {
    let next = config
        .with_stage_settings(name, settings)
        .map_err(|e| e.to_string())?;
    let handle = shared
        .runtime
        .engine(name)
        .ok_or_else(|| format!("stage {name:?} is not running"))?;
    let text = settings.to_owned();
    handle
        .control(move |e: &mut StageEngine| e.update(&text))
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("stage {name:?} refused the settings: {e}"))?;
    *config = next;
    Ok(format!("stage {name} updated"))
}

fn set_kinds(
    shared: &Shared,
    added: impl IntoIterator<Item = (String, String)>,
    removed: impl IntoIterator<Item = String>,
) {
    let mut kinds = shared.kinds.lock().unwrap_or_else(|e| e.into_inner());
    kinds.extend(added);
    for name in removed {
        kinds.remove(&name);
    }
}

/// Closes the control connections that hold a channel of one of `engines` (already
/// removed): their apps see the host gone. Their connection threads then detach what is
/// left, as on any hang-up. Returns how many were closed.
pub(super) fn disconnect_apps(shared: &Shared, engines: &[&str]) -> usize {
    let conns: HashSet<u64> = shared
        .channels
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|(_, c)| engines.contains(&c.engine.as_str()))
        .map(|(conn, _)| *conn)
        .collect();
    let open = shared.conns.lock().unwrap_or_else(|e| e.into_inner());
    for id in &conns {
        if let Some(conn) = open.get(id) {
            let _ = rustix::net::shutdown(&**conn, Shutdown::Both);
        }
    }
    conns.len()
}
