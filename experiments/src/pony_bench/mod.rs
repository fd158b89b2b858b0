// SPDX-License-Identifier: GPL-2.0-only
//! The Pony Express benchmark behind `mq-bench-pony`: ping-pong round trips and windowed
//! throughput of Pony messages between two hosts, against Linux TCP over the same path in
//! the same run, one-sided reads per second per core, 1 to 10 engines per host (scaling),
//! the shared-memory wire, and the raw shared-memory ping-pong between two cores as the
//! physical floor.
//!
//! ```text
//!  mq-bench-pony (one process: both "hosts" are in-process)
//!   namespace bench-<pid>-a                         namespace bench-<pid>-b
//!   host A: Runtime { PonyEngine "pony-a0".. }      host B: Runtime { PonyEngine "pony-b0".. }
//!     app A (measuring thread)                        app B (echo thread)
//!       cmd ring ─▶ engine A ── NIC (UDP socket) ══ veth ══ NIC ─▶ engine B ─▶ completion ring
//!       ◀─ completion ring                                   ◀─ cmd ring (echo: copy, send back)
//!   TCP: client (writer + reader threads) in A ══ veth ══ echo server thread in B
//!   sockperf: `ip netns exec` server in B, ping-pong client in A, 64 B
//!   shm wire: Pony's two engines joined by shared memory (no network)
//!   floor: two threads on two cores, two snap_ipc::Rings, spin-polling
//! ```
//!
//! The hosts are in-process: two engine runtimes in this process ([`setup`]), each with
//! `n` Pony engines in the mode under test; each engine's NIC is opened in its host's
//! namespace ([`path`], [`netns`]). There is no control socket; apps attach with
//! `PonyEngine::attach_local`. With `--path loopback` (no namespaces: the VM) everything
//! crosses 127.0.0.1 instead.
//!
//! Cores = CPU time (engine threads as listed in the runtimes' status, and app threads,
//! each read from its thread CPU clock, [`thread_cpu_ns`]) over wall time of the
//! measurement; `engine_cores` and `app_cores` split it. Context switches (and cycles and
//! instructions where there is a PMU) of the same threads come from per-thread perf
//! counters ([`crate::thread_counters`]). Gbps counts one direction: `msgs_per_s * msg_bytes * 8`, each
//! message also comes back. Throughput rows keep `window` messages outstanding (at most
//! 8 MiB in flight) and their percentiles include queueing in the window.
//!
//! # Report
//!
//! [`mq_report::pony::Report`] has the schema; [`mq_report::pony::targets`] the targets.

pub mod floor;
pub mod netns;
pub mod path;
pub mod pony;
pub mod setup;
pub mod tcp;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;
use hdrhistogram::Histogram;
use mq_report::pony::{OneSided, Report, Row, Target};

pub use crate::modes_bench::{machine, platform, scheduler_name};
use crate::thread_counters::{self, Counts};
use path::{NicKind, Path};
pub use setup::Layout;

