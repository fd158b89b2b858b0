//! The benchmark programs' reports, defined once: each report's serde types and the tag its
//! program prints it behind, for the programs that measure (`mq-demo`, `mq-bench-sched`,
//! `mq-bench-modes`, `mq-bench-pony`, `mq-bench-upgrade`, `mq-bench-efficiency` and
//! `mq-bench-idle`, `mq-trace-wakeups`, in `mq-experiments`) and for
//! `cargo xtask`, which summarises and plots what they print.
//!
//! A program prints its report as one line: the [`Tag`]'s prefix, then the report as one
//! JSON object ([`tagged_line`]). With `--json PATH` the bench programs write the bare object
//! to a file instead, and the guest scripts of `cargo xtask` echo it behind the same prefix. A
//! reader finds the last tagged line in whatever surrounds it (progress lines, a VM console's
//! prefix) and parses it: [`extract`] into the report's type, [`extract_value`] into a JSON
//! object for readers that add to it before they store it.
//!
//! | report | program | tag |
//! |---|---|---|
//! | [`demo::Report`] | `mq-demo` | `MQ_DEMO_JSON ` |
//! | [`sched::Report`] | `mq-bench-sched` | `MQ_BENCH_SCHED_JSON ` |
//! | [`modes::Report`] | `mq-bench-modes` | `MQ_BENCH_MODES_JSON ` |
//! | [`pony::Report`] | `mq-bench-pony` | `MQ_BENCH_PONY_JSON ` |
//! | [`pipeline::Report`] | `mq-bench-pipeline` | `MQ_BENCH_PIPELINE_JSON ` |
//! | [`upgrade::Report`] | `mq-bench-upgrade` | `MQ_BENCH_UPGRADE_JSON ` |
//! | [`efficiency::Report`] | `mq-bench-efficiency` | `MQ_BENCH_EFFICIENCY_JSON ` |
//! | [`idle::Report`] | `mq-bench-idle` | `MQ_BENCH_IDLE_JSON ` |
//! | [`interference::Report`] | `mq-bench-interference` | `MQ_BENCH_INTERFERENCE_JSON ` |
//! | [`wakeup_trace::Report`] | `mq-trace-wakeups` | `MQ_TRACE_WAKEUPS_JSON ` |
//!
//! [`experiments::Summary`] is the `summary.json` of `cargo xtask experiments`, which draws
//! each experiment's rows from those reports.
//!
//! The crate measures, tabulates and plots nothing, and depends on serde (and thiserror)
//! alone: the measuring programs are GPL-2.0-only and xtask is MIT OR Apache-2.0, and both
//! link it.

pub mod demo;
pub mod efficiency;
pub mod experiments;
pub mod idle;
pub mod interference;
pub mod modes;
pub mod mqland;
pub mod pipeline;
pub mod pony;
pub mod rounds;
pub mod sched;
pub mod upgrade;
pub mod wakeup_trace;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which program prints a report, and the prefix of the line that carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    /// The program's binary name, e.g. `mq-bench-sched`.
    pub program: &'static str,
    /// What the line starts with, trailing space included; the JSON object follows it.
    pub prefix: &'static str,
}

impl Tag {
    /// The prefix without its trailing space, as messages quote it: `MQ_BENCH_SCHED_JSON`.
    pub fn name(self) -> &'static str {
        self.prefix.trim_end()
    }
}

/// A report that its program prints behind [`Tagged::TAG`].
pub trait Tagged: Serialize + DeserializeOwned {
    const TAG: Tag;
}

