// SPDX-License-Identifier: GPL-2.0-only
//! Where each wakeup's time went: the trace's events become per-CPU spans (interrupts,
//! softirqs, hrtimer callbacks, tasks' runs), and each wakeup's window, from its deadline
//! to the thread's clock read (its measured lateness), is charged with the spans it
//! overlaps on the CPU it was switched in on. (A wakeup placed on another CPU than its
//! timer's has its `timer` phase charged from the wrong CPU; with one vCPU, the shape the
//! demo's workload is traced in, there is no other.)
//!
//! A window has three phases: `timer` (deadline to `sched_waking`: the sleep timer's
//! interrupt, late when the CPU has interrupts off or the emulator is late), `scheduler`
//! (waking to `sched_switch`: the scheduler class's whole path, the preempted task's
//! included), and `return` (switch to the thread's clock read: the end of the context
//! switch, whatever interrupts it re-enables, the return to user space; the thread's own
//! run there is `task:measured`). Each of a wakeup's charges says where its first span
//! starts, so the slowest wakeups' list tells which phase a charge fell in.

use std::collections::HashMap;

use mq_report::wakeup_trace::{Attribution, Row};

use super::ftrace::{Event, IrqKind, Record};
use crate::wakeup::Wakeup;

/// The trace's timestamps have µs resolution: an event up to this much before a deadline
/// may be at it.
const RESOLUTION_NS: u64 = 1_000;

/// Per-CPU lanes, one per kind of span. Spans of one lane seldom overlap, but they can: an
/// hrtimer callback run by an interrupt nests in one the HRTIMER softirq was running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Lane {
    Task,
    Irq(IrqKind),
}

#[derive(Debug, Clone, Copy)]
struct Span {
    start: u64,
    end: u64,
    label: u32,
}

/// A lane's spans sorted by start, with the latest end among each prefix: the first span
/// that can reach past an instant is found by binary search even where spans nest.
#[derive(Debug, Default)]
struct Spans {
    spans: Vec<Span>,
    max_end: Vec<u64>,
}

impl Spans {
    fn finish(&mut self) {
        self.spans.sort_by_key(|s| s.start);
        self.max_end = self
            .spans
            .iter()
            .scan(0, |max, s| {
                *max = s.end.max(*max);
                Some(*max)
            })
            .collect();
    }

    /// The spans that overlap `[from, to)`.
    fn overlapping(&self, from: u64, to: u64) -> impl Iterator<Item = &Span> {
        let first = self.max_end.partition_point(|&end| end <= from);
        self.spans[first..]
            .iter()
            .take_while(move |s| s.start < to)
            .filter(move |s| s.end > from)
    }
}

/// One wakeup found in the trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub cpu: u32,
    pub deadline_ns: u64,
    pub waking_ns: u64,
    pub switch_ns: u64,
    /// As the thread measured it.
    pub late_ns: u64,
}

/// Time of one label in one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub label: String,
    pub ns: u64,
    /// Where in the window its first span starts, from the deadline.
    pub at_ns: u64,
}

/// The trace, as spans per CPU and lane, and the measured thread's wakings and
/// switch-ins.
#[derive(Debug, Default)]
pub struct Timeline {
    lanes: HashMap<(u32, Lane), Spans>,
    labels: Vec<String>,
    label_ids: HashMap<String, u32>,
    wakings: Vec<u64>,
    switch_ins: Vec<(u64, u32)>,
}

