// SPDX-License-Identifier: GPL-2.0-only
//! The scheduler's own view, read through `scx_microquanta --monitor SECS
//! --stats-json` (a second process, a client of the `scx_stats` server of the
//! running scheduler). We take from it what we cannot measure from userspace: budget
//! overrun, i.e. class time past the instant a CPU's budget ran out while
//! normal work waited, which the BPF program times per burst.
//!
//! Best effort: a scheduler build without `--monitor` or a report that does
//! not arrive yields `None` and a warning, never a failed benchmark.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use mq_report::sched::Enforcement;

/// How long the first report may take (monitor interval + TCG slowness).
const REPORT_TIMEOUT: Duration = Duration::from_secs(15);

/// The largest overrun on `cpu` since the running scheduler started, in µs
/// (`None` if there was none, or on any failure, which is logged).
pub fn overrun_max_us(scheduler: &Path, cpu: usize) -> Option<f64> {
    match first_report(scheduler) {
        Ok(line) => match overrun_max_from_report(&line, cpu) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("mq-bench-sched: warning: scheduler stats: {e:#}");
                None
            }
        },
        Err(e) => {
            eprintln!("mq-bench-sched: warning: scheduler stats unavailable: {e:#}");
            None
        }
    }
}

/// Stops the monitor however we leave; it only reads statistics, so SIGINT is a
/// clean end.
struct Monitor(Child);

impl Drop for Monitor {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let _ = self.0.wait();
    }
}

fn first_report(scheduler: &Path) -> Result<String> {
    let mut child = Command::new(scheduler)
        .args(["--monitor", "0.2", "--stats-json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {} --monitor", scheduler.display()))?;
    let stdout = child.stdout.take().context("monitor stdout")?;
    let _monitor = Monitor(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let line = BufReader::new(stdout).lines().next();
        let _ = tx.send(line);
    });
    match rx.recv_timeout(REPORT_TIMEOUT) {
        Ok(Some(Ok(line))) => Ok(line),
        Ok(Some(Err(e))) => Err(e).context("reading the monitor's report"),
        Ok(None) => Err(anyhow!("the monitor exited without a report")),
        Err(_) => Err(anyhow!("no monitor report within {REPORT_TIMEOUT:?}")),
    }
}

/// `cpus[cpu].overrun_max_us` of one `--stats-json` report.
pub fn overrun_max_from_report(line: &str, cpu: usize) -> Result<Option<f64>> {
    let v: serde_json::Value = serde_json::from_str(line).context("monitor report is not JSON")?;
    let entry = v["cpus"]
        .as_array()
        .context("monitor report has no `cpus` list")?
        .iter()
        .find(|c| c["cpu"].as_u64() == Some(cpu as u64))
        .with_context(|| format!("monitor report has no CPU {cpu}"))?;
    let field = &entry["overrun_max_us"];
    if field.is_null() {
        return Ok(None);
    }
    field.as_f64().map(Some).context("overrun_max_us is not a number")
}

/// A monitor started when a window opens, reporting once when it closes: its first report
/// covers the window (from the monitor's start, a few ms after the window's).
pub struct WindowMonitor {
    _monitor: Monitor,
    report: mpsc::Receiver<Option<std::io::Result<String>>>,
}

impl WindowMonitor {
    /// Starts `scheduler --monitor <window> --stats-json`; `None` (with a warning) when it
    /// cannot start.
    pub fn start(scheduler: &Path, window: Duration) -> Option<Self> {
        let started = (|| -> Result<Self> {
            let mut child = Command::new(scheduler)
                .args(["--monitor", &format!("{}", window.as_secs_f64()), "--stats-json"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {} --monitor", scheduler.display()))?;
            let stdout = child.stdout.take().context("monitor stdout")?;
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(BufReader::new(stdout).lines().next());
            });
            Ok(Self {
                _monitor: Monitor(child),
                report: rx,
            })
        })();
        started
            .map_err(|e| eprintln!("mq-bench-sched: warning: scheduler stats unavailable: {e:#}"))
            .ok()
    }

