// SPDX-License-Identifier: GPL-2.0-only
//! Experiments on the MicroQuanta scheduler, the Snap engine modes and Pony
//! Express: the building blocks each experiment shares and the binaries that
//! run them (`mq-wakeup`, `mq-demo`, `mq-bench-sched`, `mq-bench-modes`,
//! `mq-bench-pony`, `mq-bench-upgrade`, `mq-bench-interference`, `mq-trace-wakeups`).
//!
//! Everything here drives real processes and threads: the real scheduler
//! binary, `stress-ng` as interference, real sleeping threads measured with
//! the kernel's clock. Timing in a TCG VM only means something as a ratio
//! between runs of the same boot, so results carry the context to say so.

pub mod accel;
pub mod attempts;
pub mod bench_run;
pub mod children;
pub mod efficiency_bench;
pub mod hogs;
pub mod idle_bench;
pub mod interference_bench;
pub mod latency;
pub mod locate;
pub mod modes_bench;
pub mod pipeline_bench;
pub mod pony_bench;
pub mod rounds;
pub mod sched_bench;
pub mod scheduler_process;
pub mod settle;
pub mod stall_probe;
pub mod thread_counters;
pub mod upgrade_bench;
pub mod wakeup;
pub mod wakeup_trace;
