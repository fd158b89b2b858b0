//! `mq-bench-pony`'s report: Pony Express between two in-process hosts in each engine mode,
//! against Linux TCP over the same loopback path and the shared-memory floor.
//!
//! ```text
//! machine, kernel, accel, scheduler, cpus, nic ("udp_loopback" | "shm"), mtu, hosts (note),
//! layout, app_wait ("block" | "spin"), sockperf (version or why not),
//! rows: [{transport ("pony" | "tcp" | "tcp_sockperf" | "shm_floor"), mode ("dedicated" |
//!         "spreading" | "compacting" | "kernel" | "spin"), test ("ping_pong" |
//!         "throughput"), msg_bytes, window, count, p50_us, p99_us, p999_us, max_us,
//!         msgs_per_s, gbps, cores, engine_cores, app_cores}],
//! one_sided: [{mode, read_bytes, window, reads_per_s, engine_cores, app_cores,
//!              reads_per_s_per_core}],
//! one_sided_reads_per_s_per_core (the best mode's), one_sided_mode
//! ```
//!
//! `cargo xtask bench pony` replaces `machine` of a VM run with what the VM runs on, and
//! merges the runs into its `summary.json`.

use serde::{Deserialize, Serialize};

use crate::{Platform, Tag, Tagged};

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    #[serde(flatten)]
    pub platform: Platform,
    /// The wire between the hosts: `udp_loopback` or `shm`.
    pub nic: String,
    /// UDP payload per packet.
    pub mtu: usize,
    /// How the two hosts run (in-process, joined over loopback).
    pub hosts: String,
    /// Which CPUs the apps and engines get.
    pub layout: String,
    /// How apps wait for completions: `block` or `spin`.
    pub app_wait: String,
    /// sockperf's version, or why it does not run (`skipped: …`).
    pub sockperf: String,
    pub rows: Vec<Row>,
    pub one_sided: Vec<OneSided>,
    /// The best mode's [`OneSided::reads_per_s_per_core`], and that mode.
    pub one_sided_reads_per_s_per_core: f64,
    pub one_sided_mode: String,
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
    /// `pony`, `tcp`, `tcp_sockperf` or `shm_floor`.
    pub transport: String,
    /// Pony's engine mode, `kernel` (TCP) or `spin` (the floor).
    pub mode: String,
    /// `ping_pong` or `throughput`.
    pub test: String,
    pub msg_bytes: usize,
    /// Messages outstanding (1 in ping-pong).
    pub window: usize,
    /// Messages measured.
    pub count: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub msgs_per_s: f64,
    /// One direction: `msgs_per_s * msg_bytes * 8`.
    pub gbps: f64,
    /// `engine_cores + app_cores`.
    pub cores: f64,
    pub engine_cores: f64,
    pub app_cores: f64,
}

/// One-sided reads in one mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OneSided {
    pub mode: String,
    pub read_bytes: u32,
    /// Reads outstanding.
    pub window: usize,
    pub reads_per_s: f64,
    pub engine_cores: f64,
    pub app_cores: f64,
    pub reads_per_s_per_core: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{platform, round_trip};

    #[test]
    fn the_report_round_trips_through_its_tagged_line() {
        let row = |transport: &str, mode: &str, test: &str, msg_bytes: usize| Row {
            transport: transport.into(),
            mode: mode.into(),
            test: test.into(),
            msg_bytes,
            window: if test == "throughput" { 32 } else { 1 },
            count: 300,
            p50_us: 30.0,
            p99_us: 60.0,
            p999_us: 90.0,
            max_us: 120.0,
            msgs_per_s: 33_333.5,
            gbps: 0.015625,
            cores: 1.5,
            engine_cores: 1.0,
            app_cores: 0.5,
        };
        let one_sided = OneSided {
            mode: "spreading".into(),
            read_bytes: 64,
            window: 32,
            reads_per_s: 50_000.0,
            engine_cores: 0.5,
            app_cores: 0.5,
            reads_per_s_per_core: 100_000.0,
        };
        let report = Report {
            platform: platform("native", "eevdf"),
            nic: "udp_loopback".into(),
            mtu: 8972,
            hosts: "in-process hosts".into(),
            layout: "2 CPUs; apps unpinned".into(),
            app_wait: "block".into(),
            sockperf: "skipped: not on PATH".into(),
            rows: vec![
                row("pony", "spreading", "ping_pong", 64),
                row("pony", "spreading", "throughput", 16384),
                row("tcp", "kernel", "ping_pong", 64),
                row("shm_floor", "spin", "ping_pong", 64),
            ],
            one_sided: vec![one_sided],
            one_sided_reads_per_s_per_core: 100_000.0,
            one_sided_mode: "spreading".into(),
        };
        round_trip(&report);
        assert!(crate::tagged_line(&report)
            .unwrap()
            .starts_with("MQ_BENCH_PONY_JSON {"));
    }
}
