//! Two Pony engines, each in its own engines `Runtime` (spreading mode, as in a Snap host),
//! joined by a shared-memory wire made lossy by `FaultyNic` (loss, reordering, duplication,
//! corruption), with apps attached through `EngineHandle::control_dyn` + `attach_app` and
//! `AppSession::from_fds`: the real attach path minus the control socket. Plus a UDP
//! loopback variant. Deadlines below only bound hangs; nothing asserts on timing.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use pony_engine::nic::{FaultConfig, FaultyNic, Nic, ShmWire, ShmWireConfig, UdpNic};
use pony_engine::{PonyConfig, PonyEngine};
use pony_express::app::SessionError;
use pony_express::app::{AppSession, CloseReason, Command, Completion, OpErrorCode};
use pony_express::pool::{BufIdx, PoolError};
use snap_ipc::SharedMem;
use snap_runtime::EngineHandle;

mod common;

use common::{host_with, stats, Host};

const DEADLINE: Duration = Duration::from_secs(12);

fn host(name: &str, nic: impl Nic + 'static) -> Host {
    host_with(name, nic, PonyConfig::default())
}

fn faults(seed: u64) -> FaultConfig {
    FaultConfig {
        seed,
        loss: 0.05,
        corrupt: 0.02,
        duplicate: 0.02,
        reorder: 0.05,
        reorder_max_hold: Duration::from_micros(200),
        ..Default::default()
    }
}

/// Two hosts over a lossy shared-memory wire.
fn lossy_pair(seed: u64) -> (Host, Host) {
    let (a, b) = ShmWire::pair(ShmWireConfig::default()).unwrap();
    let a = FaultyNic::new(a).on_send(faults(seed));
    let b = FaultyNic::new(b).on_send(faults(seed + 1));
    (host("pony-a", a), host("pony-b", b))
}

fn attach(h: &EngineHandle) -> (u64, AppSession) {
    let (id, app, details) = common::attach(h);
    assert_eq!(details["pool_buffers"], 8192);
    (id, app)
}

fn wait(app: &mut AppSession, what: &str) -> Completion {
    common::wait_for(app, DEADLINE, what)
}

/// Connects `a`'s app to `b`'s (which listens); returns (a's flow, b's flow).
fn connect(a: &mut AppSession, b: &mut AppSession, peer: &str) -> (u64, u64) {
    b.submit(&Command::Listen {
        cookie: 7,
        service: 9,
    })
    .unwrap();
    assert_eq!(wait(b, "Listening"), Completion::Listening { cookie: 7 });
    a.submit(&Command::OpenFlow {
        cookie: 1,
        peer: peer.into(),
        service: 9,
    })
    .unwrap();
    let Completion::FlowOpened {
        cookie: 1,
        result: Ok(fa),
    } = wait(a, "FlowOpened")
    else {
        panic!("open failed")
    };
    let Completion::FlowAccepted { cookie: 7, flow: fb } = wait(b, "FlowAccepted") else {
        panic!("no accept")
    };
    (fa, fb)
}

fn content(stream: u32, i: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|k| (k as u32 ^ (stream << 5) ^ (i as u32 * 31)) as u8)
        .collect()
}

