//! `cargo xtask bench pony`: Pony Express against Linux TCP, measured by `mq-bench-pony`
//! (experiments/) twice: natively on this host's EEVDF over a veth pair between two network
//! namespaces that `mq-bench-pony` makes and removes (root), then in the sched_ext VM with
//! `scx_microquanta` loaded over loopback (`--path loopback`: the guest has no namespaces).
//! Both reports are merged into `target/experiments/pony/`: `summary.json` (every row tagged
//! with the scheduler and accelerator it ran under, the native run's targets on top),
//! `summary.md` (tables, scaling, the targets, the ratios vs TCP and the floor, and the
//! paper's anchors for context), `rtt.svg`, `throughput.svg` and `scaling.svg`
//! ([`super::pony_plot`]).
//!
//! Both Pony hosts run inside `mq-bench-pony`'s process (two engine runtimes, each engine's
//! NIC socket opened in its host's namespace), so Pony and TCP cross the same veth; the
//! summary says so.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use mq_report::modes::MODES;
use mq_report::pony::{Report, Row};
use mq_report::Tagged;
use serde_json::Value;

use super::pony_plot;
use super::two_runs::{self, ratio, Program, VmArgs};
use crate::Ctx;

const PROGRAM: Program = Program {
    report: Report::TAG,
    bench: "pony",
    vm_args: &["--path", "loopback"],
};

/// Options of `cargo xtask bench pony`.
#[derive(Debug, clap::Args)]
pub struct PonyArgs {
    #[command(flatten)]
    pub vm: VmArgs,
    /// Few iterations and 1 s points (passed to mq-bench-pony).
    #[arg(long)]
    pub quick: bool,
    /// Engine modes, comma-separated [mq-bench-pony's default: all three].
    #[arg(long, value_name = "LIST")]
    pub modes: Option<String>,
    /// Ping-pong sizes in bytes, comma-separated [mq-bench-pony's default: 64 B to 1 MiB].
    #[arg(long, value_name = "LIST")]
    pub sizes: Option<String>,
}

pub fn run(ctx: &Ctx, args: &PonyArgs) -> Result<()> {
    let dir = output_dir(ctx);
    let passthrough = guest_args(args.quick, args.modes.as_deref(), args.sizes.as_deref());
    let runs = two_runs::native_then_vm(ctx, PROGRAM, &dir, &passthrough, &args.vm)?;
    let (md, written) = record(&dir, &runs)?;
    two_runs::print_recorded(&md, &written);
    Ok(())
}

/// `target/experiments/pony/`.
pub fn output_dir(ctx: &Ctx) -> PathBuf {
    ctx.ws.target_dir.join("experiments").join("pony")
}

/// The options passed through to `mq-bench-pony`.
pub(crate) fn guest_args(quick: bool, modes: Option<&str>, sizes: Option<&str>) -> Vec<String> {
    let mut argv = Vec::new();
    if quick {
        argv.push("--quick".to_string());
    }
    if let Some(m) = modes {
        argv.extend(["--modes".into(), m.to_string()]);
    }
    if let Some(s) = sizes {
        argv.extend(["--sizes".into(), s.to_string()]);
    }
    argv
}

/// Pony's NICs in table order.
const NICS: [&str; 3] = ["xdp", "udp", "shm"];
/// The transports that are not Pony, in table order, after Pony's series.
const OTHERS: [&str; 3] = ["tcp", "sockperf", "shm_floor"];

/// Every series a report can have, in table and plot order: Pony per NIC and mode (the
/// row's [`Row::label`]), then TCP, sockperf, the floor.
pub fn series_order() -> Vec<String> {
    let mut s: Vec<String> = NICS
        .iter()
        .flat_map(|nic| MODES.iter().map(move |mode| format!("pony {mode} {nic}")))
        .collect();
    s.extend(OTHERS.iter().map(|o| o.to_string()));
    s
}

