//! Transparent upgrade, in one process: host A's Pony engine hands its state to a new
//! engine (full snapshot while it runs, deltas, freeze, final delta, import) while apps
//! on A and B keep their sessions and traffic flows over real UDP sockets on loopback.
//! Every message carries its sequence number and is checked byte for byte: nothing lost,
//! duplicated or reordered. Each host's engine is stepped by a thread of its own (the
//! runtime's part, which the process-to-process upgrade will do across processes).

use std::collections::HashMap;
use std::net::UdpSocket;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pony_engine::nic::{FaultConfig, FaultyNic, Nic, UdpNic};
use pony_engine::{PonyConfig, PonyEngine, PonyStats, StateError, FORMAT_VERSION};
use pony_express::app::{AppSession, Command, Completion, Completions, SessionError};
use pony_express::pool::PoolError;
use snap_runtime::Engine;

const DEADLINE: Duration = Duration::from_secs(30);

/// How a host's NIC is (re)made on its socket: the old and the new engine each get one
/// on a duplicate of the same socket, as the new process will from the passed descriptor.
type MakeNic = Box<dyn Fn(&UdpSocket, u64) -> Box<dyn Nic> + Send>;

fn plain() -> MakeNic {
    Box::new(|s, _| Box::new(UdpNic::from_socket(s.try_clone().unwrap()).unwrap()))
}

fn lossy(loss: f64) -> MakeNic {
    Box::new(move |s, seed| {
        let nic = UdpNic::from_socket(s.try_clone().unwrap()).unwrap();
        Box::new(FaultyNic::new(nic).on_send(FaultConfig {
            seed,
            loss,
            ..Default::default()
        }))
    })
}

/// What one upgrade measured.
#[derive(Debug, Clone, Copy)]
struct Upgrade {
    flows: usize,
    full_bytes: usize,
    last_delta_bytes: usize,
    delta_flows: usize,
    brownout: Duration,
    /// Freeze → the new engine's first step done.
    blackout: Duration,
    /// The whole upgrade: in this harness the old engine's exports run on its own thread,
    /// so its steps pause while each is taken.
    stall: Duration,
    /// Writing the full snapshot.
    full_export: Duration,
}

enum Cmd {
    Attach(mpsc::Sender<AppSession>),
    Upgrade(usize, mpsc::Sender<Result<Upgrade, StateError>>),
    /// Export a full snapshot, damage its version, check it as the new side would
    /// (refused), and keep running.
    RefusedUpgrade(mpsc::Sender<StateError>),
    Stats(mpsc::Sender<PonyStats>),
    /// A full snapshot (the engine keeps running).
    Export(mpsc::Sender<Vec<u8>>),
    /// Runs a closure on the engine, between steps.
    With(Box<dyn FnOnce(&mut PonyEngine) + Send>),
    /// Freeze, then thaw as if the new side had refused the final delta.
    FreezeAndThaw(mpsc::Sender<bool>),
}

/// One host: a thread stepping its engine, taking commands between steps.
struct Host {
    tx: mpsc::Sender<Cmd>,
    addr: String,
    thread: Option<JoinHandle<()>>,
}

impl Host {
    fn start(name: &'static str, make_nic: MakeNic) -> Host {
        Host::start_with(name, make_nic, PonyConfig::default())
    }

