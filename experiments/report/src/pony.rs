//! `mq-bench-pony`'s report: Pony Express between two in-process hosts in each engine mode
//! and NIC, against Linux TCP on the same path, the shared-memory wire and floor, the
//! scaling of 1 to 10 engines per host, and the issue's targets computed from the rows.
//!
//! ```text
//! machine, kernel, accel, scheduler, cpus, path ("veth" | "loopback"), mtu, hosts (note),
//! layout, app_wait ("block" | "spin"), sockperf (version or why not), counters (how
//! context switches and cycles are counted, or why not),
//! rows: [{transport ("pony" | "tcp" | "sockperf" | "shm_floor"), nic ("xdp" | "udp" |
//!         "shm" | "kernel"), path ("veth" | "loopback" | "local"), mode ("dedicated" |
//!         "spreading" | "compacting" | "kernel" | "spin"), test ("ping_pong" |
//!         "throughput"), msg_bytes, window, engines, count, p50_us, p99_us, p999_us,
//!         max_us, msgs_per_s, gbps, gbps_per_core, cores, engine_cores, app_cores,
//!         ctx_switches_per_rtt, migrations_per_rtt, task_clock_us_per_rtt, cycles_per_rtt,
//!         instructions_per_rtt (null: not measured)}],
//! one_sided: [{mode, nic, read_bytes, window, reads_per_s, engine_cores, app_cores,
//!              reads_per_s_per_core}],
//! one_sided_reads_per_s_per_core (the best mode's), one_sided_mode,
//! targets: [{name, limit, cmp ("at_most" | "at_least"), value, pass, from}]
//! ```
//!
//! [`targets`] computes the targets from the rows of one run (ratios within a run only).
//! `cargo xtask bench pony` replaces `machine` of a VM run with what the VM runs on, and
//! merges the runs into its `summary.json`.

use serde::{Deserialize, Serialize};

use crate::{Platform, Tag, Tagged};

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    #[serde(flatten)]
    pub platform: Platform,
    /// The path between the two hosts: `veth` (two network namespaces) or `loopback`.
    pub path: String,
    /// UDP payload per packet.
    pub mtu: usize,
    /// How the two hosts run (in-process, in which namespaces).
    pub hosts: String,
    /// Which CPUs the apps and engines get.
    pub layout: String,
    /// How apps wait for completions: `block` or `spin`.
    pub app_wait: String,
    /// sockperf's version, or why it does not run (`skipped: …`).
    pub sockperf: String,
    /// How context switches, cycles and instructions are counted, or why they are not.
    pub counters: String,
    pub rows: Vec<Row>,
    pub one_sided: Vec<OneSided>,
    /// The best mode's [`OneSided::reads_per_s_per_core`], and that mode.
    pub one_sided_reads_per_s_per_core: f64,
    pub one_sided_mode: String,
    /// The issue's targets, from this run's rows ([`targets`]).
    pub targets: Vec<Target>,
}

impl Tagged for Report {
    const TAG: Tag = Tag {
        program: "mq-bench-pony",
        prefix: "MQ_BENCH_PONY_JSON ",
    };
}

/// One measured point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// `pony`, `tcp` (our echo), `sockperf` or `shm_floor`.
    pub transport: String,
    /// What carries the packets: `xdp`, `udp` (sockets), `shm` (shared memory) or `kernel`
    /// (the kernel's TCP).
    pub nic: String,
    /// `veth` (between two network namespaces), `loopback` (127.0.0.1) or `local` (shared
    /// memory inside one host, no network).
    pub path: String,
    /// Pony's engine mode, `kernel` (TCP) or `spin` (the floor).
    pub mode: String,
    /// `ping_pong` or `throughput`.
    pub test: String,
    pub msg_bytes: usize,
    /// Messages outstanding per engine pair (1 in ping-pong).
    pub window: usize,
    /// Concurrent engines per host, each pair with its own apps and flow (1 but in scaling).
    pub engines: usize,
    /// Messages measured.
    pub count: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// Aggregate over the engine pairs.
    pub msgs_per_s: f64,
    /// One direction: `msgs_per_s * msg_bytes * 8`.
    pub gbps: f64,
    /// `gbps / cores`; null when no CPU time was measured.
    pub gbps_per_core: Option<f64>,
    /// `engine_cores + app_cores`: CPU time over wall time.
    pub cores: f64,
    pub engine_cores: f64,
    pub app_cores: f64,
    /// Context switches of the measured threads per round trip (per echoed message in
    /// throughput); null where not counted.
    pub ctx_switches_per_rtt: Option<f64>,
    /// CPU migrations and task-clock (µs of CPU) of the measured threads per round trip, the
    /// other software counters; null where not counted (and in reports older than them).
    #[serde(default)]
    pub migrations_per_rtt: Option<f64>,
    #[serde(default)]
    pub task_clock_us_per_rtt: Option<f64>,
    /// CPU cycles and instructions of the measured threads per round trip; null without a
    /// PMU (a VM without one) or where not counted.
    pub cycles_per_rtt: Option<f64>,
    pub instructions_per_rtt: Option<f64>,
}

