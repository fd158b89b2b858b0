//! The policy stages end to end: two real `snap-host` processes in two network namespaces
//! joined by a veth pair (names prefixed `pol`, `wake` for the backpressure test), each with two tenants. A tenant is a Pony
//! engine whose NIC side is the pipeline `acl → overlay → shaper → UDP NIC`; the two
//! tenants use the *same* virtual addresses (192.168.1.1 and .2) in different virtual
//! networks (VNI 101 and 102), each on its own physical port.
//!
//! Every message carries its tenant in its first byte and its sequence number after it;
//! every app counts messages of another tenant as isolation violations, and every test
//! asserts there are none. Updates (ACL rules, overlay mappings) go through the control
//! plane (`SnapClient::stage_update`, what `snapctl stage update` sends) while traffic
//! flows.
//!
//! Needs root and iproute2 (without them each test prints why and passes).

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{test_dir, wait_until, TIMEOUT};
use pony_express::app::{Completion, Completions};
use pony_express::client::{ClientError, PonyClient};
use snap_host::process::HostProcess;
use snap_ipc::control::{HostStatus, SnapClient};
use snap_test_netns::{skip_reason, Topology, ADDR_A, ADDR_B};

/// Physical port of tenant `t`'s pipeline NIC.
fn port(tenant: u32) -> u16 {
    7000 + tenant as u16 - 1
}

/// Virtual endpoint of host `h` (0: A, 1: B); the same in both tenants.
fn virt(h: usize) -> String {
    format!("192.168.1.{}:9000", h + 1)
}

fn addr(h: usize) -> &'static str {
    [ADDR_A, ADDR_B][h]
}

/// Shaper rate of tenant 2 (tenant 1's is far above what the test sends).
const SHAPED_BPS: u64 = 40_000_000;

/// Flows tenant 2 sends on in the shaping test.
const FLOWS: usize = 4;

const ECHO: u32 = 7;
const SINK: u32 = 8;
const DENIED: u32 = 9;

/// B's tenant-1 rules: service 9 denied inbound.
const ACL_B1: &str = r#"
default = "allow"
rule = [{ action = "deny", service = 9, direction = "rx" }]
"#;

/// The replacement, sent under traffic: still denies 9 and allows 7 (now explicitly),
/// adds an unrelated deny, and defaults to deny: every packet of the echo flow is allowed
/// by both sets.
const ACL_B1_NEW: &str = r#"
default = "deny"
[[rule]]
action = "deny"
service = 9
[[rule]]
action = "deny"
peer = "192.168.1.77/32"
[[rule]]
action = "allow"
service = 7
"#;

fn overlay(me: usize, tenant: u32, other_physical: &str) -> String {
    format!(
        "tenant = [{{ tenant = {tenant}, vni = {vni}, endpoint = \"{me_v}\" }}]\n\
         mapping = [{{ vni = {vni}, endpoint = \"{other_v}\", physical = \"{other_physical}\" }}]\n",
        vni = 100 + tenant,
        me_v = virt(me),
        other_v = virt(1 - me),
    )
}

fn shaper(tenant: u32, rate_bps: u64) -> String {
    format!(
        "granularity_ns = 10000\nslots = 4096\ncapacity = 1024\n\
         class = [{{ tenant = {tenant}, rate_bps = {rate_bps}, burst_bytes = 15000 }}]\n"
    )
}

