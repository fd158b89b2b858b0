//! The host's declarative configuration: a TOML file listing engine groups, their
//! scheduling mode and cores, and the engines in each, turned into the
//! [`GroupSpec`]s and [`RuntimeOptions`] that start the runtime.
//!
//! ```toml
//! control_socket = "/run/snap/snap.sock"   # optional, this is the default
//! stuck_after_ms = 100                     # optional
//! allowed_uids = [1000]                    # control socket users besides root and the host's uid
//! microquanta = true                       # spreading/compacting threads join the MicroQuanta class if it is loaded
//! [[group]]
//! name = "latency"
//! mode = "spreading"              # dedicated | spreading | compacting
//! cores = [1]                     # required for dedicated; optional otherwise
//! [[group.engine]]
//! name = "echo0"
//! kind = "echo"                   # echo | udp_echo | relay | a plugin kind
//! work_ns = 0
//! # [group.engine.options]        # plugin kinds only: given to the plugin as is
//! [[group]]
//! name = "pipeline"
//! mode = "spreading"
//! [[group.engine]]
//! name = "relay0"
//! kind = "relay"                  # apps attach here; requests go on to `next`
//! next = "echo0"                  # an echo or relay engine, in any group
//! ```
//!
//! A relay and its `next` engine form a pipeline: the relay forwards its apps' requests over
//! an internal channel (SPSC rings and doorbells, as for an app) to the next engine and
//! routes the responses back ([`crate::relay`]). `next` chains may be any length but not
//! cycle.
//!
//! Engine kinds beyond the built-in ones come from [`EngineFactory`] plugins passed to
//! [`Config::parse_with`] and [`Config::build_with`]: this crate cannot depend on the
//! crates that define such engines (Pony depends on it), so the binary that links both
//! hands the factories in. A plugin engine gets its `[group.engine.options]` table
//! verbatim; relays cannot forward to plugin engines (their app protocol is their own).
//!
//! Parsing is strict: unknown keys are errors (with their line, from the `toml` crate), and
//! every semantic error names its field by path, e.g. `group[1].cores: ...`, so a mistake
//! is found without reading this code. Compacting-only keys (`poll_interval_us`,
//! `max_queueing_delay_us`, `shrink_after_ms`) are refused in other modes rather than
//! silently ignored.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::engine::Engine;
use crate::runtime::{CompactingParams, GroupSpec, Mode, RuntimeOptions};

/// The `toml` crate whose [`toml::Table`] plugins receive, so they need not pick the same
/// version themselves.
pub use toml;

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
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    /// Engine groups, at least one.
    #[serde(default)]
    pub group: Vec<GroupConfig>,
}

fn default_true() -> bool {
    true
}

fn default_socket() -> PathBuf {
    PathBuf::from(DEFAULT_CONTROL_SOCKET)
}

fn default_stuck_after_ms() -> u64 {
    100
}

/// One `[[group]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    /// The group's engines, at least one.
    #[serde(default)]
    pub engine: Vec<EngineConfig>,
}

/// Which engine to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineKind {
    /// [`crate::echo::EchoEngine`]: serves app channels.
    Echo,
    /// [`crate::udp_echo::UdpEchoEngine`]: echoes datagrams on a UDP socket.
    UdpEcho,
    /// [`crate::relay::RelayEngine`]: serves app channels by forwarding to `next`.
    Relay,
    /// Any other name: built by the [`EngineFactory`] of that kind, if one is given
    /// (validation refuses it otherwise).
    Plugin(String),
}

impl EngineKind {
    /// The name used in the file.
    pub fn as_str(&self) -> &str {
        match self {
            EngineKind::Echo => "echo",
            EngineKind::UdpEcho => "udp_echo",
            EngineKind::Relay => "relay",
            EngineKind::Plugin(k) => k,
        }
    }
}

impl<'de> Deserialize<'de> for EngineKind {
    /// Any string: unknown kinds are refused by validation, which knows the plugins and
    /// can name the field.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "echo" => EngineKind::Echo,
            "udp_echo" => EngineKind::UdpEcho,
            "relay" => EngineKind::Relay,
            _ => EngineKind::Plugin(s),
        })
    }
}

/// A kind of engine defined outside this crate (e.g. Pony), that the configuration can
/// name in `kind`.
pub trait EngineFactory: Send + Sync {
    /// The `kind` string it builds (not one of the built-in kinds).
    fn kind(&self) -> &'static str;
    /// Whether its engines serve apps over the control socket ([`crate::Engine::app_facing`]).
    fn accepts_apps(&self) -> bool;
    /// Checks an engine's `options` at parse time, without acquiring anything (sockets are
    /// bound in [`Self::build`]). The default accepts anything.
    fn validate(&self, options: &toml::Table) -> Result<(), String> {
        let _ = options;
        Ok(())
    }
    /// Builds the engine `name` from its `options` (empty if the file has none).
    fn build(&self, name: &str, work_ns: u64, options: &toml::Table) -> Result<Box<dyn Engine>, String>;
}

