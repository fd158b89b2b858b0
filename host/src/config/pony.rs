//! The `pony` engine kind: a [`PonyEngine`] on a NIC chosen by the engine's options.
//!
//! ```toml
//! [[group.engine]]
//! name = "pony0"
//! kind = "pony"
//! [group.engine.options]
//! nic = "udp"                # udp | xdp | shm_listen | shm_connect
//! # pipeline = "path0"       # instead of `nic` and its keys: the NIC side is the first queue
//!                            # of that [[pipeline]] (`super::pipeline`), whose last
//!                            # stage owns the NIC
//! bind = "127.0.0.1:7000"    # udp: local address (port 0 picks one)
//!                            # xdp: the interface's IPv4 address and Pony's port (not 0)
//! mtu = 1472                 # udp, optional: largest datagram payload
//! # interface = "veth-a"     # xdp: the interface (in the host's network namespace)
//! # queue = 0                # xdp, optional: its receive queue [0]
//! # xdp_mode = "auto"        # xdp, optional: auto | copy | zerocopy [auto]
//! # path = "/run/snap/wire"  # shm_listen / shm_connect: the wire's rendezvous socket
//! # Limits (optional; defaults in brackets), each at least 1:
//! # max_flows = 4096           # flows of the engine, accepted + opened (at most 1048575)
//! # max_flows_per_app = 1024   # flows one app owns
//! # max_ops_per_app = 4096     # Sends/Reads/Writes of one app not yet completed
//! # max_regions_per_app = 64   # regions one app has registered
//! # max_onesided_bytes = 16777216  # largest one-sided Read/Write, served or started
//! # faults = { loss = 0.05, duplicate = 0.01, reorder = 0.02, corrupt = 0.001, seed = 1 }
//! ```
//!
//! `faults` is a testing knob, never for production: it wraps the NIC (any kind) in the
//! fault injector ([`FaultyNic`]), which makes *sent* packets worse on purpose, from a
//! seeded RNG: each key is a probability in `[0, 1]` (missing keys are 0; `seed` defaults
//! to 0). It is how the soak test (`host/tests/soak`) puts loss, duplication, reordering
//! and corruption on a real link; what was injected shows in `status` as the engine's
//! `faults.tx` counters.
//!
//! A peer's Connect beyond `max_flows` is rejected (`TooManyFlows`), an app's request
//! beyond a limit gets the matching error (`TooManyFlows`, `TooManyOps`,
//! `TooManyRegions`, `TooLarge`); each refusal is counted in the engine's counters in
//! `status` (`limit_flows`, `limit_ops`, `limit_regions`, `onesided_too_large`).
//!
//! `nic = "xdp"` is AF_XDP ([`XdpNic`]): kernel bypass on one queue of an interface, with
//! UDP addressing, so it talks to a host on `nic = "udp"`. It needs root (or CAP_NET_ADMIN,
//! CAP_NET_RAW and CAP_BPF); `auto` uses zero-copy where the driver offers it and copy
//! mode elsewhere (veth), `zerocopy` fails where the driver does not offer it. The MTU
//! follows the interface's.
//!
//! Every other setting is [`PonyConfig::default`]. `shm_listen` blocks the host's start-up until the peer host
//! connects (a wire needs both ends), so start the listening host first.

use std::net::{SocketAddr, SocketAddrV4};

use pony_engine::nic::{FaultConfig, FaultyNic, Nic, PipeNic, ShmWire, ShmWireConfig, UdpNic};
use pony_engine::{PonyConfig, PonyEngine, MAX_FLOWS_LIMIT};
use pony_xdp::{XdpConfig, XdpMode, XdpNic};
use snap_runtime::Engine;
use toml::{Table, Value};

/// Smallest MTU accepted: a Pony header and some payload must fit.
const MIN_MTU: i64 = 256;
/// Largest MTU accepted: a UDP datagram's payload.
const MAX_MTU: i64 = 65_507;

/// The options, checked: the NIC, and the faults to inject on it (if any).
#[derive(Debug)]
struct Options {
    nic: NicOptions,
    faults: Option<FaultConfig>,
    /// The engine's configuration: its limits set, the rest default.
    engine: PonyConfig,
}

