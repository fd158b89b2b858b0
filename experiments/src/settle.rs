// SPDX-License-Identifier: GPL-2.0-only
//! What a measurement waits for after loading a scheduler, before it measures: the steady
//! state a scheduler that stays loaded for months runs in.
//!
//! Two things happen once per load. sched_ext moves every task over to the new scheduler
//! ([`SETTLE`]). And the scheduler's class path runs for the first time: under TCG the
//! emulator translates each block of guest code the first time it runs, and a freshly
//! loaded scheduler's BPF is new code at new addresses. The first class wakeup after each
//! load took 1.5-3.6 ms in four rounds of the demo, whose p99s were 0.25-0.66 ms, and a
//! second class thread in the same load did not pay it (docs/MICROQUANTA.md, "The first
//! class wakeup after a load"). The demo loads the scheduler once per round, so without a
//! warm-up each round's MicroQuanta tail held one wakeup of that translation.
//!
//! [`settle`] therefore waits [`SETTLE`], then runs a MicroQuanta thread for
//! [`WARM_UP_WAKEUPS`] wakeups of the demo's workload, the same for every policy measured
//! afterwards. The warm-up is not in any measurement's figures; its wakeups are returned
//! and printed, and the rounds report them apart ([`mq_report::rounds::Warmup`]).

use std::time::Duration;

use anyhow::{Context, Result};

use crate::wakeup::{measure_wakeups, summarise_wakeups, ThreadClass, Wakeup, WakeupConfig};

/// After attaching, sched_ext moves every task into the new scheduler; give that a moment
/// so measurements see the steady state, not the switch.
pub const SETTLE: Duration = Duration::from_millis(500);

/// Wakeups of the class warm-up after each load: the slow first one and the next few (the
/// second was 0.7-1 ms in three of those four rounds), with room to spare; 20 ms at the
/// warm-up's period.
pub const WARM_UP_WAKEUPS: u64 = 20;

/// The warm-up's period and work: the demo's workload (a 1 ms period, 300 µs of CPU per
/// wakeup). It runs the class wakeup and the budget timer wherever it runs; the preemption
/// of a normal task only where normal work runs beside it (the demo's rounds and the latency
/// comparison start their hogs before loading the scheduler; the mqland comparison after).
const WARM_UP_PERIOD: Duration = Duration::from_micros(1000);
const WARM_UP_WORK: Duration = Duration::from_micros(300);

/// Waits [`SETTLE`], then runs the class warm-up of `warm_up_wakeups` wakeups (normally
/// [`WARM_UP_WAKEUPS`]; 0 skips it, to measure as if there were none) and prints one line
/// about it (prefixed with `log`). The scheduler must be loaded and offer the MicroQuanta
/// class. Returns the warm-up's wakeups.
pub fn settle(log: &str, warm_up_wakeups: u64) -> Result<Vec<Wakeup>> {
    std::thread::sleep(SETTLE);
    if warm_up_wakeups == 0 {
        eprintln!("{log}: {}", describe(&[]));
        return Ok(Vec::new());
    }
    let wakeups = measure_wakeups(WakeupConfig {
        period: WARM_UP_PERIOD,
        samples: warm_up_wakeups,
        class: ThreadClass::MicroQuanta,
        work: WARM_UP_WORK,
        cpu: None,
    })
    .context("warming up the scheduler's class path")?;
    eprintln!("{log}: {}", describe(&wakeups));
    Ok(wakeups)
}

/// `warm-up: 20 class wakeups, first 2372 µs, then p50 140 µs, max 1016 µs (not measured)`.
fn describe(wakeups: &[Wakeup]) -> String {
    let Some((first, rest)) = wakeups.split_first() else {
        return "warm-up: none".into();
    };
    let mut line = format!(
        "warm-up: {} class wakeups, first {:.0} µs",
        wakeups.len(),
        first.late_ns as f64 / 1000.0
    );
    if !rest.is_empty() {
        let s = summarise_wakeups(rest);
        line.push_str(&format!(", then p50 {:.0} µs, max {:.0} µs", s.p50, s.max));
    }
    line.push_str(" (not measured)");
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wakeup(late_us: u64) -> Wakeup {
        Wakeup {
            deadline_ns: 0,
            late_ns: late_us * 1000,
        }
    }

    #[test]
    fn the_line_gives_the_first_wakeup_apart_from_the_rest() {
        let line = describe(&[wakeup(2372), wakeup(140), wakeup(1016)]);
        assert!(
            line.starts_with("warm-up: 3 class wakeups, first 2372 µs, then p50 140 µs"),
            "{line}"
        );
        assert!(line.contains("max 1016 µs"), "{line}");
        assert!(line.ends_with("(not measured)"), "{line}");
        assert_eq!(
            describe(&[wakeup(5)]),
            "warm-up: 1 class wakeups, first 5 µs (not measured)"
        );
        assert_eq!(describe(&[]), "warm-up: none");
    }
}
