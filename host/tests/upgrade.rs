//! Process-to-process upgrades (`snapctl upgrade`, docs/UPGRADE.md) with real `snap-host`
//! processes and real apps: Pony ping-pong between two hosts while both are upgraded
//! several times (every message checked byte for byte and in order: nothing lost,
//! duplicated or reordered), an echo app that keeps its channel and a UDP echo socket that
//! keeps serving, a relay chain whose apps keep their channels, run-time engine changes
//! after an upgrade, and the failure cases: an engine that cannot move (a Pony engine on a
//! packet pipeline) refused up front, a state
//! the new host cannot read (rollback), a second upgrade while one runs, and either process
//! killed in the middle of a transfer (the test hooks of `snap_host::takeover` hold the
//! transfer open long enough to do it).

mod common;

use std::net::UdpSocket;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::{message, test_dir, wait_until, Host, TIMEOUT};
use pony_express::app::Completions;
use pony_express::client::{ClientError, PonyClient};
use rustix::process::{kill_process, Pid, Signal};
use snap_host::process::HostProcess;
use snap_ipc::channel::{ChannelAppEnd, ChannelError};
use snap_ipc::control::{SnapClient, UpgradeReport};

const ECHO: u32 = 7;
/// How soon an app must see a host that went away.
const HOST_GONE_WITHIN: Duration = Duration::from_secs(1);

/// Upgrades the host and follows it to its new process.
fn upgrade(host: &mut Host) -> UpgradeReport {
    let old = host.process.pid();
    let report = SnapClient::connect(&host.socket)
        .unwrap()
        .upgrade(None)
        .expect("upgrade succeeds");
    assert_eq!(report.old_pid, old);
    assert_ne!(report.new_pid, old);
    let status = host.process.upgraded(report.new_pid, TIMEOUT).unwrap();
    assert!(status.success(), "the old host exits cleanly: {status:?}");
    for e in &report.engines {
        eprintln!(
            "upgrade {} -> {}: {} ({}) brownout {:.3} ms blackout {:.3} ms, {} rounds, {} bytes",
            report.old_pid,
            report.new_pid,
            e.name,
            e.kind,
            e.brownout_ms,
            e.blackout_ms,
            e.rounds,
            e.state_bytes
        );
    }
    report
}

/// A host started with extra environment (test hooks) and `config`.
fn host_with_env(config: &str, env: &[(&str, &str)]) -> Host {
    let dir = test_dir("snap-upgrade");
    let bin = Path::new(env!("CARGO_BIN_EXE_snap-host"));
    let process = HostProcess::start_with_env(bin, &dir, config, TIMEOUT, None, env).unwrap();
    let socket = process.socket().to_owned();
    Host {
        process,
        socket,
        addr: String::new(),
    }
}

/// Two echo engines in one group, `echo0` first.
const TWO_ECHOES: &str = r#"
microquanta = false
[[group]]
name = "g"
mode = "spreading"
[[group.engine]]
name = "echo0"
kind = "echo"
[[group.engine]]
name = "echo1"
kind = "echo"
"#;

/// One request and its echo, checked.
fn echo_once(ch: &mut ChannelAppEnd, seq: u64) -> Result<(), ChannelError> {
    let msg = seq.to_le_bytes();
    ch.send(&msg).expect("the request ring has room");
    let mut buf = [0u8; 64];
    match ch.recv_timeout(&mut buf, TIMEOUT)? {
        Some(8) if buf[..8] == msg => Ok(()),
        other => panic!("echo of {seq}: got {other:?} {:?}", &buf[..8]),
    }
}

#[test]
fn pony_ping_pong_survives_upgrades_of_both_hosts() {
    ping_pong_across_upgrades("");
}

/// The same with 5 % of the packets each host sends lost and 2 % duplicated (the
/// `FaultyNic` of the configuration, rebuilt by every new host).
#[test]
fn pony_ping_pong_survives_upgrades_under_packet_loss() {
    ping_pong_across_upgrades("faults = { loss = 0.05, duplicate = 0.02, seed = 7 }");
}