/// How a series is drawn: its colour index (Pony's mode, or the other transport) and its
/// NIC's variant (0: kernel path or UDP, 1: shm wire, 2: AF_XDP).
pub fn series_style(series: &str) -> (usize, usize) {
    let mut words = series.split(' ');
    match (words.next(), words.next(), words.next()) {
        (Some("pony"), Some(mode), Some(nic)) => (
            MODES.iter().position(|m| *m == mode).unwrap_or(0),
            match nic {
                "shm" => 1,
                "xdp" => 2,
                _ => 0,
            },
        ),
        (Some(other), _, _) => (
            MODES.len() + OTHERS.iter().position(|o| *o == other).unwrap_or(0),
            0,
        ),
        _ => (0, 0),
    }
}

/// The series of `row` in `run`: its [`Row::label`], plus ` loopback` for the continuity
/// rows of a run on the veth.
pub fn series_name(run: &Report, row: &Row) -> String {
    if row.path == "loopback" && run.path != "loopback" {
        format!("{} loopback", row.label())
    } else {
        row.label()
    }
}

/// What the summary and the plots look up in one run's report. Single-engine rows only,
/// but for [`Lookup::scaling`].
pub trait Lookup {
    /// The point of `series` in `test` at `bytes`.
    fn row(&self, series: &str, test: &str, bytes: usize) -> Option<&Row>;
    /// Sizes measured by `test`, ascending.
    fn sizes(&self, test: &str) -> Vec<usize>;
    /// Series present for `test`, in [`series_order`].
    fn series(&self, test: &str) -> Vec<String>;
    /// Pony's throughput rows of the scaling size by series, engines ascending (empty when
    /// the run measured no more than one engine per host).
    fn scaling(&self) -> Vec<(String, Vec<&Row>)>;
}

impl Lookup for Report {
    fn row(&self, series: &str, test: &str, bytes: usize) -> Option<&Row> {
        self.rows.iter().find(|r| {
            r.engines == 1 && series_name(self, r) == series && r.test == test && r.msg_bytes == bytes
        })
    }

    fn sizes(&self, test: &str) -> Vec<usize> {
        let mut s: Vec<usize> = self
            .rows
            .iter()
            .filter(|r| r.test == test && r.engines == 1)
            .map(|r| r.msg_bytes)
            .collect();
        s.sort_unstable();
        s.dedup();
        s
    }

    fn series(&self, test: &str) -> Vec<String> {
        let mut order = series_order();
        // A series this xtask does not know yet still shows, last.
        for r in &self.rows {
            let name = series_name(self, r);
            if !order.contains(&name) {
                order.push(name);
            }
        }
        order
            .into_iter()
            .filter(|s| {
                self.rows
                    .iter()
                    .any(|r| r.test == test && r.engines == 1 && series_name(self, r) == *s)
            })
            .collect()
    }

    fn scaling(&self) -> Vec<(String, Vec<&Row>)> {
        let Some(bytes) = self
            .rows
            .iter()
            .find(|r| r.engines > 1 && r.test == "throughput")
            .map(|r| r.msg_bytes)
        else {
            return Vec::new();
        };
        series_order()
            .into_iter()
            .filter_map(|s| {
                let mut rows: Vec<&Row> = self
                    .rows
                    .iter()
                    .filter(|r| {
                        r.transport == "pony"
                            && series_name(self, r) == s
                            && r.test == "throughput"
                            && r.msg_bytes == bytes
                    })
                    .collect();
                rows.sort_by_key(|r| r.engines);
                (rows.len() > 1).then_some((s, rows))
            })
            .collect()
    }
}

/// Writes `summary.json`, `summary.md`, `rtt.svg`, `throughput.svg` and `scaling.svg` into
/// `dir`; returns the markdown and the files written.
pub fn record(dir: &Path, runs: &[Value]) -> Result<(String, Vec<PathBuf>)> {
    let typed: Vec<Report> = two_runs::typed_runs(runs)?;
    let md = markdown(&typed);
    let [json_path, md_path] = two_runs::write_summary(dir, &merge(runs)?, &md)?;
    let rtt = dir.join("rtt.svg");
    pony_plot::draw_rtt(&typed, &rtt)?;
    let tput = dir.join("throughput.svg");
    pony_plot::draw_throughput(&typed, &tput)?;
    let scaling = dir.join("scaling.svg");
    pony_plot::draw_scaling(&typed, &scaling)?;
    Ok((md, vec![json_path, md_path, rtt, tput, scaling]))
}