    fn start_with(name: &'static str, make_nic: MakeNic, cfg: PonyConfig) -> Host {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap().to_string();
        let (tx, rx) = mpsc::channel::<Cmd>();
        let thread = std::thread::spawn(move || {
            let mut seed = 1;
            let mut engine = PonyEngine::new(name, make_nic(&socket, seed), cfg.clone());
            loop {
                match rx.try_recv() {
                    Ok(Cmd::Attach(reply)) => {
                        let (_, app) = engine.attach_local(Completions::Poll).unwrap();
                        reply.send(app).unwrap();
                    }
                    Ok(Cmd::Stats(reply)) => reply.send(engine.stats()).unwrap(),
                    Ok(Cmd::With(f)) => f(&mut engine),
                    Ok(Cmd::Export(reply)) => reply.send(engine.export_full().unwrap()).unwrap(),
                    Ok(Cmd::FreezeAndThaw(reply)) => {
                        engine.export_full().unwrap();
                        let mut last = engine.freeze().unwrap();
                        // A frozen engine does nothing.
                        let idle = engine.run(Instant::now()).items == 0;
                        last.truncate(last.len() / 2);
                        assert!(PonyEngine::check_snapshot(&last).is_err());
                        engine.thaw();
                        reply.send(idle && !engine.is_frozen()).unwrap();
                    }
                    Ok(Cmd::RefusedUpgrade(reply)) => {
                        let mut full = engine.export_full().unwrap();
                        full[8..10].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
                        let err = PonyEngine::check_snapshot(&full).unwrap_err();
                        reply.send(err).unwrap();
                    }
                    Ok(Cmd::Upgrade(deltas, reply)) => {
                        seed += 1;
                        match upgrade(engine, deltas, make_nic(&socket, seed), name, cfg.clone()) {
                            Ok((new, report)) => {
                                engine = new;
                                reply.send(Ok(report)).unwrap();
                            }
                            Err(e) => {
                                reply.send(Err(e)).unwrap();
                                return;
                            }
                        }
                    }
                    Err(mpsc::TryRecvError::Disconnected) => return,
                    Err(mpsc::TryRecvError::Empty) => {}
                }
                let out = engine.run(Instant::now());
                if out.items == 0 && !out.pending {
                    std::thread::sleep(Duration::from_micros(20));
                }
            }
        });
        Host {
            tx,
            addr,
            thread: Some(thread),
        }
    }

    fn attach(&self) -> AppSession {
        let (tx, rx) = mpsc::channel();
        self.tx.send(Cmd::Attach(tx)).unwrap();
        rx.recv().unwrap()
    }

    fn stats(&self) -> PonyStats {
        let (tx, rx) = mpsc::channel();
        self.tx.send(Cmd::Stats(tx)).unwrap();
        rx.recv().unwrap()
    }

