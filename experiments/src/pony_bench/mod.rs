// SPDX-License-Identifier: GPL-2.0-only
//! The Pony Express benchmark behind `mq-bench-pony`: ping-pong round trips and windowed
//! throughput of Pony messages between two hosts, against Linux TCP over the same path in
//! the same run, one-sided reads per second per core, and the raw shared-memory ping-pong
//! between two cores as the physical floor.
//!
//! ```text
//!  mq-bench-pony (one process: both "hosts" are in-process)
//!   host A: Runtime { PonyEngine "pony-a" }        host B: Runtime { PonyEngine "pony-b" }
//!     app A (measuring thread)                       app B (echo thread)
//!       cmd ring ─▶ engine A ── UdpNic 127.0.0.1 ──▶ engine B ─▶ completion ring
//!       ◀─ completion ring      (kernel loopback)      ◀─ cmd ring (echo: copy, send back)
//!   TCP: client (writer + reader threads) ── 127.0.0.1 ──▶ echo server thread
//!   sockperf server/ping-pong (when on PATH), 64 B
//!   floor: two threads on two cores, two snap_ipc::Rings, spin-polling
//! ```
//!
//! The hosts are in-process: two engine runtimes in this process, each with one Pony engine
//! in the mode under test, joined by UDP over loopback (`--nic shm`: the shared-memory wire),
//! so Pony and TCP cross the same kernel loopback path. There is no control socket and no
//! second machine; apps attach with `PonyEngine::attach_local`.
//!
//! Cores = CPU time (engine threads as listed in the runtimes' status, and app threads,
//! each read from its thread CPU clock, [`thread_cpu_ns`]) over wall time of the measurement; `engine_cores` and
//! `app_cores` split it. Gbps counts one direction: `msgs_per_s * msg_bytes * 8`, each
//! message also comes back. Throughput rows keep `window` messages outstanding (at most
//! 8 MiB in flight) and their percentiles include queueing in the window.
//!
//! # Report
//!
//! [`mq_report::pony::Report`] has the schema.

pub mod floor;
pub mod pony;
pub mod tcp;

use std::time::Duration;

use anyhow::{bail, Result};
use hdrhistogram::Histogram;
use mq_report::modes::MODES;
use mq_report::pony::{OneSided, Report, Row};

pub use crate::modes_bench::{machine, platform, scheduler_name};

/// Ping-pong sizes by default: 64 B to 1 MiB.
pub const SIZES: [usize; 5] = [64, 1 << 10, 16 << 10, 256 << 10, 1 << 20];
/// Throughput sizes by default.
pub const THROUGHPUT_SIZES: [usize; 3] = [64, 16 << 10, 1 << 20];
/// Bytes in flight at most in a throughput window.
pub const MAX_IN_FLIGHT: usize = 8 << 20;
/// Bytes per one-sided read by default.
pub const READ_BYTES: u32 = 64;

/// How the benchmark's apps wait for completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppWait {
    /// Spin on the completion ring and never block (the engine rings no doorbell).
    Spin,
    /// Spin this long, then block on the completion doorbell
    /// (`AppSession::set_completion_spin`).
    SpinThenBlock(Duration),
}

