//! The control server's limits against a real `snap-host` process: a flood of 10 000
//! control connections is refused beyond the cap with a clear, counted error while an
//! attached app keeps echoing, a new app attaches afterwards, and idle connections are
//! closed after the idle timeout.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{wait_until, Host, TIMEOUT};
use snap_ipc::control::{ClientError, SnapClient};

const CAP: usize = 64;
const IDLE_MS: u64 = 1500;

fn config() -> String {
    format!(
        r#"
microquanta = false
[control]
max_connections = {CAP}
idle_timeout_ms = {IDLE_MS}
request_timeout_ms = 1000
[[group]]
name = "latency"
mode = "spreading"
[[group.engine]]
name = "echo0"
kind = "echo"
"#
    )
}

/// Lets this process hold many descriptors (we are root in the test VM and on CI; the
/// soft limit is often 1024).
fn raise_nofile(n: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let old = getrlimit(Resource::Nofile);
    let max = old.maximum.map_or(n, |m| m.max(n));
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(n),
            maximum: Some(max),
        },
    )
    .expect("raising RLIMIT_NOFILE");
}

#[test]
fn connection_flood_is_refused_beyond_the_cap_and_idle_connections_close() {
    raise_nofile(16_384);
    let host = Host::with_config(&config());

    // An app attached before the flood echoes all through it, from its own thread.
    let mut app_client = SnapClient::connect(&host.socket).unwrap();
    let mut app = app_client.attach("echo0", true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let echoer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let (mut n, mut worst) = (0u64, Duration::ZERO);
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                app.send(&n.to_le_bytes()).unwrap();
                let got = app
                    .recv_timeout(&mut buf, TIMEOUT)
                    .unwrap()
                    .expect("echo during the flood");
                assert_eq!(&buf[..got], &n.to_le_bytes());
                worst = worst.max(start.elapsed());
                n += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
            (app, n, worst)
        })
    };

    // The flood: 10 000 connections, each asking for status; those the host serves are kept
    // open, so the cap is reached.
    let mut held = Vec::new();
    let (mut served, mut refused, mut idled) = (0u64, 0u64, 0u64);
    for _ in 0..10_000 {
        let mut c = SnapClient::connect(&host.socket).expect("connect is never refused by the kernel");
        match c.status() {
            Ok(status) => {
                assert!(status.control.connections <= CAP, "{:?}", status.control);
                served += 1;
                held.push(c);
            }
            Err(ClientError::Refused(message)) if message.contains("too many control connections") => {
                assert!(message.contains(&format!("at most {CAP}")), "{message}");
                refused += 1;
            }
            // A held connection's slot frees up when it idles out; a new one may be closed
            // the same way if the flood stalls for that long. Either is a clear error.
            Err(ClientError::Refused(message)) if message.contains("idle") => idled += 1,
            Err(e) => panic!("flood connection: unclear error {e}"),
        }
    }
    eprintln!("flood: {served} served, {refused} refused at the cap, {idled} closed idle");
    assert!(refused > 0);
    assert!(served >= (CAP - 1) as u64);

    stop.store(true, Ordering::Relaxed);
    let (app, echoed, worst) = echoer.join().expect("the attached app kept working");
    eprintln!("attached app: {echoed} echoes during the flood, worst round trip {worst:?}");
    assert!(echoed > 0);

    let status = app_client.status().unwrap();
    assert_eq!(status.control.refused, refused, "{:?}", status.control);
    assert!(status.control.connections <= CAP);
    assert_eq!(status.channels_of("echo0"), 1);

    // After the flood, a new app attaches and echoes.
    drop(held);
    wait_until("the flood's connections are gone", || {
        app_client.status().unwrap().control.connections < CAP
    });
    let mut late_client = SnapClient::connect(&host.socket).unwrap();
    let mut late = late_client.attach("echo0", false).unwrap();
    let mut buf = [0u8; 64];
    late.send(b"late").unwrap();
    let n = late.recv_timeout(&mut buf, TIMEOUT).unwrap().unwrap();
    assert_eq!(&buf[..n], b"late");

    // An idle connection with no channel is closed after the idle timeout, and told why;
    // the attached ones stay (their channels still echo).
    let mut idle = SnapClient::connect(&host.socket).unwrap();
    let opened = Instant::now();
    wait_until("the idle connection is closed", || !idle.host_alive());
    let after = opened.elapsed();
    assert!(
        after >= Duration::from_millis(IDLE_MS - 50),
        "closed after {after:?}"
    );
    match idle.status() {
        Err(ClientError::Refused(message)) => assert!(message.contains("idle"), "{message}"),
        other => panic!("idle connection: {other:?}"),
    }
    late.send(b"still").unwrap();
    let n = late.recv_timeout(&mut buf, TIMEOUT).unwrap().unwrap();
    assert_eq!(&buf[..n], b"still");
    let status = app_client.status().unwrap();
    assert!(status.control.timed_out >= 1, "{:?}", status.control);
    assert_eq!(status.channels_of("echo0"), 2);
    drop(app);
    assert!(host.terminate().success());
}
