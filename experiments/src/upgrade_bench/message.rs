// SPDX-License-Identifier: GPL-2.0-only
//! The benchmark's messages and their exact check at the receiver.
//!
//! ```text
//!  0      4          12       16                  len-4     len
//!  │ flow │ sequence │ length │ payload(flow, seq) │ CRC32C │
//! ```
//!
//! `flow` is the sender's index of the flow (the receiver's flow ids differ), `sequence`
//! counts from 0 per flow, `length` is the whole message's, and the CRC32C covers every
//! byte before it. A receiver keeps, per flow, the highest sequence seen and the ranges
//! skipped below it, so each message is exactly one of: in order, late (reordered: it
//! arrives after a later one of its flow), duplicated (it arrived before), or corrupt (its
//! checksum or framing is wrong). Lost is what the sender counted as sent and never
//! arrived, known once the sender says how many it sent ([`Checker::finish`]).

use std::collections::{BTreeMap, HashMap};

use mq_report::upgrade::Check;

/// Bytes of the header (flow, sequence, length) and the trailing checksum.
pub const OVERHEAD: usize = 16 + 4;

/// Writes message `seq` of flow `flow`, `len` bytes (at least [`OVERHEAD`]), into `out`.
pub fn encode(flow: u32, seq: u64, len: usize, out: &mut Vec<u8>) {
    assert!(len >= OVERHEAD, "a message has at least {OVERHEAD} bytes");
    out.clear();
    out.extend_from_slice(&flow.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(len as u32).to_le_bytes());
    let fill = (seq as u8).wrapping_mul(31).wrapping_add(flow as u8);
    out.extend((0..len - OVERHEAD).map(|i| fill.wrapping_add(i as u8)));
    let crc = crc32c::crc32c(out);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// The flow index and sequence of an intact message, or `None`.
pub fn decode(msg: &[u8]) -> Option<(u32, u64)> {
    if msg.len() < OVERHEAD {
        return None;
    }
    let (body, crc) = msg.split_at(msg.len() - 4);
    if crc32c::crc32c(body).to_le_bytes() != crc {
        return None;
    }
    let flow = u32::from_le_bytes(body[0..4].try_into().ok()?);
    let seq = u64::from_le_bytes(body[4..12].try_into().ok()?);
    let len = u32::from_le_bytes(body[12..16].try_into().ok()?);
    (len as usize == msg.len()).then_some((flow, seq))
}

/// What a receiver made of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    InOrder,
    Reordered,
    Duplicated,
    Corrupt,
}

/// One flow's receive state.
#[derive(Debug, Default)]
struct FlowState {
    /// One past the highest sequence seen.
    next: u64,
    /// Skipped sequences below `next`, as start → end (exclusive) ranges.
    missing: BTreeMap<u64, u64>,
    received: u64,
    duplicated: u64,
    reordered: u64,
}

/// A receiver's exact counts over its flows (keyed by the sender's flow index).
#[derive(Debug)]
pub struct Checker {
    traffic: &'static str,
    flows: HashMap<u32, FlowState>,
    /// The receiver's own flow id each index came on first: a message of a known index on
    /// another flow is misrouted, so corrupt.
    routes: HashMap<u32, u64>,
    corrupt: u64,
}

impl Checker {
    pub fn new(traffic: &'static str) -> Self {
        Self {
            traffic,
            flows: HashMap::new(),
            routes: HashMap::new(),
            corrupt: 0,
        }
    }

    /// Checks `msg`, which arrived on the receiver's flow `on`.
    pub fn check(&mut self, on: u64, msg: &[u8]) -> Verdict {
        let Some((flow, seq)) = decode(msg) else {
            self.corrupt += 1;
            return Verdict::Corrupt;
        };
        if *self.routes.entry(flow).or_insert(on) != on {
            self.corrupt += 1;
            return Verdict::Corrupt;
        }
        let f = self.flows.entry(flow).or_default();
        if seq >= f.next {
            if seq > f.next {
                f.missing.insert(f.next, seq);
            }
            f.next = seq + 1;
            f.received += 1;
            return Verdict::InOrder;
        }
        // Below the highest seen: a late one if it is in a skipped range, else a repeat.
        let Some((&start, &end)) = f.missing.range(..=seq).next_back() else {
            f.duplicated += 1;
            return Verdict::Duplicated;
        };
        if seq >= end {
            f.duplicated += 1;
            return Verdict::Duplicated;
        }
        f.missing.remove(&start);
        if start < seq {
            f.missing.insert(start, seq);
        }
        if seq + 1 < end {
            f.missing.insert(seq + 1, end);
        }
        f.received += 1;
        f.reordered += 1;
        Verdict::Reordered
    }

