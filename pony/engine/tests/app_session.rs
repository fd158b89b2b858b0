//! An app session across two real processes. The test binary re-executes itself as the
//! app (role chosen by an environment variable); the parent plays the engine.
//!
//! The child receives the session's descriptors over an inherited Unix socket, registers
//! two memory regions (a data region and an indirection table) by sending their memfds,
//! writes an 8 MiB message into a pool chain and posts a Send. The parent reads the
//! message in place and checks every byte, checks region refusals and an indirect read,
//! and, in the crash variant, SIGKILLs the child mid-way and shows that reclaim returns
//! every buffer.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command as Process};
use std::time::{Duration, Instant};

use pony_engine::regions::{Refusals, RegionGrant, RegionSpan, Regions, TABLE_ENTRY_LEN};
use pony_engine::session::{Accepted, EngineSession};
use pony_express::app::{AppSession, Command, Completion, OpErrorCode, SessionShape};
use pony_express::pool::PoolShape;
use rustix::io::{fcntl_setfd, FdFlags};
use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
use snap_ipc::control::protocol::{recv, send};
use snap_ipc::SharedMem;

/// Set in the child's environment: `<role>:<socket fd>`.
const ROLE_VAR: &str = "PONY_APP_SESSION_CHILD";
const MSG_LEN: usize = 8 << 20;
const DATA_LEN: usize = 64 << 10;
const TIMEOUT: Duration = Duration::from_secs(60);
const APP: u64 = 1;

fn msg_byte(i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 11)) as u8
}

fn data_byte(i: usize) -> u8 {
    (i as u8) ^ 0x5a
}

/// Table entries the child writes: (offset, len) into the data region.
const ENTRIES: [(u64, u32); 3] = [(0, 16), (40_000, 1000), (65_000, 536)];

fn shape() -> SessionShape {
    SessionShape {
        ring_capacity: 64,
        pool: PoolShape::default(),
    }
}

fn region_with(bytes: &[u8]) -> SharedMem {
    let m = SharedMem::create("pony-test-region", bytes.len()).unwrap();
    // SAFETY: fresh mapping of bytes.len() bytes, not shared yet.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), m.as_ptr(), bytes.len()) };
    m
}

fn wait_for(app: &mut AppSession, what: impl Fn(&Completion) -> bool) -> Completion {
    let c = app
        .wait_completion(TIMEOUT)
        .unwrap()
        .expect("completion before timeout");
    assert!(what(&c), "unexpected completion {c:?}");
    c
}

/// The app role. In the parent's test run this is a no-op that passes.
#[test]
fn child_app() {
    let Ok(spec) = std::env::var(ROLE_VAR) else {
        return;
    };
    let (role, fd) = spec.split_once(':').expect("role:fd");
    // SAFETY: the parent passed this descriptor across exec and nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd.parse().expect("fd number")) };
    let mut buf = Vec::new();
    let mut fds = Vec::new();
    for _ in ["channel", "pool"] {
        fds.extend(
            recv::<String>(sock.as_fd(), &mut buf)
                .unwrap()
                .expect("session fds")
                .fds,
        );
    }
    let mut app = AppSession::from_fds(fds, None).expect("validated attach");

    // Regions: data and table, sent as memfds; registered by command, in order.
    let data: Vec<u8> = (0..DATA_LEN).map(data_byte).collect();
    let mut table = Vec::new();
    for (off, len) in ENTRIES {
        table.extend_from_slice(&off.to_le_bytes());
        table.extend_from_slice(&len.to_le_bytes());
        table.extend_from_slice(&[0; 4]);
    }
    let (data_mem, table_mem) = (region_with(&data), region_with(&table));
    send(sock.as_fd(), &"regions", &[data_mem.as_fd(), table_mem.as_fd()]).unwrap();
    app.submit(&Command::RegisterRegion {
        cookie: 1,
        len: DATA_LEN as u64,
    })
    .unwrap();
    app.submit(&Command::RegisterRegion {
        cookie: 2,
        len: table.len() as u64,
    })
    .unwrap();
    for cookie in [1, 2] {
        wait_for(
            &mut app,
            |c| matches!(c, Completion::RegionRegistered { cookie: k, .. } if *k == cookie),
        );
    }

    // The 8 MiB message: written once, into the pool.
    let msg: Vec<u8> = (0..MSG_LEN).map(msg_byte).collect();
    app.send(10, 1, &msg, 77).unwrap();
    match role {
        "send" => {
            wait_for(&mut app, |c| *c == Completion::Sent { cookie: 77 });
            assert_eq!(app.pool().stats().free, app.pool().shape().buffers);
        }
        "die" => {
            // Hold more buffers, then tell the parent we are ready to be killed.
            let _leak = app.pool().write_chain(&[1u8; 100_000]).unwrap();
            send(sock.as_fd(), &"ready", &[]).unwrap();
            std::thread::sleep(TIMEOUT * 2);
            panic!("not killed");
        }
        other => panic!("unknown role {other}"),
    }
}

