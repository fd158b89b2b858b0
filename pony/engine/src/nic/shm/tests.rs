//! Tests of [`ShmWire`]: in one process, across two threads through a socket path, and across
//! two processes (this test binary re-executed as the child, as in
//! `engines/tests/ring_processes.rs`), plus doorbell wake-ups and refusal of bad descriptors.

use super::*;
use std::process::Command;
use std::sync::atomic::AtomicU32;

/// Set in the child's environment to the socket path; selects the child role.
const CHILD_PATH_VAR: &str = "PONY_SHM_WIRE_CHILD_PATH";
const PACKETS: u64 = 10_000;
const TIMEOUT: Duration = Duration::from_secs(60);

fn small() -> ShmWireConfig {
    ShmWireConfig {
        mtu: 256,
        capacity: 64,
    }
}

/// A socket path unique to this process and call (Unix socket paths are short: /tmp).
fn sock_path(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("pony-shm-{tag}-{}-{n}.sock", std::process::id()))
}

/// Packet `seq`: its number, then a length that varies with it.
fn packet(seq: u64, buf: &mut [u8]) -> usize {
    let len = 8 + (seq % 200) as usize;
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    buf[8..len].fill(seq as u8);
    len
}

/// Blocks the way an engine thread would: arm, re-check (the race), wait on the eventfd.
fn wait(wire: &ShmWire, timeout: Duration) {
    let probe = wire.work_probe();
    wire.doorbell().arm();
    if !probe.has_work() {
        let efd = wire.doorbell().eventfd();
        let mut fds = [PollFd::new(&efd, PollFlags::IN)];
        let ts = Timespec::try_from(timeout).unwrap();
        let _ = poll(&mut fds, Some(&ts));
    }
    wire.doorbell().drain();
    wire.doorbell().disarm();
}

/// Sends `PACKETS` numbered packets and receives as many, interleaved so neither side can
/// stall on a full ring; checks every one arrives exactly once, in order, intact.
fn exchange(wire: &mut ShmWire) {
    let start = Instant::now();
    let (mut sent, mut got) = (0u64, 0u64);
    let mut out = [0u8; 256];
    let mut buf = [0u8; 256];
    while sent < PACKETS || got < PACKETS {
        assert!(start.elapsed() < TIMEOUT, "timed out: sent {sent}, got {got}");
        let mut progressed = false;
        while sent < PACKETS {
            let len = packet(sent, &mut out);
            match wire.send(&out[..len], &PeerAddr::Shm) {
                Ok(()) => sent += 1,
                Err(NicError::WouldBlock) => break,
                Err(e) => panic!("send: {e}"),
            }
            progressed = true;
        }
        while let Some((n, from)) = wire.recv(&mut buf).expect("well-formed wire") {
            assert_eq!(from, PeerAddr::Shm);
            let len = packet(got, &mut out);
            assert_eq!(&buf[..n], &out[..len], "packet {got}");
            got += 1;
            progressed = true;
        }
        if !progressed && got < PACKETS {
            wait(wire, Duration::from_millis(20));
        }
    }
    let s = wire.stats();
    assert_eq!((s.tx_packets, s.rx_packets), (PACKETS, PACKETS));
}

#[test]
fn nic_shm_pair_round_trip_full_and_refusals() {
    let (mut a, mut b) = ShmWire::pair(small()).unwrap();
    assert_eq!((a.mtu(), b.mtu()), (256, 256));
    let mut buf = [0u8; 256];
    assert!(b.recv(&mut buf).unwrap().is_none());
    a.send(b"ping", &PeerAddr::Shm).unwrap();
    assert_eq!(b.recv(&mut buf).unwrap(), Some((4, PeerAddr::Shm)));
    assert_eq!(&buf[..4], b"ping");
    b.send(b"pong!", &PeerAddr::Shm).unwrap();
    assert_eq!(a.recv(&mut buf).unwrap(), Some((5, PeerAddr::Shm)));

    let udp = PeerAddr::Udp("127.0.0.1:1".parse().unwrap());
    assert!(matches!(a.send(b"x", &udp), Err(NicError::WrongPeer(_))));
    assert!(matches!(
        a.send(&[0; 257], &PeerAddr::Shm),
        Err(NicError::TooLarge { len: 257, mtu: 256 })
    ));
    // Lossless until full, then WouldBlock (nothing sent).
    for i in 0..64u8 {
        a.send(&[i], &PeerAddr::Shm).unwrap();
    }
    assert!(matches!(a.send(&[99], &PeerAddr::Shm), Err(NicError::WouldBlock)));
    assert_eq!(a.stats().tx_full, 1);
    // A buffer too small drops that packet (counted) rather than wedging the wire.
    let (first, rest) = buf.split_at_mut(0);
    assert_eq!(b.recv(first).unwrap(), None);
    assert_eq!(
        b.stats().rx_oversize,
        64,
        "all 64 one-byte packets exceed a 0-byte buffer"
    );
    assert!(b.recv(rest).unwrap().is_none());
}

