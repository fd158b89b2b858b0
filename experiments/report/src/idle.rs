//! `mq-bench-idle`'s report: spreading and dedicated Pony engines' round-trip latency with
//! idle CPUs allowed to enter their idle states against kept polling, and what that does
//! and does not model on this machine.
//!
//! ```text
//! machine, kernel, accel, scheduler, cpus, path, nic, msg_bytes, rounds, seconds,
//! warmup_ms, offered_msgs_per_s, mechanism (how idle states are kept off), driver (cpuidle
//! driver), idle_states: [{name, exit_latency_us}], models, does_not_model, counters,
//! rows: [{mode ("dedicated" | "spreading"), idle ("allowed" | "polling"), msgs_per_s,
//!         sent, received, p50_us, p99_us, p99_9_us, max_us, p99_min_us, p99_max_us,
//!         cores, ctx_switches_per_op, migrations_per_op, task_clock_us_per_op, rounds}],
//! effects: [{mode, p50_ratio, p99_ratio}]   (allowed / polling)
//! ```
//!
//! [`effects`] computes the ratios from the rows of one run.

use serde::{Deserialize, Serialize};

use crate::{Platform, Tag, Tagged};

/// The engine modes compared: the values of [`Row::mode`].
pub const MODES: [&str; 2] = ["dedicated", "spreading"];
/// The idle settings: the values of [`Row::idle`]. `allowed`: idle CPUs enter any idle state
/// the machine has; `polling`: every state but the polling one is off.
pub const IDLE: [&str; 2] = ["allowed", "polling"];

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    #[serde(flatten)]
    pub platform: Platform,
    /// The path between the app's host and the echo peer (`veth`).
    pub path: String,
    /// What carries Pony's packets: `udp` or `xdp`.
    pub nic: String,
    pub msg_bytes: usize,
    /// Rounds; in each the four (mode, idle) points run one after another.
    pub rounds: usize,
    /// Measuring window per point and round.
    pub seconds: f64,
    pub warmup_ms: u64,
    /// Open-loop rate of the one app (low, so that CPUs do go idle between messages).
    pub offered_msgs_per_s: f64,
    /// How `polling` is made: e.g. `cpuidle state disable files` or
    /// `/dev/cpu_dma_latency = 0`.
    pub mechanism: String,
    /// The cpuidle driver (`haltpoll`, `intel_idle`, `acpi_idle`, `none`).
    pub driver: String,
    /// The idle states CPU 0 has.
    pub idle_states: Vec<IdleState>,
    /// What the comparison models, and what it does not.
    pub models: String,
    pub does_not_model: String,
    /// How the software counters are counted, or why they are not.
    pub counters: String,
    pub rows: Vec<Row>,
    /// Allowed over polling per mode ([`effects`]).
    pub effects: Vec<Effect>,
}

impl Tagged for Report {
    const TAG: Tag = Tag {
        program: "mq-bench-idle",
        prefix: "MQ_BENCH_IDLE_JSON ",
    };
}

/// One cpuidle state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdleState {
    pub name: String,
    /// Its exit latency as the kernel states it.
    pub exit_latency_us: u64,
}

/// One (mode, idle) point over every round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// One of [`MODES`].
    pub mode: String,
    /// One of [`IDLE`].
    pub idle: String,
    pub msgs_per_s: f64,
    pub sent: u64,
    pub received: u64,
    /// Round trips from each message's due time (pooled over rounds).
    pub p50_us: f64,
    pub p99_us: f64,
    pub p99_9_us: f64,
    pub max_us: f64,
    /// The spread of the per-round p99.
    pub p99_min_us: f64,
    pub p99_max_us: f64,
    /// CPU time of the whole `snap-host` process over wall time.
    pub cores: f64,
    /// Software counters of the host's threads per echoed message; null where not counted.
    pub ctx_switches_per_op: Option<f64>,
    pub migrations_per_op: Option<f64>,
    pub task_clock_us_per_op: Option<f64>,
    pub rounds: usize,
}

/// What letting CPUs idle costs one mode: its latency with idle states allowed over its
/// latency with CPUs kept polling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Effect {
    pub mode: String,
    pub p50_ratio: Option<f64>,
    pub p99_ratio: Option<f64>,
}

/// The row of `mode` with `idle`.
pub fn find<'a>(rows: &'a [Row], mode: &str, idle: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.mode == mode && r.idle == idle)
}

/// Allowed over polling, per mode of [`MODES`]; null where a row is missing or polling's
/// latency is not positive.
pub fn effects(rows: &[Row]) -> Vec<Effect> {
    MODES
        .iter()
        .map(|&mode| {
            let pair = find(rows, mode, "allowed").zip(find(rows, mode, "polling"));
            let ratio = |f: fn(&Row) -> f64| {
                pair.and_then(|(a, p)| (f(p) > 0.0 && f(a).is_finite()).then(|| f(a) / f(p)))
            };
            Effect {
                mode: mode.into(),
                p50_ratio: ratio(|r| r.p50_us),
                p99_ratio: ratio(|r| r.p99_us),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{platform, round_trip};

    fn row(mode: &str, idle: &str, p50: f64, p99: f64) -> Row {
        Row {
            mode: mode.into(),
            idle: idle.into(),
            msgs_per_s: 1000.0,
            sent: 1000,
            received: 1000,
            p50_us: p50,
            p99_us: p99,
            p99_9_us: p99 * 2.0,
            max_us: p99 * 3.0,
            p99_min_us: p99,
            p99_max_us: p99,
            cores: 0.1,
            ctx_switches_per_op: Some(1.0),
            migrations_per_op: None,
            task_clock_us_per_op: Some(5.0),
            rounds: 2,
        }
    }

    #[test]
    fn effects_are_allowed_over_polling_per_mode() {
        let rows = vec![
            row("spreading", "allowed", 30.0, 90.0),
            row("spreading", "polling", 20.0, 60.0),
            row("dedicated", "allowed", 10.0, 20.0),
        ];
        let e = effects(&rows);
        assert_eq!(e[0].mode, "dedicated");
        assert_eq!((e[0].p50_ratio, e[0].p99_ratio), (None, None));
        assert_eq!(e[1].mode, "spreading");
        assert_eq!((e[1].p50_ratio, e[1].p99_ratio), (Some(1.5), Some(1.5)));
        let zero = effects(&[
            row("dedicated", "allowed", 1.0, 1.0),
            row("dedicated", "polling", 0.0, 0.0),
        ]);
        assert_eq!(zero[0].p50_ratio, None);
    }

    #[test]
    fn the_report_round_trips_through_its_tagged_line() {
        let rows: Vec<Row> = MODES
            .iter()
            .flat_map(|m| IDLE.iter().map(move |i| row(m, i, 10.0, 30.0)))
            .collect();
        let report = Report {
            platform: platform("native", "eevdf"),
            path: "veth".into(),
            nic: "udp".into(),
            msg_bytes: 64,
            rounds: 2,
            seconds: 1.0,
            warmup_ms: 200,
            offered_msgs_per_s: 1000.0,
            mechanism: "cpuidle state disable files".into(),
            driver: "haltpoll".into(),
            idle_states: vec![IdleState {
                name: "POLL".into(),
                exit_latency_us: 0,
            }],
            models: "wake-up exit latency".into(),
            does_not_model: "bare-metal C-states".into(),
            counters: "perf software counters".into(),
            effects: effects(&rows),
            rows,
        };
        round_trip(&report);
        assert_eq!(
            serde_json::to_value(&report).unwrap()["idle_states"][0]["name"],
            "POLL"
        );
    }
}