/// Ping-pong sizes by default: 64 B to 1 MiB.
pub const SIZES: [usize; 6] = [64, 1 << 10, 4 << 10, 16 << 10, 256 << 10, 1 << 20];
/// Throughput sizes by default (the targets compare Gbps per core at 64 B–4 KiB and 1 MiB).
pub const THROUGHPUT_SIZES: [usize; 4] = [64, 4 << 10, 16 << 10, 1 << 20];
/// Concurrent engines per host in the scaling rows by default.
pub const SCALING: [usize; 4] = [1, 2, 4, 10];
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
    /// How the report names it: `spin`, `block`, or `spin N µs, then block`.
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
    /// Pony's NICs between the hosts (each with every mode).
    pub nics: Vec<NicKind>,
    pub sizes: Vec<usize>,
    pub throughput_sizes: Vec<usize>,
    /// Engines per host in the scaling rows (1 is the throughput rows' own point).
    pub scaling: Vec<usize>,
    /// Message size of the scaling rows.
    pub scaling_bytes: usize,
    /// Outstanding messages in throughput runs (and reads in the one-sided run).
    pub window: usize,
    /// Round trips at 64 B; larger sizes do fewer ([`Self::iterations`]).
    pub iterations: usize,
    /// Length of each throughput and one-sided run.
    pub throughput_time: Duration,
    /// UDP payload per packet (the veth's MTU is this plus the IP and UDP headers).
    pub mtu: usize,
    /// Bytes per one-sided read.
    pub read_bytes: u32,
    /// How apps wait for completions.
    pub app_wait: AppWait,
    /// Spreading and compacting engines' idle poll window (`None`: the runtime's default).
    pub idle_poll: Option<Duration>,
    /// Dedicated mode: both hosts' engines on one dedicated thread (host A's core), the
    /// other CPUs left to the apps; else one dedicated core per host.
    pub shared_engine_core: bool,
    /// sockperf run length (0: skip).
    pub sockperf_secs: u32,
    /// Measure one-sided reads in each Pony suite.
    pub one_sided: bool,
    /// On the veth path, also 64 B ping-pong of Pony over UDP (each mode) and TCP on
    /// loopback, for continuity with loopback runs (rows with `path` `loopback`).
    pub loopback_rows: bool,
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

/// What a row measured, besides its numbers.
#[derive(Debug, Clone, Copy)]
pub struct Point<'a> {
    pub transport: &'a str,
    pub nic: &'a str,
    pub path: &'a str,
    pub mode: &'a str,
    pub test: &'a str,
    pub msg_bytes: usize,
    pub window: usize,
    pub engines: usize,
}

/// CPU time and counters of a measurement's threads at one instant.
#[derive(Debug, Clone, Copy)]
pub struct Snap {
    pub engine_ns: u64,
    pub app_ns: u64,
    pub counts: Option<Counts>,
    pub at: Instant,
}

/// Samples the CPU time and perf counters of the threads a measurement involves.
pub struct Probe {
    engine_tids: Vec<i32>,
    app_tids: Vec<i32>,
    counters: Option<Mutex<thread_counters::Threads>>,
}

impl Probe {
    /// Counters on every thread listed; without them (perf_event_open refused) rows get
    /// null context switches.
    pub fn new(engine_tids: Vec<i32>, app_tids: Vec<i32>) -> Self {
        let all: Vec<i32> = engine_tids.iter().chain(&app_tids).copied().collect();
        let counters = match thread_counters::Threads::open(&all) {
            Ok(c) => Some(Mutex::new(c)),
            Err(e) => {
                eprintln!("mq-bench-pony: no context-switch counters: {e}");
                None
            }
        };
        Self {
            engine_tids,
            app_tids,
            counters,
        }
    }

    /// Only the time: for threads that each time their own part of a measurement.
    pub fn clock() -> Self {
        Self {
            engine_tids: Vec::new(),
            app_tids: Vec::new(),
            counters: None,
        }
    }

    pub fn sample(&self) -> Snap {
        let sum = |tids: &[i32]| tids.iter().map(|&t| thread_cpu_ns(t)).sum();
        let counts = self
            .counters
            .as_ref()
            .and_then(|c| c.lock().unwrap_or_else(|e| e.into_inner()).read().ok());
        Snap {
            engine_ns: sum(&self.engine_tids),
            app_ns: sum(&self.app_tids),
            counts,
            at: Instant::now(),
        }
    }
}

/// Percentiles and counts of one measurement.
pub struct Measured {
    pub hist: Histogram<u64>,
    pub count: u64,
    pub wall: Duration,
    pub engine_ns: u64,
    pub app_ns: u64,
    /// What the counters counted over the measurement (None: not counted).
    pub counts: Option<Counts>,
}