/// The NIC options, checked.
#[derive(Debug)]
enum NicOptions {
    Udp {
        bind: SocketAddr,
        mtu: Option<usize>,
    },
    Xdp(XdpConfig),
    ShmListen {
        path: String,
    },
    ShmConnect {
        path: String,
    },
    /// The first queue of the named `[[pipeline]]`.
    Pipeline {
        name: String,
    },
}

fn string<'t>(options: &'t Table, key: &str) -> Result<Option<&'t str>, String> {
    match options.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("{key}: expected a string, got {}", other.type_str())),
    }
}

/// The limit options, each an integer in 1..=its maximum.
const LIMIT_KEYS: [&str; 5] = [
    "max_flows",
    "max_flows_per_app",
    "max_ops_per_app",
    "max_regions_per_app",
    "max_onesided_bytes",
];

/// The engine's configuration with the limits the options set.
fn engine_config(options: &Table) -> Result<PonyConfig, String> {
    let mut c = PonyConfig::default();
    for key in LIMIT_KEYS {
        let max = if key == "max_flows" {
            MAX_FLOWS_LIMIT
        } else {
            u32::MAX
        };
        let v = match options.get(key) {
            None => continue,
            Some(Value::Integer(v)) if (1..=i64::from(max)).contains(v) => *v as u32,
            Some(Value::Integer(v)) => return Err(format!("{key}: {v} is outside 1..={max}")),
            Some(other) => return Err(format!("{key}: expected an integer, got {}", other.type_str())),
        };
        match key {
            "max_flows" => c.limits.max_flows = v,
            "max_flows_per_app" => c.limits.max_flows_per_app = v,
            "max_ops_per_app" => c.limits.max_ops_per_app = v,
            "max_regions_per_app" => c.limits.max_regions_per_app = v,
            _ => c.max_onesided_bytes = v,
        }
    }
    Ok(c)
}

/// The `faults` table: probabilities in `[0, 1]` and a seed; sent packets only.
fn faults(value: &Value) -> Result<FaultConfig, String> {
    const KEYS: [&str; 5] = ["loss", "duplicate", "reorder", "corrupt", "seed"];
    let Value::Table(t) = value else {
        return Err(format!("faults: expected a table, got {}", value.type_str()));
    };
    if let Some(k) = t.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!("faults: unknown key {k:?} (known: {})", KEYS.join(", ")));
    }
    let probability = |key: &str| -> Result<f64, String> {
        let p = match t.get(key) {
            None => return Ok(0.0),
            Some(Value::Float(p)) => *p,
            Some(Value::Integer(p)) => *p as f64,
            Some(other) => {
                return Err(format!(
                    "faults.{key}: expected a number, got {}",
                    other.type_str()
                ))
            }
        };
        if (0.0..=1.0).contains(&p) {
            Ok(p)
        } else {
            Err(format!("faults.{key}: {p} is not a probability in [0, 1]"))
        }
    };
    let seed = match t.get("seed") {
        None => 0,
        Some(Value::Integer(s)) if *s >= 0 => *s as u64,
        Some(Value::Integer(s)) => return Err(format!("faults.seed: {s} is negative")),
        Some(other) => {
            return Err(format!(
                "faults.seed: expected an integer, got {}",
                other.type_str()
            ))
        }
    };
    Ok(FaultConfig {
        seed,
        loss: probability("loss")?,
        duplicate: probability("duplicate")?,
        reorder: probability("reorder")?,
        corrupt: probability("corrupt")?,
        ..FaultConfig::default()
    })
}

fn parse(options: &Table) -> Result<Options, String> {
    const KEYS: [&str; 9] = [
        "nic",
        "pipeline",
        "bind",
        "mtu",
        "path",
        "interface",
        "queue",
        "xdp_mode",
        "faults",
    ];
    let known = |k: &str| KEYS.contains(&k) || LIMIT_KEYS.contains(&k);
    if let Some(k) = options.keys().find(|k| !known(k.as_str())) {
        return Err(format!(
            "unknown option {k:?} (known: {}, {})",
            KEYS.join(", "),
            LIMIT_KEYS.join(", ")
        ));
    }
    let faults = options.get("faults").map(faults).transpose()?;
    Ok(Options {
        nic: parse_nic(options)?,
        faults,
        engine: engine_config(options)?,
    })
}

