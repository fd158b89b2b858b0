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

/// Puts thread `tid` in the MicroQuanta class if the scheduler is loaded: in the class group
/// called `group`, or in the default group for `None`. Returns whether it did, and says so in
/// the log either way: a spreading engine outside the class is a normal thread and loses the
/// latency guarantee, which the operator must know. A thread whose named class group is
/// missing stays a normal thread rather than joining the default group, whose budget is
/// not the one its group was given.
pub(crate) fn join_microquanta(tid: u32, group: Option<&str>) -> bool {
    if !sysfs::microquanta_loaded() {
        log::info!("thread {tid}: MicroQuanta is not loaded, running as a normal thread");
        return false;
    }
    let class_group = group.unwrap_or(mq_class::group::DEFAULT_GROUP_NAME);
    let joined = Class::open().and_then(|class| match group {
        Some(name) => class.add_to_group(tid, name),
        None => class.add(tid),
    });
    match joined {
        Ok(()) => {
            log::info!("thread {tid}: joined the MicroQuanta class (class group {class_group})");
            true
        }
        Err(e) => {
            log::warn!(
                "thread {tid}: cannot join the MicroQuanta class (class group {class_group}): {e}; \
                 running as a normal thread"
            );
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
