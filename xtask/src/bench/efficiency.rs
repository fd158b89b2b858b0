//! `cargo xtask bench efficiency`: the CPU a network stack costs N apps, with the Pony stack
//! linked into each app and spinning there (the library-OS design) against one `snap-host`
//! in each of Snap's modes, measured by `mq-bench-efficiency` (experiments/) natively on this
//! host (root: a veth pair between two network namespaces). Writes
//! `target/experiments/efficiency/`: `summary.json` (the program's report), `summary.md`
//! (per load: cores and p50/p99 per design and app count, the ratios to the library-OS
//! baseline, the target) and `efficiency.svg` ([`super::efficiency_plot`]).
//!
//! Native only: the VM has no network namespaces to spare, and the comparison is about
//! where the stack's CPU goes, not about the CPU scheduler.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use mq_report::efficiency::{find, Report, DESIGNS, LOADS};

use super::efficiency_plot;
use super::two_runs::{self, ratio};
use crate::{cargo, sys, Ctx};

/// Options of `cargo xtask bench efficiency`.
#[derive(Debug, clap::Args)]
pub struct EfficiencyArgs {
    /// One round of short windows (passed to mq-bench-efficiency).
    #[arg(long)]
    pub quick: bool,
    /// App counts, comma-separated [mq-bench-efficiency's default: 1,2,4,8].
    #[arg(long, value_name = "LIST")]
    pub apps: Option<String>,
    /// Rounds [mq-bench-efficiency's default: 3, 1 with --quick].
    #[arg(long, value_name = "N")]
    pub rounds: Option<usize>,
}

pub fn run(ctx: &Ctx, args: &EfficiencyArgs) -> Result<()> {
    let mut argv = Vec::new();
    if args.quick {
        argv.push("--quick".to_string());
    }
    if let Some(a) = &args.apps {
        argv.extend(["--apps".into(), a.clone()]);
    }
    if let Some(r) = args.rounds {
        argv.extend(["--rounds".into(), r.to_string()]);
    }
    let dir = output_dir(ctx);
    let text = run_native(ctx, "mq-bench-efficiency", &dir, &argv)?;
    let report: Report = serde_json::from_str(&text).context("parsing mq-bench-efficiency's report")?;
    let (md, written) = record(&dir, &report)?;
    two_runs::print_recorded(&md, &written);
    Ok(())
}

/// Builds `program` and snap-host (release), runs `program ARGS --json DIR/run.json` natively
/// and returns the report's text. Shared with `bench idle`.
pub(super) fn run_native(ctx: &Ctx, program: &str, dir: &Path, args: &[String]) -> Result<String> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if !sys::is_root() {
        anyhow::bail!("{program} needs root (network namespaces); run cargo xtask as root");
    }
    println!("cargo: building {program} and snap-host (release)");
    cargo::build(
        &ctx.deps,
        &ctx.ws,
        &[
            "build",
            "--release",
            "-p",
            "mq-experiments",
            "--bin",
            program,
            "-p",
            "snap-host",
            "--bin",
            "snap-host",
        ],
    )?;
    let json = dir.join("run.json");
    let mut cmd = Command::new(ctx.ws.target_dir.join("release").join(program));
    cmd.args(args).arg("--json").arg(&json);
    println!("bench: {program} natively");
    sys::run(&mut cmd)?;
    std::fs::read_to_string(&json).with_context(|| format!("reading {}", json.display()))
}

/// `target/experiments/efficiency/`.
pub fn output_dir(ctx: &Ctx) -> PathBuf {
    ctx.ws.target_dir.join("experiments").join("efficiency")
}

/// Writes `summary.json`, `summary.md` and `efficiency.svg` into `dir`; returns the markdown
/// and the files written.
pub fn record(dir: &Path, report: &Report) -> Result<(String, Vec<PathBuf>)> {
    let md = markdown(report);
    let [json, md_path] = two_runs::write_summary(dir, &serde_json::to_value(report)?, &md)?;
    let plot = dir.join("efficiency.svg");
    efficiency_plot::draw(report, &plot)?;
    Ok((md, vec![json, md_path, plot]))
}

/// The app counts of the report, ascending.
pub(super) fn app_counts(r: &Report) -> Vec<usize> {
    let mut a: Vec<usize> = r.rows.iter().map(|r| r.apps).collect();
    a.sort_unstable();
    a.dedup();
    a
}

