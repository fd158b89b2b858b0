//! [`Received`]: the set of packet sequence numbers a flow has received, everything below
//! `cumulative` plus disjoint ranges above it, and the SACK blocks that describe it.
//!
//! Seeing a number twice is how duplicates are recognised: retransmissions reuse the
//! original sequence number, so a duplicate is dropped and re-acknowledged and its payload
//! never reaches reassembly twice.

use std::collections::{BTreeMap, VecDeque};

use crate::wire::heapless_sacks::Sacks;
use crate::wire::{PacketSeq, SackBlock, MAX_SACK_BLOCKS};

/// Packets this far beyond the cumulative ack are refused, which bounds the range set (a
/// well-behaved sender is limited far below this by its window and the receiver's credit).
pub(crate) const MAX_SEQ_AHEAD: u64 = 1 << 20;

/// The set of received packet sequence numbers.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Received {
    cumulative: PacketSeq,
    /// start -> end (half-open) of received ranges above `cumulative`, disjoint and not
    /// adjacent.
    ranges: BTreeMap<PacketSeq, PacketSeq>,
    /// Recently received out-of-order numbers, newest first, to order SACK blocks (RFC 2018:
    /// the block holding the newest packet goes first).
    recent: VecDeque<PacketSeq>,
}

impl Received {
    /// Every packet below this was received.
    pub(crate) fn cumulative(&self) -> PacketSeq {
        self.cumulative
    }

    /// Whether `seq` was already received.
    pub(crate) fn contains(&self, seq: PacketSeq) -> bool {
        if seq < self.cumulative {
            return true;
        }
        self.ranges
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, &end)| seq < end)
    }

    /// Records `seq` (which must not be [`contains`](Self::contains)ed). Returns whether it
    /// arrived in order (extended the cumulative point without leaving a hole behind).
    pub(crate) fn insert(&mut self, seq: PacketSeq) -> bool {
        debug_assert!(!self.contains(seq));
        let had_holes = !self.ranges.is_empty();
        if seq == self.cumulative {
            self.cumulative += 1;
            // Swallow a range that now touches the cumulative point.
            if let Some(end) = self.ranges.remove(&self.cumulative) {
                self.cumulative = end;
            }
            self.recent.retain(|&s| s >= self.cumulative);
            // Filling a hole is news the sender wants at once (RFC 5681 section 4.2).
            return !had_holes;
        }
        let mut start = seq;
        let mut end = seq + 1;
        if let Some((&s, &e)) = self.ranges.range(..seq).next_back() {
            if e == seq {
                start = s;
                self.ranges.remove(&s);
            }
        }
        if let Some(e) = self.ranges.remove(&end) {
            end = e;
        }
        self.ranges.insert(start, end);
        self.recent.retain(|&s| s != seq);
        self.recent.push_front(seq);
        self.recent.truncate(MAX_SACK_BLOCKS * 2);
        false
    }

    /// Up to [`MAX_SACK_BLOCKS`] blocks above the cumulative point, the most recently
    /// changed first, then the highest others.
    pub(crate) fn sacks(&self) -> Sacks {
        let mut out: Vec<SackBlock> = Vec::with_capacity(MAX_SACK_BLOCKS);
        let block_of = |seq: PacketSeq| {
            self.ranges
                .range(..=seq)
                .next_back()
                .filter(|(_, &e)| seq < e)
                .map(|(&start, &end)| SackBlock { start, end })
        };
        let recent = self.recent.iter().filter_map(|&s| block_of(s));
        let highest = self
            .ranges
            .iter()
            .rev()
            .map(|(&start, &end)| SackBlock { start, end });
        for b in recent.chain(highest) {
            if out.len() == MAX_SACK_BLOCKS {
                break;
            }
            if !out.contains(&b) {
                out.push(b);
            }
        }
        let mut sacks = Sacks::default();
        for b in out {
            sacks.push(b);
        }
        sacks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_set_and_sack_order() {
        let mut r = Received::default();
        assert!(r.insert(0));
        assert!(!r.insert(2));
        assert!(!r.insert(5));
        assert!(!r.insert(3));
        assert_eq!(r.cumulative(), 1);
        assert!(r.contains(0) && r.contains(2) && r.contains(3) && r.contains(5));
        assert!(!r.contains(1) && !r.contains(4));
        let sacks: Vec<_> = r.sacks().iter().collect();
        // 3 arrived last: its block (2..4) first
        assert_eq!(
            sacks,
            vec![SackBlock { start: 2, end: 4 }, SackBlock { start: 5, end: 6 }]
        );
        r.insert(1);
        assert_eq!(r.cumulative(), 4);
        r.insert(4);
        assert_eq!(r.cumulative(), 6);
        assert!(r.sacks().is_empty());
    }
}
