//! Thread CPU time and last CPU as the kernel reports them, for the runtime's status report (the report's
//! types are `snap_ipc::control::status`, shared with clients).

/// CPU time of a thread of this process as the kernel counts it, 0 if it is gone.
pub(crate) fn thread_cpu_time_ns(tid: i32) -> u64 {
    procfs::process::Process::myself()
        .and_then(|p| p.task_from_tid(tid))
        .and_then(|t| t.schedstat())
        .map(|s| s.sum_exec_runtime)
        .unwrap_or(0)
}

/// The CPU a thread of this process last ran on, `None` if it is gone.
pub(crate) fn thread_last_cpu(tid: i32) -> Option<usize> {
    procfs::process::Process::myself()
        .and_then(|p| p.task_from_tid(tid))
        .and_then(|t| t.stat())
        .ok()
        .and_then(|s| s.processor)
        .and_then(|cpu| usize::try_from(cpu).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_thread_has_cpu_time() {
        let tid = rustix::thread::gettid().as_raw_nonzero().get();
        let mut x = 0u64;
        for i in 0..1_000_000u64 {
            x = x.wrapping_add(std::hint::black_box(i));
        }
        assert!(x > 0);
        assert!(thread_cpu_time_ns(tid) > 0);
        let cpus = std::thread::available_parallelism().unwrap().get();
        assert!(thread_last_cpu(tid).is_some_and(|c| c < cpus));
    }
}
