// SPDX-License-Identifier: GPL-2.0-only
//! The interference benchmark behind `mq-bench-interference`: the real `snap-host` runs
//! echo engines that an app drives open-loop (the modes benchmark's host and driver, see
//! [`crate::modes_bench`]) while antagonists share the machine, for each scheduling setup of
//! the engines; and how much work the antagonists lose next to them.
//!
//! ```text
//!  for each round:                               (interleaved: drift hits every setup alike)
//!    each antagonist alone for T s            -> alone ops/s
//!    for each setup (eevdf | fifo | microquanta | dedicated | a policy scheduler binary):
//!      start the scheduler (microquanta: scx_microquanta; policy: that binary), the host
//!      for each antagonist (none | cpu | fork | softirq | membw):
//!        stress-ng for T s ──┐  warm-up, then a window:
//!                            └─ app ─▶ echo engines ─▶ app   p50/p99/p99.9, ops/s,
//!                               perf counters of the engine threads per request
//! ```
//!
//! Setups: `eevdf`, spreading engines on the kernel's fair class; `fifo`, the same threads
//! put in SCHED_FIFO 50 from outside (`sched_setscheduler` on each engine thread's tid);
//! `microquanta`, spreading engines in the MicroQuanta class with `scx_microquanta` loaded
//! (at [`crate::accel::latency_bandwidth_us`]); `dedicated`, engines spinning on their own
//! core on EEVDF. The policy rows load each scheduler binary of a list instead
//! (`scx_microquanta`, `scx_mqland`): a binary not found is recorded as `not built`.
//!
//! # Report
//!
//! [`mq_report::interference::Report`] has the schema.

pub mod antagonist;
pub mod policy;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mq_report::interference::{Alone, Report, Row, SchedulerRun, ANTAGONISTS, SETUPS};
use snap_ipc::channel::ChannelAppEnd;

use self::antagonist::Antagonist;
use self::policy::Scheduler;
use crate::modes_bench::driver::{self, Driven, DRAIN, MEASURE, WARMUP};
use crate::modes_bench::host::{self, SnapHost};
use crate::modes_bench::Layout;
use crate::thread_counters::{self, Threads};

/// SCHED_FIFO priority of the `fifo` setup's engine threads (the scheduler benchmark's).
pub const FIFO_PRIORITY: i32 = 50;
/// Time stress-ng gets to start its workers before the engines' warm-up begins.
const ANTAGONIST_START: Duration = Duration::from_millis(300);

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Some of [`SETUPS`].
    pub setups: Vec<String>,
    /// Some of [`ANTAGONISTS`].
    pub antagonists: Vec<String>,
    pub rounds: usize,
    pub window: Duration,
    pub warmup: Duration,
    pub work_ns: u64,
    pub engines: usize,
    /// Offered load, % of one core.
    pub offered_load: u32,
    /// stress-ng workers per antagonist.
    pub workers: usize,
    /// scx_microquanta, for the `microquanta` setup.
    pub scheduler: Option<PathBuf>,
    /// The policy experiment's scheduler binaries by name (found next to this one or on
    /// PATH), each run as a spreading setup of its own under [`Self::policy_antagonists`].
    pub policy_schedulers: Vec<String>,
    pub policy_antagonists: Vec<String>,
}

impl BenchConfig {
    /// Refuses setups and antagonists this benchmark does not know, and an empty plan.
    pub fn check(&self) -> Result<()> {
        for s in &self.setups {
            if !SETUPS.contains(&s.as_str()) {
                bail!("unknown setup {s:?}: expected some of {}", SETUPS.join(","));
            }
        }
        for a in self.antagonists.iter().chain(&self.policy_antagonists) {
            if !ANTAGONISTS.contains(&a.as_str()) {
                bail!(
                    "unknown antagonist {a:?}: expected some of {}",
                    ANTAGONISTS.join(",")
                );
            }
        }
        if self.rounds == 0 || self.offered_load == 0 {
            bail!("rounds and the offered load must be above 0");
        }
        if self.setups.is_empty() && self.policy_schedulers.is_empty() {
            bail!("nothing to run: no setup and no policy scheduler");
        }
        Ok(())
    }

