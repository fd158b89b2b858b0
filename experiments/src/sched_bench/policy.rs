// SPDX-License-Identifier: GPL-2.0-only
//! The kernel's own real-time classes for the calling thread: SCHED_FIFO and
//! SCHED_DEADLINE, the references MicroQuanta is compared with.
//!
//! Both go through `sched_setattr(2)`, which libc does not wrap, because it is
//! the only call that sets a deadline reservation and it also applies to just
//! the calling thread (pid 0), which is what a per-thread measurement needs.

use std::time::Duration;

use anyhow::{bail, Context, Result};

/// `SCHED_DEADLINE` from `include/uapi/linux/sched.h` (not in every libc).
const SCHED_DEADLINE: u32 = 6;

/// The kernel's lower bound on a deadline period; 100 µs by default, above
/// MicroQuanta's 40 µs default period.
pub const DEADLINE_PERIOD_MIN_SYSCTL: &str = "/proc/sys/kernel/sched_deadline_period_min_us";

/// `struct sched_attr`, first version (`SCHED_ATTR_SIZE_VER0`, 48 bytes): the
/// kernel accepts any size it knows and zero-extends, so the small one works
/// on every kernel with SCHED_DEADLINE.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
}

/// The SCHED_DEADLINE parameters for a reservation of `runtime` every
/// `period`, implicit deadline (deadline = period), in nanoseconds as the
/// kernel wants them. Checks the kernel's invariant runtime <= deadline <=
/// period and its 1024 ns floor (`DL_SCALE`) so a bad config fails with a
/// message rather than a bare EINVAL.
pub fn deadline_params_ns(runtime: Duration, period: Duration) -> Result<(u64, u64, u64)> {
    let runtime_ns = u64::try_from(runtime.as_nanos()).context("runtime too large")?;
    let period_ns = u64::try_from(period.as_nanos()).context("period too large")?;
    if runtime_ns < 1024 {
        bail!("SCHED_DEADLINE runtime must be at least 1024 ns, got {runtime_ns} ns");
    }
    if runtime_ns > period_ns {
        bail!("SCHED_DEADLINE needs runtime <= period, got {runtime_ns} ns > {period_ns} ns");
    }
    Ok((runtime_ns, period_ns, period_ns))
}

/// Puts the calling thread in SCHED_FIFO at `priority` (1-99).
pub fn set_fifo(priority: u32) -> Result<()> {
    if !(1..=99).contains(&priority) {
        bail!("SCHED_FIFO priority must be 1-99, got {priority}");
    }
    set_attr(SchedAttr {
        sched_policy: libc::SCHED_FIFO as u32,
        sched_priority: priority,
        ..SchedAttr::default()
    })
    .with_context(|| format!("setting SCHED_FIFO priority {priority} (needs root)"))
}

/// Gives the calling thread a SCHED_DEADLINE reservation of `runtime` every
/// `period`. The thread must not be pinned to a subset of CPUs (the kernel
/// refuses with EPERM), and a period below the kernel's minimum needs
/// [`DeadlinePeriodMin::lower_to`] first.
pub fn set_deadline(runtime: Duration, period: Duration) -> Result<()> {
    let (runtime_ns, deadline_ns, period_ns) = deadline_params_ns(runtime, period)?;
    set_attr(SchedAttr {
        sched_policy: SCHED_DEADLINE,
        sched_runtime: runtime_ns,
        sched_deadline: deadline_ns,
        sched_period: period_ns,
        ..SchedAttr::default()
    })
    .with_context(|| {
        format!(
            "setting SCHED_DEADLINE runtime {runtime_ns} ns period {period_ns} ns (needs root, an \
             unpinned thread, a period >= {DEADLINE_PERIOD_MIN_SYSCTL} and free admission bandwidth)"
        )
    })
}

fn set_attr(mut attr: SchedAttr) -> Result<()> {
    attr.size = std::mem::size_of::<SchedAttr>() as u32;
    // SAFETY: sched_setattr(pid 0 = this thread, a valid sched_attr whose
    // `size` is its real size, flags 0); the kernel only reads `attr`.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("sched_setattr");
    }
    Ok(())
}

/// Lowers `sched_deadline_period_min_us` for as long as it lives and puts the
/// old value back on drop, so the benchmark leaves the machine as it found it.
#[derive(Debug)]
pub struct DeadlinePeriodMin {
    restore_us: Option<u64>,
}

impl DeadlinePeriodMin {
    /// Makes periods down to `period_us` admissible; a no-op when they already are.
    pub fn lower_to(period_us: u64) -> Result<Self> {
        let current: u64 = std::fs::read_to_string(DEADLINE_PERIOD_MIN_SYSCTL)
            .with_context(|| format!("reading {DEADLINE_PERIOD_MIN_SYSCTL}"))?
            .trim()
            .parse()
            .with_context(|| format!("parsing {DEADLINE_PERIOD_MIN_SYSCTL}"))?;
        if current <= period_us {
            return Ok(Self { restore_us: None });
        }
        write_sysctl(period_us)?;
        Ok(Self {
            restore_us: Some(current),
        })
    }

    /// Whether the sysctl had to be changed.
    pub fn lowered(&self) -> bool {
        self.restore_us.is_some()
    }
}

impl Drop for DeadlinePeriodMin {
    fn drop(&mut self) {
        if let Some(us) = self.restore_us {
            if let Err(e) = write_sysctl(us) {
                eprintln!("warning: could not restore {DEADLINE_PERIOD_MIN_SYSCTL} to {us}: {e:#}");
            }
        }
    }
}

fn write_sysctl(us: u64) -> Result<()> {
    std::fs::write(DEADLINE_PERIOD_MIN_SYSCTL, us.to_string())
        .with_context(|| format!("writing {us} to {DEADLINE_PERIOD_MIN_SYSCTL} (needs root)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sched_attr_has_the_kernel_ver0_layout() {
        assert_eq!(std::mem::size_of::<SchedAttr>(), 48);
        assert_eq!(std::mem::offset_of!(SchedAttr, sched_runtime), 24);
        assert_eq!(std::mem::offset_of!(SchedAttr, sched_period), 40);
    }

    #[test]
    fn deadline_params_are_nanoseconds_with_an_implicit_deadline() {
        let p = deadline_params_ns(Duration::from_micros(20), Duration::from_micros(40)).unwrap();
        assert_eq!(p, (20_000, 40_000, 40_000));
    }

    #[test]
    fn impossible_deadline_params_are_refused_with_a_reason() {
        let e = deadline_params_ns(Duration::from_micros(50), Duration::from_micros(40)).unwrap_err();
        assert!(e.to_string().contains("runtime <= period"), "{e}");
        let e = deadline_params_ns(Duration::from_nanos(500), Duration::from_micros(40)).unwrap_err();
        assert!(e.to_string().contains("1024 ns"), "{e}");
    }

    #[test]
    fn out_of_range_fifo_priorities_are_refused_before_the_syscall() {
        assert!(set_fifo(0).is_err());
        assert!(set_fifo(100).is_err());
    }
}