impl Timeline {
    /// Builds the timeline of the thread `tid` from records in time order.
    pub fn new(records: &[Record], tid: u32) -> Self {
        let mut t = Self::default();
        // Per CPU: the open interrupt-like intervals (nested) and the running task.
        let mut open: HashMap<u32, Vec<(IrqKind, u32, u64)>> = HashMap::new();
        let mut running: HashMap<u32, (u32, u64)> = HashMap::new();
        for r in records {
            match &r.event {
                Event::Waking { pid, .. } if *pid == tid => t.wakings.push(r.ts_ns),
                Event::Waking { .. } => {}
                Event::Switch {
                    next_pid, next_comm, ..
                } => {
                    if let Some((label, start)) = running.remove(&r.cpu) {
                        t.push(r.cpu, Lane::Task, label, start, r.ts_ns);
                    }
                    if *next_pid == tid {
                        t.switch_ins.push((r.ts_ns, r.cpu));
                    }
                    let label = t.label(&format!("task:{}", task_name(next_comm, *next_pid == tid)));
                    running.insert(r.cpu, (label, r.ts_ns));
                }
                Event::Enter { kind, name } => {
                    let label = t.label(&format!("{}:{name}", kind.as_str()));
                    open.entry(r.cpu).or_default().push((*kind, label, r.ts_ns));
                }
                Event::Exit { kind } => {
                    // Close the innermost open interval of that kind, and any opened
                    // inside it whose exit the trace lost.
                    let stack = open.entry(r.cpu).or_default();
                    if let Some(at) = stack.iter().rposition(|(k, ..)| k == kind) {
                        for (k, label, start) in stack.drain(at..).collect::<Vec<_>>() {
                            t.push(r.cpu, Lane::Irq(k), label, start, r.ts_ns);
                        }
                    }
                }
            }
        }
        for spans in t.lanes.values_mut() {
            spans.finish();
        }
        t
    }

    fn label(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.label_ids.get(name) {
            return id;
        }
        let id = self.labels.len() as u32;
        self.labels.push(name.to_string());
        self.label_ids.insert(name.to_string(), id);
        id
    }

    fn push(&mut self, cpu: u32, lane: Lane, label: u32, start: u64, end: u64) {
        self.lanes
            .entry((cpu, lane))
            .or_default()
            .spans
            .push(Span { start, end, label });
    }

    /// The window of each wakeup the trace holds: the thread's first waking at or after its
    /// deadline (before the next wakeup's), then its first switch-in after that, which must
    /// come before the thread read its clock. A wakeup whose events were lost, or whose
    /// timer fired before the thread got to sleep (a waking with no switch), has none.
    pub fn windows(&self, wakeups: &[Wakeup]) -> Vec<Window> {
        let mut out = Vec::new();
        for (i, w) in wakeups.iter().enumerate() {
            let from = w.deadline_ns.saturating_sub(RESOLUTION_NS);
            let until = wakeups.get(i + 1).map_or(u64::MAX, |n| n.deadline_ns);
            let at = self.wakings.partition_point(|&ts| ts < from);
            let Some(&waking_ns) = self.wakings.get(at).filter(|&&ts| ts < until) else {
                continue;
            };
            let at = self.switch_ins.partition_point(|&(ts, _)| ts < waking_ns);
            let read_ns = w.deadline_ns + w.late_ns + RESOLUTION_NS;
            let Some(&(switch_ns, cpu)) = self
                .switch_ins
                .get(at)
                .filter(|(ts, _)| *ts < until && *ts <= read_ns)
            else {
                continue;
            };
            out.push(Window {
                cpu,
                deadline_ns: w.deadline_ns,
                waking_ns: waking_ns.max(w.deadline_ns),
                switch_ns: switch_ns.max(waking_ns).max(w.deadline_ns),
                late_ns: w.late_ns,
            });
        }
        out
    }

    /// What filled one window, by label (phases included), largest first.
    pub fn charges(&self, w: &Window) -> Vec<Charge> {
        let phase = |label: &str, from: u64, to: u64| Charge {
            label: label.to_string(),
            ns: to.saturating_sub(from),
            at_ns: from - w.deadline_ns,
        };
        let measured_end = w.deadline_ns + w.late_ns.max(w.switch_ns - w.deadline_ns);
        let mut out = vec![
            phase("phase:timer", w.deadline_ns, w.waking_ns),
            phase("phase:scheduler", w.waking_ns, w.switch_ns),
            phase("phase:return", w.switch_ns, measured_end),
        ];
        // A phase of no time did not happen here. A span that began and ended within one
        // tick of the trace's clock (µs) did: a timer callback of under 1 µs on a fast host.
        // It stays, with 0 ns, so that a share counts the windows it ran in.
        out.retain(|c| c.ns > 0);
        // Per label: total ns and the start of its first span.
        let mut per_label: HashMap<u32, (u64, u64)> = HashMap::new();
        for ((cpu, _), spans) in &self.lanes {
            if *cpu != w.cpu {
                continue;
            }
            for s in spans.overlapping(w.deadline_ns, measured_end) {
                let start = s.start.max(w.deadline_ns);
                let e = per_label.entry(s.label).or_insert((0, start));
                e.0 += s.end.min(measured_end) - start;
                e.1 = e.1.min(start);
            }
        }
        out.extend(per_label.into_iter().map(|(label, (ns, start))| Charge {
            label: self.labels[label as usize].clone(),
            ns,
            at_ns: start - w.deadline_ns,
        }));
        out.sort_by(|a, b| b.ns.cmp(&a.ns).then(a.label.cmp(&b.label)));
        out
    }

