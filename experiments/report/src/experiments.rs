//! `cargo xtask experiments`' `summary.json`: one object per experiment of the Snap paper
//! that the project reproduces, keyed by [`NAMES`], each with the rows it drew from its
//! benchmark program's report, its ratios within one run (with the spread across rounds),
//! what the paper showed, what we measured and the verdict.
//!
//! ```text
//! generated (UTC), quick, host (machine), kernel, build ("release" | "debug"), seconds,
//! experiments: {NAME: {status ("ok" | "failed" | "skipped"), error (null unless failed or
//!   skipped), program, platform ({machine, kernel, accel, scheduler, cpus} | null),
//!   seconds, paper, measured, verdict ("met" | "missed" | "measured" | "failed" |
//!   "skipped"), counters, ratios: [{name, value, min, max, rounds, limit, cmp}],
//!   rows: [object: the program's own row, see its schema]}}
//! ```
//!
//! The rows are the programs' own (`mq_report::pony::Row`, `interference::Row`, and those
//! of `mq-bench-efficiency` and `mq-bench-idle`), kept as JSON so that this summary carries
//! whatever their schemas hold; `cpu_efficiency`'s rows have at least `design`, `apps`,
//! `load`, `cores`, `p50_us` and `p99_us` ([`CPU_EFFICIENCY_KEYS`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::pony::Cmp;
use crate::Platform;

/// The experiments, in report order.
pub const NAMES: [&str; 7] = [
    "unloaded_latency",
    "throughput",
    "scaling",
    "interference",
    "idle_states",
    "cpu_efficiency",
    "policy",
];

/// The keys every `cpu_efficiency` row has.
pub const CPU_EFFICIENCY_KEYS: [&str; 6] = ["design", "apps", "load", "cores", "p50_us", "p99_us"];

/// The whole `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// When the run started, `YYYY-MM-DDTHH:MM:SSZ`.
    pub generated: String,
    /// Whether this was `--quick`'s short form.
    pub quick: bool,
    /// The machine `cargo xtask` ran on (the CPU model and count).
    pub host: String,
    /// Its kernel release.
    pub kernel: String,
    /// The profile the programs were built with: `release`, or `debug` (`--debug-build`: a
    /// check of the pipeline, whose numbers mean nothing).
    pub build: String,
    /// Wall time of the whole run.
    pub seconds: f64,
    /// By [`NAMES`]; every name is present (a skipped one says why).
    pub experiments: BTreeMap<String, Experiment>,
}

/// How an experiment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// It produced rows.
    Ok,
    /// Its program failed or its report was unusable: `error` says why.
    Failed,
    /// Not asked for (`--only`): `error` says so.
    Skipped,
}

/// One experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    pub status: Status,
    /// Why it failed or was skipped.
    pub error: Option<String>,
    /// The program whose report it is drawn from, and where it ran (`native` or `vm`).
    pub program: String,
    /// What that program ran on and under; null when it did not report.
    pub platform: Option<Platform>,
    /// Wall time of the program (shared by the experiments drawn from one run).
    pub seconds: f64,
    /// What the Snap paper (and its talk) showed, for context.
    pub paper: String,
    /// What we measured, in a sentence or two with the numbers.
    pub measured: String,
    /// `met` / `missed` (a target with a limit), `measured` (no target), `failed`, `skipped`.
    pub verdict: String,
    /// How the per-operation counters were counted.
    pub counters: String,
    pub ratios: Vec<Ratio>,
    /// The program's rows for this experiment, as it wrote them.
    pub rows: Vec<Value>,
}

/// A ratio within one run: its value (median over rounds where there are rounds), the spread
/// across rounds, and a limit when the issue sets a target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    /// What over what, e.g. `p99 under cpu hogs / alone, microquanta`.
    pub name: String,
    /// Null when a row it needs is missing.
    pub value: Option<f64>,
    /// Smallest and largest over rounds (equal to `value` with one round).
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub rounds: usize,
    /// The target's limit, if the issue sets one.
    pub limit: Option<f64>,
    pub cmp: Option<Cmp>,
}

impl Ratio {
    /// Whether the value is on the right side of its limit; `None` without a limit or value.
    pub fn pass(&self) -> Option<bool> {
        let (v, limit, cmp) = (self.value?, self.limit?, self.cmp?);
        Some(match cmp {
            Cmp::AtMost => v <= limit,
            Cmp::AtLeast => v >= limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_round_trips_and_keeps_the_rows_as_written() {
        let ratio = Ratio {
            name: "compacting / library_os cores, 8 apps, low load".into(),
            value: Some(0.2),
            min: Some(0.18),
            max: Some(0.22),
            rounds: 3,
            limit: Some(0.25),
            cmp: Some(Cmp::AtMost),
        };
        assert_eq!(ratio.pass(), Some(true));
        let row = serde_json::json!({"design": "library_os", "apps": 8, "load": "low",
            "cores": 8.0, "p50_us": 5.0, "p99_us": 9.0, "extra": [1, 2]});
        let exp = Experiment {
            status: Status::Ok,
            error: None,
            program: "mq-bench-efficiency (native)".into(),
            platform: None,
            seconds: 12.5,
            paper: "Snap uses fewer cores".into(),
            measured: "0.20x the cores".into(),
            verdict: "met".into(),
            counters: "perf_event_open".into(),
            ratios: vec![ratio.clone()],
            rows: vec![row.clone()],
        };
        let summary = Summary {
            generated: "2026-12-04T15:00:00Z".into(),
            quick: true,
            host: "Test CPU (2 CPUs)".into(),
            kernel: "6.18".into(),
            build: "release".into(),
            seconds: 60.0,
            experiments: NAMES.iter().map(|n| (n.to_string(), exp.clone())).collect(),
        };
        let text = serde_json::to_string(&summary).unwrap();
        let back: Summary = serde_json::from_str(&text).unwrap();
        assert_eq!(back, summary);
        assert_eq!(back.experiments["cpu_efficiency"].rows[0], row);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["experiments"]["policy"]["status"], "ok");
        let missed = Ratio {
            value: Some(0.3),
            ..ratio
        };
        assert_eq!(missed.pass(), Some(false));
        assert_eq!(
            Ratio {
                value: None,
                ..missed
            }
            .pass(),
            None
        );
    }
}