    /// Asks for an upgrade with `deltas` brownout deltas; the answer comes on the receiver.
    fn upgrade(&self, deltas: usize) -> mpsc::Receiver<Result<Upgrade, StateError>> {
        let (tx, rx) = mpsc::channel();
        self.tx.send(Cmd::Upgrade(deltas, tx)).unwrap();
        rx
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let (tx, _) = mpsc::channel();
        // Replace the sender so the thread sees the channel close.
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The upgrade protocol, in one thread: full snapshot and `deltas` deltas while the old
/// engine keeps stepping (brownout), then freeze, final delta, hand-over, import, and the
/// new engine's first step (blackout).
fn upgrade(
    mut old: PonyEngine,
    deltas: usize,
    nic: Box<dyn Nic>,
    name: &str,
    cfg: PonyConfig,
) -> Result<(PonyEngine, Upgrade), StateError> {
    let t0 = Instant::now();
    let full = old.export_full()?;
    let full_export = t0.elapsed();
    PonyEngine::check_snapshot(&full)?;
    let mut ds = Vec::new();
    for _ in 0..deltas {
        for _ in 0..20 {
            old.run(Instant::now());
        }
        ds.push(old.export_delta()?);
    }
    let brownout = t0.elapsed();
    let t1 = Instant::now();
    let last = old.freeze()?;
    let info = PonyEngine::check_snapshot(&last)?;
    ds.push(last);
    let handover = old.hand_over();
    let mut new = PonyEngine::import(name, nic, cfg, &full, &ds, handover)?;
    new.run(Instant::now());
    let blackout = t1.elapsed();
    let report = Upgrade {
        flows: new.stats().flows,
        full_bytes: full.len(),
        last_delta_bytes: ds.last().map_or(0, Vec::len),
        delta_flows: info.flows,
        brownout,
        blackout,
        stall: t0.elapsed(),
        full_export,
    };
    Ok((new, report))
}

fn wait(app: &mut AppSession, what: &str) -> Completion {
    let start = Instant::now();
    loop {
        if let Some(c) = app.poll_completion().unwrap() {
            return c;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no completion while waiting for {what}"
        );
        std::thread::yield_now();
    }
}

/// Opens `n` flows from `a` to `b` (listening on service 9); returns a's flow ids.
fn open_flows(a: &mut AppSession, b: &mut AppSession, peer: &str, n: usize) -> Vec<u64> {
    b.submit(&Command::Listen {
        cookie: 7,
        service: 9,
    })
    .unwrap();
    assert_eq!(wait(b, "Listening"), Completion::Listening { cookie: 7 });
    let mut flows = Vec::new();
    let mut accepted = 0;
    let mut submitted = 0;
    while flows.len() < n || accepted < n {
        if submitted < n {
            let cmd = Command::OpenFlow {
                cookie: submitted as u64,
                peer: peer.into(),
                service: 9,
            };
            if a.submit(&cmd).is_ok() {
                submitted += 1;
            }
        }
        while let Some(c) = a.poll_completion().unwrap() {
            let Completion::FlowOpened { result: Ok(f), .. } = c else {
                panic!("open: {c:?}")
            };
            flows.push(f);
        }
        while let Some(c) = b.poll_completion().unwrap() {
            assert!(matches!(c, Completion::FlowAccepted { cookie: 7, .. }), "{c:?}");
            accepted += 1;
        }
    }
    flows
}

/// Message `i` of a stream: its sequence number, then bytes derived from it.
fn message(i: u64, len: usize) -> Vec<u8> {
    let mut m = i.to_le_bytes().to_vec();
    m.extend((8..len.max(8)).map(|k| (k as u64 ^ i.wrapping_mul(0x9e37)) as u8));
    m
}

fn send_retrying(app: &mut AppSession, flow: u64, data: &[u8], cookie: u64) {
    let start = Instant::now();
    loop {
        match app.send(flow, 0, data, cookie) {
            Ok(_) => return,
            Err(SessionError::Pool(PoolError::Exhausted { .. }) | SessionError::Push(_)) => {
                assert!(start.elapsed() < DEADLINE, "send stuck");
                std::thread::yield_now();
            }
            Err(e) => panic!("send: {e}"),
        }
    }
}

/// `rounds` request/response exchanges between an app on `ha` (the host upgraded at the
/// rounds in `upgrade_at`) and an echo app on `hb`, over `flows` flows in turn. Every
/// response is checked against its request (sequence and bytes).
fn ping_pong(
    ha: &Host,
    hb: &Host,
    flows: usize,
    rounds: u64,
    upgrade_at: &[u64],
    deltas: usize,
) -> Vec<Upgrade> {
    let (mut a, mut b) = (ha.attach(), hb.attach());
    let fa = open_flows(&mut a, &mut b, &hb.addr, flows);
    // b's flow ids in accept order match a's open order only loosely: echo on the flow a
    // message came in on.
    let mut reports = Vec::new();
    let mut pending = Vec::new();
    let mut buf = Vec::new();
    for i in 0..rounds {
        if upgrade_at.contains(&i) {
            pending.push(ha.upgrade(deltas));
        }
        let flow = fa[i as usize % fa.len()];
        let req = message(i, 64 + (i as usize % 7) * 100);
        send_retrying(&mut a, flow, &req, i);
        // The echo side: one message in, the same bytes back on its flow.
        let (bflow, head, len) = loop {
            match wait(&mut b, "request") {
                Completion::Received { flow, head, len, .. } => break (flow, head, len),
                Completion::Sent { .. } => {}
                c => panic!("echo got {c:?}"),
            }
        };
        buf.clear();
        b.take_received(head, len, &mut buf).unwrap();
        assert_eq!(buf, req, "request {i} arrived intact and in order");
        send_retrying(&mut b, bflow, &buf, i);
        // A library call in progress across the upgrade: this wait spans it.
        let mut got_sent = false;
        loop {
            match wait(&mut a, "response") {
                Completion::Sent { cookie, .. } => {
                    assert_eq!(cookie, i, "Sent completions in order");
                    got_sent = true;
                }
                Completion::Received {
                    flow: f, head, len, ..
                } => {
                    assert_eq!(f, flow, "response on the request's flow");
                    buf.clear();
                    a.take_received(head, len, &mut buf).unwrap();
                    assert_eq!(buf, req, "response {i}: its request's bytes, once, in order");
                    break;
                }
                c => panic!("pinger got {c:?}"),
            }
        }
        if !got_sent {
            assert_eq!(wait(&mut a, "Sent"), Completion::Sent { cookie: i });
        }
        for rx in std::mem::take(&mut pending) {
            match rx.try_recv() {
                Ok(r) => reports.push(r.expect("upgrade")),
                Err(mpsc::TryRecvError::Empty) => pending.push(rx),
                Err(e) => panic!("upgrade thread gone: {e}"),
            }
        }
    }
    for rx in pending {
        reports.push(rx.recv_timeout(DEADLINE).unwrap().expect("upgrade"));
    }
    assert_eq!(reports.len(), upgrade_at.len());
    reports
}

#[test]
fn upgrade_during_ping_pong() {
    let (ha, hb) = (Host::start("up-a", plain()), Host::start("up-b", plain()));
    let reports = ping_pong(&ha, &hb, 1, 400, &[50, 150, 300], 2);
    eprintln!("{reports:#?}");
    assert!(reports.iter().all(|r| r.flows == 1));
    assert_eq!(ha.stats().flows_failed, 0);
}

#[test]
fn upgrade_under_loss() {
    let (ha, hb) = (
        Host::start("up-la", lossy(0.05)),
        Host::start("up-lb", lossy(0.05)),
    );
    let reports = ping_pong(&ha, &hb, 4, 400, &[60, 200, 330], 3);
    eprintln!("{reports:#?}");
    let s = ha.stats();
    assert!(
        s.faults.is_some_and(|f| f.tx.dropped > 0),
        "loss was injected: {:?}",
        s.faults
    );
    assert!(s.retransmits > 0, "and repaired");
    assert_eq!(s.flows_failed, 0);
}

/// A multi-MiB stream from one host to the other, with the upgraded host the sender
/// (`upgrade_sender`) or the receiver, upgraded several times with messages in flight.
fn stream(upgrade_sender: bool) {
    let (ha, hb) = (Host::start("st-a", plain()), Host::start("st-b", plain()));
    let (mut a, mut b) = (ha.attach(), hb.attach());
    let flow = open_flows(&mut a, &mut b, &hb.addr, 1)[0];
    let upgraded = if upgrade_sender { &ha } else { &hb };
    let sizes = [1usize, 1000, 64 << 10, 1 << 20, 300, 2 << 20, 17, 256 << 10];
    let plan: Vec<usize> = (0..60).map(|i| sizes[i % sizes.len()]).collect();
    let total: usize = plan.iter().sum();
    assert!(total > 16 << 20, "a multi-MiB stream");
    let (mut sent, mut acked, mut received) = (0usize, 0usize, 0usize);
    let mut pending = Vec::new();
    let mut reports = Vec::new();
    let mut buf = Vec::new();
    let start = Instant::now();
    while acked < plan.len() || received < plan.len() {
        assert!(
            start.elapsed() < DEADLINE * 2,
            "stuck: {sent} sent, {received} received"
        );
        if sent < plan.len() {
            let m = message(sent as u64, plan[sent]);
            match a.send(flow, 0, &m, sent as u64) {
                Ok(_) => {
                    sent += 1;
                    if sent % 12 == 6 {
                        pending.push(upgraded.upgrade(2));
                    }
                }
                Err(SessionError::Pool(PoolError::Exhausted { .. }) | SessionError::Push(_)) => {}
                Err(e) => panic!("send: {e}"),
            }
        }
        while let Some(c) = a.poll_completion().unwrap() {
            assert_eq!(c, Completion::Sent { cookie: acked as u64 }, "Sent in order");
            acked += 1;
        }
        while let Some(c) = b.poll_completion().unwrap() {
            let Completion::Received { head, len, .. } = c else {
                panic!("receiver got {c:?}")
            };
            buf.clear();
            b.take_received(head, len, &mut buf).unwrap();
            assert!(
                buf == message(received as u64, plan[received]),
                "message {received}: once, in order, byte-exact"
            );
            received += 1;
        }
        std::thread::yield_now();
    }
    assert!(b.poll_completion().unwrap().is_none(), "a duplicate delivery");
    for rx in pending {
        reports.push(rx.recv_timeout(DEADLINE).unwrap().expect("upgrade"));
    }
    // Every pool buffer comes back: the moved flows' references (data in flight, messages
    // being reassembled) were not leaked. (A release too many would have freed a buffer
    // still in use, which the byte-exact checks above would see as damaged messages.)
    for (app, who) in [(&a, "sender"), (&b, "receiver")] {
        let t = Instant::now();
        loop {
            let st = app.pool().stats();
            if st.free == st.buffers {
                break;
            }
            assert!(
                t.elapsed() < DEADLINE,
                "{who}'s pool: {} of {} free",
                st.free,
                st.buffers
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    eprintln!("{} MiB, {reports:#?}", total >> 20);
    assert!(reports.len() >= 5);
    assert!(
        reports.iter().any(|r| r.full_bytes > 1000),
        "upgrades happened with data in flight"
    );
}

#[test]
fn upgrade_the_sender_during_a_stream() {
    stream(true);
}

#[test]
fn upgrade_the_receiver_during_a_stream() {
    stream(false);
}

/// Blackout for 1, 100 and 1000 flows (release build for meaningful numbers:
/// `cargo test --release -p pony-engine --test upgrade -- --nocapture many_flows`).
#[test]
fn upgrade_with_many_flows() {
    for flows in [1usize, 100, 1000] {
        // A debug build cannot step 1000 flows fast enough for the 800 ms idle timeout
        // (their keepalives lag: the same ping-pong fails without any upgrade), so the
        // idle timeout is long here; the checks are the same.
        let mut cfg = PonyConfig::default();
        cfg.flow.idle_timeout = Some(Duration::from_secs(20));
        let (ha, hb) = (
            Host::start_with("mf-a", plain(), cfg.clone()),
            Host::start_with("mf-b", plain(), cfg),
        );
        // UPGRADES=n for more samples when measuring (default 5).
        let n: u64 = std::env::var("UPGRADES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5);
        let rounds = (flows as u64 * 2).max(8 * n);
        let at: Vec<u64> = (1..=n).map(|k| rounds * k / (n + 1)).collect();
        let reports = ping_pong(&ha, &hb, flows, rounds, &at, 2);
        let mut b: Vec<Duration> = reports.iter().map(|r| r.blackout).collect();
        b.sort();
        let p99 = b[((b.len() * 99).div_ceil(100)).saturating_sub(1)];
        eprintln!(
            "flows {flows}: {} upgrades, blackout p99 {p99:?}; blackout min {:?} p50 {:?} max {:?}; brownout p50 {:?}; longest stall {:?}; full export p50 {:?}, {} B, last delta {} B ({} flows)",
            b.len(),
            b[0],
            b[b.len() / 2],
            b[b.len() - 1],
            reports[reports.len() / 2].brownout,
            reports.iter().map(|r| r.stall).max().unwrap(),
            reports[reports.len() / 2].full_export,
            reports[0].full_bytes,
            reports[0].last_delta_bytes,
            reports[0].delta_flows,
        );
        assert!(reports.iter().all(|r| r.flows == flows));
        assert_eq!(ha.stats().flows_failed, 0);
    }
}

#[test]
fn an_unreadable_version_is_refused_and_the_old_engine_keeps_serving() {
    let (ha, hb) = (Host::start("rv-a", plain()), Host::start("rv-b", plain()));
    let (tx, rx) = mpsc::channel();
    ha.tx.send(Cmd::RefusedUpgrade(tx)).unwrap();
    let err = rx.recv().unwrap();
    assert!(
        matches!(err, StateError::UnsupportedVersion { found, supported } if found == FORMAT_VERSION + 1 && supported == FORMAT_VERSION),
        "{err}"
    );
    // The old engine still serves: a fresh ping-pong through it.
    ping_pong(&ha, &hb, 1, 20, &[], 0);
}

/// Delta bookkeeping: an idle flow is not in a delta; a flow that carried a message is.
#[test]
fn deltas_carry_only_changed_flows() {
    let (ha, hb) = (Host::start("dl-a", plain()), Host::start("dl-b", plain()));
    ping_pong(&ha, &hb, 3, 6, &[], 0);
    let r = ha.upgrade(1).recv_timeout(DEADLINE).unwrap().unwrap();
    eprintln!("{r:?}");
    assert_eq!(r.flows, 3);
    assert!(
        r.delta_flows < 3,
        "idle flows stay out of the final delta ({})",
        r.delta_flows
    );
}

/// The new side refusing the final delta (here: damaged) leaves the old engine to thaw
/// and serve on; the flow never noticed.
#[test]
fn a_refused_final_delta_thaws_the_old_engine() {
    let (ha, hb) = (Host::start("th-a", plain()), Host::start("th-b", plain()));
    let (mut a, mut b) = (ha.attach(), hb.attach());
    let flow = open_flows(&mut a, &mut b, &hb.addr, 1)[0];
    let (tx, rx) = mpsc::channel();
    ha.tx.send(Cmd::FreezeAndThaw(tx)).unwrap();
    assert!(rx.recv().unwrap(), "frozen, idle, then thawed");
    send_retrying(&mut a, flow, &message(0, 3000), 0);
    assert_eq!(wait(&mut a, "Sent"), Completion::Sent { cookie: 0 });
    let Completion::Received { head, len, .. } = wait(&mut b, "Received") else {
        panic!("no message")
    };
    let mut buf = Vec::new();
    b.take_received(head, len, &mut buf).unwrap();
    assert_eq!(buf, message(0, 3000));
}

/// A snapshot with flows, sessions and a listener, for damaging.
fn some_snapshot() -> Vec<u8> {
    use std::sync::OnceLock;
    static SNAP: OnceLock<Vec<u8>> = OnceLock::new();
    SNAP.get_or_init(|| {
        let (ha, hb) = (Host::start("fz-a", plain()), Host::start("fz-b", plain()));
        ping_pong(&ha, &hb, 3, 9, &[], 0);
        let (tx, rx) = mpsc::channel();
        hb.tx.send(Cmd::Export(tx)).unwrap();
        rx.recv().unwrap()
    })
    .clone()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Damaged or truncated snapshots are typed errors, never panics; with the checksum
    /// recomputed (damage the checksum cannot see), decoding still never panics.
    #[test]
    fn damaged_snapshots_are_errors(
        flips in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), 1u8..), 1..6),
        cut in proptest::prelude::any::<proptest::sample::Index>(),
        fix_crc in proptest::prelude::any::<bool>(),
    ) {
        let snap = some_snapshot();
        PonyEngine::check_snapshot(&snap).unwrap();
        let mut bad = snap.clone();
        for (at, x) in flips {
            let i = at.index(bad.len());
            bad[i] ^= x;
        }
        bad.truncate(cut.index(bad.len() + 1).max(bad.len() / 2));
        if fix_crc && bad.len() >= 14 {
            let crc = crc32c::crc32c(&bad[14..]).to_le_bytes();
            bad[10..14].copy_from_slice(&crc);
            let _ = PonyEngine::check_snapshot(&bad);
        } else if bad != snap {
            let err = PonyEngine::check_snapshot(&bad).unwrap_err();
            proptest::prop_assert!(matches!(
                err,
                StateError::NotASnapshot | StateError::UnsupportedVersion { .. } | StateError::Checksum
            ), "{err}");
        }
    }
}

/// One-sided reads from a region on B while both hosts are upgraded with reads in flight:
/// the region, its key, B's reads being served and A's pending ops all move, and every
/// read returns the region's bytes.
#[test]
fn upgrade_with_one_sided_reads_in_flight() {
    use snap_ipc::SharedMem;
    use std::os::fd::AsFd;

    let (ha, hb) = (Host::start("os-a", plain()), Host::start("os-b", plain()));
    let (mut a, mut b) = (ha.attach(), hb.attach());
    let flow = open_flows(&mut a, &mut b, &hb.addr, 1)[0];
    let len = 48 << 10;
    let data = SharedMem::create("upgrade-region", len).unwrap();
    let fill = |i: usize| (i * 7 % 251) as u8;
    for i in 0..len {
        // SAFETY: i < len; the mapping is ours and nobody reads it yet.
        unsafe { data.as_ptr().add(i).write(fill(i)) };
    }
    let fd = data.as_fd().try_clone_to_owned().unwrap();
    let (tx, rx) = mpsc::channel();
    hb.tx
        .send(Cmd::With(Box::new(move |e| {
            // The only session on B is the app's (id 1).
            let g = e
                .register_region_local(1, SharedMem::from_fd(fd).unwrap())
                .unwrap();
            tx.send(g).unwrap();
        })))
        .unwrap();
    let grant = rx.recv().unwrap();
    let mut pending = Vec::new();
    let mut buf = Vec::new();
    for round in 0..12u64 {
        // Four reads in flight, then an upgrade of one host or the other.
        let mut chains = HashMap::new();
        for k in 0..4u64 {
            let cookie = round * 4 + k;
            let offset = (cookie * 1000) % 8000;
            let n = (len as u64 - offset) as u32;
            let chain = a.pool().alloc_chain(n as usize).unwrap();
            a.submit(&Command::Read {
                flow,
                region: grant.region,
                key: grant.key,
                offset,
                len: n,
                local: chain.head.0,
                cookie,
            })
            .unwrap();
            chains.insert(cookie, (chain.head.0, offset));
        }
        pending.push(if round % 2 == 0 {
            ha.upgrade(1)
        } else {
            hb.upgrade(1)
        });
        for _ in 0..4 {
            let Completion::ReadDone { cookie, result } = wait(&mut a, "ReadDone") else {
                panic!("expected ReadDone")
            };
            let n = result.expect("read");
            let (head, offset) = chains[&cookie];
            buf.clear();
            a.take_received(head, n, &mut buf).unwrap();
            let want: Vec<u8> = (offset as usize..len).map(fill).collect();
            assert!(buf == want, "read {cookie}: the region's bytes");
        }
    }
    for rx in pending {
        rx.recv_timeout(DEADLINE).unwrap().expect("upgrade");
    }
    assert!(hb.stats().ops_served >= 48);
}