impl Measured {
    /// `count` round trips between `first` and `last`.
    pub fn between(hist: Histogram<u64>, count: u64, first: &Snap, last: &Snap) -> Self {
        Self {
            hist,
            count,
            wall: last.at - first.at,
            engine_ns: last.engine_ns.saturating_sub(first.engine_ns),
            app_ns: last.app_ns.saturating_sub(first.app_ns),
            counts: match (&first.counts, &last.counts) {
                (Some(a), Some(b)) => Some(b.since(a)),
                _ => None,
            },
        }
    }

    pub fn row(&self, p: Point) -> Row {
        let q = |q: f64| self.hist.value_at_quantile(q) as f64 / 1e3;
        let wall = self.wall.as_secs_f64().max(1e-9);
        let msgs_per_s = self.count as f64 / wall;
        let engine_cores = self.engine_ns as f64 / 1e9 / wall;
        let app_cores = self.app_ns as f64 / 1e9 / wall;
        let cores = engine_cores + app_cores;
        let gbps = msgs_per_s * p.msg_bytes as f64 * 8.0 / 1e9;
        let per_rtt = |n: Option<u64>| Some(n? as f64 / (self.count > 0).then_some(self.count as f64)?);
        Row {
            transport: p.transport.into(),
            nic: p.nic.into(),
            path: p.path.into(),
            mode: p.mode.into(),
            test: p.test.into(),
            msg_bytes: p.msg_bytes,
            window: p.window,
            engines: p.engines,
            count: self.count,
            p50_us: q(0.50),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: self.hist.max() as f64 / 1e3,
            msgs_per_s,
            gbps,
            gbps_per_core: (cores > 0.0).then(|| gbps / cores),
            cores,
            engine_cores,
            app_cores,
            ctx_switches_per_rtt: per_rtt(self.counts.map(|c| c.switches)),
            migrations_per_rtt: per_rtt(self.counts.map(|c| c.migrations)),
            task_clock_us_per_rtt: per_rtt(self.counts.map(|c| c.task_clock_ns)).map(|ns| ns / 1e3),
            cycles_per_rtt: per_rtt(self.counts.and_then(|c| c.cycles)),
            instructions_per_rtt: per_rtt(self.counts.and_then(|c| c.instructions)),
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

/// Runs everything on `path`: Pony per NIC and mode (and its scaling), TCP, sockperf, the
/// floor; then the targets from those rows.
pub fn run(cfg: &BenchConfig, path: &Path) -> Result<Report> {
    let cpus = crate::sched_bench::cpus();
    let layout = Layout {
        cpus,
        shared_engine_core: cfg.shared_engine_core,
    };
    let mut rows = Vec::new();
    let mut one_sided = Vec::new();
    let keep = |r: Row, rows: &mut Vec<Row>| {
        eprintln!("{}", table_row(&r));
        rows.push(r);
    };
    eprintln!("{TABLE_HEADER}");
    for &nic in &cfg.nics {
        for mode in &cfg.modes {
            eprintln!(
                "mq-bench-pony: pony over {} ({}), {mode}",
                nic.name(),
                nic.path_name(path)
            );
            let (r, o) = pony::run_suite(cfg, &layout, path, nic, mode)?;
            r.into_iter().for_each(|r| keep(r, &mut rows));
            if let Some(o) = o {
                eprintln!("{}", one_sided_line(&o));
                one_sided.push(o);
            }
            // Scaling is of engines on one path: not the in-process shm wire, and not AF_XDP,
            // whose one socket per interface queue (the veth has one) means one engine per host.
            if matches!(nic, NicKind::Shm | NicKind::Xdp) {
                continue;
            }
            for &n in cfg.scaling.iter().filter(|&&n| n > 1) {
                let r = pony::run_scaling(cfg, &layout, path, nic, mode, n)?;
                keep(r, &mut rows);
            }
        }
    }
    eprintln!("mq-bench-pony: tcp echo over {}", path.name());
    for row in tcp::run(cfg, &layout, path)? {
        keep(row, &mut rows);
    }
    let sockperf = match tcp::sockperf(cfg, path) {
        Ok((row, version)) => {
            keep(row, &mut rows);
            version
        }
        Err(why) => {
            eprintln!("mq-bench-pony: no sockperf row: {why:#}");
            format!("skipped: {why:#}")
        }
    };
    if cfg.loopback_rows && matches!(path, Path::Veth(_)) {
        eprintln!("mq-bench-pony: loopback rows (continuity): 64 B ping-pong over 127.0.0.1");
        let lo = BenchConfig {
            sizes: vec![64],
            throughput_sizes: Vec::new(),
            one_sided: false,
            ..cfg.clone()
        };
        if cfg.nics.contains(&NicKind::Udp) {
            for mode in &cfg.modes {
                let (r, _) = pony::run_suite(&lo, &layout, &Path::Loopback, NicKind::Udp, mode)?;
                r.into_iter().for_each(|r| keep(r, &mut rows));
            }
        }
        for row in tcp::run(&lo, &layout, &Path::Loopback)? {
            keep(row, &mut rows);
        }
    }
    eprintln!("mq-bench-pony: shared-memory floor");
    for row in floor::run(cfg, &layout)? {
        keep(row, &mut rows);
    }
    let best = one_sided
        .iter()
        .filter(|o: &&OneSided| o.nic != "shm")
        .max_by(|a, b| a.reads_per_s_per_core.total_cmp(&b.reads_per_s_per_core));
    Ok(Report {
        platform: platform(cpus),
        path: path.name().into(),
        mtu: cfg.mtu,
        hosts: path.hosts_note(),
        layout: layout.describe(),
        app_wait: cfg.app_wait.describe(),
        sockperf,
        counters: describe_counters(),
        one_sided_reads_per_s_per_core: best.map_or(0.0, |b| b.reads_per_s_per_core),
        one_sided_mode: best.map_or(String::new(), |b| b.mode.clone()),
        targets: mq_report::pony::targets(&rows),
        rows,
        one_sided,
    })
}

pub const TABLE_HEADER: &str = "transport  nic    path      mode        test        bytes  win eng  p50 µs  p99 µs p99.9 µs     msgs/s    Gbps Gb/core  cores (engine) cs/rtt";

/// `-` for a value not measured.
fn opt(v: Option<f64>, width: usize, prec: usize) -> String {
    match v {
        Some(v) => format!("{v:>width$.prec$}"),
        None => format!("{:>width$}", "-"),
    }
}

pub fn table_row(r: &Row) -> String {
    format!(
        "{:<10} {:<6} {:<9} {:<11} {:<10} {:>7} {:>4} {:>3} {:>7.1} {:>7.1} {:>8.1} {:>10.0} {:>7.3} {} {:>6.2} ({:.2}) {}",
        r.transport,
        r.nic,
        r.path,
        r.mode,
        r.test,
        r.msg_bytes,
        r.window,
        r.engines,
        r.p50_us,
        r.p99_us,
        r.p999_us,
        r.msgs_per_s,
        r.gbps,
        opt(r.gbps_per_core, 7, 3),
        r.cores,
        r.engine_cores,
        opt(r.ctx_switches_per_rtt, 6, 2)
    )
}

fn one_sided_line(o: &OneSided) -> String {
    format!(
        "one-sided {} B reads, {} over {}: {:.0} reads/s on {:.2} engine cores = {:.0} reads/s per core",
        o.read_bytes, o.mode, o.nic, o.reads_per_s, o.engine_cores, o.reads_per_s_per_core
    )
}

/// One line per target: verdict, name, the rows it comes from.
pub fn target_line(t: &Target) -> String {
    format!("{:<22} {}: {}", t.verdict(), t.name, t.from)
}

/// The human table of a report, the targets last.
pub fn table(r: &Report) -> String {
    let mut s = format!(
        "pony vs tcp: {} on {}, kernel {}, accel {}, path {} (mtu {}), apps {}\n{}\n{}\nsockperf: {}\ncounters: {}\n{TABLE_HEADER}\n",
        r.platform.scheduler,
        r.platform.machine,
        r.platform.kernel,
        r.platform.accel,
        r.path,
        r.mtu,
        r.app_wait,
        r.hosts,
        r.layout,
        r.sockperf,
        r.counters
    );
    for row in &r.rows {
        s.push_str(&table_row(row));
        s.push('\n');
    }
    for o in &r.one_sided {
        s.push_str(&one_sided_line(o));
        s.push('\n');
    }
    s.push_str("targets (ratios within this run):\n");
    for t in &r.targets {
        s.push_str(&target_line(t));
        s.push('\n');
    }
    s
}

/// How rows count, for the report.
fn describe_counters() -> String {
    let hw = thread_counters::hardware_note();
    format!(
        "perf_event_open per thread (engine threads of both hosts and app threads; not \
         CPU-wide, so other processes do not count), user and kernel, divided by round trips \
         (echoed messages in throughput); context switches, migrations and task-clock are software events; {hw}; \
         sockperf: its processes' context switches from getrusage (warm-up included)"
    )
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
    fn windows_and_iterations() {
        let cfg = BenchConfig {
            modes: vec![],
            nics: vec![],
            sizes: vec![],
            throughput_sizes: vec![],
            scaling: vec![],
            scaling_bytes: 64,
            window: 32,
            iterations: 1000,
            throughput_time: Duration::from_secs(1),
            mtu: 1472,
            read_bytes: READ_BYTES,
            app_wait: AppWait::SpinThenBlock(Duration::ZERO),
            idle_poll: None,
            shared_engine_core: true,
            sockperf_secs: 0,
            one_sided: true,
            loopback_rows: false,
            microquanta: false,
        };
        assert_eq!(cfg.window_for(64), 32);
        assert_eq!(cfg.window_for(1 << 20), 8);
        assert_eq!(cfg.iterations(64), 1000);
        assert_eq!(cfg.iterations(1 << 20), 25);
    }

    #[test]
    fn rows_divide_counts_by_round_trips_and_leave_the_uncounted_null() {
        let mut hist = histogram();
        record(&mut hist, Duration::from_micros(20));
        let t = Instant::now();
        let snap = |ns: u64, switches: u64, at: Instant| Snap {
            engine_ns: ns,
            app_ns: ns,
            counts: Some(Counts {
                switches,
                migrations: switches / 10,
                task_clock_ns: switches * 1000,
                cycles: None,
                instructions: None,
            }),
            at,
        };
        let m = Measured::between(
            hist,
            100,
            &snap(0, 10, t),
            &snap(500_000_000, 410, t + Duration::from_secs(1)),
        );
        let p = Point {
            transport: "pony",
            nic: "udp",
            path: "veth",
            mode: "spreading",
            test: "ping_pong",
            msg_bytes: 1000,
            window: 1,
            engines: 1,
        };
        let r = m.row(p);
        assert_eq!(r.ctx_switches_per_rtt, Some(4.0));
        // Migrations 1 -> 41 and task-clock 10 µs -> 410 µs over 100 round trips.
        assert_eq!(r.migrations_per_rtt, Some(0.4));
        assert_eq!(r.task_clock_us_per_rtt, Some(4.0));
        assert_eq!((r.cycles_per_rtt, r.instructions_per_rtt), (None, None));
        assert!((r.cores - 1.0).abs() < 1e-9, "{r:?}");
        assert!((r.gbps_per_core.unwrap() - 100.0 * 1000.0 * 8.0 / 1e9).abs() < 1e-12);
        let mut none = m;
        none.counts = None;
        none.engine_ns = 0;
        none.app_ns = 0;
        let r = none.row(p);
        assert_eq!((r.ctx_switches_per_rtt, r.gbps_per_core), (None, None));
        assert_eq!((r.migrations_per_rtt, r.task_clock_us_per_rtt), (None, None));
        assert!(table_row(&r).ends_with(" -"), "{}", table_row(&r));
    }
}
