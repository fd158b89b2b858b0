//! The shaper against a simulated clock: achieved rates, bursts, fairness between equal
//! tenants, order within a class, backpressure and exact accounting.

use proptest::prelude::*;

use super::*;

/// A tiny deterministic generator (packet sizes), so that runs repeat exactly.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// A local sender that always has a packet to offer (sizes 64..=1500) and offers it again
/// when the shaper refuses it.
struct Greedy {
    tenant: u32,
    pending: Option<usize>,
    sizes: Lcg,
    offered_bytes: u64,
}

impl Greedy {
    fn new(tenant: u32, seed: u64) -> Greedy {
        Greedy {
            tenant,
            pending: None,
            sizes: Lcg(seed),
            offered_bytes: 0,
        }
    }
}

fn config(granularity_ns: u64, slots: usize, capacity: usize, classes: &[(u32, u64, u64)]) -> ShaperConfig {
    ShaperConfig {
        granularity_ns,
        slots,
        capacity,
        classes: classes
            .iter()
            .map(|&(tenant, rate_bps, burst_bytes)| ClassConfig {
                tenant,
                class: None,
                rate_bps,
                burst_bytes,
            })
            .collect(),
    }
}

/// Runs greedy senders for `duration_ns` in steps of `tick_ns`; returns the bytes each
/// tenant got out at or after `warmup_ns`, and the shaper.
fn run(
    mut shaper: Shaper<(u32, usize)>,
    senders: &mut [Greedy],
    tick_ns: u64,
    warmup_ns: u64,
    duration_ns: u64,
) -> (Vec<u64>, Shaper<(u32, usize)>) {
    let mut window = vec![0u64; senders.len()];
    let mut now = 0;
    while now <= duration_ns {
        let mut sent = |(tenant, len): (u32, usize), now: u64| {
            if now >= warmup_ns {
                window[tenant as usize] += len as u64;
            }
        };
        shaper.poll(now, |item| {
            sent(item, now);
            Ok(())
        });
        // Each sender offers until the shaper pushes back (at most 64 per tick).
        for sender in senders.iter_mut() {
            for _ in 0..64 {
                let len = *sender
                    .pending
                    .get_or_insert_with(|| 64 + sender.sizes.next(1500 - 64 + 1) as usize);
                match shaper.offer(now, sender.tenant, 0, len, (sender.tenant, len)) {
                    Offer::Now(item) => sent(item, now),
                    Offer::Held => {}
                    Offer::Refused(..) => break,
                }
                sender.pending = None;
                sender.offered_bytes += len as u64;
            }
        }
        now += tick_ns;
    }
    (window, shaper)
}

fn mbps(bytes: u64, ns: u64) -> f64 {
    bytes as f64 * 8.0 * 1e3 / ns as f64
}

#[test]
fn achieved_rate_is_within_2_percent_from_10_mbit_to_10_gbit() {
    for rate_bps in [10_000_000u64, 100_000_000, 1_000_000_000, 10_000_000_000] {
        // About 20,000 average packets (~780 bytes); the wheel paces at 1/8 of a packet.
        let packet_ns = 782 * 8 * 1_000_000_000 / rate_bps;
        let granularity = (packet_ns / 8).max(1);
        let shaper = Shaper::new(config(granularity, 4096, 1024, &[(0, rate_bps, 3000)])).unwrap();
        let mut senders = [Greedy::new(0, rate_bps)];
        let duration = packet_ns * 20_000;
        let warmup = duration / 10;
        let (window, shaper) = run(shaper, &mut senders, (packet_ns / 3).max(1), warmup, duration);
        let achieved = mbps(window[0], duration - warmup);
        let configured = rate_bps as f64 / 1e6;
        let error = (achieved - configured).abs() / configured;
        assert!(
            error <= 0.02,
            "{configured} Mbit/s configured, {achieved:.3} achieved"
        );
        // Exact accounting: every byte the sender handed over is sent or still held, and
        // the wheel holds what the class says it holds.
        let counters = shaper.class_counters(0, None).unwrap();
        assert_eq!(
            senders[0].offered_bytes,
            counters.sent_bytes + counters.held_bytes
        );
        assert_eq!(shaper.held() as u64, counters.held_packets);
        assert!(counters.delayed_bytes >= counters.held_bytes);
        assert!(counters.refused_packets > 0, "the greedy sender met backpressure");
    }
}

