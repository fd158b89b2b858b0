//! `[[pipeline]]`: a Pony engine's packet path as a line of stage engines, the last of
//! which owns the NIC (snap-pipeline's queues, stages and stage engines).
//!
//! ```toml
//! [[pipeline]]
//! name = "path0"
//! # buffers = 4096          # pool buffers shared by the whole pipeline [4096]
//! # queue_capacity = 256    # descriptors per direction between two stages (a power of two) [256]
//! # batch = 32              # packets per direction a stage engine takes per step [32]
//! [[pipeline.stage]]
//! name = "pass0"            # an engine name: unique among engines and stages
//! kind = "pass"             # see `stage_kind`
//! group = "stages"          # a [[group]] of any mode; it may hold no other engine
//! # settings = { … }        # the stage's own settings (what `snapctl stage update` replaces)
//! [[pipeline.stage]]
//! name = "nic0"
//! kind = "pass"
//! group = "nic"
//! [pipeline.nic]            # the last stage's NIC: a Pony engine's NIC keys, and `faults`
//! nic = "udp"
//! bind = "10.0.0.1:7000"
//!
//! [[group.engine]]          # (in some group) the Pony engine whose NIC side it is
//! name = "pony0"
//! kind = "pony"
//! options = { pipeline = "path0" }
//! ```
//!
//! Each pipeline serves exactly one Pony engine. Every stage becomes an engine of its
//! group (kind `stage` in status, with its counters), so consecutive stages may run in
//! different groups and modes. The pipeline is built when the host starts, with the
//! Pony engine; stages are not added or removed at run time (a group that holds one
//! cannot be removed), but `snapctl stage update` replaces a stage's settings.

use std::collections::{HashMap, HashSet};

use pony_engine::nic::{NicWire, PipeNic};
use serde::{Deserialize, Serialize};
use snap_pipeline::{queue, Downstream, Pool, PoolConfig, StageEngine};
use snap_runtime::Engine;

use super::stage_kind::{settings_text, StageKind};
use super::{invalid, pony, Config, ConfigError, EngineKind};

const BUFFERS: (u64, u64) = (64, 1 << 20);
const QUEUE_CAPACITY: (u64, u64) = (2, 65_536);
const BATCH: (u64, u64) = (1, 1024);

/// One `[[pipeline]]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Unique pipeline name, named by one Pony engine's `pipeline` option.
    pub name: String,
    /// Packet buffers of the pipeline's pool.
    #[serde(default = "default_buffers")]
    pub buffers: u64,
    /// Descriptors per direction in each queue between two stages.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: u64,
    /// Packets per direction a stage engine takes per step.
    #[serde(default = "default_batch")]
    pub batch: u64,
    /// The stages, from Pony's side to the NIC's; at least one.
    #[serde(default)]
    pub stage: Vec<StageConfig>,
    /// The last stage's NIC (a Pony engine's NIC keys, and `faults`).
    pub nic: toml::Table,
}

fn default_buffers() -> u64 {
    4096
}
fn default_queue_capacity() -> u64 {
    256
}
fn default_batch() -> u64 {
    32
}

/// One `[[pipeline.stage]]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// Engine name of the stage (unique among engines and stages).
    pub name: String,
    /// The stage kind (`stage_kind`).
    pub kind: String,
    /// The group whose threads run it.
    pub group: String,
    /// The stage's own settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<toml::Table>,
}

fn check_range(field: String, value: u64, (lo, hi): (u64, u64)) -> Result<(), ConfigError> {
    if (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(invalid(field, format!("{value} is outside {lo}..={hi}")))
    }
}

/// Names of every stage of every pipeline.
pub(super) fn stage_names(config: &Config) -> impl Iterator<Item = &str> {
    config
        .pipeline
        .iter()
        .flat_map(|p| &p.stage)
        .map(|s| s.name.as_str())
}

/// Whether a stage runs in group `group`.
pub(super) fn hosts_stages(config: &Config, group: &str) -> bool {
    config
        .pipeline
        .iter()
        .flat_map(|p| &p.stage)
        .any(|s| s.group == group)
}