fn host_config(me: usize) -> String {
    let mut c = String::from(
        "microquanta = false\n\
         [[group]]\nname = \"pony\"\nmode = \"spreading\"\n\
         [[group.engine]]\nname = \"t1\"\nkind = \"pony\"\noptions = { pipeline = \"p1\" }\n\
         [[group.engine]]\nname = \"t2\"\nkind = \"pony\"\noptions = { pipeline = \"p2\" }\n\
         [[group]]\nname = \"stages\"\nmode = \"spreading\"\n",
    );
    for tenant in [1u32, 2] {
        let acl = if me == 1 && tenant == 1 {
            ACL_B1.to_owned()
        } else {
            "default = \"allow\"\n".to_owned()
        };
        let rate = if tenant == 2 { SHAPED_BPS } else { 1_000_000_000 };
        let other = format!("{}:{}", addr(1 - me), port(tenant));
        for (name, kind, settings) in [
            (format!("acl{tenant}"), "acl", acl),
            (format!("ov{tenant}"), "overlay", overlay(me, tenant, &other)),
            (format!("sh{tenant}"), "shaper", shaper(tenant, rate)),
        ] {
            if kind == "acl" {
                c += &format!("[[pipeline]]\nname = \"p{tenant}\"\nbuffers = 2048\n");
            }
            c += &format!(
                "[[pipeline.stage]]\nname = \"{name}\"\nkind = \"{kind}\"\ngroup = \"stages\"\n\
                 [pipeline.stage.settings]\n{settings}"
            );
        }
        c += &format!(
            "[pipeline.nic]\nnic = \"udp\"\nbind = \"{}:{}\"\n",
            addr(me),
            port(tenant)
        );
    }
    c
}

/// Two hosts, killed before the namespaces go (field order).
struct Pair {
    hosts: [HostProcess; 2],
    _topo: Topology,
}

impl Pair {
    fn start(tag: char) -> Option<Self> {
        Self::start_prefixed("pol", tag)
    }

    /// Like [`Pair::start`], with namespaces and interfaces named from `prefix`.
    fn start_prefixed(prefix: &str, tag: char) -> Option<Self> {
        if let Some(why) = skip_reason() {
            eprintln!("skipping: {why}");
            return None;
        }
        let topo = Topology::prefixed(prefix, prefix, tag, 1500);
        let start = |i: usize| {
            let config = host_config(i);
            let dir = test_dir("policy-host");
            topo.spawn_in(i, move || {
                let bin = Path::new(env!("CARGO_BIN_EXE_snap-host"));
                HostProcess::start(bin, &dir, &config, TIMEOUT, None)
            })
            .join()
            .expect("starting a host panicked")
            .unwrap_or_else(|e| panic!("snap-host {i} in its namespace: {e}"))
        };
        let hosts = [start(0), start(1)];
        Some(Self { hosts, _topo: topo })
    }

    fn socket(&self, i: usize) -> PathBuf {
        self.hosts[i].socket().to_owned()
    }

    fn status(&self, i: usize) -> HostStatus {
        SnapClient::connect(self.socket(i)).unwrap().status().unwrap()
    }

    fn update(&self, i: usize, stage: &str, settings: &str) {
        let done = SnapClient::connect(self.socket(i))
            .unwrap()
            .stage_update(stage, settings)
            .unwrap_or_else(|e| panic!("update of {stage}: {e}"));
        assert!(done.contains("updated"), "{done}");
    }
}

/// A message of `tenant`: its tenant byte, its sequence number, then a pattern.
fn tagged(tenant: u32, seq: u32, len: usize) -> Vec<u8> {
    let mut m: Vec<u8> = (0..len)
        .map(|i| (i as u32 ^ seq.wrapping_mul(31)) as u8)
        .collect();
    m[0] = tenant as u8;
    m[1..5].copy_from_slice(&seq.to_le_bytes());
    m
}

/// What the apps of one host saw.
#[derive(Default)]
struct Seen {
    /// Messages of another tenant than the app's (must stay 0).
    violations: AtomicU64,
    /// Messages received by sinks.
    sunk: AtomicU64,
    /// Bytes received by sinks.
    sunk_bytes: AtomicU64,
    /// Flows accepted on the denied service (must stay 0).
    denied_accepted: AtomicU64,
    /// Out-of-order or corrupted messages at a sink (must stay 0).
    disorder: AtomicU64,
}