    /// Where the time of `windows` went.
    pub fn attribute(&self, windows: &[Window]) -> Attribution {
        // Per label: windows it appears in, total ns.
        let mut totals: HashMap<String, (usize, u64)> = HashMap::new();
        for w in windows {
            for c in self.charges(w) {
                let e = totals.entry(c.label).or_default();
                e.0 += 1;
                e.1 += c.ns;
            }
        }
        let n = windows.len().max(1) as f64;
        let mut rows: Vec<Row> = totals
            .into_iter()
            .map(|(label, (count, ns))| Row {
                label,
                share: count as f64 / n,
                mean_us: ns as f64 / 1000.0 / n,
            })
            .collect();
        rows.sort_by(|a, b| b.mean_us.total_cmp(&a.mean_us).then(a.label.cmp(&b.label)));
        Attribution {
            wakeups: windows.len(),
            rows,
        }
    }
}

/// A task's name for its row: the measured thread is `measured`; a per-CPU kernel thread
/// loses its CPU (`swapper/0` is `swapper`, `kworker/1:2` is `kworker`), so rows add up
/// across CPUs and runs.
fn task_name(comm: &str, measured: bool) -> &str {
    if measured {
        return "measured";
    }
    comm.split('/').next().unwrap_or(comm)
}

#[cfg(test)]
mod tests {
    use super::super::ftrace::parse_line;
    use super::*;

    fn timeline(trace: &str) -> Timeline {
        let records: Vec<Record> = trace.lines().filter_map(parse_line).collect();
        Timeline::new(&records, 7)
    }

    /// A window at 10.000300 s, while the thread of [`TRACE`] runs: no callback is in it.
    fn quiet_window() -> Window {
        Window {
            cpu: 0,
            deadline_ns: 10_000_300_000,
            waking_ns: 10_000_300_000,
            switch_ns: 10_000_300_000,
            late_ns: 10_000,
        }
    }