/// `{"runs": [run without rows and one_sided], "rows": [row + scheduler + accel],
/// "one_sided": [same], "one_sided_reads_per_s_per_core", "one_sided_mode", "targets"}`; the
/// last three are the first run's (native, on the veth, for `bench pony`); every run keeps
/// its own in `runs`.
pub fn merge(runs: &[Value]) -> Result<Value> {
    let mut merged = two_runs::merge(runs, &["rows", "one_sided"])?;
    // The headline figures are the first (native) run's.
    let first = runs.first().context("no runs")?;
    for key in ["one_sided_reads_per_s_per_core", "one_sided_mode", "targets"] {
        merged.insert(key.into(), first[key].clone());
    }
    Ok(Value::Object(merged))
}

/// `64 B`, `16 KiB`, `1 MiB`.
pub fn size_label(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

/// A value or `-` where it was not measured.
fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.prec$}"))
}

pub const ANCHORS: &str = "Anchors (Snap/Pony Express, SOSP'19, on Google's hardware and 100 Gbps NICs; \
    **the paper's numbers, not ours**): ping-pong RTT 18 µs for Pony (interrupt-driven; < 10 µs \
    spin-polling) vs 23 µs for Linux TCP; a single stream 38 Gbps on 1.05 cores vs 22 Gbps on \
    1.2 cores for TCP; up to 5 M one-sided ops/s per core (batched indirect reads). Machnet: \
    1 KB messages p50/p99/p99.9 = 18/19/25 µs at window 1, 753 k msg/s at window 32 (Azure).";

/// The whole `summary.md`.
pub fn markdown(runs: &[Report]) -> String {
    let mut md = String::from("# Pony Express vs Linux TCP\n\n");
    md.push_str(
        "Ping-pong round trips (one message outstanding) and windowed throughput of Pony messages \
         between two hosts in each engine mode and NIC, our TCP echo and sockperf on the same \
         path in the same run, 1 to 10 engines per host, one-sided 64 B reads, Pony over the \
         shared-memory wire and the shared-memory floor (two threads on two cores, spin-polling \
         two rings). Gbps counts one direction (each message is echoed back); cores = CPU time \
         of engine and app threads / wall time (sockperf: both processes over its whole run, \
         warm-up included); cs/rtt = context switches of those threads per round trip (per \
         echoed message in throughput), `-` where not counted. Throughput percentiles include \
         queueing in the window.\n\n",
    );
    if let Some(r) = runs.first() {
        let _ = writeln!(md, "**Hosts**: {}.\n", r.hosts);
    }
    if runs.iter().any(|r| r.platform.accel == "tcg") {
        let _ = writeln!(md, "> {}\n", super::TCG_NOTE);
    }
    let _ = writeln!(md, "> {ANCHORS}\n");
    for run in runs {
        let _ = writeln!(md, "## {} ({})\n", run.platform.scheduler, run.platform.accel);
        let _ = writeln!(
            md,
            "{} · kernel `{}` · path {} (MTU {}) · apps {} on completions · sockperf: {}\n\n{}\n\nCounters: {}\n",
            run.platform.machine,
            run.platform.kernel,
            run.path,
            run.mtu,
            run.app_wait,
            run.sockperf,
            run.layout,
            run.counters
        );
        targets(&mut md, run);
        for (test, title) in [("ping_pong", "Ping-pong"), ("throughput", "Throughput")] {
            let _ = writeln!(md, "### {title}\n");
            md.push_str("| series | path | size | window | p50 µs | p99 µs | p99.9 µs | msgs/s | Gbps | Gbps/core | cores | engine cores | cs/rtt | cycles/rtt |\n");
            md.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
            for series in run.series(test) {
                for bytes in run.sizes(test) {
                    let Some(r) = run.row(&series, test, bytes) else {
                        continue;
                    };
                    let _ = writeln!(
                        md,
                        "| {series} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.0} | {:.3} | {} | {:.2} | {:.2} | {} | {} |",
                        r.path,
                        size_label(bytes),
                        r.window,
                        r.p50_us,
                        r.p99_us,
                        r.p999_us,
                        r.msgs_per_s,
                        r.gbps,
                        opt(r.gbps_per_core, 3),
                        r.cores,
                        r.engine_cores,
                        opt(r.ctx_switches_per_rtt, 2),
                        opt(r.cycles_per_rtt, 0)
                    );
                }
            }
            md.push('\n');
        }
        scaling(&mut md, run);
        md.push_str("### One-sided reads\n\n| mode | nic | bytes | window | reads/s | engine cores | reads/s per engine core |\n|---|---|---:|---:|---:|---:|---:|\n");
        for o in &run.one_sided {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {:.0} | {:.2} | {:.0} |",
                o.mode, o.nic, o.read_bytes, o.window, o.reads_per_s, o.engine_cores, o.reads_per_s_per_core
            );
        }
        let _ = writeln!(
            md,
            "\nBest between the hosts: **{:.0} reads/s per core** ({}).\n",
            run.one_sided_reads_per_s_per_core, run.one_sided_mode
        );
        ratios(&mut md, run);
    }
    md.push_str("Plots: [rtt.svg](rtt.svg), [throughput.svg](throughput.svg), [scaling.svg](scaling.svg).\n");
    md
}

