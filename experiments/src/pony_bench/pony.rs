// SPDX-License-Identifier: GPL-2.0-only
//! Pony between two in-process hosts: host A's app (the measuring thread) opens a flow to
//! host B, whose app echoes every message back from its own thread. Ping-pong keeps one
//! message outstanding; throughput keeps a window; one-sided reads hit a region app B
//! registered.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use pony_engine::nic::{Nic, ShmWire, ShmWireConfig, UdpNic};
use pony_engine::{PonyConfig, PonyEngine};
use pony_express::app::{AppSession, Command, Completion, Completions, SessionError};
use pony_express::pool::{BufIdx, PoolError};
use snap_ipc::SharedMem;
use snap_runtime::{CompactingParams, Engine, EngineHandle, GroupSpec, Mode, Runtime, RuntimeOptions};

use crate::wakeup::{pin_to_cpu, thread_cpu_ns as own_thread_cpu_ns};

use super::{
    gettid, histogram, payload, record, thread_cpu_ns, AppWait, BenchConfig, Layout, Measured, OneSided, Row,
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

/// The in-process hosts' runtimes (one per host, or one for both when their engines share
/// a dedicated thread) and their engines' handles.
struct Hosts {
    runtimes: Vec<Runtime>,
    a: EngineHandle,
    b: EngineHandle,
}

fn mode_of(name: &str) -> Result<Mode> {
    Ok(match name {
        "dedicated" => Mode::Dedicated,
        "spreading" => Mode::Spreading,
        "compacting" => Mode::Compacting,
        other => bail!("unknown mode {other:?}"),
    })
}

fn group(
    name: &str,
    mode: Mode,
    cores: Vec<usize>,
    engines: Vec<Box<dyn Engine>>,
    cfg: &BenchConfig,
) -> GroupSpec {
    GroupSpec {
        name: name.into(),
        mode,
        cores,
        engines,
        compacting: CompactingParams::default(),
        idle_poll: match mode {
            Mode::Dedicated => Duration::ZERO,
            _ => cfg.idle_poll.unwrap_or(mode.default_idle_poll()),
        },
    }
}

/// Starts host A's and host B's Pony engines: each in its own runtime, or, for dedicated
/// mode with [`BenchConfig::shared_engine_core`], both in one dedicated group on host A's
/// core (one thread polls both engines; the other CPUs are left to the apps).
fn start_hosts(
    cfg: &BenchConfig,
    layout: &Layout,
    mode: Mode,
    nics: (Box<dyn Nic>, Box<dyn Nic>),
) -> Result<Hosts> {
    let options = RuntimeOptions {
        microquanta: cfg.microquanta,
        ..Default::default()
    };
    let (cores_a, cores_b) = layout.engine_cores(mode.as_str())?;
    let a = Box::new(PonyEngine::new("pony-a", nics.0, PonyConfig::default()));
    let b = Box::new(PonyEngine::new("pony-b", nics.1, PonyConfig::default()));
    let runtimes = if mode == Mode::Dedicated && cfg.shared_engine_core {
        let spec = group("pony-ab", mode, cores_a, vec![a, b], cfg);
        vec![Runtime::start(vec![spec], options).context("starting hosts A and B")?]
    } else {
        vec![
            Runtime::start(
                vec![group("pony-a", mode, cores_a, vec![a], cfg)],
                options.clone(),
            )
            .context("starting host A")?,
            Runtime::start(vec![group("pony-b", mode, cores_b, vec![b], cfg)], options)
                .context("starting host B")?,
        ]
    };
    let find = |name: &str| {
        runtimes
            .iter()
            .find_map(|rt| rt.engine(name))
            .with_context(|| format!("engine {name} missing from its runtime"))
    };
    let (a, b) = (find("pony-a")?, find("pony-b")?);
    Ok(Hosts { runtimes, a, b })
}

/// A loopback UDP NIC with room for a throughput window in its socket buffers.
fn udp_nic(mtu: usize) -> Result<UdpNic> {
    let nic = UdpNic::bind("127.0.0.1:0").context("binding a UDP socket on 127.0.0.1")?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(nic.socket());
    let bytes: libc::c_int = 8 << 20;
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: fd is a live socket; the option value is a c_int of the given size.
        // Best effort: the kernel caps it at rmem_max/wmem_max.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&bytes as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    Ok(nic.with_mtu(mtu))
}

fn attach(h: &EngineHandle, wait: AppWait) -> Result<(u64, AppSession)> {
    let completions = match wait {
        AppWait::Spin => Completions::Poll,
        AppWait::SpinThenBlock(_) => Completions::Block,
    };
    let (id, mut session) = h
        .control::<PonyEngine, _>(move |e| e.attach_local(completions))
        .map_err(|e| anyhow!("attach: {e}"))?
        .map_err(|e| anyhow!("attach: {e}"))?;
    if let AppWait::SpinThenBlock(spin) = wait {
        session.set_completion_spin(spin);
    }
    Ok((id, session))
}

/// The next completion within `timeout`: spinning, or the session's spin-then-block wait.
fn next(app: &mut AppSession, wait: AppWait, timeout: Duration) -> Result<Option<Completion>> {
    if let AppWait::SpinThenBlock(_) = wait {
        return Ok(app.wait_completion(timeout)?);
    }
    let start = Instant::now();
    loop {
        if let Some(c) = app.poll_completion()? {
            return Ok(Some(c));
        }
        if start.elapsed() >= timeout {
            return Ok(None);
        }
        std::hint::spin_loop();
    }
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
fn echo(
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

/// What the measuring thread needs to sample CPU time.
struct Probe<'a> {
    runtimes: &'a [Runtime],
    echo_tid: i32,
}

impl Probe<'_> {
    fn engine_ns(&self) -> u64 {
        self.runtimes
            .iter()
            .flat_map(|rt| rt.status().groups)
            .flat_map(|g| g.threads)
            .map(|t| thread_cpu_ns(t.tid))
            .sum()
    }

    /// (engine ns, app ns, when).
    fn sample(&self) -> (u64, u64, Instant) {
        let e = self.engine_ns();
        let a = own_thread_cpu_ns() + thread_cpu_ns(self.echo_tid);
        (e, a, Instant::now())
    }
}

fn measured(
    hist: hdrhistogram::Histogram<u64>,
    count: u64,
    first: (u64, u64, Instant),
    last: (u64, u64, Instant),
) -> Measured {
    Measured {
        hist,
        count,
        wall: last.2 - first.2,
        engine_ns: last.0.saturating_sub(first.0),
        app_ns: last.1.saturating_sub(first.1),
    }
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

fn ping_pong(
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
                Completion::Sent { .. } => {}
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
    Ok(measured(hist, iters as u64, first, probe.sample()))
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
    let mut measuring: Option<(u64, u64, Instant)> = None;
    let mut hist = histogram();
    let mut count = 0u64;
    let mut cookie = 0u64;
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
            Completion::Sent { .. } => {}
            other => bail!("throughput: unexpected {other:?}"),
        }
    };
    // Drain the window so the next point starts clean.
    while !sent_at.is_empty() {
        if let Completion::Received { head, len, .. } = wait(app, spin, "the window to drain")? {
            buf.clear();
            app.take_received(head, len, &mut buf)?;
            sent_at.pop_front();
        }
    }
    let first = measuring.context("measuring window never began")?;
    Ok(measured(hist, count, first, last))
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
    Ok(measured(hist, count, first, last))
}

