//! Hostile and slow apps against a real `snap-host` process: an app that scribbles its
//! request ring is quarantined, an app that never drains its responses is backpressured,
//! and a relay whose app is slow backpressures the whole pipeline. In every case the host
//! must not spin (its CPU time, from `/proc/PID/stat`, grows by less than 5 % of the wall
//! time over 5 s), nothing is lost, and the other apps keep being served.

mod common;

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use common::{wait_until, Host, ECHO_GROUP, TIMEOUT};
use snap_ipc::channel::{ChannelAppEnd, CloseReason};
use snap_ipc::control::SnapClient;
use snap_ipc::{Doorbell, SharedMem};

/// The window over which the host's CPU time is measured, and the bound: 5 % of it.
const WINDOW: Duration = Duration::from_secs(5);
const MAX_CPU: Duration = Duration::from_millis(250);

/// CPU time (user + system) the kernel charged to process `pid` so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name may hold spaces: the fields we want come after its ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // Fields 14 and 15 of proc(5); `rest` starts at field 3.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = rustix::param::clock_ticks_per_second();
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

/// The host's CPU time over [`WINDOW`], while `during` runs (it is called repeatedly).
fn cpu_over_window(pid: u32, mut during: impl FnMut()) -> Duration {
    let before = cpu_time(pid);
    let end = Instant::now() + WINDOW;
    while Instant::now() < end {
        during();
        std::thread::sleep(Duration::from_millis(10));
    }
    let used = cpu_time(pid) - before;
    eprintln!("host CPU time over {WINDOW:?}: {used:?}");
    used
}

/// Median round-trip time of `n` one-at-a-time echoes of 8 bytes.
fn p50_round_trip(ch: &mut ChannelAppEnd, n: usize) -> Duration {
    let mut buf = [0u8; 64];
    let mut samples: Vec<Duration> = (0..n as u64)
        .map(|i| {
            let start = Instant::now();
            ch.send(&i.to_le_bytes()).unwrap();
            let got = ch.recv_timeout(&mut buf, TIMEOUT).unwrap().expect("echo in time");
            assert_eq!(&buf[..got], &i.to_le_bytes());
            start.elapsed()
        })
        .collect();
    samples.sort();
    samples[n / 2]
}

/// An app that attaches to `engine` and keeps its own writable mapping of the request
/// ring, to scribble it, and the engine doorbell's eventfd, to write it at will.
fn attach_hostile(client: &mut SnapClient, engine: &str) -> (ChannelAppEnd, SharedMem, OwnedFd) {
    let bell = Doorbell::new().unwrap();
    let (page, efd) = bell.fds();
    let (_, _, fds) = client.attach_raw(engine, true, &[page, efd]).unwrap();
    let raw = SharedMem::from_fd(fds[0].try_clone().unwrap()).unwrap();
    let engine_efd = fds[3].try_clone().unwrap();
    let end = ChannelAppEnd::from_fds(fds, Some(bell)).unwrap();
    (end, raw, engine_efd)
}

/// Writes `value` over the producer index of a ring (offset 64 of its header, see
/// `snap_ipc::ring::layout`).
fn scribble_producer(ring: &SharedMem, value: u64) {
    // SAFETY: offset 64..72 is inside the mapping (a ring is far larger); the other side
    // reads it atomically and must survive any value, which is the point of the test.
    unsafe { ring.as_ptr().add(64).cast::<u64>().write_volatile(value) };
}

fn engine_counters(client: &mut SnapClient, engine: &str) -> (u64, u64) {
    let status = client.status().unwrap();
    let e = status.runtime.engine(engine).unwrap();
    (e.quarantined, e.backpressured)
}

