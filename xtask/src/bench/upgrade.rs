//! `cargo xtask bench upgrade`: transparent upgrade under load, measured by
//! `mq-bench-upgrade` (experiments/) natively on this host: two `snap-host` processes in two
//! network namespaces joined by a veth pair (root; loopback otherwise, and the summary says
//! so), Pony apps running a checked ping-pong and bulk stream between them, and one host
//! upgraded repeatedly with `snapctl upgrade`. Writes `target/experiments/upgrade/`:
//! `summary.json` (the program's report), `summary.md` (per flow count: blackout and
//! brownout per engine, the ping-pong's longest gap, exact message counts; the targets) and
//! `rtt_over_time.svg` ([`super::upgrade_plot`]).
//!
//! Native only: the VM has no network namespaces, and what an upgrade moves does not
//! depend on the CPU scheduler.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use mq_report::upgrade::{Percentiles, Report, Run};

use super::two_runs;
use super::upgrade_plot;
use crate::{cargo, sys, Ctx};

/// Options of `cargo xtask bench upgrade`.
#[derive(Debug, clap::Args)]
pub struct UpgradeArgs {
    /// Fewer flows and 3 upgrades per flow count (passed to mq-bench-upgrade).
    #[arg(long)]
    pub quick: bool,
    /// Ping-pong flows per engine, comma-separated [mq-bench-upgrade's default: 1,100,1000].
    #[arg(long, value_name = "LIST")]
    pub flows: Option<String>,
    /// Upgrades per flow count [mq-bench-upgrade's default: 20].
    #[arg(long, value_name = "N")]
    pub upgrades: Option<usize>,
}

pub fn run(ctx: &Ctx, args: &UpgradeArgs) -> Result<()> {
    let dir = output_dir(ctx);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    println!("cargo: building mq-bench-upgrade, snap-host and snapctl (release)");
    cargo::build(
        &ctx.deps,
        &ctx.ws,
        &[
            "build",
            "--release",
            "-p",
            "mq-experiments",
            "--bin",
            "mq-bench-upgrade",
            "-p",
            "snap-host",
            "--bin",
            "snap-host",
            "-p",
            "snap-ctl",
            "--bin",
            "snapctl",
        ],
    )?;
    let release = ctx.ws.target_dir.join("release");
    let json = dir.join("run.json");
    let mut cmd = Command::new(release.join("mq-bench-upgrade"));
    cmd.args(program_args(args, sys::is_root()))
        .arg("--json")
        .arg(&json);
    println!("bench upgrade: native run");
    sys::run(&mut cmd)?;
    let text = std::fs::read_to_string(&json).with_context(|| format!("reading {}", json.display()))?;
    let report: Report =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", json.display()))?;
    let (md, written) = record(&dir, &report)?;
    two_runs::print_recorded(&md, &written);
    Ok(())
}

/// `target/experiments/upgrade/`.
pub fn output_dir(ctx: &Ctx) -> PathBuf {
    ctx.ws.target_dir.join("experiments").join("upgrade")
}

/// mq-bench-upgrade's options: the caller's, and loopback when not root (no namespaces).
fn program_args(args: &UpgradeArgs, root: bool) -> Vec<String> {
    let mut argv = Vec::new();
    if args.quick {
        argv.push("--quick".into());
    }
    if let Some(f) = &args.flows {
        argv.extend(["--flows".into(), f.clone()]);
    }
    if let Some(n) = args.upgrades {
        argv.extend(["--upgrades".into(), n.to_string()]);
    }
    if !root {
        argv.extend(["--path".into(), "loopback".into()]);
    }
    argv
}

/// Writes `summary.json`, `summary.md` and `rtt_over_time.svg` into `dir`; returns the
/// markdown and the files written.
pub fn record(dir: &Path, report: &Report) -> Result<(String, Vec<PathBuf>)> {
    let md = markdown(report);
    let [json, md_path] = two_runs::write_summary(dir, &serde_json::to_value(report)?, &md)?;
    let plot = dir.join("rtt_over_time.svg");
    upgrade_plot::draw_rtt_over_time(report, &plot)?;
    Ok((md, vec![json, md_path, plot]))
}

/// A value with `prec` decimals, `-` when not measured.
fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.prec$}"))
}

fn pct(p: &Percentiles) -> [String; 3] {
    [opt(p.p50, 2), opt(p.p99, 2), opt(p.max, 2)]
}

fn sum(run: &Run, pick: fn(&mq_report::upgrade::Check) -> u64) -> u64 {
    run.checks.iter().map(pick).sum()
}

