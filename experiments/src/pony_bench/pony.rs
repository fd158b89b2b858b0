// SPDX-License-Identifier: GPL-2.0-only
//! Pony between two in-process hosts: host A's app (the measuring thread) opens a flow to
//! host B, whose app echoes every message back from its own thread. Ping-pong keeps one
//! message outstanding; throughput keeps a window; one-sided reads hit a region app B
//! registered. Scaling runs `n` such pairs at once (an engine per pair on each host, each
//! pair with its own two apps and flow) and adds up their throughput.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use pony_engine::PonyEngine;
use pony_express::app::{AppSession, Command, Completion, SessionError};
use pony_express::pool::{BufIdx, PoolError};
use snap_ipc::SharedMem;
use snap_runtime::EngineHandle;

use crate::wakeup::pin_to_cpu;

use super::path::{NicKind, Path};
use super::setup::{attach, next, Hosts, Layout};
use super::{
    gettid, histogram, payload, record, AppWait, BenchConfig, Measured, OneSided, Point, Probe, Row, Snap,
};

/// Bounds every wait for one completion; only hangs hit it.
const STUCK: Duration = Duration::from_secs(10);
/// Bytes of app B's region at least (reads cycle through it).
const REGION_BYTES: usize = 64 << 10;

/// App B's region for reads of `read` bytes: a whole number of reads, at least four and
/// at least [`REGION_BYTES`], so every read of the cycle is in bounds.
fn region_bytes(read: u32) -> usize {
    let read = read.max(1) as usize;
    read * (REGION_BYTES / read).max(4)
}

fn wait(app: &mut AppSession, spin: AppWait, what: &str) -> Result<Completion> {
    next(app, spin, STUCK)?.with_context(|| format!("no completion within {STUCK:?} waiting for {what}"))
}

/// Whether a send failed only for now (pool or command ring full).
fn retryable(e: &SessionError) -> bool {
    matches!(
        e,
        SessionError::Pool(PoolError::Exhausted { .. }) | SessionError::Push(_)
    )
}

/// App B: echoes every message back on its flow and stream until `stop`.
pub(crate) fn echo(
    mut app: AppSession,
    spin: AppWait,
    core: Option<usize>,
    tid: &AtomicI32,
    stop: &AtomicBool,
) -> Result<()> {
    if let Some(c) = core {
        pin_to_cpu(c)?;
    }
    tid.store(gettid(), Ordering::Release);
    let mut buf = Vec::new();
    let mut pending: VecDeque<(u64, u32, Vec<u8>)> = VecDeque::new();
    while !stop.load(Ordering::Acquire) {
        while let Some((flow, stream, data)) = pending.front() {
            match app.send(*flow, *stream, data, 0) {
                Ok(_) => {
                    pending.pop_front();
                }
                Err(e) if retryable(&e) => break,
                Err(e) => return Err(e).context("echo send"),
            }
        }
        let timeout = if pending.is_empty() {
            Duration::from_millis(5)
        } else {
            Duration::from_micros(20)
        };
        let Some(c) = next(&mut app, spin, timeout)? else {
            continue;
        };
        match c {
            Completion::Received {
                flow,
                stream,
                head,
                len,
            } => {
                buf.clear();
                app.take_received(head, len, &mut buf)?;
                if !pending.is_empty() {
                    pending.push_back((flow, stream, buf.clone()));
                    continue;
                }
                match app.send(flow, stream, &buf, 0) {
                    Ok(_) => {}
                    Err(e) if retryable(&e) => pending.push_back((flow, stream, buf.clone())),
                    Err(e) => return Err(e).context("echo send"),
                }
            }
            Completion::Error { code, detail, .. } => bail!("echo app: error {code:?} ({detail})"),
            Completion::FlowClosed { .. } => return Ok(()),
            _ => {}
        }
    }
    Ok(())
}

/// Sends `data` on `flow`, retrying while the pool or ring is full.
fn send(app: &mut AppSession, flow: u64, data: &[u8], cookie: u64) -> Result<()> {
    let start = Instant::now();
    loop {
        match app.send(flow, 0, data, cookie) {
            Ok(_) => return Ok(()),
            Err(e) if retryable(&e) && start.elapsed() < STUCK => std::thread::yield_now(),
            Err(e) => return Err(e).context("send"),
        }
    }
}