/// The targets as the run computed them.
fn targets(md: &mut String, run: &Report) {
    let _ = writeln!(md, "### Targets ({} path, ratios within this run)\n", run.path);
    md.push_str("| target | verdict | from |\n|---|---|---|\n");
    for t in &run.targets {
        let _ = writeln!(md, "| {} | {} | {} |", t.name, t.verdict(), t.from);
    }
    md.push('\n');
}

/// Aggregate throughput of 1 to N engines per host, per mode and NIC.
fn scaling(md: &mut String, run: &Report) {
    let series = run.scaling();
    let Some(bytes) = series
        .first()
        .and_then(|(_, rows)| rows.first())
        .map(|r| r.msg_bytes)
    else {
        return;
    };
    let _ = writeln!(
        md,
        "### Scaling ({} messages, a window per engine pair)\n",
        size_label(bytes)
    );
    md.push_str("| series | engines per host | msgs/s | Gbps | cores | engine cores | msgs/s vs 1 engine | cs/msg |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (s, rows) in &series {
        let one = rows.iter().find(|r| r.engines == 1).map(|r| r.msgs_per_s);
        for r in rows {
            let _ = writeln!(
                md,
                "| {s} | {} | {:.0} | {:.3} | {:.2} | {:.2} | {} | {} |",
                r.engines,
                r.msgs_per_s,
                r.gbps,
                r.cores,
                r.engine_cores,
                ratio(Some(r.msgs_per_s), one),
                opt(r.ctx_switches_per_rtt, 2)
            );
        }
    }
    md.push('\n');
}

