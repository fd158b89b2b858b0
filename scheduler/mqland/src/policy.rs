// SPDX-License-Identifier: GPL-2.0-only
//! The MicroQuanta policy as userspace decisions: which queued task runs next, for how
//! long, and in which band of the dispatcher's queues.
//!
//! ```text
//!   enqueue ──► class member? ──yes──► class FIFO (round-robin) ──┐
//!                   │ no                                          ├─► next(): the class head if its
//!                   └──────────► normal tree (by vruntime) ───────┘   CPU's budget allows (or no
//!                                                                     normal work waits), else the
//!                                                                     lowest vruntime
//! ```
//!
//! A class task's slice is the smaller of `--class-slice-us` and the credit its CPU has left
//! while normal work waits; a normal task's is `--normal-slice-us`. The dispatcher orders its
//! queues by vtime, so class tasks get small vtimes (their FIFO order) and normal tasks theirs
//! offset by [`NORMAL_BAND`]: a class task handed over after a normal one still runs first.
//!
//! Run time is charged when the dispatcher reports it: every queued task carries the start
//! and stop time of its last run and the CPU it ran on. Runs of a task that found an idle CPU
//! at wakeup and was dispatched by the kernel without us are reported only by the task's next
//! pass through userspace, so only the last of several such runs is charged; those runs had
//! the CPU to themselves.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::budget::{Bandwidth, CpuBudget};

/// Normal tasks' vtimes sit above every class vtime in the dispatcher's queues (which
/// compare vtimes as signed differences, so both bands stay within 2^63 of each other).
pub const NORMAL_BAND: u64 = 1 << 62;
/// A slice shorter than this costs more in switching than it runs.
const MIN_SLICE_NS: u64 = 5_000;
/// Bound on the per-task bookkeeping of reported runs; past it the map starts over, which at
/// worst charges one run twice.
const MAX_TRACKED_TASKS: usize = 65_536;
const NICE_0_WEIGHT: u64 = 100;

/// What the policy needs to know of a queued task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queued {
    pub pid: i32,
    /// The CPU it last ran on.
    pub cpu: i32,
    /// Its last run, on the dispatcher's clock (ns).
    pub start_ns: u64,
    pub stop_ns: u64,
    /// Scheduling weight, 100 for nice 0.
    pub weight: u64,
    /// The vtime it was last dispatched with (0 for a task new to us).
    pub vtime: u64,
}

/// Slices and bandwidth, in ns.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub bandwidth: Bandwidth,
    pub class_slice_ns: u64,
    pub normal_slice_ns: u64,
}

/// One decision: run `task` for `slice_ns`, queued at `vtime`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<T> {
    pub task: T,
    pub class: bool,
    pub slice_ns: u64,
    pub vtime: u64,
}

/// Counters since the start, for the statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub enqueued: u64,
    pub class_decisions: u64,
    pub normal_decisions: u64,
    /// Decisions that found the class head's CPU out of budget while normal work waited.
    pub class_held: u64,
}

struct Entry<T> {
    queued: Queued,
    payload: T,
}

/// The run queues and budgets of every CPU.
pub struct Policy<T> {
    cfg: Config,
    cpus: Vec<CpuBudget>,
    class: VecDeque<Entry<T>>,
    normal: BTreeMap<(u64, u64), Entry<T>>,
    /// Tie-breaker for equal vruntimes, and the class FIFO's vtime.
    seq: u64,
    vruntime_now: u64,
    last_stop: HashMap<i32, u64>,
    /// Per CPU (the one a normal task last ran on): normal tasks queued here, and when the
    /// last one was handed to the dispatcher (until its slice is over it may still wait in
    /// the dispatcher's queue, which is normal work waiting too).
    normal_queued: Vec<u32>,
    last_normal_ns: Vec<Option<u64>>,
    counts: Counts,
}

impl<T> Policy<T> {
    pub fn new(cfg: Config, nr_cpus: usize, now: u64) -> Self {
        Self {
            cfg,
            cpus: (0..nr_cpus)
                .map(|_| CpuBudget::new(&cfg.bandwidth, now))
                .collect(),
            class: VecDeque::new(),
            normal: BTreeMap::new(),
            seq: 0,
            vruntime_now: 0,
            last_stop: HashMap::new(),
            normal_queued: vec![0; nr_cpus],
            last_normal_ns: vec![None; nr_cpus],
            counts: Counts::default(),
        }
    }

