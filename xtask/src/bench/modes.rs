//! `cargo xtask bench modes`: Snap's three scheduling modes (dedicated, spreading,
//! compacting) under an open-loop echo load, measured by `mq-bench-modes` (experiments/)
//! twice: natively on this host's EEVDF, then in the sched_ext VM with `scx_microquanta`
//! loaded. Both reports are merged into `target/experiments/modes/`: `summary.json` (every
//! row tagged with the scheduler and accelerator it ran under), `summary.md` (tables and
//! the ratios behind Snap's expected shape) and `modes.svg` ([`super::modes_plot`]).
//! `cargo xtask demo` runs the VM half (`--quick --loads 10,50`) in its own boot through the
//! same [`guest_script`], [`read_guest_run`] and [`record`], and so replaces these files with
//! a VM-only report.
//!
//! Expected shape (Snap, SOSP'19): compacting uses the fewest cores, spreading has the best
//! tail at low load, dedicated always burns its cores. The summary says, per scheduler,
//! whether this run shows it; it does not fail when it does not, since a 2-CPU machine shared
//! with builds, or TCG, can hide it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;
use mq_report::modes::{Report, Row, MODES};
use mq_report::Tagged;
use serde_json::Value;

use super::modes_plot;
use super::two_runs::{self, ratio, Program, VmArgs};
use crate::Ctx;

pub const GUEST_PROGRAM: &str = Report::TAG.program;
const PROGRAM: Program = Program {
    report: Report::TAG,
    bench: "modes",
    vm_args: &[],
};

/// Options of `cargo xtask bench modes`.
#[derive(Debug, clap::Args)]
pub struct ModesArgs {
    #[command(flatten)]
    pub vm: VmArgs,
    /// 1 s windows instead of 3 s (passed to mq-bench-modes).
    #[arg(long)]
    pub quick: bool,
    /// Offered loads in % of one core, comma-separated [mq-bench-modes' default: 10,50,90].
    #[arg(long, value_name = "LIST")]
    pub loads: Option<String>,
    /// Measuring window per point in seconds [mq-bench-modes' default: 3, 1 with --quick].
    #[arg(long, value_name = "SECS")]
    pub seconds: Option<f64>,
}

pub fn run(ctx: &Ctx, args: &ModesArgs) -> Result<()> {
    let dir = output_dir(ctx);
    let passthrough = guest_args(args.quick, args.loads.as_deref(), args.seconds);
    let runs = two_runs::native_then_vm(ctx, PROGRAM, &dir, &passthrough, &args.vm)?;
    let (md, written) = record(&dir, &runs)?;
    two_runs::print_recorded(&md, &written);
    Ok(())
}

/// `target/experiments/modes/`.
pub fn output_dir(ctx: &Ctx) -> PathBuf {
    ctx.ws.target_dir.join("experiments").join("modes")
}

/// The options passed through to `mq-bench-modes`: `--quick`, `--loads LIST`, `--seconds S`.
pub(crate) fn guest_args(quick: bool, loads: Option<&str>, seconds: Option<f64>) -> Vec<String> {
    let mut argv = Vec::new();
    if quick {
        argv.push("--quick".to_string());
    }
    if let Some(loads) = loads {
        argv.extend(["--loads".into(), loads.to_string()]);
    }
    if let Some(s) = seconds {
        argv.extend(["--seconds".into(), s.to_string()]);
    }
    argv
}

/// The guest's command line (one line, no newline): `mq-bench-modes` with `args` ([`guest_args`])
/// and `scx_microquanta` from `release_dir` loaded around it, then, if it succeeded, its report
/// on one `MQ_BENCH_MODES_JSON ` line. Its exit status is `mq-bench-modes`'. `cargo xtask bench
/// modes` and `cargo xtask demo` both run this.
pub(crate) fn guest_script(args: &[String], release_dir: &Path) -> String {
    two_runs::guest_script(PROGRAM, args, release_dir)
}

/// Reads the report of a [`guest_script`] run ([`two_runs::read_guest_run`]).
pub(crate) fn read_guest_run(dir: &Path, output: &str, exit_status: i32, machine: String) -> Result<Value> {
    two_runs::read_guest_run(PROGRAM, dir, output, exit_status, machine)
}

/// What the summary, the plot and the demo look up in one run's report.
pub trait Lookup {
    /// The point of `mode` at `load`.
    fn row(&self, mode: &str, load: u32) -> Option<&Row>;
    /// Offered loads in ascending order.
    fn loads(&self) -> Vec<u32>;
    /// Modes in report order, those measured only.
    fn modes(&self) -> Vec<&'static str>;
}