impl AppWait {
    /// How the report names it: `spin`, or `block` after `spin N µs`.
    pub fn describe(&self) -> String {
        match self {
            Self::Spin => "spin".into(),
            Self::SpinThenBlock(d) if d.is_zero() => "block".into(),
            Self::SpinThenBlock(d) => format!("spin {} µs, then block", d.as_micros()),
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub modes: Vec<String>,
    pub sizes: Vec<usize>,
    pub throughput_sizes: Vec<usize>,
    /// Outstanding messages in throughput runs (and reads in the one-sided run).
    pub window: usize,
    /// Round trips at 64 B; larger sizes do fewer ([`Self::iterations`]).
    pub iterations: usize,
    /// Bytes per one-sided read.
    pub read_bytes: u32,
    /// Length of each throughput and one-sided run.
    pub throughput_time: Duration,
    /// `shm` for the shared-memory wire, else UDP over loopback.
    pub shm_nic: bool,
    /// UDP payload per packet.
    pub mtu: usize,
    /// How apps wait for completions.
    pub app_wait: AppWait,
    /// Spreading and compacting engines' idle poll window (`None`: the runtime's default).
    pub idle_poll: Option<Duration>,
    /// Dedicated mode: both hosts' engines on one dedicated thread (host A's core), the
    /// other CPUs left to the apps; else one dedicated core per host.
    pub shared_engine_core: bool,
    /// sockperf run length (0: skip).
    pub sockperf_secs: u32,
    pub microquanta: bool,
}

impl BenchConfig {
    /// Round trips for `size`: all of them up to 16 KiB, then fewer as copies get longer.
    pub fn iterations(&self, size: usize) -> usize {
        let n = match size {
            0..=16384 => self.iterations,
            16385..=262_144 => self.iterations / 10,
            _ => self.iterations / 40,
        };
        n.max(20)
    }

    /// Throughput window for `size`: [`Self::window`], at most [`MAX_IN_FLIGHT`] bytes.
    pub fn window_for(&self, size: usize) -> usize {
        self.window.min(MAX_IN_FLIGHT / size.max(1)).max(1)
    }
}

pub const HOSTS_NOTE: &str = "in-process hosts: one Pony engine per host, in two engine runtimes in \
    one process (dedicated mode by default: one runtime whose single dedicated thread runs both), joined over UDP on 127.0.0.1 (the kernel loopback path TCP uses too); apps \
    attach in-process (no control socket)";

/// Which CPUs the apps and engines get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub cpus: usize,
    /// Dedicated mode runs both hosts' engines on one thread ([`BenchConfig::shared_engine_core`]).
    pub shared_engine_core: bool,
}

impl Layout {
    /// App A's and app B's CPUs: pinned apart from the engines on 4 CPUs or more.
    pub fn app_cores(&self) -> (Option<usize>, Option<usize>) {
        if self.cpus >= 4 {
            (Some(0), Some(1))
        } else {
            (None, None)
        }
    }

    /// Engine cores of host A and host B for `mode` (empty: any).
    pub fn engine_cores(&self, mode: &str) -> Result<(Vec<usize>, Vec<usize>)> {
        let last = self.cpus - 1;
        let other = self.cpus.saturating_sub(2);
        let not_apps: Vec<usize> = if self.cpus >= 4 {
            (2..self.cpus).collect()
        } else {
            (0..self.cpus).collect()
        };
        Ok(match mode {
            "dedicated" if self.shared_engine_core => (vec![last], vec![last]),
            "dedicated" => (vec![last], vec![other]),
            "spreading" => (Vec::new(), Vec::new()),
            "compacting" => (not_apps.clone(), not_apps),
            other => bail!("unknown mode {other:?} (expected one of {MODES:?})"),
        })
    }

    pub fn describe(&self) -> String {
        let (a, b) = self.engine_cores("dedicated").unwrap_or_default();
        let apps = match self.app_cores() {
            (Some(a), Some(b)) => format!("app A on CPU {a}, echo app B on CPU {b}"),
            _ => "apps unpinned".into(),
        };
        let dedicated = if self.shared_engine_core {
            format!("both dedicated engines on one thread on CPU {a:?}")
        } else {
            format!("dedicated engines on CPU {a:?} (A) and {b:?} (B)")
        };
        let mut s = format!(
            "{} CPUs; {apps}; {dedicated}; compacting on {}; \
             spreading anywhere; floor threads on CPUs 0 and {}",
            self.cpus,
            if self.cpus >= 4 { "CPUs 2.." } else { "every CPU" },
            self.cpus.min(2) - 1
        );
        if self.cpus < 4 {
            s.push_str("; fewer than 4 CPUs: apps share CPUs with the engines");
        }
        s
    }
}

/// Percentiles and counts of one measurement.
pub struct Measured {
    pub hist: Histogram<u64>,
    pub count: u64,
    pub wall: Duration,
    pub engine_ns: u64,
    pub app_ns: u64,
}

impl Measured {
    pub fn row(&self, transport: &str, mode: &str, test: &str, msg_bytes: usize, window: usize) -> Row {
        let q = |q: f64| self.hist.value_at_quantile(q) as f64 / 1e3;
        let wall = self.wall.as_secs_f64().max(1e-9);
        let msgs_per_s = self.count as f64 / wall;
        let engine_cores = self.engine_ns as f64 / 1e9 / wall;
        let app_cores = self.app_ns as f64 / 1e9 / wall;
        Row {
            transport: transport.into(),
            mode: mode.into(),
            test: test.into(),
            msg_bytes,
            window,
            count: self.count,
            p50_us: q(0.50),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: self.hist.max() as f64 / 1e3,
            msgs_per_s,
            gbps: msgs_per_s * msg_bytes as f64 * 8.0 / 1e9,
            cores: engine_cores + app_cores,
            engine_cores,
            app_cores,
        }
    }
}

/// A latency histogram in ns, 1 ns to 100 s.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

pub fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_nanos() as u64).max(1));
}

