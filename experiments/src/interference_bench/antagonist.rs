// SPDX-License-Identifier: GPL-2.0-only
//! The antagonists: `stress-ng` runs of a fixed length whose bogo-ops per second (real
//! time, from its `--yaml` metrics) say how much work they got done, next to the engines or
//! alone.
//!
//! | antagonist | stress-ng stressors | what it does to a spreading engine |
//! |---|---|---|
//! | `cpu` | `--cpu W` | runnable hogs competing for the engine's CPU |
//! | `fork` | `--fork W` | a fork storm: short-lived tasks, runqueue churn, page-table work |
//! | `softirq` | `--udp W/2 --timer W/2` | syscalls and softirqs (loopback UDP, timer interrupts): kernel work no scheduler class preempts |
//! | `membw` | `--stream W` | memory bandwidth: slows the engine's own work, not its wakeups |
//!
//! `--exec` would make the fork storm a fork/exec storm, but stress-ng refuses to run it as
//! root, and these runs are root; `--fork` is the closest it runs.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The antagonists this module knows, `none` aside.
pub const KINDS: [&str; 4] = ["cpu", "fork", "softirq", "membw"];

/// How long stress-ng may overrun its `--timeout` before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(20);

/// The stress-ng options of antagonist `kind` with `workers` workers in all.
pub fn stressors(kind: &str, workers: usize) -> Result<Vec<String>> {
    let w = workers.max(1);
    let half = (w / 2).max(1);
    let args: Vec<(&str, usize)> = match kind {
        "cpu" => vec![("--cpu", w)],
        "fork" => vec![("--fork", w)],
        "softirq" => vec![("--udp", half), ("--timer", half)],
        "membw" => vec![("--stream", w)],
        other => bail!("unknown antagonist {other:?} (expected one of {KINDS:?} or none)"),
    };
    Ok(args
        .into_iter()
        .flat_map(|(opt, n)| [opt.to_string(), n.to_string()])
        .collect())
}

/// `stress-ng --version`'s line, or an error when it is missing.
pub fn version() -> Result<String> {
    let out = Command::new("stress-ng")
        .arg("--version")
        .output()
        .context("running stress-ng --version (package stress-ng)")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A running stress-ng.
pub struct Antagonist {
    child: Child,
    yaml: PathBuf,
    kind: String,
    deadline: Instant,
}

impl Antagonist {
    /// Starts antagonist `kind` for `seconds` (whole seconds: stress-ng's `--timeout`).
    pub fn start(kind: &str, workers: usize, seconds: u64) -> Result<Self> {
        let yaml = std::env::temp_dir().join(format!(
            "mq-bench-interference-{}-{kind}.yaml",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&yaml);
        let child = Command::new("stress-ng")
            .args(stressors(kind, workers)?)
            .args(["--timeout", &format!("{seconds}s"), "--metrics-brief", "--yaml"])
            .arg(&yaml)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting stress-ng (package stress-ng)")?;
        Ok(Self {
            child,
            yaml,
            kind: kind.to_string(),
            deadline: Instant::now() + Duration::from_secs(seconds) + EXIT_GRACE,
        })
    }

    /// Waits for stress-ng to end by itself (killing it past its grace) and returns its
    /// bogo-ops per second of real time, summed over its stressors.
    pub fn finish(mut self) -> Result<f64> {
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("stress-ng ({}) exited with {status}", self.kind);
                }
                break;
            }
            if Instant::now() > self.deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("stress-ng ({}) ran past its timeout and was killed", self.kind);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let text = std::fs::read_to_string(&self.yaml)
            .with_context(|| format!("reading stress-ng's metrics {}", self.yaml.display()))?;
        let _ = std::fs::remove_file(&self.yaml);
        let rates = ops_per_s(&text);
        if rates.is_empty() {
            bail!(
                "stress-ng ({}) reported no metrics (a stressor refused to run?)",
                self.kind
            );
        }
        Ok(rates.iter().map(|(_, r)| r).sum())
    }
}

impl Drop for Antagonist {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `(stressor, bogo-ops per second of real time)` from stress-ng's `--yaml` metrics. Two
/// keys of a flat list are all we read, so a line scan does it without a YAML parser.
pub fn ops_per_s(yaml: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let mut stressor = None;
    for line in yaml.lines() {
        let line = line.trim().trim_start_matches("- ");
        if let Some(name) = line.strip_prefix("stressor:") {
            stressor = Some(name.trim().to_string());
        } else if let Some(v) = line.strip_prefix("bogo-ops-per-second-real-time:") {
            if let (Some(name), Ok(v)) = (stressor.take(), v.trim().parse::<f64>()) {
                out.push((name, v));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stressors_split_workers_and_refuse_unknown_kinds() {
        assert_eq!(stressors("cpu", 4).unwrap(), ["--cpu", "4"]);
        assert_eq!(stressors("softirq", 4).unwrap(), ["--udp", "2", "--timer", "2"]);
        assert_eq!(stressors("softirq", 1).unwrap(), ["--udp", "1", "--timer", "1"]);
        assert_eq!(stressors("membw", 0).unwrap(), ["--stream", "1"]);
        assert!(stressors("none", 2).is_err());
    }

    #[test]
    fn reads_each_stressors_rate_from_the_yaml() {
        let yaml = "---\nsystem-info:\n      cpus: 2\n\nmetrics:\n    - stressor: udp\n      \
                    bogo-ops: 153924\n      bogo-ops-per-second-usr-sys-time: 202321.0\n      \
                    bogo-ops-per-second-real-time: 153540.5\n\n    - stressor: timer\n      \
                    bogo-ops-per-second-real-time: 8252.25\n";
        assert_eq!(
            ops_per_s(yaml),
            [("udp".to_string(), 153540.5), ("timer".to_string(), 8252.25)]
        );
        assert!(ops_per_s("metrics:\n").is_empty());
    }

    /// A real one-second CPU hog does work, and its rate comes back (stress-ng is one of
    /// `cargo xtask deps`' packages).
    #[test]
    fn a_real_stress_ng_run_reports_its_rate() {
        let a = Antagonist::start("cpu", 1, 1).unwrap();
        let rate = a.finish().unwrap();
        assert!(rate > 0.0, "{rate}");
    }
}
