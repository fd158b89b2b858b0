// SPDX-License-Identifier: GPL-2.0-only
//! Per-group conformance: does each class group get its own `runtime / period` of a CPU
//! where normal work competes, and does a group that wants the whole CPU leave another
//! group's budget alone?
//!
//! Spinners pinned to CPUs, each a normal thread or a member of a class group, measure
//! their own CPU time over a common wall-clock window (as [`super::conformance`] does for
//! one class thread). Two scenarios, with the default group at 1000/100 µs and two groups
//! at 1000/200 and 1000/600 µs (periods of 1 ms, which TCG times faithfully; 10 + 20 + 60
//! % fits the per-CPU cap):
//! - `separate`: each group's spinner next to a normal spinner on a CPU of its own (on a
//!   single-CPU machine, one after the other);
//! - `shared`: both groups' spinners and a normal spinner on one CPU: both groups want the
//!   whole CPU, neither may take the other's budget, and the normal spinner gets the rest.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use mq_class::{current_tid, Budget, Class};
use mq_report::sched::GroupConformance;

use crate::wakeup::{now_ns, pin_to_cpu, sleep_until_ns, thread_cpu_ns};

/// The default group's budget while groups are measured: small, so that the two groups
/// below fit the per-CPU cap next to it.
pub const DEFAULT_BUDGET: Budget = Budget {
    period_us: 1000,
    runtime_us: 100,
};
/// The two groups measured: (name, budget).
pub const GROUPS: [(&str, Budget); 2] = [
    (
        "bench-a",
        Budget {
            period_us: 1000,
            runtime_us: 200,
        },
    ),
    (
        "bench-b",
        Budget {
            period_us: 1000,
            runtime_us: 600,
        },
    ),
];

/// Time for the spinners to pin themselves and join their groups before the window opens.
const SETUP: Duration = Duration::from_millis(500);

/// One spinner: the CPU it is pinned to and its class group (`None`: a normal thread).
#[derive(Debug, Clone)]
pub struct Spinner {
    pub cpu: usize,
    pub group: Option<String>,
}

/// Spins every spinner over one common `window` and returns each one's share of it (CPU
/// time over wall time), in order. Needs the scheduler loaded and the groups made.
pub fn shares(spinners: &[Spinner], window: Duration) -> Result<Vec<f64>> {
    let start_ns = now_ns() + SETUP.as_nanos() as u64;
    let end_ns = start_ns + window.as_nanos() as u64;
    std::thread::scope(|s| {
        let handles: Vec<_> = spinners
            .iter()
            .map(|sp| s.spawn(move || spin(sp, start_ns, end_ns)))
            .collect();
        handles
            .into_iter()
            .zip(spinners)
            .map(|(h, sp)| {
                let cpu_ns = h
                    .join()
                    .map_err(|_| anyhow!("a spinner panicked"))?
                    .with_context(|| format!("spinner {sp:?}"))?;
                Ok(cpu_ns as f64 / window.as_nanos() as f64)
            })
            .collect()
    })
}

fn spin(sp: &Spinner, start_ns: u64, end_ns: u64) -> Result<u64> {
    pin_to_cpu(sp.cpu)?;
    let class = match &sp.group {
        Some(name) => {
            let class = Class::open()?;
            class.add_to_group(current_tid(), name)?;
            Some(class)
        }
        None => None,
    };
    if now_ns() > start_ns {
        bail!("setting up took longer than {SETUP:?}; the window would be short");
    }
    sleep_until_ns(start_ns);
    let cpu0 = thread_cpu_ns();
    while now_ns() < end_ns {
        std::hint::spin_loop();
    }
    let cpu_ns = thread_cpu_ns() - cpu0;
    if let Some(class) = class {
        class.remove(current_tid())?;
    }
    Ok(cpu_ns)
}

/// Removes the groups it made when dropped, also when a measurement fails: groups are
/// pinned state and would otherwise count against the cap of every later scheduler start.
#[derive(Debug)]
pub struct GroupsMade<'a> {
    class: &'a Class,
    names: Vec<String>,
}

impl<'a> GroupsMade<'a> {
    /// Makes each group (an existing one of that name, left by a killed run, is updated).
    pub fn make(class: &'a Class, groups: &[(&str, Budget)]) -> Result<Self> {
        let mut made = Self {
            class,
            names: Vec::new(),
        };
        for (name, budget) in groups {
            class
                .groups()
                .set(name, *budget, None)
                .with_context(|| format!("making class group {name}"))?;
            made.names.push(name.to_string());
        }
        Ok(made)
    }
}

impl Drop for GroupsMade<'_> {
    fn drop(&mut self) {
        for name in &self.names {
            if let Err(e) = self.class.remove_group(name) {
                eprintln!("removing class group {name}: {e}");
            }
        }
    }
}

