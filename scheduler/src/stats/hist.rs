// SPDX-License-Identifier: GPL-2.0-only
//! The BPF program's log-linear histograms (layout in `bpf/intf.h`), read
//! back into percentiles. Buckets split every power of two in four, so a
//! percentile is the midpoint of its bucket: within 12.5% of the truth.

use crate::bpf_intf;

pub const BUCKETS: usize = bpf_intf::mq_hist_consts_MQ_HIST_BUCKETS as usize;
const SUB_BITS: u32 = bpf_intf::mq_hist_consts_MQ_HIST_SUB_BITS;

/// Bucket counts of one histogram, summed over CPUs or for one CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hist {
    pub buckets: Vec<u64>,
    /// Largest value ever recorded (not reset between snapshots).
    pub max: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Self {
            buckets: vec![0; BUCKETS],
            max: 0,
        }
    }
}

/// The bucket a value falls into; mirrors `hist_bucket()` in hist.bpf.h
/// (the tests check the two layouts agree through `bucket_range`).
#[cfg(test)]
pub fn bucket_of(v: u64) -> usize {
    if v < 1 << SUB_BITS {
        return v as usize;
    }
    let m = 63 - v.leading_zeros();
    ((m << SUB_BITS) | ((v >> (m - SUB_BITS)) as u32 & ((1 << SUB_BITS) - 1))) as usize
}

/// The `[low, high)` range of values a bucket holds.
pub fn bucket_range(b: usize) -> (u64, u64) {
    if b < 1 << SUB_BITS {
        return (b as u64, b as u64 + 1);
    }
    let m = (b >> SUB_BITS) as u32;
    if m < SUB_BITS {
        return (0, 0); // buckets 4..7: no value maps there
    }
    let sub = (b & ((1 << SUB_BITS) - 1)) as u64;
    let step = 1u64 << (m - SUB_BITS);
    let low = (1u64 << m) + sub * step;
    (low, low.saturating_add(step))
}

impl Hist {
    /// Parses the raw `struct mq_hist` bytes of one CPU.
    pub fn from_bytes(raw: &[u8]) -> Self {
        let words: Vec<u64> = raw
            .chunks_exact(8)
            .map(|w| u64::from_ne_bytes(w.try_into().expect("8-byte chunk")))
            .collect();
        let mut h = Self::default();
        for (dst, src) in h.buckets.iter_mut().zip(&words) {
            *dst = *src;
        }
        h.max = words.get(BUCKETS).copied().unwrap_or(0);
        h
    }

    /// What was recorded between `earlier` and `self`.
    pub fn since(&self, earlier: &Hist) -> Hist {
        Hist {
            buckets: self
                .buckets
                .iter()
                .zip(&earlier.buckets)
                .map(|(a, b)| a.wrapping_sub(*b))
                .collect(),
            max: self.max,
        }
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The value at quantile `q` (0..=1), as its bucket's midpoint; `None`
    /// when nothing was recorded.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let (low, high) = bucket_range(b);
                return Some((low as f64 + high as f64) / 2.0);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_lies_in_the_range_of_its_bucket() {
        for v in (0..5000u64).chain([1 << 20, 123_456_789, u64::MAX / 3]) {
            let (low, high) = bucket_range(bucket_of(v));
            assert!(low <= v && v < high, "{v} not in [{low}, {high})");
        }
    }

    #[test]
    fn buckets_are_contiguous_and_fit_the_bpf_array() {
        assert!(bucket_of(u64::MAX) < BUCKETS);
        for b in 4..bucket_of(1 << 40) {
            if bucket_range(b).0 == 0 {
                continue; // the unused buckets 4..7
            }
            let next = (b + 1..BUCKETS).find(|&n| bucket_range(n).0 != 0).unwrap();
            assert_eq!(bucket_range(b).1, bucket_range(next).0, "gap after bucket {b}");
        }
    }

    #[test]
    fn quantiles_are_within_an_eighth_of_the_truth() {
        let mut h = Hist::default();
        for v in 1..=1000u64 {
            h.buckets[bucket_of(v * 1000)] += 1;
        }
        let p50 = h.quantile(0.5).unwrap();
        let p99 = h.quantile(0.99).unwrap();
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.125, "p50 {p50}");
        assert!((p99 - 990_000.0).abs() / 990_000.0 < 0.125, "p99 {p99}");
        assert_eq!(Hist::default().quantile(0.5), None);
    }

    #[test]
    fn parses_the_c_layout_and_subtracts_snapshots() {
        let mut raw = vec![0u8; (BUCKETS + 1) * 8];
        raw[8 * 10..8 * 11].copy_from_slice(&5u64.to_ne_bytes());
        raw[8 * BUCKETS..].copy_from_slice(&777u64.to_ne_bytes());
        let later = Hist::from_bytes(&raw);
        assert_eq!((later.buckets[10], later.max), (5, 777));
        let mut earlier = Hist::default();
        earlier.buckets[10] = 2;
        assert_eq!(later.since(&earlier).buckets[10], 3);
    }
}
