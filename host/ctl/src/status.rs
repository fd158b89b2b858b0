//! The host's status for people: a header line, then per group its mode and cores, a table
//! of its threads (tid, last CPU, CPU time) and a table of its engines (kind, thread,
//! health, counters, attached channels). `--json` prints the host's answer as it is.

use std::fmt::Write;
use std::path::Path;

use snap_ipc::control::protocol::HostStatus;
use snap_ipc::control::EngineHealth;

/// The status as text, one group after another.
pub fn render(socket: &Path, status: &HostStatus) -> String {
    let rt = &status.runtime;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "snap-host at {}: up {:.1} s, MicroQuanta {}, {} channels attached, {}/{} control connections",
        socket.display(),
        rt.uptime_s,
        if rt.microquanta_loaded {
            "loaded"
        } else {
            "not loaded"
        },
        status.channels.len(),
        status.control.connections,
        status.control.max_connections,
    );
    for g in &rt.groups {
        let _ = writeln!(
            out,
            "\ngroup {}: {}, cores {}, {} threads ({} active)",
            g.name,
            g.mode,
            cores(&g.cores),
            g.threads.len(),
            g.active_threads
        );
        let _ = writeln!(
            out,
            "  {:<8} {:>4} {:<8} {:>11} {:>11} {:<12} engines",
            "tid", "cpu", "cores", "cpu time", "busy", "mq group"
        );
        for t in &g.threads {
            let _ = writeln!(
                out,
                "  {:<8} {:>4} {:<8} {:>11} {:>11} {:<12} {}",
                t.tid,
                t.last_cpu.map_or("-".into(), |c| c.to_string()),
                cores(&t.cores),
                ms(t.cpu_time_ns),
                ms(t.busy_ns),
                // The class group it joined; an older host only says whether it is in it.
                match (&t.microquanta_group, t.in_microquanta) {
                    (Some(group), _) => group.as_str(),
                    (None, true) => "yes",
                    (None, false) => "-",
                },
                if t.engines.is_empty() {
                    "(parked)".into()
                } else {
                    t.engines.join(", ")
                },
            );
        }
        let _ = writeln!(
            out,
            "  {:<14} {:<9} {:<8} {:<10} {:>10} {:>10} {:>8} {:>8} {:>12} {:>5}",
            "engine", "kind", "tid", "health", "runs", "items", "wakeups", "moves", "q-delay max", "apps"
        );
        for e in &g.engines {
            let _ = writeln!(
                out,
                "  {:<14} {:<9} {:<8} {:<10} {:>10} {:>10} {:>8} {:>8} {:>9.0} µs {:>5}",
                e.name,
                status.kinds.get(&e.name).map_or("?", String::as_str),
                e.tid,
                health(&e.health),
                e.runs,
                e.items,
                e.wakeups,
                e.migrations,
                e.max_queueing_delay_us,
                status.channels_of(&e.name),
            );
        }
    }
    render_stages(&mut out, status);
    out
}

/// Pipeline stages (engines whose counters name a `stage`): packets each way, forwarded,
/// dropped, held, and time spent per packet.
fn render_stages(out: &mut String, status: &HostStatus) {
    let stages: Vec<(&String, &serde_json::Value)> = status
        .counters
        .iter()
        .filter(|(_, c)| c.get("stage").is_some())
        .collect();
    if stages.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\npipeline stages\n  {:<14} {:<9} {:>10} {:>10} {:>10} {:>8} {:>6} {:>9}",
        "stage", "kind", "tx", "rx", "forwarded", "dropped", "held", "ns/pkt"
    );
    for (name, c) in stages {
        let n = |k: &str| c["counters"][k].as_u64().unwrap_or(0);
        let packets = n("tx_packets") + n("rx_packets");
        let dropped: u64 = c["drops"]
            .as_array()
            .map_or(0, |d| d.iter().filter_map(|e| e["packets"].as_u64()).sum());
        let _ = writeln!(
            out,
            "  {:<14} {:<9} {:>10} {:>10} {:>10} {:>8} {:>6} {:>9}",
            name,
            c["stage"].as_str().unwrap_or("?"),
            n("tx_packets"),
            n("rx_packets"),
            n("forwarded"),
            dropped,
            c["held"].as_u64().unwrap_or(0),
            n("ns")
                .checked_div(packets)
                .map_or("-".into(), |ns| ns.to_string()),
        );
        if let Some(drops) = c["drops"].as_array() {
            for d in drops {
                let _ = writeln!(
                    out,
                    "    dropped {} {}: {}",
                    d["direction"].as_str().unwrap_or("?"),
                    d["reason"].as_str().unwrap_or("?"),
                    d["packets"].as_u64().unwrap_or(0)
                );
            }
        }
    }
}

