//! The soak test: two real `snap-host` processes in two network namespaces joined by a veth
//! pair, each with a Pony engine on a UDP NIC wrapped in the fault injector (5 % loss, 1 %
//! duplication, 2 % reordering, 0.1 % corruption of sent packets, via the engine option
//! `faults`), and 100 000 messages of 1 B – 16 KiB over 64 streams (one flow each) from an
//! app on host A to an app on host B. Every message must arrive exactly once, in order per
//! stream, byte-exact; the injector must have injected every kind of fault.
//!
//! ```text
//!   netns snap-veth-PIDk-a                                     netns snap-veth-PIDk-b
//!   snap-host A: pony0 ─ FaultyNic ─ UdpNic 10.77.0.1 ══ veth ══ 10.77.0.2 UdpNic ─ FaultyNic ─ pony0 :snap-host B
//!        ▲ control socket (a path: reachable from the root namespace)                 ▲
//!   sender app (thread of this test) ── 64 flows ──────────────────────────▶ receiver app (thread)
//! ```
//!
//! The hosts start from threads that entered their namespaces (a child inherits its
//! creator's network namespace); the apps stay in the root namespace and attach through the
//! hosts' control sockets, which are filesystem paths.
//!
//! `soak_100k_messages_over_64_streams` is the short form, one round, in the normal suite.
//! `soak_for_minutes` (ignored; `cargo xtask soak [--minutes N]` runs it) repeats rounds on
//! the same two hosts until `SNAP_SOAK_MINUTES` (default 10) have passed and prints a
//! summary. Both need root and iproute2's `ip`; without them the short form prints why and
//! passes, the long form (only ever run on purpose) fails saying why.

mod apps;
mod traffic;

use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use snap_host::process::HostProcess;
use snap_ipc::control::client::SnapClient;
use snap_ipc::control::protocol::HostStatus;
use snap_test_netns::{skip_reason, Topology, ADDR_A, ADDR_B};

use apps::ENGINE;
use traffic::Plan;

/// The Pony engines' UDP port (each host has its own namespace, hence its own port space).
const PORT: u16 = 7100;
/// The faults each host's NIC injects into the packets it sends.
const FAULTS: &str = "{ loss = 0.05, duplicate = 0.01, reorder = 0.02, corrupt = 0.001";
/// How long a host may take to start.
const START: Duration = Duration::from_secs(20);
/// One round's traffic.
const STREAMS: u32 = 64;
const MESSAGES: u32 = 100_000;

/// Two hosts in two namespaces. Dropped in field order: hosts first (killed), then the
/// namespaces.
struct Soak {
    hosts: [HostProcess; 2],
    _topo: Topology,
    _dirs: [TempDir; 2],
}