#[test]
fn nic_shm_doorbell_wakes_a_blocked_receiver_and_is_quiet_while_polled() {
    let (mut a, b) = ShmWire::pair(small()).unwrap();
    let bell = b.doorbell().clone();
    // Not armed (receiver polling): sends cost no eventfd write.
    a.send(b"1", &PeerAddr::Shm).unwrap();
    assert_eq!(bell.drain(), 0);
    let waiter = std::thread::spawn(move || {
        let mut b = b;
        let mut buf = [0u8; 16];
        assert_eq!(b.recv(&mut buf).unwrap(), Some((1, PeerAddr::Shm)));
        // Now block on the eventfd alone, like an idle engine thread.
        b.doorbell().arm();
        let efd = b.doorbell().eventfd();
        let mut fds = [PollFd::new(&efd, PollFlags::IN)];
        let ts = Timespec {
            tv_sec: 10,
            tv_nsec: 0,
        };
        let woke = poll(&mut fds, Some(&ts)).unwrap();
        let rings = b.doorbell().drain();
        let got = b.recv(&mut buf).unwrap();
        (woke, rings, got)
    });
    // Wait until the receiver is armed, then send: that must ring.
    let start = Instant::now();
    while !bell.is_armed() {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::yield_now();
    }
    a.send(b"22", &PeerAddr::Shm).unwrap();
    let (woke, rings, got) = waiter.join().unwrap();
    assert_eq!((woke, rings, got), (1, 1, Some((2, PeerAddr::Shm))));
    let (rung, suppressed) = bell.counters();
    assert_eq!((rung, suppressed), (1, 1));
}

#[test]
fn nic_shm_listen_connect_two_threads_10k_each_way() {
    let path = sock_path("threads");
    let listener = ShmListener::bind(&path, small()).unwrap();
    let server = std::thread::spawn(move || {
        let mut wire = listener.accept(Some(Duration::from_secs(20))).unwrap();
        exchange(&mut wire);
    });
    let mut wire = ShmWire::connect(&path).unwrap();
    assert_eq!(wire.mtu(), 256);
    exchange(&mut wire);
    server.join().unwrap();
    assert!(!path.exists(), "the socket file is removed once served");
}

/// The child role of the two-process test: connect and exchange. A no-op pass otherwise.
#[test]
fn nic_shm_child_role() {
    let Some(path) = std::env::var_os(CHILD_PATH_VAR) else {
        return;
    };
    let mut wire = ShmWire::connect(PathBuf::from(path)).expect("connect to parent");
    exchange(&mut wire);
}

#[test]
fn nic_shm_listen_connect_two_processes_10k_each_way() {
    if std::env::var_os(CHILD_PATH_VAR).is_some() {
        return; // we are the child; only nic_shm_child_role runs there.
    }
    let path = sock_path("procs");
    // Bound before the child starts, so its connect cannot race the bind.
    let listener = ShmListener::bind(&path, small()).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "nic::shm::tests::nic_shm_child_role",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_PATH_VAR, &path)
        .spawn()
        .expect("spawn child");
    let mut wire = match listener.accept(Some(Duration::from_secs(30))) {
        Ok(wire) => wire,
        Err(e) => {
            let _ = child.kill();
            panic!("accept: {e} (child: {:?})", child.wait());
        }
    };
    exchange(&mut wire);
    let status = child.wait().unwrap();
    assert!(status.success(), "child failed: {status}");
}

