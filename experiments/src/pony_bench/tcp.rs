// SPDX-License-Identifier: GPL-2.0-only
//! The Linux TCP baseline on the same path in the same run: our own echo (a server thread in
//! host B's namespace echoing length-prefixed messages; a client in host A's doing ping-pong,
//! and windowed throughput with a writer and a reader thread), and `sockperf` ping-pong at
//! 64 B when it is on PATH (its server started in B's namespace, its client in A's).
//! Blocking sockets with TCP_NODELAY, like the apps blocking on Pony's doorbells. Context
//! switches: per-thread counters on our threads, like Pony's; sockperf's from getrusage.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::wakeup::pin_to_cpu;

use super::path::Path;
use super::{gettid, histogram, payload, record, BenchConfig, Layout, Measured, Point, Probe, Row};
use crate::thread_counters::Counts;

fn read_msg(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut len = [0u8; 4];
    match s.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    buf.resize(u32::from_le_bytes(len) as usize, 0);
    s.read_exact(buf)?;
    Ok(true)
}

fn write_msg(s: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    s.write_all(&(data.len() as u32).to_le_bytes())?;
    s.write_all(data)
}

/// Echoes messages on every connection, one at a time, until the client closes.
fn serve(listener: TcpListener, core: Option<usize>, tid: &AtomicI32, connections: usize) -> Result<()> {
    // The listener was made in B's namespace: accepted connections are B's too.
    if let Some(c) = core {
        pin_to_cpu(c)?;
    }
    tid.store(gettid(), Ordering::Release);
    let mut buf = Vec::new();
    for _ in 0..connections {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        while read_msg(&mut s, &mut buf)? {
            write_msg(&mut s, &buf)?;
        }
    }
    Ok(())
}

fn connect(addr: std::net::SocketAddr) -> Result<TcpStream> {
    let s = TcpStream::connect(addr).context("connecting to the echo server")?;
    s.set_nodelay(true)?;
    Ok(s)
}

fn ping_pong(s: &mut TcpStream, size: usize, iters: usize, server_tid: i32) -> Result<Measured> {
    let data = payload(size);
    let mut buf = Vec::new();
    let warm = (iters / 10).max(5);
    let mut hist = histogram();
    let probe = Probe::new(Vec::new(), vec![gettid(), server_tid]);
    let sample = || probe.sample();
    let mut first = sample();
    for i in 0..warm + iters {
        if i == warm {
            first = sample();
        }
        let t0 = Instant::now();
        write_msg(s, &data)?;
        if !read_msg(s, &mut buf)? {
            bail!("echo server closed the connection");
        }
        if i >= warm {
            record(&mut hist, t0.elapsed());
        }
    }
    Ok(Measured::between(hist, iters as u64, &first, &sample()))
}

/// Windowed: the writer keeps `window` messages outstanding (credits from the reader), the
/// reader times each echo against its send time (TCP keeps them in order).
fn throughput(
    s: &TcpStream,
    size: usize,
    window: usize,
    time: Duration,
    server_tid: i32,
) -> Result<Measured> {
    let mut ws = s.try_clone()?;
    let mut rs = s.try_clone()?;
    let (credit_tx, credit_rx) = mpsc::channel::<()>();
    let (sent_tx, sent_rx) = mpsc::channel::<Instant>();
    let writer_tid = AtomicI32::new(0);
    let writer_tid = &writer_tid;
    let warm = (time / 5).min(Duration::from_millis(300));
    std::thread::scope(|sc| {
        let writer = sc.spawn(move || -> Result<()> {
            writer_tid.store(gettid(), Ordering::Release);
            let data = payload(size);
            let mut credits = window;
            let start = Instant::now();
            while start.elapsed() < warm + time {
                if credits == 0 {
                    match credit_rx.recv() {
                        Ok(()) => credits += 1,
                        Err(_) => break,
                    }
                }
                while credit_rx.try_recv().is_ok() {
                    credits += 1;
                }
                credits -= 1;
                sent_tx.send(Instant::now()).ok();
                write_msg(&mut ws, &data)?;
            }
            drop(sent_tx);
            Ok(())
        });
        let mut reader = || -> Result<Measured> {
            let mut buf = Vec::new();
            let mut hist = histogram();
            let mut count = 0;
            let start = Instant::now();
            let tid = loop {
                match writer_tid.load(Ordering::Acquire) {
                    0 => std::thread::yield_now(),
                    t => break t,
                }
            };
            let probe = Probe::new(Vec::new(), vec![gettid(), server_tid, tid]);
            let sample = || probe.sample();
            let mut first = None;
            let mut last = None;
            // Every send gets its echo: read until the writer stops and the channel drains.
            while let Ok(t0) = sent_rx.recv() {
                if !read_msg(&mut rs, &mut buf)? {
                    bail!("echo server closed the connection");
                }
                let elapsed = start.elapsed();
                if elapsed >= warm && first.is_none() {
                    first = Some(sample());
                }
                if elapsed >= warm + time && last.is_none() {
                    last = Some(sample());
                }
                if first.is_some() && last.is_none() {
                    record(&mut hist, t0.elapsed());
                    count += 1;
                }
                credit_tx.send(()).ok();
            }
            let first = first.context("no echo after the warm-up")?;
            let last = last.unwrap_or_else(sample);
            Ok(Measured::between(hist, count, &first, &last))
        };
        let m = reader();
        drop(credit_tx);
        let w = writer.join().map_err(|_| anyhow!("writer panicked"))?;
        let m = m?;
        w?;
        Ok(m)
    })
}

