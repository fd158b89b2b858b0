//! `UdpNic` across a real link: two network namespaces joined by a veth pair, a UDP echo
//! between a `UdpNic` in each, at the default MTU and with jumbo frames.
//!
//! ```text
//!   netns snap-veth-PIDt-a           veth pair           netns snap-veth-PIDt-b
//!   UdpNic 10.77.0.1:*  ── svPIDta ══════════ svPIDtb ──  UdpNic 10.77.0.2:7777 (echo)
//! ```
//!
//! Needs root and iproute2's `ip`; without them it prints why and passes (skips). Each side
//! runs on a thread that first `setns`es into its namespace (a socket belongs to the
//! namespace of the thread that creates it). Names carry the pid so concurrent runs do not
//! clash, and a guard deletes the namespaces (which destroys the veth pair with them) when
//! the test ends, also on panic.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pony_engine::nic::{Nic, NicError, PeerAddr, UdpNic, WakeSource};
use rustix::event::{poll, PollFd, PollFlags, Timespec};

use snap_test_netns::{skip_reason, Topology, ADDR_A, ADDR_B};

const ECHO_PORT: u16 = 7777;

/// Waits up to `timeout` for the NIC's wake source to become readable.
fn wait_readable(nic: &UdpNic, timeout: Duration) -> bool {
    let Some(WakeSource::Readable(fd)) = nic.wake_source() else {
        panic!("a UDP NIC is woken by its socket");
    };
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let ts = Timespec::try_from(timeout).unwrap();
    matches!(poll(&mut fds, Some(&ts)), Ok(n) if n > 0)
}

/// Echoes every datagram back to its sender until `stop`. Returns how many it echoed.
fn echo_server(mtu: usize, stop: Arc<AtomicBool>) -> u64 {
    let mut nic = UdpNic::bind((ADDR_B, ECHO_PORT))
        .expect("bind echo server")
        .with_mtu(mtu);
    let mut buf = vec![0u8; mtu];
    while !stop.load(Ordering::Relaxed) {
        while let Some((n, from)) = nic.recv(&mut buf).expect("recv") {
            match nic.send(&buf[..n], &from) {
                Ok(()) | Err(NicError::WouldBlock) => {}
                Err(e) => panic!("echo send: {e}"),
            }
        }
        wait_readable(&nic, Duration::from_millis(50));
    }
    nic.stats().tx_packets
}

/// Sends `count` packets of `len` bytes one at a time, waiting for each echo (resending on
/// timeout: a link may lose the first packets while ARP resolves). Returns resends.
fn echo_client(count: u64, len: usize, mtu: usize) -> u64 {
    let mut nic = UdpNic::bind((ADDR_A, 0)).expect("bind client").with_mtu(mtu);
    let server = PeerAddr::Udp(format!("{ADDR_B}:{ECHO_PORT}").parse().unwrap());
    let mut out = vec![0u8; len];
    let mut buf = vec![0u8; mtu];
    let mut resends = 0;
    for seq in 0..count {
        out[..8].copy_from_slice(&seq.to_le_bytes());
        out[8..].fill(seq as u8);
        let mut echoed = false;
        for attempt in 0..10 {
            if attempt > 0 {
                resends += 1;
            }
            nic.send(&out, &server).expect("send");
            let deadline = Instant::now() + Duration::from_millis(500);
            while !echoed && Instant::now() < deadline {
                wait_readable(&nic, Duration::from_millis(50));
                while let Some((n, from)) = nic.recv(&mut buf).expect("recv") {
                    assert_eq!(from, server);
                    // An echo of an earlier resend may still arrive: skip it.
                    if n == len && buf[..n] == out[..] {
                        echoed = true;
                    }
                }
            }
            if echoed {
                break;
            }
        }
        assert!(
            echoed,
            "packet {seq} ({len} bytes) never came back across the veth pair"
        );
    }
    resends
}

fn run_echo(tag: char, link_mtu: u32, nic_mtu: usize, count: u64) {
    if let Some(why) = skip_reason() {
        eprintln!("skipping the veth test: {why}");
        return;
    }
    let topo = Topology::new(tag, link_mtu);
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let stop = stop.clone();
        topo.spawn_in(1, move || echo_server(nic_mtu, stop))
    };
    // The server binds quickly; the client resends anyway if its first packet beats it.
    let client = topo.spawn_in(0, move || {
        let small = echo_client(count, 64, nic_mtu);
        let full = echo_client(count / 10, nic_mtu, nic_mtu);
        small + full
    });
    let client = client.join();
    stop.store(true, Ordering::Relaxed);
    let echoed = server.join().expect("echo server panicked");
    let resends = client.expect("echo client panicked");
    assert!(echoed >= count + count / 10, "server echoed {echoed}");
    eprintln!("veth echo (link mtu {link_mtu}): {echoed} echoed, {resends} resends");
    drop(topo);
}

#[test]
fn udp_echo_across_a_veth_pair() {
    run_echo('s', 1500, UdpNic::IPV4_MTU, 500);
}

#[test]
fn udp_echo_across_a_jumbo_veth_pair() {
    run_echo('j', 9000, UdpNic::JUMBO_MTU, 200);
}