pub(crate) fn ping_pong(
    app: &mut AppSession,
    flow: u64,
    spin: AppWait,
    size: usize,
    iters: usize,
    probe: &Probe,
) -> Result<Measured> {
    let data = payload(size);
    let mut buf = Vec::new();
    let warm = (iters / 10).max(5);
    let mut hist = histogram();
    let mut first = probe.sample();
    let mut sends_done = 0u64;
    for i in 0..warm + iters {
        if i == warm {
            first = probe.sample();
        }
        let t0 = Instant::now();
        send(app, flow, &data, i as u64)?;
        loop {
            match wait(app, spin, "an echo")? {
                Completion::Received { head, len, .. } => {
                    buf.clear();
                    app.take_received(head, len, &mut buf)?;
                    break;
                }
                Completion::Sent { .. } => sends_done += 1,
                other => bail!("ping-pong: unexpected {other:?}"),
            }
        }
        if i >= warm {
            record(&mut hist, t0.elapsed());
        }
        if buf.len() != size {
            bail!("echo of {} bytes for a {size}-byte message", buf.len());
        }
    }
    let last = probe.sample();
    // The Sents still to come (each waits for the peer's ACK), so the next test starts clean.
    while sends_done < (warm + iters) as u64 {
        match wait(app, spin, "the last Sents")? {
            Completion::Sent { .. } => sends_done += 1,
            other => bail!("ping-pong: unexpected {other:?} after the last echo"),
        }
    }
    Ok(Measured::between(hist, iters as u64, &first, &last))
}

fn throughput(
    app: &mut AppSession,
    flow: u64,
    spin: AppWait,
    size: usize,
    window: usize,
    time: Duration,
    probe: &Probe,
) -> Result<Measured> {
    let data = payload(size);
    let mut buf = Vec::new();
    let mut sent_at: VecDeque<Instant> = VecDeque::new();
    let warm = (time / 5).min(Duration::from_millis(300));
    let start = Instant::now();
    let mut measuring: Option<Snap> = None;
    let mut hist = histogram();
    let mut count = 0u64;
    let mut cookie = 0u64;
    let mut sends_done = 0u64;
    let last = loop {
        let now = Instant::now();
        if measuring.is_none() && now - start >= warm {
            measuring = Some(probe.sample());
        }
        if now - start >= warm + time {
            break probe.sample();
        }
        while sent_at.len() < window {
            match app.send(flow, 0, &data, cookie) {
                Ok(_) => {
                    sent_at.push_back(Instant::now());
                    cookie += 1;
                }
                Err(e) if retryable(&e) => break,
                Err(e) => return Err(e).context("send"),
            }
        }
        let Some(c) = next(app, spin, Duration::from_millis(2))? else {
            continue;
        };
        match c {
            Completion::Received { head, len, .. } => {
                buf.clear();
                app.take_received(head, len, &mut buf)?;
                let t0 = sent_at.pop_front().context("an echo nobody sent")?;
                if measuring.is_some() {
                    record(&mut hist, t0.elapsed());
                    count += 1;
                }
            }
            Completion::Sent { .. } => sends_done += 1,
            other => bail!("throughput: unexpected {other:?}"),
        }
    };
    // Drain the window, echoes and the Sents of our messages (a Sent waits for the peer's
    // ACK, which may come after the echo), so the next point starts clean.
    while !sent_at.is_empty() || sends_done < cookie {
        match wait(app, spin, "the window to drain")? {
            Completion::Received { head, len, .. } => {
                buf.clear();
                app.take_received(head, len, &mut buf)?;
                sent_at.pop_front();
            }
            Completion::Sent { .. } => sends_done += 1,
            other => bail!("throughput: unexpected {other:?} while draining"),
        }
    }
    let first = measuring.context("measuring window never began")?;
    Ok(Measured::between(hist, count, &first, &last))
}