/// Pony ping-pong between two hosts whose engines have `options`, while A is upgraded 3
/// times and B twice.
fn ping_pong_across_upgrades(options: &str) {
    let mut host_a = Host::start_with(options);
    let mut host_b = Host::start_with(options);
    let (tx, rx) = mpsc::channel();
    let b_socket = host_b.socket.clone();
    let app_b = std::thread::spawn(move || common::pony_echo_app(b_socket, ECHO, tx));
    rx.recv_timeout(TIMEOUT).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let a_socket = host_a.socket.clone();
    let b_addr = host_b.addr.clone();
    let stop_a = stop.clone();
    // App A: a window of messages in flight on two streams, sizes up to 256 KiB (several
    // MiB in all); every echo must be the next expected message of its stream, byte for
    // byte.
    let app_a = std::thread::spawn(move || {
        const WINDOW: u32 = 8;
        let sizes = [16usize, 1500, 9000, 65_536, 262_144];
        let len = |seq: u32| sizes[seq as usize % sizes.len()];
        let mut a = PonyClient::connect(&a_socket, "pony0", Completions::Block).unwrap();
        let flow = a.open_flow(&b_addr, ECHO).unwrap();
        let (mut sent, mut next) = ([0u32; 2], [0u32; 2]);
        let mut bytes = 0usize;
        for stream in [0, 1] {
            for _ in 0..WINDOW / 2 {
                a.send(
                    flow,
                    stream,
                    &message(stream, sent[stream as usize], len(sent[stream as usize])),
                )
                .unwrap();
                sent[stream as usize] += 1;
            }
        }
        loop {
            let m = a.recv(Duration::from_secs(20)).expect("an echo within 20 s");
            let s = m.stream as usize;
            assert!(s < 2, "stream {s}");
            let want = message(m.stream, next[s], len(next[s]));
            assert!(
                m.data == want,
                "stream {s}: message {} lost, duplicated, reordered or damaged",
                next[s]
            );
            bytes += m.data.len();
            next[s] += 1;
            if !stop_a.load(Ordering::Relaxed) {
                a.send(flow, m.stream, &message(m.stream, sent[s], len(sent[s])))
                    .unwrap();
                sent[s] += 1;
            } else if next == sent {
                return (next, bytes);
            }
        }
    });

    std::thread::sleep(Duration::from_millis(300));
    for a in [true, false, true, false, true] {
        let report = upgrade(if a { &mut host_a } else { &mut host_b });
        assert_eq!(report.engines.len(), 1);
        assert_eq!(report.engines[0].kind, "pony");
        std::thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, Ordering::Relaxed);
    let (got, bytes) = app_a.join().unwrap();
    eprintln!("echoed {got:?} messages per stream, {bytes} bytes, across 5 upgrades");
    assert!(got.iter().all(|&n| n > 20), "traffic flowed: {got:?}");
    assert!(bytes > 4 << 20, "several MiB moved: {bytes}");
    if !options.is_empty() {
        let status = SnapClient::connect(&host_a.socket).unwrap().status().unwrap();
        // The faults were there in the last host process too (its NIC is rebuilt from the
        // configuration around the handed-over socket).
        let dropped = status.counter("pony0", "faults.tx.dropped");
        eprintln!("A's last process dropped {dropped:?} packets");
        assert!(dropped.is_some_and(|d| d > 0), "{:?}", status.counters["pony0"]);
    }
    // B's app (still blocked in its receive) keeps its session in the host's registry.
    let status = SnapClient::connect(&host_b.socket).unwrap().status().unwrap();
    assert_eq!(status.channels_of("pony0"), 1, "{:?}", status.channels);
    host_b.kill();
    let e = app_b.join().unwrap();
    assert!(matches!(e, ClientError::HostGone), "{e:?}");
}

#[test]
fn echo_apps_keep_their_channels_and_engine_changes_still_work() {
    let udp_port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        "{TWO_ECHOES}[[group.engine]]\nname = \"udp0\"\nkind = \"udp_echo\"\nbind = \"127.0.0.1:{udp_port}\"\n"
    );
    let mut host = Host::with_config(&config);
    let mut client = SnapClient::connect(&host.socket).unwrap();
    let mut ch = client.attach("echo0", true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_app = stop.clone();
    // Traffic throughout: every request answered with its own bytes, in order.
    let app = std::thread::spawn(move || {
        let mut seq = 0u64;
        while !stop_app.load(Ordering::Relaxed) {
            echo_once(&mut ch, seq).unwrap();
            seq += 1;
        }
        (seq, ch, client)
    });
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(TIMEOUT)).unwrap();
    for round in 0..3u8 {
        let report = upgrade(&mut host);
        let kinds: Vec<&str> = report.engines.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["echo", "echo", "udp_echo"]);
        // The new host announces itself on the stdout it inherited.
        let ready = host
            .process
            .line_containing(snap_host::process::READY_PREFIX, TIMEOUT);
        assert!(ready.is_some_and(|l| l.ends_with(&host.socket.display().to_string())));
        // The UDP socket moved: a datagram to the same port is echoed by the new host.
        udp.send_to(&[round; 100], ("127.0.0.1", udp_port)).unwrap();
        let mut buf = [0u8; 200];
        let (n, _) = udp.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &[round; 100]);
    }
    // Run-time changes work on the new host while traffic flows.
    let mut op = SnapClient::connect(&host.socket).unwrap();
    op.engine_add("g", "name = \"echo2\"\nkind = \"echo\"\n").unwrap();
    let mut app2 = SnapClient::connect(&host.socket).unwrap();
    let mut ch2 = app2.attach("echo2", true).unwrap();
    echo_once(&mut ch2, 42).unwrap();
    let summary = op.engine_remove("echo2").unwrap();
    assert!(summary.contains("1 app connections closed"), "{summary}");
    let r = ch2.recv_timeout(&mut [0u8; 64], TIMEOUT);
    assert!(matches!(r, Err(ChannelError::HostGone)), "{r:?}");
    let status = op.status().unwrap();
    assert_eq!(
        status.channels_of("echo0"),
        1,
        "the app's channel moved with its registry entry"
    );
    stop.store(true, Ordering::Relaxed);
    let (n, mut ch, _client) = app.join().unwrap();
    assert!(n > 10, "requests during the upgrades: {n}");
    // And after: the channel is served, its id unchanged.
    echo_once(&mut ch, u64::MAX).unwrap();
    drop(op);
    assert!(host.process.terminate(TIMEOUT).unwrap().success());
}