#[test]
fn two_equal_tenants_get_shares_within_5_percent() {
    let rate = 1_000_000_000;
    let shaper = Shaper::new(config(150, 4096, 2048, &[(0, rate, 3000), (1, rate, 3000)])).unwrap();
    // Different size streams from the two tenants.
    let mut senders = [Greedy::new(0, 7), Greedy::new(1, 99)];
    let (window, _) = run(shaper, &mut senders, 400, 2_000_000, 20_000_000);
    let (a, b) = (window[0] as f64, window[1] as f64);
    assert!((a - b).abs() / a.max(b) <= 0.05, "{a} vs {b} bytes");
    for bytes in window {
        let achieved = mbps(bytes, 18_000_000);
        assert!((achieved - 1000.0).abs() / 1000.0 <= 0.02, "{achieved} Mbit/s");
    }
}

#[test]
fn a_burst_goes_at_once_and_never_more_than_the_burst() {
    // 1 Gbit/s, 15,000-byte burst: ten 1500-byte packets back to back.
    let mut shaper = Shaper::new(config(100, 1024, 64, &[(3, 1_000_000_000, 15_000)])).unwrap();
    for start in [1_000_000u64, 10_000_000_000] {
        let offers: Vec<_> = (0..12)
            .map(|i| matches!(shaper.offer(start, 3, 0, 1500, i), Offer::Now(_)))
            .collect();
        assert_eq!(offers.iter().filter(|now| **now).count(), 10);
        assert!(offers[..10].iter().all(|now| *now));
        // The 11th waits one packet time (12 µs at 1 Gbit/s).
        let mut out = vec![];
        shaper.poll(start + 11_999, |item| {
            out.push(item);
            Ok(())
        });
        assert!(out.is_empty());
        shaper.poll(start + 12_000, |item| {
            out.push(item);
            Ok(())
        });
        assert_eq!(out, vec![10]);
        shaper.poll(start + 24_000, |item| {
            out.push(item);
            Ok(())
        });
        assert_eq!(out, vec![10, 11]);
    }
    let counters = shaper.class_counters(3, None).unwrap();
    assert_eq!(counters.sent_packets, 24);
    assert_eq!(counters.delayed_packets, 4);
    assert_eq!(counters.delayed_bytes, 6000);
}

#[test]
fn a_refused_packet_comes_back_and_leaves_the_bucket_as_it_was() {
    // 8 Mbit/s = 1 byte/µs; burst 1000; a wheel of 2 packets and a 10 ms horizon.
    let cfg = config(1_000_000, 10, 2, &[(0, 8_000_000, 1000)]);
    let mut shaper = Shaper::new(cfg.clone()).unwrap();
    let mut twin = Shaper::new(cfg).unwrap();
    for shaper in [&mut shaper, &mut twin] {
        assert_eq!(shaper.offer(0, 0, 0, 1000, 1), Offer::Now(1));
        assert_eq!(shaper.offer(0, 0, 0, 1000, 2), Offer::Held);
        assert_eq!(shaper.offer(0, 0, 0, 1000, 3), Offer::Held);
    }
    assert_eq!(shaper.offer(0, 0, 0, 1000, 4), Offer::Refused(Refusal::Full, 4));
    assert!(!shaper.has_room());
    let (mut out, mut twin_out) = (vec![], vec![]);
    shaper.poll(1_000_000, |item| {
        out.push(item);
        Ok(())
    });
    twin.poll(1_000_000, |item| {
        twin_out.push(item);
        Ok(())
    });
    assert_eq!(out, vec![2]);
    // Offered again, packet 4 gets the release time it would have had: the refusal
    // changed nothing.
    assert_eq!(shaper.offer(1_000_000, 0, 0, 1000, 4), Offer::Held);
    assert_eq!(twin.offer(1_000_000, 0, 0, 1000, 4), Offer::Held);
    assert_eq!(shaper.next_due_ns(), twin.next_due_ns());
    // Past the horizon: 12 packets queued ahead at 1 ms each is beyond 10 ms.
    let mut far = Shaper::new(config(1_000_000, 10, 64, &[(0, 8_000_000, 1000)])).unwrap();
    let refusals: Vec<_> = (0..12)
        .filter_map(|i| match far.offer(0, 0, 0, 1000, i) {
            Offer::Refused(why, item) => Some((why, item)),
            _ => None,
        })
        .collect();
    assert_eq!(refusals.first(), Some(&(Refusal::PastHorizon, 10)));
    let counters = shaper.class_counters(0, None).unwrap();
    assert_eq!((counters.refused_packets, counters.refused_bytes), (1, 1000));
}

