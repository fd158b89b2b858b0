//! The programs `cargo xtask experiments` runs, which experiments each one feeds, how long
//! each takes (the estimates behind the ETA), and running them: natively with their output
//! in a log file and a progress line on the terminal, or in the one VM boot.

use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// One program run.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// Short name, also of its log and raw report files.
    pub name: &'static str,
    pub program: &'static str,
    /// The experiments drawn from its report.
    pub feeds: &'static [&'static str],
    /// Runs in the VM (sched_ext needed).
    pub vm: bool,
    /// Seconds it takes on this project's 2-vCPU machine, quick and full (TCG for the VM
    /// step, boot included): what the ETA adds up. Quick, measured on 2026-12-04 with other
    /// builds running: pony 60 s, efficiency 25 s, idle 3 s, the VM step ~3 min; the full
    /// figures are estimates from the programs' own point counts.
    pub estimate: (u64, u64),
}

/// Every step, in run order: the native ones first, then the one VM boot.
pub const STEPS: [Step; 4] = [
    Step {
        name: "pony",
        program: "mq-bench-pony",
        feeds: &["unloaded_latency", "throughput", "scaling"],
        vm: false,
        estimate: (90, 900),
    },
    Step {
        name: "efficiency",
        program: "mq-bench-efficiency",
        feeds: &["cpu_efficiency"],
        vm: false,
        estimate: (60, 600),
    },
    Step {
        name: "idle",
        program: "mq-bench-idle",
        feeds: &["idle_states"],
        vm: false,
        estimate: (30, 300),
    },
    Step {
        name: "interference",
        program: "mq-bench-interference",
        feeds: &["interference", "policy"],
        vm: true,
        estimate: (240, 1200),
    },
];

/// The steps that feed the experiments asked for (`only`: one experiment, else all).
pub fn plan(only: Option<&str>) -> Vec<Step> {
    STEPS
        .iter()
        .copied()
        .filter(|s| only.is_none_or(|o| s.feeds.contains(&o)))
        .collect()
}

/// The options each program gets.
pub fn args(step: &Step, quick: bool) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    if quick {
        a.push("--quick".into());
    }
    if step.name == "pony" {
        // Latency by size and throughput by size; scaling 1 to 10 engines per host (quick:
        // the ends and one point between, every code path at a third of the points).
        let (sizes, engines) = if quick {
            ("64,4096,1048576", "1,2,10")
        } else {
            ("64,1024,4096,16384,262144,1048576", "1,2,4,6,8,10")
        };
        a.extend(["--sizes".into(), sizes.into(), "--engines".into(), engines.into()]);
    }
    if step.name == "interference" {
        // The policy experiment's binaries: scx_mqland only where it was built.
        a.extend(["--policy-schedulers".into(), "scx_microquanta,scx_mqland".into()]);
    }
    a
}

/// ETA: what the steps from `from` on should take.
pub fn remaining(steps: &[Step], from: usize, quick: bool) -> u64 {
    steps[from..]
        .iter()
        .map(|s| if quick { s.estimate.0 } else { s.estimate.1 })
        .sum()
}

fn mmss(secs: u64) -> String {
    format!("{}:{:02}", secs / 60, secs % 60)
}

/// The progress line: `[2/4] efficiency (cpu_efficiency): 0:42 elapsed, ETA 5:10`.
pub fn progress_line(steps: &[Step], i: usize, quick: bool, elapsed: Duration) -> String {
    let s = &steps[i];
    let this = if quick { s.estimate.0 } else { s.estimate.1 };
    let left = this.saturating_sub(elapsed.as_secs()) + remaining(steps, i + 1, quick);
    format!(
        "experiments [{}/{}] {} ({}{}): {} elapsed, ETA {}",
        i + 1,
        steps.len(),
        s.name,
        s.feeds.join(", "),
        if s.vm { "; VM" } else { "" },
        mmss(elapsed.as_secs()),
        mmss(left)
    )
}

