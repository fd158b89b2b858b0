// SPDX-License-Identifier: GPL-2.0-only
//! The processes the CPU-efficiency benchmark starts from its own binary: an app (one per
//! app, in every design) and the echo peer's app. The benchmark binaries run these roles
//! when their first argument is [`ROLE_APP`] or [`ROLE_ECHO`] ([`run_role`]).
//!
//! ```text
//!  library_os app: one thread, spinning:  PonyEngine::run ─ open-loop sends ─ poll completions
//!                  (the engine and its UDP socket live in this process)
//!  snap app:       PonyClient of snap-host's `pony0`; between messages it blocks on its
//!                  completion doorbell until the next message is due
//!  echo app:       PonyClient of the peer host's `pony0`: every message back on its flow
//! ```
//!
//! An app opens its flow, prints [`READY`] on stdout, and starts its clock when a line
//! arrives on stdin. Message `seq` is due at `seq / rate` seconds after that; its first 8
//! bytes carry `seq`, and its round trip runs from its due time to its echo (so a late
//! send counts). A message due in the window that is never echoed (or never sent, when the
//! app falls behind) counts with the time from its due time to when the app stops waiting
//! (a lower bound), so that an overloaded point shows as slow, not as missing. Round trips
//! of messages due in the measuring window go to the file `--out` (little-endian u64
//! nanoseconds), then one [`Tally`] line as JSON on stdout.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use pony_engine::nic::UdpNic;
use pony_engine::{PonyConfig, PonyEngine};
use pony_express::app::{AppSession, Command, Completion, Completions, FlowId, SessionError};
use pony_express::client::{ClientOptions, PonyClient};
use serde::{Deserialize, Serialize};
use snap_runtime::Engine;

/// First argument that makes a benchmark binary an app.
pub const ROLE_APP: &str = "__efficiency-app";
/// First argument that makes a benchmark binary the echo peer's app.
pub const ROLE_ECHO: &str = "__efficiency-echo";
/// What an app prints once its flow is open.
pub const READY: &str = "efficiency-app: ready";
/// Prefix of an app's closing line.
pub const TALLY: &str = "efficiency-app: tally ";
/// The engine name of the stack in every design.
pub const ENGINE: &str = "pony0";
/// How long an app waits for its flow to open.
const OPEN_TIMEOUT: Duration = Duration::from_secs(20);
/// Messages in flight per app at most: a stalled stack cannot grow the pool without bound.
const MAX_OUTSTANDING: u64 = 512;

/// What an app counted in the measuring window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    /// Messages due in the window and sent.
    pub sent: u64,
    /// Their echoes received.
    pub received: u64,
    /// Sends put off because the ring was full or the pool empty.
    pub deferred: u64,
    /// Error completions.
    pub errors: u64,
    /// Messages due in the window never echoed: their round trips are lower bounds.
    pub unanswered: u64,
    /// The flow failed under the app (the stack gave up on the peer, e.g. a starved
    /// engine made the peer look unresponsive): sending stopped there, the rest of the
    /// window's messages are `unanswered`, and the point is still reported.
    #[serde(default)]
    pub flow_lost: bool,
}

/// An app's arguments (passed by the benchmark, not by people).
#[derive(Debug, Clone, PartialEq)]
pub struct AppArgs {
    /// `library_os`: the stack in this process on a UDP socket bound here; else the
    /// control socket of the snap-host to attach to.
    pub stack: Stack,
    /// The echo peer's Pony address (`ip:port`) and service.
    pub peer: String,
    pub service: u32,
    /// Messages per second this app offers.
    pub rate: f64,
    pub msg_bytes: usize,
    pub warmup: Duration,
    pub window: Duration,
    /// Where the round trips go.
    pub out: PathBuf,
}

/// Where an app's stack is.
#[derive(Debug, Clone, PartialEq)]
pub enum Stack {
    /// Linked in, spin-polled by the app's thread, on a UDP socket at this address.
    Linked { bind: String },
    /// A snap-host's Pony engine, through this control socket.
    Host { socket: PathBuf },
}

impl AppArgs {
    /// The arguments after [`ROLE_APP`].
    pub fn to_args(&self) -> Vec<String> {
        let (kind, at) = match &self.stack {
            Stack::Linked { bind } => ("linked", bind.clone()),
            Stack::Host { socket } => ("host", socket.display().to_string()),
        };
        vec![
            kind.into(),
            at,
            self.peer.clone(),
            self.service.to_string(),
            self.rate.to_string(),
            self.msg_bytes.to_string(),
            self.warmup.as_nanos().to_string(),
            self.window.as_nanos().to_string(),
            self.out.display().to_string(),
        ]
    }