/// Starts the child app with one end of a socket pair; returns it and our end.
fn spawn(role: &str) -> (Child, OwnedFd) {
    let (ours, theirs) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    fcntl_setfd(&theirs, FdFlags::empty()).unwrap();
    let child = Process::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_app", "--nocapture", "--test-threads=1"])
        .env(ROLE_VAR, format!("{role}:{}", theirs.as_raw_fd()))
        .spawn()
        .expect("spawn child");
    drop(theirs);
    (child, ours)
}

/// The engine side up to the accepted Send: hands out the session, registers the regions
/// the child sends, and returns the Send's chain.
fn serve_until_send(
    child: &mut Child,
    sock: &OwnedFd,
    eng: &mut EngineSession,
    fds: Vec<OwnedFd>,
    regions: &mut Regions,
) -> (Accepted, Vec<RegionGrant>) {
    // The control protocol carries at most 4 descriptors per message: channel, then pool.
    let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
    send(sock.as_fd(), &"channel", &borrowed[..4]).unwrap();
    send(sock.as_fd(), &"pool", &borrowed[4..]).unwrap();
    drop(fds);
    let mut buf = Vec::new();
    let got = recv::<String>(sock.as_fd(), &mut buf)
        .unwrap()
        .expect("region fds");
    let mut region_fds: VecDeque<OwnedFd> = got.fds.into();
    let mut grants = Vec::new();
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for Send");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("child exited early: {status}");
        }
        let Some(acc) = eng.next_command().unwrap() else {
            std::thread::yield_now();
            continue;
        };
        match acc.cmd {
            Command::RegisterRegion { cookie, len } => {
                let fd = region_fds.pop_front().expect("a memfd per registration");
                let g = regions.register(APP, fd, Some(len)).unwrap();
                eng.complete(Completion::RegionRegistered {
                    cookie,
                    region: g.region,
                    key: g.key,
                    len: g.len,
                });
                grants.push(g);
            }
            Command::Send { .. } => return (acc, grants),
            other => panic!("unexpected command {other:?}"),
        }
    }
}

