//! Ping-pong RTT of raw NIC packets across a veth pair between two network namespaces,
//! `XdpNic` against `UdpNic` in the same run, both ends busy-polling: what the NIC path
//! alone costs, without engines, apps or wakeups. Prints p50/p99 per backend and size and
//! the XDP/UDP ratio. Needs root.
//!
//! `cargo run --release -p pony-xdp --example veth_pingpong [ROUND_TRIPS]`

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pony_engine::nic::{Nic, NicError, PeerAddr, UdpNic};
use pony_xdp::{XdpConfig, XdpNic};
use snap_test_netns::{skip_reason, Topology, ADDR_A, ADDR_B};

const PORT: u16 = 7000;

fn open(kind: &str, topo: &Topology, i: usize, ip: &str) -> Box<dyn Nic> {
    let bind: SocketAddr = format!("{ip}:{PORT}").parse().unwrap();
    match kind {
        "xdp" => {
            let SocketAddr::V4(bind) = bind else {
                unreachable!()
            };
            let cfg = XdpConfig {
                interface: topo.interface(i).to_owned(),
                bind,
                ..XdpConfig::default()
            };
            Box::new(XdpNic::open(&cfg).unwrap_or_else(|e| panic!("{e}")))
        }
        _ => Box::new(UdpNic::bind(bind).unwrap()),
    }
}

/// Round trips of `len`-byte packets; returns sorted RTTs in ns.
fn run(kind: &str, len: usize, round_trips: usize) -> Vec<u64> {
    let topo = Topology::prefixed("xdp-pp", "xdpp", kind.chars().next().unwrap(), 1500);
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let k = kind.to_owned();
    let iface_topo = Arc::new(topo);
    let t2 = iface_topo.clone();
    let server = iface_topo.spawn_in(1, move || {
        let mut nic = open(&k, &t2, 1, ADDR_B);
        ready_tx.send(()).unwrap();
        let mut buf = vec![0u8; nic.mtu()];
        while !stop2.load(Ordering::Relaxed) {
            if let Some((n, from)) = nic.recv(&mut buf).unwrap() {
                let _ = nic.send(&buf[..n], &from);
            }
        }
    });
    ready_rx.recv().unwrap();
    let k = kind.to_owned();
    let t3 = iface_topo.clone();
    let client = iface_topo.spawn_in(0, move || {
        let mut nic = open(&k, &t3, 0, ADDR_A);
        let to = PeerAddr::Udp(format!("{ADDR_B}:{PORT}").parse().unwrap());
        let out = vec![0x5a; len];
        let mut buf = vec![0u8; nic.mtu()];
        let mut rtts = Vec::with_capacity(round_trips);
        // Warm-up (neighbour resolution, caches), then measured round trips; a lost packet
        // is resent after 10 ms and that round trip not counted.
        let mut i = 0;
        while rtts.len() < round_trips {
            let t0 = Instant::now();
            match nic.send(&out, &to) {
                Ok(()) | Err(NicError::WouldBlock) | Err(NicError::Io(_)) => {}
                Err(e) => panic!("{e}"),
            }
            let mut echoed = false;
            while t0.elapsed() < Duration::from_millis(10) {
                if nic.recv(&mut buf).unwrap().is_some() {
                    echoed = true;
                    break;
                }
            }
            i += 1;
            if echoed && i > 1000 {
                rtts.push(t0.elapsed().as_nanos() as u64);
            }
        }
        rtts
    });
    let mut rtts = client.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
    rtts.sort_unstable();
    rtts
}

fn pct(v: &[u64], p: f64) -> f64 {
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)] as f64 / 1000.0
}

fn main() {
    if let Some(why) = skip_reason() {
        eprintln!("cannot run: {why}");
        std::process::exit(1);
    }
    let round_trips: usize = std::env::args().nth(1).map_or(20_000, |a| a.parse().unwrap());
    println!("{:<6} {:>6} {:>9} {:>9}", "nic", "bytes", "p50_us", "p99_us");
    for len in [64, 1400] {
        let udp = run("udp", len, round_trips);
        let xdp = run("xdp", len, round_trips);
        for (name, v) in [("udp", &udp), ("xdp", &xdp)] {
            println!("{name:<6} {len:>6} {:>9.1} {:>9.1}", pct(v, 0.5), pct(v, 0.99));
        }
        println!(
            "xdp/udp p50 ratio at {len} B: {:.2}",
            pct(&xdp, 0.5) / pct(&udp, 0.5)
        );
    }
}
