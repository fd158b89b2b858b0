// SPDX-License-Identifier: GPL-2.0-only
//! The CPU-efficiency benchmark behind `mq-bench-efficiency`: what a network stack costs N
//! apps when each app links its own copy and spins on it (the library-OS design Snap
//! replaced) against one `snap-host` serving them all in each of Snap's engine modes.
//!
//! ```text
//!  namespace eff-<pid>-a                                   namespace eff-<pid>-b
//!  library_os: app i = PonyEngine + UDP socket :7100+i,
//!              one thread spinning (stack and app) ══╗
//!  dedicated | spreading | compacting:               ║     snap-host (spreading):
//!    app i ── PonyClient ──▶ snap-host: PonyEngine   ╠ veth ═▶ PonyEngine :7000
//!    (blocks between messages)  UDP :7000 ═══════════╝         ▲ echo app (PonyClient)
//! ```
//!
//! Every app is a process ([`app`]) sending `msg_bytes` messages open-loop at its load's
//! rate to the echo peer, which is the same in every design ([`stack::Peer`]). A round runs
//! every design once (the order rotates from round to round), each at every app count and
//! load ([`point`]); a row pools its rounds. Cores = CPU time of the threads that run the
//! stack over the measuring window: the library-OS apps' processes (their one thread is
//! both app and stack), or the whole `snap-host` process (engine threads, control thread,
//! compacting monitor); the apps' own CPU in Snap's designs and the peer's CPU are
//! reported beside it.
//!
//! # Report
//!
//! [`mq_report::efficiency::Report`] has the schema, [`mq_report::efficiency::targets`]
//! the issue's target.

pub mod app;
pub mod point;
pub mod stack;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use mq_report::efficiency::{Report, Row, DESIGNS, LOADS};

use self::point::{Pooled, Spec};
use self::stack::{Host, Peer};
use crate::pony_bench::netns::Veth;

/// Messages per second per app at low, medium and high load, by default. Low leaves the
/// stack idle nearly all the time; high is about where one spreading engine on this
/// machine's CPUs keeps up with 8 apps.
pub const RATES: [f64; 3] = [200.0, 2_000.0, 8_000.0];
/// The veth's MTU.
const MTU: u32 = 1500;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Designs, a subset of [`DESIGNS`].
    pub designs: Vec<String>,
    /// App counts.
    pub apps: Vec<usize>,
    /// Per-app rates at low, medium and high load.
    pub rates: [f64; 3],
    pub msg_bytes: usize,
    pub rounds: usize,
    pub warmup: Duration,
    pub window: Duration,
    pub microquanta: bool,
}

/// Which CPUs each Snap mode's engine may use on `cpus` CPUs (empty: any): dedicated on the
/// last CPU, compacting on all, spreading anywhere.
pub fn engine_cores(mode: &str, cpus: usize) -> Result<Vec<usize>> {
    Ok(match mode {
        "dedicated" => vec![cpus - 1],
        "compacting" => (0..cpus).collect(),
        "spreading" => Vec::new(),
        other => bail!("unknown mode {other:?}"),
    })
}

/// The designs of one round, rotated by the round's number so that no design always runs
/// first (or right after the same one).
pub fn round_order(designs: &[String], round: usize) -> Vec<String> {
    let mut d = designs.to_vec();
    if !d.is_empty() {
        let n = round % d.len();
        d.rotate_left(n);
    }
    d
}

/// Checks `--designs`: each one of [`DESIGNS`].
pub fn check_designs(designs: &[String]) -> Result<()> {
    for d in designs {
        if !DESIGNS.contains(&d.as_str()) {
            bail!("unknown design {d:?}: expected some of {}", DESIGNS.join(","));
        }
    }
    if designs.is_empty() {
        bail!("no design to run");
    }
    Ok(())
}