fn row(
    scenario: &str,
    group: Option<(&str, Budget)>,
    cpu: usize,
    share: f64,
    window: Duration,
) -> GroupConformance {
    let (name, expected, budget) = match group {
        Some((name, b)) => (
            name.to_string(),
            Some(b.runtime_us as f64 / b.period_us as f64),
            Some(b),
        ),
        None => ("normal".to_string(), None, None),
    };
    GroupConformance {
        scenario: scenario.to_string(),
        group: name,
        period_us: budget.map(|b| b.period_us),
        runtime_us: budget.map(|b| b.runtime_us),
        expected_share: expected,
        share,
        cpu,
        window_ms: window.as_millis() as u64,
    }
}

/// Both scenarios with `scheduler` started at [`DEFAULT_BUDGET`]: one row per spinner.
pub fn run(scheduler: &Path, window: Duration, cpus: usize) -> Result<Vec<GroupConformance>> {
    let (sched, _) = super::start_scheduler(scheduler, DEFAULT_BUDGET.period_us, DEFAULT_BUDGET.runtime_us)?;
    let rows = measure_loaded(window, cpus);
    sched.stop().context("stopping scx_microquanta")?;
    let rows = rows?;
    for r in &rows {
        eprintln!(
            "mq-bench-sched: groups {} {} on CPU {}: {:.3} (expected {})",
            r.scenario,
            r.group,
            r.cpu,
            r.share,
            r.expected_share
                .map_or("the rest".to_string(), |e| format!("{e:.3}"))
        );
    }
    Ok(rows)
}

fn measure_loaded(window: Duration, cpus: usize) -> Result<Vec<GroupConformance>> {
    let class = Class::open()?;
    let _groups = GroupsMade::make(&class, &GROUPS)?;
    let mut rows = Vec::new();
    let spinner = |cpu, group: Option<&str>| Spinner {
        cpu,
        group: group.map(str::to_string),
    };

    // separate: each group next to a normal spinner on a CPU of its own.
    let cpu_of = |i: usize| if cpus > 1 { i % cpus } else { 0 };
    let rounds: Vec<Vec<usize>> = if cpus > 1 {
        vec![vec![0, 1]]
    } else {
        vec![vec![0], vec![1]]
    };
    for round in rounds {
        let mut sp = Vec::new();
        for &i in &round {
            sp.push(spinner(cpu_of(i), Some(GROUPS[i].0)));
            sp.push(spinner(cpu_of(i), None));
        }
        let got = shares(&sp, window)?;
        for (k, &i) in round.iter().enumerate() {
            rows.push(row("separate", Some(GROUPS[i]), cpu_of(i), got[2 * k], window));
            rows.push(row("separate", None, cpu_of(i), got[2 * k + 1], window));
        }
    }

    // shared: both groups and a normal spinner on the last CPU.
    let cpu = cpus - 1;
    let got = shares(
        &[
            spinner(cpu, Some(GROUPS[0].0)),
            spinner(cpu, Some(GROUPS[1].0)),
            spinner(cpu, None),
        ],
        window,
    )?;
    rows.push(row("shared", Some(GROUPS[0]), cpu, got[0], window));
    rows.push(row("shared", Some(GROUPS[1]), cpu, got[1], window));
    rows.push(row("shared", None, cpu, got[2], window));
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_measured_groups_fit_the_cap_next_to_the_default_group() {
        let mut all = vec![mq_class::Group {
            id: 0,
            name: "default".into(),
            budget: DEFAULT_BUDGET,
            cpus: None,
        }];
        for (i, (name, budget)) in GROUPS.iter().enumerate() {
            all.push(mq_class::Group {
                id: i as u32 + 1,
                name: name.to_string(),
                budget: *budget,
                cpus: None,
            });
        }
        mq_class::group::check_cap(&all, 4).unwrap();
    }

    #[test]
    fn a_row_names_its_expected_share_or_none_for_normal_work() {
        let r = row("shared", Some(GROUPS[1]), 1, 0.59, Duration::from_secs(2));
        assert_eq!(r.expected_share, Some(0.6));
        assert_eq!((r.period_us, r.runtime_us), (Some(1000), Some(600)));
        let n = row("shared", None, 1, 0.2, Duration::from_secs(2));
        assert_eq!((n.group.as_str(), n.expected_share), ("normal", None));
        assert_eq!(n.window_ms, 2000);
    }

    /// Real threads on the host's own scheduler, no class: the shares of two normal
    /// spinners on one CPU add up to at most that CPU.
    #[test]
    fn two_normal_spinners_on_one_cpu_share_it() {
        let sp = vec![Spinner { cpu: 0, group: None }, Spinner { cpu: 0, group: None }];
        let got = shares(&sp, Duration::from_millis(100)).unwrap();
        let total: f64 = got.iter().sum();
        assert!(got.iter().all(|&s| s > 0.0), "{got:?}");
        assert!(total < 1.05, "{got:?}");
    }
}
