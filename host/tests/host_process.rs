//! The real `snap-host` binary, driven from outside like an app would: start it with a
//! temporary configuration (spreading mode, which needs neither root nor sched_ext), attach
//! over the control socket, echo through shared memory and UDP, and stop it with SIGTERM.

mod common;

use std::io::Read;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{test_dir, wait_until, Host, TIMEOUT};
use snap_ipc::channel::ChannelAppEnd;
use snap_ipc::control::{HostStatus, SnapClient};
use snap_ipc::PushError;

const ECHO_GROUP: &str = r#"
[[group]]
name = "latency"
mode = "spreading"
[[group.engine]]
name = "echo0"
kind = "echo"
"#;

#[test]
fn echo_ten_thousand_in_order_and_detach_on_disconnect() {
    const N: u64 = 10_000;
    let host = Host::with_config(ECHO_GROUP);
    let mut client = SnapClient::connect(&host.socket).unwrap();
    let mut ch = client.attach("echo0", true).unwrap();
    echo_in_order(&mut ch, N);
    let mut buf = [0u8; 64];

    let status = status_once_counted(&mut client, &[("echo0", N)]);
    let engine = status.runtime.engine("echo0").expect("echo0 in status");
    assert!(engine.items >= N, "{engine:?}");
    assert_eq!(status.channels_of("echo0"), 1);

    // A second app that goes away mid-stream (requests still queued) is detached.
    let mut second = SnapClient::connect(&host.socket).unwrap();
    let mut ch2 = second.attach("echo0", false).unwrap();
    for i in 0u64..100 {
        if ch2.send(&i.to_le_bytes()).is_err() {
            break;
        }
    }
    assert_eq!(client.status().unwrap().channels_of("echo0"), 2);
    drop(second);
    wait_until("the echo channel attached", || {
        client.status().unwrap().channels_of("echo0") == 1
    });
    // The first channel still works.
    ch.send(b"still here").unwrap();
    let n = ch.recv_timeout(&mut buf, TIMEOUT).unwrap().unwrap();
    assert_eq!(&buf[..n], b"still here");

    drop(ch);
    drop(client);
    let socket = host.socket.clone();
    assert!(host.terminate().success());
    assert!(!socket.exists(), "socket file left behind");
}

/// A pipeline across two groups: apps attach to the relay (spreading), which forwards to an
/// echo engine in a compacting group through an internal channel.
const PIPELINE_GROUPS: &str = r#"
[[group]]
name = "front"
mode = "spreading"
[[group.engine]]
name = "relay0"
kind = "relay"
next = "echo1"
[[group]]
name = "back"
mode = "compacting"
[[group.engine]]
name = "echo1"
kind = "echo"
"#;

#[test]
fn relay_chain_echoes_in_order_across_groups() {
    const N: u64 = 5_000;
    let host = Host::with_config(PIPELINE_GROUPS);
    let mut client = SnapClient::connect(&host.socket).unwrap();
    let mut ch = client.attach("relay0", true).unwrap();
    // Responses of 8 bytes also show the relay's routing prefix was stripped.
    echo_in_order(&mut ch, N);

    // The relay counts each message twice (forwarded, returned), the echo engine once.
    let status = status_once_counted(&mut client, &[("relay0", 2 * N), ("echo1", N)]);
    let relay = status.runtime.engine("relay0").expect("relay0 in status");
    let echo = status.runtime.engine("echo1").expect("echo1 in status");
    assert!(relay.items >= 2 * N, "{relay:?}");
    assert!(echo.items >= N, "{echo:?}");
    assert_eq!(status.channels_of("relay0"), 1);
    // The internal channel is not an app's: the control plane does not list it.
    assert_eq!(status.channels_of("echo1"), 0);

    drop(ch);
    drop(client);
    assert!(host.terminate().success());
}

#[test]
fn sigterm_exits_cleanly_and_removes_socket() {
    let host = Host::with_config(ECHO_GROUP);
    let socket = host.socket.clone();
    assert!(socket.exists());
    // With an app attached at the time.
    let mut client = SnapClient::connect(&socket).unwrap();
    let _ch = client.attach("echo0", false).unwrap();
    let status = host.terminate();
    assert!(status.success(), "{status}");
    assert!(!socket.exists());
    assert!(client.status().is_err(), "connection should be closed");
}