/// `text` as one markdown table cell: one line, no column break.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// The summary: platform, one row per flow count, every upgrade, the targets.
pub fn markdown(r: &Report) -> String {
    let mut md = String::from("# Transparent upgrade under load (`mq-bench-upgrade`)\n\n");
    let _ = writeln!(
        md,
        "{} · kernel {} · {} · {} · path **{}**: {}.\n",
        r.platform.machine, r.platform.kernel, r.platform.accel, r.platform.scheduler, r.path, r.hosts
    );
    let _ = writeln!(
        md,
        "{} upgrades per flow count, {} ms of steady traffic before each; ping-pong {} B, one \
         message in flight over the flows in turn; bulk {} B messages, {} in flight, on one \
         more flow. Blackout and brownout are `snapctl upgrade`'s, per engine; the gap is the \
         longest time without a ping-pong echo around the upgrade, as the app saw it.\n",
        r.upgrades, r.interval_ms, r.ping_pong_bytes, r.bulk_bytes, r.bulk_window
    );
    md.push_str(
        "| flows | upgrades (failed) | blackout p50 / p99 / max ms | brownout p50 ms | longest gap ms | \
         RTT p50 µs | bulk MB/s | messages | lost | duplicated | reordered | corrupt |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for run in &r.runs {
        let [p50, p99, max] = pct(&run.blackout_ms);
        let failed = run.upgrades.iter().filter(|u| u.error.is_some()).count();
        let gap = run.upgrades.iter().filter_map(|u| u.gap_ms).reduce(f64::max);
        let _ = writeln!(
            md,
            "| {} | {} ({failed}) | {p50} / {p99} / {max} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            run.flows,
            run.upgrades.len(),
            opt(run.brownout_ms.p50, 2),
            opt(gap, 2),
            opt(run.rtt_p50_us, 1),
            opt(run.bulk_mb_per_s, 1),
            sum(run, |c| c.sent),
            sum(run, |c| c.lost),
            sum(run, |c| c.duplicated),
            sum(run, |c| c.reordered),
            sum(run, |c| c.corrupt),
        );
    }
    let [p50, p99, max] = pct(&r.blackout_ms);
    let _ = writeln!(
        md,
        "\nEvery engine move of the run: blackout p50 {p50}, p99 {p99}, max {max} ms ({} moves); \
         brownout p50 {} ms. Totals: lost {}, duplicated {}, reordered {}, corrupt {}; failed \
         upgrades {}.\n",
        r.blackout_ms.samples,
        opt(r.brownout_ms.p50, 2),
        r.lost.total,
        r.duplicated.total,
        r.reordered.total,
        r.corrupt.total,
        r.failed_upgrades
    );
    for run in &r.runs {
        for f in &run.app_failures {
            let _ = writeln!(md, "**App failure** ({} flows): {}\n", run.flows, cell(f));
        }
    }
    md.push_str("## Targets (issue 12)\n\n| target | verdict | from |\n|---|---|---|\n");
    for t in &r.targets {
        let _ = writeln!(md, "| {} | {} | {} |", t.name, t.verdict(), t.from);
    }
    md.push_str("\n## Upgrades\n\n| flows | # | at s | snapctl ms | engine | brownout ms | blackout ms | rounds | state | gap ms | max RTT ms | error |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for run in &r.runs {
        for u in &run.upgrades {
            let tail = format!(
                "{} | {} | {} |",
                opt(u.gap_ms, 2),
                opt(u.max_rtt_ms, 2),
                cell(u.error.as_deref().unwrap_or(""))
            );
            let head = format!(
                "| {} | {} | {:.2} | {:.1} |",
                run.flows,
                u.index,
                u.at_ms / 1e3,
                u.snapctl_ms
            );
            if u.engines.is_empty() {
                let _ = writeln!(md, "{head} - | - | - | - | - | {tail}");
            }
            for e in &u.engines {
                let _ = writeln!(
                    md,
                    "{head} {} | {:.2} | {:.2} | {} | {:.1} kB | {tail}",
                    e.name,
                    e.brownout_ms,
                    e.blackout_ms,
                    e.rounds,
                    e.state_bytes as f64 / 1e3
                );
            }
        }
    }
    md.push_str(
        "\nSnap (SOSP'19) reports a median blackout of about 250 ms for its upgrades. Timing on a \
         shared machine is noisy; the counts are exact.\n",
    );
    md
}

#[cfg(test)]
pub(crate) mod tests {
    use mq_report::upgrade::{self, Check, EngineMove, RttBin, Upgrade};
    use mq_report::Platform;

    use super::*;

