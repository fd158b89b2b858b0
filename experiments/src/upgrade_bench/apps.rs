// SPDX-License-Identifier: GPL-2.0-only
//! The benchmark's Pony apps, each on its own thread with its own session
//! (`pony_express::client::PonyClient`) on one of the two `snap-host`s' engine:
//!
//! ```text
//!  host A (upgraded)                                  host B
//!  ping client ── N flows, one message in flight ───▶ echo server (checks requests)
//!   (checks echoes, times round trips)  ◀── echoes ──
//!  bulk sender ── 1 flow, `window` messages in flight ▶ bulk sink (checks)
//! ```
//!
//! An app whose session fails (its host gone, a call timed out) stops and says why in its
//! result's `failed`; what it sent and counted until then stands, so the report shows the
//! failure as lost messages rather than no report at all. Senders stop when told ([`Signals::stop_senders`]) and then wait for what they have in
//! flight; receivers run until [`Signals::stop_receivers`], so the caller can let them
//! drain first. Every completion is consumed (`Sent`s included): a long run keeps no
//! backlog in the client.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pony_express::app::{Completion, Completions, FlowId, ServiceId};
use pony_express::client::PonyClient;

use super::message::{self, Checker};

/// The engine every app attaches to (the hosts' configuration names it).
pub const ENGINE: &str = "pony0";
/// The echo server's service and the bulk sink's.
pub const ECHO: ServiceId = 7;
pub const SINK: ServiceId = 8;

/// How long a wait slice is; the stop flags are checked between slices.
const SLICE: Duration = Duration::from_millis(20);
/// A ping that got no echo for this long is given up (the message counts as lost unless
/// its echo still arrives), so that one loss does not stop the run.
const STALL: Duration = Duration::from_secs(5);
/// How long a sender waits for what it has in flight once stopped.
const DRAIN: Duration = Duration::from_secs(10);

/// The flags the apps watch, and the clock their timestamps count from.
#[derive(Debug)]
pub struct Signals {
    pub start: Instant,
    pub stop_senders: AtomicBool,
    pub stop_receivers: AtomicBool,
    /// Distinct intact messages each receiver has taken so far (request, echo, bulk).
    pub received: [AtomicU64; 3],
}

impl Signals {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            stop_senders: AtomicBool::new(false),
            stop_receivers: AtomicBool::new(false),
            received: Default::default(),
        })
    }

    fn ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

/// Index into [`Signals::received`].
pub const REQUESTS: usize = 0;
pub const ECHOES: usize = 1;
pub const BULK: usize = 2;

/// What the ping client measured and counted.
#[derive(Debug)]
pub struct PingResult {
    pub checker: Checker,
    /// Messages sent per flow index.
    pub sent: Vec<u64>,
    /// (echo arrival, ns since start; round trip, ns) per completed round trip.
    pub samples: Vec<(u64, u64)>,
    /// Pings given up after [`STALL`].
    pub stalls: u64,
    /// Error completions (code), in order.
    pub errors: Vec<String>,
    /// Why it stopped before it was told to (the counts up to then stand).
    pub failed: Option<String>,
}

/// The ping client: opens `flows` flows to `peer`'s echo service, then sends one `bytes`
/// message at a time, flow after flow, until stopped, timing each echo.
pub fn ping_client(
    socket: PathBuf,
    peer: String,
    flows: usize,
    bytes: usize,
    sig: Arc<Signals>,
    ready: std::sync::mpsc::Sender<()>,
) -> Result<PingResult> {
    let mut c = PonyClient::connect(&socket, ENGINE, Completions::Block).context("ping client: attaching")?;
    let ids: Vec<FlowId> = (0..flows)
        .map(|i| {
            c.open_flow(&peer, ECHO)
                .with_context(|| format!("ping client: opening flow {i}"))
        })
        .collect::<Result<_>>()?;
    let _ = ready.send(());
    let mut r = PingResult {
        checker: Checker::new("ping_pong_echo"),
        sent: vec![0; flows],
        samples: Vec::with_capacity(1 << 20),
        stalls: 0,
        errors: Vec::new(),
        failed: None,
    };
    let (mut out, mut buf) = (Vec::new(), Vec::new());
    let mut i = 0;
    let mut run = || -> Result<()> {
        while !sig.stop_senders.load(Ordering::Relaxed) {
            let seq = r.sent[i];
            message::encode(i as u32, seq, bytes, &mut out);
            let t0 = sig.ns();
            c.send(ids[i], 0, &out).context("ping client: send")?;
            r.sent[i] += 1;
            let deadline = Instant::now() + STALL;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match c.wait_completion(left).context("ping client: waiting")? {
                    Some(Completion::Received { flow, head, len, .. }) => {
                        buf.clear();
                        c.session().take_received(head, len, &mut buf)?;
                        let now = sig.ns();
                        r.checker.check(flow, &buf);
                        sig.received[ECHOES].store(r.checker.received(), Ordering::Relaxed);
                        if message::decode(&buf) == Some((i as u32, seq)) {
                            r.samples.push((now, now - t0));
                            break;
                        }
                    }
                    Some(Completion::Error { code, .. }) => r.errors.push(code.to_string()),
                    Some(_) => {}
                    None => {
                        r.stalls += 1;
                        break;
                    }
                }
            }
            i = (i + 1) % flows;
        }
        Ok(())
    };
    if let Err(e) = run() {
        r.failed = Some(format!("{e:#}"));
    }
    Ok(r)
}

