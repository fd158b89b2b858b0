//! The report of `mq-trace-wakeups`: where the time of a periodic thread's wakeups went,
//! from the kernel's trace, for all of them and for the slow ones.

use serde::{Deserialize, Serialize};

use crate::{LatencySummary, Tag, Tagged};

/// One traced run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub kernel: String,
    pub cpus: usize,
    /// `eevdf`, `fifo`, `normal` (the fair share of scx_microquanta), `microquanta`, or
    /// `fifo-scx` (SCHED_FIFO with scx_microquanta loaded).
    pub policy: String,
    pub period_us: u64,
    pub work_us: u64,
    pub hogs: usize,
    /// Lateness of every wakeup as the thread measured it (deadline to its clock read).
    pub wakeup_latency_us: LatencySummary,
    /// Sleeps that took the thread off its CPU: the wakeups the trace can hold. A sleep
    /// whose deadline passed before the thread was off its CPU returns at once, with no
    /// waking. `None` in a report written before this was counted.
    #[serde(default)]
    pub blocked: Option<u64>,
    /// Wakeups whose waking and switch-in the trace holds; the rest (the thread was still
    /// running at its deadline, or the trace lost events) are not attributed.
    pub matched: usize,
    /// A matched wakeup at least this late is slow.
    pub slow_threshold_us: f64,
    /// Wakeups at least that late the trace does not hold, so not attributed.
    #[serde(default)]
    pub unmatched_slow: usize,
    pub all: Attribution,
    pub slow: Attribution,
    /// The slowest wakeups one by one, slowest first.
    pub slowest: Vec<SlowWakeup>,
}

/// One slow wakeup and what filled its window, largest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlowWakeup {
    pub late_us: f64,
    /// The CPU it woke on.
    pub cpu: u32,
    pub charges: Vec<Charge>,
}

/// A label's time in one wakeup's window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Charge {
    /// As [`Row::label`].
    pub label: String,
    pub us: f64,
    /// Where its first span starts, from the deadline (µs): before or after the waking.
    pub at_us: f64,
}

/// Where the time of a set of wakeups went, each from its deadline to the thread's clock
/// read, on the CPU it woke on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribution {
    pub wakeups: usize,
    /// One row per phase (`phase:...`), interval kind and name (`hardirq:local_timer`,
    /// `softirq:HRTIMER`, `hrtimer:bpf_timer_cb`, `timer:process_timeout`) and other task (`task:stress-ng-cpu`).
    /// Kinds nest (an hrtimer runs in an interrupt or a softirq), so rows overlap.
    pub rows: Vec<Row>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub label: String,
    /// Share of the wakeups whose window holds some of it: for a phase, some time; for
    /// anything else, a run, even one within one tick of the trace's clock (µs).
    pub share: f64,
    /// Its mean time per wakeup, over all the wakeups of the set (µs).
    pub mean_us: f64,
}

impl Report {
    /// Wakeups after a blocking sleep that the trace does not hold (it lost their events);
    /// `None` where the report does not count blocked sleeps.
    pub fn not_found(&self) -> Option<u64> {
        self.blocked.map(|b| b.saturating_sub(self.matched as u64))
    }
}

impl Tagged for Report {
    const TAG: Tag = Tag {
        program: "mq-trace-wakeups",
        prefix: "MQ_TRACE_WAKEUPS_JSON ",
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{latency, round_trip};

    #[test]
    fn report_round_trips_behind_its_tag() {
        let rows = vec![Row {
            label: "hrtimer:bpf_timer_cb".into(),
            share: 0.5,
            mean_us: 12.5,
        }];
        let report = Report {
            kernel: "7.3.4".into(),
            cpus: 1,
            policy: "microquanta".into(),
            period_us: 1000,
            work_us: 300,
            hogs: 4,
            wakeup_latency_us: latency(200.0),
            blocked: Some(399),
            matched: 398,
            slow_threshold_us: 450.0,
            unmatched_slow: 1,
            all: Attribution {
                wakeups: 398,
                rows: rows.clone(),
            },
            slow: Attribution { wakeups: 4, rows },
            slowest: vec![SlowWakeup {
                late_us: 800.0,
                cpu: 0,
                charges: vec![Charge {
                    label: "phase:scheduler".into(),
                    us: 600.0,
                    at_us: 200.0,
                }],
            }],
        };
        round_trip(&report);
        assert_eq!(report.not_found(), Some(1));
        let older = Report {
            blocked: None,
            ..report
        };
        assert_eq!(older.not_found(), None, "a report without the count cannot tell");
    }
}
