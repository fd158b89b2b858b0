// SPDX-License-Identifier: GPL-2.0-only
//! The scheduling-modes benchmark behind `mq-bench-modes`: the real
//! `snap-host` runs echo engines in each of Snap's three modes, and an app
//! drives them open-loop at several offered loads, measuring round-trip
//! latency, throughput and the CPU the engines burn.
//!
//! ```text
//!  mq-bench-modes (app)                             snap-host (one per mode)
//!   main thread: status over the control socket ─▶ control plane
//!   driver thread, pinned to the app core, spins:
//!     push + doorbell ──── request ring(s) ──────▶ echo engine(s), work_ns
//!     poll ◀────────────── response ring(s) ───── each, dedicated | spreading
//!                                                   | compacting
//! ```
//!
//! Offered load L (% of one core) at `work_ns` per request is a request
//! every `work_ns * 100 / L` ns. Cores = CPU time of the host's engine
//! threads (its `status`) over wall time of the measuring window; the
//! host's other threads (control, compacting monitor) are in `host_cores`.
//!
//! Where things run: the app on CPU 0 whenever there are 2 CPUs or more,
//! dedicated engines on the last CPU, compacting on every CPU but the app's,
//! spreading anywhere (the scheduler places it). With 2 CPUs the app's CPU is
//! shared with this program's main thread and the host's control and monitor
//! threads, and spreading engines can only really use CPU 1 (CPU 0 spins).
//!
//! # Report
//!
//! [`mq_report::modes::Report`] has the schema.

pub mod driver;
pub mod host;

use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mq_report::modes::{Report, Row, MODES};
use mq_report::Platform;

use self::driver::{Driven, DRAIN, MEASURE, WARMUP};
use self::host::{GroupLayout, SnapHost};

/// Per-request CPU cost natively; under TCG every wakeup and ring operation
/// costs ~100x more, so requests are made 10x more expensive to keep the
/// engine's own work the larger part of a round trip.
pub const WORK_NS: u64 = 20_000;
pub const TCG_WORK_NS: u64 = 200_000;

/// The default per-request cost on this accelerator.
pub fn default_work_ns() -> u64 {
    if crate::accel::is_tcg() {
        TCG_WORK_NS
    } else {
        WORK_NS
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Modes, a subset of [`MODES`].
    pub modes: Vec<String>,
    /// Offered loads, % of one core.
    pub loads: Vec<u32>,
    /// Measuring window per point.
    pub window: Duration,
    /// Excluded warm-up before each window.
    pub warmup: Duration,
    /// Busy-wait per request in the echo engine.
    pub work_ns: u64,
    /// Echo engines in the group; requests go round-robin over them.
    pub engines: usize,
    /// Put spreading/compacting threads in the MicroQuanta class (when loaded).
    pub microquanta: bool,
}

/// Which CPUs the app and each mode's engines get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub cpus: usize,
    /// The app's CPU; `None` on a single CPU (nothing to separate).
    pub app_core: Option<usize>,
}

impl Layout {
    pub fn new(cpus: usize) -> Self {
        Self {
            cpus,
            app_core: (cpus >= 2).then_some(0),
        }
    }

    /// The engine group for `mode`.
    pub fn group(&self, mode: &str, engines: usize, work_ns: u64) -> Result<GroupLayout> {
        let not_app: Vec<usize> = (0..self.cpus).filter(|&c| Some(c) != self.app_core).collect();
        let (mode, cores) = match mode {
            "dedicated" => ("dedicated", vec![self.cpus - 1]),
            "spreading" => ("spreading", Vec::new()),
            "compacting" => ("compacting", not_app),
            other => bail!("unknown mode {other:?} (expected one of {MODES:?})"),
        };
        Ok(GroupLayout {
            mode,
            cores,
            engines: (0..engines).map(|i| format!("echo{i}")).collect(),
            work_ns,
        })
    }

