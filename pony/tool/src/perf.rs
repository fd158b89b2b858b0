//! `pony perf`: ping-pong between a client and an echo server, one message in flight, like
//! `sockperf ping-pong`. The client times each round trip (send until the echo's
//! completion) into an HDR histogram and reports percentiles and the rate; the server
//! echoes every message on the flow and stream it came on.
//!
//! Both drive the command/completion API (`PonyClient`) rather than the socket layer: one
//! thread, no per-stream bookkeeping between the wait and the echo, so the numbers are as
//! close to the library's own cost as an app gets. Every completion is consumed (`Sent`s
//! included), so a long run keeps no backlog.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use hdrhistogram::Histogram;
use pony_express::app::{CloseReason, Completion, FlowId, ServiceId};
use pony_express::client::PonyClient;
use serde::Serialize;

use crate::host::Engine;
use crate::interrupt::{self, SLICE};
use crate::{fail, HostOpts, PeerOpts};

/// The longest round trip the histogram holds (longer ones are clamped to it).
const MAX_RTT_NS: u64 = 60_000_000_000;

/// What the client does.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Bytes per message.
    pub size: usize,
    /// Round trips measured.
    pub count: u64,
    /// Round trips before, not measured.
    pub warmup: u64,
    /// JSON output.
    pub json: bool,
}

/// The client's result; also its `--json` output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Median round trip, µs.
    pub p50_us: f64,
    /// 90th percentile, µs.
    pub p90_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// 99.9th percentile, µs.
    pub p999_us: f64,
    /// Round trips (messages echoed) per second over the measured ones.
    pub msgs_per_s: f64,
    /// Round trips measured.
    pub samples: u64,
}

impl Report {
    fn new(hist: &Histogram<u64>, elapsed: Duration) -> Self {
        let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
        Self {
            p50_us: us(0.50),
            p90_us: us(0.90),
            p99_us: us(0.99),
            p999_us: us(0.999),
            msgs_per_s: hist.len() as f64 / elapsed.as_secs_f64().max(1e-9),
            samples: hist.len(),
        }
    }
}

/// `pony perf server`: echoes until interrupted.
pub fn server(host: &HostOpts, service: ServiceId) -> anyhow::Result<()> {
    let engine = Engine::find(host)?;
    let mut client = engine.attach()?;
    client
        .listen(service)
        .with_context(|| format!("listening on service {service}"))?;
    eprintln!(
        "pony perf server: listening on service {service} of engine {}",
        engine.name
    );
    let mut buf = Vec::new();
    while !interrupt::interrupted() {
        let Some(c) = client.wait_completion(SLICE)? else {
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
                client.session().take_received(head, len, &mut buf)?;
                // A send to a flow that closed meanwhile fails with an Error completion,
                // which the loop below ignores like any other flow's end.
                client.send(flow, stream, &buf)?;
            }
            Completion::FlowAccepted { .. } => eprintln!("pony perf server: a client connected"),
            Completion::Error { code, .. } => eprintln!("pony perf server: a send failed: {code}"),
            _ => {}
        }
    }
    eprintln!("pony perf server: stopped");
    Ok(())
}

/// `pony perf client`: measures and prints.
pub fn client(host: &HostOpts, peer: &PeerOpts, s: &ClientSettings) -> anyhow::Result<()> {
    let engine = Engine::find(host)?;
    let mut client = engine.attach()?;
    let max = max_message_len(&mut client);
    if s.size > max {
        bail!("--size {} exceeds the largest message, {max} bytes", s.size);
    }
    let flow = client
        .open_flow(&peer.peer, peer.service)
        .map_err(|e| fail::open_flow(e, &peer.peer, peer.service))?;
    let msg: Vec<u8> = (0..s.size).map(|i| i as u8).collect();
    for _ in 0..s.warmup {
        round_trip(&mut client, flow, &msg)?;
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, MAX_RTT_NS, 3).context("histogram bounds")?;
    let start = Instant::now();
    for _ in 0..s.count {
        let rtt = round_trip(&mut client, flow, &msg)?;
        let ns = u64::try_from(rtt.as_nanos())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_RTT_NS);
        hist.record(ns).context("recording a round trip")?;
    }
    let report = Report::new(&hist, start.elapsed());
    if s.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "pony perf: {} round trips of {} B to service {} at {} (engine {})",
            report.samples, s.size, peer.service, peer.peer, engine.name
        );
        println!(
            "p50 {:.1} µs  p90 {:.1} µs  p99 {:.1} µs  p99.9 {:.1} µs  {:.0} msgs/s",
            report.p50_us, report.p90_us, report.p99_us, report.p999_us, report.msgs_per_s
        );
    }
    // Best effort: the host closes the flow anyway when the session detaches.
    let _ = client.close_flow(flow);
    Ok(())
}

/// The largest message the session can send (the engine's limit, capped by its pool).
fn max_message_len(client: &mut PonyClient) -> usize {
    let engine = client.details()["max_message_len"].as_u64().unwrap_or(u64::MAX);
    let engine = usize::try_from(engine).unwrap_or(usize::MAX);
    engine.min(client.session().pool().max_message_len())
}

/// One message out and its echo back: the time between.
fn round_trip(client: &mut PonyClient, flow: FlowId, msg: &[u8]) -> anyhow::Result<Duration> {
    let start = Instant::now();
    client.send(flow, 0, msg)?;
    loop {
        interrupt::check()?;
        let Some(c) = client.wait_completion(SLICE)? else {
            continue;
        };
        match c {
            Completion::Received {
                flow: f, head, len, ..
            } if f == flow => {
                let rtt = start.elapsed();
                // Not read: only its arrival is timed. Releasing it returns the buffers.
                client.session().received(head, len)?.release()?;
                if len as usize != msg.len() {
                    bail!("the server echoed {len} bytes for a message of {}", msg.len());
                }
                return Ok(rtt);
            }
            Completion::FlowClosed { flow: f, reason } if f == flow => {
                return Err(match reason {
                    CloseReason::PeerClosed => anyhow!("the server closed the flow"),
                    r => anyhow!("the flow to the server ended: {r}"),
                })
            }
            Completion::Error { code, .. } => bail!("sending failed: {code}"),
            _ => {}
        }
    }
}