    /// How long each stress-ng run lasts: its start, the warm-up, the window and a margin
    /// for the drain, in whole seconds (stress-ng's `--timeout`).
    pub fn antagonist_seconds(&self) -> u64 {
        (ANTAGONIST_START + self.warmup + self.window + Duration::from_millis(500))
            .as_secs_f64()
            .ceil() as u64
    }
}

/// One setup to run in a round: a name, the engines' mode, how its scheduler starts.
struct Setup<'a> {
    name: String,
    mode: &'static str,
    scheduler: Option<Scheduler<'a>>,
    fifo: bool,
    antagonists: &'a [String],
}

/// Runs every round.
pub fn run(cfg: &BenchConfig, snap_host: &Path) -> Result<Report> {
    cfg.check()?;
    let stress_ng = antagonist::version()?;
    let cpus = crate::sched_bench::cpus();
    let layout = Layout::new(cpus);
    let seconds = cfg.antagonist_seconds();
    let mut policy_bins = Vec::new();
    let mut schedulers = Vec::new();
    for name in &cfg.policy_schedulers {
        match crate::locate::binary(name) {
            Some(bin) => policy_bins.push((name.clone(), bin)),
            None => {
                eprintln!("mq-bench-interference: {name} not built: no policy rows for it");
                schedulers.push(SchedulerRun {
                    name: name.clone(),
                    status: "not built".into(),
                });
            }
        }
    }
    let mut setups = Vec::new();
    for s in &cfg.setups {
        setups.push(Setup {
            name: s.clone(),
            mode: if s == "dedicated" {
                "dedicated"
            } else {
                "spreading"
            },
            scheduler: match s.as_str() {
                "microquanta" => Some(Scheduler::microquanta(
                    cfg.scheduler
                        .as_deref()
                        .context("the microquanta setup needs scx_microquanta")?,
                )),
                _ => None,
            },
            fifo: s == "fifo",
            antagonists: &cfg.antagonists,
        });
    }
    for (name, bin) in &policy_bins {
        setups.push(Setup {
            name: name.clone(),
            mode: "spreading",
            scheduler: Some(Scheduler::policy(name, bin)),
            fifo: false,
            antagonists: &cfg.policy_antagonists,
        });
    }
    let mut rows = Vec::new();
    let mut alone = Vec::new();
    let mut failed: BTreeMap<String, String> = BTreeMap::new();
    for round in 0..cfg.rounds {
        let mut alone_now = BTreeMap::new();
        let kinds: Vec<&String> = {
            let mut k: Vec<&String> = cfg.antagonists.iter().chain(&cfg.policy_antagonists).collect();
            k.sort();
            k.dedup();
            k.into_iter().filter(|a| *a != "none").collect()
        };
        for kind in kinds {
            let ops = Antagonist::start(kind, cfg.workers, seconds)?
                .finish()
                .with_context(|| format!("{kind} alone"))?;
            eprintln!("mq-bench-interference: round {round}: {kind} alone: {ops:.0} bogo-ops/s");
            alone_now.insert(kind.clone(), ops);
            alone.push(Alone {
                antagonist: kind.clone(),
                round,
                ops_per_s: ops,
            });
        }
        for setup in &setups {
            if failed.contains_key(&setup.name) {
                continue;
            }
            match run_setup(cfg, &layout, setup, round, &alone_now, snap_host) {
                Ok(mut r) => rows.append(&mut r),
                // A policy scheduler that fails is recorded and the others go on; a setup
                // of the main experiment failing fails the run.
                Err(e) if policy_bins.iter().any(|(n, _)| *n == setup.name) => {
                    eprintln!("mq-bench-interference: {}: {e:#}", setup.name);
                    failed.insert(setup.name.clone(), format!("{e:#}"));
                }
                Err(e) => return Err(e.context(format!("setup {} round {round}", setup.name))),
            }
        }
    }
    for (name, _) in &policy_bins {
        let status = failed
            .get(name)
            .map_or("ran".to_string(), |e| format!("failed: {e}"));
        schedulers.push(SchedulerRun {
            name: name.clone(),
            status,
        });
    }
    Ok(Report {
        platform: crate::modes_bench::platform(cpus),
        work_ns: cfg.work_ns,
        engines: cfg.engines,
        offered_load: cfg.offered_load,
        seconds: cfg.window.as_secs_f64(),
        warmup_ms: cfg.warmup.as_millis() as u64,
        rounds: cfg.rounds,
        stress_ng,
        workers: cfg.workers,
        counters: describe_counters(),
        rows,
        alone,
        schedulers,
    })
}

