//! A ring shared by two real processes: this test re-executes its own binary as a child that
//! attaches to an inherited memfd and produces, while the parent consumes and checks order.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

use snap_ipc::{PushError, Ring, SharedMem};

/// Set in the child's environment to the inherited memfd's number; selects the child role.
const CHILD_FD_VAR: &str = "SNAP_RING_TEST_CHILD_FD";
const MESSAGES: u64 = 200_000;
const TIMEOUT: Duration = Duration::from_secs(60);

/// The child role: attach to the inherited region and push `MESSAGES` sequence numbers.
/// In the parent's test run this is a no-op that passes.
#[test]
fn child_producer() {
    let Ok(fd) = std::env::var(CHILD_FD_VAR) else {
        return;
    };
    let fd: i32 = fd.parse().expect("fd number");
    // SAFETY: the parent passed this descriptor to us across exec and nothing else owns it.
    let mem = SharedMem::from_fd(unsafe { OwnedFd::from_raw_fd(fd) }).expect("map memfd");
    let mut producer = Ring::attach(mem).expect("attach").into_producer();
    for seq in 0..MESSAGES {
        let len = 8 + (seq % 9) as usize;
        let mut msg = [seq as u8; 16];
        msg[..8].copy_from_slice(&seq.to_le_bytes());
        while producer.push(&msg[..len]) == Err(PushError::Full) {
            std::thread::yield_now();
        }
    }
}

#[test]
fn child_process_produces_parent_consumes_in_order() {
    if std::env::var_os(CHILD_FD_VAR).is_some() {
        return; // we are the child; only `child_producer` runs there.
    }
    let len = Ring::required_len(256, 24).unwrap();
    let mem = SharedMem::create("ring-processes", len).unwrap();
    let ring = Ring::create(mem, 256, 24).unwrap();
    ring.shared_mem().set_inheritable(true).unwrap();
    let fd = ring.shared_mem().as_fd().as_raw_fd();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_producer", "--nocapture", "--test-threads=1"])
        .env(CHILD_FD_VAR, fd.to_string())
        .spawn()
        .expect("spawn child");
    // Only the child needs the descriptor to survive exec.
    ring.shared_mem().set_inheritable(false).unwrap();

    let mut consumer = ring.into_consumer();
    let start = Instant::now();
    let mut buf = [0u8; 20];
    let mut expect = 0u64;
    while expect < MESSAGES {
        match consumer.try_pop(&mut buf).expect("well-formed ring") {
            Some(n) => {
                assert_eq!(n, 8 + (expect % 9) as usize);
                assert_eq!(u64::from_le_bytes(buf[..8].try_into().unwrap()), expect);
                assert!(buf[8..n].iter().all(|&b| b == expect as u8));
                expect += 1;
            }
            None => {
                if let Some(status) = child.try_wait().unwrap() {
                    // Drain what it left before giving up.
                    if consumer.peek().unwrap().is_none() {
                        panic!("child exited ({status}) after {expect} messages");
                    }
                    continue;
                }
                assert!(start.elapsed() < TIMEOUT, "timed out at message {expect}");
                std::thread::yield_now();
            }
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "child failed: {status}");
    assert_eq!(consumer.try_pop(&mut buf), Ok(None));
}
