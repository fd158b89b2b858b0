//! The `pony` engine kind: a [`PonyEngine`] on a NIC chosen by the engine's options.
//!
//! ```toml
//! [[group.engine]]
//! name = "pony0"
//! kind = "pony"
//! [group.engine.options]
//! nic = "udp"                # udp | shm_listen | shm_connect
//! bind = "127.0.0.1:7000"    # udp: local address (port 0 picks one)
//! mtu = 1472                 # udp, optional: largest datagram payload
//! # path = "/run/snap/wire"  # shm_listen / shm_connect: the wire's rendezvous socket
//! # Limits (optional; defaults in brackets), each at least 1:
//! # max_flows = 4096           # flows of the engine, accepted + opened (at most 1048575)
//! # max_flows_per_app = 1024   # flows one app owns
//! # max_ops_per_app = 4096     # Sends/Reads/Writes of one app not yet completed
//! # max_regions_per_app = 64   # regions one app has registered
//! ```
//!
//! A peer's Connect beyond `max_flows` is rejected (`TooManyFlows`), an app's request
//! beyond a limit gets the matching error (`TooManyFlows`, `TooManyOps`,
//! `TooManyRegions`); each refusal is counted in the engine's counters in `status`
//! (`limit_flows`, `limit_ops`, `limit_regions`). Every other setting is
//! [`PonyConfig::default`]. `shm_listen` blocks the host's start-up until the peer host
//! connects (a wire needs both ends), so start the listening host first.

use std::net::SocketAddr;

use pony_engine::nic::{Nic, ShmWire, ShmWireConfig, UdpNic};
use pony_engine::{PonyConfig, PonyEngine, PonyLimits, MAX_FLOWS_LIMIT};
use snap_runtime::Engine;
use toml::{Table, Value};

/// Smallest MTU accepted: a Pony header and some payload must fit.
const MIN_MTU: i64 = 256;
/// Largest MTU accepted: a UDP datagram's payload.
const MAX_MTU: i64 = 65_507;

/// The options, checked.
#[derive(Debug)]
enum NicOptions {
    Udp { bind: SocketAddr, mtu: Option<usize> },
    ShmListen { path: String },
    ShmConnect { path: String },
}

fn string<'t>(options: &'t Table, key: &str) -> Result<Option<&'t str>, String> {
    match options.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("{key}: expected a string, got {}", other.type_str())),
    }
}

/// The limit options, each an integer in 1..=its maximum.
const LIMIT_KEYS: [&str; 4] = [
    "max_flows",
    "max_flows_per_app",
    "max_ops_per_app",
    "max_regions_per_app",
];

fn limits(options: &Table) -> Result<PonyLimits, String> {
    let mut l = PonyLimits::default();
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
            "max_flows" => l.max_flows = v,
            "max_flows_per_app" => l.max_flows_per_app = v,
            "max_ops_per_app" => l.max_ops_per_app = v,
            _ => l.max_regions_per_app = v,
        }
    }
    Ok(l)
}

fn parse(options: &Table) -> Result<NicOptions, String> {
    const KEYS: [&str; 4] = ["nic", "bind", "mtu", "path"];
    let known = |k: &str| KEYS.contains(&k) || LIMIT_KEYS.contains(&k);
    if let Some(k) = options.keys().find(|k| !known(k.as_str())) {
        return Err(format!(
            "unknown option {k:?} (known: {}, {})",
            KEYS.join(", "),
            LIMIT_KEYS.join(", ")
        ));
    }
    limits(options)?;
    let nic = string(options, "nic")?.ok_or("nic: required (udp, shm_listen or shm_connect)")?;
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
            "nic: unknown NIC {other:?} (known: udp, shm_listen, shm_connect)"
        )),
    }
}

/// Checks a Pony engine's options; the message names the option.
pub(super) fn validate(options: &Table) -> Result<(), String> {
    parse(options).map(drop)
}

/// Builds the Pony engine `name` on the NIC its options choose; the message names the option.
pub(super) fn build(name: &str, work_ns: u64, options: &Table) -> Result<Box<dyn Engine>, String> {
    if work_ns != 0 {
        // A transport's cost is its own; modelled CPU cost belongs to the echo engines.
        return Err("work_ns is not supported by kind \"pony\"".into());
    }
    let nic: Box<dyn Nic> = match parse(options)? {
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
    };
    let cfg = PonyConfig {
        limits: limits(options)?,
        ..PonyConfig::default()
    };
    Ok(Box::new(PonyEngine::new(name, nic, cfg)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Table {
        text.parse().unwrap()
    }

    #[test]
    fn options_are_checked() {
        let ok = |t: &str| validate(&table(t));
        ok("nic = \"udp\"\nbind = \"127.0.0.1:0\"\nmtu = 1400").unwrap();
        ok("nic = \"shm_connect\"\npath = \"/tmp/w\"").unwrap();
        let l = "nic = \"udp\"\nbind = \"127.0.0.1:0\"\nmax_flows = 8\nmax_flows_per_app = 2\nmax_ops_per_app = 3\nmax_regions_per_app = 4";
        ok(l).unwrap();
        let want = PonyLimits {
            max_flows: 8,
            max_flows_per_app: 2,
            max_ops_per_app: 3,
            max_regions_per_app: 4,
        };
        assert_eq!(limits(&table(l)).unwrap(), want);
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
        ];
        for (text, want) in cases {
            let e = ok(text).unwrap_err();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn builds_on_udp() {
        let e = build("p", 0, &table("nic = \"udp\"\nbind = \"127.0.0.1:0\"")).unwrap();
        assert_eq!(e.name(), "p");
        let Err(err) = build("p", 5, &table("nic = \"udp\"\nbind = \"127.0.0.1:0\"")) else {
            panic!("work_ns accepted")
        };
        assert!(err.contains("work_ns"), "{err}");
    }
}