fn cores(cores: &[usize]) -> String {
    if cores.is_empty() {
        "any".into()
    } else {
        cores.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",")
    }
}

fn ms(ns: u64) -> String {
    format!("{:.1} ms", ns as f64 / 1e6)
}

fn health(h: &EngineHealth) -> String {
    match h {
        EngineHealth::Ok => "ok".into(),
        EngineHealth::Stuck { in_run_ms } => format!("stuck {in_run_ms}ms"),
        EngineHealth::Failed { .. } => "failed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_threads_and_engines_are_listed() {
        let status: HostStatus = serde_json::from_value(serde_json::json!({
            "runtime": { "uptime_s": 1.5, "microquanta_loaded": false, "groups": [{
                "name": "lat", "mode": "dedicated", "cores": [1], "active_threads": 1,
                "threads": [{ "tid": 77, "cores": [1], "cpu_time_ns": 2_000_000, "last_cpu": 1,
                              "busy_ns": 500_000, "engines": ["e0"], "in_microquanta": false }],
                "engines": [{ "name": "e0", "tid": 77, "runs": 10, "items": 4, "busy_ns": 0,
                              "wakeups": 0, "control_ops": 1, "migrations": 0,
                              "queueing_delay_us": 0.0, "max_queueing_delay_us": 3.0,
                              "health": { "state": "ok" } }]
            }]},
            "channels": [{ "engine": "e0", "channel": 1, "pid": 5, "uid": 0, "notify": false }],
            "kinds": { "e0": "echo" },
        }))
        .unwrap();
        let text = render(Path::new("/s"), &status);
        assert!(
            text.contains("group lat: dedicated, cores 1, 1 threads (1 active)"),
            "{text}"
        );
        assert!(text.contains("1 channels attached"), "{text}");
        let thread = text.lines().find(|l| l.trim_start().starts_with("77")).unwrap();
        assert!(thread.contains("2.0 ms") && thread.contains("e0"), "{thread}");
        assert_eq!(
            thread.split_whitespace().nth(7),
            Some("-"),
            "not in the class: {thread}"
        );
        let engine = text.lines().find(|l| l.trim_start().starts_with("e0")).unwrap();
        let cols: Vec<&str> = engine.split_whitespace().collect();
        assert_eq!(cols[..6], ["e0", "echo", "77", "ok", "10", "4"], "{engine}");
        assert_eq!(cols.last(), Some(&"1"), "{engine}");
        assert!(!text.contains("pipeline stages"), "{text}");
    }

    #[test]
    fn a_threads_class_group_is_listed() {
        let status: HostStatus = serde_json::from_value(serde_json::json!({
            "runtime": { "uptime_s": 1.0, "microquanta_loaded": true, "groups": [{
                "name": "lat", "mode": "spreading", "cores": [], "active_threads": 1,
                "threads": [
                    { "tid": 77, "cores": [], "cpu_time_ns": 0, "last_cpu": 0, "busy_ns": 0,
                      "engines": ["e0"], "in_microquanta": true, "microquanta_group": "lat" },
                    { "tid": 78, "cores": [], "cpu_time_ns": 0, "last_cpu": 0, "busy_ns": 0,
                      "engines": ["e1"], "in_microquanta": true }],
                "engines": []
            }]},
            "channels": [],
        }))
        .unwrap();
        let text = render(Path::new("/s"), &status);
        let col = |tid: &str| {
            let line = text.lines().find(|l| l.trim_start().starts_with(tid)).unwrap();
            line.split_whitespace().nth(7).unwrap().to_owned()
        };
        assert_eq!(col("77"), "lat", "{text}");
        assert_eq!(col("78"), "yes", "a host that does not name the group: {text}");
    }

    #[test]
    fn stages_are_listed_with_their_drops() {
        let status: HostStatus = serde_json::from_value(serde_json::json!({
            "runtime": { "uptime_s": 1.0, "microquanta_loaded": false, "groups": [] },
            "channels": [],
            "counters": { "acl0": {
                "stage": "acl", "held": 2,
                "counters": { "tx_packets": 10, "rx_packets": 6, "forwarded": 13, "ns": 1600 },
                "drops": [{ "direction": "tx", "reason": "deny_rule", "packets": 3, "bytes": 300 }]
            }},
        }))
        .unwrap();
        let text = render(Path::new("/s"), &status);
        let row = text.lines().find(|l| l.trim_start().starts_with("acl0")).unwrap();
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols, ["acl0", "acl", "10", "6", "13", "3", "2", "100"], "{text}");
        assert!(text.contains("dropped tx deny_rule: 3"), "{text}");
    }
}