fn run_setup(
    cfg: &BenchConfig,
    layout: &Layout,
    setup: &Setup,
    round: usize,
    alone: &BTreeMap<String, f64>,
    snap_host: &Path,
) -> Result<Vec<Row>> {
    let group = layout.group(setup.mode, cfg.engines, cfg.work_ns)?;
    let sched = setup.scheduler.as_ref().map(Scheduler::start).transpose()?;
    eprintln!(
        "mq-bench-interference: round {round}: {} ({}) under {}",
        setup.name,
        setup.mode,
        crate::modes_bench::scheduler_name()
    );
    let mut host = SnapHost::start(snap_host, &group, mq_class::sysfs::microquanta_loaded())?;
    let mut channels = group
        .engines
        .iter()
        .map(|e| host.attach(e))
        .collect::<Result<Vec<_>>>()?;
    let tids: Vec<i32> = host
        .status()?
        .groups
        .iter()
        .flat_map(|g| &g.threads)
        .map(|t| t.tid)
        .filter(|&t| t > 0)
        .collect();
    if tids.is_empty() {
        bail!("snap-host reports no engine thread");
    }
    if setup.fifo {
        for &tid in &tids {
            set_fifo(tid)?;
        }
    }
    if matches!(setup.scheduler, Some(Scheduler::Policy { .. })) {
        // snap-host puts its threads in the class only under scx_microquanta (ops named
        // microquanta); under another policy binary of the same class (scx_mqland, which
        // pins the same map) they join it here, so every policy schedules the same threads.
        let class = mq_class::Class::open().context("opening the class map of the policy scheduler")?;
        for &tid in &tids {
            if !class.contains(tid as u32)? {
                class.add(tid as u32)?;
            }
        }
    }
    let mut counters = Threads::open(&tids).context("opening perf counters on the engine threads")?;
    let mut rows = Vec::new();
    for a in setup.antagonists {
        let point = Point {
            setup: &setup.name,
            mode: setup.mode,
            antagonist: a,
            round,
        };
        let row = run_point(
            cfg,
            layout,
            &point,
            alone,
            &mut host,
            &mut channels,
            &mut counters,
        )
        .with_context(|| format!("{} under {a}", setup.name))?;
        eprintln!("{}", table_row(&row));
        rows.push(row);
    }
    drop(channels);
    host.stop()
        .with_context(|| format!("stopping the {} host", setup.name))?;
    if let Some(s) = sched {
        s.stop()?;
    }
    Ok(rows)
}

/// SCHED_FIFO [`FIFO_PRIORITY`] for thread `tid` of another process (root).
fn set_fifo(tid: i32) -> Result<()> {
    let param = libc::sched_param {
        sched_priority: FIFO_PRIORITY,
    };
    // SAFETY: a plain syscall on a thread id with a valid parameter block.
    if unsafe { libc::sched_setscheduler(tid, libc::SCHED_FIFO, &param) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("SCHED_FIFO {FIFO_PRIORITY} for engine thread {tid} (needs root)"));
    }
    Ok(())
}