    fn run(flows: usize, blackouts: &[f64], failed: bool) -> Run {
        let mut upgrades: Vec<Upgrade> = blackouts
            .iter()
            .enumerate()
            .map(|(index, &b)| Upgrade {
                index,
                at_ms: 500.0 * (index + 1) as f64,
                snapctl_ms: 40.0,
                total_ms: Some(35.0),
                old_pid: Some(100),
                new_pid: Some(101),
                engines: vec![EngineMove {
                    name: "pony0".into(),
                    kind: "pony".into(),
                    brownout_ms: 3.0,
                    blackout_ms: b,
                    rounds: 2,
                    state_bytes: 375_000,
                }],
                gap_ms: Some(b + 2.0),
                max_rtt_ms: Some(b + 1.0),
                error: None,
            })
            .collect();
        if failed {
            upgrades.push(Upgrade {
                index: upgrades.len(),
                at_ms: 2500.0,
                snapctl_ms: 5.0,
                total_ms: None,
                old_pid: None,
                new_pid: None,
                engines: vec![],
                gap_ms: None,
                max_rtt_ms: None,
                error: Some("snapctl upgrade failed: refused\n\nUsage: snapctl | more".into()),
            });
        }
        Run {
            flows,
            blackout_ms: Percentiles::of(blackouts),
            brownout_ms: Percentiles::of(&[3.0]),
            upgrades,
            checks: vec![Check {
                traffic: "bulk".into(),
                flows: 1,
                sent: 4000,
                received: 4000,
                lost: 0,
                duplicated: 0,
                reordered: 0,
                corrupt: 0,
            }],
            rtt_p50_us: Some(80.0),
            round_trips: 3000,
            bulk_messages: 4000,
            bulk_mb_per_s: Some(150.0),
            rtt: (0..300)
                .map(|i| RttBin {
                    t_ms: i as f64 * 10.0,
                    n: 10,
                    p50_us: 80.0,
                    max_us: if i % 50 == 0 { 9000.0 } else { 120.0 },
                })
                .collect(),
            app_failures: if failed {
                vec!["ping client: the Snap host is gone".into()]
            } else {
                vec![]
            },
        }
    }

    pub fn sample() -> Report {
        let runs = vec![
            run(1, &[0.05, 0.06, 0.07], false),
            run(1000, &[4.0, 5.0, 30.0], true),
        ];
        Report {
            platform: Platform {
                machine: "Test CPU (2 CPUs)".into(),
                kernel: "6.12.0".into(),
                accel: "native".into(),
                scheduler: "eevdf".into(),
                cpus: 2,
            },
            path: "veth".into(),
            hosts: "two snap-host processes".into(),
            upgrades: 3,
            flows: vec![1, 1000],
            ping_pong_bytes: 64,
            bulk_bytes: 16384,
            bulk_window: 16,
            interval_ms: 500,
            blackout_ms: Percentiles::of(&[0.05, 0.06, 0.07, 4.0, 5.0, 30.0]),
            brownout_ms: Percentiles::of(&[3.0; 6]),
            lost: upgrade::Count::of(&runs, |c| c.lost),
            duplicated: upgrade::Count::of(&runs, |c| c.duplicated),
            reordered: upgrade::Count::of(&runs, |c| c.reordered),
            corrupt: upgrade::Count::of(&runs, |c| c.corrupt),
            failed_upgrades: 1,
            targets: upgrade::targets(&runs),
            runs,
        }
    }

    #[test]
    fn markdown_has_a_row_per_flow_count_every_upgrade_and_the_targets() {
        let md = markdown(&sample());
        assert!(md.contains("| 1000 | 4 (1) | 5.00 / 30.00 / 30.00 | 3.00 | 32.00 | 80.0 | 150.0 | 4000 | 0 | 0 | 0 | 0 |"), "{md}");
        assert!(
            md.contains("| blackout p50 at 1000 flows (ms) | PASS 5.00 ≤ 10 |"),
            "{md}"
        );
        assert!(
            md.contains("| failed upgrades | FAIL 1.00 ≤ 0 | 7 upgrades |"),
            "{md}"
        );
        // A failed upgrade is a row with its error and no invented figures.
        assert!(
            md.contains(
                "| 1000 | 3 | 2.50 | 5.0 | - | - | - | - | - | - | - | snapctl upgrade failed: refused Usage: snapctl \\| more |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| 1 | 0 | 0.50 | 40.0 | pony0 | 3.00 | 0.05 | 2 | 375.0 kB | 2.05 | 1.05 |  |"),
            "{md}"
        );
        assert!(md.contains("path **veth**"), "{md}");
        assert!(
            md.contains("**App failure** (1000 flows): ping client: the Snap host is gone"),
            "{md}"
        );
    }

    #[test]
    fn not_root_runs_over_loopback() {
        let args = UpgradeArgs {
            quick: true,
            flows: Some("1,100".into()),
            upgrades: Some(4),
        };
        assert_eq!(
            program_args(&args, true),
            ["--quick", "--flows", "1,100", "--upgrades", "4"]
        );
        assert_eq!(program_args(&args, false)[5..], ["--path", "loopback"]);
    }

    #[test]
    fn record_writes_the_summary_and_the_plot() {
        let dir = std::env::temp_dir().join(format!("xtask-upgrade-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (_, written) = record(&dir, &sample()).unwrap();
        assert_eq!(written.len(), 3);
        let json: Report = serde_json::from_str(&std::fs::read_to_string(&written[0]).unwrap()).unwrap();
        assert_eq!(json, sample());
        let svg = std::fs::read_to_string(dir.join("rtt_over_time.svg")).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
