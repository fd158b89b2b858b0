// SPDX-License-Identifier: GPL-2.0-only
//! Software counters of the engine threads (context switches, CPU migrations, task-clock)
//! and cycles where the PMU has them, from `perf_event_open` (`perf-event2`) on each thread
//! of another process (we are root), user and kernel side, on any CPU.
//!
//! Per thread rather than CPU-wide: the antagonists run on the same CPUs, and what the
//! experiment asks is what the engines pay per request, not what the machine does.

use std::io;

use perf_event::events::{Hardware, Software};
use perf_event::{Builder, Counter};

/// Sums over the observed threads at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    pub switches: u64,
    pub migrations: u64,
    pub task_clock_ns: u64,
    /// `None` where the PMU has no cycle counter.
    pub cycles: Option<u64>,
}

impl Counts {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            switches: self.switches.saturating_sub(earlier.switches),
            migrations: self.migrations.saturating_sub(earlier.migrations),
            task_clock_ns: self.task_clock_ns.saturating_sub(earlier.task_clock_ns),
            cycles: self.cycles.zip(earlier.cycles).map(|(a, b)| a.saturating_sub(b)),
        }
    }
}

struct ThreadCounters {
    switches: Counter,
    migrations: Counter,
    task_clock: Counter,
    cycles: Option<Counter>,
}

fn open(event: impl perf_event::events::Event, tid: i32) -> io::Result<Counter> {
    let mut c = Builder::new(event)
        .observe_pid(tid)
        .any_cpu()
        // A switch and a migration happen in the kernel: excluding it would count nothing.
        .include_kernel()
        .build()?;
    c.enable()?;
    Ok(c)
}

/// Whether cycles can be counted here; the reason if not.
pub fn pmu() -> Result<(), String> {
    open(Hardware::CPU_CYCLES, 0)
        .map(drop)
        .map_err(|e| format!("no PMU cycle counter ({e})"))
}

/// How the rows count, for the report.
pub fn describe() -> String {
    let hw = match pmu() {
        Ok(()) => "cycles likewise".to_string(),
        Err(why) => format!("cycles null: {why}"),
    };
    format!(
        "perf_event_open on each engine thread of snap-host (not CPU-wide, so antagonists \
         and other processes do not count), user and kernel: context switches, CPU \
         migrations and task-clock (software events) per echoed request; {hw}"
    )
}

/// Counters on a fixed set of threads, enabled when opened.
pub struct Threads {
    threads: Vec<ThreadCounters>,
}

impl Threads {
    /// Opens counters on `tids` (any process's threads; root). Software events must open;
    /// cycles are left out where the PMU is missing.
    pub fn open(tids: &[i32]) -> io::Result<Self> {
        let hw = pmu().is_ok();
        let threads = tids
            .iter()
            .map(|&tid| {
                Ok(ThreadCounters {
                    switches: open(Software::CONTEXT_SWITCHES, tid)?,
                    migrations: open(Software::CPU_MIGRATIONS, tid)?,
                    task_clock: open(Software::TASK_CLOCK, tid)?,
                    cycles: hw.then(|| open(Hardware::CPU_CYCLES, tid).ok()).flatten(),
                })
            })
            .collect::<io::Result<_>>()?;
        Ok(Self { threads })
    }

    /// The sums now; cycles are `None` unless every thread has them.
    pub fn read(&mut self) -> io::Result<Counts> {
        let mut counts = Counts {
            cycles: (!self.threads.is_empty()).then_some(0),
            ..Counts::default()
        };
        for t in &mut self.threads {
            counts.switches += t.switches.read()?;
            counts.migrations += t.migrations.read()?;
            counts.task_clock_ns += t.task_clock.read()?;
            counts.cycles = match (counts.cycles, &mut t.cycles) {
                (Some(sum), Some(c)) => Some(sum + c.read()?),
                _ => None,
            };
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI32, Ordering};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use super::*;

    /// A thread that blocks 100 times switches out at least 100 times and its task-clock
    /// grows by no more than wall time; a thread that spins 20 ms accrues task-clock, at
    /// most its wall time (how much of it depends on what else runs: 2 shared CPUs).
    #[test]
    fn blocking_threads_switch_and_spinning_ones_accrue_task_clock() {
        let tid = AtomicI32::new(0);
        let (tx, rx) = mpsc::channel::<u32>();
        let (back_tx, back_rx) = mpsc::channel::<u32>();
        std::thread::scope(|s| {
            let tid = &tid;
            s.spawn(move || {
                tid.store(crate::pony_bench::gettid(), Ordering::Release);
                while let Ok(v) = rx.recv() {
                    back_tx.send(v).unwrap();
                }
            });
            while tid.load(Ordering::Acquire) == 0 {
                std::thread::yield_now();
            }
            let mut c = match Threads::open(&[tid.load(Ordering::Acquire)]) {
                Ok(c) => c,
                Err(e) => {
                    // perf_event_open can be forbidden (perf_event_paranoid, seccomp).
                    eprintln!("skipped: {e}");
                    drop(tx);
                    return;
                }
            };
            let before = c.read().unwrap();
            let start = Instant::now();
            for i in 0..100 {
                tx.send(i).unwrap();
                back_rx.recv().unwrap();
                std::thread::sleep(Duration::from_micros(50));
            }
            let d = c.read().unwrap().since(&before);
            drop(tx);
            assert!(d.switches >= 100, "{d:?}");
            assert!(d.task_clock_ns <= start.elapsed().as_nanos() as u64, "{d:?}");
            assert_eq!(d.cycles.is_some(), pmu().is_ok(), "{d:?}");
        });
        let me = crate::pony_bench::gettid();
        let mut c = Threads::open(&[me]).unwrap();
        let before = c.read().unwrap();
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(20) {
            std::hint::spin_loop();
        }
        let d = c.read().unwrap().since(&before);
        let wall = spin.elapsed().as_nanos() as u64;
        assert!(
            d.task_clock_ns >= 1_000_000 && d.task_clock_ns <= wall,
            "{d:?} in {wall} ns"
        );
    }
}