fn factory<'f>(factories: &[&'f dyn EngineFactory], kind: &str) -> Option<&'f dyn EngineFactory> {
    factories.iter().copied().find(|f| f.kind() == kind)
}

/// One `[[group.engine]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    /// Plugin kinds only: settings the plugin interprets.
    pub options: Option<toml::Table>,
}

const POLL_INTERVAL_US: (u64, u64) = (5, 100_000);
const MAX_QUEUEING_DELAY_US: (u64, u64) = (1, 1_000_000);
const SHRINK_AFTER_MS: (u64, u64) = (1, 60_000);
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
fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Config {
    /// Parses and validates a configuration, checking cores against this machine.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        Self::parse_with(text, &[])
    }

    /// [`Self::parse`], also accepting the kinds of `factories`.
    pub fn parse_with(text: &str, factories: &[&dyn EngineFactory]) -> Result<Self, ConfigError> {
        Self::parse_for_cpus_with(text, online_cpus(), factories)
    }

    /// [`Self::parse`] for a machine with `cpus` CPUs (for tests and for checking a file
    /// meant for another machine).
    pub fn parse_for_cpus(text: &str, cpus: usize) -> Result<Self, ConfigError> {
        Self::parse_for_cpus_with(text, cpus, &[])
    }

    /// [`Self::parse_for_cpus`], also accepting the kinds of `factories`.
    pub fn parse_for_cpus_with(
        text: &str,
        cpus: usize,
        factories: &[&dyn EngineFactory],
    ) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text)?;
        config.validate(cpus, factories)?;
        Ok(config)
    }

    /// Reads and parses a file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        Self::load_with(path, &[])
    }

    /// [`Self::load`], also accepting the kinds of `factories`.
    pub fn load_with(path: impl AsRef<Path>, factories: &[&dyn EngineFactory]) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse_with(&text, factories)
    }

    fn validate(&self, cpus: usize, factories: &[&dyn EngineFactory]) -> Result<(), ConfigError> {
        check_range("stuck_after_ms".into(), self.stuck_after_ms, STUCK_AFTER_MS, "ms")?;
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
            self.validate_compacting(gi, g)?;
            if g.engine.is_empty() {
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
                match (&e.kind, e.bind) {
                    (EngineKind::UdpEcho, None) => {
                        return Err(invalid(format!("{at}.bind"), "required for kind \"udp_echo\""))
                    }
                    (EngineKind::Echo | EngineKind::Relay | EngineKind::Plugin(_), Some(_)) => {
                        return Err(invalid(format!("{at}.bind"), "only applies to kind \"udp_echo\""))
                    }
                    _ => {}
                }
                validate_plugin(&at, e, factories)?;
            }
        }
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

    fn validate_compacting(&self, gi: usize, g: &GroupConfig) -> Result<(), ConfigError> {
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
        Ok(())
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
        self.build_with(&[])
    }

    /// [`Self::build`], building plugin kinds with `factories` (the same ones the
    /// configuration was parsed with).
    pub fn build_with(
        &self,
        factories: &[&dyn EngineFactory],
    ) -> Result<(Vec<GroupSpec>, RuntimeOptions), ConfigError> {
        let built = pipeline::build_engines(self, factories)?;
        let mut specs = Vec::with_capacity(self.group.len());
        for (g, engines) in self.group.iter().zip(built) {
            let defaults = CompactingParams::default();
            specs.push(GroupSpec {
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
            });
        }
        Ok((specs, self.runtime_options()))
    }
}

/// Checks `kind` against the plugins and `options` against the kind.
fn validate_plugin(at: &str, e: &EngineConfig, factories: &[&dyn EngineFactory]) -> Result<(), ConfigError> {
    let EngineKind::Plugin(kind) = &e.kind else {
        return match e.options {
            Some(_) => Err(invalid(
                format!("{at}.options"),
                format!("only applies to plugin kinds, not \"{}\"", e.kind.as_str()),
            )),
            None => Ok(()),
        };
    };
    let Some(f) = factory(factories, kind) else {
        let mut known = vec!["echo", "udp_echo", "relay"];
        known.extend(factories.iter().map(|f| f.kind()));
        return Err(invalid(
            format!("{at}.kind"),
            format!("unknown kind {kind:?} (known: {})", known.join(", ")),
        ));
    };
    f.validate(e.options.as_ref().unwrap_or(&toml::Table::new()))
        .map_err(|message| invalid(format!("{at}.options"), message))
}

mod pipeline;
#[cfg(test)]
mod tests;