struct Point<'a> {
    setup: &'a str,
    mode: &'a str,
    antagonist: &'a str,
    round: usize,
}

/// Counters at one instant.
struct Sample {
    engine_ns: u64,
    counts: thread_counters::Counts,
    at: Instant,
}

fn sample(host: &mut SnapHost, counters: &mut Threads) -> Result<Sample> {
    let before = Instant::now();
    let status = host.status()?;
    let counts = counters.read()?;
    let after = Instant::now();
    Ok(Sample {
        engine_ns: host::engine_cpu_ns(&status),
        counts,
        at: before + (after - before) / 2,
    })
}

fn run_point(
    cfg: &BenchConfig,
    layout: &Layout,
    p: &Point,
    alone: &BTreeMap<String, f64>,
    host: &mut SnapHost,
    channels: &mut [ChannelAppEnd],
    counters: &mut Threads,
) -> Result<Row> {
    let antagonist = match p.antagonist {
        "none" => None,
        kind => {
            let a = Antagonist::start(kind, cfg.workers, cfg.antagonist_seconds())?;
            std::thread::sleep(ANTAGONIST_START);
            Some(a)
        }
    };
    let interval_ns = cfg.work_ns as f64 * 100.0 / f64::from(cfg.offered_load);
    let phase = AtomicU8::new(WARMUP);
    let app_core = layout.app_core;
    let (driven, (first, last)) = std::thread::scope(|s| {
        let driver = s.spawn(|| {
            if let Some(core) = app_core {
                crate::wakeup::pin_to_cpu(core)?;
            }
            driver::drive(channels, interval_ns, &phase)
        });
        let mut controller = || -> Result<(Sample, Sample)> {
            sleep_unless(cfg.warmup, || driver.is_finished());
            let first = sample(host, counters)?;
            phase.store(MEASURE, Ordering::Release);
            sleep_unless(cfg.window, || driver.is_finished());
            phase.store(DRAIN, Ordering::Release);
            Ok((first, sample(host, counters)?))
        };
        let samples = controller();
        phase.store(DRAIN, Ordering::Release);
        let driven = driver
            .join()
            .map_err(|_| anyhow::anyhow!("driver thread panicked"))?;
        anyhow::Ok((driven?, samples?))
    })?;
    let antagonist_ops = antagonist.map(Antagonist::finish).transpose()?;
    let loss = antagonist_ops.and_then(|ops| {
        let alone = *alone.get(p.antagonist)?;
        (alone > 0.0).then(|| 1.0 - ops / alone)
    });
    Ok(row(p, &driven, &first, &last, antagonist_ops, loss))
}

fn row(p: &Point, d: &Driven, first: &Sample, last: &Sample, ops: Option<f64>, loss: Option<f64>) -> Row {
    let wall = (last.at - first.at).as_secs_f64().max(1e-9);
    let q = |q: f64| d.rtt_ns.value_at_quantile(q) as f64 / 1e3;
    let c = last.counts.since(&first.counts);
    let per_op = |v: f64| v / (d.measured.max(1) as f64);
    Row {
        setup: p.setup.to_string(),
        mode: p.mode.to_string(),
        antagonist: p.antagonist.to_string(),
        round: p.round,
        p50_us: q(0.50),
        p99_us: q(0.99),
        p999_us: q(0.999),
        max_us: d.rtt_ns.max() as f64 / 1e3,
        ops_per_s: d.measured as f64 / d.window.as_secs_f64().max(1e-9),
        cores: last.engine_ns.saturating_sub(first.engine_ns) as f64 / 1e9 / wall,
        antagonist_ops_per_s: ops,
        antagonist_loss: loss,
        ctx_switches_per_op: per_op(c.switches as f64),
        migrations_per_op: per_op(c.migrations as f64),
        task_clock_us_per_op: per_op(c.task_clock_ns as f64 / 1e3),
        cycles_per_op: c.cycles.map(|v| per_op(v as f64)),
    }
}

