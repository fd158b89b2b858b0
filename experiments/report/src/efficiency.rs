//! `mq-bench-efficiency`'s report: the CPU a network stack costs N apps, with the stack linked
//! into each app and spin-polled there (the library-OS design Snap replaced) against one
//! `snap-host` serving every app in each of Snap's engine modes, at low, medium and high
//! offered load, with the issue's target computed from the rows.
//!
//! ```text
//! machine, kernel, accel, scheduler, cpus, path ("veth"), nic ("udp" | "xdp"), msg_bytes,
//! rounds, seconds, warmup_ms, layout, peer (note), counters (how counted, or why not),
//! oversubscribed (note),
//! rows: [{design ("library_os" | "dedicated" | "spreading" | "compacting"), apps,
//!         load ("low" | "medium" | "high"), offered_msgs_per_s, msgs_per_s, sent, received,
//!         p50_us, p99_us, p99_9_us, max_us, cores, cores_min, cores_max, p99_min_us,
//!         p99_max_us, app_cores, peer_cores, ctx_switches_per_op, migrations_per_op,
//!         task_clock_us_per_op (null: not counted), rounds}],
//! targets: [{name, limit, cmp ("at_most" | "at_least"), value, pass, from}]
//! ```
//!
//! A row pools the round trips of every round (its percentiles) and averages its CPU over
//! the rounds; `*_min`/`*_max` are the spread of the per-round values. [`targets`] computes
//! the issue's target from the rows of one run (ratios within a run only).

use serde::{Deserialize, Serialize};

use crate::pony::{Cmp, Target};
use crate::{Platform, Tag, Tagged};

/// The designs compared, in report order: the values of [`Row::design`].
pub const DESIGNS: [&str; 4] = ["library_os", "dedicated", "spreading", "compacting"];
/// The offered loads, in report order: the values of [`Row::load`].
pub const LOADS: [&str; 3] = ["low", "medium", "high"];
/// The app counts of a full run.
pub const APPS: [usize; 4] = [1, 2, 4, 8];

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    #[serde(flatten)]
    pub platform: Platform,
    /// The path between the apps' side and the echo peer: `veth` (two network namespaces).
    pub path: String,
    /// What carries Pony's packets in every design: `udp` (sockets) or `xdp`.
    pub nic: String,
    /// Payload of each message (and of its echo).
    pub msg_bytes: usize,
    /// Rounds; in each the designs run one after another, in an order that rotates.
    pub rounds: usize,
    /// Measuring window per (design, apps, load) point and round.
    pub seconds: f64,
    /// Excluded warm-up before each window.
    pub warmup_ms: u64,
    /// Where the apps, stacks, host and peer run.
    pub layout: String,
    /// What the echo peer is (the same for every design).
    pub peer: String,
    /// How context switches, migrations and task-clock are counted, or why they are not.
    pub counters: String,
    /// Whether (and how much) the spinning designs oversubscribe the machine's CPUs.
    pub oversubscribed: String,
    pub rows: Vec<Row>,
    /// The issue's target, from this run's rows ([`targets`]).
    pub targets: Vec<Target>,
}

impl Tagged for Report {
    const TAG: Tag = Tag {
        program: "mq-bench-efficiency",
        prefix: "MQ_BENCH_EFFICIENCY_JSON ",
    };
}

/// One (design, apps, load) point over every round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// One of [`DESIGNS`].
    pub design: String,
    /// Concurrent app processes, each with its own Pony flow to the peer.
    pub apps: usize,
    /// One of [`LOADS`].
    pub load: String,
    /// Aggregate offered load: every app sends open-loop at `offered_msgs_per_s / apps`.
    pub offered_msgs_per_s: f64,
    /// Aggregate echoes received per second.
    pub msgs_per_s: f64,
    /// Messages sent and echoes received in the measuring windows.
    pub sent: u64,
    pub received: u64,
    /// Round trips from each message's due time to its echo (pooled over rounds). A
    /// message due in the window and never echoed counts from its due time to when its app
    /// stopped waiting (a lower bound): `sent - received` and more were late or lost.
    pub p50_us: f64,
    pub p99_us: f64,
    pub p99_9_us: f64,
    pub max_us: f64,
    /// CPU time of everything that runs the stack for these apps, over wall time (mean
    /// over rounds): the apps' polling threads for `library_os`, the whole `snap-host`
    /// process (engine threads, control, compacting monitor) for Snap's modes.
    pub cores: f64,
    /// The spread of [`Self::cores`] over rounds.
    pub cores_min: f64,
    pub cores_max: f64,
    /// The spread of the per-round p99.
    pub p99_min_us: f64,
    pub p99_max_us: f64,
    /// CPU time of the app processes over wall time, stack excluded: 0 for `library_os`
    /// (its app thread is the stack, in [`Self::cores`]).
    pub app_cores: f64,
    /// CPU time of the echo peer over wall time (the same peer in every design).
    pub peer_cores: f64,
    /// Software counters of the threads in [`Self::cores`], per echoed message; null
    /// where not counted.
    pub ctx_switches_per_op: Option<f64>,
    pub migrations_per_op: Option<f64>,
    pub task_clock_us_per_op: Option<f64>,
    /// Rounds this point was measured in.
    pub rounds: usize,
}

/// The row of `design` with `apps` apps at `load`.
pub fn find<'a>(rows: &'a [Row], design: &str, apps: usize, load: &str) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.design == design && r.apps == apps && r.load == load)
}