/// An app of `tenant` on engine `engine` listening on `service`: it echoes (ECHO) or
/// swallows (SINK, DENIED) what it gets, checking every message's tenant and order.
fn app(
    socket: PathBuf,
    engine: &'static str,
    tenant: u32,
    service: u32,
    seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut c = PonyClient::connect(&socket, engine, Completions::Block).unwrap();
        c.listen(service).unwrap();
        ready_tx.send(()).unwrap();
        let mut next_seq = std::collections::HashMap::<u64, u32>::new();
        while !stop.load(Ordering::Relaxed) {
            let m = match c.recv(Duration::from_millis(100)) {
                Ok(m) => m,
                Err(ClientError::Timeout(_)) => continue,
                Err(_) => return,
            };
            if service == DENIED {
                seen.denied_accepted.fetch_add(1, Ordering::Relaxed);
            }
            if m.data.first().copied() != Some(tenant as u8) {
                seen.violations.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if service == ECHO {
                let _ = c.send(m.flow, m.stream, &m.data);
            } else {
                // In order per flow, byte for byte.
                let seq = u32::from_le_bytes(m.data[1..5].try_into().unwrap());
                let next = next_seq.entry(m.flow).or_default();
                if seq != *next || m.data != tagged(tenant, seq, m.data.len()) {
                    seen.disorder.fetch_add(1, Ordering::Relaxed);
                }
                *next = seq + 1;
                seen.sunk.fetch_add(1, Ordering::Relaxed);
                seen.sunk_bytes.fetch_add(m.data.len() as u64, Ordering::Relaxed);
            }
        }
    });
    ready_rx.recv_timeout(TIMEOUT).expect("app listens");
}

/// `rounds` echo round trips of `tenant` on `flow`, each checked byte for byte; `between`
/// runs after each send.
fn echo(c: &mut PonyClient, tenant: u32, flow: u64, rounds: u32, mut between: impl FnMut(u32)) {
    for seq in 0..rounds {
        let m = tagged(tenant, seq, 1000 + (seq as usize * 997) % 6000);
        c.send(flow, 0, &m).unwrap();
        between(seq);
        let back = c
            .recv(TIMEOUT)
            .unwrap_or_else(|e| panic!("tenant {tenant} echo {seq}: {e}"));
        assert!(back.data == m, "tenant {tenant} echo {seq} differs");
    }
}

fn own(status: &HostStatus, stage: &str) -> serde_json::Value {
    status.counters[stage]["own"].clone()
}

fn drops(status: &HostStatus, stage: &str, reason: &str) -> u64 {
    status.counters[stage]["drops"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["reason"] == reason)
        .map(|d| d["packets"].as_u64().unwrap_or(0))
        .sum()
}

fn all_drops(status: &HostStatus, stage: &str) -> serde_json::Value {
    status.counters[stage]["drops"].clone()
}

