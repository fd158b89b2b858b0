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
