// SPDX-License-Identifier: GPL-2.0-only
//! Bounds on durations of the scheduler's own paths, which only a clock that counts what the
//! guest executes can hold it to: `cargo xtask test` runs this file in a 1-vCPU boot whose
//! clock counts instructions under TCG (qemu's icount, 1 ns each), real time under KVM or
//! natively. Under TCG on the host's clock the emulator's stalls are in every duration
//! (overrun p99 of hundreds of µs at a 40 µs period), and these tests refuse to run there.
//!
//! What is held is two of issue 15's targets where the host's clock cannot show them:
//! - enforcement at 40 and 100 µs periods: class work stops within one period of its budget
//!   running out (overrun p99 ≤ one period, and throttle-to-preempt too), and the class gets
//!   runtime/period within 2 points, the bound the issue sets where time is the guest's own;
//!   the instruction clock reads overrun p99 9.2 µs and shares within 0.1 points
//!   (docs/MICROQUANTA.md, "Enforcement by its own length");
//! - the demo's thread (30% of a CPU next to 4 hogs) wakes in the class with a p99 at most
//!   1.5x SCHED_FIFO's; the instruction clock reads 7.04-7.05 µs against 5.37-5.94
//!   (1.19-1.31x).
//!
//! Under that clock the margins are about 30 µs of instructions (the overrun at 40 µs) and 1 µs
//! (the latency), and the class's figures read the same in every boot (SCHED_FIFO's p99 moves
//! by 0.6 µs), so a bound that fails is a longer path of ours.

use std::time::Duration;

use mq_class::{sysfs, SchedExtState};
use mq_experiments::accel;
use mq_experiments::hogs::Hogs;
use mq_experiments::sched_bench::{self, conformance};
use mq_experiments::scheduler_process::exclusive_sched_ext_host as sched_ext_host;
use mq_experiments::wakeup::{measure, ThreadClass, WakeupConfig};

/// The kernel patch's default and a quarter share: the sub-tick periods the host's clock
/// cannot time under TCG.
const PAIRS: [(u64, u64); 2] = [(40, 20), (100, 25)];
/// The conformance bound where time is the guest's own (KVM, hardware).
const SHARE_POINTS: f64 = 2.0;

/// The bound on MicroQuanta's p99 wakeup latency over SCHED_FIFO's.
const P99_OVER_FIFO: f64 = 1.5;

fn require_the_guests_own_time() {
    assert!(
        accel::durations_are_the_guests(),
        "under TCG these bounds need the instruction clock (`cargo xtask vm --clock \
         instructions`; `cargo xtask test` boots so)"
    );
}

#[test]
#[ignore = "needs a sched_ext kernel and root: run by `cargo xtask test` in a VM"]
fn the_demos_thread_wakes_in_the_class_within_1_5_times_sched_fifos_p99() {
    require_the_guests_own_time();
    let _serial = sched_ext_host();
    let hogs = Hogs::start(4 * sched_bench::cpus(), None).unwrap();
    let wakeups = |class| WakeupConfig {
        period: Duration::from_millis(1),
        samples: 2000,
        class,
        work: Duration::from_micros(300),
        cpu: None,
    };
    // The kernel's RT path with no BPF scheduler loaded: the floor the issue compares with.
    let fifo = measure(wakeups(ThreadClass::Fifo { priority: 50 })).unwrap();
    let (period_us, runtime_us) = accel::latency_bandwidth_us();
    let scheduler = sched_bench::scheduler_binary().unwrap();
    let (sched, _warm_up) = sched_bench::start_scheduler(&scheduler, period_us, runtime_us).unwrap();
    let mq = measure(wakeups(ThreadClass::MicroQuanta)).unwrap();
    sched.stop().unwrap();
    drop(hogs);
    let ratio = mq.p99 / fifo.p99;
    println!(
        "p50/p90/p99 µs: MicroQuanta {:.2}/{:.2}/{:.2}, SCHED_FIFO {:.2}/{:.2}/{:.2}; p99 ratio {ratio:.2}",
        mq.p50, mq.p90, mq.p99, fifo.p50, fifo.p90, fifo.p99
    );
    assert_eq!((mq.samples, fifo.samples), (2000, 2000), "every wakeup recorded");
    assert!(
        ratio <= P99_OVER_FIFO,
        "MicroQuanta p99 {:.2} µs is {ratio:.2}x SCHED_FIFO's {:.2} µs (bound {P99_OVER_FIFO}x)",
        mq.p99,
        fifo.p99
    );
}

#[test]
#[ignore = "needs a sched_ext kernel and root: run by `cargo xtask test` in a VM"]
fn class_work_stops_within_a_period_of_its_budget_at_40_and_100_us() {
    require_the_guests_own_time();
    let _serial = sched_ext_host();
    let mut cfg = conformance::ConformanceConfig::new(Duration::from_secs(2));
    cfg.pairs = PAIRS.to_vec();
    let scheduler = sched_bench::scheduler_binary().unwrap();
    let entries = conformance::run(&cfg, &scheduler).unwrap();
    assert_eq!(entries.len(), PAIRS.len());
    for e in &entries {
        let pair = format!("{}/{} µs", e.period_us, e.runtime_us);
        let enf = e
            .enforcement
            .as_ref()
            .unwrap_or_else(|| panic!("{pair}: the scheduler's histograms were not read"));
        let us = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
        println!(
            "{pair}: class share {:.3} (expected {:.3}), overrun p50/p99/max {}/{}/{} µs, \
             throttle-to-preempt p50/p99/max {}/{}/{} µs over {} events",
            e.mq_share,
            e.expected_mq_share,
            us(enf.overrun_p50_us),
            us(enf.overrun_p99_us),
            us(enf.overrun_max_us),
            us(enf.yield_p50_us),
            us(enf.yield_p99_us),
            us(enf.yield_max_us),
            enf.yields
        );
        let overrun_p99 = enf
            .overrun_p99_us
            .unwrap_or_else(|| panic!("{pair}: no overrun recorded while normal work waited"));
        let yield_p99 = enf
            .yield_p99_us
            .unwrap_or_else(|| panic!("{pair}: no throttle-to-preempt recorded"));
        // Thousands of throttles in a window at these periods: too few and the p99s
        // describe nothing.
        assert!(
            enf.yields >= 100,
            "{pair}: only {} throttle-to-preempt events",
            enf.yields
        );
        let period = e.period_us as f64;
        assert!(
            overrun_p99 <= period,
            "{pair}: overrun p99 {overrun_p99:.1} µs, more than a period"
        );
        assert!(
            yield_p99 <= period,
            "{pair}: throttle-to-preempt p99 {yield_p99:.1} µs, more than a period"
        );
        assert!(
            e.mq_error_points() <= SHARE_POINTS,
            "{pair}: class share {:.3}, expected {:.3} +- {SHARE_POINTS} points",
            e.mq_share,
            e.expected_mq_share
        );
    }
    assert_eq!(sysfs::state(), SchedExtState::Disabled, "scheduler detached");
}
