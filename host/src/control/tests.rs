//! Control plane tests against a real runtime in this process.

use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use snap_engines::echo::EchoEngine;
use snap_engines::udp_echo::UdpEchoEngine;
use snap_ipc::control::SnapClient;
use snap_runtime::{CompactingParams, Engine, GroupSpec, Mode, Runtime, RuntimeOptions};

use super::*;

fn socket_path() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir()
        .join(format!("snap-ctl-{}-{n}", std::process::id()))
        .join("snap.sock")
}

fn host() -> (Arc<Runtime>, ControlServer, PathBuf) {
    host_with(vec![
        Box::new(EchoEngine::new("echo0", 0)),
        Box::new(UdpEchoEngine::bind("udp0", "127.0.0.1:0".parse().unwrap(), 0).unwrap()),
    ])
}

/// A control server on a spreading runtime of `engines`.
fn host_with(engines: Vec<Box<dyn Engine>>) -> (Arc<Runtime>, ControlServer, PathBuf) {
    let group = GroupSpec {
        name: "g".into(),
        mode: Mode::Spreading,
        cores: Vec::new(),
        engines,
        compacting: CompactingParams::default(),
        idle_poll: snap_runtime::DEFAULT_IDLE_POLL,
        microquanta_group: None,
    };
    let runtime = Arc::new(Runtime::start(vec![group], RuntimeOptions::default()).unwrap());
    let path = socket_path();
    let server = ControlServer::start(&path, runtime.clone(), ServerOptions::default()).unwrap();
    (runtime, server, path)
}

fn wait_until(mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "condition not reached in 5 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn attach_echo_status_and_disconnect_detaches() {
    let (_rt, server, path) = host();
    let mut client = SnapClient::connect(&path).unwrap();
    for notify in [false, true] {
        let mut ch = client.attach("echo0", notify).unwrap();
        let mut buf = [0u8; 64];
        for i in 0u32..100 {
            ch.send(&i.to_le_bytes()).unwrap();
            let n = ch.recv_timeout(&mut buf, Duration::from_secs(5)).unwrap();
            assert_eq!(n, Some(4));
            assert_eq!(&buf[..4], &i.to_le_bytes());
        }
    }
    let status = client.status().unwrap();
    assert_eq!(status.channels_of("echo0"), 2);
    assert!(status.channels.iter().all(|c| c.pid == std::process::id() as i32));
    assert!(serde_json::to_string(&status.runtime).unwrap().contains("echo0"));

    let mut other = SnapClient::connect(&path).unwrap();
    drop(client);
    wait_until(|| other.status().unwrap().channels.is_empty());
    server.shutdown();
    assert!(!path.exists());
}

#[test]
fn explicit_detach_and_errors() {
    let (_rt, server, path) = host();
    let mut client = SnapClient::connect(&path).unwrap();
    let (id, _ch) = client.attach_channel("echo0", false).unwrap();
    client.detach(id).unwrap();
    assert_eq!(client.status().unwrap().channels_of("echo0"), 0);
    let err = client.detach(id).unwrap_err().to_string();
    assert!(err.contains("not attached on this connection"), "{err}");
    let err = client.attach("nope", false).unwrap_err().to_string();
    assert!(err.contains("no engine named \"nope\""), "{err}");
    let err = client.attach("udp0", true).unwrap_err().to_string();
    assert!(err.contains("not an app-facing engine"), "{err}");
    // The connection is still usable after errors.
    client.attach("echo0", false).unwrap();
    server.shutdown();
    // Shutdown closed our connection.
    assert!(client.status().is_err());
}

#[test]
fn stage_fd_only_for_own_channels_and_willing_engines() {
    let (_rt, server, path) = host();
    let mut client = SnapClient::connect(&path).unwrap();
    let (id, _ch) = client.attach_channel("echo0", false).unwrap();
    let (r, _w) = std::io::pipe().unwrap();
    let err = client.stage_fd("echo0", id, r.as_fd()).unwrap_err().to_string();
    assert!(err.contains("takes no descriptors after attach"), "{err}");
    let err = client
        .stage_fd("echo0", id + 1, r.as_fd())
        .unwrap_err()
        .to_string();
    assert!(err.contains("not attached on this connection"), "{err}");
    let mut other = SnapClient::connect(&path).unwrap();
    let err = other.stage_fd("echo0", id, r.as_fd()).unwrap_err().to_string();
    assert!(err.contains("not attached on this connection"), "{err}");
    assert!(client.host_alive());
    server.shutdown();
    assert!(!client.host_alive());
}

#[test]
fn socket_path_conflicts() {
    let (rt, server, path) = host();
    let err = ControlServer::start(&path, rt.clone(), ServerOptions::default()).unwrap_err();
    assert!(matches!(err, ServerError::InUse(_)), "{err}");
    server.shutdown();
    // A stale socket (its host died without cleaning up) is replaced.
    let stale = socket_path();
    std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
    {
        let fd = rustix::net::socket(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            None,
        )
        .unwrap();
        rustix::net::bind(&fd, &rustix::net::SocketAddrUnix::new(&stale).unwrap()).unwrap();
    }
    assert!(std::fs::symlink_metadata(&stale).unwrap().file_type().is_socket());
    let s = ControlServer::start(&stale, rt.clone(), ServerOptions::default()).unwrap();
    SnapClient::connect(&stale).unwrap().status().unwrap();
    s.shutdown();
    // A regular file is never deleted.
    std::fs::write(&stale, b"data").unwrap();
    let err = ControlServer::start(&stale, rt, ServerOptions::default()).unwrap_err();
    assert!(matches!(err, ServerError::NotASocket(_)), "{err}");
    assert_eq!(std::fs::read(&stale).unwrap(), b"data");
}

#[test]
fn access_rule() {
    assert!(is_allowed(0, 1000, &[]));
    assert!(is_allowed(1000, 1000, &[]));
    assert!(is_allowed(1001, 1000, &[1001]));
    assert!(!is_allowed(1002, 1000, &[1001]));
}

#[test]
fn status_carries_each_engines_own_counters() {
    use pony_engine::nic::{FaultConfig, FaultyNic, UdpNic};
    use pony_engine::{PonyConfig, PonyEngine};
    let nic = FaultyNic::new(UdpNic::bind("127.0.0.1:0").unwrap()).on_send(FaultConfig {
        loss: 1.0,
        ..FaultConfig::default()
    });
    let (_runtime, _server, path) = host_with(vec![
        Box::new(EchoEngine::new("echo0", 0)),
        Box::new(PonyEngine::new("pony0", Box::new(nic), PonyConfig::default())),
    ]);
    let status = SnapClient::connect(&path).unwrap().status().unwrap();
    // The Pony engine reports its counters, its fault injector's included; the echo engine
    // has none of its own.
    assert_eq!(status.counter("pony0", "packets_out"), Some(0));
    assert_eq!(status.counter("pony0", "faults.tx.dropped"), Some(0));
    assert!(!status.counters.contains_key("echo0"), "{:?}", status.counters);
}
