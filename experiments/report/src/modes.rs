//! `mq-bench-modes`' report: echo engines in each of Snap's scheduling modes, driven
//! open-loop by an app at several offered loads.
//!
//! ```text
//! machine, kernel, accel ("native" | "kvm" | "tcg"), scheduler ("eevdf" |
//! "microquanta" | "sched_ext:<ops>"), cpus, work_ns, engines, seconds,
//! warmup_ms, layout: str,
//! rows: [{mode, offered_load (%), p50_us, p99_us, p999_us, max_us,
//!         ops_per_s, offered_ops_per_s, cores, host_cores, sent, received,
//!         ring_full, engine_threads, threads_in_class}]
//! ```
//!
//! `cargo xtask bench modes` replaces `machine` of a VM run with what the VM runs on, and
//! merges the runs into its `summary.json`.

use serde::{Deserialize, Serialize};

use crate::{Platform, Tag, Tagged};

/// Snap's engine modes, in report order: the values of [`Row::mode`].
pub const MODES: [&str; 3] = ["dedicated", "spreading", "compacting"];

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    #[serde(flatten)]
    pub platform: Platform,
    /// CPU time each echo engine spins per request.
    pub work_ns: u64,
    /// Echo engines in the group.
    pub engines: usize,
    /// Measuring window per point.
    pub seconds: f64,
    /// Excluded warm-up before each window.
    pub warmup_ms: u64,
    /// Which CPUs the app and each mode's engines get.
    pub layout: String,
    pub rows: Vec<Row>,
}

impl Tagged for Report {
    const TAG: Tag = Tag {
        program: "mq-bench-modes",
        prefix: "MQ_BENCH_MODES_JSON ",
    };
}

/// One (mode, load) point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// One of [`MODES`].
    pub mode: String,
    /// Offered load, % of one core.
    pub offered_load: u32,
    /// Round trips from each request's due time.
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub ops_per_s: f64,
    pub offered_ops_per_s: f64,
    /// CPU time of the engine threads over wall time.
    pub cores: f64,
    /// CPU time of the whole host (control and monitor threads too) over wall time.
    pub host_cores: f64,
    pub sent: u64,
    pub received: u64,
    /// Requests that found their ring full.
    pub ring_full: u64,
    pub engine_threads: usize,
    /// Engine threads in the MicroQuanta class.
    pub threads_in_class: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{platform, round_trip};

    #[test]
    fn the_report_round_trips_through_its_tagged_line() {
        let row = |mode: &str, load: u32| Row {
            mode: mode.into(),
            offered_load: load,
            p50_us: 20.0,
            p99_us: 60.0,
            p999_us: 120.5,
            max_us: 300.0,
            ops_per_s: f64::from(load) * 500.0,
            offered_ops_per_s: f64::from(load) * 500.0,
            cores: 0.125,
            host_cores: 0.1875,
            sent: 5000,
            received: 5000,
            ring_full: 0,
            engine_threads: 2,
            threads_in_class: 2,
        };
        let report = Report {
            platform: platform("tcg", "microquanta"),
            work_ns: 200_000,
            engines: 2,
            seconds: 1.0,
            warmup_ms: 300,
            layout: "2 CPUs; app (spinning) on CPU 0".into(),
            rows: MODES.iter().map(|m| row(m, 10)).collect(),
        };
        round_trip(&report);
        // The platform's fields stay at the top level of the JSON.
        let v = serde_json::to_value(&report).unwrap();
        assert_eq!(v["accel"], "tcg");
        assert!(v.get("platform").is_none(), "{v}");
        assert!(crate::tagged_line(&report)
            .unwrap()
            .starts_with("MQ_BENCH_MODES_JSON {"));
    }
}
