// SPDX-License-Identifier: GPL-2.0-only
//! `mq-wakeup`: measure the wakeup latency of one periodic sleeper thread,
//! as a normal thread or in the MicroQuanta class, and print percentiles.

use std::time::Duration;

use anyhow::Result;
use clap::{Parser, ValueEnum};
use mq_experiments::wakeup::{measure, ThreadClass, WakeupConfig};

/// Wakeup latency of a periodic sleeper (cyclictest-style, absolute deadlines).
#[derive(Debug, Parser)]
#[command(version)]
struct Opts {
    /// Sleep period between wakeups, in microseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=10_000_000))]
    period_us: u64,

    /// Number of wakeups to measure.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    samples: u64,

    /// CPU time the thread burns after each wakeup, in microseconds (an
    /// engine processing a batch); 0 = a pure sleeper.
    #[arg(long, default_value_t = 0)]
    work_us: u64,

    /// Scheduling class of the measuring thread.
    #[arg(long, value_enum, default_value_t = Class::Normal)]
    class: Class,

    /// Pin the measuring thread to this CPU.
    #[arg(long)]
    cpu: Option<usize>,

    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Class {
    Normal,
    Microquanta,
}

fn main() -> Result<()> {
    let opts = Opts::parse();
    let summary = measure(WakeupConfig {
        period: Duration::from_micros(opts.period_us),
        samples: opts.samples,
        class: match opts.class {
            Class::Normal => ThreadClass::Normal,
            Class::Microquanta => ThreadClass::MicroQuanta,
        },
        work: Duration::from_micros(opts.work_us),
        cpu: opts.cpu,
    })?;
    if opts.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "wakeup latency (µs): p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}  ({} samples)",
            summary.p50, summary.p90, summary.p99, summary.max, summary.samples
        );
    }
    Ok(())
}