/// Our TCP echo: ping-pong at every size, throughput at the throughput sizes; the server
/// in side B, the client in side A of `path`.
pub fn run(cfg: &BenchConfig, layout: &Layout, path: &Path) -> Result<Vec<Row>> {
    let listener = path.open_in(1, || Ok(TcpListener::bind((path.addr(1), 0))?))?;
    let addr = listener.local_addr()?;
    let (core_a, core_b) = layout.app_cores();
    let server_tid = AtomicI32::new(0);
    let connections = 1 + cfg.throughput_sizes.len();
    let point = |test, msg_bytes, window| Point {
        transport: "tcp",
        nic: "kernel",
        path: path.name(),
        mode: "kernel",
        test,
        msg_bytes,
        window,
        engines: 1,
    };
    std::thread::scope(|sc| {
        let server = sc.spawn(|| serve(listener, core_b, &server_tid, connections));
        let client = sc.spawn(|| -> Result<Vec<Row>> {
            // This thread (and the writer it spawns) lives in A's namespace.
            path.enter(0)?;
            if let Some(c) = core_a {
                pin_to_cpu(c)?;
            }
            let mut rows = Vec::new();
            let mut s = connect(addr)?;
            let tid = loop {
                match server_tid.load(Ordering::Acquire) {
                    0 => std::thread::yield_now(),
                    t => break t,
                }
            };
            for &size in &cfg.sizes {
                let m = ping_pong(&mut s, size, cfg.iterations(size), tid)
                    .with_context(|| format!("tcp ping-pong {size} B"))?;
                rows.push(m.row(point("ping_pong", size, 1)));
            }
            drop(s);
            for &size in &cfg.throughput_sizes {
                // A fresh connection per point: the server serves them in turn.
                let s = connect(addr)?;
                let w = cfg.window_for(size);
                let m = throughput(&s, size, w, cfg.throughput_time, tid)
                    .with_context(|| format!("tcp throughput {size} B"))?;
                rows.push(m.row(point("throughput", size, w)));
            }
            Ok(rows)
        });
        let rows = client.join().map_err(|_| anyhow!("tcp client panicked"));
        let served = server.join().map_err(|_| anyhow!("tcp server panicked"));
        let rows = rows??;
        served??;
        Ok(rows)
    })
}

