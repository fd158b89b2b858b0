// SPDX-License-Identifier: GPL-2.0-only
//! One measured point: N app processes against one stack (their own linked copies, or a
//! host's engine), open-loop at a rate each, for one warm-up and one window; and the
//! pooling of a point's rounds into a report row ([`Pooled`]).
//!
//! The CPU of the stack, the apps and the peer, and the stack's software counters, are
//! read at the start and at the end of the window by this process, while the apps run.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use mq_report::efficiency::Row;

use super::app::{AppArgs, Tally};
use super::stack::{self, Host, Peer, RoleProcess, SERVICE};
use crate::modes_bench::host::process_cpu_ns;
use crate::pony_bench::netns::Veth;
use crate::thread_counters::{self, Counts, Threads};

/// What one point runs.
#[derive(Debug, Clone, Copy)]
pub struct Spec<'a> {
    /// `library_os`, or a host mode.
    pub design: &'a str,
    pub apps: usize,
    /// Messages per second per app.
    pub rate: f64,
    pub msg_bytes: usize,
    pub warmup: Duration,
    pub window: Duration,
    /// The point's number in the run (library-OS apps bind ports by it).
    pub number: usize,
}

/// One point in one round.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    pub tally: Tally,
    /// Round trips in ns.
    pub rtts: Vec<u64>,
    pub wall_s: f64,
    pub stack_ns: u64,
    pub app_ns: u64,
    pub peer_ns: u64,
    /// The stack's counters, when they could be opened.
    pub counts: Option<Counts>,
}

/// CPU of the stack, the apps and the peer, and the counters, at one instant.
struct Sample {
    at: Instant,
    stack_ns: u64,
    app_ns: u64,
    peer_ns: u64,
    counts: Option<Counts>,
}

/// Runs one point: the apps against `host` (Snap's designs) or their own stacks
/// (`host` is `None`: the library-OS design).
pub fn run(
    veth: &Veth,
    spec: Spec,
    host: Option<&Host>,
    peer: &Peer,
    tmp: &std::path::Path,
) -> Result<Measured> {
    let files: Vec<_> = (0..spec.apps).map(|i| tmp.join(format!("app{i}.rtt"))).collect();
    let mut apps = Vec::new();
    for (i, out) in files.iter().enumerate() {
        let stack = match host {
            Some(h) => super::app::Stack::Host {
                socket: h.socket().to_owned(),
            },
            None => stack::linked_stack(spec.number, i),
        };
        let args = AppArgs {
            stack,
            peer: stack::peer_addr(),
            service: SERVICE,
            rate: spec.rate,
            msg_bytes: spec.msg_bytes,
            warmup: spec.warmup,
            window: spec.window,
            out: out.clone(),
        };
        apps.push(RoleProcess::app(veth, &args, format!("{} app {i}", spec.design))?);
    }
    for a in &mut apps {
        a.ready()?;
    }
    let pids: Vec<u32> = apps.iter().map(RoleProcess::pid).collect();
    let stack_tids: Vec<i32> = match host {
        // Everything of the host runs the stack: engine threads, control, compacting monitor.
        Some(h) => thread_counters::tids_of(h.pid()),
        None => pids.iter().flat_map(|&p| thread_counters::tids_of(p)).collect(),
    };
    let mut threads = Threads::open(&stack_tids).ok();
    let sample = |threads: &mut Option<Threads>| -> Sample {
        let apps_ns: u64 = pids.iter().map(|&p| process_cpu_ns(p)).sum();
        let (stack_ns, app_ns) = match host {
            Some(h) => (process_cpu_ns(h.pid()), apps_ns),
            // The app's thread is the stack.
            None => (apps_ns, 0),
        };
        Sample {
            at: Instant::now(),
            stack_ns,
            app_ns,
            peer_ns: peer.cpu_ns(),
            counts: threads.as_mut().and_then(|t| t.read().ok()),
        }
    };
    for a in &mut apps {
        a.go()?;
    }
    std::thread::sleep(spec.warmup);
    let first = sample(&mut threads);
    std::thread::sleep(spec.window);
    let last = sample(&mut threads);
    let mut m = Measured {
        wall_s: (last.at - first.at).as_secs_f64(),
        stack_ns: last.stack_ns.saturating_sub(first.stack_ns),
        app_ns: last.app_ns.saturating_sub(first.app_ns),
        peer_ns: last.peer_ns.saturating_sub(first.peer_ns),
        counts: last.counts.zip(first.counts).map(|(l, f)| l.since(&f)),
        ..Default::default()
    };
    for (a, out) in apps.into_iter().zip(&files) {
        let (t, rtts) = a.finish(out)?;
        m.tally.sent += t.sent;
        m.tally.received += t.received;
        m.tally.deferred += t.deferred;
        m.tally.errors += t.errors;
        m.tally.unanswered += t.unanswered;
        m.tally.flow_lost |= t.flow_lost;
        m.rtts.extend(rtts);
    }
    if m.tally.flow_lost {
        eprintln!(
            "{} with {} apps at {} msgs/s each: an app's flow failed under it (its stack gave \
             up on the peer); its remaining messages count as never echoed",
            spec.design, spec.apps, spec.rate
        );
    }
    if m.tally.unanswered > 0 {
        eprintln!(
            "{} with {} apps at {} msgs/s each: {} of the window's messages never came back \
             (counted at the time the apps stopped waiting)",
            spec.design, spec.apps, spec.rate, m.tally.unanswered
        );
    }
    if m.rtts.is_empty() {
        bail!(
            "{} with {} apps: no message was due in the window",
            spec.design,
            spec.apps
        );
    }
    Ok(m)
}