/// Checks every `[[pipeline]]` and the Pony engines' `pipeline` options against them
/// (engine names are already known to be unique).
pub(super) fn validate(config: &Config) -> Result<(), ConfigError> {
    let groups: HashSet<&str> = config.group.iter().map(|g| g.name.as_str()).collect();
    let mut names: HashSet<&str> = config
        .group
        .iter()
        .flat_map(|g| &g.engine)
        .map(|e| e.name.as_str())
        .collect();
    let mut pipelines = HashSet::new();
    for (pi, p) in config.pipeline.iter().enumerate() {
        let at = format!("pipeline[{pi}]");
        if p.name.is_empty() {
            return Err(invalid(format!("{at}.name"), "must not be empty"));
        }
        if !pipelines.insert(p.name.as_str()) {
            return Err(invalid(
                format!("{at}.name"),
                format!("duplicate pipeline name {:?}", p.name),
            ));
        }
        check_range(format!("{at}.buffers"), p.buffers, BUFFERS)?;
        check_range(format!("{at}.queue_capacity"), p.queue_capacity, QUEUE_CAPACITY)?;
        if !p.queue_capacity.is_power_of_two() {
            return Err(invalid(
                format!("{at}.queue_capacity"),
                format!("{} is not a power of two", p.queue_capacity),
            ));
        }
        check_range(format!("{at}.batch"), p.batch, BATCH)?;
        if p.stage.is_empty() {
            return Err(invalid(
                format!("{at}.stage"),
                "at least one [[pipeline.stage]] is required",
            ));
        }
        for (si, s) in p.stage.iter().enumerate() {
            let at = format!("{at}.stage[{si}]");
            if s.name.is_empty() {
                return Err(invalid(format!("{at}.name"), "must not be empty"));
            }
            if !names.insert(s.name.as_str()) {
                return Err(invalid(
                    format!("{at}.name"),
                    format!("{:?} is already the name of an engine or stage", s.name),
                ));
            }
            if !groups.contains(s.group.as_str()) {
                return Err(invalid(
                    format!("{at}.group"),
                    format!("no group named {:?}", s.group),
                ));
            }
            let kind = StageKind::from_name(&s.kind).map_err(|m| invalid(format!("{at}.kind"), m))?;
            kind.build(&settings_text(s.settings.as_ref()))
                .map_err(|m| invalid(format!("{at}.settings"), m))?;
        }
        pony::validate_wire(&p.nic).map_err(|m| invalid(format!("{at}.nic"), m))?;
    }
    // Each pipeline serves exactly one Pony engine, and a Pony engine's pipeline exists.
    let mut served: HashMap<&str, &str> = HashMap::new();
    for (gi, g) in config.group.iter().enumerate() {
        for (ei, e) in g.engine.iter().enumerate() {
            let Some(name) = e.options.as_ref().and_then(pony::pipeline_of) else {
                continue;
            };
            if e.kind != EngineKind::Pony {
                continue;
            }
            let field = format!("group[{gi}].engine[{ei}].options.pipeline");
            if !pipelines.contains(name) {
                return Err(invalid(field, format!("no [[pipeline]] named {name:?}")));
            }
            if let Some(other) = served.insert(name, e.name.as_str()) {
                return Err(invalid(
                    field,
                    format!("pipeline {name:?} already serves Pony engine {other:?}"),
                ));
            }
        }
    }
    if let Some((pi, p)) = config
        .pipeline
        .iter()
        .enumerate()
        .find(|(_, p)| !served.contains_key(p.name.as_str()))
    {
        return Err(invalid(
            format!("pipeline[{pi}]"),
            format!("no Pony engine names pipeline {:?} in its options", p.name),
        ));
    }
    Ok(())
}

/// Every pipeline, built: the Pony engines' NIC sides by pipeline name, and each stage
/// engine with the index of its group.
pub(super) struct BuiltPipelines {
    pub(super) pony_nics: HashMap<String, PipeNic>,
    pub(super) stages: Vec<(usize, Box<dyn Engine>)>,
}

/// Builds every pipeline (opening each one's NIC). Errors name the field.
pub(super) fn build(config: &Config) -> Result<BuiltPipelines, ConfigError> {
    let mut built = BuiltPipelines {
        pony_nics: HashMap::new(),
        stages: Vec::new(),
    };
    for (pi, p) in config.pipeline.iter().enumerate() {
        let at = format!("pipeline[{pi}]");
        let stages = p
            .stage
            .iter()
            .enumerate()
            .map(|(si, s)| {
                let kind = StageKind::from_name(&s.kind)
                    .map_err(|m| invalid(format!("{at}.stage[{si}].kind"), m))?;
                kind.build(&settings_text(s.settings.as_ref()))
                    .map_err(|m| invalid(format!("{at}.stage[{si}].settings"), m))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let headroom: usize = stages.iter().map(|s| s.headroom()).sum();
        let nic = pony::build_wire(&p.name, &p.nic).map_err(|m| invalid(format!("{at}.nic"), m))?;
        let mtu = nic.mtu();
        if headroom + 256 > mtu {
            return Err(invalid(
                format!("{at}.stage"),
                format!("the stages prepend up to {headroom} bytes, too much for the NIC's MTU of {mtu}"),
            ));
        }
        let sys = |what: &str, e: &dyn std::fmt::Display| invalid(at.clone(), format!("{what}: {e}"));
        let pool = Pool::new(
            &format!("snap-pipeline-{}", p.name),
            PoolConfig::for_mtu(p.buffers as u32, mtu as u32, headroom as u32),
        )
        .map_err(|e| sys("pool", &e))?;
        let queue_at = |i: usize| {
            queue(&format!("snap-pipeline-{}-q{i}", p.name), p.queue_capacity, &pool)
                .map_err(|e| sys("queue", &e))
        };
        let (pony_end, mut up) = queue_at(0)?;
        let mut wire = Some(nic);
        let last = p.stage.len() - 1;
        for (si, (s, stage)) in p.stage.iter().zip(stages).enumerate() {
            let (down, next_up) = if si == last {
                let nic = wire.take().expect("one NIC for the last stage");
                (Downstream::Wire(Box::new(NicWire(nic))), None)
            } else {
                let (d, u) = queue_at(si + 1)?;
                (Downstream::Queue(d), Some(u))
            };
            let engine = StageEngine::new(s.name.clone(), stage, up, down, p.batch as usize);
            let gi = config
                .group
                .iter()
                .position(|g| g.name == s.group)
                .ok_or_else(|| invalid(format!("{at}.stage[{si}].group"), "no such group"))?;
            built.stages.push((gi, Box::new(engine)));
            match next_up {
                Some(u) => up = u,
                None => break,
            }
        }
        log::info!(
            "pipeline {}: {} stages, {} buffers of {} bytes, {headroom} bytes of headroom",
            p.name,
            p.stage.len(),
            p.buffers,
            pool.config().buf_size
        );
        built
            .pony_nics
            .insert(p.name.clone(), PipeNic::new(pony_end, mtu - headroom));
    }
    Ok(built)
}

#[cfg(test)]
mod tests;
