//! The host's declarative configuration: a TOML file listing engine groups, their
//! scheduling mode and cores, and the engines in each, turned into the
//! [`GroupSpec`]s and [`RuntimeOptions`] that start the runtime.
//!
//! ```toml
//! control_socket = "/run/snap/snap.sock"   # optional, this is the default
//! stuck_after_ms = 100                     # optional
//! allowed_uids = [1000]                    # control socket users besides root and the host's uid
//! microquanta = true                       # spreading/compacting threads join the MicroQuanta class if it is loaded
//! [control]                                # optional, these are the defaults
//! max_connections = 256                    # open control connections at once; more are refused with an error
//! idle_timeout_ms = 10000                  # a connection with no channel attached is closed after this long without a request
//! request_timeout_ms = 2000                # a reply the peer has not taken after this long closes the connection
//! [[group]]
//! name = "latency"
//! mode = "spreading"              # dedicated | spreading | compacting
//! cores = [1]                     # required for dedicated; optional otherwise
//! idle_poll_us = 0                # spreading/compacting: poll this long (µs) before blocking (default 0)
//! microquanta = { runtime_us = 200, period_us = 1000 }  # spreading/compacting: a class group of its own
//! [[group.engine]]
//! name = "echo0"
//! kind = "echo"                   # echo | udp_echo | relay | pony
//! work_ns = 0
//! # [group.engine.options]        # pony only: its NIC (see `kind`)
//! [[group]]
//! name = "pipeline"
//! mode = "spreading"
//! [[group.engine]]
//! name = "relay0"
//! kind = "relay"                  # apps attach here; requests go on to `next`
//! next = "echo0"                  # an echo or relay engine, in any group
//! ```
//!
//! `[[pipeline]]` tables declare packet pipelines: a Pony engine's NIC side as a line of
//! stage engines, each in a group, the last owning the NIC ([`pipeline`]).
//!
//! A relay and its `next` engine form a relay chain: the relay forwards its apps' requests over
//! an internal channel (SPSC rings and doorbells, as for an app) to the next engine and
//! routes the responses back (`snap_engines::relay`). `next` chains may be any length but
//! not cycle, and end at an echo engine (Pony's app protocol is its own).
//!
//! [`kind`] is the registry of engine kinds: every kind the host can build, each built in
//! one place. `change` checks the operator's run-time changes (one engine or group table at
//! a time) as part of the whole configuration they would make ([`Config::with_engine`] and
//! its siblings).
//!
//! Parsing is strict: unknown keys are errors (with their line, from the `toml` crate), and
//! every semantic error names its field by path, e.g. `group[1].cores: ...`, so a mistake
//! is found without reading this code. Compacting-only keys (`poll_interval_us`,
//! `max_queueing_delay_us`, `shrink_after_ms`) are refused in other modes rather than
//! silently ignored, and so are `idle_poll_us` and `microquanta` in dedicated mode.
//! `microquanta` is checked by `mq-class`'s own rules for a class group's name (the group's)
//! and budget, so what passes here is what the class takes (`crate::class_groups` makes it).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use snap_runtime::{CompactingParams, GroupSpec, Mode, RuntimeOptions};

pub use fuzz::{fuzz_parse, ConfigFuzzOutcome};
pub use kind::EngineKind;
pub use pipeline::{PipelineConfig, StageConfig};
pub use stage_kind::StageKind;

