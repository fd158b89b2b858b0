//! Building the configuration's engines, every kind in one match, and its relay chains:
//! `kind = "relay"` engines with `next = "<engine>"`. Validation (the target exists and
//! speaks the echo protocol, no cycles) and the build step: it builds every engine of the
//! file and joins each relay to its next engine with an internal channel before the runtime
//! starts, while we still own the engines and can call their `attach` directly.

use std::collections::HashMap;

use snap_engines::echo::EchoEngine;
use snap_engines::relay::{RelayEngine, PREFIX_LEN};
use snap_engines::udp_echo::UdpEchoEngine;
use snap_ipc::channel::{ChannelEngineEnd, ChannelShape};
use snap_runtime::Engine;

use super::{invalid, pony, Config, ConfigError, EngineKind};

/// Every engine with its position: (group index, engine index, config).
fn engines(config: &Config) -> impl Iterator<Item = (usize, usize, &super::EngineConfig)> {
    config
        .group
        .iter()
        .enumerate()
        .flat_map(|(gi, g)| g.engine.iter().enumerate().map(move |(ei, e)| (gi, ei, e)))
}

/// Checks every `next` field (engine names are already known to be unique).
pub(super) fn validate(config: &Config) -> Result<(), ConfigError> {
    let by_name: HashMap<&str, &super::EngineConfig> =
        engines(config).map(|(_, _, e)| (e.name.as_str(), e)).collect();
    for (gi, ei, e) in engines(config) {
        let field = format!("group[{gi}].engine[{ei}].next");
        let next = match (e.kind, &e.next) {
            (EngineKind::Relay, None) => return Err(invalid(field, "required for kind \"relay\"")),
            (EngineKind::Relay, Some(next)) => next.as_str(),
            (_, Some(_)) => return Err(invalid(field, "only applies to kind \"relay\"")),
            (_, None) => continue,
        };
        match by_name.get(next).map(|t| &t.kind) {
            None => return Err(invalid(field, format!("no engine named {next:?}"))),
            Some(EngineKind::UdpEcho) => {
                return Err(invalid(
                    field,
                    format!("engine {next:?} is a udp_echo engine, which does not accept apps (use an echo or relay engine)"),
                ))
            }
            Some(EngineKind::Pony) => {
                // Pony's app protocol is its own; the relay speaks the echo one.
                return Err(invalid(
                    field,
                    format!("engine {next:?} is a pony engine; a relay forwards only to echo or relay engines"),
                ));
            }
            Some(EngineKind::Echo | EngineKind::Relay) => {}
        }
        // Follow the chain: it must end at a non-relay. Errors at the first relay (in file
        // order) that leads into a cycle.
        let mut path = vec![e.name.as_str()];
        let mut cur = next;
        loop {
            if path.contains(&cur) {
                path.push(cur);
                return Err(invalid(
                    field,
                    format!("relay chain cycle: {}", path.join(" -> ")),
                ));
            }
            path.push(cur);
            match by_name.get(cur) {
                Some(t) if t.kind == EngineKind::Relay => match &t.next {
                    Some(n) => cur = n.as_str(),
                    None => break,
                },
                _ => break,
            }
        }
    }
    Ok(())
}

/// Shape of a relay's internal channel: the control plane's app channel shape with room for
/// one prefix per relay in the file, so that an app message of the maximum size fits
/// through any chain of relays.
fn internal_shape(relays: usize) -> ChannelShape {
    let app = ChannelShape::default();
    let extra = u32::try_from(relays * PREFIX_LEN).unwrap_or(u32::MAX);
    ChannelShape {
        slot_size: app.slot_size.saturating_add(extra),
        ..app
    }
}

/// An engine being built: relays and echo engines keep their type until every internal
/// channel is attached.
enum Built {
    Echo(EchoEngine),
    Relay(RelayEngine),
    Other(Box<dyn Engine>),
}

