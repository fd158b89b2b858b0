// SPDX-License-Identifier: GPL-2.0-only
//! The ping-pong's view of time: its round trips (each stamped with when its echo arrived)
//! in bins for the report's plot, and, around each upgrade, the longest time without an
//! echo and the longest round trip.

use mq_report::upgrade::RttBin;

/// Width of an RTT bin, ms: narrow enough that a blackout of a few ms stands out as one
/// bin's maximum, wide enough that a run of tens of seconds stays a few thousand points.
pub const BIN_MS: f64 = 10.0;
/// How far before snapctl starts and after it returns an upgrade's window reaches, ms.
pub const MARGIN_MS: f64 = 50.0;

/// `samples` (arrival ns, round trip ns; in arrival order) in [`BIN_MS`] bins, empty bins
/// left out.
pub fn bins(samples: &[(u64, u64)]) -> Vec<RttBin> {
    let width = (BIN_MS * 1e6) as u64;
    let mut out = Vec::new();
    let mut i = 0;
    while i < samples.len() {
        let bin = samples[i].0 / width;
        let mut rtts: Vec<u64> = samples[i..]
            .iter()
            .take_while(|s| s.0 / width == bin)
            .map(|s| s.1)
            .collect();
        i += rtts.len();
        rtts.sort_unstable();
        out.push(RttBin {
            t_ms: bin as f64 * BIN_MS,
            n: rtts.len() as u64,
            p50_us: rtts[(rtts.len() - 1) / 2] as f64 / 1e3,
            max_us: *rtts.last().expect("a bin has a sample") as f64 / 1e3,
        });
    }
    out
}

/// The median round trip, µs.
pub fn p50_us(samples: &[(u64, u64)]) -> Option<f64> {
    let mut rtts: Vec<u64> = samples.iter().map(|s| s.1).collect();
    rtts.sort_unstable();
    rtts.get(rtts.len().saturating_sub(1) / 2)
        .map(|&v| v as f64 / 1e3)
}

/// Around `[from_ms, to_ms]` widened by [`MARGIN_MS`]: the longest time between two
/// consecutive echoes that reaches into it (the echo before the window counts, so a
/// blackout that starts the window is not missed) and the longest round trip that ended in
/// it; both ms, `None` without an echo in the window.
pub fn around(samples: &[(u64, u64)], from_ms: f64, to_ms: f64) -> (Option<f64>, Option<f64>) {
    let lo = ((from_ms - MARGIN_MS).max(0.0) * 1e6) as u64;
    let hi = ((to_ms + MARGIN_MS) * 1e6) as u64;
    let first = samples.partition_point(|s| s.0 < lo);
    let end = samples.partition_point(|s| s.0 <= hi);
    if first == end {
        return (None, None);
    }
    let mut gap = 0;
    for i in first.max(1)..end {
        gap = gap.max(samples[i].0 - samples[i - 1].0);
    }
    let max_rtt = samples[first..end].iter().map(|s| s.1).max();
    (Some(gap as f64 / 1e6), max_rtt.map(|v| v as f64 / 1e6))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn bins_hold_each_sample_once_with_their_median_and_max() {
        let s = [
            (MS, 50_000),
            (2 * MS, 70_000),
            (3 * MS, 60_000),
            (25 * MS, 900_000),
        ];
        let b = bins(&s);
        assert_eq!(b.len(), 2);
        assert_eq!(
            (b[0].t_ms, b[0].n, b[0].p50_us, b[0].max_us),
            (0.0, 3, 60.0, 70.0)
        );
        assert_eq!((b[1].t_ms, b[1].n, b[1].max_us), (20.0, 1, 900.0));
        assert!(bins(&[]).is_empty());
        assert_eq!(p50_us(&s), Some(60.0));
        assert_eq!(p50_us(&[]), None);
    }

    #[test]
    fn the_gap_around_an_upgrade_includes_the_echo_before_it() {
        // Echoes every ms, then none from 100 to 130 ms.
        let mut s: Vec<(u64, u64)> = (0..=100).map(|t| (t * MS, 60_000)).collect();
        s.push((130 * MS, 30 * MS));
        s.extend((131..300).map(|t| (t * MS, 60_000)));
        let (gap, rtt) = around(&s, 160.0, 170.0);
        assert_eq!(
            (gap, rtt),
            (Some(30.0), Some(30.0)),
            "window 110..220 reaches the gap"
        );
        let (gap, rtt) = around(&s, 250.0, 260.0);
        assert_eq!((gap, rtt), (Some(1.0), Some(0.06)));
        assert_eq!(around(&s, 1000.0, 1010.0), (None, None));
    }
}