/// Where the control socket goes when the file does not say.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/snap/snap.sock";

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown key, or a value of the wrong type; the message has the
    /// key and its line.
    #[error("{0}")]
    Syntax(#[from] toml::de::Error),
    /// A value that parses but is not acceptable.
    #[error("{field}: {message}")]
    Invalid {
        /// Path of the field, e.g. `group[0].engine[2].name`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Path of the control socket.
    #[serde(default = "default_socket")]
    pub control_socket: PathBuf,
    /// An engine that stays in one `run()` this long is reported stuck.
    #[serde(default = "default_stuck_after_ms")]
    pub stuck_after_ms: u64,
    /// Users allowed on the control socket besides root and the host's own user.
    #[serde(default)]
    pub allowed_uids: Vec<u32>,
    /// Put spreading and compacting threads in the MicroQuanta class when `scx_microquanta`
    /// is loaded (the default; without it they run as normal threads and the log says so).
    /// `false` opts out.
    #[serde(default = "default_true")]
    pub microquanta: bool,
    /// The control server's limits.
    #[serde(default)]
    pub control: ControlConfig,
    /// Engine groups, at least one.
    #[serde(default)]
    pub group: Vec<GroupConfig>,
    /// Packet pipelines between Pony engines and their NICs ([`pipeline`]).
    #[serde(default)]
    pub pipeline: Vec<PipelineConfig>,
}

fn default_true() -> bool {
    true
}

/// The `[control]` table: limits of the control server (see `crate::control`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Control connections open at once; more are refused with an error.
    pub max_connections: u64,
    /// A connection with no channel attached is closed after this long without a request.
    pub idle_timeout_ms: u64,
    /// A reply the peer has not taken after this long closes the connection.
    pub request_timeout_ms: u64,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            max_connections: crate::control::DEFAULT_MAX_CONNECTIONS as u64,
            idle_timeout_ms: crate::control::DEFAULT_IDLE_TIMEOUT.as_millis() as u64,
            request_timeout_ms: crate::control::DEFAULT_REQUEST_TIMEOUT.as_millis() as u64,
        }
    }
}

const MAX_CONNECTIONS: (u64, u64) = (1, 65_536);
const CONTROL_TIMEOUT_MS: (u64, u64) = (10, 3_600_000);

fn default_socket() -> PathBuf {
    PathBuf::from(DEFAULT_CONTROL_SOCKET)
}

fn default_stuck_after_ms() -> u64 {
    100
}

/// One `[[group]]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Unique group name.
    pub name: String,
    /// Scheduling mode (`dedicated`, `spreading` or `compacting`).
    pub mode: Mode,
    /// CPUs the group's threads may run on.
    pub cores: Option<Vec<usize>>,
    /// Compacting: how often the rebalancer looks at queueing delay.
    pub poll_interval_us: Option<u64>,
    /// Compacting: queueing delay above which a thread is added.
    pub max_queueing_delay_us: Option<u64>,
    /// Compacting: how long a thread must be unneeded before it is removed.
    pub shrink_after_ms: Option<u64>,
    /// Spreading and compacting: how long an idle thread keeps polling its engines before
    /// it arms their doorbells and blocks (`GroupSpec::idle_poll`; 0 blocks at once).
    pub idle_poll_us: Option<u64>,
    /// Spreading and compacting: the group's threads join a MicroQuanta class group of
    /// their own, named as this group, with this budget (the host creates or updates it
    /// when scx_microquanta is loaded and `microquanta` is on). Without it they join the
    /// default class group.
    pub microquanta: Option<MicroquantaBudget>,
    /// The group's engines, at least one.
    #[serde(default)]
    pub engine: Vec<EngineConfig>,
}

/// A group's `microquanta = { runtime_us, period_us }`: its class group's budget, `runtime_us`
/// of CPU time out of every `period_us` on each CPU while normal work competes
/// (`mq_class::Budget`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MicroquantaBudget {
    /// CPU time per period, µs.
    pub runtime_us: u64,
    /// The period, µs.
    pub period_us: u64,
}

impl MicroquantaBudget {
    /// The class's own type for it.
    pub fn budget(&self) -> mq_class::Budget {
        mq_class::Budget {
            period_us: self.period_us,
            runtime_us: self.runtime_us,
        }
    }
}