    pub fn parse(args: &[String]) -> Result<Self> {
        let [kind, at, peer, service, rate, bytes, warmup, window, out] = args else {
            bail!("{ROLE_APP}: expected 9 arguments, got {}", args.len());
        };
        let stack = match kind.as_str() {
            "linked" => Stack::Linked { bind: at.clone() },
            "host" => Stack::Host { socket: at.into() },
            other => bail!("{ROLE_APP}: unknown stack {other:?}"),
        };
        let nanos = |s: &str| -> Result<Duration> { Ok(Duration::from_nanos(s.parse()?)) };
        let a = Self {
            stack,
            peer: peer.clone(),
            service: service.parse()?,
            rate: rate.parse()?,
            msg_bytes: bytes.parse()?,
            warmup: nanos(warmup)?,
            window: nanos(window)?,
            out: out.into(),
        };
        if !(a.rate > 0.0 && a.rate.is_finite() && (8..=65536).contains(&a.msg_bytes)) {
            bail!(
                "{ROLE_APP}: rate {} or message size {} out of range",
                a.rate,
                a.msg_bytes
            );
        }
        Ok(a)
    }
}

/// Runs the role `args[0]` names, if it names one (`Ok(false)`: not a role, the binary's
/// own options follow).
pub fn run_role(args: &[String]) -> Result<bool> {
    match args.first().map(String::as_str) {
        Some(ROLE_APP) => {
            app_main(&AppArgs::parse(&args[1..])?)?;
            Ok(true)
        }
        Some(ROLE_ECHO) => {
            let [socket, service] = &args[1..] else {
                bail!("{ROLE_ECHO}: expected SOCKET SERVICE");
            };
            echo_main(socket.as_ref(), service.parse()?)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// What an app's loop needs of its stack: a session, and what to do between messages.
trait Transport {
    fn session(&mut self) -> &mut AppSession;
    /// Nothing to do until `until`: the linked stack runs its engine once (spinning); a
    /// host's app blocks for the next completion until then.
    fn idle(&mut self, until: Instant) -> Result<Option<Completion>>;
}

/// The library-OS design: the engine is this process's.
struct Linked {
    engine: PonyEngine,
    session: AppSession,
}

impl Transport for Linked {
    fn session(&mut self) -> &mut AppSession {
        &mut self.session
    }

    fn idle(&mut self, _until: Instant) -> Result<Option<Completion>> {
        self.engine.run(Instant::now());
        Ok(self.session.poll_completion()?)
    }
}

/// Snap's designs: the engine is the host's.
struct Hosted {
    client: PonyClient,
}

impl Transport for Hosted {
    fn session(&mut self) -> &mut AppSession {
        self.client.session()
    }

    fn idle(&mut self, until: Instant) -> Result<Option<Completion>> {
        let left = until.saturating_duration_since(Instant::now());
        Ok(self.client.wait_completion(left)?)
    }
}

fn app_main(args: &AppArgs) -> Result<()> {
    let (mut t, flow): (Box<dyn Transport>, FlowId) = match &args.stack {
        Stack::Linked { bind } => {
            let addr: std::net::SocketAddr = bind.parse().with_context(|| format!("bind address {bind}"))?;
            let nic = UdpNic::bind(addr).with_context(|| format!("binding {bind}"))?;
            let mut engine = PonyEngine::new(ENGINE, Box::new(nic), PonyConfig::default());
            let (_, session) = engine
                .attach_local(Completions::Poll)
                .map_err(|e| anyhow!("attach: {e}"))?;
            let mut linked = Linked { engine, session };
            let flow = open_linked(&mut linked, &args.peer, args.service)?;
            (Box::new(linked), flow)
        }
        Stack::Host { socket } => {
            let options = ClientOptions {
                completions: Completions::Block,
                completion_spin: Duration::ZERO,
            };
            let mut client = PonyClient::connect_with(socket, ENGINE, &options)
                .with_context(|| format!("attaching to {ENGINE} at {}", socket.display()))?;
            let flow = client
                .open_flow(&args.peer, args.service)
                .with_context(|| format!("opening a flow to {}", args.peer))?;
            (Box::new(Hosted { client }), flow)
        }
    };
    println!("{READY}");
    std::io::stdout().flush()?;
    let mut go = String::new();
    std::io::stdin().lock().read_line(&mut go)?;
    let (tally, rtts) = drive(t.as_mut(), flow, args)?;
    // A lost flow is already gone: there is nothing to close.
    if !tally.flow_lost {
        close(t.as_mut(), flow)?;
    }
    let bytes: Vec<u8> = rtts.iter().flat_map(|r| r.to_le_bytes()).collect();
    std::fs::write(&args.out, bytes).with_context(|| format!("writing {}", args.out.display()))?;
    println!("{TALLY}{}", serde_json::to_string(&tally)?);
    Ok(())
}

/// Opens the linked stack's flow, running its engine until the answer.
fn open_linked(t: &mut Linked, peer: &str, service: u32) -> Result<FlowId> {
    t.session.submit(&Command::OpenFlow {
        cookie: 1,
        peer: peer.to_owned(),
        service,
    })?;
    let deadline = Instant::now() + OPEN_TIMEOUT;
    while Instant::now() < deadline {
        match t.idle(deadline)? {
            Some(Completion::FlowOpened { result, .. }) => {
                return result.map_err(|code| anyhow!("opening a flow to {peer}: {code}"))
            }
            Some(Completion::Error { code, .. }) => bail!("opening a flow to {peer}: {code}"),
            _ => {}
        }
    }
    bail!("no flow to {peer} within {OPEN_TIMEOUT:?}")
}

/// Closes the flow and waits for the close to complete, so that the peer forgets it
/// before the next point's apps open theirs.
fn close(t: &mut dyn Transport, flow: FlowId) -> Result<()> {
    let deadline = Instant::now() + OPEN_TIMEOUT;
    // The command ring may still be full of sends: make room by running the stack and
    // reading completions until the close fits.
    loop {
        match t.session().submit(&Command::CloseFlow { flow }) {
            Ok(()) => break,
            Err(SessionError::Push(_)) if Instant::now() < deadline => {
                if t.session().poll_completion()?.is_none() {
                    t.idle(Instant::now() + Duration::from_millis(1))?;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    while Instant::now() < deadline {
        let mut c = t.session().poll_completion()?;
        if c.is_none() {
            c = t.idle(deadline)?;
        }
        if let Some(Completion::FlowClosed { flow: f, .. }) = c {
            if f == flow {
                return Ok(());
            }
        }
    }
    bail!("flow {flow} not closed within {OPEN_TIMEOUT:?}")
}

/// The open-loop schedule: when message `seq` is due.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub start: Instant,
    pub interval: Duration,
}

impl Schedule {
    pub fn new(start: Instant, rate: f64) -> Self {
        Self {
            start,
            interval: Duration::from_secs_f64(1.0 / rate),
        }
    }

    pub fn due(&self, seq: u64) -> Instant {
        self.start + self.interval.mul_f64(seq as f64)
    }

    /// Whether message `seq` is due inside `[start + warmup, start + warmup + window)`.
    pub fn measured(&self, seq: u64, warmup: Duration, window: Duration) -> bool {
        let at = self.due(seq) - self.start;
        at >= warmup && at < warmup + window
    }
}

/// Sends open-loop until the window ends, then waits a little for the last echoes.
fn drive(t: &mut dyn Transport, flow: FlowId, args: &AppArgs) -> Result<(Tally, Vec<u64>)> {
    let sched = Schedule::new(Instant::now(), args.rate);
    let end = sched.start + args.warmup + args.window;
    // Echoes of the last messages may arrive a little after the window.
    let drain_until = end + Duration::from_millis(200).max(sched.interval * 2);
    let mut tally = Tally::default();
    let mut rtts = Vec::new();
    let mut next: u64 = 0;
    let mut received: u64 = 0;
    // Which measured messages came back (indexed by seq).
    let mut echoed: Vec<bool> = Vec::new();
    let mut msg = vec![0u8; args.msg_bytes];
    let mut buf = Vec::with_capacity(args.msg_bytes);
    let measured = |seq| sched.measured(seq, args.warmup, args.window);
    loop {
        let now = Instant::now();
        while now < end && sched.due(next) <= now && next - received.min(next) < MAX_OUTSTANDING {
            msg[..8].copy_from_slice(&next.to_le_bytes());
            match t.session().send(flow, 0, &msg, next) {
                Ok(_) => {
                    tally.sent += u64::from(measured(next));
                    next += 1;
                }
                Err(SessionError::Push(_) | SessionError::Pool(_)) => {
                    tally.deferred += 1;
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let done = (now >= end && received >= next) || now >= drain_until;
        if done {
            break;
        }
        let wake = if now < end {
            sched.due(next).min(end)
        } else {
            drain_until
        };
        let mut c = t.session().poll_completion()?;
        if c.is_none() {
            c = t.idle(wake)?;
        }
        match c {
            Some(Completion::Received { head, len, .. }) => {
                let at = Instant::now();
                // take_received appends.
                buf.clear();
                t.session().take_received(head, len, &mut buf)?;
                let Some(seq) = buf
                    .get(..8)
                    .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                else {
                    tally.errors += 1;
                    continue;
                };
                received += 1;
                if seq < next && measured(seq) && !echoed.get(seq as usize).copied().unwrap_or(false) {
                    tally.received += 1;
                    rtts.push((at - sched.due(seq)).as_nanos() as u64);
                    if echoed.len() <= seq as usize {
                        echoed.resize(seq as usize + 1, false);
                    }
                    echoed[seq as usize] = true;
                }
            }
            Some(Completion::Error { .. }) => tally.errors += 1,
            Some(Completion::FlowClosed { flow: f, .. }) if f == flow => {
                tally.flow_lost = true;
                break;
            }
            _ => {}
        }
    }
    let stopped = Instant::now();
    let mut seq = 0;
    while sched.due(seq) < end {
        if measured(seq) && !echoed.get(seq as usize).copied().unwrap_or(false) {
            tally.unanswered += 1;
            rtts.push((stopped - sched.due(seq)).as_nanos() as u64);
        }
        seq += 1;
    }
    Ok((tally, rtts))
}

/// The echo peer's app: every message back on its flow and stream, until stdin closes
/// (the benchmark ends) or the host goes.
fn echo_main(socket: &std::path::Path, service: u32) -> Result<()> {
    let options = ClientOptions {
        completions: Completions::Block,
        completion_spin: Duration::ZERO,
    };
    let mut c = PonyClient::connect_with(socket, ENGINE, &options)
        .with_context(|| format!("attaching to {ENGINE} at {}", socket.display()))?;
    c.listen(service)?;
    // Stdin closing is the benchmark's way to stop us.
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = String::new();
        while std::io::stdin().lock().read_line(&mut sink).is_ok_and(|n| n > 0) {}
        let _ = stop_tx.send(());
    });
    println!("{READY}");
    std::io::stdout().flush()?;
    let mut buf = Vec::new();
    loop {
        if stop_rx.try_recv().is_ok() {
            return Ok(());
        }
        match c.wait_completion(Duration::from_millis(100))? {
            Some(Completion::Received {
                flow,
                stream,
                head,
                len,
                ..
            }) => {
                // take_received appends.
                buf.clear();
                c.session().take_received(head, len, &mut buf)?;
                // The pool may be short until the sender acknowledges: wait for room.
                c.send(flow, stream, &buf)?;
            }
            Some(
                Completion::FlowAccepted { .. } | Completion::Sent { .. } | Completion::FlowClosed { .. },
            )
            | None => {}
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_arguments_round_trip() {
        let a = AppArgs {
            stack: Stack::Host {
                socket: "/tmp/x/control.sock".into(),
            },
            peer: "10.78.0.2:7000".into(),
            service: 9,
            rate: 250.5,
            msg_bytes: 64,
            warmup: Duration::from_millis(200),
            window: Duration::from_millis(1500),
            out: "/tmp/x/app0.rtt".into(),
        };
        assert_eq!(AppArgs::parse(&a.to_args()).unwrap(), a);
        let linked = AppArgs {
            stack: Stack::Linked {
                bind: "10.78.0.1:7100".into(),
            },
            ..a.clone()
        };
        assert_eq!(AppArgs::parse(&linked.to_args()).unwrap(), linked);
        let mut bad = a.to_args();
        bad[4] = "0".into();
        assert!(AppArgs::parse(&bad).is_err());
        assert!(AppArgs::parse(&bad[..3]).is_err());
    }

    #[test]
    fn the_schedule_measures_messages_due_in_the_window_only() {
        let s = Schedule::new(Instant::now(), 1000.0);
        assert_eq!(s.due(10) - s.start, Duration::from_millis(10));
        let (warm, win) = (Duration::from_millis(100), Duration::from_millis(200));
        assert!(!s.measured(99, warm, win));
        assert!(s.measured(100, warm, win));
        assert!(s.measured(299, warm, win));
        assert!(!s.measured(300, warm, win));
    }
}
