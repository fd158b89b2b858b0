// SPDX-License-Identifier: GPL-2.0-only
//! The idle-states benchmark behind `mq-bench-idle`: one app's Pony round trips through a
//! `snap-host` whose engine is dedicated or spreading, with idle CPUs allowed to enter
//! their idle states and with every state but polling disabled ([`cpuidle`]).
//!
//! The processes are those of the CPU-efficiency benchmark ([`crate::efficiency_bench`]):
//! the app in namespace A, the echo peer in B, a veth between them; one app offering a low
//! rate, so that the CPUs do go idle between messages. A spreading engine blocks when idle
//! and is woken by the packet's interrupt or the app's doorbell, on a CPU that may be in
//! an idle state: the state's exit latency is in the round trip. A dedicated engine spins
//! and its CPU never idles; the app's and the peer's CPUs may, in both modes.
//!
//! # Report
//!
//! [`mq_report::idle::Report`] has the schema, [`mq_report::idle::effects`] the ratios.

pub mod cpuidle;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use mq_report::idle::{self as schema, Report, Row, IDLE, MODES};

use crate::efficiency_bench::point::{self, Pooled, Spec};
use crate::efficiency_bench::stack::{self, Host, Peer};
use crate::efficiency_bench::{engine_cores, Scratch, DESCRIBE};
use crate::pony_bench::netns::Veth;

/// The app's rate by default: a message every 2 ms leaves every CPU idle most of the time.
pub const RATE: f64 = 500.0;

/// What the comparison models, for the report.
pub const MODELS: &str = "the wake-up exit latency of the idle states this machine's CPUs \
    have (listed in idle_states; in a VM, the guest's idle driver, e.g. haltpoll's halt that \
    exits to the hypervisor) against CPUs kept polling: what a spreading engine that blocks \
    pays to be woken on an idle CPU, which a dedicated engine's spinning CPU never pays";
/// What it does not.
pub const DOES_NOT_MODEL: &str = "the bare-metal package and core C-states of the Snap \
    paper (C6 and deeper, hundreds of µs of exit latency, cache and frequency effects): a VM \
    exposes none of them, and the host's own idle states under the VM are outside our \
    control";

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub rate: f64,
    pub msg_bytes: usize,
    pub rounds: usize,
    pub warmup: Duration,
    pub window: Duration,
    pub microquanta: bool,
}

/// Runs both modes with idle states allowed and with CPUs polling, `cfg.rounds` times.
pub fn run(cfg: &BenchConfig, snap_host: &Path) -> Result<Report> {
    let cpus = crate::sched_bench::cpus();
    let veth = Veth::create_prefixed("eff", "i", 1500)?;
    let scratch = Scratch::new("idle")?;
    let peer = Peer::start(&veth, snap_host, cfg.microquanta).context("starting the echo peer")?;
    let mut pooled: BTreeMap<(usize, usize), Pooled> = BTreeMap::new();
    let mut mechanism = None;
    let mut number = 0;
    for round in 0..cfg.rounds {
        // Alternate which setting runs first from round to round.
        let order: Vec<usize> = if round % 2 == 0 { vec![0, 1] } else { vec![1, 0] };
        for i in order {
            let guard = match IDLE[i] {
                "polling" => Some(cpuidle::PollOnly::start()?),
                _ => None,
            };
            if let Some(g) = &guard {
                mechanism.get_or_insert_with(|| g.mechanism.clone());
            }
            for (m, mode) in MODES.iter().enumerate() {
                let config = stack::host_config(
                    mode,
                    &engine_cores(mode, cpus)?,
                    &stack::host_bind(number),
                    cfg.microquanta,
                );
                let host = Host::start(&veth, stack::APPS, snap_host, mode, &config)?;
                let spec = Spec {
                    design: mode,
                    apps: 1,
                    rate: cfg.rate,
                    msg_bytes: cfg.msg_bytes,
                    warmup: cfg.warmup,
                    window: cfg.window,
                    number,
                };
                number += 1;
                let measured = point::run(&veth, spec, Some(&host), &peer, &scratch.0)
                    .with_context(|| format!("round {round}: {mode}, idle {}", IDLE[i]))?;
                host.stop()?;
                eprintln!(
                    "mq-bench-idle: round {}/{}: {mode:<10} idle {:<8} {} echoes",
                    round + 1,
                    cfg.rounds,
                    IDLE[i],
                    measured.tally.received
                );
                pooled.entry((m, i)).or_default().push(measured);
            }
            drop(guard);
        }
    }
    peer.stop()?;
    drop(veth);
    let rows = pooled
        .iter()
        .map(|(&(m, i), p)| row(p, MODES[m], IDLE[i], cfg.rate))
        .collect::<Result<Vec<Row>>>()?;
    Ok(Report {
        platform: crate::modes_bench::platform(cpus),
        path: "veth".into(),
        nic: "udp".into(),
        msg_bytes: cfg.msg_bytes,
        rounds: cfg.rounds,
        seconds: cfg.window.as_secs_f64(),
        warmup_ms: cfg.warmup.as_millis() as u64,
        offered_msgs_per_s: cfg.rate,
        mechanism: mechanism.unwrap_or_else(|| "not applied (no polling rows)".into()),
        driver: cpuidle::driver(),
        idle_states: cpuidle::states(),
        models: MODELS.into(),
        does_not_model: DOES_NOT_MODEL.into(),
        counters: DESCRIBE.into(),
        effects: schema::effects(&rows),
        rows,
    })
}

/// A point's rounds as a row.
fn row(p: &Pooled, mode: &str, idle: &str, rate: f64) -> Result<Row> {
    let r = p.row(mode, 1, "low", rate)?;
    Ok(Row {
        mode: mode.into(),
        idle: idle.into(),
        msgs_per_s: r.msgs_per_s,
        sent: r.sent,
        received: r.received,
        p50_us: r.p50_us,
        p99_us: r.p99_us,
        p99_9_us: r.p99_9_us,
        max_us: r.max_us,
        p99_min_us: r.p99_min_us,
        p99_max_us: r.p99_max_us,
        cores: r.cores,
        ctx_switches_per_op: r.ctx_switches_per_op,
        migrations_per_op: r.migrations_per_op,
        task_clock_us_per_op: r.task_clock_us_per_op,
        rounds: r.rounds,
    })
}

/// The human table of a report.
pub fn table(r: &Report) -> String {
    let mut s = format!(
        "idle states: {} on {}, kernel {}, driver {}, {} round(s) of {} s at {} msgs/s\npolling: {}\n\
         mode        idle      p50 µs   p99 µs p99.9 µs  p99 (min-max)   cores  switches/op\n",
        r.platform.scheduler,
        r.platform.machine,
        r.platform.kernel,
        r.driver,
        r.rounds,
        r.seconds,
        r.offered_msgs_per_s,
        r.mechanism
    );
    for x in &r.rows {
        s.push_str(&format!(
            "{:<11} {:<8} {:>8.1} {:>8.1} {:>8.1}  ({:.1}-{:.1}) {:>6.3}  {}\n",
            x.mode,
            x.idle,
            x.p50_us,
            x.p99_us,
            x.p99_9_us,
            x.p99_min_us,
            x.p99_max_us,
            x.cores,
            x.ctx_switches_per_op.map_or("-".into(), |v| format!("{v:.2}"))
        ));
    }
    for e in &r.effects {
        let f = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.2}x"));
        s.push_str(&format!(
            "{}: allowed / polling: p50 {}, p99 {}\n",
            e.mode,
            f(e.p50_ratio),
            f(e.p99_ratio)
        ));
    }
    s
}