/// The calling thread's kernel tid.
pub fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// CPU time of thread `tid` of this process, up to date even while it runs on another CPU:
/// its thread CPU clock (what `pthread_getcpuclockid` returns; the kernel brings a running
/// thread's count up to now), else `/proc/self/task/TID/schedstat` (which lags up to a tick
/// behind a thread that never switches, like a dedicated engine's); 0 if it is gone.
pub fn thread_cpu_ns(tid: i32) -> u64 {
    // CPUCLOCK_PERTHREAD | CPUCLOCK_SCHED for pid `tid` (include/linux/posix-timers.h).
    let clock = ((!tid) << 3) | 6;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into; a bad clock id only returns EINVAL.
    if unsafe { libc::clock_gettime(clock as libc::clockid_t, &mut ts) } == 0 {
        return ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    }
    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A payload of `size` bytes (content does not matter, but is not all zeroes).
pub fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 131 % 251) as u8).collect()
}

/// Runs everything: Pony per mode, TCP, sockperf, the floor.
pub fn run(cfg: &BenchConfig) -> Result<Report> {
    let cpus = crate::sched_bench::cpus();
    let layout = Layout {
        cpus,
        shared_engine_core: cfg.shared_engine_core,
    };
    let mut rows = Vec::new();
    let mut one_sided = Vec::new();
    for mode in &cfg.modes {
        eprintln!("mq-bench-pony: pony, {mode}");
        let (r, o) = pony::run_mode(cfg, &layout, mode)?;
        for row in &r {
            eprintln!("{}", table_row(row));
        }
        rows.extend(r);
        eprintln!("{}", one_sided_line(&o));
        one_sided.push(o);
    }
    eprintln!("mq-bench-pony: tcp echo over 127.0.0.1");
    for row in tcp::run(cfg, &layout)? {
        eprintln!("{}", table_row(&row));
        rows.push(row);
    }
    let sockperf = match tcp::sockperf(cfg) {
        Ok((row, version)) => {
            eprintln!("{}", table_row(&row));
            rows.push(row);
            version
        }
        Err(why) => {
            eprintln!("mq-bench-pony: no sockperf row: {why:#}");
            format!("skipped: {why:#}")
        }
    };
    eprintln!("mq-bench-pony: shared-memory floor");
    for row in floor::run(cfg, &layout)? {
        eprintln!("{}", table_row(&row));
        rows.push(row);
    }
    let best = one_sided
        .iter()
        .max_by(|a, b| a.reads_per_s_per_core.total_cmp(&b.reads_per_s_per_core));
    Ok(Report {
        platform: platform(cpus),
        nic: if cfg.shm_nic { "shm" } else { "udp_loopback" }.into(),
        mtu: cfg.mtu,
        hosts: HOSTS_NOTE.into(),
        layout: layout.describe(),
        app_wait: cfg.app_wait.describe(),
        sockperf,
        one_sided_reads_per_s_per_core: best.map_or(0.0, |b| b.reads_per_s_per_core),
        one_sided_mode: best.map_or(String::new(), |b| b.mode.clone()),
        rows,
        one_sided,
    })
}

pub const TABLE_HEADER: &str = "transport    mode        test        bytes  win  p50 µs  p99 µs p99.9 µs     msgs/s    Gbps  cores (engine)";