/// One-sided reads in one mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OneSided {
    pub mode: String,
    pub nic: String,
    pub read_bytes: u32,
    /// Reads outstanding.
    pub window: usize,
    pub reads_per_s: f64,
    pub engine_cores: f64,
    pub app_cores: f64,
    pub reads_per_s_per_core: f64,
}

/// Which side of its limit a target's value must be on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cmp {
    AtMost,
    AtLeast,
}

/// One of the issue's targets, computed from one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// What is compared, e.g. `64 B p50 RTT: best Pony / TCP`.
    pub name: String,
    pub limit: f64,
    pub cmp: Cmp,
    /// The ratio; null when a row it needs was not measured.
    pub value: Option<f64>,
    /// Null with the value.
    pub pass: Option<bool>,
    /// The rows the ratio comes from (or which row is missing).
    pub from: String,
}

impl Target {
    /// A target met or not by `ratio` (its value and where it comes from), or without a
    /// value when what it needs was not measured (`Err` says what).
    pub fn new(name: impl Into<String>, cmp: Cmp, limit: f64, ratio: Result<(f64, String), String>) -> Self {
        let (value, from) = match ratio {
            Ok((v, from)) => (Some(v), from),
            Err(missing) => (None, missing),
        };
        Self {
            name: name.into(),
            limit,
            cmp,
            value,
            pass: value.map(|v| match cmp {
                Cmp::AtMost => v <= limit,
                Cmp::AtLeast => v >= limit,
            }),
            from,
        }
    }

    /// `PASS 0.42 ≤ 0.5`, `FAIL 1.30 ≤ 0.9`, `n/a (≥ 1)` (then [`Self::from`] says what is
    /// missing).
    pub fn verdict(&self) -> String {
        let op = match self.cmp {
            Cmp::AtMost => "≤",
            Cmp::AtLeast => "≥",
        };
        match (self.value, self.pass) {
            (Some(v), Some(p)) => format!("{} {v:.2} {op} {}", if p { "PASS" } else { "FAIL" }, self.limit),
            _ => format!("n/a ({op} {})", self.limit),
        }
    }
}

impl Row {
    /// `pony spreading udp`, `tcp`, `sockperf`, `shm_floor`.
    pub fn label(&self) -> String {
        if self.transport == "pony" {
            format!("pony {} {}", self.mode, self.nic)
        } else {
            self.transport.clone()
        }
    }
}

/// The path the targets compare on: `veth` when the run has veth rows (its loopback rows
/// are for continuity only), else `loopback`.
fn between(rows: &[Row]) -> &'static str {
    if rows.iter().any(|r| r.path == "veth") {
        "veth"
    } else {
        "loopback"
    }
}

/// The best (lowest p50) single-engine ping-pong row at `bytes` among `rows` that `pick`.
fn best_p50(rows: &[Row], bytes: usize, pick: impl Fn(&Row) -> bool) -> Option<&Row> {
    rows.iter()
        .filter(|r| r.test == "ping_pong" && r.msg_bytes == bytes && r.engines == 1 && pick(r))
        .min_by(|a, b| a.p50_us.total_cmp(&b.p50_us))
}

