// SPDX-License-Identifier: GPL-2.0-only
//! Context switches, CPU migrations, task-clock, cycles and instructions of the threads a measurement involves (the
//! engine threads of both hosts and the app threads), from `perf_event_open` counters
//! (`perf-event2`): one counter per thread and event, user and kernel side, on any CPU.
//!
//! Per thread, not CPU-wide: we are root and could count per CPU, but then every other
//! process on the machine (builds, other benchmarks) would count too. A thread's counter
//! counts that thread only, wherever it runs, so a round trip's switches are those of the
//! threads that carry it. Context switches are a software event and always count; cycles
//! and instructions need a PMU, which a VM may not expose: then they are `None` (never 0).

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
#[derive(Debug, Clone, Copy, Default, PartialEq)]
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

/// How rows count, for the report.
pub fn describe() -> String {
    let hw = match pmu() {
        Ok(()) => "cycles and instructions likewise".to_string(),
        Err(why) => format!("cycles and instructions null: {why}"),
    };
    format!(
        "perf_event_open per thread (engine threads of both hosts and app threads; not \
         CPU-wide, so other processes do not count), user and kernel, divided by round trips \
         (echoed messages in throughput); context switches, migrations and task-clock are software events; {hw}; \
         sockperf: its processes' context switches from getrusage (warm-up included)"
    )
}

/// Counters on a fixed set of threads, enabled when opened.
pub struct Threads {
    threads: Vec<ThreadCounters>,
}

impl Threads {
    /// Opens counters on `tids` (threads of this process). Context switches must open;
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI32, Ordering};
    use std::sync::mpsc;

    use super::*;

    /// A thread that blocks on a channel 200 times switches out at least 200 times; a thread
    /// that spins does not.
    #[test]
    fn blocking_threads_switch_and_spinning_ones_do_not() {
        let tid = AtomicI32::new(0);
        let (tx, rx) = mpsc::channel::<u32>();
        let (back_tx, back_rx) = mpsc::channel::<u32>();
        std::thread::scope(|s| {
            let tid = &tid;
            s.spawn(move || {
                tid.store(super::super::gettid(), Ordering::Release);
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
            for i in 0..200 {
                tx.send(i).unwrap();
                back_rx.recv().unwrap();
                // Let the echo thread block before the next message.
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
            let d = c.read().unwrap().since(&before);
            drop(tx);
            assert!(d.switches >= 200, "{d:?}");
            assert_eq!(d.cycles.is_some(), pmu().is_ok(), "{d:?}");
        });
        let spin = std::time::Instant::now();
        let mut c = Threads::open(&[super::super::gettid()]).unwrap();
        let before = c.read().unwrap();
        while spin.elapsed() < std::time::Duration::from_millis(2) {
            std::hint::spin_loop();
        }
        let d = c.read().unwrap().since(&before);
        assert!(d.switches < 50, "{d:?}");
    }
}