/// On Ctrl-C, SIGTERM or SIGHUP: `restore()`, kills the hosts and apps this run started,
/// removes its temporary directories and live namespaces and exits with 130. Call once, before the first namespace.
pub fn install_cleanup(program: &'static str, restore: fn()) -> Result<()> {
    ctrlc::set_handler(move || {
        eprintln!("{program}: interrupted; restoring what it changed and removing its namespaces");
        restore();
        stack::kill_children();
        stack::remove_dirs();
        crate::pony_bench::netns::remove_all();
        std::process::exit(130);
    })
    .context("installing the Ctrl-C handler")
}

/// A scratch directory for the apps' round-trip files, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("mq-bench-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs every design × app count × load, `cfg.rounds` times, against `snap_host`.
pub fn run(cfg: &BenchConfig, snap_host: &Path) -> Result<Report> {
    check_designs(&cfg.designs)?;
    let cpus = crate::sched_bench::cpus();
    let veth = Veth::create_prefixed("eff", "", MTU)?;
    let scratch = Scratch::new("efficiency")?;
    let peer = Peer::start(&veth, snap_host, cfg.microquanta).context("starting the echo peer")?;
    let mut pooled: BTreeMap<(usize, usize, usize), Pooled> = BTreeMap::new();
    let mut number = 0;
    let mut hosts = 0;
    for round in 0..cfg.rounds {
        for design in round_order(&cfg.designs, round) {
            let host = match design.as_str() {
                "library_os" => None,
                mode => {
                    let config = stack::host_config(
                        mode,
                        &engine_cores(mode, cpus)?,
                        &stack::host_bind(hosts),
                        cfg.microquanta,
                    );
                    hosts += 1;
                    Some(
                        Host::start(&veth, stack::APPS, snap_host, mode, &config)
                            .with_context(|| format!("starting the {mode} host"))?,
                    )
                }
            };
            for &apps in &cfg.apps {
                for (l, &rate) in cfg.rates.iter().enumerate() {
                    let spec = Spec {
                        design: &design,
                        apps,
                        rate,
                        msg_bytes: cfg.msg_bytes,
                        warmup: cfg.warmup,
                        window: cfg.window,
                        number,
                    };
                    number += 1;
                    let m = point::run(&veth, spec, host.as_ref(), &peer, &scratch.0).with_context(|| {
                        format!("round {round}: {design}, {apps} apps, {} load", LOADS[l])
                    })?;
                    eprintln!(
                        "mq-bench-efficiency: round {}/{}: {design:<10} {apps} apps {:<6} p50 {:>8.1} µs, {} echoes, stack {:.2} cores",
                        round + 1,
                        cfg.rounds,
                        LOADS[l],
                        m.rtts.get(m.rtts.len() / 2).map_or(0.0, |&r| r as f64 / 1e3),
                        m.tally.received,
                        m.stack_ns as f64 / 1e9 / m.wall_s.max(1e-9)
                    );
                    let d = DESIGNS.iter().position(|x| *x == design).expect("checked");
                    pooled.entry((d, apps, l)).or_default().push(m);
                }
            }
            if let Some(h) = host {
                h.stop().with_context(|| format!("stopping the {design} host"))?;
            }
        }
    }
    peer.stop().context("stopping the echo peer")?;
    drop(veth);
    let rows = pooled
        .iter()
        .map(|(&(d, apps, l), p)| p.row(DESIGNS[d], apps, LOADS[l], cfg.rates[l]))
        .collect::<Result<Vec<Row>>>()?;
    let most = cfg.apps.iter().copied().max().unwrap_or(0);
    Ok(Report {
        platform: crate::modes_bench::platform(cpus),
        path: "veth".into(),
        nic: "udp".into(),
        msg_bytes: cfg.msg_bytes,
        rounds: cfg.rounds,
        seconds: cfg.window.as_secs_f64(),
        warmup_ms: cfg.warmup.as_millis() as u64,
        layout: describe_layout(cpus),
        peer: "snap-host with one spreading Pony engine (UDP) and the echo app, in its own \
               namespace; the same for every design"
            .into(),
        counters: DESCRIBE.into(),
        oversubscribed: oversubscribed(most, cpus),
        targets: mq_report::efficiency::targets(&rows),
        rows,
    })
}