#[test]
fn an_update_keeps_a_backlogged_class_from_a_fresh_burst() {
    let cfg = config(100_000, 1000, 64, &[(0, 8_000_000, 1000)]);
    let mut shaper = Shaper::new(cfg.clone()).unwrap();
    for i in 0..5 {
        shaper.offer(0, 0, 0, 1000, i);
    }
    // Double the rate: the bucket stays 5 ms ahead (the backlog of 4 packets plus the
    // burst spent); the next packet goes at 5 ms, not at once.
    let mut faster = cfg;
    faster.classes[0].rate_bps = 16_000_000;
    shaper.update(faster).unwrap();
    assert_eq!(shaper.offer(0, 0, 0, 1000, 5), Offer::Held);
    let mut out = vec![];
    shaper.poll(4_999_999, |item| {
        out.push(item);
        Ok(())
    });
    assert_eq!(out, vec![1, 2, 3, 4]);
    shaper.poll(5_000_000, |item| {
        out.push(item);
        Ok(())
    });
    assert_eq!(out, vec![1, 2, 3, 4, 5]);
    // A reshaped wheel while packets are held is refused whole.
    let mut reshaped = shaper.config().clone();
    reshaped.slots = 10;
    shaper.offer(5_000_000, 0, 0, 1000, 6);
    assert_eq!(shaper.update(reshaped), Err(ShaperConfigError::WheelBusy));
}

#[test]
fn bad_configurations_are_refused() {
    let zero = config(1_000, 10, 2, &[(0, 0, 1000)]);
    assert!(matches!(
        Shaper::<()>::new(zero),
        Err(ShaperConfigError::ZeroLimit { .. })
    ));
    let twice = config(1_000, 10, 2, &[(0, 1, 1), (0, 2, 2)]);
    assert!(matches!(
        Shaper::<()>::new(twice),
        Err(ShaperConfigError::Duplicate { .. })
    ));
    assert!(Shaper::<()>::new(config(0, 10, 2, &[])).is_err());
    assert!(Shaper::<()>::new(config(1, 0, 2, &[])).is_err());
    assert!(Shaper::<()>::new(config(1, 1, 0, &[])).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random offers of three classes (one unshaped) at random times: within every class
    /// packets leave in the order they were taken, never before their bucket allows, and
    /// every byte taken is sent or held.
    #[test]
    fn order_is_kept_within_a_class(
        offers in proptest::collection::vec((0u32..3, 64usize..1500, 0u64..20_000), 1..300),
    ) {
        let mut shaper = Shaper::new(config(500, 64, 128, &[(0, 100_000_000, 3000), (1, 40_000_000, 1500)])).unwrap();
        let mut now = 0;
        let mut next_seq = [0u64; 3];
        let mut last_out = [None::<u64>; 3];
        let mut taken = [0u64; 3];
        let mut out_bytes = [0u64; 3];
        let mut check = |(tenant, seq, len): (u32, u64, usize), last_out: &mut [Option<u64>; 3]| {
            let t = tenant as usize;
            assert!(last_out[t].is_none_or(|last| last < seq), "class {tenant}: {seq} after {:?}", last_out[t]);
            last_out[t] = Some(seq);
            out_bytes[t] += len as u64;
        };
        for (tenant, len, gap) in offers {
            now += gap;
            shaper.poll(now, |item| { check(item, &mut last_out); Ok(()) });
            let t = tenant as usize;
            let item = (tenant, next_seq[t], len);
            match shaper.offer(now, tenant, 0, len, item) {
                Offer::Now(item) => { check(item, &mut last_out); }
                Offer::Held => {}
                Offer::Refused(_, _) => continue,
            }
            next_seq[t] += 1;
            taken[t] += len as u64;
        }
        shaper.poll(u64::MAX / 2, |item| { check(item, &mut last_out); Ok(()) });
        prop_assert_eq!(shaper.held(), 0);
        prop_assert_eq!(out_bytes, taken);
        for tenant in 0..2u32 {
            let counters = shaper.class_counters(tenant, None).unwrap();
            prop_assert_eq!(counters.sent_bytes, taken[tenant as usize]);
        }
        prop_assert_eq!(shaper.counters().unshaped.sent_bytes, taken[2]);
    }
}