#[test]
fn an_unreadable_state_is_refused_and_the_old_host_keeps_serving() {
    let host = host_with_env(common::ECHO_GROUP, &[("SNAP_HOST_TEST_STATE_FORMAT", "99")]);
    let mut client = SnapClient::connect(&host.socket).unwrap();
    let mut ch = client.attach("echo0", true).unwrap();
    echo_once(&mut ch, 1).unwrap();
    let pid = host.process.pid();
    let err = SnapClient::connect(&host.socket)
        .unwrap()
        .upgrade(None)
        .expect_err("the new host refuses the state");
    let text = err.to_string();
    assert!(
        text.contains("cannot read engine \"echo0\"'s state") && text.contains("format"),
        "{text}"
    );
    // Nothing moved: the same process serves the same channel, and a second try is not
    // blocked by the first.
    echo_once(&mut ch, 2).unwrap();
    assert_eq!(host.process.pid(), pid);
    let status = client.status().unwrap();
    assert_eq!(status.channels_of("echo0"), 1);
    let again = SnapClient::connect(&host.socket)
        .unwrap()
        .upgrade(None)
        .unwrap_err();
    assert!(again.to_string().contains("format"), "{again}");
    echo_once(&mut ch, 3).unwrap();
}

#[test]
fn a_second_upgrade_while_one_runs_is_refused() {
    let mut host = host_with_env(
        common::ECHO_GROUP,
        &[("SNAP_HOST_TEST_TAKEOVER_PAUSE_MS", "1500")],
    );
    let socket = host.socket.clone();
    let first = std::thread::spawn(move || SnapClient::connect(&socket).unwrap().upgrade(None));
    std::thread::sleep(Duration::from_millis(400));
    let second = SnapClient::connect(&host.socket)
        .unwrap()
        .upgrade(None)
        .unwrap_err();
    assert!(second.to_string().contains("already running"), "{second}");
    let report = first.join().unwrap().expect("the first upgrade completes");
    host.process.upgraded(report.new_pid, TIMEOUT).unwrap();
}

/// The new host process the old one started (its only child).
fn child_of(pid: u32) -> u32 {
    let mut found = None;
    wait_until("the new host process starts", || {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            if let Some(c) = children.split_whitespace().next() {
                found = c.parse().ok();
                return true;
            }
        }
        false
    });
    found.unwrap()
}

/// How long `ch`'s blocked call takes to see the host gone (nothing was sent, so only that
/// ends it).
fn host_gone_after(mut ch: ChannelAppEnd, since: Instant) -> Duration {
    let mut buf = [0u8; 64];
    let r = ch.recv_timeout(&mut buf, Duration::from_secs(30));
    assert!(matches!(r, Err(ChannelError::HostGone)), "{r:?}");
    since.elapsed()
}