#[test]
fn tenants_stay_apart_and_acl_rules_hold_through_an_update_under_traffic() {
    let Some(pair) = Pair::start('a') else { return };
    let seen_b = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    for (engine, tenant) in [("t1", 1), ("t2", 2)] {
        app(pair.socket(1), engine, tenant, ECHO, seen_b.clone(), stop.clone());
    }
    app(pair.socket(1), "t1", 1, DENIED, seen_b.clone(), stop.clone());

    // Each tenant reaches its own echo at the same virtual address.
    let mut a1 = PonyClient::connect(pair.socket(0), "t1", Completions::Block).unwrap();
    let mut a2 = PonyClient::connect(pair.socket(0), "t2", Completions::Block).unwrap();
    let f1 = a1.open_flow(&virt(1), ECHO).unwrap();
    let f2 = a2.open_flow(&virt(1), ECHO).unwrap();
    echo(&mut a1, 1, f1, 20, |_| {});
    echo(&mut a2, 2, f2, 20, |_| {});

    // The denied service: the Connect never gets past B's ACL.
    let refused = a1.open_flow(&virt(1), DENIED);
    assert!(refused.is_err(), "a flow to the denied service opened");
    let b = pair.status(1);
    let denied_before = drops(&b, "acl1", "deny_rule");
    assert!(denied_before > 0, "{}", all_drops(&b, "acl1"));
    assert_eq!(own(&b, "acl1")["rule_hits"][0], denied_before);

    // The rule set replaced while the echo flow carries traffic.
    echo(&mut a1, 1, f1, 60, |seq| {
        if seq == 30 {
            pair.update(1, "acl1", ACL_B1_NEW);
        }
    });
    let b = pair.status(1);
    assert_eq!(own(&b, "acl1")["replacements"], 1);
    assert_eq!(
        drops(&b, "acl1", "deny_rule"),
        denied_before,
        "{}",
        all_drops(&b, "acl1")
    );
    assert_eq!(drops(&b, "acl1", "deny_default"), 0, "{}", all_drops(&b, "acl1"));
    // The new set's allow rule (index 2) judged the flow's packets.
    assert!(
        own(&b, "acl1")["rule_hits"][2].as_u64().unwrap() > 60,
        "{}",
        own(&b, "acl1")
    );
    // A refused table changes nothing.
    let bad = SnapClient::connect(pair.socket(1)).unwrap().stage_update(
        "acl1",
        "default = \"allow\"\n[[rule]]\naction = \"deny\"\npeer = \"10.0.0.1/8\"",
    );
    assert!(bad.unwrap_err().to_string().contains("host bits"));
    echo(&mut a1, 1, f1, 5, |_| {});

    stop.store(true, Ordering::Relaxed);
    assert_eq!(seen_b.denied_accepted.load(Ordering::Relaxed), 0);
    assert_eq!(
        seen_b.violations.load(Ordering::Relaxed),
        0,
        "isolation violations"
    );
    for h in 0..2 {
        let s = pair.status(h);
        for stage in ["ov1", "ov2"] {
            for reason in [
                "wrong_vni",
                "source_mismatch",
                "unknown_mapping",
                "bad_checksum",
                "malformed",
            ] {
                assert_eq!(
                    drops(&s, stage, reason),
                    0,
                    "host {h} {stage}: {}",
                    all_drops(&s, stage)
                );
            }
        }
    }
}

