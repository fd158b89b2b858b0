//! Two real `snap-host` processes, each with one Pony engine on a UDP NIC on loopback, and
//! apps attached to them through `pony_express::client` over the control sockets:
//! messages echoed exactly once and in order on two streams (up to 1 MiB), a one-sided read
//! of a region registered through the socket, host death seen by both sides' apps as
//! errors rather than hangs, flows routed to the app listening on their service, and a
//! SIGKILLed app detached by its host.
//!
//! The killed app is this test binary re-executed (`child_app`), so that its death is a
//! real process death, with the kernel closing its sockets.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{line_starting, message, wait_until, Host, TIMEOUT};
use pony_express::app::{Completion, Completions, OpErrorCode};
use pony_express::client::{ClientError, PonyClient, Region};
use rustix::process::{kill_process, Pid, Signal};
use snap_ipc::SharedMem;
/// The service app B echoes on.
const ECHO: u32 = 7;
/// Environment variable that turns `child_app` into the app process of a parent test.
const CHILD_SOCKET: &str = "PONY_HOSTS_CHILD_SOCKET";

const SIZES: [usize; 7] = [8, 100, 1500, 4000, 65_536, 300_000, 1 << 20];
const REGION_LEN: usize = 64 * 1024;

fn region_byte(i: usize) -> u8 {
    (i * 7 + i / 251) as u8
}

/// App B: listens, registers a region (sent back to the test with the flow's messages),
/// echoes every message on the flow and stream it came on until its client fails; sends
/// that error.
fn app_b(socket: PathBuf, to_test: mpsc::Sender<Result<Region, String>>) -> ClientError {
    let mut b = PonyClient::connect(&socket, "pony0", Completions::Block).unwrap();
    b.listen(ECHO).unwrap();
    let mem = SharedMem::create("pony-hosts-region", REGION_LEN).unwrap();
    // SAFETY: the region is ours alone until it is registered just below.
    let bytes = unsafe { std::slice::from_raw_parts_mut(mem.as_ptr(), REGION_LEN) };
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = region_byte(i);
    }
    let region = b.register_region(&mem).unwrap();
    to_test.send(Ok(region)).unwrap();
    loop {
        match b.recv(Duration::from_secs(60)) {
            Ok(m) => {
                if let Err(e) = b.send(m.flow, m.stream, &m.data) {
                    return e;
                }
            }
            Err(e) => return e,
        }
    }
}

