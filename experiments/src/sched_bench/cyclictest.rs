// SPDX-License-Identifier: GPL-2.0-only
//! cyclictest (rt-tests), the tool the RT community quotes, as a second
//! opinion on our own wakeup probe: `--policy=other` run under `mqctl run`
//! (its threads in the MicroQuanta class) with scx_microquanta loaded, against
//! `--policy=fifo` with no BPF scheduler, both next to CPU hogs.
//!
//! We read its `--json` file (rt-tests >= 2.0), which carries min/avg/max and
//! the `-h` latency histogram in 1 µs buckets; percentiles come from that
//! histogram. Latencies beyond the histogram's range only count as
//! "overflows", so a percentile that lands there is reported as null rather
//! than guessed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
// The keys of the two runs in the report.
use mq_report::sched::{Cyclictest, FIFO, MICROQUANTA};
use serde::Deserialize;

use crate::hogs::Hogs;
use crate::locate;

/// Histogram range in µs: wide enough for TCG's multi-millisecond stalls.
pub const HIST_LIMIT_US: u64 = 100_000;

/// What to run.
#[derive(Debug, Clone)]
pub struct CyclictestConfig {
    /// Wakeups (`-l`).
    pub loops: u64,
    /// Wakeup interval (`-i`), µs.
    pub interval_us: u64,
    pub hogs_per_cpu: usize,
    /// Priority of the SCHED_FIFO reference run.
    pub fifo_priority: u32,
    /// Bandwidth of the scheduler for the MicroQuanta run.
    pub mq_period_us: u64,
    pub mq_runtime_us: u64,
}

/// The two runs under `hogs_per_cpu * cpus` hogs: FIFO first with no BPF
/// scheduler, then `--policy=other` in the class with `scheduler` loaded.
pub fn run(cfg: &CyclictestConfig, scheduler: &Path) -> Result<BTreeMap<String, Cyclictest>> {
    let cyclictest = locate::on_path("cyclictest")
        .context("cyclictest is not installed (rt-tests; cargo xtask deps installs it)")?;
    let mqctl = locate::binary("mqctl").context("mqctl binary not found")?;
    let hogs = Hogs::start(cfg.hogs_per_cpu * super::cpus(), None)?;
    eprintln!(
        "mq-bench-sched: cyclictest: {} hogs, {} loops of {} µs per run",
        hogs.workers(),
        cfg.loops,
        cfg.interval_us
    );
    let mut out = BTreeMap::new();

    let prio = cfg.fifo_priority.to_string();
    let fifo = run_one(cfg, &[], &cyclictest, &["--policy=fifo", "-p", &prio], FIFO)?;
    out.insert(FIFO.to_string(), fifo);

    let (sched, _) = super::start_scheduler(scheduler, cfg.mq_period_us, cfg.mq_runtime_us)?;
    let mq = run_one(
        cfg,
        &[mqctl.as_path(), Path::new("run"), Path::new("--")],
        &cyclictest,
        &["--policy=other"],
        MICROQUANTA,
    )?;
    out.insert(MICROQUANTA.to_string(), mq);
    sched.stop().context("stopping scx_microquanta")?;
    Ok(out)
}