    /// Distinct intact messages received so far.
    pub fn received(&self) -> u64 {
        self.flows.values().map(|f| f.received).sum()
    }

    /// The counts, given how many messages the sender sent on each flow index. A sequence
    /// at or beyond a flow's sent count (the sender never sent it) is counted corrupt.
    pub fn finish(&self, sent: &[u64]) -> Check {
        let mut c = Check {
            traffic: self.traffic.to_string(),
            flows: sent.len(),
            sent: sent.iter().sum(),
            received: 0,
            lost: 0,
            duplicated: 0,
            reordered: 0,
            corrupt: self.corrupt,
        };
        for (&flow, f) in &self.flows {
            let n = sent.get(flow as usize).copied().unwrap_or(0);
            let beyond = f.next.saturating_sub(n);
            c.corrupt += beyond;
            c.received += f.received - beyond.min(f.received);
            c.duplicated += f.duplicated;
            c.reordered += f.reordered;
        }
        c.lost = c.sent.saturating_sub(c.received);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(flow: u32, seq: u64) -> Vec<u8> {
        let mut m = Vec::new();
        encode(flow, seq, 64, &mut m);
        m
    }

    #[test]
    fn messages_round_trip_and_any_flipped_bit_is_caught() {
        let m = msg(7, 123_456);
        assert_eq!(m.len(), 64);
        assert_eq!(decode(&m), Some((7, 123_456)));
        for bit in 0..m.len() * 8 {
            let mut bad = m.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(decode(&bad), None, "bit {bit}");
        }
        assert_eq!(decode(&m[..40]), None);
        assert_eq!(decode(&[]), None);
    }

    #[test]
    fn in_order_delivery_counts_nothing_wrong() {
        let mut c = Checker::new("bulk");
        for seq in 0..10 {
            for flow in 0..3 {
                assert_eq!(c.check(100 + flow as u64, &msg(flow, seq)), Verdict::InOrder);
            }
        }
        let r = c.finish(&[10, 10, 10]);
        assert_eq!(
            (r.sent, r.received, r.lost, r.duplicated, r.reordered, r.corrupt),
            (30, 30, 0, 0, 0, 0)
        );
    }

    #[test]
    fn each_fault_is_counted_exactly_once() {
        let mut c = Checker::new("bulk");
        let v: Vec<Verdict> = [0, 1, 4, 2, 2, 6, 1, 5]
            .iter()
            .map(|&s| c.check(1, &msg(0, s)))
            .collect();
        use Verdict::*;
        assert_eq!(
            v,
            [InOrder, InOrder, InOrder, Reordered, Duplicated, InOrder, Duplicated, Reordered]
        );
        let mut bad = msg(0, 7);
        bad[20] ^= 1;
        assert_eq!(c.check(1, &bad), Corrupt);
        // Misrouted: flow index 0 on another receiver flow.
        assert_eq!(c.check(2, &msg(0, 7)), Corrupt);
        // Sent 0..=8: 3 never arrived, 7 arrived only damaged, 8 never.
        let r = c.finish(&[9]);
        assert_eq!(r.received, 6);
        assert_eq!((r.lost, r.duplicated, r.reordered, r.corrupt), (3, 2, 2, 2));
    }

    #[test]
    fn a_sequence_never_sent_is_corrupt_not_received() {
        let mut c = Checker::new("bulk");
        for s in 0..5 {
            c.check(1, &msg(0, s));
        }
        let r = c.finish(&[3]);
        assert_eq!((r.received, r.lost, r.corrupt), (3, 0, 2));
    }
}