#[test]
fn echo_read_and_host_death_across_two_hosts() {
    let host_a = Host::start();
    let mut host_b = Host::start();
    let (tx, rx) = mpsc::channel();
    let b_socket = host_b.socket.clone();
    let app_b = std::thread::spawn(move || app_b(b_socket, tx));
    let region = rx.recv_timeout(TIMEOUT).unwrap().unwrap();
    assert_eq!(region.len, REGION_LEN as u64);

    let mut a = PonyClient::connect(&host_a.socket, "pony0", Completions::Block).unwrap();
    let flow = a.open_flow(&host_b.addr, ECHO).unwrap();

    // Every size on both streams, interleaved; echoes must come back once each, in order
    // per stream.
    let mut cookies = Vec::new();
    for (seq, &len) in SIZES.iter().enumerate() {
        for stream in [0, 1] {
            cookies.push(a.send(flow, stream, &message(stream, seq as u32, len)).unwrap());
        }
    }
    let mut next = [0usize; 2];
    while next != [SIZES.len(); 2] {
        let m = a.recv(TIMEOUT).unwrap();
        assert_eq!(m.flow, flow);
        let s = m.stream as usize;
        assert!(s < 2 && next[s] < SIZES.len(), "extra message on stream {s}");
        assert_eq!(m.data.len(), SIZES[next[s]], "stream {s} message {}", next[s]);
        assert!(
            m.data == message(m.stream, next[s] as u32, SIZES[next[s]]),
            "stream {s} message {} differs",
            next[s]
        );
        next[s] += 1;
    }
    // Each Send completed once; nothing else is pending (no duplicate echoes).
    let mut sent = Vec::new();
    while let Some(c) = a.wait_completion(Duration::from_millis(200)).unwrap() {
        match c {
            Completion::Sent { cookie } => sent.push(cookie),
            other => panic!("unexpected completion {other:?}"),
        }
    }
    sent.sort_unstable();
    assert_eq!(sent, cookies);

    // One-sided: B's region, registered through B's control socket.
    let got = a.read(flow, region, 1000, 5000).unwrap();
    assert!(got.iter().enumerate().all(|(i, &v)| v == region_byte(1000 + i)));
    let bad = Region {
        key: region.key ^ 1,
        ..region
    };
    assert!(matches!(
        a.read(flow, bad, 0, 8),
        Err(ClientError::Op {
            code: OpErrorCode::AccessDenied
        })
    ));

    // Host B dies: A's read in flight fails with the flow within a few seconds, and B's
    // app hears its host is gone instead of waiting forever.
    host_b.kill();
    let start = Instant::now();
    match a.read(flow, region, 0, 8) {
        Err(ClientError::Op { code }) => assert_eq!(code, OpErrorCode::Unreachable),
        other => panic!("read after the peer host died: {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    let b_err = app_b.join().unwrap();
    assert!(matches!(b_err, ClientError::HostGone), "{b_err}");
    assert!(a.host_alive());
    drop(host_a);
}

fn op_error<T: std::fmt::Debug>(r: Result<T, ClientError>) -> OpErrorCode {
    match r {
        Err(ClientError::Op { code }) => code,
        other => panic!("expected an operation error, got {other:?}"),
    }
}

#[test]
fn flows_go_to_the_listener_of_their_service() {
    let host_a = Host::start();
    let host_b = Host::start();
    let mut one = PonyClient::connect(&host_b.socket, "pony0", Completions::Block).unwrap();
    let mut two = PonyClient::connect(&host_b.socket, "pony0", Completions::Block).unwrap();
    let mut other = PonyClient::connect(&host_b.socket, "pony0", Completions::Block).unwrap();
    one.listen(1).unwrap();
    two.listen(2).unwrap();
    assert_eq!(op_error(other.listen(1)), OpErrorCode::ServiceTaken);

    let mut a = PonyClient::connect(&host_a.socket, "pony0", Completions::Block).unwrap();
    let to_two = a.open_flow(&host_b.addr, 2).unwrap();
    let at_two = two.accept(TIMEOUT).unwrap();
    let to_one = a.open_flow(&host_b.addr, 1).unwrap();
    let at_one = one.accept(TIMEOUT).unwrap();
    a.send(to_one, 0, b"for one").unwrap();
    a.send(to_two, 0, b"for two").unwrap();
    for (app, flow, text) in [(&mut one, at_one, "for one"), (&mut two, at_two, "for two")] {
        let m = app.recv(TIMEOUT).unwrap();
        assert_eq!((m.flow, &m.data[..]), (flow, text.as_bytes()));
        assert!(app.wait_completion(Duration::from_millis(100)).unwrap().is_none());
    }
    assert_eq!(op_error(a.open_flow(&host_b.addr, 3)), OpErrorCode::NoListener);

    // `one` goes away: service 1 has no listener until `other` takes it.
    let channel = one.channel();
    drop(one);
    wait_until("the dropped app's session detached", || {
        let status = other.control().status().unwrap();
        !status.channels.iter().any(|c| c.channel == channel)
    });
    assert_eq!(op_error(a.open_flow(&host_b.addr, 1)), OpErrorCode::NoListener);
    other.listen(1).unwrap();
    a.open_flow(&host_b.addr, 1).unwrap();
    other.accept(TIMEOUT).unwrap();
}

#[test]
fn killed_app_is_detached() {
    let host = Host::start();
    let mut watcher = PonyClient::connect(&host.socket, "pony0", Completions::Poll).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_app", "--nocapture", "--test-threads=1"])
        .env(CHILD_SOCKET, &host.socket)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let line = line_starting(&mut child, "attached ");
    let channel: u64 = line.strip_prefix("attached ").expect(&line).parse().unwrap();
    let status = watcher.control().status().unwrap();
    assert!(status
        .channels
        .iter()
        .any(|c| c.channel == channel && c.engine == "pony0"));
    assert_eq!(status.channels_of("pony0"), 2);

    kill_process(Pid::from_child(&child), Signal::KILL).unwrap();
    let _ = child.wait();
    wait_until("the killed app's session detached", || {
        let status = watcher.control().status().unwrap();
        !status.channels.iter().any(|c| c.channel == channel)
    });
    // The engine is still serving: the watcher can still listen.
    watcher.listen(ECHO).unwrap();
}

/// The app process of [`killed_app_is_detached`]: attaches, holds pool buffers and a
/// registered region, says so, and waits to be killed. A no-op in a normal test run.
#[test]
fn child_app() {
    let Some(socket) = std::env::var_os(CHILD_SOCKET) else {
        return;
    };
    let mut c = PonyClient::connect(socket, "pony0", Completions::Block).unwrap();
    let mem = SharedMem::create("child-region", 4096).unwrap();
    c.register_region(&mem).unwrap();
    let _held = c.session().pool().write_chain(&[7u8; 10_000]).unwrap();
    println!("attached {}", c.channel());
    std::thread::sleep(Duration::from_secs(60));
}