/// The keys that choose and configure a NIC (`faults` applies to every kind).
const NIC_KEYS: [&str; 7] = ["nic", "bind", "mtu", "path", "interface", "queue", "xdp_mode"];

fn parse_nic(options: &Table) -> Result<NicOptions, String> {
    const KEYS: [&str; 7] = NIC_KEYS;
    if let Some(name) = string(options, "pipeline")? {
        if let Some(k) = KEYS.iter().find(|k| options.contains_key(**k)) {
            return Err(format!(
                "{k}: does not apply with pipeline = {name:?} (the pipeline's last stage owns the NIC: set it in [pipeline.nic])"
            ));
        }
        if options.contains_key("faults") {
            return Err(format!(
                "faults: does not apply with pipeline = {name:?} (set it in [pipeline.nic])"
            ));
        }
        return Ok(NicOptions::Pipeline {
            name: name.to_owned(),
        });
    }
    let nic = string(options, "nic")?
        .ok_or("nic: required (udp, xdp, shm_listen or shm_connect), or pipeline = \"NAME\"")?;
    let only = |allowed: &[&str]| match KEYS
        .iter()
        .skip(1)
        .find(|k| !allowed.contains(k) && options.contains_key(**k))
    {
        Some(k) => Err(format!("{k}: does not apply to nic = {nic:?}")),
        None => Ok(()),
    };
    match nic {
        "udp" => {
            only(&["bind", "mtu"])?;
            let bind = string(options, "bind")?.ok_or("bind: required for nic = \"udp\"")?;
            let bind = bind
                .parse()
                .map_err(|e| format!("bind: {bind:?} is not an ip:port address: {e}"))?;
            let mtu = match options.get("mtu") {
                None => None,
                Some(Value::Integer(m)) if (MIN_MTU..=MAX_MTU).contains(m) => Some(*m as usize),
                Some(Value::Integer(m)) => return Err(format!("mtu: {m} is outside {MIN_MTU}..={MAX_MTU}")),
                Some(other) => return Err(format!("mtu: expected an integer, got {}", other.type_str())),
            };
            Ok(NicOptions::Udp { bind, mtu })
        }
        "xdp" => {
            only(&["bind", "interface", "queue", "xdp_mode"])?;
            let interface = string(options, "interface")?
                .ok_or("interface: required for nic = \"xdp\"")?
                .to_owned();
            let bind = string(options, "bind")?.ok_or("bind: required for nic = \"xdp\"")?;
            let bind: SocketAddrV4 = bind
                .parse()
                .map_err(|e| format!("bind: {bind:?} is not an IPv4 ip:port address: {e}"))?;
            if bind.port() == 0 {
                return Err(format!(
                    "bind: {bind} needs a port for nic = \"xdp\" (0 picks none)"
                ));
            }
            let queue = match options.get("queue") {
                None => 0,
                Some(Value::Integer(q)) => {
                    u32::try_from(*q).map_err(|_| format!("queue: {q} is not a queue number"))?
                }
                Some(other) => return Err(format!("queue: expected an integer, got {}", other.type_str())),
            };
            let mode = match string(options, "xdp_mode")? {
                None | Some("auto") => XdpMode::Auto,
                Some("copy") => XdpMode::Copy,
                Some("zerocopy") => XdpMode::ZeroCopy,
                Some(other) => {
                    return Err(format!(
                        "xdp_mode: unknown mode {other:?} (known: auto, copy, zerocopy)"
                    ))
                }
            };
            Ok(NicOptions::Xdp(XdpConfig {
                interface,
                queue,
                bind,
                mode,
                ..XdpConfig::default()
            }))
        }
        "shm_listen" | "shm_connect" => {
            only(&["path"])?;
            let path = string(options, "path")?
                .ok_or_else(|| format!("path: required for nic = {nic:?}"))?
                .to_owned();
            Ok(if nic == "shm_listen" {
                NicOptions::ShmListen { path }
            } else {
                NicOptions::ShmConnect { path }
            })
        }
        other => Err(format!(
            "nic: unknown NIC {other:?} (known: udp, xdp, shm_listen, shm_connect)"
        )),
    }
}

