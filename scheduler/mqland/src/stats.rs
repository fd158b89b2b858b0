// SPDX-License-Identifier: GPL-2.0-only
//! Statistics of the userspace policy per interval, in the shape of `scx_microquanta`'s
//! where a field means the same (`interval_s`, `class_members`, per CPU `cpu`, `mq_share`,
//! `throttles`), plus what only a userspace scheduler has: its decisions and the CPU time
//! the scheduler process spent taking them.

use std::time::Instant;

use serde::Serialize;

use crate::policy::Counts;

/// Counters at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub taken: Instant,
    pub counts: Counts,
    /// Per CPU: class run time charged (ns) and throttles.
    pub cpus: Vec<(u64, u64)>,
    /// Dispatches the BPF side did without asking us (idle CPU at wakeup, per-CPU kthreads).
    pub kernel_dispatches: u64,
    /// Tasks the BPF side dispatched itself because our queue was full.
    pub congested: u64,
    /// CPU time of this process (the scheduling loop and its helper threads), ns.
    pub process_cpu_ns: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CpuReport {
    pub cpu: usize,
    /// Fraction of the interval the CPU ran class threads (as charged by the policy).
    pub mq_share: f64,
    /// Times the CPU refused class work because its budget was spent.
    pub throttles: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub interval_s: f64,
    pub class_members: usize,
    /// Decisions taken in userspace (tasks dispatched by the policy).
    pub decisions: u64,
    pub class_decisions: u64,
    pub normal_decisions: u64,
    /// Decisions where the class waited because its CPU's budget was spent.
    pub class_held: u64,
    pub kernel_dispatches: u64,
    pub congested: u64,
    /// CPU time the scheduler process used, in seconds per second.
    pub sched_cpu_share: f64,
    /// Its CPU time per userspace decision, in µs.
    pub sched_cpu_us_per_decision: Option<f64>,
    pub cpus: Vec<CpuReport>,
}

impl Report {
    pub fn between(a: &Snapshot, b: &Snapshot, class_members: usize) -> Self {
        let interval_ns = b.taken.duration_since(a.taken).as_nanos().max(1) as f64;
        let class_decisions = b.counts.class_decisions - a.counts.class_decisions;
        let normal_decisions = b.counts.normal_decisions - a.counts.normal_decisions;
        let decisions = class_decisions + normal_decisions;
        let cpu_ns = b.process_cpu_ns.saturating_sub(a.process_cpu_ns) as f64;
        Self {
            interval_s: interval_ns / 1e9,
            class_members,
            decisions,
            class_decisions,
            normal_decisions,
            class_held: b.counts.class_held - a.counts.class_held,
            kernel_dispatches: b.kernel_dispatches.wrapping_sub(a.kernel_dispatches),
            congested: b.congested.wrapping_sub(a.congested),
            sched_cpu_share: cpu_ns / interval_ns,
            sched_cpu_us_per_decision: (decisions > 0).then(|| cpu_ns / 1000.0 / decisions as f64),
            cpus: b
                .cpus
                .iter()
                .zip(&a.cpus)
                .enumerate()
                .map(|(cpu, (later, earlier))| CpuReport {
                    cpu,
                    mq_share: later.0.saturating_sub(earlier.0) as f64 / interval_ns,
                    throttles: later.1.saturating_sub(earlier.1),
                })
                .collect(),
        }
    }

    /// A totals line, then one line per CPU.
    pub fn format(&self) -> String {
        let mut out = format!(
            "[mqland] {:.1}s threads={} decisions={} (class {}, normal {}, class held {}) kernel={} congested={} sched cpu {:.1}% {}",
            self.interval_s,
            self.class_members,
            self.decisions,
            self.class_decisions,
            self.normal_decisions,
            self.class_held,
            self.kernel_dispatches,
            self.congested,
            self.sched_cpu_share * 100.0,
            self.sched_cpu_us_per_decision
                .map_or_else(|| "-".to_string(), |us| format!("{us:.1} µs/decision")),
        );
        for c in &self.cpus {
            out.push_str(&format!(
                "\n  cpu{:<3} mq {:>5.1}%  throttles {:>6}",
                c.cpu,
                c.mq_share * 100.0,
                c.throttles
            ));
        }
        out
    }
}

/// CPU time this process has used, in ns.
pub fn process_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn shares_and_cost_are_per_interval() {
        let t0 = Instant::now();
        let a = Snapshot {
            taken: t0,
            counts: Counts::default(),
            cpus: vec![(0, 0), (0, 0)],
            kernel_dispatches: 5,
            congested: 0,
            process_cpu_ns: 0,
        };
        let b = Snapshot {
            taken: t0 + Duration::from_secs(1),
            counts: Counts {
                enqueued: 100,
                class_decisions: 40,
                normal_decisions: 60,
                class_held: 3,
            },
            cpus: vec![(250_000_000, 7), (0, 0)],
            kernel_dispatches: 15,
            congested: 0,
            process_cpu_ns: 10_000_000,
        };
        let r = Report::between(&a, &b, 2);
        assert_eq!(r.decisions, 100);
        assert_eq!(r.kernel_dispatches, 10);
        assert!((r.cpus[0].mq_share - 0.25).abs() < 1e-9);
        assert_eq!(r.cpus[0].throttles, 7);
        assert!((r.sched_cpu_share - 0.01).abs() < 1e-9);
        assert!((r.sched_cpu_us_per_decision.unwrap() - 100.0).abs() < 1e-9);
        assert!(r.format().contains("cpu1") && r.format().contains("threads=2"));
        assert!(serde_json::to_string(&r).unwrap().contains("\"mq_share\":0.25"));
    }
}