/// The summary: what ran, per load a table of every design and app count with the ratios
/// to the library-OS baseline, and the target.
pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let p = &r.platform;
    let _ = writeln!(s, "# CPU efficiency: the library-OS baseline vs Snap\n");
    let _ = writeln!(
        s,
        "{} on {} (kernel {}, {}), {} CPUs; {} round(s) of {} s per point (warm-up {} ms), {} B \
         messages over Pony on {} ({}).\n",
        p.scheduler,
        p.machine,
        p.kernel,
        p.accel,
        p.cpus,
        r.rounds,
        r.seconds,
        r.warmup_ms,
        r.msg_bytes,
        r.path,
        r.nic
    );
    let _ = writeln!(
        s,
        "- **library_os**: the Pony stack linked into each app process, spin-polled by the app's \
         thread (one copy of the stack per app, busy per app).\n- **dedicated**, **spreading**, \
         **compacting**: the apps are Pony clients of one `snap-host` whose engine runs in that \
         mode.\n- cores: CPU time of what runs the stack (the library-OS apps; the whole \
         snap-host process) over wall time, mean over rounds (min-max).\n- Layout: {}\n- Peer: {}\n- \
         Oversubscribed: {}\n",
        r.layout, r.peer, r.oversubscribed
    );
    for load in LOADS {
        let _ = writeln!(s, "## {load} load\n");
        let _ = writeln!(
            s,
            "| design | apps | offered msgs/s | msgs/s | cores (min-max) | app cores | p50 µs | p99 µs (min-max) | cores / library_os | p99 / library_os | switches/op | task-clock µs/op |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|");
        for apps in app_counts(r) {
            for design in DESIGNS {
                let Some(x) = find(&r.rows, design, apps, load) else {
                    continue;
                };
                let base = find(&r.rows, "library_os", apps, load);
                let opt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
                let _ = writeln!(
                    s,
                    "| {design} | {apps} | {:.0} | {:.0} | {:.3} ({:.3}-{:.3}) | {:.3} | {:.1} | {:.1} ({:.1}-{:.1}) | {} | {} | {} | {} |",
                    x.offered_msgs_per_s,
                    x.msgs_per_s,
                    x.cores,
                    x.cores_min,
                    x.cores_max,
                    x.app_cores,
                    x.p50_us,
                    x.p99_us,
                    x.p99_min_us,
                    x.p99_max_us,
                    ratio(Some(x.cores), base.map(|b| b.cores)),
                    ratio(Some(x.p99_us), base.map(|b| b.p99_us)),
                    opt(x.ctx_switches_per_op),
                    opt(x.task_clock_us_per_op),
                );
            }
        }
        s.push('\n');
    }
    let _ = writeln!(s, "## Target\n");
    for t in &r.targets {
        let _ = writeln!(s, "- {}: **{}** ({})", t.name, t.verdict(), t.from);
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use mq_report::efficiency::{targets, Row};
    use mq_report::Platform;

    use super::*;

    pub fn sample() -> Report {
        let mut rows = Vec::new();
        for design in DESIGNS {
            for apps in [1, 8] {
                for (l, load) in LOADS.iter().enumerate() {
                    let cores = if design == "library_os" {
                        apps as f64 * 0.25
                    } else {
                        0.05 * (l + 1) as f64
                    };
                    rows.push(Row {
                        design: design.into(),
                        apps,
                        load: (*load).into(),
                        offered_msgs_per_s: 100.0 * apps as f64,
                        msgs_per_s: 99.0 * apps as f64,
                        sent: 100,
                        received: 99,
                        p50_us: 30.0,
                        p99_us: 90.0,
                        p99_9_us: 120.0,
                        max_us: 200.0,
                        cores,
                        cores_min: cores * 0.9,
                        cores_max: cores * 1.1,
                        p99_min_us: 80.0,
                        p99_max_us: 100.0,
                        app_cores: 0.01,
                        peer_cores: 0.1,
                        ctx_switches_per_op: Some(1.5),
                        migrations_per_op: Some(0.0),
                        task_clock_us_per_op: Some(12.0),
                        rounds: 3,
                    });
                }
            }
        }
        Report {
            platform: Platform {
                machine: "Test CPU (2 CPUs)".into(),
                kernel: "6.12.0".into(),
                accel: "native".into(),
                scheduler: "eevdf".into(),
                cpus: 2,
            },
            path: "veth".into(),
            nic: "udp".into(),
            msg_bytes: 64,
            rounds: 3,
            seconds: 1.5,
            warmup_ms: 300,
            layout: "2 CPUs".into(),
            peer: "snap-host".into(),
            counters: "perf".into(),
            oversubscribed: "yes".into(),
            targets: targets(&rows),
            rows,
        }
    }

    #[test]
    fn the_summary_has_every_load_the_ratios_and_the_target() {
        let r = sample();
        let md = markdown(&r);
        for load in LOADS {
            assert!(md.contains(&format!("## {load} load")), "{md}");
        }
        // compacting at low load with 8 apps: 0.05 cores against 2.0: ratio 0.03.
        assert!(md.contains("| compacting | 8 | 800 | 792 | 0.050 (0.045-0.055) | 0.010 | 30.0 | 90.0 (80.0-100.0) | 0.03 | 1.00 |"), "{md}");
        assert!(md.contains("| library_os | 8 | 800 | 792 | 2.000 (1.800-2.200) | 0.010 | 30.0 | 90.0 (80.0-100.0) | 1.00 | 1.00 |"), "{md}");
        assert!(
            md.contains("cores at low load, 8 apps: compacting / library_os: **PASS 0.03 ≤ 0.25**"),
            "{md}"
        );
        assert_eq!(app_counts(&r), [1, 8]);
    }

    #[test]
    fn record_writes_the_summary_and_the_plot() {
        let dir = std::env::temp_dir().join(format!("xtask-efficiency-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (_, written) = record(&dir, &sample()).unwrap();
        assert_eq!(written.len(), 3);
        let back: Report = serde_json::from_str(&std::fs::read_to_string(&written[0]).unwrap()).unwrap();
        // serde_json's float parsing may differ in the last bit: compare what identifies rows.
        let key = |r: &Report| {
            r.rows
                .iter()
                .map(|x| (x.design.clone(), x.apps, x.load.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(key(&back), key(&sample()));
        assert_eq!(back.targets.len(), 2);
        assert!(std::fs::read_to_string(&written[2]).unwrap().contains("<svg"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