/// Runs `[wrapper...] cyclictest POLICY_ARGS -t1 ...` and reads its JSON.
fn run_one(
    cfg: &CyclictestConfig,
    wrapper: &[&Path],
    cyclictest: &Path,
    policy_args: &[&str],
    label: &str,
) -> Result<Cyclictest> {
    let json_path = json_path(label);
    let mut argv: Vec<PathBuf> = wrapper.iter().map(|p| p.to_path_buf()).collect();
    argv.push(cyclictest.to_path_buf());
    let args = [
        "-t1".to_string(),
        format!("--interval={}", cfg.interval_us),
        format!("--loops={}", cfg.loops),
        "--quiet".to_string(),
        format!("--histogram={HIST_LIMIT_US}"),
        // The histogram is in the JSON too; keep its 100k lines off our pipe.
        "--histfile=/dev/null".to_string(),
        format!("--json={}", json_path.display()),
    ];
    eprintln!("mq-bench-sched: cyclictest: {label} ...");
    let output = Command::new(&argv[0])
        .args(&argv[1..])
        .args(policy_args)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", argv[0].display()))?;
    if !output.status.success() {
        bail!(
            "cyclictest ({label}) failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let text = std::fs::read_to_string(&json_path)
        .with_context(|| format!("reading cyclictest's {}", json_path.display()))?;
    let _ = std::fs::remove_file(&json_path);
    let s = parse_json(&text).with_context(|| format!("parsing {}", json_path.display()))?;
    eprintln!(
        "mq-bench-sched: cyclictest: {label:<12} min {:.0} avg {:.1} max {:.0} µs, p99 {}",
        s.min,
        s.avg,
        s.max,
        s.p99.map_or("> histogram".into(), |v| format!("{v:.0} µs"))
    );
    Ok(s)
}

fn json_path(label: &str) -> PathBuf {
    std::env::temp_dir().join(format!("mq-bench-cyclictest-{}-{label}.json", std::process::id()))
}

#[derive(Deserialize)]
struct CtJson {
    thread: BTreeMap<String, CtThread>,
}

#[derive(Deserialize)]
struct CtThread {
    #[serde(default)]
    histogram: BTreeMap<String, u64>,
    cycles: u64,
    min: f64,
    max: f64,
    avg: f64,
}

/// Summarises thread 0 of a cyclictest `--json` file.
pub fn parse_json(text: &str) -> Result<Cyclictest> {
    let doc: CtJson = serde_json::from_str(text).context("not cyclictest JSON")?;
    let t = doc.thread.get("0").context("cyclictest JSON has no thread 0")?;
    let mut hist = BTreeMap::new();
    for (bucket, count) in &t.histogram {
        let us: u64 = bucket
            .parse()
            .with_context(|| format!("histogram bucket {bucket:?} is not a number"))?;
        hist.insert(us, *count);
    }
    let in_range: u64 = hist.values().sum();
    if in_range > t.cycles {
        bail!(
            "histogram holds {in_range} wakeups but only {} cycles ran",
            t.cycles
        );
    }
    let pct = |q| percentile(&hist, t.cycles, q).map(|us| us as f64);
    Ok(Cyclictest {
        min: t.min,
        avg: t.avg,
        max: t.max,
        p50: pct(0.50),
        p90: pct(0.90),
        p99: pct(0.99),
        cycles: t.cycles,
        overflows: t.cycles - in_range,
    })
}

/// The `q` quantile (nearest rank) of `total` samples of which `hist` holds
/// those in range (bucket in µs → count); the rest are above every bucket.
/// `None` when the rank falls among those out-of-range samples.
pub fn percentile(hist: &BTreeMap<u64, u64>, total: u64, q: f64) -> Option<u64> {
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (&us, &count) in hist {
        seen += count;
        if seen >= rank {
            return Some(us);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from a real rt-tests 2.40 `--json` file.
    const SAMPLE: &str = r#"{
      "file_version": 1,
      "cmdline:": "cyclictest --policy=other -t1 -i 1000 -l 10 -q -h 100 --json=/tmp/ct.json",
      "rt_test_version:": "2.40",
      "return_code": 0,
      "num_threads": 1,
      "resolution_in_ns": 0,
      "thread": {
        "0": {
          "histogram": { "9": 1, "33": 4, "43": 3, "99": 1 },
          "cycles": 10, "min": 9, "max": 1359, "avg": 60.52, "cpu": 0, "node": 0
        }
      }
    }"#;

    #[test]
    fn parses_min_avg_max_and_counts_overflows() {
        let s = parse_json(SAMPLE).unwrap();
        assert_eq!((s.min, s.avg, s.max), (9.0, 60.52, 1359.0));
        assert_eq!(s.cycles, 10);
        assert_eq!(s.overflows, 1, "9 of 10 wakeups are in the histogram");
        assert_eq!(s.p50, Some(33.0));
        assert_eq!(s.p90, Some(99.0));
        assert_eq!(s.p99, None, "the slowest wakeup is beyond the histogram");
    }

    #[test]
    fn nearest_rank_percentiles() {
        let hist: BTreeMap<u64, u64> = (1..=100).map(|us| (us, 1)).collect();
        assert_eq!(percentile(&hist, 100, 0.5), Some(50));
        assert_eq!(percentile(&hist, 100, 0.99), Some(99));
        assert_eq!(percentile(&hist, 100, 1.0), Some(100));
        assert_eq!(percentile(&hist, 100, 0.0), Some(1));
        assert_eq!(percentile(&hist, 0, 0.5), None);
        // 100 in range out of 200: the median is the last in-range bucket,
        // anything above it is an overflow.
        assert_eq!(percentile(&hist, 200, 0.5), Some(100));
        assert_eq!(percentile(&hist, 200, 0.51), None);
    }

    #[test]
    fn malformed_json_is_an_error_not_zeros() {
        assert!(parse_json("{}").is_err());
        assert!(parse_json(r#"{"thread": {}}"#).is_err());
        let bad_bucket = SAMPLE.replace("\"9\": 1", "\"nine\": 1");
        assert!(parse_json(&bad_bucket).is_err());
        let too_many = SAMPLE.replace("\"cycles\": 10", "\"cycles\": 5");
        assert!(parse_json(&too_many).is_err());
    }
}
