//! A Pony engine on AF_XDP (`nic = "xdp"`) moved by `snapctl upgrade` between real
//! `snap-host` processes: two hosts in two network namespaces joined by a veth pair (names
//! prefixed `mov`), both on AF_XDP, a checked ping-pong between their apps while host A is
//! upgraded three times and host B once. Every echo must be the next expected message of
//! its stream byte for byte (sequence and content), so nothing is lost, duplicated,
//! reordered or damaged; after each upgrade the same XDP program (by kernel id) is still
//! attached to the interface, the old process is gone, and the program's `redirected`
//! counter (status `nic.redirected`: its map moved with it, so the count carries on) and
//! the new process's `packets_in` keep growing: the program still redirects to the moved
//! socket and the new process receives from it.
//!
//! Needs root and iproute2 (without them the test prints why and passes). The namespaces
//! and the veth pair are removed when the topology drops, also when the test fails.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::{message, test_dir, TIMEOUT};
use pony_express::app::Completions;
use pony_express::client::{ClientError, PonyClient};
use snap_host::process::HostProcess;
use snap_ipc::control::SnapClient;
use snap_test_netns::{skip_reason, Topology, ADDR_A, ADDR_B};

const PORT: u16 = 7000;
const ECHO: u32 = 7;

/// Two hosts on AF_XDP, killed before the namespaces go (field order).
struct Pair {
    hosts: [HostProcess; 2],
    topo: Topology,
}

impl Pair {
    fn start(tag: char) -> Option<Self> {
        if let Some(why) = skip_reason() {
            eprintln!("skipping: {why}");
            return None;
        }
        let topo = Topology::prefixed("mov", "mov", tag, 1500);
        let start = |i: usize, addr: &str| {
            let config = format!(
                "microquanta = false\n\
                 [[group]]\nname = \"pony\"\nmode = \"spreading\"\n\
                 [[group.engine]]\nname = \"pony0\"\nkind = \"pony\"\n\
                 [group.engine.options]\n\
                 nic = \"xdp\"\ninterface = \"{}\"\nbind = \"{addr}:{PORT}\"\nxdp_mode = \"auto\"\n",
                topo.interface(i)
            );
            let dir = test_dir("mov-xdp-host");
            topo.spawn_in(i, move || {
                let bin = Path::new(env!("CARGO_BIN_EXE_snap-host"));
                HostProcess::start(bin, &dir, &config, TIMEOUT, None)
            })
            .join()
            .expect("starting a host panicked")
            .unwrap_or_else(|e| panic!("snap-host {i} in its namespace: {e}"))
        };
        let hosts = [start(0, ADDR_A), start(1, ADDR_B)];
        Some(Self { hosts, topo })
    }

    fn socket(&self, i: usize) -> PathBuf {
        self.hosts[i].socket().to_owned()
    }

    /// The kernel id of the XDP program attached to host `i`'s interface (`ip -j link`).
    fn xdp_prog_id(&self, i: usize) -> Option<u64> {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                self.topo.namespace(i),
                "ip",
                "-j",
                "-d",
                "link",
                "show",
                "dev",
            ])
            .arg(self.topo.interface(i))
            .output()
            .expect("ip runs");
        let links: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j prints JSON");
        links[0]["xdp"]["prog"]["id"].as_u64()
    }

    /// Upgrades host `i`; returns after the old process has exited.
    fn upgrade(&mut self, i: usize) {
        let old = self.hosts[i].pid();
        let report = SnapClient::connect(self.hosts[i].socket())
            .unwrap()
            .upgrade(None)
            .expect("the AF_XDP engine moves");
        assert_eq!(report.old_pid, old);
        assert_eq!(report.engines.len(), 1);
        let e = &report.engines[0];
        assert_eq!((e.name.as_str(), e.kind.as_str()), ("pony0", "pony"));
        eprintln!(
            "host {i}: {} -> {}: brownout {:.3} ms, blackout {:.3} ms, {} rounds, {} bytes",
            report.old_pid, report.new_pid, e.brownout_ms, e.blackout_ms, e.rounds, e.state_bytes
        );
        let status = self.hosts[i].upgraded(report.new_pid, TIMEOUT).unwrap();
        assert!(status.success(), "the old host exits cleanly: {status:?}");
        assert!(
            !Path::new(&format!("/proc/{old}")).exists(),
            "old host {old} is gone"
        );
    }

    /// Counter `path` of host `i`'s Pony engine in status.
    fn counter(&self, i: usize, path: &str) -> u64 {
        let status = SnapClient::connect(self.hosts[i].socket())
            .unwrap()
            .status()
            .unwrap();
        status
            .counter("pony0", path)
            .unwrap_or_else(|| panic!("no {path}: {:?}", status.counters["pony0"]))
    }
}