    /// Tasks waiting for a decision.
    pub fn pending(&self) -> usize {
        self.normal.len() + self.class.len()
    }

    /// Whether normal work waits for `cpu` at `now`: a normal task that last ran there is
    /// queued here, or was handed over less than a normal slice ago (it may not have
    /// started yet). A CPU number out of range counts as every CPU.
    fn normal_waiting(&self, cpu: Option<usize>, now: u64) -> bool {
        let recent = |t: &Option<u64>| t.is_some_and(|t| now.saturating_sub(t) < self.cfg.normal_slice_ns);
        match cpu.filter(|&c| c < self.cpus.len()) {
            Some(c) => self.normal_queued[c] > 0 || recent(&self.last_normal_ns[c]),
            None => !self.normal.is_empty() || self.last_normal_ns.iter().any(recent),
        }
    }

    fn cpu_index(&self, cpu: i32) -> Option<usize> {
        usize::try_from(cpu).ok().filter(|&c| c < self.cpus.len())
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    pub fn cpus(&self) -> &[CpuBudget] {
        &self.cpus
    }

    /// Takes a task the dispatcher queued at `now` (our clock; run times are differences
    /// on the dispatcher's).
    pub fn enqueue(&mut self, now: u64, q: Queued, class: bool, payload: T) {
        self.counts.enqueued += 1;
        let ran_ns = self.newly_reported_run(&q);
        if class {
            if let Some(budget) = usize::try_from(q.cpu).ok().and_then(|c| self.cpus.get_mut(c)) {
                budget.charge(&self.cfg.bandwidth, now, ran_ns);
            }
            self.class.push_back(Entry { queued: q, payload });
            return;
        }
        let weight = q.weight.max(1);
        // A task new to us (or just out of the class, whose vtime is a class one) starts at
        // the current vruntime; a sleeper gains at most one slice on those that kept running.
        let own = q.vtime.checked_sub(NORMAL_BAND).unwrap_or(self.vruntime_now);
        let vruntime = own.max(self.vruntime_now.saturating_sub(self.cfg.normal_slice_ns))
            + ran_ns * NICE_0_WEIGHT / weight;
        self.seq += 1;
        if let Some(c) = self.cpu_index(q.cpu) {
            self.normal_queued[c] += 1;
        }
        self.normal
            .insert((vruntime, self.seq), Entry { queued: q, payload });
    }

    /// The run a queued task reports, unless it was reported already (a task queued twice
    /// without running in between carries the same run).
    fn newly_reported_run(&mut self, q: &Queued) -> u64 {
        if q.stop_ns <= q.start_ns {
            return 0;
        }
        if self.last_stop.len() >= MAX_TRACKED_TASKS {
            self.last_stop.clear();
        }
        match self.last_stop.insert(q.pid, q.stop_ns) {
            Some(prev) if prev == q.stop_ns => 0,
            _ => q.stop_ns - q.start_ns,
        }
    }

    /// Puts back a decision the dispatcher could not take (its queue was full), ahead of
    /// what is queued.
    pub fn requeue(&mut self, d: Decision<T>, q: Queued) {
        if d.class {
            self.counts.class_decisions -= 1;
            self.class.push_front(Entry {
                queued: q,
                payload: d.task,
            });
        } else {
            self.counts.normal_decisions -= 1;
            if let Some(c) = self.cpu_index(q.cpu) {
                self.normal_queued[c] += 1;
            }
            self.normal.insert(
                (d.vtime - NORMAL_BAND, 0),
                Entry {
                    queued: q,
                    payload: d.task,
                },
            );
        }
    }

    /// The next task to run at `now`, if any.
    pub fn next(&mut self, now: u64) -> Option<Decision<T>> {
        if let Some(d) = self.next_class(now) {
            return Some(d);
        }
        let ((vruntime, _), entry) = self.normal.pop_first()?;
        self.vruntime_now = self.vruntime_now.max(vruntime);
        if let Some(c) = self.cpu_index(entry.queued.cpu) {
            self.normal_queued[c] -= 1;
            self.last_normal_ns[c] = Some(now);
        }
        self.counts.normal_decisions += 1;
        Some(Decision {
            task: entry.payload,
            class: false,
            slice_ns: self.cfg.normal_slice_ns * entry.queued.weight.max(1) / NICE_0_WEIGHT,
            vtime: NORMAL_BAND + vruntime,
        })
    }

    fn next_class(&mut self, now: u64) -> Option<Decision<T>> {
        let head = self.class.front()?.queued;
        let bw = self.cfg.bandwidth;
        if !self.normal_waiting(self.cpu_index(head.cpu), now) {
            // Alone, the class may use all of the CPU.
            return self.class_decision(self.cfg.class_slice_ns, None);
        }
        let budget = usize::try_from(head.cpu).ok().and_then(|c| self.cpus.get_mut(c));
        let Some(budget) = budget else {
            return self.class_decision(self.cfg.class_slice_ns, None);
        };
        if budget.allows_class(&bw, now) {
            let credit = budget.credit_ns(&bw, now).max(0) as u64;
            let slice = credit.clamp(MIN_SLICE_NS, self.cfg.class_slice_ns.max(MIN_SLICE_NS));
            return self.class_decision(slice, None);
        }
        // Spent: the class waits here while normal work runs. It stays counted as pending,
        // so the dispatcher calls this loop at its next dispatch on any CPU and `next` looks
        // again: the price of having no timer is polling while a budget refills.
        self.counts.class_held += 1;
        None
    }

    fn class_decision(&mut self, slice_ns: u64, vtime: Option<u64>) -> Option<Decision<T>> {
        let entry = self.class.pop_front()?;
        self.seq += 1;
        self.counts.class_decisions += 1;
        Some(Decision {
            task: entry.payload,
            class: true,
            slice_ns,
            vtime: vtime.unwrap_or(self.seq),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: Config = Config {
        bandwidth: Bandwidth {
            period_ns: 1_000_000,
            runtime_ns: 200_000,
        },
        class_slice_ns: 1_000_000,
        normal_slice_ns: 3_000_000,
    };

    fn q(pid: i32, cpu: i32, ran: u64, stop: u64) -> Queued {
        Queued {
            pid,
            cpu,
            start_ns: stop - ran,
            stop_ns: stop,
            weight: 100,
            vtime: 0,
        }
    }

    #[test]
    fn class_runs_first_round_robin_and_below_every_normal_vtime() {
        let mut p = Policy::new(CFG, 1, 0);
        p.enqueue(0, q(10, 0, 0, 1), false, 10);
        p.enqueue(0, q(1, 0, 0, 1), true, 1);
        p.enqueue(0, q(2, 0, 0, 1), true, 2);
        let a = p.next(0).unwrap();
        let b = p.next(0).unwrap();
        let n = p.next(0).unwrap();
        assert_eq!(p.pending(), 0);
        assert_eq!((a.task, b.task, n.task), (1, 2, 10));
        assert!(a.class && b.class && !n.class);
        assert!(a.vtime < b.vtime && b.vtime < n.vtime);
        assert_eq!(n.slice_ns, CFG.normal_slice_ns);
        assert_eq!(p.next(0), None);
    }

    #[test]
    fn a_class_slice_is_cut_to_the_credit_while_normal_work_waits() {
        let mut p = Policy::new(CFG, 1, 0);
        p.enqueue(0, q(1, 0, 0, 1), true, 1);
        assert_eq!(
            p.next(0).unwrap().slice_ns,
            CFG.class_slice_ns,
            "alone: the whole slice"
        );
        p.enqueue(0, q(10, 0, 0, 1), false, 10);
        p.enqueue(0, q(1, 0, 150_000, 150_000), true, 1);
        // 200 µs + 150 * 0.2 - 150 = 80 µs left.
        assert_eq!(p.next(150_000).unwrap().slice_ns, 80_000);
    }

    #[test]
    fn a_spent_budget_holds_the_class_while_normal_work_waits() {
        let mut p = Policy::new(CFG, 1, 0);
        p.enqueue(0, q(10, 0, 0, 1), false, 10);
        p.enqueue(1_000_000, q(1, 0, 1_000_000, 1_000_000), true, 1);
        // 200 + 200 - 1000 = -600 µs: throttled, the normal task runs.
        assert_eq!(p.next(1_000_000).unwrap().task, 10);
        assert_eq!(p.counts().class_held, 1);
        assert_eq!(p.cpus()[0].throttles, 1);
        // The normal task may still wait in the dispatcher's queue for a slice: held, but
        // still pending so that the dispatcher calls again.
        assert_eq!(p.next(1_100_000), None);
        assert_eq!(p.pending(), 1);
        // A slice later no normal work waits any more: the class runs whatever its budget.
        let later = 1_000_000 + CFG.normal_slice_ns;
        assert_eq!(p.next(later).unwrap().task, 1);
    }

    #[test]
    fn a_refilled_budget_lets_the_class_back_ahead_of_normal_work() {
        let mut p = Policy::new(CFG, 1, 0);
        p.enqueue(1_000_000, q(1, 0, 1_000_000, 1_000_000), true, 1);
        p.enqueue(1_000_000, q(10, 0, 0, 1), false, 10);
        assert_eq!(p.next(1_000_000).unwrap().task, 10);
        p.enqueue(1_000_000, q(11, 0, 0, 1), false, 11);
        // -600 µs needs 800 µs of credit = 4 ms to be a whole runtime again.
        assert_eq!(p.next(4_999_000).unwrap().task, 11);
        p.enqueue(4_999_000, q(10, 0, 0, 2), false, 10);
        let d = p.next(5_000_000).unwrap();
        assert_eq!(d.task, 1);
        assert!(d.vtime < NORMAL_BAND);
    }

    #[test]
    fn normal_work_of_another_cpu_does_not_throttle_the_class() {
        let mut p = Policy::new(CFG, 2, 0);
        p.enqueue(0, q(10, 0, 0, 1), false, 10);
        p.enqueue(1_000_000, q(1, 1, 1_000_000, 1_000_000), true, 1);
        // CPU 1's budget is spent, but the only normal work last ran on CPU 0.
        assert_eq!(p.next(1_000_000).unwrap().task, 1);
        assert_eq!(p.counts().class_held, 0);
    }

    #[test]
    fn a_decision_put_back_is_taken_again_first_and_counted_once() {
        let mut p = Policy::new(CFG, 1, 0);
        let (n, c) = (q(10, 0, 0, 1), q(1, 0, 0, 1));
        p.enqueue(0, n, false, 10);
        p.enqueue(0, q(11, 0, 0, 1), false, 11);
        let d = p.next(0).unwrap();
        assert_eq!(d.task, 10);
        p.requeue(d, n);
        assert_eq!(p.next(0).unwrap().task, 10);
        p.enqueue(0, c, true, 1);
        let d = p.next(0).unwrap();
        p.requeue(d, c);
        assert_eq!(p.next(0).unwrap().task, 1);
        assert_eq!(p.counts().normal_decisions, 1);
        assert_eq!(p.counts().class_decisions, 1);
        assert_eq!(p.next(0).unwrap().task, 11);
        assert_eq!(p.pending(), 0);
    }

    #[test]
    fn a_run_reported_twice_is_charged_once() {
        let mut p = Policy::new(CFG, 1, 0);
        p.enqueue(0, q(10, 0, 0, 1), false, 10);
        p.enqueue(100_000, q(1, 0, 100_000, 100_000), true, 1);
        let _ = p.next(100_000);
        p.enqueue(100_000, q(1, 0, 100_000, 100_000), true, 1);
        assert_eq!(p.cpus()[0].class_run_ns, 100_000);
    }

    #[test]
    fn normal_tasks_run_in_vruntime_order_weighted() {
        let mut p = Policy::new(CFG, 1, 0);
        let heavy = Queued {
            weight: 200,
            ..q(1, 0, 1_000_000, 1_000_000)
        };
        p.enqueue(0, heavy, false, 1);
        p.enqueue(0, q(2, 0, 1_000_000, 1_000_000), false, 2);
        // Equal run time, double weight: half the vruntime, runs first.
        assert_eq!(p.next(0).unwrap().task, 1);
        assert_eq!(p.next(0).unwrap().task, 2);
    }

    #[test]
    fn a_bad_cpu_number_is_ignored_not_fatal() {
        let mut p = Policy::new(CFG, 2, 0);
        p.enqueue(0, q(1, 99, 10, 20), true, 1);
        p.enqueue(0, q(2, -1, 10, 20), true, 2);
        p.enqueue(0, q(3, 0, 10, 20), false, 3);
        assert_eq!(p.next(0).unwrap().task, 1);
        assert_eq!(p.next(0).unwrap().task, 2);
    }
}
