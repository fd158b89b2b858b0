//! A token bucket kept as one timestamp (the GCRA form Carousel uses): instead of counting
//! tokens, a class remembers when its bucket would next be full again (`tat`), and every
//! packet gets a release time at which it conforms.
//!
//! With rate `r` and burst `B` bytes, a packet of `L` bytes costs `L/r` of time and may go
//! as soon as `tat + L/r - B/r ≤ now`. Times are kept in picoseconds (u128) so that a
//! packet's cost is exact to the picosecond at any rate from 1 bit/s to 100 Gbit/s+: the
//! long-run rate has no rounding drift.

/// Picoseconds per second.
const PS_PER_S: u128 = 1_000_000_000_000;

/// One class's bucket.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate_bps: u64,
    burst_bytes: u64,
    /// `burst_bytes` worth of time at the rate, ps: worked out once per setting, not per
    /// packet (a u128 division shows in the profile at millions of packets a second).
    burst_ps: u128,
    /// When the bucket is full again, in ps (0: never used).
    tat_ps: u128,
}

/// A release time worked out but not yet committed (the packet may be handed back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// When the packet may go, in ns, rounded up (never early).
    pub release_ns: u64,
    new_tat_ps: u128,
}

impl Bucket {
    /// A full bucket of `rate_bps` bits per second and `burst_bytes` (both ≥ 1, checked by
    /// the configuration).
    pub fn new(rate_bps: u64, burst_bytes: u64) -> Bucket {
        let mut bucket = Bucket {
            rate_bps: 1,
            burst_bytes: 0,
            burst_ps: 0,
            tat_ps: 0,
        };
        bucket.set(rate_bps, burst_bytes);
        bucket
    }

    /// The configured rate.
    pub fn rate_bps(&self) -> u64 {
        self.rate_bps
    }

    /// The configured burst.
    pub fn burst_bytes(&self) -> u64 {
        self.burst_bytes
    }

    /// New rate and burst; the bucket's state (how far ahead it is) stays, so that a
    /// change does not hand a backlogged class a fresh burst.
    pub fn set(&mut self, rate_bps: u64, burst_bytes: u64) {
        self.rate_bps = rate_bps.max(1);
        self.burst_bytes = burst_bytes;
        self.burst_ps = self.cost_ps(burst_bytes);
    }

    fn cost_ps(&self, bytes: u64) -> u128 {
        u128::from(bytes) * 8 * PS_PER_S / u128::from(self.rate_bps)
    }

    /// When a packet of `len` bytes offered at `now_ns` may go.
    pub fn stamp(&self, now_ns: u64, len: usize) -> Stamp {
        let now_ps = u128::from(now_ns) * 1000;
        let new_tat_ps = self.tat_ps.max(now_ps) + self.cost_ps(len as u64);
        let earliest_ps = new_tat_ps.saturating_sub(self.burst_ps);
        let release_ps = earliest_ps.max(now_ps);
        let release_ns = u64::try_from(release_ps.div_ceil(1000)).unwrap_or(u64::MAX);
        Stamp {
            release_ns,
            new_tat_ps,
        }
    }

    /// Commits a stamp from [`Bucket::stamp`] (the packet was taken).
    pub fn commit(&mut self, stamp: Stamp) {
        self.tat_ps = stamp.new_tat_ps;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_passes_its_burst_then_paces_at_the_rate() {
        // 8 Mbit/s = 1 byte per µs; burst 3000 bytes = three 1000-byte packets.
        let mut bucket = Bucket::new(8_000_000, 3000);
        let mut releases = vec![];
        for _ in 0..5 {
            let stamp = bucket.stamp(1_000_000, 1000);
            bucket.commit(stamp);
            releases.push(stamp.release_ns);
        }
        assert_eq!(
            releases,
            vec![1_000_000, 1_000_000, 1_000_000, 2_000_000, 3_000_000]
        );
    }

    #[test]
    fn an_uncommitted_stamp_changes_nothing() {
        let bucket = Bucket::new(8_000_000, 1000);
        let first = bucket.stamp(0, 1000);
        assert_eq!(bucket.stamp(0, 1000), first);
    }
}