/// One `[[group.engine]]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Unique engine name (across the host).
    pub name: String,
    /// What the engine is.
    pub kind: EngineKind,
    /// Busy-wait per request or datagram, to model CPU cost.
    #[serde(default)]
    pub work_ns: u64,
    /// udp_echo only: address to bind.
    pub bind: Option<SocketAddr>,
    /// relay only: the engine its requests go to (an echo or relay engine).
    pub next: Option<String>,
    /// pony only: its NIC and the NIC's settings (`kind::pony`).
    pub options: Option<toml::Table>,
}

const POLL_INTERVAL_US: (u64, u64) = (5, 100_000);
const MAX_QUEUEING_DELAY_US: (u64, u64) = (1, 1_000_000);
const SHRINK_AFTER_MS: (u64, u64) = (1, 60_000);
/// Beyond 10 ms an idle poll is a spinning thread, which is what dedicated mode is for.
const IDLE_POLL_US: (u64, u64) = (0, 10_000);
const STUCK_AFTER_MS: (u64, u64) = (1, 60_000);
/// 10 ms per request is far beyond any realistic engine step; more is a typo.
const MAX_WORK_NS: u64 = 10_000_000;

fn check_range(field: String, value: u64, (lo, hi): (u64, u64), unit: &str) -> Result<(), ConfigError> {
    if (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{value} {unit} is outside {lo}..={hi} {unit}"),
        ))
    }
}