/// Why a report could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No line of the output carries the tag.
    #[error("{program} printed no `{tag}` line")]
    Missing {
        program: &'static str,
        tag: &'static str,
    },
    /// The tagged line does not hold JSON.
    #[error("parsing {program}'s JSON")]
    Json {
        program: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The tagged line holds JSON, but not an object.
    #[error("{program}'s report is not a JSON object: {json}")]
    NotObject { program: &'static str, json: String },
    /// The object lacks a field of the report or has one of the wrong type (or, when
    /// writing, the report does not serialise).
    #[error("{program}'s report does not match its schema")]
    Schema {
        program: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// `report` as its program prints it: the tag's prefix, then the report as one line of JSON
/// (no newline).
pub fn tagged_line<R: Tagged>(report: &R) -> Result<String, Error> {
    let json = serde_json::to_string(report).map_err(|source| Error::Schema {
        program: R::TAG.program,
        source,
    })?;
    Ok(format!("{}{json}", R::TAG.prefix))
}

/// The JSON object on the last line of `output` that carries `tag`. The prefix may follow
/// other text on its line (a VM console's prefix); the object runs to the end of the line.
pub fn extract_value(tag: Tag, output: &str) -> Result<Value, Error> {
    let program = tag.program;
    let json = output
        .lines()
        .rev()
        .find_map(|l| l.split_once(tag.prefix).map(|(_, json)| json.trim()))
        .ok_or(Error::Missing {
            program,
            tag: tag.name(),
        })?;
    let value: Value = serde_json::from_str(json).map_err(|source| Error::Json { program, source })?;
    if !value.is_object() {
        return Err(Error::NotObject {
            program,
            json: json.to_string(),
        });
    }
    Ok(value)
}

/// The report on the last line of `output` that carries its tag ([`extract_value`]), typed.
pub fn extract<R: Tagged>(output: &str) -> Result<R, Error> {
    let value = extract_value(R::TAG, output)?;
    serde_json::from_value(value).map_err(|source| Error::Schema {
        program: R::TAG.program,
        source,
    })
}

/// What a bench run runs on and under: the first fields of the modes and pony reports
/// (flattened into them, so the JSON keeps them at the top level).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Platform {
    /// The CPU model and count.
    pub machine: String,
    pub kernel: String,
    /// `native`, `kvm` or `tcg`.
    pub accel: String,
    /// What runs the engines' threads: `eevdf`, `microquanta` or `sched_ext:<ops>`.
    pub scheduler: String,
    pub cpus: usize,
}

/// Percentiles of one wakeup latency distribution, in microseconds (the demo's and the
/// scheduler benchmark's).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    /// Wakeups measured.
    pub samples: u64,
}

#[cfg(test)]
pub(crate) mod tests {
    use std::fmt::Debug;

    use super::*;

    /// `report`'s tagged line, found and parsed back among other output, as a guest's
    /// console shows it: after progress lines and an older report, behind a prefix.
    pub fn round_trip<R: Tagged + PartialEq + Debug>(report: &R) {
        let line = tagged_line(report).unwrap();
        assert!(line.starts_with(&format!("{}{{", R::TAG.prefix)), "{line}");
        assert!(!line.contains('\n'), "{line}");
        let output = format!("{} {{}}\nprogress\n  vm| {line}\ndone\n", R::TAG.prefix);
        assert_eq!(&extract::<R>(&output).unwrap(), report);
        let value = extract_value(R::TAG, &output).unwrap();
        assert_eq!(value, serde_json::to_value(report).unwrap());
    }

    pub fn platform(accel: &str, scheduler: &str) -> Platform {
        Platform {
            machine: "Test CPU (2 CPUs)".into(),
            kernel: "6.12.0".into(),
            accel: accel.into(),
            scheduler: scheduler.into(),
            cpus: 2,
        }
    }

    pub fn latency(p50: f64) -> LatencySummary {
        LatencySummary {
            p50,
            p90: p50 * 2.0,
            p99: p50 * 4.0,
            max: p50 * 8.0,
            samples: 400,
        }
    }

    const TAGS: [Tag; 10] = [
        <demo::Report as Tagged>::TAG,
        <efficiency::Report as Tagged>::TAG,
        <idle::Report as Tagged>::TAG,
        <sched::Report as Tagged>::TAG,
        <modes::Report as Tagged>::TAG,
        <pony::Report as Tagged>::TAG,
        <upgrade::Report as Tagged>::TAG,
        <interference::Report as Tagged>::TAG,
        <pipeline::Report as Tagged>::TAG,
        <wakeup_trace::Report as Tagged>::TAG,
    ];

    #[test]
    fn tags_are_distinct_and_none_is_inside_another() {
        for (i, a) in TAGS.iter().enumerate() {
            assert!(a.prefix.ends_with("_JSON "), "{a:?}");
            assert!(a.program.starts_with("mq-"), "{a:?}");
            for b in &TAGS[i + 1..] {
                assert!(!a.prefix.contains(b.prefix) && !b.prefix.contains(a.prefix));
                assert_ne!(a.program, b.program);
            }
        }
    }

    #[test]
    fn extracts_the_last_tagged_line_even_after_a_prefix() {
        let tag = <sched::Report as Tagged>::TAG;
        let out = "MQ_BENCH_SCHED_JSON {\"cpus\":1}\n  vm| MQ_BENCH_SCHED_JSON {\"cpus\":2}\ndone\n";
        assert_eq!(extract_value(tag, out).unwrap()["cpus"], 2);
        assert!(extract_value(tag, "nothing\n").is_err());
        assert!(extract_value(tag, "MQ_BENCH_SCHED_JSON {broken\n").is_err());
        assert!(extract_value(tag, "MQ_BENCH_SCHED_JSON [1,2]\n").is_err());
    }

    #[test]
    fn each_report_is_found_after_other_output() {
        for tag in TAGS {
            let out = format!("{}: ...\n  vm| {}{{\"rows\":[]}}\n", tag.program, tag.prefix);
            assert_eq!(extract_value(tag, &out).unwrap()["rows"], serde_json::json!([]));
            assert!(extract_value(tag, "nothing\n").is_err());
        }
    }

    #[test]
    fn errors_name_the_program_and_the_tag() {
        let tag = <modes::Report as Tagged>::TAG;
        let missing = extract_value(tag, "no report\n").unwrap_err().to_string();
        assert_eq!(missing, "mq-bench-modes printed no `MQ_BENCH_MODES_JSON` line");
        let broken = extract_value(tag, "MQ_BENCH_MODES_JSON {broken\n").unwrap_err();
        assert_eq!(broken.to_string(), "parsing mq-bench-modes's JSON");
        assert!(std::error::Error::source(&broken).is_some());
        let list = extract_value(tag, "MQ_BENCH_MODES_JSON [1]\n").unwrap_err();
        assert_eq!(
            list.to_string(),
            "mq-bench-modes's report is not a JSON object: [1]"
        );
        let partial = extract::<modes::Report>("MQ_BENCH_MODES_JSON {\"rows\":[]}\n").unwrap_err();
        assert!(matches!(partial, Error::Schema { .. }), "{partial:?}");
        let source = std::error::Error::source(&partial).unwrap().to_string();
        assert!(source.contains("missing field"), "{source}");
    }
}
