//! `cargo xtask bench pony`: Pony Express against Linux TCP, measured by `mq-bench-pony`
//! (experiments/) twice: natively on this host's EEVDF, then in the sched_ext VM with
//! `scx_microquanta` loaded. Both reports are merged into `target/experiments/pony/`:
//! `summary.json` (every row tagged with the scheduler and accelerator it ran under),
//! `summary.md` (tables, the ratios vs TCP and the floor, and the paper's anchors for
//! context), `rtt.svg` and `throughput.svg` ([`super::pony_plot`]).
//!
//! Both Pony hosts run inside `mq-bench-pony`'s process (two engine runtimes joined over UDP
//! on loopback), so Pony and TCP cross the same kernel path; the summary says so.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use mq_report::pony::{Report, Row};
use mq_report::Tagged;
use serde_json::Value;

use super::pony_plot;
use super::two_runs::{self, ratio, Program, VmArgs};
use crate::Ctx;

const PROGRAM: Program = Program {
    report: Report::TAG,
    bench: "pony",
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

/// How the summary and the plots label and rate one measured point.
pub trait RowView {
    /// The plot and table label: `pony dedicated`, `tcp`, `tcp_sockperf`, `shm_floor`.
    fn series(&self) -> String;
    fn gbps_per_core(&self) -> Option<f64>;
}

impl RowView for Row {
    fn series(&self) -> String {
        if self.transport == "pony" {
            format!("pony {}", self.mode)
        } else {
            self.transport.clone()
        }
    }

    fn gbps_per_core(&self) -> Option<f64> {
        (self.cores > 0.0).then(|| self.gbps / self.cores)
    }
}

/// Series in report order: Pony per mode, then TCP, sockperf, the floor.
pub const SERIES: [&str; 6] = [
    "pony dedicated",
    "pony spreading",
    "pony compacting",
    "tcp",
    "tcp_sockperf",
    "shm_floor",
];

/// What the summary and the plots look up in one run's report.
pub trait Lookup {
    /// The point of `series` in `test` at `bytes`.
    fn row(&self, series: &str, test: &str, bytes: usize) -> Option<&Row>;
    /// Sizes measured by `test`, ascending.
    fn sizes(&self, test: &str) -> Vec<usize>;
    /// Series present for `test`, in [`SERIES`] order.
    fn series(&self, test: &str) -> Vec<&'static str>;
}

impl Lookup for Report {
    fn row(&self, series: &str, test: &str, bytes: usize) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.series() == series && r.test == test && r.msg_bytes == bytes)
    }

    fn sizes(&self, test: &str) -> Vec<usize> {
        let mut s: Vec<usize> = self
            .rows
            .iter()
            .filter(|r| r.test == test)
            .map(|r| r.msg_bytes)
            .collect();
        s.sort_unstable();
        s.dedup();
        s
    }

    fn series(&self, test: &str) -> Vec<&'static str> {
        SERIES
            .into_iter()
            .filter(|s| self.rows.iter().any(|r| r.test == test && r.series() == *s))
            .collect()
    }
}

/// Writes `summary.json`, `summary.md`, `rtt.svg` and `throughput.svg` into `dir`; returns
/// the markdown and the files written.
pub fn record(dir: &Path, runs: &[Value]) -> Result<(String, Vec<PathBuf>)> {
    let typed: Vec<Report> = two_runs::typed_runs(runs)?;
    let md = markdown(&typed);
    let [json_path, md_path] = two_runs::write_summary(dir, &merge(runs)?, &md)?;
    let rtt = dir.join("rtt.svg");
    pony_plot::draw_rtt(&typed, &rtt)?;
    let tput = dir.join("throughput.svg");
    pony_plot::draw_throughput(&typed, &tput)?;
    Ok((md, vec![json_path, md_path, rtt, tput]))
}