/// Checks a Pony engine's options; the message names the option.
pub(super) fn validate(options: &Table) -> Result<(), String> {
    parse(options).map(drop)
}

/// The pipeline a Pony engine's options name instead of a NIC, if any (options already
/// validated).
pub(super) fn pipeline_of(options: &Table) -> Option<&str> {
    options.get("pipeline").and_then(Value::as_str)
}

/// Checks a pipeline's `[pipeline.nic]` table: the NIC keys of a Pony engine and `faults`.
pub(super) fn validate_wire(options: &Table) -> Result<(), String> {
    if let Some(k) = options
        .keys()
        .find(|k| !NIC_KEYS.contains(&k.as_str()) && k.as_str() != "faults")
    {
        return Err(format!(
            "unknown option {k:?} (known: {}, faults)",
            NIC_KEYS.join(", ")
        ));
    }
    if options.contains_key("pipeline") {
        return Err("pipeline: a pipeline's NIC cannot be another pipeline".into());
    }
    parse_nic(options)?;
    options.get("faults").map(faults).transpose()?;
    Ok(())
}

/// Builds the NIC a `[pipeline.nic]` table describes (validated by [`validate_wire`]),
/// with its fault injector if `faults` is set. `label` names it in logs.
pub(super) fn build_wire(label: &str, options: &Table) -> Result<Box<dyn Nic>, String> {
    validate_wire(options)?;
    let fault_cfg = options.get("faults").map(faults).transpose()?;
    build_nic(label, parse_nic(options)?, fault_cfg, None)
}

fn build_nic(
    name: &str,
    nic: NicOptions,
    faults: Option<FaultConfig>,
    pipe: Option<PipeNic>,
) -> Result<Box<dyn Nic>, String> {
    let nic: Box<dyn Nic> = match nic {
        NicOptions::Udp { bind, mtu } => {
            let nic = UdpNic::bind(bind).map_err(|e| format!("cannot bind {bind}: {e}"))?;
            let nic = match mtu {
                Some(m) => nic.with_mtu(m),
                None => nic,
            };
            let addr = nic.local_addr().map_err(|e| e.to_string())?;
            log::info!("{name}: Pony on UDP {addr} (mtu {})", nic.mtu());
            Box::new(nic)
        }
        NicOptions::Xdp(config) => {
            let nic = XdpNic::open(&config).map_err(|e| e.to_string())?;
            log::info!(
                "{name}: Pony on AF_XDP {} queue {} {} (program {}, {} mode, mtu {})",
                config.interface,
                config.queue,
                config.bind,
                nic.attach_mode(),
                if nic.is_zero_copy() { "zero-copy" } else { "copy" },
                nic.mtu()
            );
            Box::new(nic)
        }
        NicOptions::ShmListen { path } => {
            log::info!("{name}: waiting for the peer host on shared-memory wire {path}");
            Box::new(
                ShmWire::listen(&path, ShmWireConfig::default())
                    .map_err(|e| format!("shm wire {path}: {e}"))?,
            )
        }
        NicOptions::ShmConnect { path } => {
            Box::new(ShmWire::connect(&path).map_err(|e| format!("shm wire {path}: {e}"))?)
        }
        NicOptions::Pipeline { name: pipeline } => {
            let pipe = pipe.ok_or_else(|| {
                format!(
                    "pipeline: {pipeline:?} is built when the host starts; a Pony engine on a pipeline cannot be added at run time"
                )
            })?;
            log::info!("{name}: Pony on pipeline {pipeline} (mtu {})", pipe.mtu());
            Box::new(pipe)
        }
    };
    Ok(match faults {
        Some(cfg) => {
            log::warn!("{name}: injecting faults into sent packets (a testing knob): {cfg:?}");
            Box::new(FaultyNic::new(nic).on_send(cfg))
        }
        None => nic,
    })
}

/// Builds the Pony engine `name` on the NIC its options choose (`pipe`: the first queue
/// of the pipeline they name, if they name one); the message names the option.
pub(super) fn build(
    name: &str,
    work_ns: u64,
    options: &Table,
    pipe: Option<PipeNic>,
) -> Result<Box<dyn Engine>, String> {
    if work_ns != 0 {
        // A transport's cost is its own; modelled CPU cost belongs to the echo engines.
        return Err("work_ns is not supported by kind \"pony\"".into());
    }
    let Options { nic, faults, engine } = parse(options)?;
    let nic = build_nic(name, nic, faults, pipe)?;
    Ok(Box::new(PonyEngine::new(name, nic, engine)))
}

