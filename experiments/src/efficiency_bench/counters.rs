// SPDX-License-Identifier: GPL-2.0-only
//! Context switches, CPU migrations and task-clock of the threads that run the stack (any
//! process's: we are root), from per-thread `perf_event_open` software counters
//! (`perf-event2`). Software events count in any VM, PMU or not; per thread, so the other
//! processes on the machine do not count.

use std::io;

use perf_event::events::Software;
use perf_event::{Builder, Counter};

/// Sums over a set of threads at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub switches: u64,
    pub migrations: u64,
    /// Nanoseconds on a CPU.
    pub task_clock_ns: u64,
}

impl Counts {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            switches: self.switches.saturating_sub(earlier.switches),
            migrations: self.migrations.saturating_sub(earlier.migrations),
            task_clock_ns: self.task_clock_ns.saturating_sub(earlier.task_clock_ns),
        }
    }
}

/// How the rows count, for the report.
pub const DESCRIBE: &str = "perf_event_open software counters (context switches, CPU \
    migrations, task-clock) per thread of the stack (the library-OS apps' threads; every \
    thread of the snap-host process), user and kernel, over the measuring window, divided by the \
    echoes received";

fn open(event: Software, tid: i32) -> io::Result<Counter> {
    let mut c = Builder::new(event)
        .observe_pid(tid)
        .any_cpu()
        .include_kernel()
        .build()?;
    c.enable()?;
    Ok(c)
}

/// Counters on a fixed set of threads, enabled when opened.
pub struct Threads {
    counters: Vec<[Counter; 3]>,
}

impl Threads {
    /// Opens the three counters on every thread of `tids`.
    pub fn open(tids: &[i32]) -> io::Result<Self> {
        let counters = tids
            .iter()
            .map(|&tid| {
                Ok([
                    open(Software::CONTEXT_SWITCHES, tid)?,
                    open(Software::CPU_MIGRATIONS, tid)?,
                    open(Software::TASK_CLOCK, tid)?,
                ])
            })
            .collect::<io::Result<_>>()?;
        Ok(Self { counters })
    }

    /// The sums now. A thread that exited keeps its last counts.
    pub fn read(&mut self) -> io::Result<Counts> {
        let mut sum = Counts::default();
        for [s, m, t] in &mut self.counters {
            sum.switches += s.read()?;
            sum.migrations += m.read()?;
            sum.task_clock_ns += t.read()?;
        }
        Ok(sum)
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
    use super::*;

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