/// `{"runs": [run without rows and one_sided], "rows": [row + scheduler + accel],
/// "one_sided": [same], "one_sided_reads_per_s_per_core", "one_sided_mode"}`; the last two
/// are the first run's (native for `bench pony`); every run keeps its own in `runs`.
pub fn merge(runs: &[Value]) -> Result<Value> {
    let mut merged = two_runs::merge(runs, &["rows", "one_sided"])?;
    // The headline per-core figure is the first (native) run's.
    let first = runs.first().context("no runs")?;
    for key in ["one_sided_reads_per_s_per_core", "one_sided_mode"] {
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
         between two hosts in each engine mode, our TCP echo and sockperf over 127.0.0.1 in the \
         same run, one-sided 64 B reads, and the shared-memory floor (two threads on two cores, \
         spin-polling two rings). Gbps counts one direction (each message is echoed back); \
         cores = CPU time of engine and app threads / wall time (sockperf: both processes over \
         its whole run, warm-up included). Throughput percentiles include queueing in the \
         window.\n\n",
    );
    if let Some(r) = runs.first() {
        let _ = writeln!(md, "**Hosts are in-process**: {}.\n", r.hosts);
    }
    if runs.iter().any(|r| r.platform.accel == "tcg") {
        let _ = writeln!(md, "> {}\n", super::TCG_NOTE);
    }
    let _ = writeln!(md, "> {ANCHORS}\n");
    for run in runs {
        let _ = writeln!(md, "## {} ({})\n", run.platform.scheduler, run.platform.accel);
        let _ = writeln!(
            md,
            "{} · kernel `{}` · NIC {} (MTU {}) · apps {} on completions · sockperf: {}\n\n{}\n",
            run.platform.machine,
            run.platform.kernel,
            run.nic,
            run.mtu,
            run.app_wait,
            run.sockperf,
            run.layout
        );
        for (test, title) in [("ping_pong", "Ping-pong"), ("throughput", "Throughput")] {
            let _ = writeln!(md, "### {title}\n");
            md.push_str("| series | size | window | p50 µs | p99 µs | p99.9 µs | msgs/s | Gbps | cores | engine cores |\n");
            md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
            for series in run.series(test) {
                for bytes in run.sizes(test) {
                    let Some(r) = run.row(series, test, bytes) else {
                        continue;
                    };
                    let _ = writeln!(
                        md,
                        "| {series} | {} | {} | {:.1} | {:.1} | {:.1} | {:.0} | {:.3} | {:.2} | {:.2} |",
                        size_label(bytes),
                        r.window,
                        r.p50_us,
                        r.p99_us,
                        r.p999_us,
                        r.msgs_per_s,
                        r.gbps,
                        r.cores,
                        r.engine_cores
                    );
                }
            }
            md.push('\n');
        }
        md.push_str("### One-sided reads\n\n| mode | bytes | window | reads/s | engine cores | reads/s per engine core |\n|---|---:|---:|---:|---:|---:|\n");
        for o in &run.one_sided {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.0} | {:.2} | {:.0} |",
                o.mode, o.read_bytes, o.window, o.reads_per_s, o.engine_cores, o.reads_per_s_per_core
            );
        }
        let _ = writeln!(
            md,
            "\nBest: **{:.0} reads/s per core** ({}).\n",
            run.one_sided_reads_per_s_per_core, run.one_sided_mode
        );
        ratios(&mut md, run);
    }
    md.push_str("Plots: [rtt.svg](rtt.svg), [throughput.svg](throughput.svg).\n");
    md
}

