//! Crashes and hostile apps around real `snap-host` processes with Pony engines on UDP
//! loopback, each bound of issue 13 measured from the event:
//! - a SIGKILLed peer host: the surviving app's idle flow closes with `PeerTimeout` within
//!   a second (the default idle timeout);
//! - a SIGKILLed app: its peer sees `PeerClosed`, and its host has reclaimed its session
//!   (pool), regions and flows within 100 ms (observed through `status`);
//! - a SIGKILLed host: every blocked app call returns `HostGone` within 100 ms;
//! - an app that scribbles its command ring is quarantined (the host's CPU stays under
//!   5 % of wall time over 5 s; another app keeps working);
//! - an app that never consumes its completions gets backpressure (the host's CPU stays
//!   under 5 % over 5 s) and loses nothing once it consumes;
//! - limits from the host's TOML: the app over one gets the clear error, another app keeps
//!   working, and `status` counts the refusals.
//!
//! The killed app is this test binary re-executed (`crash_child_app`), so that its death is
//! a real process death. CPU is the host process's utime + stime from `/proc/PID/stat`, so
//! other load on the machine does not count against it.

mod common;

use std::path::PathBuf;
use std::process::{Command as Process, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{line_starting, Host, TIMEOUT};
use pony_express::app::{AppSession, CloseReason, Command, Completion, Completions, OpErrorCode};
use pony_express::client::{ClientError, PonyClient};
use pony_express::socket::{PonyListener, PonyStream, SocketError};
use rustix::process::{kill_process, Pid, Signal};
use snap_ipc::control::SnapClient;
use snap_ipc::SharedMem;

const SERVICE: u32 = 11;
/// Environment variables that turn `crash_child_app` into the app process of a test.
const CHILD_SOCKET: &str = "PONY_CRASHES_CHILD_SOCKET";
const CHILD_PEER: &str = "PONY_CRASHES_CHILD_PEER";

/// CPU time (user + system) the process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the command.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let hz = rustix::param::clock_ticks_per_second();
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

/// The share of `wall` the host process spent on a CPU while `during` ran for `wall`.
fn cpu_share(pid: u32, wall: Duration, during: impl FnOnce()) -> f64 {
    let before = cpu_time(pid);
    let start = Instant::now();
    during();
    let spent = cpu_time(pid) - before;
    let elapsed = start.elapsed().max(wall);
    spent.as_secs_f64() / elapsed.as_secs_f64()
}

/// The Pony engine's counter `name` in the host's status.
fn counter(client: &mut SnapClient, name: &str) -> u64 {
    let status = client.status().unwrap();
    status
        .counter("pony0", name)
        .unwrap_or_else(|| panic!("no counter {name}"))
}

#[test]
fn a_dead_peer_host_closes_an_idle_flow_with_peer_timeout_within_a_second() {
    let host_a = Host::start();
    let mut host_b = Host::start();
    let mut b = PonyClient::connect(&host_b.socket, "pony0", Completions::Block).unwrap();
    b.listen(SERVICE).unwrap();
    let mut a = PonyClient::connect(&host_a.socket, "pony0", Completions::Block).unwrap();
    let flow = a.open_flow(&host_b.addr, SERVICE).unwrap();
    b.accept(TIMEOUT).unwrap();
    // Idle for a while: heartbeats keep the flow up.
    assert!(a.wait_completion(Duration::from_millis(1500)).unwrap().is_none());
    let killed = Instant::now();
    host_b.kill();
    let closed = a
        .wait_for(TIMEOUT, |c| match c {
            Completion::FlowClosed { flow: f, reason } if *f == flow => Some(*reason),
            _ => None,
        })
        .unwrap();
    let waited = killed.elapsed();
    eprintln!("dead peer noticed after {waited:?}");
    assert_eq!(closed, CloseReason::PeerTimeout);
    assert!(waited <= Duration::from_secs(1), "noticed after {waited:?}");
}

#[test]
fn a_killed_apps_peer_sees_peer_closed_and_its_host_reclaims_within_100ms() {
    let host_a = Host::start();
    let host_b = Host::start();
    let mut b = PonyClient::connect(&host_b.socket, "pony0", Completions::Block).unwrap();
    b.listen(SERVICE).unwrap();
    let mut child = Process::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child_app", "--nocapture", "--test-threads=1"])
        .env(CHILD_SOCKET, &host_a.socket)
        .env(CHILD_PEER, &host_b.addr)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let line = line_starting(&mut child, "opened ");
    let channel: u64 = line.strip_prefix("opened ").expect(&line).parse().unwrap();
    let flow = b.accept(TIMEOUT).unwrap();
    let mut watch = SnapClient::connect(&host_a.socket).unwrap();
    assert_eq!(counter(&mut watch, "regions"), 1);
    assert_eq!(counter(&mut watch, "flows"), 1);

    let killed = Instant::now();
    kill_process(Pid::from_child(&child), Signal::KILL).unwrap();
    let reclaimed = loop {
        let status = watch.status().unwrap();
        let zero = |name| status.counter("pony0", name) == Some(0);
        let gone = !status.channels.iter().any(|ch| ch.channel == channel)
            && zero("sessions")
            && zero("regions")
            && zero("flows");
        if gone {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < TIMEOUT,
            "not reclaimed: {:?}",
            status.counters.get("pony0")
        );
    };
    let reason = b
        .wait_for(TIMEOUT, |c| match c {
            Completion::FlowClosed { flow: f, reason } if *f == flow => Some(*reason),
            _ => None,
        })
        .unwrap();
    let peer_saw = killed.elapsed();
    let _ = child.wait();
    eprintln!("killed app reclaimed after {reclaimed:?}, its peer saw the close after {peer_saw:?}");
    assert_eq!(reason, CloseReason::PeerClosed);
    assert!(
        reclaimed <= Duration::from_millis(100),
        "reclaimed after {reclaimed:?}"
    );
    assert!(
        peer_saw <= Duration::from_secs(1),
        "peer saw the close after {peer_saw:?}"
    );
}

/// The app process of the test above: attaches to its host, registers a region, holds
/// pool buffers, opens a flow to the peer's service, says so, and waits to be killed. A
/// no-op in a normal test run.
#[test]
fn crash_child_app() {
    let (Some(socket), Some(peer)) = (std::env::var_os(CHILD_SOCKET), std::env::var(CHILD_PEER).ok()) else {
        return;
    };
    let mut c = PonyClient::connect(socket, "pony0", Completions::Block).unwrap();
    let mem = SharedMem::create("crash-child-region", 4096).unwrap();
    c.register_region(&mem).unwrap();
    let _held = c.session().pool().write_chain(&[7u8; 10_000]).unwrap();
    c.open_flow(&peer, SERVICE).unwrap();
    println!("opened {}", c.channel());
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_killed_host_unblocks_every_waiting_call_within_100ms() {
    let mut host = Host::start();
    let peer = Host::start();
    let socket = host.socket.clone();
    // A stream whose peer never sends: its recv blocks.
    let listener = PonyListener::bind(&peer.socket, "pony0", SERVICE).unwrap();
    let stream = PonyStream::connect(&socket, "pony0", &peer.addr, SERVICE).unwrap();
    let _peer_end = listener.accept_timeout(TIMEOUT).unwrap();
    // A listener nobody connects to: its accept blocks.
    let idle_listener = PonyListener::bind(&socket, "pony0", SERVICE + 1).unwrap();
    // A client waiting for a completion that never comes.
    let mut waiting = PonyClient::connect(&socket, "pony0", Completions::Block).unwrap();
    // A client opening a flow to a port where nobody answers: it waits for FlowOpened.
    let mut opening = PonyClient::connect(&socket, "pony0", Completions::Block).unwrap();
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();

    type Outcome = (String, Instant, bool);
    let (tx, rx) = std::sync::mpsc::channel::<Outcome>();
    let mut threads = Vec::new();
    let t = tx.clone();
    threads.push(std::thread::spawn(move || {
        let r = stream.recv();
        let gone = matches!(r, Err(SocketError::Client(ClientError::HostGone)));
        t.send((format!("PonyStream::recv: {r:?}"), Instant::now(), gone))
            .unwrap();
    }));
    let t = tx.clone();
    threads.push(std::thread::spawn(move || {
        let r = idle_listener.accept();
        let gone = matches!(r, Err(SocketError::Client(ClientError::HostGone)));
        t.send((
            format!("PonyListener::accept: {:?}", r.err()),
            Instant::now(),
            gone,
        ))
        .unwrap();
    }));
    let t = tx.clone();
    threads.push(std::thread::spawn(move || {
        let r = waiting.wait_completion(Duration::from_secs(30));
        let gone = matches!(r, Err(ClientError::HostGone));
        t.send((
            format!("PonyClient::wait_completion: {r:?}"),
            Instant::now(),
            gone,
        ))
        .unwrap();
    }));
    let t = tx;
    threads.push(std::thread::spawn(move || {
        let r = opening.open_flow(&silent_addr, SERVICE);
        let gone = matches!(r, Err(ClientError::HostGone));
        t.send((format!("PonyClient::open_flow: {r:?}"), Instant::now(), gone))
            .unwrap();
    }));
    // Let every call block.
    std::thread::sleep(Duration::from_millis(300));
    let killed = Instant::now();
    host.kill();
    let mut slowest = Duration::ZERO;
    for _ in 0..threads.len() {
        let (what, at, gone) = rx.recv_timeout(TIMEOUT).expect("every blocked call returns");
        let after = at.saturating_duration_since(killed);
        eprintln!("{what} after {after:?}");
        assert!(gone, "{what}");
        slowest = slowest.max(after);
    }
    for t in threads {
        t.join().unwrap();
    }
    assert!(
        slowest <= Duration::from_millis(100),
        "slowest return {slowest:?}"
    );
    drop(silent);
}

/// Attaches a raw session (no app library around it) to `pony0`; returns the control
/// connection (kept open, so that only the engine can end the session), the session, and
/// a mapping of its command ring.
fn raw_session(socket: &PathBuf) -> (SnapClient, AppSession, SharedMem) {
    let mut control = SnapClient::connect(socket).unwrap();
    let (_, _, fds) = control.attach_raw("pony0", false, &[]).unwrap();
    let ring = SharedMem::from_fd(fds[0].try_clone().unwrap()).unwrap();
    let app = AppSession::from_fds(fds, None).unwrap();
    (control, app, ring)
}

#[test]
fn a_scribbling_app_is_quarantined_without_costing_the_host_cpu() {
    let host = Host::start();
    let peer = Host::start();
    let pid = host.process.pid();
    let idle = cpu_share(pid, Duration::from_secs(2), || {
        std::thread::sleep(Duration::from_secs(2))
    });
    eprintln!("idle host CPU: {:.2} % of wall time", idle * 100.0);
    let (_control, hostile, ring) = raw_session(&host.socket);
    let mut watch = SnapClient::connect(&host.socket).unwrap();
    // SAFETY: the ring header's producer line is at offset 64, an aligned AtomicU64.
    let producer = unsafe { &*(ring.as_ptr().add(64) as *const AtomicU64) };
    let share = cpu_share(pid, Duration::from_secs(5), || {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < Duration::from_secs(5) {
            // Indices no ring can have, and a wakeup for the engine each time.
            n += 1;
            producer.store(n.wrapping_mul(0x9e37_79b9_7f4a_7c15), Ordering::Release);
            hostile.kick();
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    eprintln!(
        "host CPU while an app scribbled its ring: {:.2} % of wall time",
        share * 100.0
    );
    assert_eq!(counter(&mut watch, "sessions_quarantined"), 1);
    assert!(share < 0.05, "host used {:.2} % CPU", share * 100.0);
    // Another app on the same engine works.
    let mut b = PonyClient::connect(&peer.socket, "pony0", Completions::Block).unwrap();
    b.listen(SERVICE).unwrap();
    let mut a = PonyClient::connect(&host.socket, "pony0", Completions::Block).unwrap();
    let flow = a.open_flow(&peer.addr, SERVICE).unwrap();
    a.send(flow, 0, b"still here").unwrap();
    assert_eq!(b.recv(TIMEOUT).unwrap().data, b"still here");
}

#[test]
fn an_app_that_never_consumes_costs_the_host_no_cpu_and_loses_nothing() {
    let host_a = Host::start();
    let host_b = Host::start();
    let pid = host_b.process.pid();
    let (_control, mut slow, _ring) = raw_session(&host_b.socket);
    slow.submit(&Command::Listen {
        cookie: 1,
        service: SERVICE,
    })
    .unwrap();
    let mut a = PonyClient::connect(&host_a.socket, "pony0", Completions::Block).unwrap();
    // Wait for the Listen to be taken (without consuming its completion).
    let mut watch = SnapClient::connect(&host_b.socket).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let flow = loop {
        match a.open_flow(&host_b.addr, SERVICE) {
            Ok(f) => break f,
            Err(e) => assert!(Instant::now() < deadline, "{e}"),
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // Three completion rings' worth of messages (the ring holds 256).
    const N: u32 = 768;
    for i in 0..N {
        a.send(flow, 0, &i.to_le_bytes()).unwrap();
    }
    let mut sent = 0;
    while sent < N {
        match a.wait_completion(TIMEOUT).unwrap() {
            Some(Completion::Sent { .. }) => sent += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(counter(&mut watch, "sessions_backpressured"), 1);
    // A command while under backpressure: it waits (and must not make the engine spin).
    slow.submit(&Command::Listen {
        cookie: 2,
        service: SERVICE + 1,
    })
    .unwrap();
    let share = cpu_share(pid, Duration::from_secs(5), || {
        std::thread::sleep(Duration::from_secs(5))
    });
    eprintln!(
        "host CPU while an app did not consume: {:.2} % of wall time",
        share * 100.0
    );
    assert!(share < 0.05, "host used {:.2} % CPU", share * 100.0);
    // It consumes: everything arrives, in order, and the late command is answered.
    let mut got = Vec::new();
    let mut answered = false;
    let deadline = Instant::now() + TIMEOUT;
    while got.len() < N as usize || !answered {
        assert!(
            Instant::now() < deadline,
            "{} of {N} messages, answered {answered}",
            got.len()
        );
        match slow.wait_completion(Duration::from_millis(10)).unwrap() {
            Some(Completion::Received { head, len, .. }) => {
                let mut data = Vec::new();
                slow.take_received(head, len, &mut data).unwrap();
                got.push(u32::from_le_bytes(data.try_into().unwrap()));
            }
            Some(Completion::Listening { cookie: 2 }) => answered = true,
            Some(Completion::Listening { cookie: 1 } | Completion::FlowAccepted { .. }) => {}
            Some(other) => panic!("{other:?}"),
            None => {}
        }
    }
    assert_eq!(got, (0..N).collect::<Vec<_>>());
    assert!(counter(&mut watch, "backpressure_waits") >= 1);
    assert_eq!(counter(&mut watch, "sessions_backpressured"), 0);
}

fn op_error<T: std::fmt::Debug>(r: Result<T, ClientError>) -> OpErrorCode {
    match r {
        Err(ClientError::Op { code }) => code,
        other => panic!("expected an operation error, got {other:?}"),
    }
}

#[test]
fn limits_from_the_configuration_refuse_clearly_and_are_counted_in_status() {
    let options = "max_flows = 3\nmax_flows_per_app = 1\nmax_ops_per_app = 1\nmax_regions_per_app = 1";
    let host = Host::start_with(options);
    let peer = Host::start();
    let mut b = PonyClient::connect(&peer.socket, "pony0", Completions::Block).unwrap();
    b.listen(SERVICE).unwrap();
    let mut x = PonyClient::connect(&host.socket, "pony0", Completions::Block).unwrap();
    let mut z = PonyClient::connect(&host.socket, "pony0", Completions::Block).unwrap();
    let mut watch = SnapClient::connect(&host.socket).unwrap();

    // Flows per app.
    let fx = x.open_flow(&peer.addr, SERVICE).unwrap();
    assert_eq!(
        op_error(x.open_flow(&peer.addr, SERVICE)),
        OpErrorCode::TooManyFlows
    );
    let fz = z.open_flow(&peer.addr, SERVICE).unwrap();
    assert_eq!(counter(&mut watch, "limit_flows"), 1);

    // Regions per app.
    let mem = || SharedMem::create("limits-region", 4096).unwrap();
    x.register_region(&mem()).unwrap();
    assert_eq!(op_error(x.register_region(&mem())), OpErrorCode::TooManyRegions);
    z.register_region(&mem()).unwrap();
    assert_eq!(counter(&mut watch, "limit_regions"), 1);

    // Operations per app: two Sends posted at once, the second is one too many.
    let first = x.send(fx, 0, b"one").unwrap();
    let second = x.send(fx, 0, b"two").unwrap();
    let mut outcomes = Vec::new();
    while outcomes.len() < 2 {
        match x.wait_completion(TIMEOUT).unwrap().expect("a completion") {
            Completion::Sent { cookie } => outcomes.push((cookie, None)),
            Completion::Error { cookie, code, .. } => outcomes.push((cookie, Some(code))),
            other => panic!("{other:?}"),
        }
    }
    outcomes.sort_by_key(|(cookie, _)| *cookie);
    // Usually the second is refused; if the first was acknowledged before the second was
    // taken, both went: then a burst proves the limit.
    if outcomes == [(first, None), (second, None)] {
        let cookies: Vec<_> = (0..8).map(|_| x.send(fx, 0, b"burst").unwrap()).collect();
        let mut refused = 0;
        for _ in &cookies {
            if let Some(Completion::Error { code, .. }) = x.wait_completion(TIMEOUT).unwrap() {
                assert_eq!(code, OpErrorCode::TooManyOps);
                refused += 1;
            }
        }
        assert!(
            refused > 0,
            "no Send of a burst of 8 was refused at max_ops_per_app = 1"
        );
    } else {
        assert_eq!(outcomes, [(first, None), (second, Some(OpErrorCode::TooManyOps))]);
    }
    assert!(counter(&mut watch, "limit_ops") >= 1);
    z.send(fz, 0, b"z works").unwrap();
    // b gets z's message (after whatever of x's went through).
    while b.recv(TIMEOUT).unwrap().data != b"z works" {}

    // Flows per engine: a third app's flow fills it (3), a peer's Connect beyond is
    // rejected and its opener told.
    let mut w = PonyClient::connect(&host.socket, "pony0", Completions::Block).unwrap();
    w.listen(SERVICE).unwrap();
    let mut p = PonyClient::connect(&peer.socket, "pony0", Completions::Block).unwrap();
    p.open_flow(&host.addr, SERVICE).unwrap();
    w.accept(TIMEOUT).unwrap();
    let mut q = PonyClient::connect(&peer.socket, "pony0", Completions::Block).unwrap();
    assert_eq!(op_error(q.open_flow(&host.addr, SERVICE)), OpErrorCode::PeerBusy);
    assert_eq!(counter(&mut watch, "limit_flows"), 2);
    assert_eq!(counter(&mut watch, "flows"), 3);
}