/// Sleeps up to `d` in short steps, returning early once `done()`.
fn sleep_unless(d: Duration, done: impl Fn() -> bool) {
    let until = Instant::now() + d;
    while Instant::now() < until && !done() {
        std::thread::sleep(Duration::from_millis(5).min(until.saturating_duration_since(Instant::now())));
    }
}

/// Header of [`table_row`]'s table.
pub const TABLE_HEADER: &str =
    "setup          antagonist round  p50 µs   p99 µs  p99.9 µs   ops/s  cores  antag loss  cs/op  mig/op";

/// One line of the human table.
pub fn table_row(r: &Row) -> String {
    format!(
        "{:<14} {:<10} {:>5} {:>7.1} {:>8.1} {:>9.1} {:>7.0} {:>6.2} {:>11} {:>6.2} {:>7.3}",
        r.setup,
        r.antagonist,
        r.round,
        r.p50_us,
        r.p99_us,
        r.p999_us,
        r.ops_per_s,
        r.cores,
        r.antagonist_loss
            .map_or("-".into(), |l| format!("{:.0}%", l * 100.0)),
        r.ctx_switches_per_op,
        r.migrations_per_op
    )
}

/// The human table of a report.
pub fn table(r: &Report) -> String {
    let mut s = format!(
        "interference: {}, kernel {}, accel {}, {} engine(s) at {}% of a core, {} ns/request, {} stress-ng worker(s)\n{TABLE_HEADER}\n",
        r.platform.machine, r.platform.kernel, r.platform.accel, r.engines,
        r.offered_load, r.work_ns, r.workers
    );
    for row in &r.rows {
        s.push_str(&table_row(row));
        s.push('\n');
    }
    for sched in &r.schedulers {
        s.push_str(&format!("policy scheduler {}: {}\n", sched.name, sched.status));
    }
    s
}

/// How the rows count, for the report.
fn describe_counters() -> String {
    let hw = match thread_counters::pmu() {
        Ok(()) => "cycles likewise".to_string(),
        Err(why) => format!("cycles null: {why}"),
    };
    format!(
        "perf_event_open on each engine thread of snap-host (not CPU-wide, so antagonists \
         and other processes do not count), user and kernel: context switches, CPU \
         migrations and task-clock (software events) per echoed request; {hw}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BenchConfig {
        BenchConfig {
            setups: vec!["eevdf".into(), "dedicated".into()],
            antagonists: vec!["none".into(), "cpu".into()],
            rounds: 1,
            window: Duration::from_millis(1000),
            warmup: Duration::from_millis(300),
            work_ns: 20_000,
            engines: 2,
            offered_load: 30,
            workers: 2,
            scheduler: None,
            policy_schedulers: Vec::new(),
            policy_antagonists: Vec::new(),
        }
    }

    #[test]
    fn the_plan_is_checked_and_antagonists_outlast_the_window() {
        let cfg = config();
        cfg.check().unwrap();
        // 0.3 + 0.3 + 1.0 + 0.5 s, rounded up.
        assert_eq!(cfg.antagonist_seconds(), 3);
        let bad = BenchConfig {
            setups: vec!["lazy".into()],
            ..config()
        };
        assert!(bad.check().unwrap_err().to_string().contains("unknown setup"));
        let bad = BenchConfig {
            antagonists: vec!["storm".into()],
            ..config()
        };
        assert!(bad.check().is_err());
        let bad = BenchConfig {
            rounds: 0,
            ..config()
        };
        assert!(bad.check().is_err());
        let empty = BenchConfig {
            setups: Vec::new(),
            ..config()
        };
        assert!(empty.check().is_err());
    }
}