/// Pony vs TCP: p50 RTT ratio per size, Gbps-per-core ratio per size, and the floor.
fn ratios(md: &mut String, run: &Report) {
    // Pony's series measured by either test, in [`SERIES`] order.
    let measured = [run.series("ping_pong"), run.series("throughput")].concat();
    let pony: Vec<&str> = SERIES
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
    if let (Some(tcp), Some(sp)) = (p50("tcp", 64), p50("tcp_sockperf", 64)) {
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
    let gpc = |s: &str, b| run.row(s, "throughput", b).and_then(Row::gbps_per_core);
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

    pub fn sample_runs() -> Vec<Value> {
        let row = |transport: &str, mode: &str, test: &str, bytes: u64, p50: f64, gbps: f64, cores: f64| {
            serde_json::json!({"transport": transport, "mode": mode, "test": test, "msg_bytes": bytes,
                "window": if test == "throughput" { 32 } else { 1 }, "count": 100, "p50_us": p50,
                "p99_us": p50 * 2.0, "p999_us": p50 * 3.0, "max_us": p50 * 4.0, "msgs_per_s": 1e6 / p50,
                "gbps": gbps, "cores": cores, "engine_cores": if transport == "pony" { cores / 2.0 } else { 0.0 },
                "app_cores": cores / 2.0})
        };
        let run = |sched: &str, accel: &str| {
            serde_json::json!({"machine": "m", "kernel": "k", "accel": accel, "scheduler": sched,
                "cpus": 2, "nic": "udp_loopback", "mtu": 8972, "hosts": "in-process hosts: …",
                "layout": "2 CPUs", "app_wait": "block", "sockperf": "sockperf 3.7",
                "rows": [
                    row("pony", "dedicated", "ping_pong", 64, 20.0, 0.01, 2.0),
                    row("pony", "spreading", "ping_pong", 64, 30.0, 0.01, 1.0),
                    row("pony", "spreading", "ping_pong", 16384, 60.0, 0.5, 1.0),
                    row("pony", "spreading", "throughput", 16384, 600.0, 4.0, 1.0),
                    row("tcp", "kernel", "ping_pong", 64, 25.0, 0.02, 1.0),
                    row("tcp", "kernel", "ping_pong", 16384, 30.0, 4.0, 1.0),
                    row("tcp", "kernel", "throughput", 16384, 300.0, 8.0, 1.6),
                    row("tcp_sockperf", "kernel", "ping_pong", 64, 18.0, 0.03, 0.3),
                    row("shm_floor", "spin", "ping_pong", 64, 1.0, 0.4, 1.0),
                    row("shm_floor", "spin", "ping_pong", 16384, 8.0, 14.0, 1.0)],
                "one_sided": [{"mode": "spreading", "read_bytes": 64, "window": 32, "reads_per_s": 50000.0,
                    "engine_cores": 0.5, "app_cores": 0.5, "reads_per_s_per_core": 100000.0}],
                "one_sided_reads_per_s_per_core": 100000.0, "one_sided_mode": "spreading"})
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
        assert_eq!(rows.len(), 20);
        assert_eq!(rows[0]["scheduler"], "eevdf");
        assert_eq!(rows[19]["accel"], "tcg");
        assert_eq!(merged["one_sided"][1]["scheduler"], "microquanta");
        assert_eq!(merged["one_sided_reads_per_s_per_core"], 100000.0);
        assert!(merged["runs"][0].get("rows").is_none());
        assert!(merged["runs"][0].get("one_sided").is_none());
    }

    #[test]
    fn markdown_has_tables_ratios_and_anchors() {
        let md = markdown(&typed());
        assert!(
            md.contains("## eevdf (native)") && md.contains("## microquanta (tcg)"),
            "{md}"
        );
        assert!(md.contains("**Hosts are in-process**"), "{md}");
        assert!(md.contains("the paper's numbers, not ours"), "{md}");
        assert!(
            md.contains(
                "| pony spreading | 16 KiB | 32 | 600.0 | 1200.0 | 1800.0 | 1667 | 4.000 | 1.00 | 0.50 |"
            ),
            "{md}"
        );
        // p50 30/25 vs TCP and 30/1 vs the floor at 64 B; 60/30 and 60/8 at 16 KiB.
        assert!(
            md.contains("| pony spreading | 1.20 | 30.00 | 2.00 | 7.50 |"),
            "{md}"
        );
        assert!(md.contains("| pony dedicated | 0.80 | 20.00 | - | - |"), "{md}");
        // Gbps per core: 4/1 vs 8/1.6.
        assert!(md.contains("| pony spreading | 0.80 |"), "{md}");
        assert!(md.contains("sockperf 18.0 µs"), "{md}");
        assert!(md.contains("Under TCG"), "{md}");
    }

    #[test]
    fn guest_script_loads_the_scheduler_and_tags_the_report() {
        let s = two_runs::guest_script(
            PROGRAM,
            &guest_args(true, None, Some("64,1024")),
            Path::new("/rel"),
        );
        assert_eq!(
            s,
            "mq-bench-pony --quick --sizes 64,1024 --with-scheduler /rel/scx_microquanta \
             --json /tmp/mq-bench-pony.json && echo \"MQ_BENCH_PONY_JSON $(cat /tmp/mq-bench-pony.json)\""
        );
    }

    #[test]
    fn record_writes_every_file() {
        let dir = std::env::temp_dir().join(format!("xtask-pony-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (md, written) = record(&dir, &sample_runs()).unwrap();
        assert_eq!(written.len(), 4);
        assert_eq!(std::fs::read_to_string(dir.join("summary.md")).unwrap(), md);
        for svg in ["rtt.svg", "throughput.svg"] {
            assert!(std::fs::read_to_string(dir.join(svg))
                .unwrap()
                .starts_with("<svg"));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
