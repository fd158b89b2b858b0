// SPDX-License-Identifier: GPL-2.0-only
//! What the benchmark binaries that can load the scheduler themselves (`mq-bench-modes`,
//! `mq-bench-pony`) do around their measurement: start `scx_microquanta` for
//! `--with-scheduler` at the accelerator's bandwidth ([`crate::accel`]), and at the end stop
//! it (a scheduler that exited badly fails the run), print the table on stderr and write the
//! JSON report to a file or stdout.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::scheduler_process::SchedulerProcess;

/// Starts the scheduler when `bin` is given. Keep the value alive for the whole run:
/// dropping it detaches the scheduler.
pub fn start_scheduler(bin: Option<&Path>) -> Result<Option<SchedulerProcess>> {
    bin.map(|bin| {
        let (period, runtime) = crate::accel::latency_bandwidth_us();
        crate::sched_bench::start_scheduler(bin, period, runtime)
    })
    .transpose()
}

/// Stops the scheduler (if this run started one), prints `table` on stderr, and writes
/// `report` as one line of JSON to `json_path`, or to stdout after `stdout_tag`.
pub fn finish(
    scheduler: Option<SchedulerProcess>,
    table: &str,
    report: &impl Serialize,
    json_path: Option<&Path>,
    stdout_tag: &str,
) -> Result<()> {
    if let Some(sched) = scheduler {
        let status = sched.stop()?;
        if !status.success() {
            bail!("scx_microquanta exited with {status}");
        }
    }
    eprint!("{table}");
    let json = serde_json::to_string(report)?;
    match json_path {
        Some(path) => {
            std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
        }
        None => {
            println!("{stdout_tag}{json}");
            Ok(())
        }
    }
}
