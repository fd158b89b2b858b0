//! Where an engine thread runs: pinning to a core, and joining the MicroQuanta class.
//!
//! Joining the class goes through the scheduler's documented interface, not its code: the
//! `scx_microquanta` loader pins a BPF hash map at [`CLASS_MAP_PIN`] whose keys are thread ids
//! (`u32`) and values the time they joined (`u64` ns, CLOCK_MONOTONIC). Writing a key makes the
//! BPF scheduler treat the thread as a MicroQuanta thread from its next scheduling event; the
//! BPF program drops it when the thread exits. Using the map directly keeps this crate
//! independent of the GPL scheduler crate (libbpf-rs is LGPL-2.1 OR BSD-2-Clause).

use std::fs;

use libbpf_rs::{MapCore, MapFlags, MapHandle};
use rustix::thread::{sched_setaffinity, CpuSet};

/// The class map pinned by `scx_microquanta`.
pub const CLASS_MAP_PIN: &str = "/sys/fs/bpf/scx_microquanta/mq_tasks";

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

/// Whether the loaded sched_ext scheduler is MicroQuanta.
pub fn microquanta_loaded() -> bool {
    let read = |f: &str| fs::read_to_string(format!("/sys/kernel/sched_ext/{f}")).unwrap_or_default();
    read("state").trim() == "enabled" && read("root/ops").trim().starts_with("microquanta")
}

/// Puts thread `tid` in the MicroQuanta class if the scheduler is loaded. Returns whether it
/// did, and says so in the log either way: a spreading engine outside the class is a normal
/// thread and loses the latency guarantee, which the operator must know.
pub(crate) fn join_microquanta(tid: u32) -> bool {
    if !microquanta_loaded() {
        log::info!("thread {tid}: MicroQuanta is not loaded, running as a normal thread");
        return false;
    }
    let result = MapHandle::from_pinned_path(CLASS_MAP_PIN).and_then(|map| {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let ns = now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64;
        map.update(&tid.to_ne_bytes(), &ns.to_ne_bytes(), MapFlags::ANY)
    });
    match result {
        Ok(()) => {
            log::info!("thread {tid}: joined the MicroQuanta class");
            true
        }
        Err(e) => {
            log::warn!("thread {tid}: cannot join the MicroQuanta class ({CLASS_MAP_PIN}): {e}; running as a normal thread");
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