/// Everything Pony measures in one mode: ping-pong rows, throughput rows, one-sided reads.
pub fn run_mode(cfg: &BenchConfig, layout: &Layout, mode: &str) -> Result<(Vec<Row>, OneSided)> {
    let m = mode_of(mode)?;
    let (nic_a, nic_b, peer): (Box<dyn Nic>, Box<dyn Nic>, String) = if cfg.shm_nic {
        let (a, b) = ShmWire::pair(ShmWireConfig::default()).context("shared-memory wire")?;
        (Box::new(a), Box::new(b), "shm".into())
    } else {
        let (a, b) = (udp_nic(cfg.mtu)?, udp_nic(cfg.mtu)?);
        let peer = b.local_addr()?.to_string();
        (Box::new(a), Box::new(b), peer)
    };
    let hosts = start_hosts(cfg, layout, m, (nic_a, nic_b))?;
    let spin = cfg.app_wait;
    let (_, mut a) = attach(&hosts.a, spin)?;
    let (sid_b, mut b) = attach(&hosts.b, spin)?;

    // Connect before the echo thread takes app B.
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
        peer: peer.clone(),
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
    let mem = SharedMem::create("pony-bench-region", region_bytes(cfg.read_bytes)).context("region memfd")?;
    let grant = hosts
        .b
        .control::<PonyEngine, _>(move |e| e.register_region_local(sid_b, mem))
        .map_err(|e| anyhow!("register region: {e}"))?
        .map_err(|e| anyhow!("register region: {e}"))?;

    let (core_a, core_b) = layout.app_cores();
    let stop = AtomicBool::new(false);
    let echo_tid = AtomicI32::new(0);
    let result = std::thread::scope(|s| {
        let echo_thread = s.spawn(|| echo(b, spin, core_b, &echo_tid, &stop));
        let client = s.spawn(|| -> Result<(Vec<Row>, OneSided)> {
            if let Some(c) = core_a {
                pin_to_cpu(c)?;
            }
            let t = Instant::now();
            while echo_tid.load(Ordering::Acquire) == 0 {
                if t.elapsed() > STUCK {
                    bail!("echo thread did not start");
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let probe = Probe {
                runtimes: &hosts.runtimes,
                echo_tid: echo_tid.load(Ordering::Acquire),
            };
            let mut rows = Vec::new();
            for &size in &cfg.sizes {
                let m = ping_pong(&mut a, flow, spin, size, cfg.iterations(size), &probe)
                    .with_context(|| format!("{mode}: ping-pong {size} B"))?;
                rows.push(m.row("pony", mode, "ping_pong", size, 1));
            }
            for &size in &cfg.throughput_sizes {
                let w = cfg.window_for(size);
                let m = throughput(&mut a, flow, spin, size, w, cfg.throughput_time, &probe)
                    .with_context(|| format!("{mode}: throughput {size} B"))?;
                rows.push(m.row("pony", mode, "throughput", size, w));
            }
            let read_window = cfg.window_for(cfg.read_bytes as usize);
            let m = one_sided(
                &mut a,
                flow,
                spin,
                grant.region,
                grant.key,
                cfg.read_bytes,
                read_window,
                cfg.throughput_time,
                &probe,
            )
            .with_context(|| format!("{mode}: one-sided reads"))?;
            let r = m.row("pony", mode, "read", cfg.read_bytes as usize, read_window);
            let o = OneSided {
                mode: mode.into(),
                read_bytes: cfg.read_bytes,
                window: read_window,
                reads_per_s: r.msgs_per_s,
                engine_cores: r.engine_cores,
                app_cores: r.app_cores,
                reads_per_s_per_core: r.msgs_per_s / r.engine_cores.max(1e-9),
            };
            Ok((rows, o))
        });
        let out = client.join().map_err(|_| anyhow!("client thread panicked"));
        stop.store(true, Ordering::Release);
        let echoed = echo_thread.join().map_err(|_| anyhow!("echo thread panicked"));
        let out = out??;
        echoed??;
        Ok(out)
    });
    drop(a);
    for rt in hosts.runtimes {
        drop(rt.shutdown());
    }
    result
}