    /// The window's enforcement figures on `cpu`; `None` (with a warning) on any failure.
    pub fn finish(self, cpu: usize) -> Option<Enforcement> {
        let line = match self.report.recv_timeout(REPORT_TIMEOUT) {
            Ok(Some(Ok(line))) => line,
            Ok(Some(Err(e))) => {
                eprintln!("mq-bench-sched: warning: reading the monitor's report: {e}");
                return None;
            }
            Ok(None) | Err(_) => {
                eprintln!("mq-bench-sched: warning: no monitor report for the window");
                return None;
            }
        };
        enforcement_from_report(&line, cpu)
            .map_err(|e| eprintln!("mq-bench-sched: warning: scheduler stats: {e:#}"))
            .ok()
    }
}

/// `cpus[cpu]`'s overrun and throttle-to-preempt figures of one `--stats-json` report.
pub fn enforcement_from_report(line: &str, cpu: usize) -> Result<Enforcement> {
    let v: serde_json::Value = serde_json::from_str(line).context("monitor report is not JSON")?;
    let entry = v["cpus"]
        .as_array()
        .context("monitor report has no `cpus` list")?
        .iter()
        .find(|c| c["cpu"].as_u64() == Some(cpu as u64))
        .with_context(|| format!("monitor report has no CPU {cpu}"))?;
    let num = |key: &str| -> Result<Option<f64>> {
        match &entry[key] {
            serde_json::Value::Null => Ok(None),
            field => field
                .as_f64()
                .map(Some)
                .with_context(|| format!("{key} is not a number")),
        }
    };
    Ok(Enforcement {
        overrun_p50_us: num("overrun_p50_us")?,
        overrun_p99_us: num("overrun_p99_us")?,
        overrun_max_us: num("overrun_max_us")?,
        yields: entry["yields"]
            .as_u64()
            .context("monitor report has no `yields`")?,
        yield_p50_us: num("yield_p50_us")?,
        yield_p99_us: num("yield_p99_us")?,
        yield_max_us: num("yield_max_us")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = r#"{"interval_s":0.2,"class_members":1,"totals":{},"cpus":[
        {"cpu":0,"mq_share":0.0,"overrun_max_us":null},
        {"cpu":1,"mq_share":0.5,"overrun_max_us":426.0}]}"#;

    #[test]
    fn picks_the_overrun_of_the_asked_cpu() {
        assert_eq!(overrun_max_from_report(REPORT, 1).unwrap(), Some(426.0));
        assert_eq!(overrun_max_from_report(REPORT, 0).unwrap(), None);
    }

    #[test]
    fn a_missing_cpu_or_a_foreign_line_is_an_error() {
        assert!(overrun_max_from_report(REPORT, 7).is_err());
        assert!(overrun_max_from_report("mq[threads=1 ...]", 0).is_err());
        assert!(overrun_max_from_report(r#"{"cpus":[{"cpu":0,"overrun_max_us":"x"}]}"#, 0).is_err());
    }

    #[test]
    fn enforcement_figures_come_from_the_asked_cpu() {
        let report = r#"{"cpus":[{"cpu":0,"yields":0,"overrun_p50_us":null},
            {"cpu":1,"overrun_p50_us":300.0,"overrun_p99_us":900.0,"overrun_max_us":4100.0,
             "yields":57,"yield_p50_us":40.0,"yield_p99_us":3900.0,"yield_max_us":4000.0}]}"#;
        let e = enforcement_from_report(report, 1).unwrap();
        assert_eq!(
            (e.overrun_p99_us, e.yields, e.yield_max_us),
            (Some(900.0), 57, Some(4000.0))
        );
        let idle = enforcement_from_report(report, 0).unwrap();
        assert_eq!(
            (idle.yields, idle.overrun_p50_us, idle.yield_p99_us),
            (0, None, None)
        );
        // A scheduler build without the yield histogram is an error, not zeros.
        assert!(enforcement_from_report(REPORT, 1).is_err());
    }
}