/// Prints the progress line every second on a terminal (stderr) until dropped; off a
/// terminal, once.
pub struct Ticker {
    stop: std::sync::Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ticker {
    pub fn start(steps: &[Step], i: usize, quick: bool) -> Self {
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        if !std::io::stderr().is_terminal() {
            eprintln!("{}", progress_line(steps, i, quick, Duration::ZERO));
            return Self { stop, thread: None };
        }
        let steps = steps.to_vec();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Acquire) {
                let line = progress_line(&steps, i, quick, started.elapsed());
                eprint!("\r\x1b[K{line}");
                let _ = std::io::stderr().flush();
                std::thread::sleep(Duration::from_millis(500));
            }
            eprintln!();
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `step`'s program from `bin_dir` on this host with its output in `logs/NAME.log`,
/// its report in `raw/NAME.json`; returns the report.
pub fn run_native(step: &Step, bin_dir: &Path, out: &Path, quick: bool) -> Result<Value> {
    let bin = bin_dir.join(step.program);
    if !bin.is_file() {
        bail!("{} not built (no {})", step.program, bin.display());
    }
    let log = out.join("logs").join(format!("{}.log", step.name));
    let json = raw_path(out, step);
    let _ = std::fs::remove_file(&json);
    let log_file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = Command::new(&bin);
    cmd.args(args(step, quick))
        .arg("--json")
        .arg(&json)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        // The host's own accelerator, whatever the caller's environment says.
        .env_remove(crate::vm::ACCEL_ENV);
    let status = cmd
        .status()
        .with_context(|| format!("starting {}", crate::sys::describe(&cmd)))?;
    if !status.success() {
        bail!(
            "{} failed ({status}); its output is in {}:\n{}",
            step.program,
            log.display(),
            tail(&log, 8)
        );
    }
    read_json(&json)
}

/// Where a step's bare report goes.
pub fn raw_path(out: &Path, step: &Step) -> PathBuf {
    out.join("raw").join(format!("{}.json", step.name))
}

pub fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The last `n` lines of a log, for an error message.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The guest's command line for a VM step: the program with its options, its report
/// echoed behind its tag when it succeeds.
pub fn guest_script(step: &Step, quick: bool, tag_prefix: &str) -> String {
    let json = format!("/tmp/{}.json", step.program);
    let mut argv = vec![step.program.to_string()];
    argv.extend(args(step, quick));
    argv.extend(["--json".into(), json.clone()]);
    format!(
        "{} && echo \"{tag_prefix}$(cat {json})\"\n",
        crate::sys::quote_all(&argv)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_experiment_has_exactly_one_step_and_only_picks_it() {
        for name in mq_report::experiments::NAMES {
            let feeding: Vec<&str> = STEPS
                .iter()
                .filter(|s| s.feeds.contains(&name))
                .map(|s| s.name)
                .collect();
            assert_eq!(feeding.len(), 1, "{name}: {feeding:?}");
            let p = plan(Some(name));
            assert_eq!(p.len(), 1);
            assert!(p[0].feeds.contains(&name));
        }
        assert_eq!(plan(None).len(), STEPS.len());
        assert!(plan(Some("nothing")).is_empty());
        // The one VM step runs last, after the native ones.
        assert!(STEPS.last().unwrap().vm);
        assert_eq!(STEPS.iter().filter(|s| s.vm).count(), 1);
    }

    #[test]
    fn the_eta_counts_down_and_the_line_says_where_we_are() {
        let steps = plan(None);
        let line = progress_line(&steps, 1, true, Duration::from_secs(30));
        assert!(
            line.starts_with("experiments [2/4] efficiency (cpu_efficiency): 0:30 elapsed, ETA "),
            "{line}"
        );
        let left = |elapsed| {
            let l = progress_line(&steps, 0, false, Duration::from_secs(elapsed));
            l.rsplit("ETA ").next().unwrap().to_string()
        };
        assert_eq!(left(0), mmss(remaining(&steps, 0, false)));
        assert_ne!(left(0), left(60));
        // Overrunning a step's estimate leaves the later steps' time.
        assert_eq!(left(100_000), mmss(remaining(&steps, 1, false)));
        assert!(progress_line(&steps, 3, true, Duration::ZERO).contains("; VM"));
    }

    #[test]
    fn quick_still_exercises_scaling_and_the_policy_binaries() {
        let pony = STEPS[0];
        let quick = args(&pony, true);
        assert!(quick.contains(&"--quick".to_string()));
        let engines = &quick[quick.iter().position(|a| a == "--engines").unwrap() + 1];
        assert!(engines.ends_with(",10"), "{engines}");
        let script = guest_script(&STEPS[3], true, "MQ_BENCH_INTERFERENCE_JSON ");
        assert!(script.contains("scx_microquanta,scx_mqland"), "{script}");
        assert!(
            script.contains(
                "--json /tmp/mq-bench-interference.json && echo \"MQ_BENCH_INTERFERENCE_JSON $(cat"
            ),
            "{script}"
        );
    }
}
