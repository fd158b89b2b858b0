// SPDX-License-Identifier: GPL-2.0-only
//! What each BPF callback costs: the kernel's own count of calls and run time per program
//! (`bpf_prog_info`'s `run_cnt` and `run_time_ns`), read like the other statistics and
//! reported per interval as calls and mean µs per call.
//!
//! The kernel counts only while someone holds its BPF run-time statistics on
//! (`bpf_enable_stats(BPF_STATS_RUN_TIME)`, a switch for every BPF program on the machine that
//! costs two clock reads per call), so `--callback-run-time` asks for it and [`RunTimeStats`]
//! holds it for as long as the scheduler runs. Without it the list is empty.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use anyhow::{bail, Result};
use libbpf_rs::libbpf_sys::{bpf_enable_stats, bpf_prog_get_info_by_fd, bpf_prog_info, BPF_STATS_RUN_TIME};
use scx_stats_derive::Stats;
use serde::{Deserialize, Serialize};

/// The kernel's BPF run-time statistics, on while this lives.
#[derive(Debug)]
pub struct RunTimeStats {
    /// The kernel counts while any such descriptor is open.
    _on: OwnedFd,
}

impl RunTimeStats {
    /// Turns the statistics on (root only).
    pub fn enable() -> Result<Self> {
        // SAFETY: a plain syscall wrapper; on success it returns a new descriptor we own.
        let fd = unsafe { bpf_enable_stats(BPF_STATS_RUN_TIME) };
        if fd < 0 {
            bail!(
                "turning on the kernel's BPF run-time statistics: {}",
                std::io::Error::from_raw_os_error(-fd)
            );
        }
        // SAFETY: `fd` is a fresh descriptor owned by nobody else.
        Ok(Self {
            _on: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }
}

/// One program's counts since it was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgRunTime {
    pub callback: String,
    pub calls: u64,
    pub run_time_ns: u64,
}

/// The scheduler's programs, by name and a descriptor of their own.
#[derive(Debug, Default)]
pub struct Progs(Vec<(String, OwnedFd)>);

impl Progs {
    /// The programs to read, each by its name in the BPF source and a descriptor of it.
    pub fn new(progs: Vec<(String, OwnedFd)>) -> Self {
        Self(progs)
    }

    /// Each program's counts now; one the kernel will not describe is left out.
    pub fn read(&self) -> Vec<ProgRunTime> {
        self.0
            .iter()
            .filter_map(|(name, fd)| {
                prog_info(fd.as_fd()).map(|info| ProgRunTime {
                    callback: name.clone(),
                    calls: info.run_cnt,
                    run_time_ns: info.run_time_ns,
                })
            })
            .collect()
    }
}

/// What the kernel tells of the BPF program behind `fd` (its counts, its verified
/// instructions, ...); None if it will not.
pub fn prog_info(fd: BorrowedFd<'_>) -> Option<bpf_prog_info> {
    let mut info = bpf_prog_info::default();
    let mut len = std::mem::size_of::<bpf_prog_info>() as u32;
    // SAFETY: `info` is a plain C struct of `len` bytes that the kernel fills in, and the
    // descriptor is borrowed for the call.
    let ret = unsafe { bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    (ret == 0).then_some(info)
}

/// One callback over one interval.
#[derive(Debug, Clone, Serialize, Deserialize, Stats)]
#[stat(desc = "one BPF callback over the interval (with --callback-run-time)")]
pub struct CallbackReport {
    #[stat(desc = "the program's name in the BPF source")]
    pub callback: String,
    #[stat(desc = "calls in the interval")]
    pub calls: u64,
    #[stat(desc = "mean run time per call in µs (null: not called)")]
    #[serde(deserialize_with = "super::nan_from_null")]
    pub mean_us: f64,
}

/// Calls and mean run time of each callback between two readings, in `later`'s order; a
/// callback that was not called in the interval is left out.
pub fn between(earlier: &[ProgRunTime], later: &[ProgRunTime]) -> Vec<CallbackReport> {
    later
        .iter()
        .filter_map(|l| {
            let e = earlier.iter().find(|e| e.callback == l.callback);
            let calls = l.calls.wrapping_sub(e.map_or(0, |e| e.calls));
            let ns = l.run_time_ns.wrapping_sub(e.map_or(0, |e| e.run_time_ns));
            (calls > 0).then(|| CallbackReport {
                callback: l.callback.clone(),
                calls,
                mean_us: ns as f64 / calls as f64 / 1000.0,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prog(callback: &str, calls: u64, run_time_ns: u64) -> ProgRunTime {
        ProgRunTime {
            callback: callback.into(),
            calls,
            run_time_ns,
        }
    }

    #[test]
    fn the_interval_mean_is_its_run_time_over_its_calls() {
        let a = [prog("mq_enqueue", 100, 1_000_000), prog("mq_dispatch", 5, 50_000)];
        let b = [prog("mq_enqueue", 300, 3_000_000), prog("mq_dispatch", 5, 50_000)];
        let r = between(&a, &b);
        assert_eq!(
            r.len(),
            1,
            "a callback not called in the interval is left out: {r:?}"
        );
        assert_eq!((r[0].callback.as_str(), r[0].calls), ("mq_enqueue", 200));
        assert!((r[0].mean_us - 10.0).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn a_program_first_seen_counts_from_zero() {
        let r = between(&[], &[prog("mq_tick", 4, 8_000)]);
        assert_eq!(r[0].calls, 4);
        assert!((r[0].mean_us - 2.0).abs() < 1e-9);
    }
}