#[allow(clippy::too_many_arguments)]
fn one_sided(
    app: &mut AppSession,
    flow: u64,
    spin: AppWait,
    region: u32,
    key: u64,
    read_bytes: u32,
    window: usize,
    time: Duration,
    probe: &Probe,
) -> Result<Measured> {
    let mut buf = Vec::new();
    let mut outstanding = 0usize;
    let mut offset = 0u64;
    let warm = (time / 5).min(Duration::from_millis(300));
    let start = Instant::now();
    let mut measuring = None;
    let mut hist = histogram();
    let mut count = 0u64;
    let mut issued: std::collections::HashMap<u32, Instant> = std::collections::HashMap::new();
    let last = loop {
        let now = Instant::now();
        if measuring.is_none() && now - start >= warm {
            measuring = Some(probe.sample());
        }
        if now - start >= warm + time {
            break probe.sample();
        }
        while outstanding < window {
            let Ok(chain) = app.pool().alloc_chain(read_bytes as usize) else {
                break;
            };
            let head = chain.head.0;
            let cmd = Command::Read {
                flow,
                region,
                key,
                offset,
                len: read_bytes,
                local: head,
                cookie: u64::from(head),
            };
            offset = (offset + u64::from(read_bytes)) % (region_bytes(read_bytes) as u64);
            if let Err(e) = app.post(&cmd) {
                app.pool().release_chain(BufIdx(head))?;
                if retryable(&e) {
                    break;
                }
                return Err(e).context("posting a read");
            }
            issued.insert(head, Instant::now());
            outstanding += 1;
        }
        app.kick();
        let Some(c) = next(app, spin, Duration::from_millis(2))? else {
            continue;
        };
        match c {
            Completion::ReadDone { cookie, result } => {
                let head = cookie as u32;
                let n = result.map_err(|e| anyhow!("read failed: {e:?}"))?;
                buf.clear();
                app.take_received(head, n, &mut buf)?;
                outstanding -= 1;
                let t0 = issued.remove(&head).context("a read nobody issued")?;
                if measuring.is_some() {
                    record(&mut hist, t0.elapsed());
                    count += 1;
                }
            }
            other => bail!("one-sided: unexpected {other:?}"),
        }
    };
    while outstanding > 0 {
        if let Completion::ReadDone { cookie, result } = wait(app, spin, "reads to drain")? {
            let n = result.map_err(|e| anyhow!("read failed: {e:?}"))?;
            buf.clear();
            app.take_received(cookie as u32, n, &mut buf)?;
            outstanding -= 1;
        }
    }
    let first = measuring.context("measuring window never began")?;
    Ok(Measured::between(hist, count, &first, &last))
}

/// One engine pair's apps, connected: A's session and its flow to B, B's session (which
/// accepted it) and its session id.
pub(crate) struct Connected {
    pub(crate) a: AppSession,
    pub(crate) b: AppSession,
    pub(crate) flow: u64,
    pub(crate) sid_b: u64,
}

pub(crate) fn connect(ha: &EngineHandle, hb: &EngineHandle, peer: &str, spin: AppWait) -> Result<Connected> {
    let (_, mut a) = attach(ha, spin)?;
    let (sid_b, mut b) = attach(hb, spin)?;
    b.submit(&Command::Listen {
        cookie: 7,
        service: 0,
    })?;
    match wait(&mut b, spin, "Listening")? {
        Completion::Listening { .. } => {}
        other => bail!("listen: {other:?}"),
    }
    a.submit(&Command::OpenFlow {
        cookie: 1,
        peer: peer.to_string(),
        service: 0,
    })?;
    let flow = match wait(&mut a, spin, "FlowOpened")? {
        Completion::FlowOpened { result: Ok(f), .. } => f,
        other => bail!("opening a flow to {peer}: {other:?}"),
    };
    match wait(&mut b, spin, "FlowAccepted")? {
        Completion::FlowAccepted { .. } => {}
        other => bail!("accept: {other:?}"),
    }
    Ok(Connected { a, b, flow, sid_b })
}

/// `n` engine pairs on `nic` in `mode`, each with its apps connected.
fn start(
    cfg: &BenchConfig,
    layout: &Layout,
    path: &Path,
    nic: NicKind,
    mode: &str,
    n: usize,
) -> Result<(Hosts, Vec<Connected>)> {
    let nics = (0..n)
        .map(|i| nic.open_pair(path, cfg.mtu, i))
        .collect::<Result<Vec<_>>>()
        .with_context(|| format!("opening {} NICs", nic.name()))?;
    let peers: Vec<String> = nics.iter().map(|p| p.peer.clone()).collect();
    let hosts = Hosts::start(cfg, layout, mode, nics)?;
    let conns = hosts
        .pairs
        .iter()
        .zip(&peers)
        .map(|((a, b), peer)| connect(a, b, peer, cfg.app_wait))
        .collect::<Result<Vec<_>>>();
    match conns {
        Ok(c) => Ok((hosts, c)),
        Err(e) => {
            hosts.shutdown();
            Err(e)
        }
    }
}

