//! `XdpNic` on a real link: two network namespaces joined by a veth pair (names prefixed
//! `xdp`), AF_XDP on one or both ends.
//!
//! ```text
//!   netns xdp-PIDt-a                    veth pair                    netns xdp-PIDt-b
//!   XdpNic 10.77.0.1:7000 ── xdpPIDta ══════════ xdpPIDtb ── XdpNic or UdpNic 10.77.0.2:7000
//! ```
//!
//! Needs root and iproute2 (without them each test prints why and passes). A NIC is opened
//! on a thread that `setns`ed into its namespace; the topology's guard deletes the
//! namespaces when the test ends, also on panic.

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pony_engine::nic::{Nic, NicError, PeerAddr, UdpNic, WakeSource};
use pony_xdp::{XdpConfig, XdpError, XdpMode, XdpNic};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use snap_test_netns::{skip_reason, Topology, ADDR_A, ADDR_B};

const PORT: u16 = 7000;

fn topology(tag: char) -> Option<Topology> {
    if let Some(why) = skip_reason() {
        eprintln!("skipping: {why}");
        return None;
    }
    Some(Topology::prefixed("xdp", "xdp", tag, 1500))
}

fn addr(ip: &str, port: u16) -> SocketAddrV4 {
    format!("{ip}:{port}").parse().unwrap()
}

fn xdp_config(topo: &Topology, i: usize, ip: &str) -> XdpConfig {
    XdpConfig {
        interface: topo.interface(i).to_owned(),
        bind: addr(ip, PORT),
        // Small, so that parallel tests do not pin much memory.
        frame_count: 512,
        ring_size: 256,
        ..XdpConfig::default()
    }
}

/// Waits up to `timeout` for the NIC's wake source to become readable.
fn wait_readable(nic: &dyn Nic, timeout: Duration) -> bool {
    let Some(WakeSource::Readable(fd)) = nic.wake_source() else {
        panic!("these NICs are woken by a descriptor");
    };
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let ts = Timespec::try_from(timeout).unwrap();
    matches!(poll(&mut fds, Some(&ts)), Ok(n) if n > 0)
}

/// Echoes every packet back to its sender until `stop`; returns the NIC (for its stats).
fn echo(mut nic: Box<dyn Nic>, stop: Arc<AtomicBool>) -> Box<dyn Nic> {
    let mut buf = vec![0u8; nic.mtu()];
    while !stop.load(Ordering::Relaxed) {
        while let Some((n, from)) = nic.recv(&mut buf).expect("recv") {
            // An unresolved peer (first packets) or a full ring: the client resends.
            match nic.send(&buf[..n], &from) {
                Ok(()) | Err(NicError::WouldBlock) | Err(NicError::Io(_)) => {}
                Err(e) => panic!("echo send: {e}"),
            }
        }
        wait_readable(&*nic, Duration::from_millis(20));
    }
    nic
}

/// Sends one packet of each length in `lens` and waits for its echo, resending on timeout
/// (the first packets may go while the neighbour is being resolved). Returns resends.
fn ping_pong(nic: &mut dyn Nic, server: SocketAddrV4, lens: &[usize]) -> u64 {
    let to = PeerAddr::Udp(SocketAddr::V4(server));
    let mut buf = vec![0u8; nic.mtu()];
    let mut resends = 0;
    for (seq, &len) in lens.iter().enumerate() {
        let out: Vec<u8> = (0..len).map(|i| (seq * 7 + i) as u8).collect();
        let mut echoed = false;
        for attempt in 0..50 {
            if attempt > 0 {
                resends += 1;
            }
            match nic.send(&out, &to) {
                Ok(()) | Err(NicError::WouldBlock) | Err(NicError::Io(_)) => {}
                Err(e) => panic!("send: {e}"),
            }
            let deadline = Instant::now() + Duration::from_millis(100);
            while !echoed && Instant::now() < deadline {
                wait_readable(nic, Duration::from_millis(10));
                while let Some((n, from)) = nic.recv(&mut buf).expect("recv") {
                    assert_eq!(from, to, "echo from the server");
                    echoed |= buf[..n] == out[..];
                }
            }
            if echoed {
                break;
            }
        }
        assert!(echoed, "packet {seq} ({len} bytes) was never echoed");
    }
    resends
}

