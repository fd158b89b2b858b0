//! Two real `snap-host` processes in two network namespaces joined by a veth pair (names
//! prefixed `xdp`), their Pony engines on AF_XDP (`nic = "xdp"`) or a UDP socket
//! (`nic = "udp"`), and apps attached through `pony_express::client`: messages from 8 B to
//! 300 KB echoed exactly, in order, between an AF_XDP host and a UDP host, and between two
//! AF_XDP hosts.
//!
//! Needs root and iproute2 (without them each test prints why and passes). A host started
//! from a thread inside a namespace lives in that namespace (a child inherits it); the apps
//! reach it through its control socket, a path in the shared filesystem.

mod common;

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use common::{message, test_dir, TIMEOUT};
use pony_express::app::Completions;
use pony_express::client::PonyClient;
use snap_host::process::HostProcess;
use snap_test_netns::{skip_reason, Topology, ADDR_A, ADDR_B};

const PORT: u16 = 7000;
const ECHO: u32 = 7;
const SIZES: [usize; 6] = [8, 100, 1400, 4000, 65_536, 300_000];

/// Two hosts, killed before the namespaces go (field order).
struct Pair {
    hosts: [HostProcess; 2],
    _topo: Topology,
}

impl Pair {
    /// Host `i` in namespace `i` at ADDR_A / ADDR_B with the NIC `nics[i]` ("xdp" or "udp").
    fn start(tag: char, nics: [&str; 2]) -> Option<Self> {
        if let Some(why) = skip_reason() {
            eprintln!("skipping: {why}");
            return None;
        }
        let topo = Topology::prefixed("xdp", "xdp", tag, 1500);
        let start = |i: usize, addr: &str| {
            let nic = match nics[i] {
                "xdp" => format!(
                    "nic = \"xdp\"\ninterface = \"{}\"\nbind = \"{addr}:{PORT}\"\nxdp_mode = \"auto\"",
                    topo.interface(i)
                ),
                _ => format!("nic = \"udp\"\nbind = \"{addr}:{PORT}\""),
            };
            let config = format!(
                "microquanta = false\n\
                 [[group]]\nname = \"pony\"\nmode = \"spreading\"\n\
                 [[group.engine]]\nname = \"pony0\"\nkind = \"pony\"\n\
                 [group.engine.options]\n{nic}\n"
            );
            let dir = test_dir("pony-xdp-host");
            topo.spawn_in(i, move || {
                let bin = Path::new(env!("CARGO_BIN_EXE_snap-host"));
                HostProcess::start(bin, &dir, &config, TIMEOUT, None)
            })
            .join()
            .expect("starting a host panicked")
            .unwrap_or_else(|e| panic!("snap-host {i} ({}) in its namespace: {e}", nics[i]))
        };
        let hosts = [start(0, ADDR_A), start(1, ADDR_B)];
        Some(Self { hosts, _topo: topo })
    }

    fn socket(&self, i: usize) -> PathBuf {
        self.hosts[i].socket().to_owned()
    }
}

/// App A sends every size on two streams to B's echo service; each comes back exactly.
fn echo_across(pair: &Pair) {
    let (tx, rx) = mpsc::channel();
    let b_socket = pair.socket(1);
    let _app_b = std::thread::spawn(move || common::pony_echo_app(b_socket, ECHO, tx));
    rx.recv_timeout(TIMEOUT).expect("app B listens");
    let mut a = PonyClient::connect(pair.socket(0), "pony0", Completions::Block).unwrap();
    let flow = a.open_flow(&format!("{ADDR_B}:{PORT}"), ECHO).unwrap();
    for (seq, &len) in SIZES.iter().enumerate() {
        for stream in [0, 1] {
            a.send(flow, stream, &message(stream, seq as u32, len)).unwrap();
        }
    }
    let mut next = [0usize; 2];
    while next != [SIZES.len(); 2] {
        let m = a.recv(TIMEOUT).unwrap_or_else(|e| panic!("echo {next:?}: {e}"));
        let s = m.stream as usize;
        assert!(s < 2 && next[s] < SIZES.len(), "extra message on stream {s}");
        assert!(
            m.data == message(m.stream, next[s] as u32, SIZES[next[s]]),
            "stream {s} message {} differs",
            next[s]
        );
        next[s] += 1;
    }
}

/// An AF_XDP host and a UDP-socket host talk: Pony's UDP framing is the same on both.
#[test]
fn xdp_host_talks_to_udp_host() {
    let Some(pair) = Pair::start('h', ["xdp", "udp"]) else {
        return;
    };
    echo_across(&pair);
}

/// Two AF_XDP hosts.
#[test]
fn two_xdp_hosts() {
    let Some(pair) = Pair::start('g', ["xdp", "xdp"]) else {
        return;
    };
    echo_across(&pair);
}