/// Where things run, for the report.
pub fn describe_layout(cpus: usize) -> String {
    format!(
        "{cpus} CPUs, nothing pinned but Snap's engines: dedicated on CPU {}, compacting on \
         CPUs 0..{}, spreading anywhere; apps and the peer wherever the scheduler puts them",
        cpus - 1,
        cpus - 1
    )
}

/// Whether the library-OS design's spinning apps outnumber the CPUs.
pub fn oversubscribed(apps: usize, cpus: usize) -> String {
    if apps > cpus {
        format!(
            "yes: with {apps} apps the library-OS design spins {apps} threads on {cpus} CPUs \
             (with the peer and the scheduler's other work beside them), {:.1}x \
             oversubscribed; that is the point of the comparison: each app's copy of the stack \
             polls whether or not it has work",
            apps as f64 / cpus as f64
        )
    } else {
        format!("no: at most {apps} spinning apps on {cpus} CPUs")
    }
}

/// Header of [`table_row`]'s table.
pub const TABLE_HEADER: &str =
    "design      apps load    offered/s    msgs/s   p50 µs   p99 µs p99.9 µs  cores (min-max)    app  peer";

/// One line of the human table.
pub fn table_row(r: &Row) -> String {
    format!(
        "{:<11} {:>4} {:<6} {:>9.0} {:>9.0} {:>8.1} {:>8.1} {:>8.1} {:>6.3} ({:.3}-{:.3}) {:>5.2} {:>5.2}",
        r.design,
        r.apps,
        r.load,
        r.offered_msgs_per_s,
        r.msgs_per_s,
        r.p50_us,
        r.p99_us,
        r.p99_9_us,
        r.cores,
        r.cores_min,
        r.cores_max,
        r.app_cores,
        r.peer_cores
    )
}

/// The human table of a report, and its targets.
pub fn table(r: &Report) -> String {
    let mut s = format!(
        "CPU efficiency: library OS vs Snap, {} on {}, kernel {}, {} round(s) of {} s\n{}\n{TABLE_HEADER}\n",
        r.platform.scheduler, r.platform.machine, r.platform.kernel, r.rounds, r.seconds, r.layout
    );
    for row in &r.rows {
        s.push_str(&table_row(row));
        s.push('\n');
    }
    for t in &r.targets {
        s.push_str(&format!("target: {}: {} ({})\n", t.name, t.verdict(), t.from));
    }
    s
}

/// How the rows count, for the report.
pub const DESCRIBE: &str = "perf_event_open software counters (context switches, CPU \
    migrations, task-clock) per thread of the stack (the library-OS apps' threads; every \
    thread of the snap-host process), user and kernel, over the measuring window, divided by the \
    echoes received";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_rotate_the_designs() {
        let d: Vec<String> = DESIGNS.iter().map(|s| s.to_string()).collect();
        assert_eq!(round_order(&d, 0), d);
        assert_eq!(round_order(&d, 1)[0], "dedicated");
        assert_eq!(round_order(&d, 1)[3], "library_os");
        assert_eq!(round_order(&d, 4), d);
        assert!(round_order(&[], 3).is_empty());
    }

    #[test]
    fn designs_and_modes_are_checked() {
        assert!(check_designs(&["library_os".into(), "compacting".into()]).is_ok());
        assert!(check_designs(&["lazy".into()]).is_err());
        assert!(check_designs(&[]).is_err());
        assert_eq!(engine_cores("dedicated", 2).unwrap(), [1]);
        assert_eq!(engine_cores("compacting", 2).unwrap(), [0, 1]);
        assert!(engine_cores("spreading", 2).unwrap().is_empty());
        assert!(engine_cores("library_os", 2).is_err());
    }

    #[test]
    fn oversubscription_is_stated() {
        assert!(
            oversubscribed(8, 2).starts_with("yes"),
            "{}",
            oversubscribed(8, 2)
        );
        assert!(oversubscribed(8, 2).contains("4.0x"));
        assert!(oversubscribed(2, 2).starts_with("no"));
    }
}
