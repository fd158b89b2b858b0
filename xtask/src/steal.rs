//! The host's steal time around a VM run: the share of this machine's CPU time that the
//! hypervisor below it gave to other guests while ours wanted it (`/proc/stat`).
//!
//! Under TCG every guest timer and vCPU is a host thread, so time the host loses this way
//! shows in the guest as emulator stalls and slow rounds. A run reports the share so that a
//! reader can tell a noisy machine from a change in what was measured; nothing is corrected
//! by it.

use procfs::{CpuTime, CurrentSI, KernelStats};

/// All CPUs' time in `/proc/stat`, summed: (steal, everything), in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuTicks {
    steal: u64,
    total: u64,
}

impl CpuTicks {
    /// Now, or `None` where `/proc/stat` cannot be read.
    pub fn now() -> Option<Self> {
        KernelStats::current().ok().map(|s| Self::from_cpu_time(&s.total))
    }

    fn from_cpu_time(t: &CpuTime) -> Self {
        let opt = |v: Option<u64>| v.unwrap_or(0);
        // guest and guest_nice are already inside user and nice: not added again.
        let total =
            t.user + t.nice + t.system + t.idle + opt(t.iowait) + opt(t.irq) + opt(t.softirq) + opt(t.steal);
        Self {
            steal: opt(t.steal),
            total,
        }
    }

    /// Steal as a share (0-1) of all CPU time from `self` to `later`; `None` if no time
    /// passed (or the counters went back).
    pub fn steal_share(&self, later: &CpuTicks) -> Option<f64> {
        let total = later.total.checked_sub(self.total).filter(|&t| t > 0)?;
        let steal = later.steal.checked_sub(self.steal)?;
        Some(steal as f64 / total as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticks(steal: u64, total: u64) -> CpuTicks {
        CpuTicks { steal, total }
    }

    #[test]
    fn the_share_is_steal_over_all_time_between_two_samples() {
        assert_eq!(ticks(100, 10_000).steal_share(&ticks(500, 12_000)), Some(0.2));
        assert_eq!(ticks(100, 10_000).steal_share(&ticks(100, 12_000)), Some(0.0));
    }

    #[test]
    fn no_time_or_counters_that_went_back_give_no_share() {
        assert_eq!(ticks(100, 10_000).steal_share(&ticks(100, 10_000)), None);
        assert_eq!(ticks(100, 10_000).steal_share(&ticks(50, 12_000)), None);
        assert_eq!(ticks(100, 10_000).steal_share(&ticks(200, 9_000)), None);
    }

    #[test]
    fn this_machine_can_be_sampled() {
        let a = CpuTicks::now().expect("/proc/stat");
        assert!(a.total > 0 && a.steal <= a.total);
    }
}
