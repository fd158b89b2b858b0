// SPDX-License-Identifier: GPL-2.0-only
//! `mq-bench-upgrade`: transparent upgrade under load, seen from `snapctl` and from the apps.
//!
//! Per flow count: two `snap-host` processes ([`hosts`]), each with one Pony engine, in two
//! network namespaces joined by a veth pair (or on loopback); Pony apps ([`apps`]) on both
//! drive a ping-pong over N flows and a bulk stream; host A is upgraded `upgrades` times
//! through `snapctl upgrade --json`, with steady traffic between upgrades. Every message
//! carries its flow's sequence number and a checksum and is checked at its receiver
//! ([`message`]): lost, duplicated, reordered and corrupt are counted exactly. snapctl's
//! per-engine blackout and brownout are recorded per upgrade beside the ping-pong's own
//! view ([`timeline`]): the longest time without an echo around the upgrade, and the
//! round trips over time.
//!
//! ```text
//!   main thread: start hosts → apps → [interval, snapctl upgrade A] × upgrades → interval
//!                → stop senders → let receivers drain → stop receivers → counts
//!   A-side (upgraded): ping client, bulk sender     B-side: echo server, bulk sink
//! ```

pub mod apps;
pub mod hosts;
pub mod message;
pub mod timeline;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use mq_report::upgrade::{self, Count, Percentiles, Report, Run, Upgrade};

use crate::pony_bench::netns::Veth;
use apps::{Signals, BULK, ECHOES, REQUESTS};
use hosts::Hosts;

/// How long receivers get to take what the senders sent once they stopped.
const DRAIN: Duration = Duration::from_secs(10);

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub flows: Vec<usize>,
    pub upgrades: usize,
    pub interval: Duration,
    pub ping_pong_bytes: usize,
    pub bulk_bytes: usize,
    pub bulk_window: usize,
    pub snap_host: PathBuf,
    pub snapctl: PathBuf,
    /// `snapctl upgrade --binary` (else the running host's own binary).
    pub binary: Option<PathBuf>,
}

/// Runs every flow count over `veth` (or loopback) and builds the report.
pub fn run(cfg: &Config, veth: Option<&Veth>) -> Result<Report> {
    let mut runs = Vec::new();
    for &flows in &cfg.flows {
        eprintln!("mq-bench-upgrade: {flows} flows, {} upgrades", cfg.upgrades);
        let r = run_flows(cfg, veth, flows).with_context(|| format!("the {flows}-flow run"))?;
        eprintln!("{}", line(&r));
        runs.push(r);
    }
    let moves = |pick: fn(&mq_report::upgrade::EngineMove) -> f64| -> Vec<f64> {
        runs.iter()
            .flat_map(|r| &r.upgrades)
            .flat_map(|u| &u.engines)
            .map(pick)
            .collect()
    };
    Ok(Report {
        platform: crate::modes_bench::platform(crate::sched_bench::cpus()),
        path: if veth.is_some() { "veth" } else { "loopback" }.into(),
        hosts: format!(
            "two snap-host processes{}, one Pony engine each (UDP NIC); host A upgraded",
            if veth.is_some() {
                " in two network namespaces joined by a veth pair"
            } else {
                " on 127.0.0.1"
            }
        ),
        upgrades: cfg.upgrades,
        flows: cfg.flows.clone(),
        ping_pong_bytes: cfg.ping_pong_bytes,
        bulk_bytes: cfg.bulk_bytes,
        bulk_window: cfg.bulk_window,
        interval_ms: cfg.interval.as_millis() as u64,
        blackout_ms: Percentiles::of(&moves(|e| e.blackout_ms)),
        brownout_ms: Percentiles::of(&moves(|e| e.brownout_ms)),
        lost: Count::of(&runs, |c| c.lost),
        duplicated: Count::of(&runs, |c| c.duplicated),
        reordered: Count::of(&runs, |c| c.reordered),
        corrupt: Count::of(&runs, |c| c.corrupt),
        failed_upgrades: runs
            .iter()
            .flat_map(|r| &r.upgrades)
            .filter(|u| u.error.is_some())
            .count(),
        targets: upgrade::targets(&runs),
        runs,
    })
}