/// One `sockperf ping-pong --tcp -m 64 --full-rtt` row, server on side B and client on side
/// A of `path`; the second value is its version line.
pub fn sockperf(cfg: &BenchConfig, path: &Path) -> Result<(Row, String)> {
    if cfg.sockperf_secs == 0 {
        bail!("disabled (--sockperf-secs 0)");
    }
    let bin =
        crate::locate::binary("sockperf").context("sockperf not on PATH (`cargo xtask deps` installs it)")?;
    let version = Command::new(&bin)
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default();
    let server_ip = path.addr(1).to_string();
    let port = path.open_in(1, || {
        Ok(TcpListener::bind((path.addr(1), 0))?.local_addr()?.port())
    })?;
    let mut server = path
        .exec(1, &bin)
        .args(["server", "--tcp", "-i", &server_ip, "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting sockperf server")?;
    // Wait until it listens (probing from A's side, across the path).
    let t = Instant::now();
    while path
        .open_in(0, || Ok(TcpStream::connect((path.addr(1), port))?))
        .is_err()
    {
        if t.elapsed() > Duration::from_secs(5) {
            let _ = server.kill();
            let _ = server.wait();
            bail!("sockperf server did not listen on {server_ip}:{port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = cfg.sockperf_secs.to_string();
    let before = children_usage();
    let started = Instant::now();
    let out = path
        .exec(0, &bin)
        .args(["ping-pong", "--tcp", "-i", &server_ip, "-p", &port.to_string()])
        .args(["-m", "64", "-t", &secs, "--full-rtt"])
        .output();
    let wall = started.elapsed();
    let _ = server.kill();
    let _ = server.wait();
    let (cpu, switches) = children_usage();
    let (cpu, switches) = (cpu.saturating_sub(before.0), switches.saturating_sub(before.1));
    let out = out.context("running sockperf ping-pong")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("sockperf ping-pong exited with {}: {text}", out.status);
    }
    let mut row = parse_sockperf(&text).with_context(|| format!("parsing sockperf output:\n{text}"))?;
    row.path = path.name().into();
    // Client and server CPU over the client's whole run (warm-up included).
    row.app_cores = cpu as f64 / 1e9 / wall.as_secs_f64().max(1e-9);
    row.cores = row.app_cores;
    row.gbps_per_core = (row.cores > 0.0).then(|| row.gbps / row.cores);
    // Both processes' switches over the whole run, per measured round trip.
    let counts = Counts {
        switches,
        migrations: 0,
        task_clock_ns: 0,
        cycles: None,
        instructions: None,
    };
    row.ctx_switches_per_rtt = (row.count > 0).then(|| counts.switches as f64 / row.count as f64);
    Ok((
        row,
        if version.is_empty() {
            "sockperf".into()
        } else {
            version
        },
    ))
}

/// User + system CPU time (ns) and context switches (voluntary + involuntary) of this
/// process's waited-for children.
fn children_usage() -> (u64, u64) {
    // libc, not a crate: rustix has no getrusage, and /proc keeps no waited-for children's
    // context switches. SAFETY: a zeroed rusage is valid for getrusage to fill.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru);
        ru
    };
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    (
        ns(ru.ru_utime) + ns(ru.ru_stime),
        (ru.ru_nvcsw + ru.ru_nivcsw) as u64,
    )
}

/// Percentiles (µs, `--full-rtt`) and the valid run's message count and duration.
pub fn parse_sockperf(text: &str) -> Result<Row> {
    let strip = |l: &str| -> String {
        // Drop ANSI colour escapes.
        let mut out = String::new();
        let mut esc = false;
        for ch in l.chars() {
            match (esc, ch) {
                (false, '\u{1b}') => esc = true,
                (true, c) if c.is_ascii_alphabetic() => esc = false,
                (true, _) => {}
                (false, c) => out.push(c),
            }
        }
        out
    };
    let mut pct = std::collections::HashMap::new();
    let mut max = None;
    let (mut secs, mut received) = (None, None);
    for line in text.lines().map(strip) {
        if let Some(rest) = line.split("percentile ").nth(1) {
            if let Some((p, v)) = rest.split_once('=') {
                if let (Ok(p), Ok(v)) = (p.trim().parse::<f64>(), v.trim().parse::<f64>()) {
                    pct.insert((p * 1000.0).round() as u64, v);
                }
            }
        } else if line.contains("<MAX> observation") {
            max = line.rsplit('=').next().and_then(|v| v.trim().parse::<f64>().ok());
        } else if line.contains("[Valid Duration]") {
            let field = |name: &str| {
                line.split(name)
                    .nth(1)
                    .and_then(|r| r.split([' ', ';']).find(|s| !s.is_empty()))
                    .and_then(|v| v.parse::<f64>().ok())
            };
            secs = field("RunTime=");
            received = field("ReceivedMessages=");
        }
    }
    let get = |p: u64| {
        pct.get(&p)
            .copied()
            .with_context(|| format!("no percentile {}", p as f64 / 1000.0))
    };
    let (p50, p99, p999) = (get(50_000)?, get(99_000)?, get(99_900)?);
    let secs = secs.context("no [Valid Duration] line")?;
    let received = received.context("no ReceivedMessages")?;
    let msgs_per_s = received / secs.max(1e-9);
    Ok(Row {
        transport: "sockperf".into(),
        nic: "kernel".into(),
        // Filled in by the caller.
        path: String::new(),
        mode: "kernel".into(),
        test: "ping_pong".into(),
        msg_bytes: 64,
        window: 1,
        engines: 1,
        count: received as u64,
        p50_us: p50,
        p99_us: p99,
        p999_us: p999,
        max_us: max.unwrap_or(p999),
        msgs_per_s,
        gbps: msgs_per_s * 64.0 * 8.0 / 1e9,
        // Filled in by the caller from the processes' CPU time.
        gbps_per_core: None,
        cores: 0.0,
        engine_cores: 0.0,
        app_cores: 0.0,
        ctx_switches_per_rtt: None,
        migrations_per_rtt: None,
        task_clock_us_per_rtt: None,
        cycles_per_rtt: None,
        instructions_per_rtt: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockperf_output_parses() {
        let text =
            "sockperf: [Valid Duration] RunTime=0.550 sec; SentMessages=47215; ReceivedMessages=47215\n\
            sockperf: \u{1b}[2;35m====> avg-rtt=11.585 (std-dev=5.105)\u{1b}[0m\n\
            sockperf: ---> <MAX> observation =  859.433\n\
            sockperf: ---> percentile 99.999 =  859.433\n\
            sockperf: ---> percentile 99.900 =   66.466\n\
            sockperf: ---> percentile 99.000 =   21.454\n\
            sockperf: ---> percentile 50.000 =   11.285\n";
        let r = parse_sockperf(text).unwrap();
        assert_eq!(
            (r.p50_us, r.p99_us, r.p999_us, r.max_us),
            (11.285, 21.454, 66.466, 859.433)
        );
        assert_eq!(r.count, 47215);
        assert!((r.msgs_per_s - 47215.0 / 0.55).abs() < 1.0);
        assert!(parse_sockperf("nothing").is_err());
    }
}
