// SPDX-License-Identifier: GPL-2.0-only
//! What the benchmark binaries that can load the scheduler themselves (`mq-bench-modes`,
//! `mq-bench-pony`) do around their measurement: check the options they share, start `scx_microquanta` for
//! `--with-scheduler` at the accelerator's bandwidth ([`crate::accel`]), and at the end stop
//! it (a scheduler that exited badly fails the run), print the table on stderr and write the
//! JSON report to a file, or to stdout on its tagged line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use mq_report::modes::MODES;
use mq_report::Tagged;

use crate::scheduler_process::SchedulerProcess;

/// Checks `--modes`: each one of Snap's engine modes ([`MODES`]).
pub fn check_modes(modes: &[String]) -> Result<()> {
    for mode in modes {
        if !MODES.contains(&mode.as_str()) {
            bail!("unknown mode {mode:?}: expected some of {}", MODES.join(","));
        }
    }
    Ok(())
}

/// The measuring window from `--seconds` (or the caller's default): more than 0 s and at
/// most an hour, so that a typo does not hold the machine (or the VM) for days.
pub fn window(seconds: f64) -> Result<Duration> {
    if !(seconds > 0.0 && seconds <= 3600.0) {
        bail!("--seconds {seconds}: expected more than 0 and at most 3600");
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Where `--json PATH` or `--out DIR` sends the report: PATH, `DIR/summary.json` (DIR made
/// if missing), or stdout (`None`); both at once is an error.
pub fn json_destination(json: Option<PathBuf>, out: Option<PathBuf>) -> Result<Option<PathBuf>> {
    match (json, out) {
        (Some(_), Some(_)) => bail!("--json and --out: give one"),
        (Some(p), None) => Ok(Some(p)),
        (None, Some(dir)) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            Ok(Some(dir.join("summary.json")))
        }
        (None, None) => Ok(None),
    }
}

/// Starts the scheduler when `bin` is given. Keep the value alive for the whole run:
/// dropping it detaches the scheduler.
pub fn start_scheduler(bin: Option<&Path>) -> Result<Option<SchedulerProcess>> {
    bin.map(|bin| {
        let (period, runtime) = crate::accel::latency_bandwidth_us();
        crate::sched_bench::start_scheduler(bin, period, runtime).map(|(sched, _)| sched)
    })
    .transpose()
}

/// Stops the scheduler (if this run started one), prints `table` on stderr, and writes
/// `report` as one line of JSON to `json_path`, or to stdout behind its tag
/// ([`mq_report::tagged_line`]).
pub fn finish(
    scheduler: Option<SchedulerProcess>,
    table: &str,
    report: &impl Tagged,
    json_path: Option<&Path>,
) -> Result<()> {
    if let Some(sched) = scheduler {
        let status = sched.stop()?;
        if !status.success() {
            bail!("scx_microquanta exited with {status}");
        }
    }
    eprint!("{table}");
    match json_path {
        Some(path) => {
            let json = serde_json::to_string(report)?;
            std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
        }
        None => {
            println!("{}", mq_report::tagged_line(report)?);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_outside_the_benchmarks_range_are_refused() {
        assert!(check_modes(&["spreading".into(), "dedicated".into()]).is_ok());
        let err = check_modes(&["spreading".into(), "lazy".into()]).unwrap_err();
        assert!(err.to_string().contains("unknown mode \"lazy\""), "{err}");
        assert_eq!(window(1.5).unwrap(), Duration::from_millis(1500));
        for bad in [0.0, -1.0, 3601.0, f64::NAN] {
            assert!(window(bad).is_err(), "{bad}");
        }
    }
}