#[test]
fn pony_on_af_xdp_survives_upgrades() {
    let Some(mut pair) = Pair::start('u') else {
        return;
    };
    let prog = [pair.xdp_prog_id(0), pair.xdp_prog_id(1)];
    assert!(prog.iter().all(Option::is_some), "XDP attached on both: {prog:?}");

    let (tx, rx) = mpsc::channel();
    let b_socket = pair.socket(1);
    let app_b = std::thread::spawn(move || common::pony_echo_app(b_socket, ECHO, tx));
    rx.recv_timeout(TIMEOUT).expect("app B listens");

    let stop = Arc::new(AtomicBool::new(false));
    let stop_a = stop.clone();
    let a_socket = pair.socket(0);
    // App A: a window of messages in flight on two streams (sizes up to 64 KiB, so many
    // packets per message); every echo must be the next expected one of its stream.
    let app_a = std::thread::spawn(move || {
        const WINDOW: u32 = 8;
        let sizes = [16usize, 1400, 4000, 65_536];
        let len = |seq: u32| sizes[seq as usize % sizes.len()];
        let mut a = PonyClient::connect(&a_socket, "pony0", Completions::Block).unwrap();
        let flow = a.open_flow(&format!("{ADDR_B}:{PORT}"), ECHO).unwrap();
        let (mut sent, mut next) = ([0u32; 2], [0u32; 2]);
        let mut bytes = 0usize;
        for stream in [0, 1] {
            for _ in 0..WINDOW / 2 {
                let s = stream as usize;
                a.send(flow, stream, &message(stream, sent[s], len(sent[s])))
                    .unwrap();
                sent[s] += 1;
            }
        }
        loop {
            let m = a.recv(Duration::from_secs(20)).expect("an echo within 20 s");
            let s = m.stream as usize;
            assert!(s < 2, "stream {s}");
            assert!(
                m.data == message(m.stream, next[s], len(next[s])),
                "stream {s}: message {} lost, duplicated, reordered or damaged",
                next[s]
            );
            bytes += m.data.len();
            next[s] += 1;
            if !stop_a.load(Ordering::Relaxed) {
                a.send(flow, m.stream, &message(m.stream, sent[s], len(sent[s])))
                    .unwrap();
                sent[s] += 1;
            } else if next == sent {
                return (next, bytes);
            }
        }
    });

    std::thread::sleep(Duration::from_millis(300));
    for host in [0, 1, 0, 0] {
        let redirected_before = pair.counter(host, "nic.redirected");
        pair.upgrade(host);
        let (redirected, received) = (
            pair.counter(host, "nic.redirected"),
            pair.counter(host, "packets_in"),
        );
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            pair.xdp_prog_id(host),
            prog[host],
            "host {host}: the same XDP program stays attached across the upgrade"
        );
        let (redirected_later, received_later) = (
            pair.counter(host, "nic.redirected"),
            pair.counter(host, "packets_in"),
        );
        eprintln!(
            "host {host}: XDP redirected {redirected_before} before the upgrade, {redirected} just after, \
             {redirected_later} 300 ms later; packets_in {received} -> {received_later}"
        );
        assert!(
            redirected >= redirected_before,
            "host {host}: the program's counters carry on ({redirected_before} -> {redirected})"
        );
        assert!(
            redirected_later > redirected && received_later > received,
            "host {host}: the program redirects to the moved socket and the new process \
             receives ({redirected} -> {redirected_later} redirected, {received} -> {received_later} received)"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let (got, bytes) = app_a.join().unwrap();
    eprintln!("echoed {got:?} messages per stream, {bytes} bytes, across 4 upgrades");
    assert!(got.iter().all(|&n| n > 20), "traffic flowed: {got:?}");
    // B's app, blocked in its receive across B's upgrade, is still attached.
    let status = SnapClient::connect(pair.socket(1)).unwrap().status().unwrap();
    assert_eq!(status.channels_of("pony0"), 1, "{:?}", status.channels);
    pair.hosts[1].kill();
    let e = app_b.join().unwrap();
    assert!(matches!(e, ClientError::HostGone), "{e:?}");
}