/// Pony vs TCP: p50 RTT ratio per size, Gbps-per-core ratio per size, and the floor.
fn ratios(md: &mut String, run: &Report) {
    let measured = [run.series("ping_pong"), run.series("throughput")].concat();
    let pony: Vec<String> = series_order()
        .into_iter()
        .filter(|s| s.starts_with("pony") && measured.contains(s))
        .collect();
    let _ = writeln!(md, "### Ratios vs TCP ({})\n", run.platform.scheduler);
    md.push_str("p50 round trip, Pony / our TCP echo (below 1: Pony is faster), and Pony / the shared-memory floor:\n\n");
    md.push_str("| series |");
    let pp = run.sizes("ping_pong");
    for b in &pp {
        let _ = write!(md, " {} /tcp | {} /floor |", size_label(*b), size_label(*b));
    }
    md.push_str("\n|---|");
    md.push_str(&"---:|---:|".repeat(pp.len()));
    md.push('\n');
    let p50 = |s: &str, b| run.row(s, "ping_pong", b).map(|r| r.p50_us);
    for s in &pony {
        let _ = write!(md, "| {s} |");
        for &b in &pp {
            let _ = write!(
                md,
                " {} | {} |",
                ratio(p50(s, b), p50("tcp", b)),
                ratio(p50(s, b), p50("shm_floor", b))
            );
        }
        md.push('\n');
    }
    if let (Some(tcp), Some(sp)) = (p50("tcp", 64), p50("sockperf", 64)) {
        let _ = writeln!(
            md,
            "\nTCP p50 at 64 B: our echo {tcp:.1} µs, sockperf {sp:.1} µs."
        );
    }
    if let Some(f) = p50("shm_floor", 64) {
        let _ = writeln!(
            md,
            "\nFloor (shared memory between two cores) p50 at 64 B: {f:.2} µs."
        );
    }
    md.push_str("\nGbps per core, Pony / our TCP echo (above 1: Pony moves more per core):\n\n| series |");
    let tp = run.sizes("throughput");
    for b in &tp {
        let _ = write!(md, " {} |", size_label(*b));
    }
    md.push_str("\n|---|");
    md.push_str(&"---:|".repeat(tp.len()));
    md.push('\n');
    let gpc = |s: &str, b| run.row(s, "throughput", b).and_then(|r| r.gbps_per_core);
    for s in &pony {
        let _ = write!(md, "| {s} |");
        for &b in &tp {
            let _ = write!(md, " {} |", ratio(gpc(s, b), gpc("tcp", b)));
        }
        md.push('\n');
    }
    md.push('\n');
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A single-engine row of `(transport, nic, mode)`.
    fn row(
        (transport, nic, mode): (&str, &str, &str),
        test: &str,
        bytes: usize,
        p50: f64,
        gbps: f64,
        cores: f64,
    ) -> Row {
        Row {
            transport: transport.into(),
            nic: nic.into(),
            path: if nic == "shm" { "local" } else { "veth" }.into(),
            mode: mode.into(),
            test: test.into(),
            msg_bytes: bytes,
            window: if test == "throughput" { 32 } else { 1 },
            engines: 1,
            count: 100,
            p50_us: p50,
            p99_us: p50 * 2.0,
            p999_us: p50 * 3.0,
            max_us: p50 * 4.0,
            msgs_per_s: 1e6 / p50,
            gbps,
            gbps_per_core: Some(gbps / cores),
            cores,
            engine_cores: if transport == "pony" { cores / 2.0 } else { 0.0 },
            app_cores: cores / 2.0,
            ctx_switches_per_rtt: (transport != "sockperf").then_some(4.0),
            migrations_per_rtt: None,
            task_clock_us_per_rtt: None,
            cycles_per_rtt: None,
            instructions_per_rtt: None,
        }
    }

    pub fn sample_runs() -> Vec<Value> {
        let run = |sched: &str, accel: &str| {
            let mut rows = vec![
                row(("pony", "udp", "dedicated"), "ping_pong", 64, 20.0, 0.01, 2.0),
                row(("pony", "udp", "spreading"), "ping_pong", 64, 30.0, 0.01, 1.0),
                row(("pony", "udp", "spreading"), "ping_pong", 16384, 60.0, 0.5, 1.0),
                row(("pony", "udp", "spreading"), "throughput", 64, 100.0, 0.05, 1.0),
                row(("pony", "udp", "spreading"), "throughput", 16384, 600.0, 4.0, 1.0),
                row(("pony", "shm", "dedicated"), "ping_pong", 64, 4.0, 0.01, 2.0),
                row(("tcp", "kernel", "kernel"), "ping_pong", 64, 25.0, 0.02, 1.0),
                row(("tcp", "kernel", "kernel"), "ping_pong", 16384, 30.0, 4.0, 1.0),
                row(("tcp", "kernel", "kernel"), "throughput", 64, 50.0, 0.02, 1.0),
                row(("tcp", "kernel", "kernel"), "throughput", 16384, 300.0, 8.0, 1.6),
                row(("sockperf", "kernel", "kernel"), "ping_pong", 64, 18.0, 0.03, 0.3),
                row(("shm_floor", "shm", "spin"), "ping_pong", 64, 1.0, 0.4, 1.0),
                row(("shm_floor", "shm", "spin"), "ping_pong", 16384, 8.0, 14.0, 1.0),
            ];
            let mut lo = row(("tcp", "kernel", "kernel"), "ping_pong", 64, 15.0, 0.02, 1.0);
            lo.path = "loopback".into();
            rows.push(lo);
            for n in [2, 4] {
                let mut r = row(
                    ("pony", "udp", "spreading"),
                    "throughput",
                    64,
                    100.0,
                    0.05 * n as f64 * 0.8,
                    1.0 + n as f64 / 4.0,
                );
                r.engines = n;
                r.msgs_per_s = 10_000.0 * n as f64 * 0.8;
                rows.push(r);
            }
            let report = Report {
                platform: mq_report::Platform {
                    machine: "m".into(),
                    kernel: "k".into(),
                    accel: accel.into(),
                    scheduler: sched.into(),
                    cpus: 2,
                },
                path: "veth".into(),
                mtu: 8972,
                hosts: "in-process hosts: …".into(),
                layout: "2 CPUs".into(),
                app_wait: "block".into(),
                sockperf: "sockperf 3.7".into(),
                counters: "perf_event_open per thread".into(),
                targets: mq_report::pony::targets(&rows),
                rows,
                one_sided: vec![mq_report::pony::OneSided {
                    mode: "spreading".into(),
                    nic: "udp".into(),
                    read_bytes: 64,
                    window: 32,
                    reads_per_s: 50000.0,
                    engine_cores: 0.5,
                    app_cores: 0.5,
                    reads_per_s_per_core: 100000.0,
                }],
                one_sided_reads_per_s_per_core: 100000.0,
                one_sided_mode: "spreading".into(),
            };
            serde_json::to_value(report).unwrap()
        };
        vec![run("eevdf", "native"), run("microquanta", "tcg")]
    }

    fn typed() -> Vec<Report> {
        sample_runs()
            .into_iter()
            .map(|v| serde_json::from_value(v).unwrap())
            .collect()
    }

    #[test]
    fn merged_rows_carry_their_scheduler_and_the_headline() {
        let merged = merge(&sample_runs()).unwrap();
        let rows = merged["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 32);
        assert_eq!(rows[0]["scheduler"], "eevdf");
        assert_eq!(rows[31]["accel"], "tcg");
        assert_eq!(merged["one_sided"][1]["scheduler"], "microquanta");
        assert_eq!(merged["one_sided_reads_per_s_per_core"], 100000.0);
        assert!(merged["runs"][0].get("rows").is_none());
        assert!(merged["runs"][0].get("one_sided").is_none());
        // The native run's targets on top, each run's own in `runs`.
        assert_eq!(merged["targets"], merged["runs"][0]["targets"]);
        assert_eq!(merged["targets"][0]["name"], "64 B p50 RTT: best Pony / TCP");
        assert!(rows[0]["cycles_per_rtt"].is_null());
    }

    #[test]
    fn series_keep_their_order_and_style() {
        let order = series_order();
        assert_eq!(order.len(), 12);
        assert_eq!(order[0], "pony dedicated xdp");
        assert_eq!(&order[9..], ["tcp", "sockperf", "shm_floor"]);
        assert_eq!(series_style("pony spreading udp"), (1, 0));
        assert_eq!(series_style("pony spreading shm"), (1, 1));
        assert_eq!(series_style("pony compacting xdp"), (2, 2));
        assert_eq!(series_style("sockperf"), (4, 0));
        let run = &typed()[0];
        assert_eq!(
            run.series("ping_pong"),
            [
                "pony dedicated udp",
                "pony spreading udp",
                "pony dedicated shm",
                "tcp",
                "sockperf",
                "shm_floor",
                "tcp loopback"
            ]
        );
        assert_eq!(run.row("tcp", "ping_pong", 64).unwrap().p50_us, 25.0);
        assert_eq!(run.row("tcp loopback", "ping_pong", 64).unwrap().p50_us, 15.0);
        // Scaling rows stay out of the single-engine lookups.
        assert_eq!(
            run.row("pony spreading udp", "throughput", 64).unwrap().engines,
            1
        );
        let scaling = run.scaling();
        assert_eq!(scaling.len(), 1);
        assert_eq!(
            scaling[0].1.iter().map(|r| r.engines).collect::<Vec<_>>(),
            [1, 2, 4]
        );
    }

    #[test]
    fn markdown_has_tables_targets_scaling_ratios_and_anchors() {
        let md = markdown(&typed());
        assert!(
            md.contains("## eevdf (native)") && md.contains("## microquanta (tcg)"),
            "{md}"
        );
        assert!(md.contains("**Hosts**: in-process hosts"), "{md}");
        assert!(md.contains("the paper's numbers, not ours"), "{md}");
        assert!(
            md.contains(
                "| pony spreading udp | veth | 16 KiB | 32 | 600.0 | 1200.0 | 1800.0 | 1667 | 4.000 | 4.000 | 1.00 | 0.50 | 4.00 | - |"
            ),
            "{md}"
        );
        // Targets: 20/25 for the best Pony at 64 B (the shm wire is not between the hosts).
        assert!(
            md.contains("| 64 B p50 RTT: best Pony / TCP | FAIL 0.80 ≤ 0.5 | pony dedicated udp 20.0 µs / tcp 25.0 µs |"),
            "{md}"
        );
        assert!(
            md.contains("| 64 B p50 RTT: Pony on the shm wire / shm floor | PASS 4.00 ≤ 5 |"),
            "{md}"
        );
        // Scaling: 2 engines do 16 000 msgs/s against 10 000 for one.
        assert!(md.contains("| pony spreading udp | 2 | 16000 |"), "{md}");
        assert!(md.contains("| 1.60 | 4.00 |"), "{md}");
        // p50 30/25 vs TCP and 30/1 vs the floor at 64 B; 60/30 and 60/8 at 16 KiB.
        assert!(
            md.contains("| pony spreading udp | 1.20 | 30.00 | 2.00 | 7.50 |"),
            "{md}"
        );
        assert!(
            md.contains("| pony dedicated udp | 0.80 | 20.00 | - | - |"),
            "{md}"
        );
        // Gbps per core at 64 B and 16 KiB: 0.05/1 vs 0.02/1, 4/1 vs 8/1.6.
        assert!(md.contains("| pony spreading udp | 2.50 | 0.80 |"), "{md}");
        assert!(md.contains("sockperf 18.0 µs"), "{md}");
        assert!(md.contains("Under TCG"), "{md}");
    }

    #[test]
    fn guest_script_runs_the_vm_over_loopback_and_tags_the_report() {
        let s = two_runs::guest_script(
            PROGRAM,
            &guest_args(true, None, Some("64,1024")),
            Path::new("/rel"),
        );
        assert_eq!(
            s,
            "mq-bench-pony --quick --sizes 64,1024 --path loopback --with-scheduler /rel/scx_microquanta \
             --json /tmp/mq-bench-pony.json && echo \"MQ_BENCH_PONY_JSON $(cat /tmp/mq-bench-pony.json)\""
        );
    }

    #[test]
    fn record_writes_every_file() {
        let dir = std::env::temp_dir().join(format!("xtask-pony-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (md, written) = record(&dir, &sample_runs()).unwrap();
        assert_eq!(written.len(), 5);
        assert_eq!(std::fs::read_to_string(dir.join("summary.md")).unwrap(), md);
        for svg in ["rtt.svg", "throughput.svg", "scaling.svg"] {
            assert!(std::fs::read_to_string(dir.join(svg))
                .unwrap()
                .starts_with("<svg"));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