    /// One line for the report.
    pub fn describe(&self) -> String {
        let app = self
            .app_core
            .map_or("unpinned".to_string(), |c| format!("CPU {c}"));
        let mut s = format!(
            "{} CPUs; app (spinning) on {app}; dedicated on CPU {}; compacting on {}; spreading anywhere",
            self.cpus,
            self.cpus - 1,
            if self.app_core.is_some() {
                "every CPU but the app's"
            } else {
                "every CPU"
            }
        );
        if self.cpus == 2 {
            s.push_str("; the app's CPU also runs the host's control and monitor threads");
        }
        s
    }
}

/// What runs the engines' threads now: our class, the kernel's EEVDF, or
/// another sched_ext scheduler.
pub fn scheduler_name() -> String {
    if mq_class::sysfs::microquanta_loaded() {
        return "microquanta".into();
    }
    match mq_class::sysfs::root_ops() {
        Some(ops) if mq_class::sysfs::state() == mq_class::SchedExtState::Enabled => {
            format!("sched_ext:{ops}")
        }
        _ => "eevdf".into(),
    }
}

/// What this run runs on and under, with `cpus` online CPUs.
pub fn platform(cpus: usize) -> Platform {
    Platform {
        machine: machine(),
        kernel: mq_class::sysfs::kernel_release(),
        accel: crate::accel::name(),
        scheduler: scheduler_name(),
        cpus,
    }
}

/// The CPU model and count.
pub fn machine() -> String {
    let cpus = crate::sched_bench::cpus();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{model} ({cpus} CPUs)")
}

/// Runs every mode at every load against `snap_host`.
pub fn run(cfg: &BenchConfig, snap_host: &Path) -> Result<Report> {
    let cpus = crate::sched_bench::cpus();
    let layout = Layout::new(cpus);
    let mut rows = Vec::new();
    for mode in &cfg.modes {
        let group = layout.group(mode, cfg.engines, cfg.work_ns)?;
        eprintln!("mq-bench-modes: {mode}: cores {:?} (empty: any)", group.cores);
        let mut host = SnapHost::start(snap_host, &group, cfg.microquanta)?;
        let mut channels = group
            .engines
            .iter()
            .map(|e| host.attach(e))
            .collect::<Result<Vec<_>>>()?;
        for &load in &cfg.loads {
            let row = run_point(cfg, &layout, mode, load, &mut host, &mut channels)
                .with_context(|| format!("{mode} at {load}%"))?;
            eprintln!("{}", table_row(&row));
            rows.push(row);
        }
        drop(channels);
        host.stop().with_context(|| format!("stopping the {mode} host"))?;
    }
    Ok(Report {
        platform: platform(cpus),
        work_ns: cfg.work_ns,
        engines: cfg.engines,
        seconds: cfg.window.as_secs_f64(),
        warmup_ms: cfg.warmup.as_millis() as u64,
        layout: layout.describe(),
        rows,
    })
}

/// CPU counters at one instant: engine threads (status), whole host, and when.
struct Sample {
    engine_ns: u64,
    host_ns: u64,
    at: Instant,
    engine_threads: usize,
    in_class: usize,
}

fn sample(host: &mut SnapHost) -> Result<Sample> {
    let before = Instant::now();
    let status = host.status()?;
    let host_ns = host::process_cpu_ns(host.pid());
    let after = Instant::now();
    let threads = status.groups.iter().flat_map(|g| &g.threads);
    Ok(Sample {
        engine_ns: host::engine_cpu_ns(&status),
        host_ns,
        // The counters were read somewhere inside the call.
        at: before + (after - before) / 2,
        engine_threads: status.groups.iter().map(|g| g.active_threads).sum(),
        in_class: threads.filter(|t| t.in_microquanta).count(),
    })
}

