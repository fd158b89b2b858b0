//! `cargo xtask bench idle`: spreading and dedicated Pony engines' round trips with idle
//! CPUs allowed to enter their idle states against kept polling, measured by `mq-bench-idle`
//! (experiments/) natively on this host (root: namespaces, cpuidle). Writes
//! `target/experiments/idle/`: `summary.json` (the program's report), `summary.md` (the idle
//! states, what the comparison models and what not, per mode and setting the latencies,
//! allowed / polling) and `idle.svg` ([`super::idle_plot`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use mq_report::idle::{find, Report, IDLE, MODES};

use super::efficiency::run_native;
use super::idle_plot;
use super::two_runs;
use crate::Ctx;

/// Options of `cargo xtask bench idle`.
#[derive(Debug, clap::Args)]
pub struct IdleArgs {
    /// One round of short windows (passed to mq-bench-idle).
    #[arg(long)]
    pub quick: bool,
    /// Rounds [mq-bench-idle's default: 4, 1 with --quick].
    #[arg(long, value_name = "N")]
    pub rounds: Option<usize>,
}

pub fn run(ctx: &Ctx, args: &IdleArgs) -> Result<()> {
    let mut argv = Vec::new();
    if args.quick {
        argv.push("--quick".to_string());
    }
    if let Some(r) = args.rounds {
        argv.extend(["--rounds".into(), r.to_string()]);
    }
    let dir = ctx.ws.target_dir.join("experiments").join("idle");
    let text = run_native(ctx, "mq-bench-idle", &dir, &argv)?;
    let report: Report = serde_json::from_str(&text).context("parsing mq-bench-idle's report")?;
    let (md, written) = record(&dir, &report)?;
    two_runs::print_recorded(&md, &written);
    Ok(())
}

/// Writes `summary.json`, `summary.md` and `idle.svg` into `dir`.
pub fn record(dir: &Path, report: &Report) -> Result<(String, Vec<PathBuf>)> {
    let md = markdown(report);
    let [json, md_path] = two_runs::write_summary(dir, &serde_json::to_value(report)?, &md)?;
    let plot = dir.join("idle.svg");
    idle_plot::draw(report, &plot)?;
    Ok((md, vec![json, md_path, plot]))
}

pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let p = &r.platform;
    let _ = writeln!(s, "# Idle states: spreading vs dedicated\n");
    let states: Vec<String> = r
        .idle_states
        .iter()
        .map(|st| format!("{} ({} µs)", st.name, st.exit_latency_us))
        .collect();
    let _ = writeln!(
        s,
        "{} on {} (kernel {}, {}), {} CPUs; cpuidle driver {}, idle states {}; one app at {} msgs/s, \
         {} B messages over Pony on {} ({}); {} round(s) of {} s per point.\n",
        p.scheduler,
        p.machine,
        p.kernel,
        p.accel,
        p.cpus,
        r.driver,
        if states.is_empty() {
            "none".into()
        } else {
            states.join(", ")
        },
        r.offered_msgs_per_s,
        r.msg_bytes,
        r.path,
        r.nic,
        r.rounds,
        r.seconds
    );
    let _ = writeln!(
        s,
        "- Polling: {}\n- Models: {}\n- Does not model: {}\n",
        r.mechanism, r.models, r.does_not_model
    );
    let _ = writeln!(
        s,
        "| mode | idle | p50 µs | p99 µs (min-max) | p99.9 µs | cores | switches/op |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for mode in MODES {
        for idle in IDLE {
            if let Some(x) = find(&r.rows, mode, idle) {
                let _ = writeln!(
                    s,
                    "| {mode} | {idle} | {:.1} | {:.1} ({:.1}-{:.1}) | {:.1} | {:.3} | {} |",
                    x.p50_us,
                    x.p99_us,
                    x.p99_min_us,
                    x.p99_max_us,
                    x.p99_9_us,
                    x.cores,
                    x.ctx_switches_per_op.map_or("-".into(), |v| format!("{v:.2}"))
                );
            }
        }
    }
    let _ = writeln!(s, "\nIdle states allowed / kept polling:\n");
    for e in &r.effects {
        let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
        let _ = writeln!(s, "- {}: p50 {}, p99 {}", e.mode, f(e.p50_ratio), f(e.p99_ratio));
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use mq_report::idle::{effects, IdleState, Row};
    use mq_report::Platform;

    use super::*;

    pub fn sample() -> Report {
        let rows: Vec<Row> = MODES
            .iter()
            .flat_map(|m| {
                IDLE.iter().map(move |i| {
                    let p50 = if *i == "allowed" && *m == "spreading" {
                        60.0
                    } else {
                        30.0
                    };
                    Row {
                        mode: (*m).into(),
                        idle: (*i).into(),
                        msgs_per_s: 500.0,
                        sent: 500,
                        received: 500,
                        p50_us: p50,
                        p99_us: p50 * 3.0,
                        p99_9_us: p50 * 4.0,
                        max_us: p50 * 5.0,
                        p99_min_us: p50 * 2.5,
                        p99_max_us: p50 * 3.5,
                        cores: 0.1,
                        ctx_switches_per_op: Some(2.0),
                        migrations_per_op: Some(0.0),
                        task_clock_us_per_op: Some(10.0),
                        rounds: 4,
                    }
                })
            })
            .collect();
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
            rounds: 4,
            seconds: 3.0,
            warmup_ms: 300,
            offered_msgs_per_s: 500.0,
            mechanism: "cpuidle".into(),
            driver: "haltpoll".into(),
            idle_states: vec![IdleState {
                name: "POLL".into(),
                exit_latency_us: 0,
            }],
            models: "exit latency".into(),
            does_not_model: "C-states".into(),
            counters: "perf".into(),
            effects: effects(&rows),
            rows,
        }
    }

    #[test]
    fn the_summary_says_what_it_models_and_has_the_ratios() {
        let md = markdown(&sample());
        assert!(
            md.contains("- Models: exit latency") && md.contains("- Does not model: C-states"),
            "{md}"
        );
        assert!(md.contains("idle states POLL (0 µs)"), "{md}");
        assert!(
            md.contains("| spreading | allowed | 60.0 | 180.0 (150.0-210.0) | 240.0 | 0.100 | 2.00 |"),
            "{md}"
        );
        assert!(md.contains("- spreading: p50 2.00, p99 2.00"), "{md}");
        assert!(md.contains("- dedicated: p50 1.00, p99 1.00"), "{md}");
    }

    #[test]
    fn record_writes_the_summary_and_the_plot() {
        let dir = std::env::temp_dir().join(format!("xtask-idle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (_, written) = record(&dir, &sample()).unwrap();
        let back: Report = serde_json::from_str(&std::fs::read_to_string(&written[0]).unwrap()).unwrap();
        assert_eq!(back, sample());
        assert!(std::fs::read_to_string(&written[2]).unwrap().contains("<svg"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