#[test]
fn a_mapping_update_under_traffic_misdirects_nothing_across_tenants_and_shaping_holds_the_rate() {
    let Some(pair) = Pair::start('m') else { return };
    let seen_b = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    app(pair.socket(1), "t1", 1, ECHO, seen_b.clone(), stop.clone());
    app(pair.socket(1), "t1", 1, SINK, seen_b.clone(), stop.clone());
    app(pair.socket(1), "t2", 2, SINK, seen_b.clone(), stop.clone());

    let mut a2 = PonyClient::connect(pair.socket(0), "t2", Completions::Block).unwrap();
    // Several flows, so that their congestion windows together keep the shaper busy (one
    // flow's delay-based window shrinks when the shaper's queue delays it).
    let flows: Vec<u64> = (0..FLOWS)
        .map(|_| a2.open_flow(&virt(1), SINK).unwrap())
        .collect();
    let mut seqs = [0u32; FLOWS];

    // Mid-transfer, A's tenant-2 overlay maps B's endpoint onto tenant 1's physical port
    // for 100 ms (shorter than Pony's give-up time, ~0.4 s of retransmissions): tenant 1's
    // pipeline on B drops every such packet (wrong VNI); once the mapping is back, the
    // flows retransmit and every message arrives, in order, to tenant 2 only.
    let wrong = overlay(0, 2, &format!("{ADDR_B}:{}", port(1)));
    let right = overlay(0, 2, &format!("{ADDR_B}:{}", port(2)));
    for i in 0..300u32 {
        let f = i as usize % FLOWS;
        a2.send(flows[f], 0, &tagged(2, seqs[f], 2000)).unwrap();
        seqs[f] += 1;
        if i == 100 {
            pair.update(0, "ov2", &wrong);
        }
        if i == 120 {
            std::thread::sleep(Duration::from_millis(100));
            pair.update(0, "ov2", &right);
        }
    }
    let expected = u64::from(seqs.iter().sum::<u32>());
    wait_until(&format!("tenant 2's sink got all {expected} messages"), || {
        seen_b.sunk.load(Ordering::Relaxed) == expected
    });
    let b = pair.status(1);
    assert!(drops(&b, "ov1", "wrong_vni") > 0, "{}", all_drops(&b, "ov1"));
    assert_eq!(own(&pair.status(0), "ov2")["replacements"], 2);

    // Then tenant 2 sends as fast as Pony lets it for 3 s; its shaper holds it to its rate.
    // Bytes the shaper sent, bytes Pony offered it (the stage engine's Tx input), and the
    // offers its wheel handed back (it was backlogged to its horizon: backpressure).
    let sh2 = |s: &HostStatus| {
        let c = &s.counters["sh2"];
        let class = &c["own"]["classes"][0][2];
        (
            class["sent_bytes"].as_u64().unwrap(),
            c["counters"]["tx_bytes"].as_u64().unwrap(),
            class["refused_packets"].as_u64().unwrap(),
        )
    };
    let start = Instant::now();
    let mut window: Option<(Instant, (u64, u64, u64))> = None;
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(3) {
        let f = n % FLOWS;
        n += 1;
        a2.send(flows[f], 0, &tagged(2, seqs[f], 16_000)).unwrap();
        seqs[f] += 1;
        if window.is_none() && start.elapsed() > Duration::from_millis(500) {
            window = Some((Instant::now(), sh2(&pair.status(0))));
        }
    }
    let (t0, (sent0, offered0, refused0)) = window.expect("3 s of sending");
    let (sent1, offered1, refused1) = sh2(&pair.status(0));
    let secs = t0.elapsed().as_secs_f64();
    let rate_mbps = (sent1 - sent0) as f64 * 8.0 / secs / 1e6;
    let offered_mbps = (offered1 - offered0) as f64 * 8.0 / secs / 1e6;
    let configured = SHAPED_BPS as f64 / 1e6;
    let backlogged = refused1 > refused0;
    eprintln!(
        "tenant 2 shaped: {rate_mbps:.2} Mbit/s achieved, {offered_mbps:.2} offered, \
         {configured} configured, backlogged to the horizon: {backlogged}"
    );
    // Never above the rate (2 % plus one burst over the window); at the rate when the
    // shaper was backlogged (it pushed back), and else passing what it was offered. (Pony
    // may offer less than the rate: its delay-based congestion control shrinks its windows
    // as the shaper delays packets, and a busy machine slows a debug build; the shaper
    // alone, saturated, is held to 2 % by shaping::tests and by the pipeline bench.)
    let burst_mbit = 15_000.0 * 8.0 / 1e6;
    assert!(
        rate_mbps <= configured * 1.02 + burst_mbit / secs,
        "tenant 2 shaped to {configured} Mbit/s, achieved {rate_mbps:.2}"
    );
    let floor = if backlogged {
        configured
    } else {
        configured.min(offered_mbps)
    };
    assert!(
        rate_mbps >= 0.95 * floor,
        "tenant 2 shaped to {configured} Mbit/s, offered {offered_mbps:.2}, achieved only {rate_mbps:.2}"
    );
    let s = pair.status(0);
    assert_eq!(drops(&s, "sh2", "output_full"), 0);
    assert!(
        own(&s, "sh2")["classes"][0][2]["delayed_packets"]
            .as_u64()
            .unwrap()
            > 0
    );

    stop.store(true, Ordering::Relaxed);
    assert_eq!(seen_b.disorder.load(Ordering::Relaxed), 0);
    assert_eq!(
        seen_b.violations.load(Ordering::Relaxed),
        0,
        "isolation violations"
    );
}

/// What `status` shows of engine `engine`'s counter `name`.
fn engine_counter(status: &HostStatus, engine: &str, name: &str) -> u64 {
    status.counters[engine][name]
        .as_u64()
        .unwrap_or_else(|| panic!("{engine}.{name} in {}", status.counters[engine]))
}