    fn row<'a>(a: &'a Attribution, label: &str) -> Option<&'a Row> {
        a.rows.iter().find(|r| r.label == label)
    }

    /// A wakeup due at 10.000100 s: the hog runs, the timer interrupt wakes the thread,
    /// our BPF timer's callback runs in the HRTIMER softirq, then the switch.
    const TRACE: &str = "\
hog-5 [000] d..2. 10.000000: sched_switch: prev_comm=t prev_pid=7 prev_prio=120 prev_state=S ==> next_comm=hog next_pid=5 next_prio=120
hog-5 [000] d.h1. 10.000110: local_timer_entry: vector=236
hog-5 [000] d.h1. 10.000112: hrtimer_expire_entry: hrtimer=0000000000000001 function=hrtimer_wakeup now=10000112000
hog-5 [000] d.h3. 10.000114: sched_waking: comm=t pid=7 prio=120 target_cpu=000
hog-5 [000] d.h1. 10.000120: hrtimer_expire_exit: hrtimer=0000000000000001
hog-5 [000] d.h1. 10.000125: local_timer_exit: vector=236
hog-5 [000] ..s1. 10.000126: softirq_entry: vec=8 [action=HRTIMER]
hog-5 [000] ..s1. 10.000127: hrtimer_expire_entry: hrtimer=0000000000000002 function=bpf_timer_cb now=10000127000
hog-5 [000] ..s1. 10.000177: hrtimer_expire_exit: hrtimer=0000000000000002
hog-5 [000] ..s1. 10.000178: softirq_exit: vec=8 [action=HRTIMER]
hog-5 [000] d..2. 10.000200: sched_switch: prev_comm=hog prev_pid=5 prev_prio=120 prev_state=R+ ==> next_comm=t next_pid=7 next_prio=120
t-7 [000] d..2. 10.000500: sched_switch: prev_comm=t prev_pid=7 prev_prio=120 prev_state=S ==> next_comm=hog next_pid=5 next_prio=120
";

    #[test]
    fn a_window_runs_from_the_deadline_through_the_waking_to_the_switch() {
        let t = timeline(TRACE);
        let wakeups = [Wakeup {
            deadline_ns: 10_000_100_000,
            late_ns: 110_000,
        }];
        let windows = t.windows(&wakeups);
        assert_eq!(
            windows,
            [Window {
                cpu: 0,
                deadline_ns: 10_000_100_000,
                waking_ns: 10_000_114_000,
                switch_ns: 10_000_200_000,
                late_ns: 110_000,
            }]
        );
        let a = t.attribute(&windows);
        let us = |label| row(&a, label).map(|r| r.mean_us);
        assert_eq!(us("phase:timer"), Some(14.0));
        assert_eq!(us("phase:scheduler"), Some(86.0));
        assert_eq!(us("phase:return"), Some(10.0));
        assert_eq!(us("task:hog"), Some(100.0));
        assert_eq!(us("hardirq:local_timer"), Some(15.0));
        assert_eq!(us("hrtimer:hrtimer_wakeup"), Some(8.0));
        assert_eq!(us("softirq:HRTIMER"), Some(52.0));
        assert_eq!(us("hrtimer:bpf_timer_cb"), Some(50.0));
        // The callback ran after the waking: the interrupt was not late for it.
        let cb = t
            .charges(&windows[0])
            .into_iter()
            .find(|c| c.label == "hrtimer:bpf_timer_cb");
        assert_eq!(cb.map(|c| (c.ns, c.at_ns)), Some((50_000, 27_000)));
        // The thread's own run, from the switch to its clock read.
        assert_eq!(us("task:measured"), Some(10.0));
        assert_eq!(a.wakeups, 1);
        assert!(a.rows.iter().all(|r| r.share == 1.0));
    }

    #[test]
    fn a_wakeup_the_trace_does_not_hold_has_no_window_and_shares_count_the_rest() {
        let t = timeline(TRACE);
        // The second deadline falls while the thread still runs: no waking follows it.
        let wakeups = [
            Wakeup {
                deadline_ns: 10_000_100_000,
                late_ns: 110_000,
            },
            Wakeup {
                deadline_ns: 10_000_300_000,
                late_ns: 0,
            },
        ];
        let windows = t.windows(&wakeups);
        assert_eq!(windows.len(), 1);
        // A window while the thread runs, with no callback in it: the callback's share and
        // mean count it.
        let quiet = quiet_window();
        let a = t.attribute(&[windows[0], quiet]);
        assert_eq!(row(&a, "hrtimer:bpf_timer_cb").unwrap().share, 0.5);
        assert_eq!(row(&a, "hrtimer:bpf_timer_cb").unwrap().mean_us, 25.0);
        assert_eq!(row(&a, "task:measured").unwrap().share, 1.0);
    }

    /// The trace's clock ticks in µs, so a callback shorter than that begins and ends at the
    /// same time stamp: it ran in the window all the same.
    #[test]
    fn a_callback_within_one_tick_of_the_clock_counts_with_no_time() {
        let trace = TRACE
            .replace("10.000120: hrtimer_expire_exit", "10.000112: hrtimer_expire_exit")
            .replace("10.000114: sched_waking", "10.000112: sched_waking");
        let t = timeline(&trace);
        let wakeups = [Wakeup {
            deadline_ns: 10_000_100_000,
            late_ns: 110_000,
        }];
        let a = t.attribute(&t.windows(&wakeups));
        let cb = row(&a, "hrtimer:hrtimer_wakeup").unwrap();
        assert_eq!((cb.share, cb.mean_us), (1.0, 0.0));
        assert_eq!(row(&a, "phase:scheduler").unwrap().share, 1.0);
        // Phases of no time stay out: in the quiet window the deadline, the waking and the
        // switch coincide, so only the return phase is in it.
        let names: Vec<String> = t.charges(&quiet_window()).into_iter().map(|c| c.label).collect();
        assert!(!names.iter().any(|n| n == "phase:timer"), "{names:?}");
        assert!(!names.iter().any(|n| n == "phase:scheduler"), "{names:?}");
        assert!(names.iter().any(|n| n == "phase:return"), "{names:?}");
    }

    #[test]
    fn a_switch_after_the_thread_read_its_clock_is_not_its_wakeup() {
        let t = timeline(TRACE);
        // Measured 20 µs late, but the trace's switch-in is 100 µs after the deadline: the
        // switch belongs to something else (a preemption), and the wakeup has no window.
        let wakeups = [Wakeup {
            deadline_ns: 10_000_100_000,
            late_ns: 20_000,
        }];
        assert_eq!(t.windows(&wakeups), []);
    }

    #[test]
    fn a_lost_exit_is_closed_by_its_outer_interval() {
        let t = timeline(
            "\
x-5 [000] d.h1. 1.000010: local_timer_entry: vector=236
x-5 [000] d.h1. 1.000012: hrtimer_expire_entry: hrtimer=1 function=f now=1
x-5 [000] d.h1. 1.000020: local_timer_exit: vector=236
",
        );
        let spans = &t.lanes[&(0, Lane::Irq(IrqKind::Hrtimer))].spans;
        assert_eq!((spans[0].start, spans[0].end), (1_000_012_000, 1_000_020_000));
    }

    #[test]
    fn a_window_inside_a_span_that_an_interrupt_nested_in_is_charged_with_it() {
        // bpf_timer_cb runs in the softirq from 10 µs to 60 µs; an interrupt's
        // hrtimer_wakeup nests in it from 20 to 25 µs. A window from 30 to 40 µs overlaps the
        // outer callback only (the inner one ended before it).
        let t = timeline(
            "\
x-5 [000] ..s1. 1.000010: hrtimer_expire_entry: hrtimer=2 function=bpf_timer_cb now=1
x-5 [000] d.h1. 1.000020: hrtimer_expire_entry: hrtimer=1 function=hrtimer_wakeup now=1
x-5 [000] d.h3. 1.000022: sched_waking: comm=t pid=7 prio=120 target_cpu=000
x-5 [000] d.h1. 1.000025: hrtimer_expire_exit: hrtimer=1
x-5 [000] ..s1. 1.000060: hrtimer_expire_exit: hrtimer=2
x-5 [000] d..2. 1.000070: sched_switch: prev_comm=x prev_pid=5 prev_prio=120 prev_state=R+ ==> next_comm=t next_pid=7 next_prio=120
",
        );
        let w = Window {
            cpu: 0,
            deadline_ns: 1_000_030_000,
            waking_ns: 1_000_030_000,
            switch_ns: 1_000_040_000,
            late_ns: 10_000,
        };
        let charges = t.charges(&w);
        let cb = charges.iter().find(|c| c.label == "hrtimer:bpf_timer_cb");
        assert_eq!(cb.map(|c| (c.ns, c.at_ns)), Some((10_000, 0)), "{charges:?}");
        assert!(
            charges.iter().all(|c| c.label != "hrtimer:hrtimer_wakeup"),
            "{charges:?}"
        );
    }

    #[test]
    fn per_cpu_kernel_threads_share_a_row() {
        assert_eq!(task_name("swapper/0", false), "swapper");
        assert_eq!(task_name("kworker/1:2H", false), "kworker");
        assert_eq!(task_name("stress-ng-cpu", false), "stress-ng-cpu");
        assert_eq!(task_name("anything", true), "measured");
    }
}