/// Waits until an echo thread has published its tid.
fn tid_of(t: &AtomicI32) -> Result<i32> {
    let start = Instant::now();
    loop {
        match t.load(Ordering::Acquire) {
            0 if start.elapsed() > STUCK => bail!("an app thread did not start"),
            0 => std::thread::sleep(Duration::from_millis(1)),
            tid => return Ok(tid),
        }
    }
}

/// Everything Pony measures on one NIC in one mode with one engine per host: ping-pong
/// rows, throughput rows, one-sided reads (if [`BenchConfig::one_sided`]).
pub fn run_suite(
    cfg: &BenchConfig,
    layout: &Layout,
    path: &Path,
    nic: NicKind,
    mode: &str,
) -> Result<(Vec<Row>, Option<OneSided>)> {
    let (hosts, mut conns) = start(cfg, layout, path, nic, mode, 1)?;
    let Connected {
        mut a,
        b,
        flow,
        sid_b,
    } = conns.pop().context("no pair")?;
    let spin = cfg.app_wait;
    let mem = SharedMem::create("pony-bench-region", region_bytes(cfg.read_bytes)).context("region memfd")?;
    let grant = hosts.pairs[0]
        .1
        .control::<PonyEngine, _>(move |e| e.register_region_local(sid_b, mem))
        .map_err(|e| anyhow!("register region: {e}"))?
        .map_err(|e| anyhow!("register region: {e}"))?;
    let point = |test, msg_bytes, window| Point {
        transport: "pony",
        nic: nic.name(),
        path: nic.path_name(path),
        mode,
        test,
        msg_bytes,
        window,
        engines: 1,
    };

    let (core_a, core_b) = layout.app_cores();
    let stop = AtomicBool::new(false);
    let echo_tid = AtomicI32::new(0);
    let result = std::thread::scope(|s| {
        let echo_thread = s.spawn(|| echo(b, spin, core_b, &echo_tid, &stop));
        let client = s.spawn(|| -> Result<(Vec<Row>, Option<OneSided>)> {
            if let Some(c) = core_a {
                pin_to_cpu(c)?;
            }
            let probe = Probe::new(hosts.engine_tids(), vec![gettid(), tid_of(&echo_tid)?]);
            let mut rows = Vec::new();
            for &size in &cfg.sizes {
                let m = ping_pong(&mut a, flow, spin, size, cfg.iterations(size), &probe)
                    .with_context(|| format!("{mode}: ping-pong {size} B"))?;
                rows.push(m.row(point("ping_pong", size, 1)));
            }
            for &size in &cfg.throughput_sizes {
                let w = cfg.window_for(size);
                let m = throughput(&mut a, flow, spin, size, w, cfg.throughput_time, &probe)
                    .with_context(|| format!("{mode}: throughput {size} B"))?;
                rows.push(m.row(point("throughput", size, w)));
            }
            if !cfg.one_sided {
                return Ok((rows, None));
            }
            let m = one_sided(
                &mut a,
                flow,
                spin,
                grant.region,
                grant.key,
                cfg.read_bytes,
                cfg.window,
                cfg.throughput_time,
                &probe,
            )
            .with_context(|| format!("{mode}: one-sided reads"))?;
            let r = m.row(point("read", cfg.read_bytes as usize, cfg.window));
            let o = OneSided {
                mode: mode.into(),
                nic: nic.name().into(),
                read_bytes: cfg.read_bytes,
                window: cfg.window,
                reads_per_s: r.msgs_per_s,
                engine_cores: r.engine_cores,
                app_cores: r.app_cores,
                reads_per_s_per_core: r.msgs_per_s / r.engine_cores.max(1e-9),
            };
            Ok((rows, Some(o)))
        });
        let out = client.join().map_err(|_| anyhow!("client thread panicked"));
        stop.store(true, Ordering::Release);
        let echoed = echo_thread.join().map_err(|_| anyhow!("echo thread panicked"));
        let out = out??;
        echoed??;
        Ok(out)
    });
    drop(a);
    hosts.shutdown();
    result
}