/// CPUs the host can use: those in this process's affinity mask would be stricter, but
/// the count of online CPUs is what the runtime pins to.
pub fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Config {
    /// Parses and validates a configuration for a machine with `cpus` CPUs
    /// ([`online_cpus`] for this one; another count checks a file meant for another machine).
    pub fn parse(text: &str, cpus: usize) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text)?;
        config.validate(cpus)?;
        Ok(config)
    }

    /// The configuration as TOML text that [`parse`](Self::parse) reads back as it is: how
    /// the running configuration (with the operator's changes) goes to the host process
    /// that takes this one over in an upgrade.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| invalid("config", format!("cannot write it as TOML: {e}")))
    }

    /// Reads `path` and [`parse`](Self::parse)s it.
    pub fn load(path: impl AsRef<Path>, cpus: usize) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, cpus)
    }

    fn validate(&self, cpus: usize) -> Result<(), ConfigError> {
        check_range("stuck_after_ms".into(), self.stuck_after_ms, STUCK_AFTER_MS, "ms")?;
        let c = &self.control;
        check_range(
            "control.max_connections".into(),
            c.max_connections,
            MAX_CONNECTIONS,
            "connections",
        )?;
        check_range(
            "control.idle_timeout_ms".into(),
            c.idle_timeout_ms,
            CONTROL_TIMEOUT_MS,
            "ms",
        )?;
        check_range(
            "control.request_timeout_ms".into(),
            c.request_timeout_ms,
            CONTROL_TIMEOUT_MS,
            "ms",
        )?;
        if self.control_socket.as_os_str().is_empty() {
            return Err(invalid("control_socket", "must not be empty"));
        }
        if self.group.is_empty() {
            return Err(invalid("group", "at least one [[group]] is required"));
        }
        let mut groups = HashSet::new();
        let mut engines = HashSet::new();
        // core -> (group index, dedicated?) of the first group claiming it.
        let mut claimed: BTreeMap<usize, (usize, bool)> = BTreeMap::new();
        for (gi, g) in self.group.iter().enumerate() {
            let at = format!("group[{gi}]");
            if g.name.is_empty() {
                return Err(invalid(format!("{at}.name"), "must not be empty"));
            }
            if !groups.insert(g.name.as_str()) {
                return Err(invalid(
                    format!("{at}.name"),
                    format!("duplicate group name {:?}", g.name),
                ));
            }
            self.validate_cores(gi, g, cpus, &mut claimed)?;
            self.validate_mode_keys(gi, g)?;
            if g.engine.is_empty() && !pipeline::hosts_stages(self, &g.name) {
                return Err(invalid(
                    format!("{at}.engine"),
                    "at least one [[group.engine]] is required",
                ));
            }
            for (ei, e) in g.engine.iter().enumerate() {
                let at = format!("{at}.engine[{ei}]");
                if e.name.is_empty() {
                    return Err(invalid(format!("{at}.name"), "must not be empty"));
                }
                if !engines.insert(e.name.as_str()) {
                    return Err(invalid(
                        format!("{at}.name"),
                        format!("duplicate engine name {:?}", e.name),
                    ));
                }
                if e.work_ns > MAX_WORK_NS {
                    return Err(invalid(
                        format!("{at}.work_ns"),
                        format!("{} ns is more than the maximum of {MAX_WORK_NS} ns", e.work_ns),
                    ));
                }
                match (e.kind, e.bind) {
                    (EngineKind::UdpEcho, None) => {
                        return Err(invalid(format!("{at}.bind"), "required for kind \"udp_echo\""))
                    }
                    (EngineKind::Echo | EngineKind::Relay | EngineKind::Pony, Some(_)) => {
                        return Err(invalid(format!("{at}.bind"), "only applies to kind \"udp_echo\""))
                    }
                    _ => {}
                }
                kind::validate_options(&at, e)?;
            }
        }
        engines::validate(self)?;
        pipeline::validate(self)
    }

    fn validate_cores(
        &self,
        gi: usize,
        g: &GroupConfig,
        cpus: usize,
        claimed: &mut BTreeMap<usize, (usize, bool)>,
    ) -> Result<(), ConfigError> {
        let field = format!("group[{gi}].cores");
        let dedicated = g.mode == Mode::Dedicated;
        let cores = g.cores.as_deref().unwrap_or_default();
        if dedicated && cores.is_empty() {
            return Err(invalid(field, "dedicated mode needs at least one core"));
        }
        if g.cores.is_some() && cores.is_empty() {
            return Err(invalid(field, "must not be empty (leave it out to use any core)"));
        }
        let mut seen = HashSet::new();
        for &core in cores {
            if core >= cpus {
                return Err(invalid(
                    field,
                    format!(
                        "core {core} does not exist (this machine has cores 0..={})",
                        cpus - 1
                    ),
                ));
            }
            if !seen.insert(core) {
                return Err(invalid(field, format!("core {core} is listed twice")));
            }
            match claimed.get(&core) {
                Some(&(other, other_dedicated)) if dedicated || other_dedicated => {
                    return Err(invalid(
                        field,
                        format!(
                            "core {core} is also used by group {:?}, and dedicated cores cannot be shared",
                            self.group[other].name
                        ),
                    ));
                }
                Some(_) => {}
                None => {
                    claimed.insert(core, (gi, dedicated));
                }
            }
        }
        Ok(())
    }

    fn validate_mode_keys(&self, gi: usize, g: &GroupConfig) -> Result<(), ConfigError> {
        let at = format!("group[{gi}]");
        let fields = [
            ("poll_interval_us", g.poll_interval_us, POLL_INTERVAL_US, "µs"),
            (
                "max_queueing_delay_us",
                g.max_queueing_delay_us,
                MAX_QUEUEING_DELAY_US,
                "µs",
            ),
            ("shrink_after_ms", g.shrink_after_ms, SHRINK_AFTER_MS, "ms"),
        ];
        for (name, value, range, unit) in fields {
            let Some(value) = value else { continue };
            if g.mode != Mode::Compacting {
                return Err(invalid(
                    format!("{at}.{name}"),
                    "only applies to mode \"compacting\"",
                ));
            }
            check_range(format!("{at}.{name}"), value, range, unit)?;
        }
        if let Some(value) = g.idle_poll_us {
            if g.mode == Mode::Dedicated {
                return Err(invalid(
                    format!("{at}.idle_poll_us"),
                    "only applies to modes \"spreading\" and \"compacting\" (dedicated threads always poll)",
                ));
            }
            check_range(format!("{at}.idle_poll_us"), value, IDLE_POLL_US, "µs")?;
        }
        if let Some(mq) = &g.microquanta {
            let field = format!("{at}.microquanta");
            if g.mode == Mode::Dedicated {
                return Err(invalid(
                    field,
                    format!(
                        "group {:?}: only applies to modes \"spreading\" and \"compacting\" (dedicated threads never join the MicroQuanta class)",
                        g.name
                    ),
                ));
            }
            // The class's own rules, so that what passes here is what `Groups::set` takes.
            let class_rule = |e: mq_class::ClassError| {
                let why = e.to_string();
                let why = why
                    .strip_prefix("invalid class group: ")
                    .unwrap_or(&why)
                    .to_owned();
                invalid(field.clone(), format!("group {:?}: {why}", g.name))
            };
            mq_class::group::validate_name(&g.name).map_err(class_rule)?;
            if g.name == mq_class::group::DEFAULT_GROUP_NAME {
                return Err(invalid(
                    field,
                    "group \"default\": cannot have a class group of its own, that name is the default class group's",
                ));
            }
            mq.budget().validate().map_err(class_rule)?;
        }
        Ok(())
    }

    /// Control server options from `allowed_uids` and `[control]`.
    pub fn server_options(&self) -> crate::control::ServerOptions {
        crate::control::ServerOptions {
            allowed_uids: self.allowed_uids.clone(),
            max_connections: self.control.max_connections as usize,
            idle_timeout: Duration::from_millis(self.control.idle_timeout_ms),
            request_timeout: Duration::from_millis(self.control.request_timeout_ms),
            engine_kinds: self
                .group
                .iter()
                .flat_map(|g| &g.engine)
                .map(|e| (e.name.clone(), e.kind.as_str().to_owned()))
                .chain(pipeline::stage_names(self).map(|s| (s.to_owned(), "stage".to_owned())))
                .collect(),
            config: Some(self.clone()),
            binary: None,
            handed_off: None,
            class_groups: crate::class_groups::ClassGroups::for_config(self),
        }
    }

    /// Runtime options from the top-level keys.
    pub fn runtime_options(&self) -> RuntimeOptions {
        RuntimeOptions {
            stuck_after: Duration::from_millis(self.stuck_after_ms),
            microquanta: self.microquanta,
            ..RuntimeOptions::default()
        }
    }

    /// Builds every engine (binding UDP sockets, joining each relay to its next engine)
    /// and the group specs to start the runtime with. Errors name the engine's field (e.g.
    /// a `bind` address in use).
    pub fn build(&self) -> Result<(Vec<GroupSpec>, RuntimeOptions), ConfigError> {
        let built = engines::build_engines(self)?;
        let specs = self
            .group
            .iter()
            .zip(built)
            .map(|(g, engines)| g.spec(engines))
            .collect();
        Ok((specs, self.runtime_options()))
    }
}

impl GroupConfig {
    /// The runtime's spec of this group, with its built engines.
    pub fn spec(&self, engines: Vec<Box<dyn snap_runtime::Engine>>) -> GroupSpec {
        let g = self;
        let defaults = CompactingParams::default();
        GroupSpec {
            name: g.name.clone(),
            mode: g.mode,
            cores: g.cores.clone().unwrap_or_default(),
            engines,
            compacting: CompactingParams {
                poll_interval: g
                    .poll_interval_us
                    .map_or(defaults.poll_interval, Duration::from_micros),
                max_queueing_delay: g
                    .max_queueing_delay_us
                    .map_or(defaults.max_queueing_delay, Duration::from_micros),
                shrink_after: g
                    .shrink_after_ms
                    .map_or(defaults.shrink_after, Duration::from_millis),
            },
            idle_poll: g
                .idle_poll_us
                .map_or(g.mode.default_idle_poll(), Duration::from_micros),
            microquanta_group: g.microquanta.map(|_| g.name.clone()),
        }
    }
}

mod change;
mod engines;
mod fuzz;
pub mod import;
pub mod kind;
pub mod pipeline;
mod pony;
pub mod stage_kind;
#[cfg(test)]
mod tests;