#[test]
fn new_host_killed_mid_transfer_old_host_resumes() {
    let host = host_with_env(
        TWO_ECHOES,
        &[
            ("SNAP_HOST_TEST_TAKEOVER_PAUSE_AFTER", "1"),
            ("SNAP_HOST_TEST_TAKEOVER_PAUSE_MS", "3000"),
        ],
    );
    let mut c0 = SnapClient::connect(&host.socket).unwrap();
    let mut moved = c0.attach("echo0", true).unwrap();
    let mut c1 = SnapClient::connect(&host.socket).unwrap();
    let mut stays = c1.attach("echo1", true).unwrap();
    echo_once(&mut moved, 0).unwrap();
    echo_once(&mut stays, 0).unwrap();
    let socket = host.socket.clone();
    let upgrading = std::thread::spawn(move || SnapClient::connect(&socket).unwrap().upgrade(None));
    let new = child_of(host.process.pid());
    // echo0 has moved and the new host pauses before echo1.
    std::thread::sleep(Duration::from_millis(800));
    let waiter = std::thread::spawn(move || (host_gone_after(moved, Instant::now()), c0));
    std::thread::sleep(Duration::from_millis(100));
    let killed = Instant::now();
    kill_process(Pid::from_raw(new as i32).unwrap(), Signal::KILL).unwrap();
    let err = upgrading.join().unwrap().unwrap_err();
    assert!(err.to_string().contains("upgrade failed"), "{err}");
    let (_, _c0) = waiter.join().unwrap();
    let gone = killed.elapsed();
    eprintln!("echo0's app saw HostGone {gone:?} after the new host was killed");
    assert!(gone < HOST_GONE_WITHIN, "{gone:?}");
    // echo1 never moved: served by the old host as before.
    echo_once(&mut stays, 1).unwrap();
    let status = c1.status().unwrap();
    assert_eq!(status.channels_of("echo1"), 1);
}

#[test]
fn old_host_killed_mid_transfer_apps_see_it_gone() {
    let mut host = host_with_env(
        TWO_ECHOES,
        &[
            ("SNAP_HOST_TEST_TAKEOVER_PAUSE_AFTER", "1"),
            ("SNAP_HOST_TEST_TAKEOVER_PAUSE_MS", "3000"),
        ],
    );
    let mut c0 = SnapClient::connect(&host.socket).unwrap();
    let moved = c0.attach("echo0", true).unwrap();
    let mut c1 = SnapClient::connect(&host.socket).unwrap();
    let stays = c1.attach("echo1", true).unwrap();
    let socket = host.socket.clone();
    let upgrading = std::thread::spawn(move || SnapClient::connect(&socket).unwrap().upgrade(None));
    let new = child_of(host.process.pid());
    std::thread::sleep(Duration::from_millis(800));
    let since = Instant::now();
    let w0 = std::thread::spawn(move || (host_gone_after(moved, since), c0));
    let w1 = std::thread::spawn(move || (host_gone_after(stays, since), c1));
    host.kill();
    // The new host holds echo0's channel; it learns that the old host died and exits, so
    // echo0's app sees the host gone too (not only echo1's, which died with the old host).
    let (g0, _) = w0.join().unwrap();
    let (g1, _) = w1.join().unwrap();
    eprintln!("HostGone after the old host was killed: echo0 {g0:?}, echo1 {g1:?}");
    assert!(g0 < HOST_GONE_WITHIN, "{g0:?}");
    assert!(g1 < HOST_GONE_WITHIN, "{g1:?}");
    assert!(upgrading.join().unwrap().is_err());
    // The new host exited (it is our child now: we are the subreaper).
    wait_until("the new host exits", || {
        !Path::new(&format!("/proc/{new}")).exists()
            || matches!(
                rustix::process::waitpid(
                    Some(Pid::from_raw(new as i32).unwrap()),
                    rustix::process::WaitOptions::NOHANG
                ),
                Ok(Some(_)) | Err(_)
            )
    });
}

/// Host A with `FLOWS` flows (default 100) to host B, upgraded `UPGRADES` times (default
/// 3), one message echoed on every flow before and after each upgrade; prints each
/// upgrade's blackout (the measured run: `FLOWS=1000 UPGRADES=20 cargo test --release -p
/// snap-host --test upgrade upgrade_with_many_flows -- --nocapture`).
#[test]
fn upgrade_with_many_flows() {
    let var = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (flows, upgrades) = (var("FLOWS", 100), var("UPGRADES", 3));
    let mut host_a = Host::start();
    let host_b = Host::start();
    let (tx, rx) = mpsc::channel();
    let b_socket = host_b.socket.clone();
    std::thread::spawn(move || common::pony_echo_app(b_socket, ECHO, tx));
    rx.recv_timeout(TIMEOUT).unwrap();
    let mut a = PonyClient::connect(&host_a.socket, "pony0", Completions::Block).unwrap();
    let ids: Vec<_> = (0..flows)
        .map(|_| a.open_flow(&host_b.addr, ECHO).unwrap())
        .collect();
    let round = |a: &mut PonyClient, r: u32| {
        for (i, &f) in ids.iter().enumerate() {
            a.send(f, 0, &message(i as u32, r, 64)).unwrap();
        }
        let mut seen = vec![false; flows];
        for _ in 0..flows {
            let m = a.recv(Duration::from_secs(20)).expect("every flow echoes");
            let i = ids.iter().position(|&f| f == m.flow).expect("a flow of ours");
            assert!(!seen[i], "flow {i}: echoed twice");
            assert_eq!(m.data, message(i as u32, r, 64), "flow {i}");
            seen[i] = true;
        }
    };
    round(&mut a, 0);
    let mut blackouts = Vec::new();
    for r in 1..=upgrades as u32 {
        let report = upgrade(&mut host_a);
        blackouts.push(report.engines[0].blackout_ms);
        round(&mut a, r);
    }
    blackouts.sort_by(f64::total_cmp);
    let p = |q: f64| blackouts[((blackouts.len() - 1) as f64 * q).round() as usize];
    eprintln!(
        "{flows} flows, {upgrades} upgrades: blackout p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        p(0.5),
        p(0.99),
        blackouts[blackouts.len() - 1]
    );
}

