// SPDX-License-Identifier: GPL-2.0-only
//! Per-thread `perf_event_open` counters (`perf-event2`) for the benchmarks: context
//! switches, CPU migrations, task-clock, and cycles and instructions where the PMU has them,
//! summed over the threads a measurement involves (any process's: we are root), user and
//! kernel side, on any CPU. The Pony, interference and efficiency benchmarks divide them by
//! their operations.
//!
//! Per thread, not CPU-wide: we are root and could count per CPU, but then every other
//! process on the machine (builds, other benchmarks, an experiment's antagonists) would count
//! too. A thread's counter counts that thread only, wherever it runs, so an operation's
//! switches are those of the threads that carry it. Software events always count; cycles and
//! instructions need a PMU, which a VM may not expose: then they are `None` (never 0).

use std::io;

use perf_event::events::{Hardware, Software};
use perf_event::{Builder, Counter};

/// Counters of one thread.
struct ThreadCounters {
    switches: Counter,
    migrations: Counter,
    task_clock: Counter,
    cycles: Option<Counter>,
    instructions: Option<Counter>,
}

/// Counts of a set of threads at one instant (sums over the threads).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub switches: u64,
    pub migrations: u64,
    /// CPU time, ns.
    pub task_clock_ns: u64,
    pub cycles: Option<u64>,
    pub instructions: Option<u64>,
}

impl Counts {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Counts) -> Counts {
        let d = |a: Option<u64>, b: Option<u64>| Some(a?.saturating_sub(b?));
        Counts {
            switches: self.switches.saturating_sub(earlier.switches),
            migrations: self.migrations.saturating_sub(earlier.migrations),
            task_clock_ns: self.task_clock_ns.saturating_sub(earlier.task_clock_ns),
            cycles: d(self.cycles, earlier.cycles),
            instructions: d(self.instructions, earlier.instructions),
        }
    }
}

fn open(event: impl perf_event::events::Event, tid: i32) -> io::Result<Counter> {
    let mut c = Builder::new(event)
        .observe_pid(tid)
        .any_cpu()
        // The switch itself happens in the kernel: excluding it would count nothing.
        .include_kernel()
        .build()?;
    c.enable()?;
    Ok(c)
}

/// Whether hardware counters (cycles) can be opened here; the reason if not.
pub fn pmu() -> Result<(), String> {
    open(Hardware::CPU_CYCLES, 0)
        .map(drop)
        .map_err(|e| format!("no PMU for cycles/instructions ({e})"))
}

/// How cycles and instructions count here, for a report's description of its counters.
pub fn hardware_note() -> String {
    match pmu() {
        Ok(()) => "cycles and instructions likewise".to_string(),
        Err(why) => format!("cycles and instructions null: {why}"),
    }
}

/// Counters on a fixed set of threads, enabled when opened.
pub struct Threads {
    threads: Vec<ThreadCounters>,
}

impl Threads {
    /// Opens counters on `tids` (any process's threads; root). Context switches must open;
    /// cycles and instructions are left out where the PMU is missing.
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
                    instructions: hw.then(|| open(Hardware::INSTRUCTIONS, tid).ok()).flatten(),
                })
            })
            .collect::<io::Result<_>>()?;
        Ok(Self { threads })
    }

    /// The sums now. A hardware count is `None` unless every thread has it.
    pub fn read(&mut self) -> io::Result<Counts> {
        let mut counts = Counts {
            switches: 0,
            migrations: 0,
            task_clock_ns: 0,
            cycles: Some(0),
            instructions: Some(0),
        };
        let add = |sum: &mut Option<u64>, c: &mut Option<Counter>| -> io::Result<()> {
            *sum = match (sum.take(), c) {
                (Some(s), Some(c)) => Some(s + c.read()?),
                _ => None,
            };
            Ok(())
        };
        for t in &mut self.threads {
            counts.switches += t.switches.read()?;
            counts.migrations += t.migrations.read()?;
            counts.task_clock_ns += t.task_clock.read()?;
            add(&mut counts.cycles, &mut t.cycles)?;
            add(&mut counts.instructions, &mut t.instructions)?;
        }
        if self.threads.is_empty() {
            counts.cycles = None;
            counts.instructions = None;
        }
        Ok(counts)
    }
}

/// The threads of process `pid` now.
pub fn tids_of(pid: u32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI32, Ordering};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use super::*;

    /// A thread that blocks on a channel 200 times switches out at least 200 times and its
    /// task-clock grows by no more than wall time; a thread that spins 20 ms switches little
    /// and accrues task-clock, at most its wall time (how much of it depends on what else
    /// runs: 2 shared CPUs).
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
            for i in 0..200 {
                tx.send(i).unwrap();
                back_rx.recv().unwrap();
                // Let the echo thread block before the next message.
                std::thread::sleep(Duration::from_micros(50));
            }
            let d = c.read().unwrap().since(&before);
            drop(tx);
            assert!(d.switches >= 200, "{d:?}");
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
        assert!(d.switches < 50, "{d:?}");
        assert!(
            d.task_clock_ns >= 1_000_000 && d.task_clock_ns <= wall,
            "{d:?} in {wall} ns"
        );
    }

    /// A thread that spins for 20 ms of its own CPU time has at least that much task-clock
    /// (CPU time, not wall time: the machine may be busy); one that sleeps 50 times switches
    /// at least 50 times.
    #[test]
    fn counts_task_clock_and_switches_of_a_thread() {
        let tid = crate::pony_bench::gettid();
        assert!(tids_of(std::process::id()).contains(&tid));
        let mut c = match Threads::open(&[tid]) {
            Ok(c) => c,
            Err(e) => panic!("perf_event_open of software events failed: {e}"),
        };
        let before = c.read().unwrap();
        let cpu = crate::pony_bench::thread_cpu_ns(tid);
        while crate::pony_bench::thread_cpu_ns(tid) - cpu < 20_000_000 {
            std::hint::spin_loop();
        }
        for _ in 0..50 {
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
        let d = c.read().unwrap().since(&before);
        assert!(d.task_clock_ns >= 19_000_000, "{d:?}");
        assert!(d.switches >= 50, "{d:?}");
    }
}
