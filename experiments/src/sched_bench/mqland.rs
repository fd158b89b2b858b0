// SPDX-License-Identifier: GPL-2.0-only
//! The same policy in BPF and in userspace: `scx_microquanta` against `scx_mqland` on the
//! same workloads, in one boot, in interleaved rounds (microquanta, mqland, microquanta,
//! mqland, …) so that a drifting host shows up as spread rather than as a difference.
//!
//! Each scheduler in each round is started fresh with the same bandwidth and measured on:
//! 1. wakeup latency of a periodic class sleeper next to `hogs_per_cpu * cpus` hogs, and the
//!    CPU spent scheduling meanwhile: the scheduler process's own CPU time
//!    (`/proc/PID/task/*/schedstat`) and the run time of the struct_ops BPF programs
//!    (`run_time_ns`, with `kernel.bpf_stats_enabled` on for the comparison), per second
//!    and per context switch of the machine (`ctxt` in `/proc/stat`);
//! 2. conformance: a class spinner next to a normal spinner on one CPU (the period should be
//!    a millisecond or more: below the tick `scx_mqland` cannot enforce anything).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use libbpf_rs::query::ProgInfoIter;
use libbpf_rs::ProgramType;
use mq_report::mqland::{MqlandComparison, MqlandRound, SCX_MICROQUANTA, SCX_MQLAND};

use super::conformance::{expected_mq_share, measure_window, share};
use crate::hogs::Hogs;
use crate::scheduler_process::SchedulerProcess;
use crate::wakeup::{measure, ThreadClass, WakeupConfig};

/// What to measure.
#[derive(Debug, Clone)]
pub struct MqlandConfig {
    /// Rounds; each runs both schedulers once.
    pub rounds: usize,
    pub samples: u64,
    pub wake_period: Duration,
    pub hogs_per_cpu: usize,
    pub period_us: u64,
    pub runtime_us: u64,
    pub window: Duration,
    /// The CPU of the conformance spinners.
    pub cpu: usize,
}

/// The binaries compared.
pub struct Schedulers<'a> {
    pub microquanta: &'a Path,
    pub mqland: &'a Path,
}

pub fn run(cfg: &MqlandConfig, bins: &Schedulers<'_>) -> Result<MqlandComparison> {
    let _stats = BpfStats::enable()?;
    let mut rounds = Vec::new();
    let mut hogs_seen = 0;
    for round in 0..cfg.rounds {
        for (name, bin, ops) in [
            (SCX_MICROQUANTA, bins.microquanta, "microquanta"),
            (SCX_MQLAND, bins.mqland, "mqland"),
        ] {
            let (r, hogs) =
                one(cfg, round, name, bin, ops).with_context(|| format!("round {round}, {name}"))?;
            eprintln!(
                "mq-bench-sched: mqland: round {round} {name:<15} wake p50 {:>8.1} µs p99 {:>8.1} µs  class share {:.3} (expected {:.3})  \
                 user {:.3} bpf {:.4} CPU/s  {:.0} switches/s  {} µs/switch",
                r.wake_p50_us,
                r.wake_p99_us,
                r.class_share,
                r.expected_share,
                r.user_cpu_share,
                r.bpf_cpu_share,
                r.switches_per_s,
                r.sched_us_per_switch.map_or_else(|| "-".into(), |v| format!("{v:.2}"))
            );
            hogs_seen = hogs;
            rounds.push(r);
        }
    }
    Ok(MqlandComparison::from_rounds(
        cfg.period_us,
        cfg.runtime_us,
        hogs_seen,
        rounds,
    ))
}