#[test]
fn scribbled_request_ring_is_quarantined_and_the_host_does_not_spin() {
    let host = Host::with_config(ECHO_GROUP);
    let pid = host.process.pid();
    let mut good_client = SnapClient::connect(&host.socket).unwrap();
    let mut good = good_client.attach("echo0", true).unwrap();
    let before = p50_round_trip(&mut good, 2000);

    let mut hostile_client = SnapClient::connect(&host.socket).unwrap();
    let (mut hostile, raw, efd) = attach_hostile(&mut hostile_client, "echo0");
    assert_eq!(good_client.status().unwrap().channels_of("echo0"), 2);
    hostile.push(b"fine").unwrap();
    scribble_producer(&raw, 1 << 40);
    hostile.kick();
    wait_until("the hostile channel is quarantined", || {
        hostile.quarantined().is_some()
    });
    assert_eq!(hostile.quarantined(), Some(CloseReason::CorruptIndices));
    let mut buf = [0u8; 64];
    assert!(matches!(
        hostile.recv_timeout(&mut buf, TIMEOUT),
        Err(snap_ipc::channel::ChannelError::Quarantined(
            CloseReason::CorruptIndices
        ))
    ));
    // Detached and counted; the registry no longer lists it.
    let status = good_client.status().unwrap();
    assert_eq!(status.channels_of("echo0"), 1, "{:?}", status.channels);
    assert_eq!(status.runtime.engine("echo0").unwrap().quarantined, 1);

    // The app keeps scribbling and ringing the (former) doorbell eventfd: the host must
    // not notice.
    let mut k = 0u64;
    let used = cpu_over_window(pid, || {
        k += 1;
        scribble_producer(&raw, k.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let _ = rustix::io::write(&efd, &1u64.to_ne_bytes());
    });
    assert!(used < MAX_CPU, "host used {used:?} of CPU in {WINDOW:?}");

    let after = p50_round_trip(&mut good, 2000);
    eprintln!("good app p50 round trip: before {before:?}, after {after:?}");
    // The same engine, thread and app as before: only noise (other builds share the two
    // CPUs) separates the two medians; 3x + 200 us leaves room for that and still fails
    // on an engine that spins or serves the good app only between hostile wakeups.
    assert!(
        after <= before * 3 + Duration::from_micros(200),
        "p50 before {before:?}, after {after:?}"
    );
    drop(good);
    assert!(host.terminate().success());
}

/// Reads `n` responses, which must be 0..n in order.
fn drain_in_order(ch: &mut ChannelAppEnd, n: u64) {
    let mut buf = [0u8; 64];
    let mut next = 0u64;
    // Requests left in the request ring are echoed as room appears: keep kicking.
    while next < n {
        match ch.recv_timeout(&mut buf, TIMEOUT).unwrap() {
            Some(8) => {
                assert_eq!(u64::from_le_bytes(buf[..8].try_into().unwrap()), next);
                next += 1;
            }
            other => panic!("response {next} of {n}: {other:?}"),
        }
    }
    assert_eq!(ch.try_recv(&mut buf).unwrap(), None);
}

#[test]
fn app_that_never_drains_is_backpressured_without_loss() {
    let host = Host::with_config(ECHO_GROUP);
    let pid = host.process.pid();
    let mut client = SnapClient::connect(&host.socket).unwrap();
    let mut slow = client.attach("echo0", false).unwrap();
    let mut other_client = SnapClient::connect(&host.socket).unwrap();
    let mut other = other_client.attach("echo0", true).unwrap();

    // Both rings hold 256: the engine fills the response ring, then must stop.
    let mut sent = 0;
    wait_until("the engine backpressures the slow app", || {
        let more = flood_from(&mut slow, sent, 10_000);
        sent += more;
        more == 0 && engine_counters(&mut client, "echo0").1 >= 1
    });
    assert_eq!(sent, 512, "request ring and response ring full");

    let used = cpu_over_window(pid, || {});
    assert!(used < MAX_CPU, "host used {used:?} of CPU in {WINDOW:?}");
    // The other app is served meanwhile.
    p50_round_trip(&mut other, 100);

    drain_in_order(&mut slow, sent);
    let status = client.status().unwrap();
    assert!(status.runtime.engine("echo0").unwrap().backpressured >= 1);
    assert!(host.terminate().success());
}

const PIPELINE_GROUPS: &str = r#"
microquanta = false
[[group]]
name = "front"
mode = "spreading"
[[group.engine]]
name = "relay0"
kind = "relay"
next = "echo1"
[[group]]
name = "back"
mode = "spreading"
[[group.engine]]
name = "echo1"
kind = "echo"
"#;

/// Reads every response of every app, each in order (0..n), interleaving the apps: one
/// app's response may wait at the head of a shared ring until another app makes room.
fn drain_all_in_order(apps: &mut [ChannelAppEnd], sent: &[u64]) {
    let mut buf = [0u8; 64];
    let mut next = vec![0u64; apps.len()];
    let deadline = Instant::now() + TIMEOUT;
    while next.iter().zip(sent).any(|(n, s)| n < s) {
        let mut progress = false;
        for (i, app) in apps.iter_mut().enumerate() {
            while let Some(n) = app.try_recv(&mut buf).unwrap() {
                assert_eq!(n, 8);
                assert_eq!(
                    u64::from_le_bytes(buf[..8].try_into().unwrap()),
                    next[i],
                    "app {i}"
                );
                next[i] += 1;
                progress = true;
            }
        }
        if !progress {
            assert!(Instant::now() < deadline, "drained {next:?} of {sent:?}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    for app in apps {
        assert_eq!(app.try_recv(&mut buf).unwrap(), None);
    }
}

#[test]
fn slow_apps_behind_a_relay_backpressure_the_pipeline_without_loss() {
    let host = Host::with_config(PIPELINE_GROUPS);
    let pid = host.process.pid();
    let mut client = SnapClient::connect(&host.socket).unwrap();
    // Two apps that never drain: the first one's full response ring holds the relay's
    // return path (the internal response ring is FIFO), the second one's requests keep
    // flowing to the next engine until the internal response ring is full (the next
    // engine is backpressured by the relay) and then the internal request ring is full
    // (the relay waits for the next engine).
    let mut apps = vec![
        client.attach("relay0", false).unwrap(),
        client.attach("relay0", false).unwrap(),
    ];
    let mut sent = vec![0u64; 2];
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut more = 0;
        for (app, sent) in apps.iter_mut().zip(&mut sent) {
            let n = flood_from(app, *sent, 10_000);
            *sent += n;
            more += n;
        }
        let status = client.status().unwrap();
        let (relay, echo) = (
            status.runtime.engine("relay0").unwrap().backpressured,
            status.runtime.engine("echo1").unwrap().backpressured,
        );
        if more == 0 && relay >= 1 && echo >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pipeline not backpressured; sent {sent:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Everything the apps queued is held somewhere: nothing was dropped for lack of room.
    let status = client.status().unwrap();
    let relay = status.runtime.engine("relay0").unwrap();
    assert!(sent.iter().sum::<u64>() >= 1024, "{sent:?}");

    let used = cpu_over_window(pid, || {});
    assert!(
        used < MAX_CPU,
        "host used {used:?} of CPU in {WINDOW:?}; relay {relay:?}"
    );

    drain_all_in_order(&mut apps, &sent);
    assert!(host.terminate().success());
}

/// Sends up to `n` requests numbered from `first` without reading any response, as far as
/// the request ring takes them (kicking the engine after each), and returns how many were
/// queued.
fn flood_from(ch: &mut ChannelAppEnd, first: u64, n: u64) -> u64 {
    let mut sent = 0;
    while sent < n {
        match ch.send(&(first + sent).to_le_bytes()) {
            Ok(()) => sent += 1,
            Err(snap_ipc::PushError::Full) => break,
            Err(e) => panic!("{e}"),
        }
    }
    sent
}