/// Lengths from 1 byte to the MTU (not 0: `UdpNic` never hands out an empty datagram,
/// and Pony never sends one).
fn lengths(mtu: usize) -> Vec<usize> {
    let mut v = vec![1, 17, 64, 100, 511, 1024, mtu - 1, mtu];
    v.extend((0..40).map(|i| 1 + i * 37 % (mtu - 1)));
    v
}

/// Runs an echo server (made by `server`) in namespace 1 and a client (made by `client`)
/// in namespace 0; returns the server's and the client's NIC.
fn exchange(
    topo: &Topology,
    server: impl FnOnce() -> Box<dyn Nic> + Send + 'static,
    client: impl FnOnce() -> Box<dyn Nic> + Send + 'static,
) -> (Box<dyn Nic>, Box<dyn Nic>) {
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = topo.spawn_in(1, move || {
        let nic = server();
        ready_tx.send(()).unwrap();
        echo(nic, stop2)
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("server opened");
    let client = topo.spawn_in(0, move || {
        let mut nic = client();
        let mtu = nic.mtu();
        ping_pong(&mut *nic, addr(ADDR_B, PORT), &lengths(mtu));
        nic
    });
    let client = client.join();
    stop.store(true, Ordering::Relaxed);
    if client.is_err() {
        diagnose(topo);
    }
    let server = server.join().expect("server thread");
    (server, client.expect("client thread"))
}

/// Prints both namespaces' link and UDP counters (after a failure).
fn diagnose(topo: &Topology) {
    for i in 0..2 {
        let ns = topo.namespace(i);
        for cmd in [&["-s", "link"][..], &["neigh"][..]] {
            let mut args = vec!["-n", ns];
            args.extend_from_slice(cmd);
            let out = Command::new("ip").args(&args).output().unwrap();
            eprintln!(
                "{ns}: ip {}:\n{}",
                cmd.join(" "),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "cat", "/proc/net/snmp", "/proc/net/netstat"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        for l in text
            .lines()
            .filter(|l| l.starts_with("Udp:") || l.starts_with("Ip:"))
        {
            eprintln!("{ns}: {l}");
        }
    }
}

fn open_xdp(config: XdpConfig) -> Box<dyn Nic> {
    let nic = XdpNic::open(&config).unwrap_or_else(|e| panic!("XdpNic::open: {e}"));
    assert!(!nic.is_zero_copy(), "veth offers copy mode only");
    Box::new(nic)
}

/// AF_XDP on both ends: every length up to the MTU crosses both ways byte for byte.
#[test]
fn xdp_to_xdp() {
    let Some(topo) = topology('x') else { return };
    let (sc, cc) = (xdp_config(&topo, 1, ADDR_B), xdp_config(&topo, 0, ADDR_A));
    let (server, client) = exchange(&topo, move || open_xdp(sc), move || open_xdp(cc));
    assert_eq!(
        client.mtu(),
        1472,
        "a 1500-byte link carries 1472-byte UDP payloads"
    );
    assert!(server.stats().rx_packets >= lengths(1472).len() as u64);
    assert!(client.stats().rx_packets >= lengths(1472).len() as u64);
}

/// AF_XDP client, kernel UDP socket server: the frames we build are accepted by the
/// kernel (checksums, lengths), and its replies reach our socket.
#[test]
fn xdp_client_udp_server() {
    let Some(topo) = topology('u') else { return };
    let cc = xdp_config(&topo, 0, ADDR_A);
    let server = || -> Box<dyn Nic> { Box::new(UdpNic::bind((ADDR_B, PORT)).expect("bind")) };
    let (server, _) = exchange(&topo, server, move || open_xdp(cc));
    assert!(server.stats().rx_packets >= lengths(1472).len() as u64);
}

/// Kernel UDP socket client, AF_XDP server (the reverse direction of the above).
#[test]
fn udp_client_xdp_server() {
    let Some(topo) = topology('v') else { return };
    let sc = xdp_config(&topo, 1, ADDR_B);
    let client = || -> Box<dyn Nic> { Box::new(UdpNic::bind((ADDR_A, PORT)).expect("bind")) };
    let (server, _) = exchange(&topo, move || open_xdp(sc), client);
    assert!(server.stats().rx_packets >= lengths(1472).len() as u64);
}

/// While the program is attached, what is not Pony's still reaches the kernel: ping (ARP
/// and ICMP) and a UDP datagram to another port; and the program's counters say so.
#[test]
fn other_traffic_reaches_the_kernel() {
    let Some(topo) = topology('k') else { return };
    let cfg = xdp_config(&topo, 0, ADDR_A);
    let (opened_tx, opened_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let side_a = topo.spawn_in(0, move || {
        let nic = XdpNic::open(&cfg).unwrap_or_else(|e| panic!("open: {e}"));
        let other = UdpSocket::bind((ADDR_A, PORT + 1)).expect("bind another port");
        other.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        opened_tx.send(()).unwrap();
        let mut buf = [0u8; 64];
        let got = other.recv_from(&mut buf).map(|(n, _)| buf[..n].to_vec());
        done_rx.recv().unwrap();
        (got, nic.xdp_stats())
    });
    opened_rx.recv_timeout(Duration::from_secs(10)).expect("opened");
    let ns_b = topo.namespace(1).to_owned();
    // busybox's ping: iputils may not be installed.
    let ping = Command::new("ip")
        .args([
            "netns", "exec", &ns_b, "busybox", "ping", "-c", "2", "-W", "2", ADDR_A,
        ])
        .output()
        .expect("ping runs");
    assert!(
        ping.status.success(),
        "ping through the XDP-attached interface: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    topo.spawn_in(1, || {
        let s = UdpSocket::bind((ADDR_B, 0)).unwrap();
        s.send_to(b"not pony", (ADDR_A, PORT + 1)).unwrap();
    })
    .join()
    .unwrap();
    done_tx.send(()).unwrap();
    let (got, stats) = side_a.join().unwrap();
    assert_eq!(got.expect("the kernel socket received").as_slice(), b"not pony");
    assert!(stats.program.passed >= 5, "ARP, ICMP and UDP passed: {stats:?}");
    assert_eq!(stats.program.redirected, 0, "nothing was sent to Pony's port");
}

/// Errors name what is missing.
#[test]
fn clear_errors() {
    let Some(topo) = topology('e') else { return };
    let mut missing = xdp_config(&topo, 0, ADDR_A);
    missing.interface = "xdp-nosuch0".into();
    let mut zc = xdp_config(&topo, 0, ADDR_A);
    zc.mode = XdpMode::ZeroCopy;
    let veth = topo.interface(0).to_owned();
    topo.spawn_in(0, move || {
        let e = XdpNic::open(&missing).unwrap_err();
        assert!(matches!(e, XdpError::NoSuchInterface(_)), "{e}");
        assert!(e.to_string().contains("xdp-nosuch0"), "{e}");
        let e = XdpNic::open(&zc).unwrap_err();
        assert!(matches!(e, XdpError::ZeroCopyUnsupported { .. }), "{e}");
        assert!(e.to_string().contains(&veth), "{e}");
        // After a failed open nothing is left attached: a copy-mode open works.
        let mut copy = zc.clone();
        copy.mode = XdpMode::Copy;
        let nic = XdpNic::open(&copy).unwrap_or_else(|e| panic!("{e}"));
        assert!(!nic.is_zero_copy());
        drop(nic);
        // Dropping detached the program: another open attaches again. The port may stay
        // bound a moment longer in a child another test of this process is forking (it holds
        // a copy of every fd until its exec), so only that error is waited out, briefly.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            match XdpNic::open(&copy) {
                Ok(_) => break,
                Err(XdpError::Bind { source, .. })
                    if source.kind() == std::io::ErrorKind::AddrInUse
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => panic!("reopen after drop: {e}"),
            }
        }
    })
    .join()
    .unwrap();
}

/// Opened on a thread inside the namespace, used from a thread outside it (as the
/// benchmark and a host's engine threads do): everything `open` set up belongs to the
/// namespace it ran in, including neighbour resolution.
#[test]
fn opened_in_a_namespace_used_outside() {
    let Some(topo) = topology('o') else { return };
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = topo.spawn_in(1, move || {
        let nic: Box<dyn Nic> = Box::new(UdpNic::bind((ADDR_B, PORT)).expect("bind"));
        ready_tx.send(()).unwrap();
        echo(nic, stop2)
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("server bound");
    let cfg = xdp_config(&topo, 0, ADDR_A);
    let mut nic = topo.spawn_in(0, move || open_xdp(cfg)).join().expect("opened");
    // This thread is in the test's own namespace, where neither interface exists.
    let mtu = nic.mtu();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        ping_pong(&mut *nic, addr(ADDR_B, PORT), &lengths(mtu))
    }));
    stop.store(true, Ordering::Relaxed);
    let server = server.join().expect("server thread");
    outcome.expect("ping-pong from outside the namespace");
    assert!(server.stats().rx_packets >= lengths(mtu).len() as u64);
}

/// On a jumbo-MTU veth native XDP does not attach (veth limits it to about a page), so
/// auto mode runs the program in generic mode, with an MTU bounded by the UMEM frame; a
/// datagram longer than a frame is dropped by the kernel and counted, a shorter one
/// arrives.
#[test]
fn jumbo_link_uses_generic_xdp_and_counts_frames_too_long() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping: {why}");
        return;
    }
    let topo = Topology::prefixed("xdp", "xdp", 'j', 9000);
    let cfg = xdp_config(&topo, 0, ADDR_A);
    let (opened_tx, opened_rx) = std::sync::mpsc::channel();
    let (sent_tx, sent_rx) = std::sync::mpsc::channel::<()>();
    let side_a = topo.spawn_in(0, move || {
        let mut nic = XdpNic::open(&cfg).unwrap_or_else(|e| panic!("open: {e}"));
        opened_tx.send((nic.attach_mode(), nic.mtu())).unwrap();
        sent_rx.recv().unwrap();
        let mut buf = vec![0u8; nic.mtu()];
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        while got.is_empty() && Instant::now() < deadline {
            wait_readable(&nic, Duration::from_millis(50));
            while let Some((n, _)) = nic.recv(&mut buf).unwrap() {
                got.push(n);
            }
        }
        (got, nic.xdp_stats())
    });
    let (attach, mtu) = opened_rx.recv_timeout(Duration::from_secs(10)).expect("opened");
    assert_eq!(attach, pony_xdp::AttachMode::Generic);
    assert_eq!(mtu, 4096 - 256 - 42, "bounded by the UMEM frame, not the link");
    topo.spawn_in(1, || {
        let s = UdpSocket::bind((ADDR_B, 0)).unwrap();
        s.send_to(&[1; 5000], (ADDR_A, PORT)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        s.send_to(&[2; 1000], (ADDR_A, PORT)).unwrap();
    })
    .join()
    .unwrap();
    sent_tx.send(()).unwrap();
    let (got, stats) = side_a.join().unwrap();
    assert_eq!(got, vec![1000], "only the datagram that fits a frame arrives");
    assert!(stats.kernel_rx_dropped >= 1, "{stats:?}");
    assert_eq!(stats.program.redirected, 2, "{stats:?}");
}
