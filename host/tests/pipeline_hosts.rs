//! Two real `snap-host` processes in two network namespaces joined by a veth pair (names
//! prefixed `path`), each Pony engine's NIC side a pipeline of `pass` stages whose last
//! stage owns a UDP NIC: host A runs its two stages in a spreading and a compacting group,
//! host B its one stage in a spreading group of its own. Apps attached through
//! `pony_express::client` exchange messages from 8 B to 300 KB, echoed byte for byte in
//! order both ways; the stages' counters show in status; a stage's thread sleeps when
//! traffic stops and its doorbell wakes it; and stage updates sent through the control
//! plane while traffic flows are applied or refused without losing a message.
//!
//! Needs root and iproute2 (without them each test prints why and passes).

mod common;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use common::{message, test_dir, wait_until, TIMEOUT};
use pony_express::app::Completions;
use pony_express::client::PonyClient;
use snap_host::process::HostProcess;
use snap_ipc::control::{HostStatus, SnapClient};
use snap_test_netns::{skip_reason, Topology, ADDR_A, ADDR_B};

const PORT: u16 = 7000;
const ECHO: u32 = 7;
const SIZES: [usize; 6] = [8, 100, 1400, 4000, 65_536, 300_000];

const HOST_A: &str = r#"
microquanta = false
[[group]]
name = "pony"
mode = "spreading"
[[group.engine]]
name = "pony0"
kind = "pony"
options = { pipeline = "path" }
[[group]]
name = "spread"
mode = "spreading"
[[group]]
name = "compact"
mode = "compacting"
[[pipeline]]
name = "path"
buffers = 2048
queue_capacity = 128
[[pipeline.stage]]
name = "pass0"
kind = "pass"
group = "spread"
[[pipeline.stage]]
name = "pass1"
kind = "pass"
group = "compact"
[pipeline.nic]
nic = "udp"
"#;

const HOST_B: &str = r#"
microquanta = false
[[group]]
name = "pony"
mode = "spreading"
[[group.engine]]
name = "pony0"
kind = "pony"
options = { pipeline = "path" }
[[group]]
name = "spread"
mode = "spreading"
[[pipeline]]
name = "path"
[[pipeline.stage]]
name = "pass0"
kind = "pass"
group = "spread"
[pipeline.nic]
nic = "udp"
"#;

/// Two hosts, killed before the namespaces go (field order).
struct Pair {
    hosts: [HostProcess; 2],
    _topo: Topology,
}

impl Pair {
    fn start(tag: char) -> Option<Self> {
        if let Some(why) = skip_reason() {
            eprintln!("skipping: {why}");
            return None;
        }
        let topo = Topology::prefixed("path", "path", tag, 1500);
        let start = |i: usize, addr: &str, config: &str| {
            let config = format!("{config}bind = \"{addr}:{PORT}\"\n");
            let dir = test_dir("pipeline-host");
            topo.spawn_in(i, move || {
                let bin = Path::new(env!("CARGO_BIN_EXE_snap-host"));
                HostProcess::start(bin, &dir, &config, TIMEOUT, None)
            })
            .join()
            .expect("starting a host panicked")
            .unwrap_or_else(|e| panic!("snap-host {i} in its namespace: {e}"))
        };
        let hosts = [start(0, ADDR_A, HOST_A), start(1, ADDR_B, HOST_B)];
        Some(Self { hosts, _topo: topo })
    }

    fn socket(&self, i: usize) -> PathBuf {
        self.hosts[i].socket().to_owned()
    }

    fn status(&self, i: usize) -> HostStatus {
        SnapClient::connect(self.socket(i)).unwrap().status().unwrap()
    }
}

/// App A's flow to B's echo service (B's app started first).
fn connect(pair: &Pair) -> (PonyClient, u64) {
    let (tx, rx) = mpsc::channel();
    let b_socket = pair.socket(1);
    std::thread::spawn(move || common::pony_echo_app(b_socket, ECHO, tx));
    rx.recv_timeout(TIMEOUT).expect("app B listens");
    let mut a = PonyClient::connect(pair.socket(0), "pony0", Completions::Block).unwrap();
    let flow = a.open_flow(&format!("{ADDR_B}:{PORT}"), ECHO).unwrap();
    (a, flow)
}

