//! An app blocked on its channel when the host is SIGKILLed: `recv_timeout` returns
//! `ChannelError::HostGone` within 100 ms instead of waiting out its timeout, for an app
//! that blocks on its completion doorbell and for one that polls.

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Host, ECHO_GROUP};
use snap_ipc::channel::ChannelError;
use snap_ipc::control::SnapClient;

/// The bound the issue sets for noticing a dead host.
const HOST_GONE_WITHIN: Duration = Duration::from_millis(100);

fn blocked_app_sees_host_gone(notify: bool) {
    let mut host = Host::with_config(ECHO_GROUP);
    let mut client = SnapClient::connect(&host.socket).unwrap();
    let mut ch = client.attach("echo0", notify).unwrap();
    let mut buf = [0u8; 64];
    ch.send(b"x").unwrap();
    assert!(ch.recv_timeout(&mut buf, common::TIMEOUT).unwrap().is_some());
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        // Nothing was sent: only the host's death ends this wait early.
        let result = ch.recv_timeout(&mut buf, Duration::from_secs(30));
        tx.send(Instant::now()).unwrap();
        (result, client)
    });
    // Let it block first.
    std::thread::sleep(Duration::from_millis(200));
    let killed = Instant::now();
    host.kill();
    let woke = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("recv_timeout returns");
    let (result, _client) = waiter.join().unwrap();
    let after = woke.saturating_duration_since(killed);
    eprintln!("notify={notify}: HostGone {after:?} after SIGKILL");
    assert!(matches!(result, Err(ChannelError::HostGone)), "{result:?}");
    assert!(after < HOST_GONE_WITHIN, "{after:?}");
}

#[test]
fn blocking_app_sees_host_gone_within_100ms() {
    blocked_app_sees_host_gone(true);
}

#[test]
fn polling_app_sees_host_gone_within_100ms() {
    blocked_app_sees_host_gone(false);
}
