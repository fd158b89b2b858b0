// SPDX-License-Identifier: GPL-2.0-only
//! The MicroQuanta bandwidth of one CPU, kept in userspace: the same credit and hysteresis
//! as `bpf/budget.bpf.h` in `scx_microquanta`.
//!
//! - credit grows at runtime/period of wall time, falls by the class's run time on this CPU,
//!   and stays within ±2 periods;
//! - a CPU that refused class work (throttled) lets it back in once the credit is worth a
//!   whole runtime again, not the moment it turns positive, so the class does not run in
//!   slivers.
//!
//! What differs is *when* the numbers are known: the BPF scheduler charges at every context
//! switch on the rq clock, this one when the dispatcher reports a run (the task's next
//! enqueue carries its last start and stop times), so a charge can arrive one run late.

/// Runtime and period, in ns, validated by the loader (runtime ≤ period, both > 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bandwidth {
    pub period_ns: u64,
    pub runtime_ns: u64,
}

impl Bandwidth {
    fn limit(&self) -> i64 {
        2 * self.period_ns as i64
    }
}

/// One CPU's credit.
#[derive(Debug, Clone, Default)]
pub struct CpuBudget {
    credit_ns: i64,
    credit_at_ns: u64,
    throttled: bool,
    /// Class run time charged here, for the class share in the statistics.
    pub class_run_ns: u64,
    /// Times this CPU refused class work because its budget was spent.
    pub throttles: u64,
}

impl CpuBudget {
    /// A CPU starts with a full runtime of credit at `now`.
    pub fn new(bw: &Bandwidth, now: u64) -> Self {
        Self {
            credit_ns: bw.runtime_ns as i64,
            credit_at_ns: now,
            ..Self::default()
        }
    }

    fn refill(&mut self, bw: &Bandwidth, now: u64) {
        if now <= self.credit_at_ns {
            return;
        }
        // From -2 to +2 periods takes 4 * period^2 / runtime of wall time; beyond that the
        // clamp decides, and bounding the step keeps the product far from overflow.
        let full_ns = (4 * bw.period_ns / bw.runtime_ns + 1) * bw.period_ns;
        let delta = (now - self.credit_at_ns).min(full_ns);
        let gained = (delta as u128 * bw.runtime_ns as u128 / bw.period_ns as u128) as i64;
        self.credit_ns = (self.credit_ns + gained).min(bw.limit());
        self.credit_at_ns = now;
    }

    /// Charges `run_ns` of class time that ended at or before `now`.
    pub fn charge(&mut self, bw: &Bandwidth, now: u64, run_ns: u64) {
        self.refill(bw, now);
        self.class_run_ns += run_ns;
        let run = run_ns.min(i64::MAX as u64) as i64;
        self.credit_ns = self.credit_ns.saturating_sub(run).max(-bw.limit());
    }

    /// Whether class work may start here at `now` while normal work waits; a refusal
    /// throttles the CPU until the credit is worth a whole runtime.
    pub fn allows_class(&mut self, bw: &Bandwidth, now: u64) -> bool {
        self.refill(bw, now);
        let allowed = if self.throttled {
            self.credit_ns >= bw.runtime_ns as i64
        } else {
            self.credit_ns > 0
        };
        if allowed {
            self.throttled = false;
        } else if !self.throttled {
            self.throttled = true;
            self.throttles += 1;
        }
        allowed
    }

    /// Credit left at `now` (after `allows_class` said yes, positive): how long class work
    /// may run here before normal work is owed the CPU.
    pub fn credit_ns(&mut self, bw: &Bandwidth, now: u64) -> i64 {
        self.refill(bw, now);
        self.credit_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BW: Bandwidth = Bandwidth {
        period_ns: 1_000_000,
        runtime_ns: 200_000,
    };

    #[test]
    fn credit_grows_at_runtime_over_period_and_is_clamped() {
        let mut b = CpuBudget::new(&BW, 0);
        assert_eq!(b.credit_ns(&BW, 0), 200_000);
        assert_eq!(b.credit_ns(&BW, 1_000_000), 400_000);
        // Ten seconds idle: clamped at two periods, not ten seconds' worth.
        assert_eq!(b.credit_ns(&BW, 10_000_000_000), 2_000_000);
        b.charge(&BW, 10_000_000_000, 100_000_000);
        assert_eq!(b.credit_ns(&BW, 10_000_000_000), -2_000_000);
    }

    #[test]
    fn a_throttled_cpu_waits_for_a_whole_runtime_of_credit() {
        let mut b = CpuBudget::new(&BW, 0);
        b.charge(&BW, 300_000, 300_000);
        // credit = 200 + 60 - 300 = -40 µs: refused and throttled.
        assert!(!b.allows_class(&BW, 300_000));
        assert_eq!(b.throttles, 1);
        // Positive again after 200 µs more, but not a whole runtime yet.
        assert!(!b.allows_class(&BW, 600_000));
        assert_eq!(b.throttles, 1, "one throttle, however often it is asked");
        // -40 + 0.2 * t >= 200 at t = 1200 µs after 300 µs.
        assert!(!b.allows_class(&BW, 1_499_000));
        assert!(b.allows_class(&BW, 1_500_000));
        // Unthrottled: any positive credit will do from now on.
        b.charge(&BW, 1_500_000, 190_000);
        assert!(b.allows_class(&BW, 1_500_000));
    }

    #[test]
    fn class_time_is_bounded_by_the_bandwidth_over_a_long_run() {
        // Class work that always wants the CPU, granted whenever the budget allows, one
        // 50 µs step at a time: its share converges to runtime/period.
        let mut b = CpuBudget::new(&BW, 0);
        let step = 50_000;
        let mut now = 0;
        let mut class = 0;
        while now < 1_000_000_000 {
            if b.allows_class(&BW, now) {
                let run = (b.credit_ns(&BW, now) as u64).min(step);
                now += run;
                b.charge(&BW, now, run);
                class += run;
            } else {
                now += step;
            }
        }
        let share = class as f64 / now as f64;
        assert!((share - 0.2).abs() < 0.005, "class share {share}");
    }
}