/// What a receiver counted.
#[derive(Debug)]
pub struct SinkResult {
    pub checker: Checker,
    pub errors: Vec<String>,
    pub failed: Option<String>,
}

/// The echo server (`echo`: sends every message back on its flow) or the bulk sink:
/// listens on `service` and checks every message until stopped.
pub fn receiver(socket: PathBuf, service: ServiceId, echo: bool, sig: Arc<Signals>) -> Result<SinkResult> {
    let (traffic, slot) = if echo {
        ("ping_pong_request", REQUESTS)
    } else {
        ("bulk", BULK)
    };
    let mut c = PonyClient::connect(&socket, ENGINE, Completions::Block)
        .with_context(|| format!("{traffic} receiver: attaching"))?;
    c.listen(service)
        .with_context(|| format!("listening on service {service}"))?;
    let mut r = SinkResult {
        checker: Checker::new(traffic),
        errors: Vec::new(),
        failed: None,
    };
    let mut buf = Vec::new();
    let mut run = || -> Result<()> {
        while !sig.stop_receivers.load(Ordering::Relaxed) {
            match c
                .wait_completion(SLICE)
                .with_context(|| format!("{traffic} receiver: waiting"))?
            {
                Some(Completion::Received {
                    flow,
                    stream,
                    head,
                    len,
                }) => {
                    buf.clear();
                    c.session().take_received(head, len, &mut buf)?;
                    r.checker.check(flow, &buf);
                    sig.received[slot].store(r.checker.received(), Ordering::Relaxed);
                    if echo {
                        c.send(flow, stream, &buf).context("echo server: send")?;
                    }
                }
                Some(Completion::Error { code, .. }) => r.errors.push(code.to_string()),
                _ => {}
            }
        }
        Ok(())
    };
    if let Err(e) = run() {
        r.failed = Some(format!("{e:#}"));
    }
    Ok(r)
}

/// What the bulk sender did.
#[derive(Debug)]
pub struct BulkResult {
    /// Messages sent (one flow).
    pub sent: u64,
    /// Seconds from the first send to the last `Sent`.
    pub secs: f64,
    /// Messages still without a `Sent` after [`DRAIN`].
    pub unacknowledged: u64,
    pub errors: Vec<String>,
    pub failed: Option<String>,
}

/// The bulk sender: one flow to `peer`'s sink, `window` messages of `bytes` in flight until
/// stopped, then waits for their `Sent`s.
pub fn bulk_sender(
    socket: PathBuf,
    peer: String,
    bytes: usize,
    window: usize,
    sig: Arc<Signals>,
) -> Result<BulkResult> {
    let mut c = PonyClient::connect(&socket, ENGINE, Completions::Block).context("bulk sender: attaching")?;
    let flow = c
        .open_flow(&peer, SINK)
        .context("bulk sender: opening its flow")?;
    let mut out = Vec::new();
    let (mut sent, mut in_flight) = (0u64, 0usize);
    let mut errors = Vec::new();
    let t0 = Instant::now();
    let mut drain_deadline = None;
    let mut run = || -> Result<()> {
        loop {
            let stopping = sig.stop_senders.load(Ordering::Relaxed);
            if stopping {
                let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + DRAIN);
                if in_flight == 0 || Instant::now() >= deadline {
                    break;
                }
            }
            while !stopping && in_flight < window {
                message::encode(0, sent, bytes, &mut out);
                c.send(flow, 0, &out).context("bulk sender: send")?;
                sent += 1;
                in_flight += 1;
            }
            match c.wait_completion(SLICE).context("bulk sender: waiting")? {
                Some(Completion::Sent { .. }) => in_flight -= 1,
                Some(Completion::Error { code, .. }) => {
                    in_flight = in_flight.saturating_sub(1);
                    errors.push(code.to_string());
                }
                _ => {}
            }
        }
        Ok(())
    };
    let failed = run().err().map(|e| format!("{e:#}"));
    Ok(BulkResult {
        sent,
        secs: t0.elapsed().as_secs_f64(),
        unacknowledged: in_flight as u64,
        errors,
        failed,
    })
}