/// Sends `rounds` rounds of every size on two streams and checks each echo, byte for byte
/// and in order; `between` runs after each round's sends.
fn echo_rounds(a: &mut PonyClient, flow: u64, rounds: usize, mut between: impl FnMut(usize)) {
    for round in 0..rounds {
        for (i, &len) in SIZES.iter().enumerate() {
            let seq = (round * SIZES.len() + i) as u32;
            for stream in [0, 1] {
                a.send(flow, stream, &message(stream, seq, len)).unwrap();
            }
        }
        between(round);
        let mut next = [0usize; 2];
        while next != [SIZES.len(); 2] {
            let m = a
                .recv(TIMEOUT)
                .unwrap_or_else(|e| panic!("round {round} echo {next:?}: {e}"));
            let s = m.stream as usize;
            assert!(s < 2 && next[s] < SIZES.len(), "extra message on stream {s}");
            let seq = (round * SIZES.len() + next[s]) as u32;
            assert!(
                m.data == message(m.stream, seq, SIZES[next[s]]),
                "round {round} stream {s} message {} differs",
                next[s]
            );
            next[s] += 1;
        }
    }
}

fn stage_counter(status: &HostStatus, stage: &str, key: &str) -> u64 {
    status.counters[stage]["counters"][key].as_u64().unwrap_or(0)
}

fn drops(status: &HostStatus, stage: &str) -> usize {
    status.counters[stage]["drops"].as_array().map_or(0, Vec::len)
}

#[test]
fn pony_apps_talk_through_pass_stages_in_different_groups_and_modes() {
    let Some(pair) = Pair::start('e') else { return };
    let (mut a, flow) = connect(&pair);
    echo_rounds(&mut a, flow, 1, |_| {});

    let s = pair.status(0);
    assert_eq!(s.kinds.get("pass0").map(String::as_str), Some("stage"));
    for stage in ["pass0", "pass1"] {
        let tx = stage_counter(&s, stage, "tx_packets");
        let rx = stage_counter(&s, stage, "rx_packets");
        // 2 × 370 kB at most 1472-byte datagrams each way: hundreds of packets.
        assert!(tx > 400 && rx > 400, "{stage}: tx {tx} rx {rx}");
        assert_eq!(drops(&s, stage), 0, "{stage}: {}", s.counters[stage]);
    }
    assert_eq!(
        stage_counter(&s, "pass0", "tx_packets"),
        stage_counter(&s, "pass1", "tx_packets"),
        "every packet crossed both stages"
    );
    assert!(s.runtime.unhealthy().is_empty(), "{:?}", s.runtime.unhealthy());

    // Traffic stops: the spreading stage's thread blocks; the next message's doorbell
    // wakes it (wakeups counts exactly that), and the message still crosses.
    std::thread::sleep(Duration::from_millis(300));
    let before = pair.status(0).runtime.engine("pass0").unwrap().wakeups;
    let runs_idle = pair.status(0).runtime.engine("pass0").unwrap().runs;
    std::thread::sleep(Duration::from_millis(300));
    let runs_after_idle = pair.status(0).runtime.engine("pass0").unwrap().runs;
    assert!(
        runs_after_idle - runs_idle < 50,
        "an idle stage sleeps: {} steps in 300 ms",
        runs_after_idle - runs_idle
    );
    echo_rounds(&mut a, flow, 1, |_| {});
    let after = pair.status(0).runtime.engine("pass0").unwrap().wakeups;
    assert!(
        after > before,
        "the sleeping stage was woken by its doorbell ({before} → {after})"
    );
}

#[test]
fn stage_updates_under_traffic_apply_or_are_refused_and_lose_nothing() {
    let Some(pair) = Pair::start('u') else { return };
    let (mut a, flow) = connect(&pair);
    let mut ctl = SnapClient::connect(pair.socket(0)).unwrap();
    let mut refused = Vec::new();
    echo_rounds(&mut a, flow, 3, |round| {
        // Messages of this round are in flight through the stages now.
        let ok = ctl
            .stage_update("pass0", "")
            .expect("empty settings are pass's own");
        assert!(ok.contains("pass0 updated"), "{ok}");
        refused.push(ctl.stage_update("pass1", "rate = 5").unwrap_err().to_string());
        refused.push(ctl.stage_update("pony0", "").unwrap_err().to_string());
        let _ = round;
    });
    assert!(refused[0].contains("no settings"), "{}", refused[0]);
    assert!(
        refused[1].contains("no pipeline stage named \"pony0\""),
        "{}",
        refused[1]
    );
    let s = pair.status(0);
    for stage in ["pass0", "pass1"] {
        assert_eq!(drops(&s, stage), 0, "{stage}: {}", s.counters[stage]);
    }
    wait_until("host B's stage counted the traffic", || {
        stage_counter(&pair.status(1), "pass0", "rx_packets") > 1000
    });
}