/// Sends every message of `plan` (stream, size) from `a` on `flow`, receives them on `b`,
/// and checks exactly-once, in-order delivery per stream. The sender retries when its pool
/// is full (it fills up while big messages wait for the engine).
fn transfer(a: &mut AppSession, b: &mut AppSession, flow: u64, plan: &[(u32, usize)]) {
    let start = Instant::now();
    let mut next = 0;
    let mut sent = 0;
    let mut expected: HashMap<u32, Vec<Vec<u8>>> = HashMap::new();
    for (i, &(s, len)) in plan.iter().enumerate() {
        expected.entry(s).or_default().push(content(s, i, len));
    }
    let mut got: HashMap<u32, usize> = HashMap::new();
    let mut received = 0;
    let mut buf = Vec::new();
    while sent < plan.len() || received < plan.len() {
        assert!(
            start.elapsed() < DEADLINE,
            "stuck: {sent} sent, {received} received"
        );
        let mut idle = true;
        if next < plan.len() {
            let (s, len) = plan[next];
            match a.send(flow, s, &content(s, next, len), next as u64) {
                Ok(_) => next += 1,
                Err(SessionError::Pool(PoolError::Exhausted { .. }) | SessionError::Push(_)) => {}
                Err(e) => panic!("send: {e}"),
            }
            idle = false;
        }
        while let Some(c) = a.poll_completion().unwrap() {
            idle = false;
            match c {
                Completion::Sent { .. } => sent += 1,
                other => panic!("sender got {other:?}"),
            }
        }
        while let Some(c) = b.poll_completion().unwrap() {
            idle = false;
            let Completion::Received {
                stream, head, len, ..
            } = c
            else {
                panic!("receiver got {c:?}")
            };
            buf.clear();
            b.take_received(head, len, &mut buf).unwrap();
            let n = got.entry(stream).or_default();
            let want = &expected[&stream][*n];
            assert_eq!(buf.len(), want.len(), "stream {stream} message {n}: length");
            assert!(buf == *want, "stream {stream} message {n}: content");
            *n += 1;
            received += 1;
        }
        if idle {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    assert!(b.poll_completion().unwrap().is_none(), "a duplicate delivery");
}

fn sizes_on_three_streams(sizes: &[usize]) -> Vec<(u32, usize)> {
    sizes
        .iter()
        .flat_map(|&len| (0..3).map(move |s| (s, len)))
        .collect()
}

#[test]
fn messages_arrive_once_in_order_per_stream_over_a_lossy_wire() {
    let (ha, hb) = lossy_pair(11);
    let (_, mut a) = attach(&ha.h);
    let (_, mut b) = attach(&hb.h);
    let (fa, _) = connect(&mut a, &mut b, "shm");
    let plan = sizes_on_three_streams(&[1, 1024, 64 << 10, 1 << 20, 8 << 20]);
    let t = Instant::now();
    transfer(&mut a, &mut b, fa, &plan);
    let (sa, sb) = (stats(&ha.h), stats(&hb.h));
    eprintln!(
        "27.2 MiB in {:?}; sender: {} packets, {} retransmits, {} RTOs; receiver: {} malformed dropped, {} dups",
        t.elapsed(),
        sa.packets_out,
        sa.retransmits,
        sa.rtos,
        sb.malformed,
        sb.dups_dropped
    );
    assert!(sa.retransmits > 0, "5% loss must cause retransmissions");
    assert!(
        sb.malformed > 0,
        "corrupted packets must be dropped by the checksum"
    );
    assert_eq!(sb.messages_delivered, plan.len() as u64);
}

#[test]
fn udp_loopback_small_messages() {
    let na = UdpNic::bind("127.0.0.1:0").unwrap();
    let nb = UdpNic::bind("127.0.0.1:0").unwrap();
    let addr_b = nb.local_addr().unwrap();
    let (ha, hb) = (host("udp-a", na), host("udp-b", nb));
    let (_, mut a) = attach(&ha.h);
    let (_, mut b) = attach(&hb.h);
    let (fa, _) = connect(&mut a, &mut b, &addr_b.to_string());
    transfer(&mut a, &mut b, fa, &sizes_on_three_streams(&[1, 1024, 64 << 10]));
}

/// Both hosts' engines in one dedicated group on one core, as `mq-bench-pony` runs them on
/// a 2-CPU machine: one thread polls both, and they exchange messages over UDP loopback
/// (every message crosses both engines, so both make progress on that one thread).
#[test]
fn two_hosts_engines_share_one_dedicated_thread() {
    let na = UdpNic::bind("127.0.0.1:0").unwrap();
    let nb = UdpNic::bind("127.0.0.1:0").unwrap();
    let addr_b = nb.local_addr().unwrap();
    let core = std::thread::available_parallelism().map_or(1, |n| n.get()) - 1;
    let spec = snap_runtime::GroupSpec {
        name: "two-hosts".into(),
        mode: snap_runtime::Mode::Dedicated,
        cores: vec![core],
        engines: vec![
            Box::new(PonyEngine::new("ded-a", Box::new(na), PonyConfig::default())),
            Box::new(PonyEngine::new("ded-b", Box::new(nb), PonyConfig::default())),
        ],
        compacting: snap_runtime::CompactingParams::default(),
        idle_poll: Duration::ZERO,
        microquanta_group: None,
    };
    let options = snap_runtime::RuntimeOptions {
        microquanta: false,
        ..Default::default()
    };
    let rt = snap_runtime::Runtime::start(vec![spec], options).unwrap();
    let status = rt.status();
    let threads: Vec<_> = status.groups.iter().flat_map(|g| &g.threads).collect();
    assert_eq!(threads.len(), 1, "{status:#?}");
    assert_eq!(threads[0].engines, ["ded-a", "ded-b"]);
    let (ha, hb) = (rt.engine("ded-a").unwrap(), rt.engine("ded-b").unwrap());
    let (_, mut a) = attach(&ha);
    let (_, mut b) = attach(&hb);
    let (fa, fb) = connect(&mut a, &mut b, &addr_b.to_string());
    transfer(&mut a, &mut b, fa, &sizes_on_three_streams(&[1, 1024, 64 << 10]));
    // And back the other way, on the accepted flow.
    transfer(&mut b, &mut a, fb, &sizes_on_three_streams(&[64, 9000]));
    let (sa, sb) = (stats(&ha), stats(&hb));
    assert_eq!(sb.messages_delivered, 9);
    assert_eq!(sa.messages_delivered, 6);
    drop(rt.shutdown());
}

/// Pony across a real link: each host's UDP socket is created inside its own network
/// namespace (a socket belongs to the namespace of the thread that makes it), the two joined
/// by a veth pair; the engines themselves run on ordinary runtime threads.
#[test]
fn pony_between_two_network_namespaces_over_veth() {
    if let Some(why) = snap_test_netns::skip_reason() {
        eprintln!("skipping the veth test: {why}");
        return;
    }
    let topo = snap_test_netns::Topology::new('p', 1500);
    let bind_in = |i: usize, addr: &'static str| {
        topo.spawn_in(i, move || UdpNic::bind(format!("{addr}:7100")).unwrap())
            .join()
            .expect("binding in the namespace")
    };
    let na = bind_in(0, snap_test_netns::ADDR_A);
    let nb = bind_in(1, snap_test_netns::ADDR_B);
    let (ha, hb) = (host("veth-a", na), host("veth-b", nb));
    let (_, mut a) = attach(&ha.h);
    let (_, mut b) = attach(&hb.h);
    let peer = format!("{}:7100", snap_test_netns::ADDR_B);
    let (fa, _) = connect(&mut a, &mut b, &peer);
    transfer(
        &mut a,
        &mut b,
        fa,
        &sizes_on_three_streams(&[1, 1024, 64 << 10, 1 << 20]),
    );
    let sb = stats(&hb.h);
    assert!(sb.messages_delivered >= 12, "{sb:?}");
    drop((ha, hb));
    drop(topo);
}

/// A region on the remote host: its bytes, and the memfd the test keeps to look inside.
fn make_region(len: usize, fill: impl Fn(usize) -> u8) -> SharedMem {
    let mem = SharedMem::create("test-region", len).unwrap();
    for i in 0..len {
        // SAFETY: i < len, the mapping is ours and nobody else touches it yet.
        unsafe { mem.as_ptr().add(i).write(fill(i)) };
    }
    mem
}

fn read_region(mem: &SharedMem, at: usize, len: usize) -> Vec<u8> {
    // Copied in: the remote engine wrote these bytes (snap_ipc::peer).
    let mut out = vec![0; len];
    mem.read_at(at, &mut out).unwrap();
    out
}

/// Reads into a fresh local chain; returns the bytes or the error.
fn do_read(
    app: &mut AppSession,
    cmd: impl FnOnce(u32) -> Command,
    cap: usize,
) -> Result<Vec<u8>, OpErrorCode> {
    let chain = app.pool().alloc_chain(cap).unwrap();
    app.submit(&cmd(chain.head.0)).unwrap();
    let Completion::ReadDone { result, .. } = wait(app, "ReadDone") else {
        panic!("expected ReadDone")
    };
    let mut out = Vec::new();
    match result {
        Ok(n) => {
            app.take_received(chain.head.0, n, &mut out).unwrap();
            Ok(out)
        }
        Err(e) => {
            app.pool().release_chain(BufIdx(chain.head.0)).unwrap();
            Err(e)
        }
    }
}

#[test]
fn one_sided_read_write_indirect_and_refusals() {
    let (ha, hb) = lossy_pair(21);
    let (_, mut a) = attach(&ha.h);
    let (sb, mut b) = attach(&hb.h);
    let (flow, _) = connect(&mut a, &mut b, "shm");

    // A 64 KiB data region registered the control-plane way (staged memfd + command)…
    let data = make_region(64 << 10, |i| (i * 7 % 251) as u8);
    let fd = data.as_fd().try_clone_to_owned().unwrap();
    hb.h.control::<PonyEngine, _>(move |e| e.stage_region_fd(sb, 42, fd))
        .unwrap()
        .unwrap();
    b.submit(&Command::RegisterRegion {
        cookie: 42,
        len: 64 << 10,
    })
    .unwrap();
    let Completion::RegionRegistered { region, key, .. } = wait(&mut b, "RegionRegistered") else {
        panic!("register failed")
    };
    // …and an indirection table in-process: entry 1 = (offset 1000, len 777).
    let table = make_region(64, |_| 0);
    // SAFETY: in bounds, ours.
    unsafe {
        table
            .as_ptr()
            .add(16)
            .cast::<[u8; 8]>()
            .write(1000u64.to_le_bytes());
        table
            .as_ptr()
            .add(24)
            .cast::<[u8; 4]>()
            .write(777u32.to_le_bytes());
    }
    let table_fd = table.as_fd().try_clone_to_owned().unwrap();
    let tg = hb
        .h
        .control::<PonyEngine, _>(move |e| e.register_region_local(sb, SharedMem::from_fd(table_fd).unwrap()))
        .unwrap()
        .unwrap();

    let read = |offset, len, key| {
        move |local| Command::Read {
            flow,
            region,
            key,
            offset,
            len,
            local,
            cookie: 5,
        }
    };
    // A read spanning many packets.
    let got = do_read(&mut a, read(100, 20_000, key), 20_000).unwrap();
    assert_eq!(got, read_region(&data, 100, 20_000));

    // A write spanning several packets, then read back through the memfd.
    let payload = content(9, 9, 12_345);
    let chain = a.pool().write_chain(&payload).unwrap();
    let write = |head, len, key| Command::Write {
        flow,
        region,
        key,
        offset: 30_000,
        head,
        len,
        cookie: 6,
    };
    a.submit(&write(chain.head.0, chain.len, key)).unwrap();
    assert_eq!(
        wait(&mut a, "WriteDone"),
        Completion::WriteDone {
            cookie: 6,
            result: Ok(())
        }
    );
    assert_eq!(read_region(&data, 30_000, payload.len()), payload);

    let indirect = |index, table_key| {
        move |local| Command::IndirectRead {
            flow,
            table: tg.region,
            table_key,
            index,
            region,
            key,
            local,
            cookie: 8,
        }
    };
    let got = do_read(&mut a, indirect(1, tg.key), 1024).unwrap();
    assert_eq!(got, read_region(&data, 1000, 777));

    // Refusals: out of bounds, forged key (read and write), table index out of range.
    assert_eq!(
        do_read(&mut a, read(60 << 10, 8 << 10, key), 8 << 10),
        Err(OpErrorCode::OutOfBounds)
    );
    assert_eq!(
        do_read(&mut a, read(0, 16, key ^ 1), 16),
        Err(OpErrorCode::AccessDenied)
    );
    assert_eq!(
        do_read(&mut a, indirect(4, tg.key), 16),
        Err(OpErrorCode::OutOfBounds)
    );
    let chain = a.pool().write_chain(b"forged").unwrap();
    a.submit(&write(chain.head.0, chain.len, key.wrapping_add(1)))
        .unwrap();
    assert_eq!(
        wait(&mut a, "WriteDone"),
        Completion::WriteDone {
            cookie: 6,
            result: Err(OpErrorCode::AccessDenied)
        }
    );
    // A peer probing region ids without the key: an id that exists and ids that do not
    // get the same completion, and B counts every probe as access_denied.
    for probed in [region, region + 1, region + 1000, u32::MAX] {
        let probe = move |local| Command::Read {
            flow,
            region: probed,
            key: key ^ 0xdead,
            offset: 0,
            len: 16,
            local,
            cookie: 7,
        };
        assert_eq!(
            do_read(&mut a, probe, 16),
            Err(OpErrorCode::AccessDenied),
            "region {probed}"
        );
    }
    let (sa, sb) = (stats(&ha.h), stats(&hb.h));
    assert_eq!(sb.ops_refused, 8);
    assert_eq!(sb.refusals.access_denied, 6);
    assert_eq!(sb.refusals.out_of_bounds, 2);
    assert_eq!(sb.ops_served, 3);
    assert_eq!(sa.ops_failed_remote, 8);
}

#[test]
fn an_app_that_vanishes_leaks_no_buffers() {
    let (ha, hb) = lossy_pair(31);
    let (ia, mut a) = attach(&ha.h);
    let (ib, mut b) = attach(&hb.h);
    let (flow, _) = connect(&mut a, &mut b, "shm");
    // b registers a region so that a has reads to leave in flight.
    let data = make_region(4096, |i| i as u8);
    let grant =
        hb.h.control::<PonyEngine, _>(move |e| e.register_region_local(ib, data))
            .unwrap()
            .unwrap();
    // a: sends and reads in flight, chains it allocated and never posted; b: messages it
    // received and never released.
    for i in 0..20 {
        a.send(flow, i % 3, &content(i, 0, 50_000), u64::from(i)).unwrap();
        let local = a.pool().alloc_chain(4096).unwrap();
        a.submit(&Command::Read {
            flow,
            region: grant.region,
            key: grant.key,
            offset: 0,
            len: 4096,
            local: local.head.0,
            cookie: 100 + u64::from(i),
        })
        .unwrap();
    }
    a.pool().alloc_chain(100_000).unwrap();
    let start = Instant::now();
    let mut received = 0;
    while received < 5 {
        assert!(start.elapsed() < DEADLINE);
        if let Some(Completion::Received { .. }) = b.wait_completion(Duration::from_millis(10)).unwrap() {
            received += 1;
        }
    }
    // Both apps go away without closing anything.
    assert!(ha
        .h
        .control_dyn(move |e| e.app_facing().unwrap().detach(ia))
        .unwrap());
    assert!(hb
        .h
        .control_dyn(move |e| e.app_facing().unwrap().detach(ib))
        .unwrap());
    // The ownerless flows still deliver what was sent (from buffers the engine holds,
    // zero-copy) and then close; once they are gone, every buffer is back.
    while stats(&ha.h).flows + stats(&hb.h).flows > 0 {
        assert!(start.elapsed() < DEADLINE, "flows of detached apps did not close");
        std::thread::sleep(Duration::from_millis(10));
    }
    for (app, name) in [(&a, "a"), (&b, "b")] {
        let s = app.pool().stats();
        assert_eq!(s.free, s.buffers, "{name}: pool not whole after detach");
        assert_eq!(app.pool().count_free().unwrap(), s.buffers, "{name}: free list");
    }
    assert_eq!(stats(&ha.h).sessions, 0);
    assert_eq!(stats(&hb.h).sessions, 0);
}

#[test]
fn a_dead_peer_host_fails_the_flow_instead_of_hanging() {
    let (ha, hb) = lossy_pair(41);
    let (_, mut a) = attach(&ha.h);
    let (_, mut b) = attach(&hb.h);
    let (flow, _) = connect(&mut a, &mut b, "shm");
    transfer(&mut a, &mut b, flow, &[(0, 1000)]);
    // The peer host dies: its runtime stops, its engine and end of the wire are dropped.
    drop(b);
    drop(hb.rt.shutdown());
    let t = Instant::now();
    a.send(flow, 0, &content(0, 1, 200_000), 77).unwrap();
    let mut errors = Vec::new();
    loop {
        match wait(&mut a, "a failure") {
            Completion::Error { cookie, code, .. } => errors.push((cookie, code)),
            Completion::FlowClosed { flow: f, .. } => {
                assert_eq!(f, flow);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(errors, vec![(77, OpErrorCode::Unreachable)]);
    let s = stats(&ha.h);
    eprintln!("flow failed after {:?} ({} RTOs)", t.elapsed(), s.rtos);
    assert_eq!(s.flows_failed, 1);
    assert_eq!(s.flows, 0);
}

#[test]
fn an_idle_flow_notices_a_dead_peer_host() {
    let (na, nb) = ShmWire::pair(ShmWireConfig::default()).unwrap();
    let mut cfg = PonyConfig::default();
    cfg.flow.idle_timeout = Some(Duration::from_millis(300));
    let (ha, hb) = (host_with("idle-a", na, cfg.clone()), host_with("idle-b", nb, cfg));
    let (_, mut a) = attach(&ha.h);
    let (_, mut b) = attach(&hb.h);
    let (flow, _) = connect(&mut a, &mut b, "shm");
    // Idle for several timeouts: heartbeats keep it up.
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(a.poll_completion().unwrap(), None);
    assert_eq!(stats(&ha.h).flows, 1);
    // The peer host dies while nothing is being sent.
    drop(b);
    drop(hb.rt.shutdown());
    let t = Instant::now();
    assert_eq!(
        wait(&mut a, "the flow to fail"),
        Completion::FlowClosed {
            flow,
            reason: CloseReason::PeerTimeout
        }
    );
    let waited = t.elapsed();
    assert!(waited < Duration::from_secs(2), "noticed after {waited:?}");
    let s = stats(&ha.h);
    assert_eq!((s.flows_failed, s.flows), (1, 0));
}