/// The rounds of one point, pooled into a row.
#[derive(Debug, Default)]
pub struct Pooled {
    rounds: Vec<Measured>,
}

impl Pooled {
    pub fn push(&mut self, m: Measured) {
        self.rounds.push(m);
    }

    pub fn rounds(&self) -> usize {
        self.rounds.len()
    }

    /// The row of `design` with `apps` at `load` (offering `rate` per app): percentiles of
    /// every round's round trips together, CPU as the mean of the rounds' and their spread.
    pub fn row(&self, design: &str, apps: usize, load: &str, rate: f64) -> Result<Row> {
        if self.rounds.is_empty() {
            bail!("{design}, {apps} apps, {load}: no round measured");
        }
        let mut all = Histogram::<u64>::new(3).context("histogram")?;
        let mut p99s = Vec::new();
        for m in &self.rounds {
            let mut h = Histogram::<u64>::new(3).context("histogram")?;
            for &r in &m.rtts {
                h.record(r.max(1)).context("recording a round trip")?;
            }
            p99s.push(h.value_at_quantile(0.99) as f64 / 1e3);
            all.add(&h).context("pooling rounds")?;
        }
        let per_round = |f: &dyn Fn(&Measured) -> f64| -> Vec<f64> { self.rounds.iter().map(f).collect() };
        let cores = per_round(&|m| m.stack_ns as f64 / 1e9 / m.wall_s.max(1e-9));
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let received: u64 = self.rounds.iter().map(|m| m.tally.received).sum();
        let sent: u64 = self.rounds.iter().map(|m| m.tally.sent).sum();
        let window_s: f64 = self.rounds.iter().map(|m| m.wall_s).sum();
        let counts: Option<Vec<Counts>> = self.rounds.iter().map(|m| m.counts).collect();
        let per_op = |f: fn(&Counts) -> u64, scale: f64| {
            counts
                .as_ref()
                .filter(|_| received > 0)
                .map(|c| c.iter().map(f).sum::<u64>() as f64 / scale / received as f64)
        };
        let q = |q: f64| all.value_at_quantile(q) as f64 / 1e3;
        Ok(Row {
            design: design.into(),
            apps,
            load: load.into(),
            offered_msgs_per_s: rate * apps as f64,
            msgs_per_s: received as f64 / window_s.max(1e-9),
            sent,
            received,
            p50_us: q(0.50),
            p99_us: q(0.99),
            p99_9_us: q(0.999),
            max_us: all.max() as f64 / 1e3,
            cores: mean(&cores),
            cores_min: min(&cores),
            cores_max: max(&cores),
            p99_min_us: min(&p99s),
            p99_max_us: max(&p99s),
            app_cores: mean(&per_round(&|m| m.app_ns as f64 / 1e9 / m.wall_s.max(1e-9))),
            peer_cores: mean(&per_round(&|m| m.peer_ns as f64 / 1e9 / m.wall_s.max(1e-9))),
            ctx_switches_per_op: per_op(|c| c.switches, 1.0),
            migrations_per_op: per_op(|c| c.migrations, 1.0),
            task_clock_us_per_op: per_op(|c| c.task_clock_ns, 1e3),
            rounds: self.rounds.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(rtts_us: &[u64], stack_ms: u64, switches: u64) -> Measured {
        Measured {
            tally: Tally {
                sent: rtts_us.len() as u64,
                received: rtts_us.len() as u64,
                ..Default::default()
            },
            rtts: rtts_us.iter().map(|u| u * 1000).collect(),
            wall_s: 1.0,
            stack_ns: stack_ms * 1_000_000,
            app_ns: 10_000_000,
            peer_ns: 50_000_000,
            counts: Some(Counts {
                switches,
                migrations: 1,
                task_clock_ns: stack_ms * 1_000_000,
                ..Counts::default()
            }),
        }
    }

    #[test]
    fn a_row_pools_round_trips_and_averages_cpu_over_rounds() {
        let mut p = Pooled::default();
        p.push(measured(&[10; 100], 200, 100));
        p.push(measured(&[1000; 100], 600, 300));
        let r = p.row("compacting", 4, "low", 25.0).unwrap();
        assert_eq!(r.offered_msgs_per_s, 100.0);
        assert_eq!((r.sent, r.received, r.rounds), (200, 200, 2));
        assert_eq!(r.msgs_per_s, 100.0);
        // Half the samples are 10 µs, half 1000 µs (within the histogram's 3 digits).
        assert!((r.p50_us - 10.0).abs() < 0.1, "{r:?}");
        assert!((r.p99_us - 1000.0).abs() < 1.0, "{r:?}");
        assert!(
            (r.cores - 0.4).abs() < 1e-9 && r.cores_min == 0.2 && r.cores_max == 0.6,
            "{r:?}"
        );
        assert!((r.p99_min_us - 10.0).abs() < 0.1 && (r.p99_max_us - 1000.0).abs() < 1.0);
        assert!((r.app_cores - 0.01).abs() < 1e-9 && (r.peer_cores - 0.05).abs() < 1e-9);
        assert_eq!(r.ctx_switches_per_op, Some(2.0));
        assert_eq!(r.migrations_per_op, Some(0.01));
        // 800 ms of task-clock over 200 echoes: 4000 µs each.
        assert!((r.task_clock_us_per_op.unwrap() - 4000.0).abs() < 1e-6);
    }

    #[test]
    fn counters_missing_in_a_round_make_them_null_and_no_rounds_is_an_error() {
        let mut p = Pooled::default();
        p.push(measured(&[10; 10], 100, 5));
        let mut m = measured(&[10; 10], 100, 5);
        m.counts = None;
        p.push(m);
        let r = p.row("library_os", 1, "high", 10.0).unwrap();
        assert_eq!((r.ctx_switches_per_op, r.task_clock_us_per_op), (None, None));
        assert!(Pooled::default().row("library_os", 1, "high", 10.0).is_err());
    }
}