/// Whether this host reads a Pony engine's exported state (its format version);
/// `claimed`: the test hook of [`super::import`].
pub(super) fn check_state(state: &[u8], claimed: Option<u16>) -> Result<(), String> {
    let info = PonyEngine::check_snapshot(state).map_err(|e| e.to_string())?;
    if let Some(v) = claimed.filter(|&v| v != pony_engine::FORMAT_VERSION) {
        return Err(format!(
            "unsupported state format version {} (this host reads version {v})",
            pony_engine::FORMAT_VERSION
        ));
    }
    let _ = info;
    Ok(())
}

/// The Pony engine `name` rebuilt from its exports and the descriptors of its state's fd
/// table (one group per entry, the NIC's descriptors first: a UDP socket, or an AF_XDP
/// NIC's group, `pony_xdp::handover`).
pub(super) fn import(
    name: &str,
    options: &Table,
    full: &[u8],
    deltas: &[Vec<u8>],
    groups: Vec<Vec<std::os::fd::OwnedFd>>,
) -> Result<Box<dyn Engine>, String> {
    let Options { nic, faults, engine } = parse(options)?;
    let last = deltas.last().map_or(full, Vec::as_slice);
    let info = PonyEngine::check_snapshot(last).map_err(|e| e.to_string())?;
    if info.fds.first() != Some(&pony_engine::FdUse::Nic) {
        return Err("the state's fd table does not start with the NIC".into());
    }
    let mut groups = groups.into_iter();
    let nic: Box<dyn Nic> = match nic {
        NicOptions::Udp { mtu, .. } => {
            let socket = match groups.next().map(|mut g| (g.len(), g.pop())) {
                Some((1, Some(fd))) => fd,
                _ => return Err("the NIC's socket was not handed over (one descriptor)".into()),
            };
            let ty =
                rustix::net::sockopt::socket_type(&socket).map_err(|e| format!("the NIC's socket: {e}"))?;
            if ty != rustix::net::SocketType::DGRAM {
                return Err(format!("the NIC's descriptor is not a datagram socket ({ty:?})"));
            }
            let nic = UdpNic::from_socket(std::net::UdpSocket::from(socket))
                .map_err(|e| format!("the NIC's socket: {e}"))?;
            let nic = match mtu {
                Some(m) => nic.with_mtu(m),
                None => nic,
            };
            Box::new(nic)
        }
        NicOptions::Xdp(config) => {
            let fds = groups
                .next()
                .ok_or("the NIC's descriptors were not handed over")?;
            Box::new(XdpNic::adopt(&config, fds).map_err(|e| e.to_string())?)
        }
        _ => return Err("only a Pony engine on a UDP or AF_XDP NIC moves between host processes".into()),
    };
    let nic: Box<dyn Nic> = match faults {
        Some(cfg) => Box::new(FaultyNic::new(nic).on_send(cfg)),
        None => nic,
    };
    let handover =
        pony_engine::Handover::from_fds(&info.fds[1..], groups.collect()).map_err(|e| e.to_string())?;
    let e = PonyEngine::import(name, nic, engine, full, deltas, handover).map_err(|e| e.to_string())?;
    Ok(Box::new(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pony_engine::PonyLimits;

    fn table(text: &str) -> Table {
        text.parse().unwrap()
    }

    #[test]
    fn options_are_checked() {
        let ok = |t: &str| validate(&table(t));
        ok("nic = \"udp\"\nbind = \"127.0.0.1:0\"\nmtu = 1400").unwrap();
        ok("nic = \"shm_connect\"\npath = \"/tmp/w\"").unwrap();
        let l = "nic = \"udp\"\nbind = \"127.0.0.1:0\"\nmax_flows = 8\nmax_flows_per_app = 2\nmax_ops_per_app = 3\nmax_regions_per_app = 4\nmax_onesided_bytes = 5";
        ok(l).unwrap();
        let want = PonyLimits {
            max_flows: 8,
            max_flows_per_app: 2,
            max_ops_per_app: 3,
            max_regions_per_app: 4,
        };
        let c = engine_config(&table(l)).unwrap();
        assert_eq!((c.limits, c.max_onesided_bytes), (want, 5));
        let cases = [
            ("", "nic: required"),
            ("nic = \"tcp\"", "nic: unknown NIC \"tcp\""),
            ("nic = \"udp\"", "bind: required"),
            ("nic = \"udp\"\nbind = \"nowhere\"", "bind: \"nowhere\" is not"),
            (
                "nic = \"udp\"\nbind = \"127.0.0.1:0\"\nmtu = 10",
                "mtu: 10 is outside",
            ),
            (
                "nic = \"udp\"\nbind = \"127.0.0.1:0\"\npath = \"x\"",
                "path: does not apply",
            ),
            ("nic = \"shm_listen\"", "path: required"),
            ("nic = \"udp\"\nspeed = 1", "unknown option \"speed\""),
            (
                "nic = \"udp\"\nbind = \"127.0.0.1:0\"\nmax_flows = 0",
                "max_flows: 0 is outside 1..=1048575",
            ),
            (
                "nic = \"udp\"\nbind = \"127.0.0.1:0\"\nmax_ops_per_app = \"many\"",
                "max_ops_per_app: expected an integer",
            ),
            (
                "nic = \"udp\"\nbind = \"127.0.0.1:0\"\nfaults = 0.1",
                "faults: expected a table",
            ),
            (
                "nic = \"udp\"\nbind = \"127.0.0.1:0\"\nfaults = { loss = 1.5 }",
                "faults.loss: 1.5 is not a probability",
            ),
            (
                "nic = \"udp\"\nbind = \"127.0.0.1:0\"\nfaults = { corrupt = -0.1 }",
                "faults.corrupt: -0.1 is not a probability",
            ),
            (
                "nic = \"udp\"\nbind = \"127.0.0.1:0\"\nfaults = { reorder = \"often\" }",
                "faults.reorder: expected a number",
            ),
            (
                "nic = \"udp\"\nbind = \"127.0.0.1:0\"\nfaults = { seed = -1 }",
                "faults.seed: -1 is negative",
            ),
            (
                "nic = \"udp\"\nbind = \"127.0.0.1:0\"\nfaults = { jitter = 1 }",
                "faults: unknown key \"jitter\"",
            ),
        ];
        for (text, want) in cases {
            let e = ok(text).unwrap_err();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn xdp_options_are_checked() {
        let nic = |t: &str| parse(&table(t)).map(|o| o.nic);
        let full = "nic = \"xdp\"\ninterface = \"veth-a\"\nbind = \"10.77.0.1:7000\"\nqueue = 2\nxdp_mode = \"zerocopy\"";
        let Ok(NicOptions::Xdp(c)) = nic(full) else {
            panic!("{full:?} not parsed as xdp")
        };
        assert_eq!(
            (c.interface.as_str(), c.bind, c.queue, c.mode),
            ("veth-a", "10.77.0.1:7000".parse().unwrap(), 2, XdpMode::ZeroCopy)
        );
        // Defaults: queue 0, auto mode, the default UMEM sizes.
        let Ok(NicOptions::Xdp(c)) = nic("nic = \"xdp\"\ninterface = \"eth0\"\nbind = \"10.0.0.1:7000\"")
        else {
            panic!("minimal xdp options not parsed")
        };
        let d = XdpConfig::default();
        assert_eq!(
            (c.queue, c.mode, c.frame_size, c.ring_size),
            (0, XdpMode::Auto, d.frame_size, d.ring_size)
        );
        let Ok(NicOptions::Xdp(c)) =
            nic("nic = \"xdp\"\ninterface = \"eth0\"\nbind = \"10.0.0.1:7000\"\nxdp_mode = \"copy\"")
        else {
            panic!("copy mode not parsed")
        };
        assert_eq!(c.mode, XdpMode::Copy);
        let x = "nic = \"xdp\"\ninterface = \"eth0\"\n";
        let cases = [
            (
                "nic = \"xdp\"\nbind = \"10.0.0.1:7000\"".to_owned(),
                "interface: required",
            ),
            (x.to_owned(), "bind: required"),
            (
                format!("{x}bind = \"[::1]:7000\""),
                "bind: \"[::1]:7000\" is not an IPv4",
            ),
            (
                format!("{x}bind = \"10.0.0.1:0\""),
                "bind: 10.0.0.1:0 needs a port",
            ),
            (
                format!("{x}bind = \"10.0.0.1:7000\"\nqueue = -1"),
                "queue: -1 is not",
            ),
            (
                format!("{x}bind = \"10.0.0.1:7000\"\nqueue = \"0\""),
                "queue: expected an integer",
            ),
            (
                format!("{x}bind = \"10.0.0.1:7000\"\nxdp_mode = \"fast\""),
                "xdp_mode: unknown mode \"fast\"",
            ),
            (
                format!("{x}bind = \"10.0.0.1:7000\"\nmtu = 1400"),
                "mtu: does not apply",
            ),
            (
                "nic = \"udp\"\nbind = \"127.0.0.1:0\"\ninterface = \"eth0\"".to_owned(),
                "interface: does not apply",
            ),
            (
                "nic = \"udp\"\nbind = \"127.0.0.1:0\"\nxdp_mode = \"copy\"".to_owned(),
                "xdp_mode: does not apply",
            ),
        ];
        for (text, want) in cases {
            let e = validate(&table(&text)).unwrap_err();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
    }

    /// Building on an interface that does not exist fails with pony-xdp's error naming it
    /// (and, unprivileged, the missing privilege), never a panic.
    #[test]
    fn xdp_build_errors_name_what_is_missing() {
        let Err(e) = build(
            "p",
            0,
            &table("nic = \"xdp\"\ninterface = \"xdp-none0\"\nbind = \"127.0.0.1:7999\""),
            None,
        ) else {
            panic!("built on a missing interface")
        };
        assert!(
            e.contains("xdp-none0") || e.contains("permission denied") || e.contains("no AF_XDP"),
            "{e}"
        );
    }

    #[test]
    fn faults_are_parsed_into_the_injector_config() {
        let o = parse(&table(
            "nic = \"udp\"\nbind = \"127.0.0.1:0\"\n\
             faults = { loss = 0.05, duplicate = 0.01, reorder = 0.02, corrupt = 0.001, seed = 7 }",
        ))
        .unwrap();
        let f = o.faults.expect("faults parsed");
        assert_eq!(
            (f.loss, f.duplicate, f.reorder, f.corrupt, f.seed),
            (0.05, 0.01, 0.02, 0.001, 7)
        );
        // Missing keys inject nothing; no table, no injector.
        let f = parse(&table(
            "nic = \"udp\"\nbind = \"127.0.0.1:0\"\nfaults = { loss = 1 }",
        ))
        .unwrap()
        .faults
        .unwrap();
        assert_eq!((f.loss, f.duplicate, f.corrupt, f.seed), (1.0, 0.0, 0.0, 0));
        assert!(parse(&table("nic = \"udp\"\nbind = \"127.0.0.1:0\""))
            .unwrap()
            .faults
            .is_none());
    }

    #[test]
    fn a_faulty_engine_counts_its_faults() {
        // The injector's counters show up among the engine's, and only with an injector.
        let e = build(
            "p",
            0,
            &table("nic = \"udp\"\nbind = \"127.0.0.1:0\"\nfaults = { loss = 1.0 }"),
            None,
        )
        .unwrap();
        let c = e.counters().expect("a Pony engine has counters");
        assert_eq!(c["faults"]["tx"]["dropped"], 0);
        let plain = build("q", 0, &table("nic = \"udp\"\nbind = \"127.0.0.1:0\""), None).unwrap();
        let c = plain.counters().expect("a Pony engine has counters");
        assert!(c["faults"].is_null(), "{c}");
    }

    #[test]
    fn builds_on_udp() {
        let e = build("p", 0, &table("nic = \"udp\"\nbind = \"127.0.0.1:0\""), None).unwrap();
        assert_eq!(e.name(), "p");
        let Err(err) = build("p", 5, &table("nic = \"udp\"\nbind = \"127.0.0.1:0\""), None) else {
            panic!("work_ns accepted")
        };
        assert!(err.contains("work_ns"), "{err}");
    }
}