fn join<T>(h: JoinHandle<Result<T>>, who: &str) -> Result<T> {
    h.join().map_err(|_| anyhow!("the {who} thread panicked"))?
}

fn run_flows(cfg: &Config, veth: Option<&Veth>, flows: usize) -> Result<Run> {
    let dir = std::env::temp_dir().join(format!("mq-bench-upgrade-{}-{flows}", std::process::id()));
    let mut hosts = Hosts::start(&cfg.snap_host, veth, dir)?;
    let sig = Signals::new();
    let spawn_receiver = |service, echo| {
        let (socket, sig) = (hosts.socket(1).to_owned(), sig.clone());
        std::thread::spawn(move || apps::receiver(socket, service, echo, sig))
    };
    let echo = spawn_receiver(apps::ECHO, true);
    let sink = spawn_receiver(apps::SINK, false);
    // The listeners must be up before the flows open: a flow to a service nobody listens
    // on is refused.
    wait_listening(&hosts)?;
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let ping = {
        let (socket, peer, sig) = (hosts.socket(0).to_owned(), hosts.addr(1).to_owned(), sig.clone());
        let bytes = cfg.ping_pong_bytes;
        std::thread::spawn(move || apps::ping_client(socket, peer, flows, bytes, sig, ready_tx))
    };
    let bulk = {
        let (socket, peer, sig) = (hosts.socket(0).to_owned(), hosts.addr(1).to_owned(), sig.clone());
        let (bytes, window) = (cfg.bulk_bytes, cfg.bulk_window);
        std::thread::spawn(move || apps::bulk_sender(socket, peer, bytes, window, sig))
    };
    if ready.recv_timeout(Duration::from_secs(120)).is_err() {
        sig.stop_senders.store(true, Ordering::Relaxed);
        sig.stop_receivers.store(true, Ordering::Relaxed);
        join(ping, "ping client")?;
        return Err(anyhow!("the ping client did not open its {flows} flows"));
    }

    let mut upgrades = Vec::new();
    for index in 0..cfg.upgrades {
        std::thread::sleep(cfg.interval);
        let at = sig.start.elapsed();
        let (took, result) = hosts.upgrade(&cfg.snapctl, cfg.binary.as_deref());
        let mut u = Upgrade {
            index,
            at_ms: at.as_secs_f64() * 1e3,
            snapctl_ms: took.as_secs_f64() * 1e3,
            total_ms: None,
            old_pid: None,
            new_pid: None,
            engines: Vec::new(),
            gap_ms: None,
            max_rtt_ms: None,
            error: None,
        };
        match result {
            Ok(s) => {
                u.total_ms = Some(s.total_ms);
                u.old_pid = Some(s.old_pid);
                u.new_pid = Some(s.new_pid);
                u.engines = s.engines;
            }
            Err(e) => {
                eprintln!("mq-bench-upgrade: upgrade {index} failed: {e:#}");
                u.error = Some(format!("{e:#}"));
            }
        }
        upgrades.push(u);
    }
    std::thread::sleep(cfg.interval);

    sig.stop_senders.store(true, Ordering::Relaxed);
    let ping = join(ping, "ping client");
    let bulk = join(bulk, "bulk sender");
    // Whatever was sent gets its chance to arrive before the receivers stop counting.
    if let (Ok(p), Ok(b)) = (&ping, &bulk) {
        let want = [p.sent.iter().sum::<u64>(), p.sent.iter().sum(), b.sent];
        let deadline = Instant::now() + DRAIN;
        while Instant::now() < deadline
            && [REQUESTS, ECHOES, BULK]
                .iter()
                .any(|&i| sig.received[i].load(Ordering::Relaxed) < want[i])
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    sig.stop_receivers.store(true, Ordering::Relaxed);
    let echo = join(echo, "echo server");
    let sink = join(sink, "bulk sink");
    let (ping, bulk, echo, sink) = (ping?, bulk?, echo?, sink?);
    drop(hosts);

    let samples = &ping.samples;
    for u in &mut upgrades {
        let (gap, rtt) = timeline::around(samples, u.at_ms, u.at_ms + u.snapctl_ms);
        u.gap_ms = gap;
        u.max_rtt_ms = rtt;
    }
    let mut app_failures = Vec::new();
    for (who, errors, failed) in [
        ("ping client", &ping.errors, &ping.failed),
        ("echo server", &echo.errors, &echo.failed),
        ("bulk sender", &bulk.errors, &bulk.failed),
        ("bulk sink", &sink.errors, &sink.failed),
    ] {
        if !errors.is_empty() {
            eprintln!(
                "mq-bench-upgrade: {who}: {} error completions: {:?}",
                errors.len(),
                &errors[..errors.len().min(5)]
            );
        }
        if let Some(why) = failed {
            eprintln!("mq-bench-upgrade: {who} failed: {why}");
            app_failures.push(format!("{who}: {why}"));
        }
    }
    if ping.stalls > 0 {
        eprintln!("mq-bench-upgrade: {} pings got no echo within 5 s", ping.stalls);
    }
    if bulk.unacknowledged > 0 {
        eprintln!(
            "mq-bench-upgrade: {} bulk messages never completed",
            bulk.unacknowledged
        );
    }
    let moves = |pick: fn(&mq_report::upgrade::EngineMove) -> f64| -> Vec<f64> {
        upgrades.iter().flat_map(|u| &u.engines).map(pick).collect()
    };
    let bulk_bytes = bulk.sent * cfg.bulk_bytes as u64;
    Ok(Run {
        flows,
        blackout_ms: Percentiles::of(&moves(|e| e.blackout_ms)),
        brownout_ms: Percentiles::of(&moves(|e| e.brownout_ms)),
        checks: vec![
            echo.checker.finish(&ping.sent),
            ping.checker.finish(&ping.sent),
            sink.checker.finish(&[bulk.sent]),
        ],
        rtt_p50_us: timeline::p50_us(samples),
        round_trips: samples.len() as u64,
        bulk_messages: bulk.sent,
        bulk_mb_per_s: (bulk.secs > 0.0).then(|| bulk_bytes as f64 / 1e6 / bulk.secs),
        rtt: timeline::bins(samples),
        upgrades,
        app_failures,
    })
}

/// Waits until both receivers on host B listen, by opening (and closing) a flow to each
/// service from a probe session on host A until one is accepted.
fn wait_listening(hosts: &Hosts) -> Result<()> {
    let mut probe = pony_express::client::PonyClient::connect(
        hosts.socket(0),
        apps::ENGINE,
        pony_express::app::Completions::Block,
    )
    .context("probe: attaching to host A")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    for service in [apps::ECHO, apps::SINK] {
        loop {
            match probe.open_flow(hosts.addr(1), service) {
                Ok(flow) => {
                    probe.close_flow(flow)?;
                    break;
                }
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(anyhow!("service {service} on host B: {e}")),
            }
        }
    }
    Ok(())
}

/// One line per flow count for the progress output.
fn line(r: &Run) -> String {
    let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
    let c = |pick: fn(&mq_report::upgrade::Check) -> u64| r.checks.iter().map(pick).sum::<u64>();
    format!(
        "  {} flows: blackout p50 {} p99 {} max {} ms, brownout p50 {} ms, longest echo gap {} ms, \
         lost {} duplicated {} reordered {} corrupt {}, {} round trips (p50 {} µs), bulk {} MB/s",
        r.flows,
        f(r.blackout_ms.p50),
        f(r.blackout_ms.p99),
        f(r.blackout_ms.max),
        f(r.brownout_ms.p50),
        f(r.upgrades.iter().filter_map(|u| u.gap_ms).reduce(f64::max)),
        c(|c| c.lost),
        c(|c| c.duplicated),
        c(|c| c.reordered),
        c(|c| c.corrupt),
        r.round_trips,
        f(r.rtt_p50_us),
        f(r.bulk_mb_per_s),
    )
}

/// The run's headline and targets, for stderr.
pub fn table(r: &Report) -> String {
    let mut s = String::new();
    for run in &r.runs {
        s += &line(run);
        s.push('\n');
    }
    for t in &r.targets {
        s += &format!("  target {}: {} ({})\n", t.name, t.verdict(), t.from);
    }
    s
}
