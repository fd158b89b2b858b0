//! `cargo xtask demo`: the headline measurement. Boots the sched_ext kernel, runs `mq-demo`
//! (experiments/), and turns its final `MQ_DEMO_JSON {...}` line into
//! `target/demo/summary.json` plus a table of wakeup latencies under EEVDF, as a normal task
//! under microquanta, and as a microquanta engine.
//!
//! Under TCG the guest's clock runs on an emulated CPU, so absolute microseconds are not
//! comparable with real hardware; ratios between policies measured in the same boot are.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::accel::AccelChoice;
use crate::{cargo, kernel, vm, Ctx};

const JSON_TAG: &str = "MQ_DEMO_JSON ";
/// Table rows, in order.
const POLICIES: &[&str] = &["eevdf", "normal", "microquanta"];

/// Options of `cargo xtask demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Kernel image (bzImage) for the VM; default: $MQ_KERNEL, the cache, or a download.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// How qemu runs the VM.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    /// Virtual CPUs.
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// Seconds before the VM is killed.
    #[arg(long = "timeout", value_name = "SECS", default_value_t = 1200)]
    pub timeout_secs: u64,
    /// Run mq-demo on this host (needs root and a host kernel with sched_ext).
    #[arg(long)]
    pub native: bool,
}

pub fn run(ctx: &Ctx, args: &DemoArgs) -> Result<()> {
    if args.native {
        vm::check_native()?;
    }
    let release_dir = cargo::build_release(&ctx.deps, &ctx.ws)?;
    let kernel = if args.native {
        kernel::Kernel::host()
    } else {
        kernel::ensure(args.kernel.clone())?
    };
    let spec = vm::VmSpec {
        cpus: args.cpus,
        mem_mib: 2048,
        accel: args.accel,
        timeout: Duration::from_secs(args.timeout_secs),
        kernel: &kernel,
        bin_dirs: vec![release_dir],
        extra_files: Vec::new(),
        env: vec![("RUST_BACKTRACE".into(), "1".into())],
        script: "mq-demo\n".into(),
        allow_log_patterns: Vec::new(),
        native: args.native,
    };
    let outcome = vm::run(ctx, &spec)?;
    if outcome.exit_status != 0 {
        bail!("mq-demo failed (exit status {})", outcome.exit_status);
    }
    let mut summary = extract_summary(&outcome.output)?;
    summary["accel"] = Value::String(outcome.accel.to_string());

    let dir = ctx.ws.target_dir.join("demo");
    std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
    let path = dir.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)? + "\n")
        .with_context(|| format!("{}", path.display()))?;
    println!();
    print!("{}", render_table(&summary));
    println!("summary: {}", path.display());
    Ok(())
}

/// The JSON object on the last `MQ_DEMO_JSON ` line.
pub fn extract_summary(output: &str) -> Result<Value> {
    let line = output
        .lines()
        .rev()
        .find_map(|l| l.trim_start().strip_prefix(JSON_TAG))
        .with_context(|| format!("mq-demo printed no `{}` line", JSON_TAG.trim()))?;
    let value: Value = serde_json::from_str(line.trim()).context("parsing mq-demo's JSON")?;
    if !value.is_object() {
        bail!("mq-demo's summary is not a JSON object: {line}");
    }
    Ok(value)
}

/// The human-readable table of `summary`, missing numbers shown as `-`.
pub fn render_table(summary: &Value) -> String {
    let lat = &summary["wakeup_latency_us"];
    let num = |policy: &str, field: &str| lat[policy][field].as_f64();
    let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    let mut out = format!(
        "wakeup latency, µs (kernel {}, {} CPUs, accel {})\n",
        summary["kernel"].as_str().unwrap_or("?"),
        summary["cpus"].as_u64().map_or("?".into(), |c| c.to_string()),
        summary["accel"].as_str().unwrap_or("?"),
    );
    out.push_str(&format!(
        "{:<12} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
        "policy", "p50", "p90", "p99", "max", "samples"
    ));
    for policy in POLICIES {
        out.push_str(&format!(
            "{:<12} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
            policy,
            cell(num(policy, "p50")),
            cell(num(policy, "p90")),
            cell(num(policy, "p99")),
            cell(num(policy, "max")),
            lat[policy]["samples"]
                .as_u64()
                .map_or("-".into(), |s| s.to_string()),
        ));
    }
    let ratio = |a: &str| match (num(a, "p99"), num("microquanta", "p99")) {
        (Some(a), Some(mq)) if mq > 0.0 => format!("{:.1}x", a / mq),
        _ => "-".into(),
    };
    out.push_str(&format!(
        "p99 ratio normal/microquanta: {}   eevdf/microquanta: {}\n",
        ratio("normal"),
        ratio("eevdf")
    ));
    if summary["accel"] == "tcg" {
        out.push_str(
            "note: under TCG the CPU is emulated: absolute times are not those of real hardware; \
             only ratios within one boot are meaningful.\n",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "progress: eevdf 10/10\n\
        MQ_DEMO_JSON {\"kernel\":\"7.3.4+deb13-cloud-amd64\",\"cpus\":2,\"wakeup_latency_us\":{\
        \"eevdf\":{\"p50\":900.0,\"p90\":3000.0,\"p99\":7000.0,\"max\":9000.0,\"samples\":1000},\
        \"normal\":{\"p50\":800.0,\"p90\":2500.0,\"p99\":6000.0,\"max\":8000.0,\"samples\":1000},\
        \"microquanta\":{\"p50\":50.0,\"p90\":100.0,\"p99\":200.0,\"max\":400.0,\"samples\":1000}}}\n\
        done\n";

    #[test]
    fn extracts_last_json_line() {
        let v = extract_summary(OUTPUT).unwrap();
        assert_eq!(v["cpus"], 2);
        assert_eq!(v["wakeup_latency_us"]["microquanta"]["p99"], 200.0);
        assert!(extract_summary("no summary here\n").is_err());
        assert!(extract_summary("MQ_DEMO_JSON {broken\n").is_err());
    }

    #[test]
    fn table_has_rows_and_ratios() {
        let mut v = extract_summary(OUTPUT).unwrap();
        v["accel"] = "tcg".into();
        let table = render_table(&v);
        let rows: Vec<&str> = table.lines().collect();
        assert!(rows[2].starts_with("eevdf") && rows[2].contains("7000.0"));
        assert!(rows[4].starts_with("microquanta") && rows[4].contains("1000"));
        assert!(table.contains("normal/microquanta: 30.0x"));
        assert!(table.contains("eevdf/microquanta: 35.0x"));
        assert!(table.contains("under TCG"));
        v["accel"] = "kvm".into();
        assert!(!render_table(&v).contains("under TCG"));
    }

    #[test]
    fn missing_policy_shows_dashes() {
        let v: Value = serde_json::json!({"kernel": "k", "cpus": 2, "accel": "kvm",
            "wakeup_latency_us": {"eevdf": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "max": 4.0, "samples": 5}}});
        let table = render_table(&v);
        assert!(table.contains("microquanta           -"));
        assert!(table.contains("normal/microquanta: -"));
    }
}