/// The stall seen after a shaped backlog: an app that sends and never reads its `Sent`
/// completions fills its completion ring (256), the engine parks the rest and stops taking
/// that app's commands (backpressure, by design); further sends still return `Ok` while
/// they fit the command ring, and nothing moves until the app consumes. This test makes
/// that state on purpose (16 KB messages into the 40 Mbit/s shaper for 3 s, the backlog
/// drained, 200 more sends without reading), shows the engine is backpressured and took
/// none of them, then consumes: every parked completion, every `Sent` and every message
/// must then arrive, the 200 included, and the backpressure end. (What wakes the engine is
/// the app's pops, or else the flows' heartbeats, every ~50 ms here: recovery is shown, not
/// which of the two caused it; `AppSession::popped`'s doorbell alone is shown in
/// `host/tests/pony_crashes.rs`.)
#[test]
fn after_a_shaped_backlog_an_app_that_consumes_its_completions_gets_its_stalled_sends_through() {
    let Some(pair) = Pair::start_prefixed("wake", 'w') else {
        return;
    };
    let seen_b = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    app(pair.socket(1), "t2", 2, SINK, seen_b.clone(), stop.clone());

    let mut a2 = PonyClient::connect(pair.socket(0), "t2", Completions::Block).unwrap();
    let flows: Vec<u64> = (0..FLOWS)
        .map(|_| a2.open_flow(&virt(1), SINK).unwrap())
        .collect();
    let mut seqs = [0u32; FLOWS];
    let mut cookies = std::collections::HashSet::new();
    let mut send = |a2: &mut PonyClient, n: usize| {
        let f = n % FLOWS;
        cookies.insert(a2.send(flows[f], 0, &tagged(2, seqs[f], 16_000)).unwrap());
        seqs[f] += 1;
    };
    // 3 s of 16 KB messages into the shaper: `send` consumes completions only to make room
    // (pool or command ring full), so the app reads few of its `Sent`s.
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(3) {
        send(&mut a2, n);
        n += 1;
    }
    let expected = n as u64;
    wait_until(&format!("the sink got all {expected} shaped messages"), || {
        seen_b.sunk.load(Ordering::Relaxed) == expected
    });
    // Every Sent is posted once the backlog is acknowledged: more than the ring holds.
    wait_until("the engine backpressures the app that does not read", || {
        engine_counter(&pair.status(0), "t2", "sessions_backpressured") == 1
    });
    let before = pair.status(0);
    let commands = engine_counter(&before, "t2", "commands");
    eprintln!("after {expected} sends of 16 KB: {}", before.counters["t2"]);

    // 200 more: they fit the command ring, so `send` returns Ok, but the engine takes
    // none of them while the app leaves its completions unread.
    for _ in 0..200 {
        send(&mut a2, n);
        n += 1;
    }
    std::thread::sleep(Duration::from_millis(500));
    let stalled = pair.status(0);
    assert_eq!(engine_counter(&stalled, "t2", "commands"), commands);
    assert_eq!(engine_counter(&stalled, "t2", "sessions_backpressured"), 1);
    assert!(engine_counter(&stalled, "t2", "completions_parked") > 0);
    assert_eq!(seen_b.sunk.load(Ordering::Relaxed), expected);

    // The app reads its completions: the pops wake the engine, which pushes what it
    // parked, takes the 200 and sends them.
    let expected = n as u64;
    let mut errors = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while !cookies.is_empty() || seen_b.sunk.load(Ordering::Relaxed) < expected {
        assert!(
            Instant::now() < deadline,
            "{} Sents and {} messages missing; engine: {}",
            cookies.len(),
            expected - seen_b.sunk.load(Ordering::Relaxed),
            pair.status(0).counters["t2"]
        );
        match a2.wait_completion(Duration::from_millis(50)).unwrap() {
            Some(Completion::Sent { cookie }) => {
                assert!(cookies.remove(&cookie), "Sent of unknown cookie {cookie}");
            }
            Some(c @ Completion::Error { .. }) => errors.push(c),
            _ => {}
        }
    }
    assert!(errors.is_empty(), "{errors:?}");
    let after = pair.status(0);
    assert_eq!(engine_counter(&after, "t2", "sessions_backpressured"), 0);
    assert_eq!(engine_counter(&after, "t2", "completions_parked"), 0);
    assert_eq!(engine_counter(&after, "t2", "commands"), commands + 200);

    stop.store(true, Ordering::Relaxed);
    assert_eq!(seen_b.disorder.load(Ordering::Relaxed), 0);
    assert_eq!(seen_b.violations.load(Ordering::Relaxed), 0);
}
