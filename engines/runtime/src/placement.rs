//! Where an engine thread runs: pinning to a core, and joining the MicroQuanta class.
//!
//! Joining the class goes through `mq_class`, the scheduler's documented interface (a pinned
//! BPF map of thread ids), not through the GPL scheduler crate.

use mq_class::{sysfs, Class};
use rustix::thread::{sched_setaffinity, CpuSet};

/// Restricts the calling thread to `cores` (an error if none of them is online).
pub(crate) fn restrict_to(cores: &[usize]) -> rustix::io::Result<()> {
    let mut set = CpuSet::new();
    for &core in cores {
        if core >= CpuSet::MAX_CPU {
            return Err(rustix::io::Errno::INVAL);
        }
        set.set(core);
    }
    sched_setaffinity(None, &set)
}

/// Puts thread `tid` in the MicroQuanta class if the scheduler is loaded. Returns whether it
/// did, and says so in the log either way: a spreading engine outside the class is a normal
/// thread and loses the latency guarantee, which the operator must know.
pub(crate) fn join_microquanta(tid: u32) -> bool {
    if !sysfs::microquanta_loaded() {
        log::info!("thread {tid}: MicroQuanta is not loaded, running as a normal thread");
        return false;
    }
    match Class::open().and_then(|class| class.add(tid)) {
        Ok(()) => {
            log::info!("thread {tid}: joined the MicroQuanta class");
            true
        }
        Err(e) => {
            log::warn!("thread {tid}: cannot join the MicroQuanta class: {e}; running as a normal thread");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinning_to_a_missing_core_is_an_error() {
        std::thread::spawn(|| {
            assert!(restrict_to(&[CpuSet::MAX_CPU]).is_err());
            assert!(restrict_to(&[CpuSet::MAX_CPU - 1]).is_err(), "no such CPU online");
            assert!(restrict_to(&[0]).is_ok());
        })
        .join()
        .unwrap();
    }
}