/// `n` engines per host at once, each pair with its own client and echo app and flow, all
/// keeping a window of [`BenchConfig::scaling_bytes`] messages for the same time: one row
/// with their aggregate msgs/s and Gbps, and the CPU time and context switches of every
/// engine and app thread over the common window.
pub fn run_scaling(
    cfg: &BenchConfig,
    layout: &Layout,
    path: &Path,
    nic: NicKind,
    mode: &str,
    n: usize,
) -> Result<Row> {
    eprintln!(
        "mq-bench-pony: pony over {}, {mode}, {n} engines per host",
        nic.name()
    );
    let (hosts, conns) = start(cfg, layout, path, nic, mode, n)?;
    let spin = cfg.app_wait;
    let size = cfg.scaling_bytes;
    let window = cfg.window_for(size);
    let time = cfg.throughput_time;
    let warm = (time / 5).min(Duration::from_millis(300));
    let (core_a, core_b) = layout.app_cores();
    let stop = AtomicBool::new(false);
    let tids: Vec<(AtomicI32, AtomicI32)> = (0..n).map(|_| (AtomicI32::new(0), AtomicI32::new(0))).collect();
    // Clients and the coordinator start the window together.
    let go = Barrier::new(n + 1);
    let mut sessions = Vec::new();
    let result = std::thread::scope(|s| -> Result<Row> {
        let mut echoes = Vec::new();
        let mut clients = Vec::new();
        for (c, (ta, tb)) in conns.into_iter().zip(&tids) {
            let Connected { mut a, b, flow, .. } = c;
            let (stop, go) = (&stop, &go);
            echoes.push(s.spawn(move || echo(b, spin, core_b, tb, stop)));
            clients.push(s.spawn(move || -> Result<(Measured, AppSession)> {
                ta.store(gettid(), Ordering::Release);
                // Everything that can fail comes after the barrier, so nobody waits forever.
                go.wait();
                if let Some(c) = core_a {
                    pin_to_cpu(c)?;
                }
                let m = throughput(&mut a, flow, spin, size, window, time, &Probe::clock())?;
                Ok((m, a))
            }));
        }
        let app_tids = tids
            .iter()
            .map(|(ta, tb)| Ok([tid_of(ta)?, tid_of(tb)?]))
            .collect::<Result<Vec<_>>>();
        let probe = app_tids
            .as_ref()
            .ok()
            .map(|t| Probe::new(hosts.engine_tids(), t.iter().flatten().copied().collect()));
        // Released whatever happened, so that the clients finish and the scope can end.
        go.wait();
        let measured = probe.map(|probe| {
            std::thread::sleep(warm);
            let first = probe.sample();
            std::thread::sleep(time);
            (first, probe.sample())
        });
        let mut hist = histogram();
        let mut count = 0;
        let mut failed = None;
        for c in clients {
            match c
                .join()
                .map_err(|_| anyhow!("client thread panicked"))
                .and_then(|r| r)
            {
                Ok((m, a)) => {
                    // No early return before `stop`: the echo threads would never end.
                    if let Err(e) = hist.add(&m.hist) {
                        failed = Some(anyhow!("merging histograms: {e}"));
                    }
                    count += m.count;
                    sessions.push(a);
                }
                Err(e) => failed = Some(e),
            }
        }
        stop.store(true, Ordering::Release);
        for e in echoes {
            e.join().map_err(|_| anyhow!("echo thread panicked"))??;
        }
        if let Some(e) = failed {
            return Err(e).with_context(|| format!("{mode}: scaling to {n} engines"));
        }
        let (first, last) = match measured {
            Some(m) => m,
            None => return Err(app_tids.err().unwrap_or_else(|| anyhow!("no app threads"))),
        };
        // Each client counted its own window of `time`, which the coordinator's overlaps.
        let mut m = Measured::between(hist, count, &first, &last);
        m.wall = time;
        Ok(m.row(Point {
            transport: "pony",
            nic: nic.name(),
            path: nic.path_name(path),
            mode,
            test: "throughput",
            msg_bytes: size,
            window,
            engines: n,
        }))
    });
    drop(sessions);
    hosts.shutdown();
    result
}