pub fn table_row(r: &Row) -> String {
    format!(
        "{:<12} {:<11} {:<10} {:>7} {:>4} {:>7.1} {:>7.1} {:>8.1} {:>10.0} {:>7.3} {:>6.2} ({:.2})",
        r.transport,
        r.mode,
        r.test,
        r.msg_bytes,
        r.window,
        r.p50_us,
        r.p99_us,
        r.p999_us,
        r.msgs_per_s,
        r.gbps,
        r.cores,
        r.engine_cores
    )
}

fn one_sided_line(o: &OneSided) -> String {
    format!(
        "one-sided {} B reads, {}: {:.0} reads/s on {:.2} engine cores = {:.0} reads/s per core",
        o.read_bytes, o.mode, o.reads_per_s, o.engine_cores, o.reads_per_s_per_core
    )
}

/// The human table of a report.
pub fn table(r: &Report) -> String {
    let mut s = format!(
        "pony vs tcp: {} on {}, kernel {}, accel {}, nic {} (mtu {}), apps {}\n{}\n{}\nsockperf: {}\n{TABLE_HEADER}\n",
        r.platform.scheduler,
        r.platform.machine,
        r.platform.kernel,
        r.platform.accel,
        r.nic,
        r.mtu,
        r.app_wait,
        r.hosts,
        r.layout,
        r.sockperf
    );
    for row in &r.rows {
        s.push_str(&table_row(row));
        s.push('\n');
    }
    for o in &r.one_sided {
        s.push_str(&one_sided_line(o));
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_cpu_clock_reads_other_threads() {
        let tid = std::sync::atomic::AtomicI32::new(0);
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                tid.store(gettid(), std::sync::atomic::Ordering::Release);
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    std::hint::spin_loop();
                }
            });
            while tid.load(std::sync::atomic::Ordering::Acquire) == 0 {
                std::thread::yield_now();
            }
            let t = tid.load(std::sync::atomic::Ordering::Acquire);
            let a = thread_cpu_ns(t);
            std::thread::sleep(Duration::from_millis(20));
            let b = thread_cpu_ns(t);
            stop.store(true, std::sync::atomic::Ordering::Release);
            assert!(b > a, "a spinning thread's CPU time must grow: {a} -> {b}");
        });
        assert!(thread_cpu_ns(gettid()) > 0);
    }

    #[test]
    fn layouts_and_windows() {
        let l = Layout {
            cpus: 4,
            shared_engine_core: false,
        };
        assert_eq!(l.app_cores(), (Some(0), Some(1)));
        assert_eq!(l.engine_cores("dedicated").unwrap(), (vec![3], vec![2]));
        assert_eq!(l.engine_cores("compacting").unwrap().0, vec![2, 3]);
        assert!(l.engine_cores("lazy").is_err());
        let two = Layout {
            cpus: 2,
            shared_engine_core: false,
        };
        assert_eq!(two.engine_cores("dedicated").unwrap(), (vec![1], vec![0]));
        let shared = Layout {
            shared_engine_core: true,
            ..two
        };
        assert_eq!(shared.engine_cores("dedicated").unwrap(), (vec![1], vec![1]));
        assert!(shared
            .describe()
            .contains("both dedicated engines on one thread on CPU [1]"));
        assert!(two.describe().contains("fewer than 4 CPUs"));
        let one = Layout {
            cpus: 1,
            shared_engine_core: false,
        };
        assert_eq!(one.engine_cores("dedicated").unwrap(), (vec![0], vec![0]));
        let cfg = BenchConfig {
            modes: vec![],
            sizes: vec![],
            throughput_sizes: vec![],
            window: 32,
            iterations: 1000,
            read_bytes: READ_BYTES,
            throughput_time: Duration::from_secs(1),
            shm_nic: false,
            mtu: 1472,
            app_wait: AppWait::SpinThenBlock(Duration::ZERO),
            idle_poll: None,
            shared_engine_core: true,
            sockperf_secs: 0,
            microquanta: false,
        };
        assert_eq!(cfg.window_for(64), 32);
        assert_eq!(cfg.window_for(1 << 20), 8);
        assert_eq!(cfg.iterations(64), 1000);
        assert_eq!(cfg.iterations(1 << 20), 25);
    }
}