/// The best (highest Gbps per core) single-engine throughput row at `bytes` that `pick`s.
fn best_gpc(rows: &[Row], bytes: usize, pick: impl Fn(&Row) -> bool) -> Option<(&Row, f64)> {
    rows.iter()
        .filter(|r| r.test == "throughput" && r.msg_bytes == bytes && r.engines == 1 && pick(r))
        .filter_map(|r| Some((r, r.gbps_per_core?)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

fn ratio_p50(a: Option<&Row>, b: Option<&Row>, what: (&str, &str)) -> Result<(f64, String), String> {
    let a = a.ok_or_else(|| format!("no {} row", what.0))?;
    let b = b.ok_or_else(|| format!("no {} row", what.1))?;
    if b.p50_us <= 0.0 {
        return Err(format!("{} p50 is 0", b.label()));
    }
    Ok((
        a.p50_us / b.p50_us,
        format!(
            "{} {:.1} µs / {} {:.1} µs",
            a.label(),
            a.p50_us,
            b.label(),
            b.p50_us
        ),
    ))
}

fn ratio_gpc(rows: &[Row], bytes: usize) -> Result<(f64, String), String> {
    let path = between(rows);
    let pony = best_gpc(rows, bytes, |r| r.transport == "pony" && r.path == path)
        .ok_or_else(|| format!("no pony throughput row at {bytes} B"))?;
    let tcp = best_gpc(rows, bytes, |r| r.transport == "tcp" && r.path == path)
        .ok_or_else(|| format!("no tcp throughput row at {bytes} B"))?;
    if tcp.1 <= 0.0 {
        return Err(format!("tcp Gbps per core at {bytes} B is 0"));
    }
    Ok((
        pony.1 / tcp.1,
        format!(
            "{} {:.3} / tcp {:.3} Gbps per core",
            pony.0.label(),
            pony.1,
            tcp.1
        ),
    ))
}

/// The issue's targets from one run's rows. Pony and TCP rows are those between the hosts
/// on the veth (on loopback in a run without namespaces; never the shm wire, which is
/// `local`); latency and Gbps per core compare single engines; "best Pony" is the best mode and NIC. Gbps per core is compared at each
/// throughput size from 64 B to 4 KiB, and at 1 MiB.
pub fn targets(rows: &[Row]) -> Vec<Target> {
    let path = between(rows);
    let tcp64 = best_p50(rows, 64, |r| r.transport == "tcp" && r.path == path);
    let mut out = vec![
        Target::new(
            "64 B p50 RTT: best Pony / TCP",
            Cmp::AtMost,
            0.5,
            ratio_p50(
                best_p50(rows, 64, |r| r.transport == "pony" && r.path == path),
                tcp64,
                ("pony 64 B ping-pong", "tcp 64 B ping-pong"),
            ),
        ),
        Target::new(
            "64 B p50 RTT: spreading Pony / TCP",
            Cmp::AtMost,
            0.9,
            ratio_p50(
                best_p50(rows, 64, |r| {
                    r.transport == "pony" && r.mode == "spreading" && r.path == path
                }),
                tcp64,
                ("spreading pony 64 B ping-pong", "tcp 64 B ping-pong"),
            ),
        ),
    ];
    let mut small: Vec<usize> = rows
        .iter()
        .filter(|r| r.test == "throughput" && r.transport == "tcp" && (64..=4096).contains(&r.msg_bytes))
        .map(|r| r.msg_bytes)
        .collect();
    small.sort_unstable();
    small.dedup();
    if small.is_empty() {
        out.push(Target::new(
            "Gbps per core 64 B–4 KiB: Pony / TCP",
            Cmp::AtLeast,
            1.5,
            Err("no tcp throughput row from 64 B to 4 KiB".into()),
        ));
    }
    for bytes in small {
        out.push(Target::new(
            format!("Gbps per core at {bytes} B: best Pony / TCP"),
            Cmp::AtLeast,
            1.5,
            ratio_gpc(rows, bytes),
        ));
    }
    out.push(Target::new(
        "Gbps per core at 1 MiB: best Pony / TCP",
        Cmp::AtLeast,
        1.0,
        ratio_gpc(rows, 1 << 20),
    ));
    out.push(Target::new(
        "64 B p50 RTT: Pony on the shm wire / shm floor",
        Cmp::AtMost,
        5.0,
        ratio_p50(
            best_p50(rows, 64, |r| r.transport == "pony" && r.nic == "shm"),
            best_p50(rows, 64, |r| r.transport == "shm_floor"),
            ("pony shm 64 B ping-pong", "shm_floor 64 B"),
        ),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{platform, round_trip};

    /// A row with `p50` µs and `gbps` on `cores`.
    fn row(transport: &str, nic: &str, mode: &str, test: &str, msg_bytes: usize, p50: f64, gbps: f64) -> Row {
        let cores = 1.0;
        Row {
            transport: transport.into(),
            nic: nic.into(),
            path: if matches!(nic, "shm") { "local" } else { "veth" }.into(),
            mode: mode.into(),
            test: test.into(),
            msg_bytes,
            window: if test == "throughput" { 32 } else { 1 },
            engines: 1,
            count: 300,
            p50_us: p50,
            p99_us: p50 * 2.0,
            p999_us: p50 * 3.0,
            max_us: p50 * 4.0,
            msgs_per_s: 33_333.5,
            gbps,
            gbps_per_core: Some(gbps / cores),
            cores,
            engine_cores: 0.5,
            app_cores: 0.5,
            ctx_switches_per_rtt: Some(4.0),
            migrations_per_rtt: None,
            task_clock_us_per_rtt: None,
            cycles_per_rtt: None,
            instructions_per_rtt: None,
        }
    }

    fn rows() -> Vec<Row> {
        vec![
            row("pony", "udp", "dedicated", "ping_pong", 64, 10.0, 0.01),
            row("pony", "udp", "spreading", "ping_pong", 64, 30.0, 0.01),
            row("pony", "shm", "dedicated", "ping_pong", 64, 4.0, 0.01),
            row("pony", "udp", "spreading", "throughput", 64, 100.0, 0.3),
            row("pony", "udp", "dedicated", "throughput", 64, 100.0, 0.2),
            row("pony", "udp", "spreading", "throughput", 4096, 100.0, 3.0),
            row("tcp", "kernel", "kernel", "ping_pong", 64, 25.0, 0.02),
            row("tcp", "kernel", "kernel", "throughput", 64, 50.0, 0.1),
            row("tcp", "kernel", "kernel", "throughput", 4096, 50.0, 2.5),
            row("shm_floor", "shm", "spin", "ping_pong", 64, 1.0, 0.4),
        ]
    }

    #[test]
    fn targets_are_ratios_of_this_runs_rows() {
        let t = targets(&rows());
        let get = |name: &str| {
            t.iter()
                .find(|t| t.name == name)
                .unwrap_or_else(|| panic!("{name}: {t:?}"))
        };
        // 10 / 25 (the shm wire's 4 µs is not between the hosts).
        let best = get("64 B p50 RTT: best Pony / TCP");
        assert_eq!((best.value, best.pass), (Some(0.4), Some(true)));
        assert!(
            best.from.contains("pony dedicated udp 10.0 µs / tcp 25.0 µs"),
            "{}",
            best.from
        );
        let spreading = get("64 B p50 RTT: spreading Pony / TCP");
        assert_eq!((spreading.value, spreading.pass), (Some(1.2), Some(false)));
        // The best Pony mode at each size: 0.3 / 0.1 and 3.0 / 2.5.
        let g64 = get("Gbps per core at 64 B: best Pony / TCP");
        assert!(
            (g64.value.unwrap() - 3.0).abs() < 1e-9 && g64.pass == Some(true),
            "{g64:?}"
        );
        let g4k = get("Gbps per core at 4096 B: best Pony / TCP");
        assert!(
            (g4k.value.unwrap() - 1.2).abs() < 1e-9 && g4k.pass == Some(false),
            "{g4k:?}"
        );
        // No 1 MiB rows: not measured, neither passed nor failed.
        let mib = get("Gbps per core at 1 MiB: best Pony / TCP");
        assert_eq!((mib.value, mib.pass), (None, None));
        assert!(mib.verdict().starts_with("n/a"), "{}", mib.verdict());
        let shm = get("64 B p50 RTT: Pony on the shm wire / shm floor");
        assert_eq!((shm.value, shm.pass), (Some(4.0), Some(true)));
        assert_eq!(shm.verdict(), "PASS 4.00 ≤ 5");
        assert_eq!(t.len(), 6);
    }

    #[test]
    fn scaling_rows_and_missing_baselines_do_not_count() {
        let mut rows = rows();
        // A 10-engine row faster than every single-engine one is not a latency point.
        let mut scaled = row("pony", "udp", "dedicated", "ping_pong", 64, 1.0, 0.01);
        scaled.engines = 10;
        rows.push(scaled);
        // Loopback rows beside veth ones are for continuity: a faster loopback row does not
        // count.
        let mut lo = row("pony", "udp", "dedicated", "ping_pong", 64, 2.0, 0.01);
        lo.path = "loopback".into();
        rows.push(lo);
        let t = targets(&rows);
        assert_eq!(t[0].value, Some(0.4));
        rows.retain(|r| r.transport != "tcp");
        let t = targets(&rows);
        assert_eq!(t[0].pass, None);
        assert_eq!(t[0].from, "no tcp 64 B ping-pong row");
        assert!(t
            .iter()
            .any(|t| t.from == "no tcp throughput row from 64 B to 4 KiB"));
    }

    #[test]
    fn the_report_round_trips_through_its_tagged_line() {
        let one_sided = OneSided {
            mode: "spreading".into(),
            nic: "udp".into(),
            read_bytes: 64,
            window: 32,
            reads_per_s: 50_000.0,
            engine_cores: 0.5,
            app_cores: 0.5,
            reads_per_s_per_core: 100_000.0,
        };
        let rows = rows();
        let report = Report {
            platform: platform("native", "eevdf"),
            path: "veth".into(),
            mtu: 8972,
            hosts: "in-process hosts".into(),
            layout: "2 CPUs; apps unpinned".into(),
            app_wait: "block".into(),
            sockperf: "skipped: not on PATH".into(),
            counters: "per thread".into(),
            targets: targets(&rows),
            rows,
            one_sided: vec![one_sided],
            one_sided_reads_per_s_per_core: 100_000.0,
            one_sided_mode: "spreading".into(),
        };
        round_trip(&report);
        let line = crate::tagged_line(&report).unwrap();
        assert!(line.starts_with("MQ_BENCH_PONY_JSON {"));
        // Not measured is null, never a made-up zero.
        assert!(line.contains("\"cycles_per_rtt\":null"), "{line}");
    }
}
