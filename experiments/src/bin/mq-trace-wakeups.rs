// SPDX-License-Identifier: GPL-2.0-only
//! `mq-trace-wakeups`: the demo's workload under one policy, traced by the kernel, and
//! where each wakeup's time went, for all wakeups and for the slow ones
//! ([`mq_experiments::wakeup_trace`]). Needs root and tracefs; the `normal`,
//! `microquanta` and `fifo-scx` policies need a sched_ext kernel (`cargo xtask vm --
//! mq-trace-wakeups`).
//!
//! Progress and the table go to stderr; the last stdout line is the report
//! ([`mq_report::wakeup_trace::Report`]) behind its tag, `MQ_TRACE_WAKEUPS_JSON {...}`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use mq_experiments::wakeup_trace::{self, Config, Policy};
use mq_experiments::{accel, locate};
use mq_report::wakeup_trace::{Attribution, Report};

/// Where a periodic thread's wakeup latency goes next to CPU hogs: the kernel's trace of
/// each wakeup, from its deadline to the thread's clock read, for all wakeups and the slow
/// ones.
#[derive(Debug, Parser)]
struct Opts {
    /// The measured thread's class (and whether scx_microquanta is loaded).
    #[arg(long, value_enum, default_value_t = Policy::Microquanta)]
    policy: Policy,

    /// Wakeups to trace.
    #[arg(long, default_value_t = 2000)]
    samples: u64,

    /// Sleep period of the measured thread, in microseconds.
    #[arg(long, default_value_t = 1000)]
    period_us: u64,

    /// CPU time the measured thread burns after each wakeup, in microseconds.
    #[arg(long, default_value_t = 300)]
    work_us: u64,

    /// CPU hog processes per CPU.
    #[arg(long, default_value_t = 4)]
    hogs_per_cpu: usize,

    /// A wakeup at least this late (µs) is slow [default: the p99 of the wakeups found in
    /// the trace].
    #[arg(long)]
    slow_us: Option<u64>,

    /// Rows of the table (the largest in the slow wakeups first).
    #[arg(long, default_value_t = 25)]
    rows: usize,

    /// Keep the raw trace (ftrace text) in this file.
    #[arg(long)]
    keep_trace: Option<PathBuf>,

    /// Run the demo's stall probe (a SCHED_FIFO 99 thread per CPU, woken at jittered
    /// intervals) while tracing, so that its wakeups meet the measured thread's as in the demo.
    #[arg(long)]
    stall_probe: bool,

    /// Extra argument for scx_microquanta (repeatable), after the period and runtime the
    /// demo uses (40/20 µs, or 1000/500 µs under TCG).
    #[arg(long, allow_hyphen_values = true)]
    scheduler_arg: Vec<String>,
}

fn main() -> Result<()> {
    let opts = Opts::parse();
    let cpus = std::thread::available_parallelism()?.get();
    let (period, runtime) = accel::latency_bandwidth_us();
    let mut args = vec![format!("--period-us={period}"), format!("--runtime-us={runtime}")];
    args.extend(opts.scheduler_arg.iter().cloned());
    let cfg = Config {
        policy: opts.policy,
        samples: opts.samples,
        period: Duration::from_micros(opts.period_us),
        work: Duration::from_micros(opts.work_us),
        hogs: cpus * opts.hogs_per_cpu,
        scheduler: locate::binary("scx_microquanta").map(|bin| (bin, args)),
        slow: opts.slow_us.map(Duration::from_micros),
        keep_trace: opts.keep_trace,
        stall_probe: opts.stall_probe,
    };
    eprintln!(
        "mq-trace-wakeups: {} on {cpus} CPUs next to {} hogs, {} wakeups every {} µs with {} µs of work",
        cfg.policy.name(),
        cfg.hogs,
        cfg.samples,
        opts.period_us,
        opts.work_us
    );
    let report = wakeup_trace::run(&cfg)?;
    eprint!("{}", table(&report, opts.rows));
    println!("{}", mq_report::tagged_line(&report)?);
    Ok(())
}

/// The rows of both sets side by side, the slow wakeups' largest first.
fn table(r: &Report, rows: usize) -> String {
    let l = &r.wakeup_latency_us;
    let blocked = r.blocked.map_or_else(
        || "blocked sleeps not counted".into(),
        |b| format!("{b} sleeps blocked"),
    );
    let mut out = format!(
        "mq-trace-wakeups: {}: latency p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs; {} of {} wakeups \
         found in the trace ({blocked}), {} slow (≥ {:.0} µs) and {} as late not in it\n",
        r.policy,
        l.p50,
        l.p99,
        l.max,
        r.matched,
        l.samples,
        r.slow.wakeups,
        r.slow_threshold_us,
        r.unmatched_slow
    );
    out += &format!(
        "{:<40} {:>8} {:>10} {:>8} {:>10}\n",
        "where the window's time went", "all: in", "mean µs", "slow: in", "mean µs"
    );
    let find = |a: &Attribution, label: &str| {
        a.rows
            .iter()
            .find(|x| x.label == label)
            .map_or((0.0, 0.0), |x| (x.share, x.mean_us))
    };
    let mut labels: Vec<&str> = r.slow.rows.iter().map(|x| x.label.as_str()).collect();
    for x in &r.all.rows {
        if !labels.contains(&x.label.as_str()) {
            labels.push(&x.label);
        }
    }
    for label in labels.into_iter().take(rows) {
        let (all_in, all_us) = find(&r.all, label);
        let (slow_in, slow_us) = find(&r.slow, label);
        out += &format!(
            "{label:<40} {:>7.0}% {all_us:>10.1} {:>7.0}% {slow_us:>10.1}\n",
            all_in * 100.0,
            slow_in * 100.0
        );
    }
    out += "the slowest wakeups, µs: what filled each, as label time@start from the deadline\n";
    for w in &r.slowest {
        let charges: Vec<String> = w
            .charges
            .iter()
            .map(|c| format!("{} {:.0}@{:.0}", c.label, c.us, c.at_us))
            .collect();
        out += &format!("{:>8.0} (CPU {}): {}\n", w.late_us, w.cpu, charges.join(", "));
    }
    out
}