/// A private directory for a host's configuration and socket, removed at the end.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Soak {
    /// Sets up the link and starts both hosts, or says why this machine cannot.
    fn start(tag: char) -> Result<Self, String> {
        if let Some(why) = skip_reason() {
            return Err(why);
        }
        let topo = Topology::new(tag, 1500);
        let dirs = [0, 1].map(|i| {
            let dir = std::env::temp_dir().join(format!("snap-soak-{}{tag}-{i}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        });
        let start = |i: usize, addr: &str| {
            let config = format!(
                "microquanta = false\n\
                 [[group]]\nname = \"pony\"\nmode = \"spreading\"\n\
                 [[group.engine]]\nname = \"{ENGINE}\"\nkind = \"pony\"\n\
                 [group.engine.options]\nnic = \"udp\"\nbind = \"{addr}:{PORT}\"\n\
                 faults = {FAULTS}, seed = {} }}\n",
                i + 1
            );
            let dir = dirs[i].0.clone();
            topo.spawn_in(i, move || {
                let bin = Path::new(env!("CARGO_BIN_EXE_snap-host"));
                HostProcess::start(bin, &dir, &config, START, None)
            })
            .join()
            .expect("starting a host panicked")
            .unwrap_or_else(|e| panic!("snap-host {i} in its namespace: {e}"))
        };
        let hosts = [start(0, ADDR_A), start(1, ADDR_B)];
        Ok(Self {
            hosts,
            _topo: topo,
            _dirs: dirs,
        })
    }

    /// One round: a receiver on host B listening on `service`, a sender on host A.
    fn round(&self, plan: Plan, service: u32, epoch: Instant) -> Round {
        let t0 = Instant::now();
        let (ready_tx, ready) = mpsc::channel();
        let b = self.hosts[1].socket().to_owned();
        let receiver = thread::spawn(move || apps::receive(&b, service, plan, epoch, ready_tx));
        ready.recv_timeout(apps::STALL).expect("the receiver listens");
        let a = self.hosts[0].socket().to_owned();
        let peer = format!("{ADDR_B}:{PORT}");
        let sender = thread::spawn(move || apps::send(&a, &peer, service, plan, epoch));
        let got = receiver.join().expect("receiver panicked");
        let sent = sender.join().expect("sender panicked");
        let (checker, receiver) = got.unwrap_or_else(|e| panic!("round {}: {e}", plan.round));
        let sent = sent.unwrap_or_else(|e| panic!("round {}: {e}", plan.round));
        assert_eq!(sent.messages, u64::from(plan.messages));
        drop(receiver);
        Round {
            messages: checker.messages,
            bytes: checker.bytes,
            latencies: checker.latencies,
            elapsed: t0.elapsed(),
        }
    }

    /// Both hosts' status, after checking that their engines are healthy.
    fn status(&self) -> [HostStatus; 2] {
        [0, 1].map(|i| {
            let mut c = SnapClient::connect(self.hosts[i].socket()).expect("status connection");
            let s = c.status().expect("status");
            assert!(
                s.runtime.unhealthy().is_empty(),
                "host {i}: {:?}",
                s.runtime.unhealthy()
            );
            s
        })
    }
}

/// What one round delivered.
struct Round {
    messages: u64,
    bytes: u64,
    latencies: Vec<u64>,
    elapsed: Duration,
}

/// Counter `name` of both hosts' engines, summed.
fn total(status: &[HostStatus; 2], name: &str) -> u64 {
    status
        .iter()
        .map(|s| {
            s.counter(ENGINE, name)
                .unwrap_or_else(|| panic!("no counter {name}"))
        })
        .sum()
}

/// The run's summary, from the rounds and both hosts' counters; checks that faults of every
/// kind were injected and no flow failed.
fn summarize(soak: &Soak, rounds: &[Round], wall: Duration) -> String {
    let status = soak.status();
    let faults: Vec<(&str, u64)> = ["dropped", "duplicated", "reordered", "corrupted"]
        .into_iter()
        .map(|f| (f, total(&status, &format!("faults.tx.{f}"))))
        .collect();
    for (what, n) in &faults {
        assert!(*n > 0, "the fault injector {what} no packet: {faults:?}");
    }
    assert_eq!(total(&status, "flows_failed"), 0, "a flow failed");
    // A flipped bit never passes CRC32C: the corrupted packets that reached the peer were
    // dropped as malformed rather than delivered (the byte-exact check above agrees).
    assert!(total(&status, "malformed") > 0, "no corrupted packet was caught");
    let mut lat: Vec<u64> = rounds.iter().flat_map(|r| r.latencies.iter().copied()).collect();
    lat.sort_unstable();
    let pct = |p: f64| Duration::from_nanos(lat[((lat.len() - 1) as f64 * p) as usize]);
    let messages: u64 = rounds.iter().map(|r| r.messages).sum();
    let bytes: u64 = rounds.iter().map(|r| r.bytes).sum();
    let slowest = rounds.iter().map(|r| r.elapsed).max().unwrap_or_default();
    format!(
        "soak: {} round(s) in {:.1} s (slowest {:.1} s): {messages} messages, {bytes} body bytes \
         exactly once, in order, byte-exact; errors 0\n\
         soak: faults injected: {}\n\
         soak: retransmits {}, RTOs {}, duplicates dropped {}, malformed packets dropped {}\n\
         soak: message latency p50 {:?}, p99 {:?}, max {:?}",
        rounds.len(),
        wall.as_secs_f64(),
        slowest.as_secs_f64(),
        faults
            .iter()
            .map(|(f, n)| format!("{f} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        total(&status, "retransmits"),
        total(&status, "rtos"),
        total(&status, "dups_dropped"),
        total(&status, "malformed"),
        pct(0.50),
        pct(0.99),
        pct(1.0),
    )
}

fn plan(round: u32) -> Plan {
    Plan {
        streams: STREAMS,
        messages: MESSAGES,
        round,
    }
}

#[test]
fn soak_100k_messages_over_64_streams() {
    let soak = match Soak::start('k') {
        Ok(s) => s,
        Err(why) => return eprintln!("skipping the soak test: {why}"),
    };
    let (epoch, t0) = (Instant::now(), Instant::now());
    let round = soak.round(plan(0), 100, epoch);
    eprintln!("{}", summarize(&soak, &[round], t0.elapsed()));
}

/// The long form: rounds until `SNAP_SOAK_MINUTES` (default 10) have passed; no round starts
/// after that. Run by `cargo xtask soak`.
#[test]
#[ignore = "long (10 minutes by default): run by `cargo xtask soak`"]
fn soak_for_minutes() {
    let minutes: f64 = match std::env::var("SNAP_SOAK_MINUTES") {
        Ok(m) => m
            .parse()
            .unwrap_or_else(|_| panic!("SNAP_SOAK_MINUTES={m:?} is not a number")),
        Err(_) => 10.0,
    };
    // Run on purpose only, so a machine that cannot is a failure, not a silent skip.
    let soak = Soak::start('m').unwrap_or_else(|why| panic!("the soak cannot run here: {why}"));
    let (epoch, t0) = (Instant::now(), Instant::now());
    let until = t0 + Duration::from_secs_f64(minutes * 60.0);
    let mut rounds = Vec::new();
    while Instant::now() < until {
        let n = rounds.len() as u32;
        let round = soak.round(plan(n), 100 + n, epoch);
        eprintln!(
            "soak: round {n}: {} messages in {:.1} s",
            round.messages,
            round.elapsed.as_secs_f64()
        );
        rounds.push(round);
    }
    eprintln!("{}", summarize(&soak, &rounds, t0.elapsed()));
}