fn one(cfg: &MqlandConfig, round: usize, name: &str, bin: &Path, ops: &str) -> Result<(MqlandRound, usize)> {
    let (p, r) = (cfg.period_us.to_string(), cfg.runtime_us.to_string());
    let sched = SchedulerProcess::start_as(bin, &["--period-us", &p, "--runtime-us", &r], ops)?;
    crate::settle::settle("mq-bench-sched: mqland", crate::settle::WARM_UP_WAKEUPS)?;
    let hogs = Hogs::start(cfg.hogs_per_cpu * super::cpus(), None)?;
    let before = Cost::take(sched.pid())?;
    let lat = measure(WakeupConfig {
        work: Duration::ZERO,
        period: cfg.wake_period,
        samples: cfg.samples,
        class: ThreadClass::MicroQuanta,
        cpu: None,
    })?;
    let after = Cost::take(sched.pid())?;
    let nr_hogs = hogs.workers();
    drop(hogs);
    let paired = measure_window(cfg.cpu, cfg.window, true)?;
    sched.stop().with_context(|| format!("stopping {name}"))?;

    let secs = after.at.duration_since(before.at).as_secs_f64().max(1e-9);
    let user_ns = after.user_ns.saturating_sub(before.user_ns) as f64;
    let bpf_ns = after.bpf_ns.saturating_sub(before.bpf_ns) as f64;
    let switches = after.switches.saturating_sub(before.switches) as f64;
    Ok((
        MqlandRound {
            round,
            scheduler: name.to_string(),
            wake_p50_us: lat.p50,
            wake_p99_us: lat.p99,
            wake_samples: lat.samples,
            class_share: share(paired.mq.cpu_ns, cfg.window.as_nanos() as u64),
            expected_share: expected_mq_share(cfg.period_us, cfg.runtime_us),
            user_cpu_share: user_ns / 1e9 / secs,
            bpf_cpu_share: bpf_ns / 1e9 / secs,
            switches_per_s: switches / secs,
            sched_us_per_switch: (switches > 0.0).then(|| (user_ns + bpf_ns) / 1000.0 / switches),
        },
        nr_hogs,
    ))
}

/// CPU spent scheduling so far, and the machine's context switches.
struct Cost {
    at: Instant,
    /// The scheduler process, every thread.
    user_ns: u64,
    /// Every loaded struct_ops program (only the scheduler's are loaded during a round).
    bpf_ns: u64,
    switches: u64,
}

impl Cost {
    fn take(pid: u32) -> Result<Self> {
        Ok(Self {
            at: Instant::now(),
            user_ns: process_run_ns(pid)?,
            bpf_ns: ProgInfoIter::default()
                .filter(|p| p.ty == ProgramType::StructOps)
                .map(|p| p.run_time_ns)
                .sum(),
            switches: context_switches()?,
        })
    }
}

/// Sum of the first field (time on a CPU, ns) of each thread's schedstat.
fn process_run_ns(pid: u32) -> Result<u64> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0;
    for entry in std::fs::read_dir(&dir).with_context(|| dir.clone())? {
        let path = entry?.path().join("schedstat");
        // A thread that exits between the listing and the read just stops counting.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        total += parse_schedstat_run_ns(&text).with_context(|| format!("{}", path.display()))?;
    }
    Ok(total)
}

fn parse_schedstat_run_ns(text: &str) -> Result<u64> {
    text.split_whitespace()
        .next()
        .context("empty schedstat")?
        .parse()
        .context("schedstat's run time is not a number")
}

fn context_switches() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat").context("/proc/stat")?;
    parse_ctxt(&stat)
}

fn parse_ctxt(stat: &str) -> Result<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("ctxt "))
        .context("/proc/stat has no ctxt line")?
        .trim()
        .parse()
        .context("/proc/stat's ctxt is not a number")
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// `kernel.bpf_stats_enabled` on for the comparison, back to what it was afterwards (the
/// accounting costs a clock read per program run, so it is off by default).
struct BpfStats {
    before: String,
}

impl BpfStats {
    fn enable() -> Result<Self> {
        let before = std::fs::read_to_string(BPF_STATS).with_context(|| BPF_STATS.to_string())?;
        std::fs::write(BPF_STATS, "1").with_context(|| format!("enabling {BPF_STATS}"))?;
        Ok(Self { before })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(BPF_STATS, self.before.trim());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_proc_files_it_reads() {
        assert_eq!(parse_schedstat_run_ns("123456 789 10\n").unwrap(), 123_456);
        assert!(parse_schedstat_run_ns("").is_err());
        let stat = "cpu  1 2 3\nintr 5 6\nctxt 987654\nbtime 1\n";
        assert_eq!(parse_ctxt(stat).unwrap(), 987_654);
        assert!(parse_ctxt("cpu 1\n").is_err());
        assert!(parse_ctxt("ctxt x\n").is_err());
    }

    #[test]
    fn this_process_has_run() {
        let ns = process_run_ns(std::process::id()).unwrap();
        assert!(ns > 0);
    }
}