/// Builds an engine that joins no relay chain (any kind but relay), binding its sockets. `at`
/// is its field path, for errors.
pub(super) fn build_standalone(e: &super::EngineConfig, at: &str) -> Result<Box<dyn Engine>, ConfigError> {
    let field = |f: &str| format!("{at}.{f}");
    match e.kind {
        EngineKind::Echo => Ok(Box::new(EchoEngine::new(e.name.clone(), e.work_ns))),
        EngineKind::UdpEcho => {
            let addr = e
                .bind
                .ok_or_else(|| invalid(field("bind"), "required for kind \"udp_echo\""))?;
            let engine = UdpEchoEngine::bind(e.name.clone(), addr, e.work_ns)
                .map_err(|err| invalid(field("bind"), format!("cannot bind {addr}: {err}")))?;
            Ok(Box::new(engine))
        }
        EngineKind::Pony => {
            // Options of a pony engine whose file has none.
            let empty = toml::Table::new();
            let options = e.options.as_ref().unwrap_or(&empty);
            pony::build(&e.name, e.work_ns, options, None).map_err(|m| invalid(field("options"), m))
        }
        EngineKind::Relay => Err(invalid(
            field("kind"),
            "a relay is joined to its next engine when the host starts; it cannot be built on its own",
        )),
    }
}

/// Builds every group's engines, joining relays to their next engines. Errors name the
/// field.
pub(super) fn build_engines(config: &Config) -> Result<Vec<Vec<Box<dyn Engine>>>, ConfigError> {
    let relays = engines(config)
        .filter(|(_, _, e)| e.kind == EngineKind::Relay)
        .count();
    let shape = internal_shape(relays);
    // Pipelines first: a Pony engine on one takes its first queue as its NIC.
    let mut pipes = super::pipeline::build(config)?;
    let mut groups: Vec<Vec<Built>> = Vec::with_capacity(config.group.len());
    let mut at: HashMap<&str, (usize, usize)> = HashMap::new();
    // (field of the relay's `next`, next engine's name, engine end to attach there).
    let mut links: Vec<(String, &str, ChannelEngineEnd)> = Vec::new();
    for (gi, g) in config.group.iter().enumerate() {
        let mut built = Vec::with_capacity(g.engine.len());
        for (ei, e) in g.engine.iter().enumerate() {
            let field = |f: &str| format!("group[{gi}].engine[{ei}].{f}");
            let engine = match e.kind {
                EngineKind::Echo => Built::Echo(EchoEngine::new(e.name.clone(), e.work_ns)),
                EngineKind::Relay => {
                    let next = e
                        .next
                        .as_deref()
                        .ok_or_else(|| invalid(field("next"), "required for kind \"relay\""))?;
                    let (relay, end) =
                        RelayEngine::connect(e.name.clone(), e.work_ns, shape).map_err(|err| {
                            invalid(field("next"), format!("cannot make the internal channel: {err}"))
                        })?;
                    links.push((field("next"), next, end));
                    Built::Relay(relay)
                }
                EngineKind::Pony if e.options.as_ref().and_then(pony::pipeline_of).is_some() => {
                    let options = e.options.as_ref().expect("checked above");
                    let pipe = pony::pipeline_of(options).and_then(|p| pipes.pony_nics.remove(p));
                    let engine = pony::build(&e.name, e.work_ns, options, pipe)
                        .map_err(|m| invalid(field("options"), m))?;
                    Built::Other(engine)
                }
                EngineKind::UdpEcho | EngineKind::Pony => {
                    Built::Other(build_standalone(e, &format!("group[{gi}].engine[{ei}]"))?)
                }
            };
            at.insert(e.name.as_str(), (gi, ei));
            built.push(engine);
        }
        groups.push(built);
    }
    for (field, next, end) in links {
        let target = at.get(next).map(|&(gi, ei)| &mut groups[gi][ei]);
        match target {
            Some(Built::Echo(e)) => {
                e.attach(end);
            }
            Some(Built::Relay(r)) => {
                r.attach(end);
            }
            // Refused by validation; kept as an error for configs built without it.
            _ => return Err(invalid(field, format!("engine {next:?} does not accept apps"))),
        }
    }
    let mut groups: Vec<Vec<Box<dyn Engine>>> = groups
        .into_iter()
        .map(|g| {
            g.into_iter()
                .map(|b| match b {
                    Built::Echo(e) => Box::new(e) as Box<dyn Engine>,
                    Built::Relay(r) => Box::new(r),
                    Built::Other(o) => o,
                })
                .collect()
        })
        .collect();
    for (gi, stage) in pipes.stages {
        groups[gi].push(stage);
    }
    Ok(groups)
}