impl Lookup for Report {
    fn row(&self, mode: &str, load: u32) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.mode == mode && r.offered_load == load)
    }

    fn loads(&self) -> Vec<u32> {
        let mut loads: Vec<u32> = self.rows.iter().map(|r| r.offered_load).collect();
        loads.sort_unstable();
        loads.dedup();
        loads
    }

    fn modes(&self) -> Vec<&'static str> {
        MODES
            .into_iter()
            .filter(|m| self.rows.iter().any(|r| r.mode == *m))
            .collect()
    }
}

/// Writes `summary.json`, `summary.md` and `modes.svg` into `dir` from the runs' reports (one
/// or more, in report order: native and VM for `bench modes`, the VM's alone for the demo);
/// returns the markdown and the files written.
pub fn record(dir: &Path, runs: &[Value]) -> Result<(String, Vec<PathBuf>)> {
    let typed: Vec<Report> = two_runs::typed_runs(runs)?;
    let md = markdown(&typed);
    let [json_path, md_path] = two_runs::write_summary(dir, &merge(runs)?, &md)?;
    let svg = dir.join("modes.svg");
    modes_plot::draw(&typed, &svg)?;
    Ok((md, vec![json_path, md_path, svg]))
}

/// `{"runs": [run without rows], "rows": [row + scheduler + accel]}`.
pub fn merge(runs: &[Value]) -> Result<Value> {
    Ok(Value::Object(two_runs::merge(runs, &["rows"])?))
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

/// The whole `summary.md`.
pub fn markdown(runs: &[Report]) -> String {
    let mut md = String::from("# Snap scheduling modes\n\n");
    md.push_str(
        "An app drives echo engines open-loop at each offered load (% of one core at `work_ns` \
         per request). Round trips are measured from each request's due time; cores = CPU time \
         of the engine threads / wall time; host cores adds the host's control and monitor \
         threads.\n\n",
    );
    if runs.iter().any(|r| r.platform.accel == "tcg") {
        let _ = writeln!(md, "> {}\n", super::TCG_NOTE);
    }
    for run in runs {
        let _ = writeln!(md, "## {} ({})\n", run.platform.scheduler, run.platform.accel);
        let _ = writeln!(
            md,
            "{} · kernel `{}` · {} ns per request\n\n{}\n",
            run.platform.machine, run.platform.kernel, run.work_ns, run.layout
        );
        md.push_str(
            "| mode | load % | p50 µs | p99 µs | p99.9 µs | ops/s | offered ops/s | cores | host cores |\n",
        );
        md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for mode in run.modes() {
            for load in run.loads() {
                let Some(r) = run.row(mode, load) else { continue };
                let _ = writeln!(
                    md,
                    "| {mode} | {load} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {:.2} | {:.2} |",
                    r.p50_us, r.p99_us, r.p999_us, r.ops_per_s, r.offered_ops_per_s, r.cores, r.host_cores
                );
            }
        }
        md.push('\n');
        shape(&mut md, run);
    }
    md.push_str("Plot: [modes.svg](modes.svg).\n");
    md
}

/// The ratios behind the expected shape, and whether this run shows it.
fn shape(md: &mut String, run: &Report) {
    let get = |mode: &str, load: u32, f: fn(&Row) -> f64| run.row(mode, load).map(f);
    let _ = writeln!(md, "### Shape ({})\n", run.platform.scheduler);
    md.push_str("| load % | cores ded. | cores spr. | cores comp. | comp./ded. cores | spr./ded. cores | p99 ded. | p99 spr. | p99 comp. | spr./comp. p99 |\n");
    md.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for load in run.loads() {
        let c = |m| get(m, load, |r| r.cores);
        let p = |m| get(m, load, |r| r.p99_us);
        let _ = writeln!(
            md,
            "| {load} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            opt(c("dedicated"), 2),
            opt(c("spreading"), 2),
            opt(c("compacting"), 2),
            ratio(c("compacting"), c("dedicated")),
            ratio(c("spreading"), c("dedicated")),
            opt(p("dedicated"), 1),
            opt(p("spreading"), 1),
            opt(p("compacting"), 1),
            ratio(p("spreading"), p("compacting")),
        );
    }
    let loads = run.loads();
    let yes = |b: bool| if b { "yes" } else { "no" };
    let cores_of = |m: &str, l: u32| get(m, l, |r| r.cores).unwrap_or(f64::NAN);
    let fewest = loads.iter().all(|&l| {
        let comp = cores_of("compacting", l);
        comp <= cores_of("dedicated", l) && comp <= cores_of("spreading", l) * 1.05
    });
    // Not 1.0: kernel threads and the host's own threads still take their turns on the
    // dedicated CPU (about 10% under TCG).
    let burns = loads.iter().all(|&l| cores_of("dedicated", l) >= 0.8);
    let low_tail = loads.first().is_some_and(|&l| {
        let p = |m| get(m, l, |r| r.p99_us).unwrap_or(f64::NAN);
        p("spreading") <= p("compacting") && p("spreading") <= p("dedicated")
    });
    let _ = writeln!(
        md,
        "\nExpected shape in this run: compacting uses the fewest cores at every load (within 5% \
         of spreading): **{}**; spreading has the best p99 at the lowest load: **{}**; dedicated \
         burns ≥ 0.8 core at every load: **{}**.\n",
        yes(fewest),
        yes(low_tail),
        yes(burns)
    );
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sample_runs() -> Vec<Value> {
        let row = |mode: &str, load: u32, p99: f64, cores: f64| {
            serde_json::json!({"mode": mode, "offered_load": load, "p50_us": p99 / 3.0, "p99_us": p99,
                "p999_us": p99 * 2.0, "max_us": p99 * 3.0, "ops_per_s": load as f64 * 500.0,
                "offered_ops_per_s": load as f64 * 500.0, "cores": cores, "host_cores": cores + 0.01,
                "sent": 10, "received": 10, "ring_full": 0, "engine_threads": 1, "threads_in_class": 0})
        };
        let run = |sched: &str, accel: &str| {
            serde_json::json!({"machine": "m", "kernel": "k", "accel": accel, "scheduler": sched,
                "cpus": 2, "work_ns": 20000, "engines": 1, "seconds": 1.0, "warmup_ms": 300,
                "layout": "2 CPUs", "rows": [
                    row("dedicated", 10, 60.0, 1.0), row("dedicated", 90, 90.0, 1.0),
                    row("spreading", 10, 50.0, 0.15), row("spreading", 90, 400.0, 0.95),
                    row("compacting", 10, 80.0, 0.14), row("compacting", 90, 500.0, 0.92)]})
        };
        vec![run("eevdf", "native"), run("microquanta", "tcg")]
    }

    #[test]
    fn merged_rows_carry_their_scheduler() {
        let merged = merge(&sample_runs()).unwrap();
        let rows = merged["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 12);
        assert_eq!(rows[0]["scheduler"], "eevdf");
        assert_eq!(rows[11]["scheduler"], "microquanta");
        assert_eq!(rows[11]["accel"], "tcg");
        assert!(merged["runs"][0].get("rows").is_none());
        assert_eq!(merged["runs"][1]["work_ns"], 20000);
    }

    #[test]
    fn markdown_has_tables_ratios_and_the_verdict() {
        let runs: Vec<Report> = sample_runs()
            .into_iter()
            .map(|v| serde_json::from_value(v).unwrap())
            .collect();
        let md = markdown(&runs);
        assert!(
            md.contains("## eevdf (native)") && md.contains("## microquanta (tcg)"),
            "{md}"
        );
        assert!(
            md.contains("| spreading | 10 | 16.7 | 50.0 | 100.0 | 5000 | 5000 | 0.15 | 0.16 |"),
            "{md}"
        );
        assert!(
            md.contains("| 10 | 1.00 | 0.15 | 0.14 | 0.14 | 0.15 | 60.0 | 50.0 | 80.0 | 0.62 |"),
            "{md}"
        );
        assert!(
            md.contains("fewest cores at every load (within 5% of spreading): **yes**"),
            "{md}"
        );
        assert!(md.contains("best p99 at the lowest load: **yes**"), "{md}");
        assert!(md.contains("Under TCG"), "{md}");
    }

    #[test]
    fn record_writes_every_file() {
        let dir = std::env::temp_dir().join(format!("xtask-modes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (md, written) = record(&dir, &sample_runs()).unwrap();
        assert_eq!(written.len(), 3);
        assert_eq!(std::fs::read_to_string(dir.join("summary.md")).unwrap(), md);
        assert!(std::fs::read_to_string(dir.join("modes.svg"))
            .unwrap()
            .starts_with("<svg"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
