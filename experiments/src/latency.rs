// SPDX-License-Identifier: GPL-2.0-only
//! Latency summaries: an HDR histogram of nanoseconds reduced to the
//! percentiles every report quotes ([`LatencySummary`]), in microseconds.

use hdrhistogram::Histogram;
use mq_report::LatencySummary;

/// Summarises a histogram whose values are nanoseconds.
pub fn summarise_ns(hist: &Histogram<u64>) -> LatencySummary {
    let us = |ns: u64| ns as f64 / 1000.0;
    LatencySummary {
        p50: us(hist.value_at_quantile(0.50)),
        p90: us(hist.value_at_quantile(0.90)),
        p99: us(hist.value_at_quantile(0.99)),
        max: us(hist.max()),
        samples: hist.len(),
    }
}

/// A histogram for nanosecond latencies from 1 ns to 100 s at 3 significant
/// digits: wide enough for a stalled VM, precise enough for µs wakeups.
pub fn new_ns_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("static histogram bounds are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_out_in_microseconds() {
        let mut h = new_ns_histogram();
        for i in 1..=100u64 {
            h.record(i * 1000).unwrap();
        }
        let s = summarise_ns(&h);
        assert_eq!(s.samples, 100);
        assert!((s.p50 - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.p99 - 99.0).abs() < 0.1, "{s:?}");
        assert!((s.max - 100.0).abs() < 0.1, "{s:?}");
        assert!(s.p90 <= s.p99 && s.p99 <= s.max);
    }
}