/// A relay chain (relay1 → relay0 → echo0) moves with its engines: apps on the first
/// relay and on the echo engine keep their channels, and every request is answered with
/// its own bytes, in order, before, during and after three upgrades (the relays' internal
/// channels are moved as descriptors, both ends, and meet again on the same memory).
#[test]
fn a_relay_chain_moves_and_its_apps_keep_their_channels() {
    let config = r#"
microquanta = false
[[group]]
name = "g"
mode = "spreading"
[[group.engine]]
name = "echo0"
kind = "echo"
[[group.engine]]
name = "relay0"
kind = "relay"
next = "echo0"
[[group.engine]]
name = "relay1"
kind = "relay"
next = "relay0"
"#;
    let mut host = Host::with_config(config);
    let mut client = SnapClient::connect(&host.socket).unwrap();
    let ch_relay = client.attach("relay1", true).unwrap();
    let ch_echo = client.attach("echo0", true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // One app thread per channel, each sending sequence numbers and checking every answer.
    let apps: Vec<_> = [ch_relay, ch_echo]
        .into_iter()
        .map(|mut ch| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    echo_once(&mut ch, seq).unwrap_or_else(|e| panic!("request {seq}: {e}"));
                    seq += 1;
                }
                (seq, ch)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..3 {
        let report = upgrade(&mut host);
        let kinds: Vec<_> = report
            .engines
            .iter()
            .map(|e| (e.name.as_str(), e.kind.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [("echo0", "echo"), ("relay0", "relay"), ("relay1", "relay")]
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    let mut client = SnapClient::connect(&host.socket).unwrap();
    for app in apps {
        let (seq, mut ch) = app.join().unwrap();
        assert!(seq > 50, "requests answered throughout: {seq}");
        echo_once(&mut ch, u64::MAX).unwrap();
    }
    let status = client.status().unwrap();
    assert_eq!(status.channels_of("relay1"), 1, "{:?}", status.channels);
    assert_eq!(status.channels_of("echo0"), 1, "{:?}", status.channels);
}

/// A Pony engine whose NIC side is a packet pipeline: the upgrade is refused before
/// anything moves, naming the engine, its pipeline and the pipeline's stages; the host
/// keeps serving (its app still attached).
#[test]
fn a_pipeline_refuses_the_upgrade_up_front_naming_its_stages() {
    let config = r#"
microquanta = false
[[group]]
name = "pony"
mode = "spreading"
[[group.engine]]
name = "pony0"
kind = "pony"
options = { pipeline = "path" }
[[group]]
name = "stages"
mode = "spreading"
[[pipeline]]
name = "path"
[[pipeline.stage]]
name = "pass0"
kind = "pass"
group = "stages"
[pipeline.nic]
nic = "udp"
bind = "127.0.0.1:0"
"#;
    let host = Host::with_config(config);
    let app = PonyClient::connect(&host.socket, "pony0", Completions::Block).unwrap();
    let err = SnapClient::connect(&host.socket)
        .unwrap()
        .upgrade(None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("engine \"pony0\" (kind pony) cannot move to a new host")
            && err.contains("packet pipeline \"path\" (stages \"pass0\" (pass))")
            && err.contains("packet-pipeline stages do not move yet")
            && err.contains("nothing moved"),
        "{err}"
    );
    let pid = host.process.pid();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    let status = SnapClient::connect(&host.socket).unwrap().status().unwrap();
    assert_eq!(status.channels_of("pony0"), 1, "{:?}", status.channels);
    drop(app);
}