#[test]
fn app_process_sends_8_mib_engine_copies_it_in() {
    if std::env::var_os(ROLE_VAR).is_some() {
        return;
    }
    let (mut eng, fds) = EngineSession::create(shape(), None).unwrap();
    let (mut child, sock) = spawn("send");
    let mut regions = Regions::new();
    let (acc, grants) = serve_until_send(&mut child, &sock, &mut eng, fds, &mut regions);
    let Command::Send {
        flow: 10,
        stream: 1,
        len,
        cookie: 77,
        ..
    } = acc.cmd
    else {
        panic!("{acc:?}")
    };
    assert_eq!(len as usize, MSG_LEN);
    let id = acc.chain.unwrap();
    let snap = eng.chain(id).unwrap();
    assert_eq!(snap.len() as usize, MSG_LEN);
    // The engine copies the app's buffers in (never borrows them), once.
    let mut got = Vec::new();
    snap.read_into(eng.pool(), &mut got);
    assert_eq!(got.len(), MSG_LEN);
    for (at, &b) in got.iter().enumerate() {
        assert_eq!(b, msg_byte(at), "byte {at}");
    }
    eng.finish_chain(id).unwrap();
    eng.complete(Completion::Sent { cookie: 77 });

    let status = child.wait().unwrap();
    assert!(status.success(), "child failed: {status}");
    assert_eq!(eng.pool().stats().free, eng.pool().shape().buffers);

    // The app's regions (their memfds outlive the app): refusals are errors and counted.
    let [data, table] = grants[..] else {
        panic!("{grants:?}")
    };
    assert_eq!((data.len, table.len), (DATA_LEN as u64, 3 * TABLE_ENTRY_LEN));
    let refused = |r: Result<RegionSpan<'_>, OpErrorCode>| r.unwrap_err();
    assert_eq!(
        refused(regions.check(data.region, !data.key, 0, 1)),
        OpErrorCode::AccessDenied
    );
    assert_eq!(
        refused(regions.check(table.region, data.key, 0, 1)),
        OpErrorCode::AccessDenied
    );
    assert_eq!(
        refused(regions.check(99, data.key, 0, 1)),
        OpErrorCode::AccessDenied
    );
    let oob = [
        (DATA_LEN as u64, 1),
        (DATA_LEN as u64 - 10, 11),
        (u64::MAX, 1),
        (1, u64::MAX),
        (u64::MAX, u64::MAX),
    ];
    for (off, len) in oob {
        assert_eq!(
            refused(regions.check(data.region, data.key, off, len)),
            OpErrorCode::OutOfBounds,
            "{off}+{len}"
        );
    }
    assert_eq!(
        refused(regions.indirect(table.region, table.key, 3, data.region, data.key)),
        OpErrorCode::OutOfBounds
    );
    assert_eq!(
        refused(regions.indirect(table.region, table.key, u64::MAX, data.region, data.key)),
        OpErrorCode::OutOfBounds
    );
    assert_eq!(
        regions.refusals(),
        Refusals {
            access_denied: 3,
            out_of_bounds: 7
        }
    );

    // Accepted accesses see the app's bytes; indirect reads resolve through the table.
    let span = regions.check(data.region, data.key, 100, 50).unwrap();
    assert_eq!(span.to_vec(), (100..150).map(data_byte).collect::<Vec<_>>());
    for (i, (off, len)) in ENTRIES.into_iter().enumerate() {
        let got = regions
            .indirect(table.region, table.key, i as u64, data.region, data.key)
            .unwrap()
            .to_vec();
        let want: Vec<u8> = (off as usize..off as usize + len as usize)
            .map(data_byte)
            .collect();
        assert_eq!(got, want, "entry {i}");
    }
    assert_eq!(
        refused(regions.indirect(table.region, table.key, 0, data.region, !data.key)),
        OpErrorCode::AccessDenied
    );
    assert_eq!(regions.remove_all_of(APP), 2);
}

#[test]
fn killed_app_leaks_nothing() {
    if std::env::var_os(ROLE_VAR).is_some() {
        return;
    }
    let (mut eng, fds) = EngineSession::create(shape(), None).unwrap();
    let n = eng.pool().shape().buffers;
    let (mut child, sock) = spawn("die");
    let mut regions = Regions::new();
    let (acc, _grants) = serve_until_send(&mut child, &sock, &mut eng, fds, &mut regions);
    let mut buf = Vec::new();
    let ready = recv::<String>(sock.as_fd(), &mut buf).unwrap().expect("ready");
    assert_eq!(ready.msg, "ready");
    // The app holds the 8 MiB chain (now the engine's) and a 100 KB chain of its own.
    assert!(eng.pool().stats().free < n - 4096 - 48);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let stats = eng.reclaim();
    assert_eq!(stats.held, 4096, "the in-flight Send's buffers stay held");
    assert_eq!(stats.free, n - 4096);
    assert_eq!(regions.remove_all_of(APP), 2);
    eng.finish_chain(acc.chain.unwrap()).unwrap();
    assert_eq!(eng.pool().stats().free, n);
    assert_eq!(eng.pool().count_free().unwrap(), n);
}
