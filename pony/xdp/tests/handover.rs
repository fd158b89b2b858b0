//! An `XdpNic` handed over and rebuilt (`Nic::dup_for_handover`, `XdpNic::adopt`), as a
//! `snap-host` upgrade does between two processes, on a real link: two network namespaces
//! joined by a veth pair (names prefixed `mov`), the NIC under test on AF_XDP in the first,
//! a kernel UDP socket echoing in the second.
//!
//! The original NIC is dropped before the new one is built from its descriptors (its
//! process exiting), with echoes both taken off the RX ring and not yet delivered, and
//! still in the ring: the rebuilt NIC delivers every one of them, in order and byte for
//! byte, then keeps exchanging packets through the program that stayed attached.
//!
//! Needs root and iproute2 (without them the test prints why and passes).

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pony_engine::nic::{Nic, NicError, PeerAddr, UdpNic, WakeSource};
use pony_xdp::{XdpConfig, XdpNic};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use snap_test_netns::{skip_reason, Topology, ADDR_A, ADDR_B};

const PORT: u16 = 7000;

fn wait_readable(nic: &dyn Nic, timeout: Duration) -> bool {
    let Some(WakeSource::Readable(fd)) = nic.wake_source() else {
        panic!("these NICs are woken by a descriptor");
    };
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let ts = Timespec::try_from(timeout).unwrap();
    matches!(poll(&mut fds, Some(&ts)), Ok(n) if n > 0)
}

fn packet(seq: u32, len: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len)
        .map(|i| (i as u32 ^ seq.wrapping_mul(131)) as u8)
        .collect();
    p[..4].copy_from_slice(&seq.to_le_bytes());
    p
}

/// Sends `seq` until its echo comes back (the first packets may go while the neighbour is
/// being resolved); every other packet received meanwhile is a test failure.
fn ping(nic: &mut dyn Nic, to: &PeerAddr, seq: u32) {
    let out = packet(seq, 64 + (seq as usize * 37) % 1400);
    let mut buf = vec![0u8; nic.mtu()];
    for _ in 0..50 {
        match nic.send(&out, to) {
            Ok(()) | Err(NicError::WouldBlock) | Err(NicError::Io(_)) => {}
            Err(e) => panic!("send: {e}"),
        }
        let deadline = Instant::now() + Duration::from_millis(100);
        while Instant::now() < deadline {
            wait_readable(nic, Duration::from_millis(10));
            while let Some((n, _)) = nic.recv(&mut buf).expect("recv") {
                if buf[..n] == out[..] {
                    return;
                }
            }
        }
    }
    panic!("packet {seq} was never echoed");
}

#[test]
fn an_adopted_nic_delivers_what_the_old_one_left_and_keeps_receiving() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping: {why}");
        return;
    }
    let topo = Topology::prefixed("mov", "mov", 'x', 1500);
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = topo.spawn_in(1, move || {
        let mut nic = UdpNic::bind((ADDR_B, PORT)).expect("bind");
        ready_tx.send(()).unwrap();
        let mut buf = vec![0u8; nic.mtu()];
        while !stop2.load(Ordering::Relaxed) {
            while let Some((n, from)) = nic.recv(&mut buf).expect("recv") {
                nic.send(&buf[..n], &from).expect("echo");
            }
            wait_readable(&nic, Duration::from_millis(20));
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let config = XdpConfig {
        interface: topo.interface(0).to_owned(),
        bind: SocketAddrV4::new(ADDR_A.parse().unwrap(), PORT),
        frame_count: 512,
        ring_size: 256,
        ..XdpConfig::default()
    };
    let client = topo.spawn_in(0, move || {
        let to = PeerAddr::Udp(SocketAddr::V4(SocketAddrV4::new(ADDR_B.parse().unwrap(), PORT)));
        let mut old = XdpNic::open(&config).expect("XdpNic::open");
        for seq in 0..20 {
            ping(&mut old, &to, seq);
        }
        // 20 packets out; their echoes land in the RX ring. One is taken (the other 19 of
        // its batch stay taken and undelivered in the NIC); 20 more go out, their echoes
        // left in the RX ring; then the NIC is handed over.
        const BURST: u32 = 40;
        for seq in 100..120 {
            old.send(&packet(seq, 200 + seq as usize), &to).expect("send");
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut buf = vec![0u8; old.mtu()];
        let deadline = Instant::now() + Duration::from_secs(5);
        let first = loop {
            wait_readable(&old, Duration::from_millis(10));
            if let Some((n, _)) = old.recv(&mut buf).expect("recv") {
                break buf[..n].to_vec();
            }
            assert!(Instant::now() < deadline, "no echo of the burst");
        };
        assert_eq!(first, packet(100, 300));
        for seq in 120..100 + BURST {
            old.send(&packet(seq, 200 + seq as usize), &to).expect("send");
        }
        std::thread::sleep(Duration::from_millis(100));
        let before = (old.stats(), old.xdp_stats());
        let fds = old
            .dup_for_handover()
            .expect("AF_XDP hands over")
            .expect("descriptors");
        assert_eq!(fds.len(), pony_xdp::handover::FDS);
        drop(old);
        let mut new = XdpNic::adopt(&config, fds).unwrap_or_else(|e| panic!("adopt: {e}"));
        assert_eq!(new.stats(), before.0, "the counters move with the NIC");
        assert_eq!(new.attach_mode(), before.1.attach);
        for seq in 101..100 + BURST {
            let deadline = Instant::now() + Duration::from_secs(5);
            let got = loop {
                if let Some((n, _)) = new.recv(&mut buf).expect("recv") {
                    break buf[..n].to_vec();
                }
                assert!(Instant::now() < deadline, "echo {seq} lost in the hand-over");
                wait_readable(&new, Duration::from_millis(10));
            };
            assert!(
                got == packet(seq, 200 + seq as usize),
                "echo {seq}: lost, reordered or damaged"
            );
        }
        for seq in 200..260 {
            ping(&mut new, &to, seq);
        }
        let after = new.xdp_stats();
        assert!(
            after.program.redirected >= before.1.program.redirected + 60,
            "the program kept redirecting to the socket: {:?} -> {:?}",
            before.1.program,
            after.program
        );
        after
    });
    let result = client.join();
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
    let stats = result.expect("client");
    eprintln!("after the hand-over: {stats:?}");
}
