// SPDX-License-Identifier: GPL-2.0-only
//! The app side of one load point: an open-loop sender and a spinning
//! receiver on one thread, over one channel per echo engine.
//!
//! Open loop: request `seq` is *due* at `seq * interval` after the start,
//! whatever happened to the previous ones, and carries that due time. Its
//! round trip is measured from the due time, not from when it was actually
//! pushed, so a stall of the app or a full ring shows up as latency instead
//! of silently lowering the offered load (coordinated omission).
//!
//! ```text
//!   request/response (16 bytes): seq: u64 LE | due_ns: u64 LE
//!   channel of seq: seq % channels; each channel answers in order
//! ```
//!
//! Every response is checked: the right length, the next sequence number of
//! its channel, and the due time that sequence number was sent with. Any
//! mismatch, and any response missing once sending stops, is an error.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use snap_ipc::channel::ChannelAppEnd;
use snap_ipc::PushError;

use crate::latency::new_ns_histogram;

/// Phases the controlling thread moves the driver through.
pub const WARMUP: u8 = 0;
/// Completions are counted and their latency recorded.
pub const MEASURE: u8 = 1;
/// Stop sending, collect what is outstanding, return.
pub const DRAIN: u8 = 2;

const MSG_LEN: usize = 16;
/// How long outstanding responses may take once sending stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What one load point measured.
#[derive(Debug)]
pub struct Driven {
    /// Round trips (due time to receipt) of responses received while measuring, ns.
    pub rtt_ns: Histogram<u64>,
    /// Responses received while measuring.
    pub measured: u64,
    /// Length of the measuring phase as the driver saw it.
    pub window: Duration,
    /// Requests pushed in all phases.
    pub sent: u64,
    /// Responses received in all phases (equal to `sent`, or this is an error).
    pub received: u64,
    /// Requests that found their ring full when due (the engine fell behind).
    pub ring_full: u64,
}

fn encode(seq: u64, due_ns: u64) -> [u8; MSG_LEN] {
    let mut msg = [0u8; MSG_LEN];
    msg[..8].copy_from_slice(&seq.to_le_bytes());
    msg[8..].copy_from_slice(&due_ns.to_le_bytes());
    msg
}

fn decode(msg: &[u8]) -> (u64, u64) {
    let word = |r: std::ops::Range<usize>| u64::from_le_bytes(msg[r].try_into().expect("8 bytes"));
    (word(0..8), word(8..16))
}

/// Sends a request every `interval_ns` over `channels` round-robin until
/// `phase` says [`DRAIN`], then waits for every response. Runs on the calling
/// thread, spinning: pin it first.
pub fn drive(channels: &mut [ChannelAppEnd], interval_ns: f64, phase: &AtomicU8) -> Result<Driven> {
    let n = channels.len() as u64;
    if n == 0 || interval_ns.is_nan() || interval_ns <= 0.0 {
        bail!("need at least one channel and a positive interval (got {interval_ns} ns)");
    }
    let start = Instant::now();
    let now_ns = || start.elapsed().as_nanos() as u64;
    let due = |seq: u64| (seq as f64 * interval_ns) as u64;
    let mut out = Driven {
        rtt_ns: new_ns_histogram(),
        measured: 0,
        window: Duration::ZERO,
        sent: 0,
        received: 0,
        ring_full: 0,
    };
    // Next sequence number each channel must answer with.
    let mut expect: Vec<u64> = (0..n).collect();
    let mut buf = [0u8; 64];
    let mut measure_from: Option<Instant> = None;
    let mut last_full = u64::MAX;
    let mut drain_deadline: Option<Instant> = None;
    loop {
        let p = phase.load(Ordering::Acquire);
        if p == MEASURE && measure_from.is_none() {
            measure_from = Some(Instant::now());
        }
        if p == DRAIN && drain_deadline.is_none() {
            let now = Instant::now();
            out.window = measure_from.map_or(Duration::ZERO, |m| now - m);
            drain_deadline = Some(now + DRAIN_TIMEOUT);
        }
        let measuring = p == MEASURE;

        if drain_deadline.is_none() {
            let now = now_ns();
            while due(out.sent) <= now {
                let seq = out.sent;
                let ch = &mut channels[(seq % n) as usize];
                // push + ring: the doorbell write is skipped by the channel
                // unless the engine is blocked.
                match ch.send(&encode(seq, due(seq))) {
                    Ok(()) => out.sent += 1,
                    Err(PushError::Full) => {
                        // Counted once per request, however long it waits.
                        if last_full != seq {
                            last_full = seq;
                            out.ring_full += 1;
                        }
                        break;
                    }
                    Err(e) => return Err(e).context(format!("sending request {seq}")),
                }
            }
        }

        for (c, ch) in channels.iter_mut().enumerate() {
            while let Some(len) = ch.try_recv(&mut buf).with_context(|| format!("channel {c}"))? {
                let at = now_ns();
                if len != MSG_LEN {
                    bail!("channel {c}: response of {len} bytes, expected {MSG_LEN}");
                }
                let (seq, due_ns) = decode(&buf[..MSG_LEN]);
                let want = expect[c];
                if seq != want {
                    bail!(
                        "channel {c}: response {seq} arrived where {want} was expected ({})",
                        if seq < want {
                            "duplicate or reordered"
                        } else {
                            "responses lost"
                        }
                    );
                }
                if due_ns != due(seq) {
                    bail!(
                        "channel {c}: response {seq} carries due time {due_ns} ns, sent with {} ns",
                        due(seq)
                    );
                }
                expect[c] += n;
                out.received += 1;
                if measuring {
                    out.rtt_ns.saturating_record(at.saturating_sub(due_ns).max(1));
                    out.measured += 1;
                }
            }
        }

        if let Some(deadline) = drain_deadline {
            if out.received == out.sent {
                return Ok(out);
            }
            if out.received > out.sent {
                bail!("received {} responses for {} requests", out.received, out.sent);
            }
            if Instant::now() > deadline {
                bail!(
                    "{} of {} responses missing {DRAIN_TIMEOUT:?} after sending stopped",
                    out.sent - out.received,
                    out.sent
                );
            }
        }
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let msg = encode(7, 123_456_789);
        assert_eq!(decode(&msg), (7, 123_456_789));
    }
}
