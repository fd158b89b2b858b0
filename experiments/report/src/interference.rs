//! `mq-bench-interference`'s report: spreading echo engines driven open-loop by an app while
//! antagonists (`stress-ng` CPU hogs, a fork storm, a syscall- and softirq-heavy load,
//! memory bandwidth) share the machine, for each scheduling setup of the engines (EEVDF,
//! SCHED_FIFO, the MicroQuanta class, dedicated cores, and the policy experiment's scheduler
//! binaries), in interleaved rounds; plus what the antagonists achieve alone.
//!
//! ```text
//! machine, kernel, accel, scheduler (what ran when the report was written), cpus,
//! work_ns, engines, offered_load (%), seconds, warmup_ms, rounds, stress_ng (version),
//! workers (per antagonist), counters (how the per-operation counters are counted),
//! rows: [{setup, mode, antagonist, round, p50_us, p99_us, p999_us, max_us, ops_per_s,
//!         cores, antagonist_ops_per_s, antagonist_loss, ctx_switches_per_op,
//!         migrations_per_op, task_clock_us_per_op, cycles_per_op (null: no PMU)}],
//! alone: [{antagonist, round, ops_per_s}],
//! schedulers: [{name, status ("ran" | "not built" | "failed: …")}]
//! ```

use serde::{Deserialize, Serialize};

use crate::{Platform, Tag, Tagged};

/// The engines' scheduling setups of the interference experiment, in report order: spreading
/// engines on EEVDF, in SCHED_FIFO, in the MicroQuanta class; dedicated engines on EEVDF.
pub const SETUPS: [&str; 4] = ["eevdf", "fifo", "microquanta", "dedicated"];

/// The antagonists, in report order (`none` is the engines alone).
pub const ANTAGONISTS: [&str; 5] = ["none", "cpu", "fork", "softirq", "membw"];

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    #[serde(flatten)]
    pub platform: Platform,
    /// CPU time each echo engine spins per request.
    pub work_ns: u64,
    /// Echo engines in the group.
    pub engines: usize,
    /// Offered load, % of one core.
    pub offered_load: u32,
    /// Measuring window per point.
    pub seconds: f64,
    /// Excluded warm-up before each window.
    pub warmup_ms: u64,
    /// Interleaved rounds: every (setup, antagonist) point once per round.
    pub rounds: usize,
    /// `stress-ng`'s version line.
    pub stress_ng: String,
    /// `stress-ng` workers per antagonist.
    pub workers: usize,
    /// How the per-operation counters are counted, or why some are null.
    pub counters: String,
    pub rows: Vec<Row>,
    pub alone: Vec<Alone>,
    /// The policy experiment's scheduler binaries and whether each ran.
    pub schedulers: Vec<SchedulerRun>,
}

impl Tagged for Report {
    const TAG: Tag = Tag {
        program: "mq-bench-interference",
        prefix: "MQ_BENCH_INTERFERENCE_JSON ",
    };
}

/// One (setup, antagonist, round) point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// One of [`SETUPS`], or a scheduler binary's name (`scx_microquanta`, `scx_mqland`) for
    /// the policy experiment's rows.
    pub setup: String,
    /// The engines' mode: `spreading` or `dedicated`.
    pub mode: String,
    /// One of [`ANTAGONISTS`].
    pub antagonist: String,
    pub round: usize,
    /// Round trips from each request's due time (open loop).
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub ops_per_s: f64,
    /// CPU time of the engine threads over wall time.
    pub cores: f64,
    /// The antagonist's bogo-ops per second (real time) next to the engines; null for `none`.
    pub antagonist_ops_per_s: Option<f64>,
    /// `1 - antagonist_ops_per_s / alone` with the same round's alone run; null for `none`.
    pub antagonist_loss: Option<f64>,
    /// Software counters of the engine threads per echoed request.
    pub ctx_switches_per_op: f64,
    pub migrations_per_op: f64,
    pub task_clock_us_per_op: f64,
    /// Null where the PMU has no cycle counter (a VM without one).
    pub cycles_per_op: Option<f64>,
}

/// An antagonist alone for as long as it runs next to the engines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alone {
    pub antagonist: String,
    pub round: usize,
    pub ops_per_s: f64,
}

/// A scheduler binary of the policy experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchedulerRun {
    /// Its binary's name.
    pub name: String,
    /// `ran`, `not built`, or `failed: <error>`.
    pub status: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{platform, round_trip};

    #[test]
    fn the_report_round_trips_through_its_tagged_line() {
        let row = |setup: &str, antagonist: &str| Row {
            setup: setup.into(),
            mode: "spreading".into(),
            antagonist: antagonist.into(),
            round: 0,
            p50_us: 30.0,
            p99_us: 300.0,
            p999_us: 900.0,
            max_us: 1500.0,
            ops_per_s: 2500.0,
            cores: 0.5,
            antagonist_ops_per_s: (antagonist != "none").then_some(1000.0),
            antagonist_loss: (antagonist != "none").then_some(0.25),
            ctx_switches_per_op: 1.5,
            migrations_per_op: 0.01,
            task_clock_us_per_op: 210.0,
            cycles_per_op: None,
        };
        let report = Report {
            platform: platform("tcg", "eevdf"),
            work_ns: 200_000,
            engines: 2,
            offered_load: 50,
            seconds: 1.0,
            warmup_ms: 300,
            rounds: 1,
            stress_ng: "stress-ng, version 0.15.06".into(),
            workers: 2,
            counters: "perf_event_open per engine thread".into(),
            rows: SETUPS
                .iter()
                .flat_map(|s| ANTAGONISTS.iter().map(move |a| row(s, a)))
                .collect(),
            alone: vec![Alone {
                antagonist: "cpu".into(),
                round: 0,
                ops_per_s: 1333.0,
            }],
            schedulers: vec![SchedulerRun {
                name: "scx_mqland".into(),
                status: "not built".into(),
            }],
        };
        round_trip(&report);
    }
}
