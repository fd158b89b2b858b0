//! `mq-demo`'s report: the wakeup latency of a periodic thread that burns CPU after each
//! wakeup, next to CPU hogs, three ways in one boot.
//!
//! ```text
//! kernel: str, cpus: int, period_us: int, work_us: int, hogs: int,
//! scheduler_args: [str]            scx_microquanta's arguments (bandwidth first)
//! wakeup_latency_us: {eevdf|normal|microquanta: {p50, p90, p99, max: µs, samples: int}}
//! ```
//!
//! `cargo xtask demo` stores it in `target/demo/summary.json` with `accel` (how qemu runs the
//! guest) added.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{LatencySummary, Tag, Tagged};

/// Keys of [`Report::wakeup_latency_us`]: no BPF scheduler (the kernel's own baseline),
/// scx_microquanta loaded with the thread left in the fair share, and with the thread in
/// the class.
pub const EEVDF: &str = "eevdf";
pub const NORMAL: &str = "normal";
pub const MICROQUANTA: &str = "microquanta";
/// The keys in the order the demo measures them.
pub const POLICIES: [&str; 3] = [EEVDF, NORMAL, MICROQUANTA];

/// Everything one `mq-demo` run measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub kernel: String,
    pub cpus: usize,
    /// Sleep period of the measured thread.
    pub period_us: u64,
    /// CPU time it burns after each wakeup.
    pub work_us: u64,
    /// CPU hog processes throughout.
    pub hogs: usize,
    /// The arguments scx_microquanta runs with.
    pub scheduler_args: Vec<String>,
    /// Per policy ([`POLICIES`]).
    pub wakeup_latency_us: BTreeMap<String, LatencySummary>,
}

impl Tagged for Report {
    const TAG: Tag = Tag {
        program: "mq-demo",
        prefix: "MQ_DEMO_JSON ",
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{latency, round_trip};

    #[test]
    fn the_report_round_trips_through_its_tagged_line() {
        let report = Report {
            kernel: "7.3.4+deb13-cloud-amd64".into(),
            cpus: 2,
            period_us: 1000,
            work_us: 300,
            hogs: 8,
            scheduler_args: vec!["--period-us=1000".into(), "--runtime-us=500".into()],
            wakeup_latency_us: POLICIES
                .iter()
                .zip([900.0, 800.0, 50.0])
                .map(|(p, p50)| (p.to_string(), latency(p50)))
                .collect(),
        };
        round_trip(&report);
        assert!(crate::tagged_line(&report).unwrap().starts_with("MQ_DEMO_JSON {"));
    }
}