/// The issue's target (compacting Snap against the library-OS baseline at low load with 8
/// apps: at most 0.25x the cores at no worse than 2x the p99), from `rows`. A run without 8
/// apps compares at its largest app count and says so in each target's `from`.
pub fn targets(rows: &[Row]) -> Vec<Target> {
    let apps = if rows.iter().any(|r| r.apps == 8) {
        8
    } else {
        rows.iter().map(|r| r.apps).max().unwrap_or(8)
    };
    let pair = || -> Result<(&Row, &Row), String> {
        let lib = find(rows, "library_os", apps, "low")
            .ok_or(format!("no library_os row at low load with {apps} apps"))?;
        let snap = find(rows, "compacting", apps, "low")
            .ok_or(format!("no compacting row at low load with {apps} apps"))?;
        Ok((snap, lib))
    };
    let ratio = |what: &str, value: fn(&Row) -> f64| -> Result<(f64, String), String> {
        let (snap, lib) = pair()?;
        let (a, b) = (value(snap), value(lib));
        if !(b > 0.0 && a.is_finite() && b.is_finite()) {
            return Err(format!("library_os {what} at low load with {apps} apps is {b}"));
        }
        Ok((
            a / b,
            format!("compacting {a:.3} / library_os {b:.3} {what}, low load, {apps} apps"),
        ))
    };
    vec![
        Target::new(
            format!("cores at low load, {apps} apps: compacting / library_os"),
            Cmp::AtMost,
            0.25,
            ratio("cores", |r| r.cores),
        ),
        Target::new(
            format!("p99 RTT at low load, {apps} apps: compacting / library_os"),
            Cmp::AtMost,
            2.0,
            ratio("p99 µs", |r| r.p99_us),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{platform, round_trip};

    fn row(design: &str, apps: usize, load: &str, cores: f64, p99: f64) -> Row {
        Row {
            design: design.into(),
            apps,
            load: load.into(),
            offered_msgs_per_s: 100.0 * apps as f64,
            msgs_per_s: 100.0 * apps as f64,
            sent: 100,
            received: 100,
            p50_us: p99 / 2.0,
            p99_us: p99,
            p99_9_us: p99 * 1.5,
            max_us: p99 * 2.0,
            cores,
            cores_min: cores * 0.9,
            cores_max: cores * 1.1,
            p99_min_us: p99 * 0.8,
            p99_max_us: p99 * 1.2,
            app_cores: 0.01,
            peer_cores: 0.05,
            ctx_switches_per_op: Some(2.0),
            migrations_per_op: Some(0.0),
            task_clock_us_per_op: None,
            rounds: 3,
        }
    }

    #[test]
    fn targets_compare_compacting_with_library_os_at_low_load_and_8_apps() {
        let rows = vec![
            row("library_os", 8, "low", 2.0, 100.0),
            row("compacting", 8, "low", 0.4, 150.0),
            // Other points do not count.
            row("compacting", 8, "high", 5.0, 900.0),
            row("library_os", 1, "low", 0.1, 10.0),
        ];
        let t = targets(&rows);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].value, Some(0.2));
        assert_eq!(t[0].pass, Some(true));
        assert!(t[0].name.contains("8 apps"), "{}", t[0].name);
        assert_eq!(t[1].value, Some(1.5));
        assert_eq!(t[1].pass, Some(true));
        let worse = vec![
            row("library_os", 8, "low", 2.0, 100.0),
            row("compacting", 8, "low", 1.0, 250.0),
        ];
        let t = targets(&worse);
        assert_eq!((t[0].value, t[0].pass), (Some(0.5), Some(false)));
        assert_eq!((t[1].value, t[1].pass), (Some(2.5), Some(false)));
    }

    #[test]
    fn a_missing_baseline_gives_no_value_and_says_what_is_missing() {
        let t = targets(&[row("compacting", 8, "low", 0.4, 150.0)]);
        assert!(t.iter().all(|t| t.value.is_none() && t.pass.is_none()));
        assert!(t[0].from.contains("no library_os row"), "{}", t[0].from);
        let zero = targets(&[
            row("library_os", 8, "low", 0.0, 100.0),
            row("compacting", 8, "low", 0.4, 150.0),
        ]);
        assert_eq!(zero[0].value, None);
        // Without 8 apps the largest count stands in, and the name says which.
        let two = targets(&[
            row("library_os", 2, "low", 1.0, 100.0),
            row("compacting", 2, "low", 0.1, 100.0),
        ]);
        assert!(two[0].name.contains("2 apps"), "{}", two[0].name);
        assert_eq!(two[0].value, Some(0.1));
    }

    #[test]
    fn the_report_round_trips_through_its_tagged_line() {
        let rows: Vec<Row> = DESIGNS
            .iter()
            .flat_map(|d| LOADS.iter().map(move |l| row(d, 8, l, 1.0, 100.0)))
            .collect();
        let report = Report {
            platform: platform("native", "eevdf"),
            path: "veth".into(),
            nic: "udp".into(),
            msg_bytes: 64,
            rounds: 3,
            seconds: 1.0,
            warmup_ms: 200,
            layout: "2 CPUs".into(),
            peer: "snap-host, dedicated".into(),
            counters: "perf software counters".into(),
            oversubscribed: "8 spinning apps on 2 CPUs".into(),
            targets: targets(&rows),
            rows,
        };
        round_trip(&report);
        let v = serde_json::to_value(&report).unwrap();
        assert_eq!(v["cpus"], 2);
        assert_eq!(v["rows"][0]["design"], "library_os");
        assert!(v["rows"][0]["task_clock_us_per_op"].is_null());
    }
}
