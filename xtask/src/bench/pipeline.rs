//! `cargo xtask bench pipeline`: what each stage of a Pony engine's pipeline adds to Pony's
//! 64 B round trip, measured by `mq-bench-pipeline` (experiments/) natively (veth between
//! two network namespaces) and then, unless `--native-only`, in the sched_ext VM with
//! `scx_microquanta` loaded (loopback). Written to `target/experiments/pipeline/`:
//! `summary.json` (the native run's report at the top level, so `pony_p50_us`, `stages`,
//! `shaping` and `isolation_violations` are where the issue names them, and every run under
//! `runs`) and `summary.md` (per run: Pony alone, each stage's cost, the target).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use mq_report::pipeline::Report;
use mq_report::Tagged;
use serde_json::Value;

use super::two_runs::{self, Program, VmArgs};
use crate::Ctx;

const PROGRAM: Program = Program {
    report: Report::TAG,
    bench: "pipeline",
    // The guest has no network namespaces to spare: loopback there.
    vm_args: &["--path", "loopback"],
};

/// Options of `cargo xtask bench pipeline`.
#[derive(Debug, clap::Args)]
pub struct PipelineArgs {
    #[command(flatten)]
    pub vm: VmArgs,
    /// Few rounds and iterations (passed to mq-bench-pipeline).
    #[arg(long)]
    pub quick: bool,
    /// Engine mode of the Pony engines and the stages [mq-bench-pipeline's default: dedicated].
    #[arg(long)]
    pub mode: Option<String>,
    /// Interleaved rounds [mq-bench-pipeline's default].
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Round trips per round and variant [mq-bench-pipeline's default].
    #[arg(long)]
    pub iterations: Option<usize>,
}

pub fn run(ctx: &Ctx, args: &PipelineArgs) -> Result<()> {
    let dir = ctx.ws.target_dir.join("experiments").join("pipeline");
    let runs = two_runs::native_then_vm(ctx, PROGRAM, &dir, &guest_args(args), &args.vm)?;
    let (md, written) = record(&dir, &runs)?;
    two_runs::print_recorded(&md, &written);
    Ok(())
}

fn guest_args(args: &PipelineArgs) -> Vec<String> {
    let mut argv = Vec::new();
    if args.quick {
        argv.push("--quick".to_string());
    }
    if let Some(m) = &args.mode {
        argv.extend(["--mode".into(), m.clone()]);
    }
    if let Some(r) = args.rounds {
        argv.extend(["--rounds".into(), r.to_string()]);
    }
    if let Some(i) = args.iterations {
        argv.extend(["--iterations".into(), i.to_string()]);
    }
    argv
}

/// Writes `summary.json` and `summary.md` from the runs (native first).
pub fn record(dir: &Path, runs: &[Value]) -> Result<(String, Vec<PathBuf>)> {
    let typed: Vec<Report> = two_runs::typed_runs(runs)?;
    let mut summary = runs.first().cloned().context("no run")?;
    summary["runs"] = Value::Array(runs.to_vec());
    let md = markdown(&typed);
    let mut written = two_runs::write_summary(dir, &summary, &md)?.to_vec();
    let shaping = dir.join("shaping.svg");
    if super::pipeline_plot::draw_shaping(&typed, &shaping)? {
        written.push(shaping);
    }
    Ok((md, written))
}

/// The whole `summary.md`.
pub fn markdown(runs: &[Report]) -> String {
    let mut md = String::from("# Pipeline stages on Pony's path\n\n");
    md.push_str(
        "Pony ping-pong between two hosts over UDP; host A's Pony engine alone, then behind \
         1 and 2 `pass` stages and one of each policy stage kind (`acl`, `shaper`, \
         `overlay`), in interleaved rounds. The `overlay` row includes the matching overlay \
         stage on host B (A's encapsulates, B's decapsulates, and the other way on the \
         reply: the round trip crosses encap and decap on each side); its ns/packet is host \
         A's stage's. Added RTT per stage is (p50 with k stages − p50 alone) / k over \
         the pooled rounds; spread is the largest minus the \
         smallest per-round value; ns/packet is the stage engines' own time per packet.\n\n",
    );
    if runs.iter().any(|r| r.platform.accel == "tcg") {
        let _ = writeln!(md, "> {}\n", super::TCG_NOTE);
    }
    for r in runs {
        let _ = writeln!(
            md,
            "## {} ({}), {} path, {} mode\n\n{} · kernel `{}` · {} rounds × {} round trips of {} B\n\n{}\n",
            r.platform.scheduler,
            r.platform.accel,
            r.path,
            r.mode,
            r.platform.machine,
            r.platform.kernel,
            r.rounds,
            r.iterations,
            r.message_bytes,
            r.hosts
        );
        let _ = writeln!(
            md,
            "Pony alone: p50 {:.1} µs (spread {:.1}), p99 {:.1} µs\n",
            r.pony_p50_us, r.pony_p50_spread_us, r.pony_p99_us
        );
        md.push_str("| stage | ns/packet | added p50 µs | spread µs | added p99 µs | % of Pony's p50 |\n");
        md.push_str("|---|---:|---:|---:|---:|---:|\n");
        for s in &r.stages {
            let _ = writeln!(
                md,
                "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} |",
                s.name,
                s.ns_per_packet,
                s.added_p50_us,
                s.added_p50_spread_us,
                s.added_p99_us,
                100.0 * s.added_p50_us / r.pony_p50_us
            );
        }
        let _ = writeln!(md, "\nTarget: {}\n", r.target.text);
        if !r.shaping.is_empty() {
            md.push_str(
                "Shaper stage against the real clock (greedy local sender, every tenant at the \
                 configured rate; `shaping.svg` has the rate over time):\n\n\
                 | configured Mbit/s | achieved Mbit/s (mean per tenant) | error % | tenants | fairness |\n\
                 |---:|---:|---:|---:|---:|\n",
            );
            for s in &r.shaping {
                let _ = writeln!(
                    md,
                    "| {} | {:.2} | {:+.2} | {} | {:.3} |",
                    s.configured_mbps,
                    s.achieved_mbps,
                    100.0 * (s.achieved_mbps - s.configured_mbps) / s.configured_mbps,
                    s.tenants,
                    s.fairness
                );
            }
            md.push('\n');
        }
        if let Some(v) = r.isolation_violations {
            let _ = writeln!(
                md,
                "Isolation (two tenants' overlay stages, one packet in eight misrouted, corrupted or \
                 re-stamped with the other tenant's VNI): {v} packets delivered across tenants.\n"
            );
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use mq_report::pipeline::{Row, StageRow, Target};
    use mq_report::Platform;

    fn report(accel: &str) -> Report {
        let stages = vec![StageRow {
            name: "pass".into(),
            ns_per_packet: 250.0,
            added_p50_us: 1.5,
            added_p99_us: 3.0,
            added_p50_spread_us: 0.4,
        }];
        Report {
            platform: Platform {
                machine: "Test CPU (2 CPUs)".into(),
                kernel: "6.12".into(),
                accel: accel.into(),
                scheduler: "eevdf".into(),
                cpus: 2,
            },
            path: "veth".into(),
            nic: "udp".into(),
            mode: "dedicated".into(),
            message_bytes: 64,
            rounds: 2,
            iterations: 100,
            hosts: "in-process".into(),
            pony_p50_us: 20.0,
            pony_p99_us: 30.0,
            pony_p50_spread_us: 1.0,
            target: Target::evaluate(20.0, &stages),
            stages,
            shaping: Vec::new(),
            isolation_violations: None,
            rows: vec![Row {
                variant: "pony".into(),
                stages: 0,
                round: 0,
                p50_us: 20.0,
                p99_us: 30.0,
                samples: 100,
            }],
        }
    }

    #[test]
    fn the_summary_has_the_issues_fields_at_the_top_and_every_run() {
        let dir = std::env::temp_dir().join(format!("xtask-pipeline-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let runs: Vec<Value> = ["native", "kvm"]
            .iter()
            .map(|a| serde_json::to_value(report(a)).unwrap())
            .collect();
        let (md, written) = record(&dir, &runs).unwrap();
        assert_eq!(written.len(), 2);
        let summary: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
        assert_eq!(summary["pony_p50_us"], 20.0);
        assert_eq!(summary["stages"][0]["name"], "pass");
        assert!(summary["shaping"].as_array().unwrap().is_empty());
        assert!(summary["isolation_violations"].is_null());
        assert_eq!(summary["runs"].as_array().unwrap().len(), 2);
        assert!(md.contains("| pass | 250 | 1.50 | 0.40 | 3.00 | 7.5 |"), "{md}");
        assert!(md.contains("— met"), "{md}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn shaping_rows_get_a_table_and_a_rate_over_time_plot() {
        let dir = std::env::temp_dir().join(format!("xtask-pipeline-shaping-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = report("native");
        r.shaping = vec![mq_report::pipeline::ShapingRow {
            configured_mbps: 100.0,
            achieved_mbps: 99.5,
            tenants: 2,
            fairness: 0.99,
            bin_ms: 10.0,
            rate_over_time_mbps: vec![vec![99.0, 98.0], vec![101.0, 100.0]],
        }];
        let (md, written) = record(&dir, &[serde_json::to_value(&r).unwrap()]).unwrap();
        assert!(md.contains("| 100 | 99.50 | -0.50 | 2 | 0.990 |"), "{md}");
        assert_eq!(written.last().unwrap(), &dir.join("shaping.svg"));
        let svg = std::fs::read_to_string(dir.join("shaping.svg")).unwrap();
        assert!(svg.contains("100 Mbit/s, tenant 2"), "a legend entry per tenant");
        assert!(
            !md.contains("Isolation"),
            "no isolation line without an isolation run"
        );
        r.isolation_violations = Some(0);
        let (md, _) = record(&dir, &[serde_json::to_value(&r).unwrap()]).unwrap();
        assert!(md.contains("0 packets delivered across tenants"), "{md}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