fn run_point(
    cfg: &BenchConfig,
    layout: &Layout,
    mode: &str,
    load: u32,
    host: &mut SnapHost,
    channels: &mut [snap_ipc::channel::ChannelAppEnd],
) -> Result<Row> {
    if load == 0 {
        bail!("offered load must be above 0%");
    }
    let interval_ns = cfg.work_ns as f64 * 100.0 / f64::from(load);
    let phase = AtomicU8::new(WARMUP);
    let app_core = layout.app_core;
    let (driven, samples) = std::thread::scope(|s| {
        let driver = s.spawn(|| {
            if let Some(core) = app_core {
                crate::wakeup::pin_to_cpu(core)?;
            }
            driver::drive(channels, interval_ns, &phase)
        });
        let mut controller = || -> Result<(Sample, Sample)> {
            sleep_unless(cfg.warmup, || driver.is_finished());
            let first = sample(host)?;
            phase.store(MEASURE, Ordering::Release);
            sleep_unless(cfg.window, || driver.is_finished());
            phase.store(DRAIN, Ordering::Release);
            Ok((first, sample(host)?))
        };
        let samples = controller();
        // Whatever happened, the driver must stop spinning before we join it.
        phase.store(DRAIN, Ordering::Release);
        let driven = driver
            .join()
            .map_err(|_| anyhow::anyhow!("driver thread panicked"))?;
        anyhow::Ok((driven?, samples?))
    })?;
    Ok(row(mode, load, interval_ns, &driven, &samples.0, &samples.1))
}

fn row(mode: &str, load: u32, interval_ns: f64, d: &Driven, first: &Sample, last: &Sample) -> Row {
    let wall = (last.at - first.at).as_secs_f64().max(1e-9);
    let q = |q: f64| d.rtt_ns.value_at_quantile(q) as f64 / 1e3;
    Row {
        mode: mode.to_string(),
        offered_load: load,
        p50_us: q(0.50),
        p99_us: q(0.99),
        p999_us: q(0.999),
        max_us: d.rtt_ns.max() as f64 / 1e3,
        ops_per_s: d.measured as f64 / d.window.as_secs_f64().max(1e-9),
        offered_ops_per_s: 1e9 / interval_ns,
        cores: last.engine_ns.saturating_sub(first.engine_ns) as f64 / 1e9 / wall,
        host_cores: last.host_ns.saturating_sub(first.host_ns) as f64 / 1e9 / wall,
        sent: d.sent,
        received: d.received,
        ring_full: d.ring_full,
        engine_threads: last.engine_threads,
        threads_in_class: last.in_class,
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
    "mode        load   p50 µs   p99 µs  p99.9 µs    ops/s (offered)  cores  host cores";

/// One line of the human table.
pub fn table_row(r: &Row) -> String {
    format!(
        "{:<10} {:>4}% {:>8.1} {:>8.1} {:>9.1} {:>8.0} ({:>7.0}) {:>6.2} {:>11.2}",
        r.mode,
        r.offered_load,
        r.p50_us,
        r.p99_us,
        r.p999_us,
        r.ops_per_s,
        r.offered_ops_per_s,
        r.cores,
        r.host_cores
    )
}

/// The human table of a report.
pub fn table(r: &Report) -> String {
    let mut s = format!(
        "scheduling modes: {} on {}, kernel {}, accel {}, work {} ns/request, {} engine(s)\n{}\n{TABLE_HEADER}\n",
        r.platform.scheduler,
        r.platform.machine,
        r.platform.kernel,
        r.platform.accel,
        r.work_ns,
        r.engines,
        r.layout
    );
    for row in &r.rows {
        s.push_str(&table_row(row));
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_keep_the_app_core_free_where_they_can() {
        let l = Layout::new(4);
        assert_eq!(l.app_core, Some(0));
        assert_eq!(l.group("dedicated", 1, 5).unwrap().cores, [3]);
        assert_eq!(l.group("compacting", 1, 5).unwrap().cores, [1, 2, 3]);
        assert!(l.group("spreading", 2, 5).unwrap().cores.is_empty());
        assert_eq!(l.group("spreading", 2, 5).unwrap().engines, ["echo0", "echo1"]);
        assert!(l.group("lazy", 1, 5).is_err());
        let two = Layout::new(2);
        assert_eq!(two.group("compacting", 1, 5).unwrap().cores, [1]);
        assert!(two.describe().contains("also runs the host's control"));
        let one = Layout::new(1);
        assert_eq!(one.app_core, None);
        assert_eq!(one.group("compacting", 1, 5).unwrap().cores, [0]);
        assert_eq!(one.group("dedicated", 1, 5).unwrap().cores, [0]);
    }
}
