// SPDX-License-Identifier: GPL-2.0-only
//! `mq-demo`: the demo's measurement, run on a sched_ext kernel (in the VM by
//! `cargo xtask demo`). With CPU hogs on every CPU it measures the wakeup
//! latency of a periodic thread that burns `--work-us` of CPU per wakeup,
//! like a spreading engine handling a batch, three ways in one boot:
//!
//! 1. `eevdf`: no BPF scheduler, a normal thread (the kernel's own baseline);
//! 2. `normal`: scx_microquanta loaded, the thread left in the fair share;
//! 3. `microquanta`: scx_microquanta loaded, the thread in the class.
//!
//! The thread needs more than its fair share of a CPU next to the hogs
//! (30% vs 2/9 by default), which is exactly when a fair scheduler makes it
//! wait and the MicroQuanta class, with its own budget, does not.
//!
//! Progress goes to stderr; the last stdout line is the report ([`mq_report::demo::Report`])
//! behind its tag, `MQ_DEMO_JSON {...}`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use mq_class::sysfs;
use mq_experiments::accel;
use mq_experiments::hogs::Hogs;
use mq_experiments::locate;
use mq_experiments::scheduler_process::SchedulerProcess;
use mq_experiments::wakeup::{measure, ThreadClass, WakeupConfig};
use mq_report::demo::{self, Report};
use mq_report::LatencySummary;

/// Wakeup latency next to CPU hogs: EEVDF vs scx_microquanta (normal thread
/// and MicroQuanta thread).
#[derive(Debug, Parser)]
struct Opts {
    /// Sleep period of the measured thread, in microseconds.
    #[arg(long, default_value_t = 1000)]
    period_us: u64,

    /// Wakeups measured per configuration.
    #[arg(long, default_value_t = 2000)]
    samples: u64,

    /// CPU time the measured thread burns after each wakeup, in microseconds.
    #[arg(long, default_value_t = 300)]
    work_us: u64,

    /// CPU hog processes per CPU.
    #[arg(long, default_value_t = 4)]
    hogs_per_cpu: usize,

    /// MicroQuanta period of the scheduler, in microseconds [default: 40,
    /// or 1000 under TCG (same share, see `accel`)].
    #[arg(long)]
    mq_period_us: Option<u64>,

    /// MicroQuanta runtime per period, in microseconds [default: 20, or 500
    /// under TCG].
    #[arg(long)]
    mq_runtime_us: Option<u64>,

    /// Extra argument for scx_microquanta (repeatable), e.g.
    /// `--scheduler-arg=--stats=1`.
    #[arg(long, allow_hyphen_values = true)]
    scheduler_arg: Vec<String>,
}

fn main() -> Result<()> {
    let opts = Opts::parse();
    let cpus = std::thread::available_parallelism()?.get();
    let scheduler = locate::binary("scx_microquanta").context("scx_microquanta binary not found")?;
    let hogs = Hogs::start(cpus * opts.hogs_per_cpu, None)?;
    eprintln!(
        "mq-demo: {} hogs on {cpus} CPUs, kernel {}, {} wakeups every {} µs with {} µs of work each",
        hogs.workers(),
        sysfs::kernel_release(),
        opts.samples,
        opts.period_us,
        opts.work_us
    );

    let run = |label: &str, class: ThreadClass| -> Result<LatencySummary> {
        eprintln!("mq-demo: measuring {label} ...");
        let s = measure(WakeupConfig {
            period: Duration::from_micros(opts.period_us),
            samples: opts.samples,
            class,
            work: Duration::from_micros(opts.work_us),
            cpu: None,
        })?;
        eprintln!(
            "mq-demo: {label:<12} p50 {:>9.1} µs  p99 {:>9.1} µs  max {:>9.1} µs",
            s.p50, s.p99, s.max
        );
        Ok(s)
    };

    let mut results = BTreeMap::new();
    results.insert(demo::EEVDF.to_string(), run(demo::EEVDF, ThreadClass::Normal)?);

    eprintln!("mq-demo: starting {}", scheduler.display());
    let (default_period, default_runtime) = accel::latency_bandwidth_us();
    let bandwidth = (
        opts.mq_period_us.unwrap_or(default_period),
        opts.mq_runtime_us.unwrap_or(default_runtime),
    );
    if accel::is_tcg() {
        eprintln!(
            "mq-demo: TCG emulation: class budget {}/{} µs (runtime/period), the kernel patch's \
             20/40 µs share at a period TCG can switch at",
            bandwidth.1, bandwidth.0
        );
    }
    let mut args = vec![
        format!("--period-us={}", bandwidth.0),
        format!("--runtime-us={}", bandwidth.1),
    ];
    args.extend(opts.scheduler_arg.iter().cloned());
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let sched = SchedulerProcess::start(&scheduler, &arg_refs)?;
    results.insert(demo::NORMAL.to_string(), run(demo::NORMAL, ThreadClass::Normal)?);
    results.insert(
        demo::MICROQUANTA.to_string(),
        run(demo::MICROQUANTA, ThreadClass::MicroQuanta)?,
    );
    let status = sched.stop()?;
    eprintln!("mq-demo: scheduler detached ({status}); back on EEVDF");

    let report = Report {
        kernel: sysfs::kernel_release(),
        cpus,
        period_us: opts.period_us,
        work_us: opts.work_us,
        hogs: hogs.workers(),
        scheduler_args: args,
        wakeup_latency_us: results,
    };
    println!("{}", mq_report::tagged_line(&report)?);
    Ok(())
}