/// A fake listener that sends `Hello` with the given descriptors.
fn connect_to_fake(fds: &[BorrowedFd<'_>], mtu: usize) -> ShmSetupError {
    let (l, c) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    let hello = Handshake::Hello {
        version: VERSION,
        mtu,
    };
    protocol::send(l.as_fd(), &hello, fds).unwrap();
    connect_on(c.as_fd()).unwrap_err()
}

#[test]
fn nic_shm_connect_refuses_bad_descriptors() {
    let good = make_ring("t", 8, 64, "t").unwrap();
    let good2 = make_ring("t", 8, 64, "t").unwrap();
    let bell = Doorbell::new().unwrap();
    let (page, efd) = bell.fds();
    let (pipe_r, _pipe_w) = std::io::pipe().unwrap();
    let unsealed = rustix::fs::memfd_create("loose", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    rustix::fs::ftruncate(&unsealed, 4096).unwrap();
    let not_a_ring = SharedMem::create("zeros", 4096).unwrap();
    let g = || good.shared_mem().as_fd();
    let g2 = || good2.shared_mem().as_fd();

    let e = connect_to_fake(&[g(), g2(), page], 60);
    assert!(matches!(e, ShmSetupError::FdCount { expected: 4, got: 3 }), "{e}");
    let e = connect_to_fake(&[pipe_r.as_fd(), g2(), page, efd], 60);
    assert!(matches!(e, ShmSetupError::Shm { .. }), "{e}");
    let e = connect_to_fake(&[g(), unsealed.as_fd(), page, efd], 60);
    assert!(matches!(e, ShmSetupError::Shm { .. }), "{e}");
    let e = connect_to_fake(&[g(), not_a_ring.as_fd(), page, efd], 60);
    assert!(matches!(e, ShmSetupError::Ring { .. }), "{e}");
    // Rings whose slots (60 bytes) are smaller than the announced MTU.
    let e = connect_to_fake(&[g(), g2(), page, efd], 61);
    assert!(matches!(e, ShmSetupError::Handshake(_)), "{e}");
    // A ring where the doorbell page should be; a pipe where the eventfd should be.
    let e = connect_to_fake(&[g(), g2(), g(), efd], 60);
    assert!(matches!(e, ShmSetupError::Doorbell { .. }), "{e}");
    let e = connect_to_fake(&[g(), g2(), page, pipe_r.as_fd()], 60);
    assert!(matches!(e, ShmSetupError::NotAnEventfd { .. }), "{e}");
    // And the good set attaches.
    let (l, c) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    protocol::send(
        l.as_fd(),
        &Handshake::Hello {
            version: VERSION,
            mtu: 60,
        },
        &[g(), g2(), page, efd],
    )
    .unwrap();
    assert_eq!(connect_on(c.as_fd()).unwrap().mtu(), 60);
}

#[test]
fn nic_shm_handshake_failures_are_errors_not_hangs() {
    // Wrong version.
    let (l, c) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    protocol::send(l.as_fd(), &Handshake::Hello { version: 99, mtu: 60 }, &[]).unwrap();
    assert!(matches!(connect_on(c.as_fd()), Err(ShmSetupError::Handshake(_))));
    // Peer closes before answering.
    drop(l);
    assert!(matches!(connect_on(c.as_fd()), Err(ShmSetupError::Closed)));
    // Nobody connects.
    let listener = ShmListener::bind(sock_path("timeout"), small()).unwrap();
    let path = listener.path().to_owned();
    assert!(matches!(
        listener.accept(Some(Duration::from_millis(50))),
        Err(ShmSetupError::Timeout)
    ));
    assert!(!path.exists());
    // Nobody listening.
    assert!(matches!(
        ShmWire::connect(&path),
        Err(ShmSetupError::Socket("connect", _))
    ));
}

#[test]
fn nic_shm_bind_replaces_stale_socket_refuses_live_one() {
    let path = sock_path("stale");
    let first = ShmListener::bind(&path, small()).unwrap();
    assert!(matches!(
        ShmListener::bind(&path, small()),
        Err(ShmSetupError::Path(..))
    ));
    drop(first);
    // A stale socket file: bound, then closed without removing it (as a crashed host would).
    let stale = unix_socket().unwrap();
    rustix::net::bind(&stale, &SocketAddrUnix::new(&path).unwrap()).unwrap();
    drop(stale);
    assert!(path.exists());
    let second = ShmListener::bind(&path, small()).unwrap();
    drop(second);
    assert!(!path.exists());
}
