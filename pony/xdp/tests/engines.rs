//! Two Pony engines, each in an engine runtime of its own (spreading: the engine blocks on
//! the XSK's readability between packets), on `XdpNic`s at both ends of a veth pair
//! between two network namespaces; apps attached through the real attach path. A message
//! of each size crosses from A to B and an answer from B to A, byte for byte.
//!
//! The NICs are opened on threads inside the namespaces and then run by runtime threads
//! outside them, the way a benchmark or a host that `setns`es for its NICs runs them.

use std::time::Duration;

use pony_engine::{PonyConfig, PonyEngine, PonyStats};
use pony_express::app::{AppSession, Command, Completion};
use pony_xdp::{XdpConfig, XdpNic};
use snap_runtime::{
    AttachReply, AttachRequest, CompactingParams, EngineHandle, GroupSpec, Mode, Runtime, RuntimeOptions,
};
use snap_test_netns::{skip_reason, Topology, ADDR_A, ADDR_B};

const PORT: u16 = 7000;
const DEADLINE: Duration = Duration::from_secs(20);
const SIZES: [usize; 5] = [1, 1000, 1472, 100_000, 1 << 20];

/// One engine on `nic` in a spreading runtime of its own.
fn host(name: &str, nic: XdpNic) -> (Runtime, EngineHandle) {
    let spec = GroupSpec {
        name: name.into(),
        mode: Mode::Spreading,
        cores: vec![],
        engines: vec![Box::new(PonyEngine::new(
            name,
            Box::new(nic),
            PonyConfig::default(),
        ))],
        compacting: CompactingParams::default(),
        idle_poll: Mode::Spreading.default_idle_poll(),
        microquanta_group: None,
    };
    let rt = Runtime::start(
        vec![spec],
        RuntimeOptions {
            microquanta: false,
            ..Default::default()
        },
    )
    .unwrap();
    let h = rt.engine(name).unwrap();
    (rt, h)
}

fn attach(h: &EngineHandle) -> AppSession {
    let reply: AttachReply = h
        .control_dyn(|e| {
            let req = AttachRequest {
                notify: false,
                fds: vec![],
                pid: std::process::id() as i32,
                uid: 0,
            };
            e.app_facing().expect("app-facing").attach_app(req)
        })
        .unwrap()
        .unwrap();
    AppSession::from_fds(reply.fds, None).unwrap()
}

fn stats(h: &EngineHandle) -> PonyStats {
    h.control::<PonyEngine, _>(|e| e.stats()).unwrap()
}

fn next(app: &mut AppSession, what: &str) -> Completion {
    app.wait_completion(DEADLINE)
        .unwrap()
        .unwrap_or_else(|| panic!("no completion while waiting for {what}"))
}

/// Waits for the next Received, skipping Sent completions.
fn received(app: &mut AppSession) -> (u64, Vec<u8>) {
    loop {
        match next(app, "a message") {
            Completion::Received { flow, head, len, .. } => {
                let mut out = Vec::new();
                app.take_received(head, len, &mut out).unwrap();
                return (flow, out);
            }
            Completion::Sent { .. } => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn payload(seq: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + seq * 7 + i / 1009) as u8).collect()
}

#[test]
fn two_engines_exchange_messages_over_af_xdp() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping: {why}");
        return;
    }
    let topo = Topology::prefixed("xdp", "xdp", 'n', 1500);
    let open = |i: usize, ip: &str| {
        let cfg = XdpConfig {
            interface: topo.interface(i).to_owned(),
            bind: format!("{ip}:{PORT}").parse().unwrap(),
            frame_count: 1024,
            ring_size: 512,
            ..XdpConfig::default()
        };
        topo.spawn_in(i, move || XdpNic::open(&cfg).unwrap_or_else(|e| panic!("{e}")))
            .join()
            .expect("opened")
    };
    let (nic_a, nic_b) = (open(0, ADDR_A), open(1, ADDR_B));
    let (_rt_a, a) = host("a", nic_a);
    let (_rt_b, b) = host("b", nic_b);
    let (mut x, mut y) = (attach(&a), attach(&b));

    y.submit(&Command::Listen {
        cookie: 1,
        service: 3,
    })
    .unwrap();
    assert_eq!(next(&mut y, "listening"), Completion::Listening { cookie: 1 });
    x.submit(&Command::OpenFlow {
        cookie: 2,
        peer: format!("{ADDR_B}:{PORT}"),
        service: 3,
    })
    .unwrap();
    let Completion::FlowOpened { result: Ok(flow), .. } = next(&mut x, "the flow") else {
        panic!("the flow did not open")
    };
    let Completion::FlowAccepted { flow: accepted, .. } = next(&mut y, "the accept") else {
        panic!("no accept")
    };
    for (seq, &len) in SIZES.iter().enumerate() {
        let data = payload(seq, len);
        x.send(flow, 0, &data, seq as u64).unwrap();
        let (f, got) = received(&mut y);
        assert_eq!(f, accepted);
        assert!(got == data, "message {seq} ({len} B) A to B");
        let answer = payload(seq + 100, len);
        y.send(accepted, 0, &answer, seq as u64).unwrap();
        let (f, got) = received(&mut x);
        assert_eq!(f, flow);
        assert!(got == answer, "message {seq} ({len} B) B to A");
    }
    let (sa, sb) = (stats(&a), stats(&b));
    assert_eq!((sa.flows_failed, sb.flows_failed), (0, 0));
    assert_eq!((sa.malformed, sb.malformed), (0, 0));
}
