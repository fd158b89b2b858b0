//! `pony cat` between two real hosts on loopback: 8 MiB of random bytes from stdin on one
//! side arrive byte-exact on stdout on the other, and both ends exit by themselves.

mod common;

use std::process::Stdio;

use common::{hash, random_bytes, run, stderr, stderr_line, test_dir, Host, Running};

#[test]
fn cat_copies_eight_mib_byte_exact_and_both_ends_exit() {
    let a = Host::start();
    let b = Host::start();
    let dir = test_dir("pony-cat");
    let out_path = dir.join("copy.bin");
    let mut listener = b.pony(&["cat", "--listen", "--service", "7"]);
    listener
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::piped());
    let mut listener = Running::new(listener.spawn().unwrap());
    stderr_line(&mut listener, "listening on service 7");

    let data = random_bytes(8 << 20);
    let sent = run(a.pony(&["cat", "--peer", &b.addr, "--service", "7"]), &data);
    assert!(sent.status.success(), "sender: {}", stderr(&sent));
    // The sender exits once everything is acknowledged, the receiver at the stream's end.
    let received = listener.finish();
    assert!(received.status.success(), "receiver: {}", stderr(&received));
    let copy = std::fs::read(&out_path).unwrap();
    assert_eq!(copy.len(), data.len());
    assert_eq!(hash(&copy), hash(&data), "the copy differs");
    assert!(copy == data);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn cat_of_empty_stdin_is_an_empty_stream() {
    let a = Host::start();
    let b = Host::start();
    let mut listener = common::spawn(b.pony(&["cat", "--listen", "--service", "8"]));
    stderr_line(&mut listener, "listening on service 8");
    let sent = run(a.pony(&["cat", "--peer", &b.addr, "--service", "8"]), b"");
    assert!(sent.status.success(), "sender: {}", stderr(&sent));
    let received = listener.finish();
    assert!(received.status.success(), "receiver: {}", stderr(&received));
    assert!(received.stdout.is_empty());
}

/// Sends SIGINT (Ctrl-C) to `child`.
fn ctrl_c(child: &mut Running) {
    let pid = child.child().id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
}

#[test]
fn a_sender_interrupted_mid_stream_is_an_error_at_the_receiver_not_a_short_copy() {
    let a = Host::start();
    let b = Host::start();
    let dir = test_dir("pony-cat-cut");
    let out_path = dir.join("copy.bin");
    let mut listener = b.pony(&["cat", "--listen", "--service", "6"]);
    listener
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::piped());
    let mut listener = Running::new(listener.spawn().unwrap());
    stderr_line(&mut listener, "listening on service 6");
    // A sender whose stdin stays open after its first MiB, as a pipe from a slow producer.
    let mut sender = a.pony(&["cat", "--peer", &b.addr, "--service", "6"]);
    sender
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut sender = Running::new(sender.spawn().unwrap());
    let mut stdin = sender.child().stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, &random_bytes(1 << 20)).unwrap();
    common::wait_until("the first MiB arrives", || {
        std::fs::metadata(&out_path).is_ok_and(|m| m.len() == 1 << 20)
    });
    ctrl_c(&mut sender);
    let sent = sender.finish();
    assert_eq!(sent.status.code(), Some(130), "sender: {}", stderr(&sent));
    assert_eq!(stderr(&sent), "pony: interrupted\n");
    let received = listener.finish();
    assert_eq!(received.status.code(), Some(1), "receiver: {}", stderr(&received));
    assert!(
        stderr(&received).contains("without the sender's end mark after 1048576 bytes"),
        "{}",
        stderr(&received)
    );
    drop(stdin);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn ctrl_c_ends_a_waiting_listener_and_a_perf_server_cleanly() {
    let host = Host::start();
    let mut listener = common::spawn(host.pony(&["cat", "--listen", "--service", "4"]));
    stderr_line(&mut listener, "listening on service 4");
    ctrl_c(&mut listener);
    let out = listener.finish();
    assert_eq!(out.status.code(), Some(130));
    assert!(out.stdout.is_empty());
    // The service is free again at once: a perf server takes it, and Ctrl-C is its normal end.
    let mut server = common::spawn(host.pony(&["perf", "server", "--service", "4"]));
    stderr_line(&mut server, "listening on service 4");
    ctrl_c(&mut server);
    let out = server.finish();
    assert_eq!(out.status.code(), Some(0));
}