#[test]
fn bad_config_exits_nonzero_naming_the_field() {
    let dir = test_dir("snap-host-test");
    let config = dir.join("bad.toml");
    std::fs::write(
        &config,
        "[[group]]\nname = \"g\"\nmode = \"dedicated\"\n[[group.engine]]\nname = \"e\"\nkind = \"echo\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_snap-host"))
        .arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(dir.join("never.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("group[0].cores: dedicated mode needs at least one core"),
        "{stderr}"
    );
    assert!(!dir.join("never.sock").exists());

    std::fs::write(&config, "stuck_after_ms = 10\nstuck_afetr_ms = 5\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_snap-host"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stuck_afetr_ms") && stderr.contains("line 2"),
        "{stderr}"
    );
}

#[test]
fn udp_echo_through_the_host() {
    // A free port: bind, note, release (the host binds it right after).
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host = Host::with_config(&format!(
        "[[group]]\nname = \"nic\"\nmode = \"spreading\"\n[[group.engine]]\nname = \"udp0\"\nkind = \"udp_echo\"\nbind = \"127.0.0.1:{port}\"\n"
    ));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let server = format!("127.0.0.1:{port}");
    let mut buf = [0u8; 64];
    let mut echoed = 0;
    for i in 0u32..200 {
        sock.send_to(&i.to_le_bytes(), &server).unwrap();
        // UDP may drop under load; retry a lost one rather than fail.
        loop {
            match sock.recv_from(&mut buf) {
                Ok((4, _)) if buf[..4] == i.to_le_bytes() => {
                    echoed += 1;
                    break;
                }
                Ok(_) => continue,
                Err(_) => {
                    sock.send_to(&i.to_le_bytes(), &server).unwrap();
                }
            }
        }
    }
    assert_eq!(echoed, 200);
    let mut client = SnapClient::connect(&host.socket).unwrap();
    let status = status_once_counted(&mut client, &[("udp0", 200)]);
    assert!(status.runtime.engine("udp0").unwrap().items >= 200);
    // It is not app-facing: attaching a channel is refused by name.
    let err = client.attach("udp0", false).unwrap_err().to_string();
    assert!(err.contains("not an app-facing engine"), "{err}");
    drop(client);
    assert!(host.terminate().success());
}

/// `--socket` overrides the configuration, and a second host on a live socket is refused.
#[test]
fn socket_override_and_second_host_refused() {
    let host = Host::with_config(ECHO_GROUP);
    let dir = host.socket.parent().unwrap().to_owned();
    let config = dir.join("snap.toml");
    let mut second = Command::new(env!("CARGO_BIN_EXE_snap-host"))
        .arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(&host.socket)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = String::new();
    second.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(!second.wait().unwrap().success());
    assert!(stderr.contains("another Snap host is listening"), "{stderr}");
    // The first host is unharmed.
    SnapClient::connect(&host.socket).unwrap().status().unwrap();
    assert!(host.terminate().success());
}

/// Sends the numbers `0..n` as 8-byte requests on `ch`, keeping up to 64 in flight so that
/// both rings wrap many times, and checks that each comes back once, whole and in order.
fn echo_in_order(ch: &mut ChannelAppEnd, n: u64) {
    let (mut sent, mut got) = (0u64, 0u64);
    let mut buf = [0u8; 64];
    while got < n {
        while sent < n && sent - got < 64 {
            match ch.send(&sent.to_le_bytes()) {
                Ok(()) => sent += 1,
                Err(PushError::Full) => break,
                Err(e) => panic!("{e}"),
            }
        }
        let len = ch
            .recv_timeout(&mut buf, TIMEOUT)
            .unwrap()
            .expect("response within the timeout");
        assert_eq!(len, 8);
        assert_eq!(
            u64::from_le_bytes(buf[..8].try_into().unwrap()),
            got,
            "out of order"
        );
        got += 1;
    }
    assert_eq!(ch.try_recv(&mut buf).unwrap(), None, "a response arrived twice");
}

/// The host's status once each named engine has counted at least its number of items (or
/// after the timeout, for the caller's assertion to report). A step's items are counted when
/// the step returns, which can be just after the app saw its last response.
fn status_once_counted(client: &mut SnapClient, want: &[(&str, u64)]) -> HostStatus {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let status = client.status().unwrap();
        let counted = want
            .iter()
            .all(|(name, n)| status.runtime.engine(name).is_some_and(|e| e.items >= *n));
        if counted || Instant::now() > deadline {
            return status;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
