//! Tests of [`FaultyNic`] over an in-memory loopback: rates match the configuration over
//! 100k packets with a fixed seed, corruption flips exactly one bit, reordering and delay
//! hold packets as documented, and runs are deterministic.

use super::*;

/// A NIC whose sends come back out of its own `recv`: a perfect wire, with an optional
/// queue limit to exercise back-pressure.
#[derive(Debug, Default)]
struct Loopback {
    queue: VecDeque<Vec<u8>>,
    limit: Option<usize>,
    stats: NicStats,
}

impl Nic for Loopback {
    fn send(&mut self, packet: &[u8], _to: &PeerAddr) -> Result<(), NicError> {
        if self.limit.is_some_and(|l| self.queue.len() >= l) {
            self.stats.tx_full += 1;
            return Err(NicError::WouldBlock);
        }
        self.queue.push_back(packet.to_vec());
        self.stats.tx_packets += 1;
        Ok(())
    }
    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<(usize, PeerAddr)>, NicError> {
        Ok(self.queue.pop_front().map(|p| {
            buf[..p.len()].copy_from_slice(&p);
            self.stats.rx_packets += 1;
            (p.len(), PeerAddr::Shm)
        }))
    }
    fn wake_source(&self) -> Option<WakeSource> {
        None
    }
    fn mtu(&self) -> usize {
        1500
    }
    fn stats(&self) -> NicStats {
        self.stats
    }
}

const N: u64 = 100_000;
const TO: PeerAddr = PeerAddr::Shm;

fn numbered(seq: u64) -> [u8; 64] {
    let mut p = [0xA5u8; 64];
    p[..8].copy_from_slice(&seq.to_le_bytes());
    p
}

/// Checks an observed count against a binomial(n, p) expectation within 5 standard
/// deviations (a false failure is then a one-in-millions event, and the seed is fixed
/// anyway); the tolerance stays tight enough to catch a wrong rate.
fn assert_rate(what: &str, count: u64, n: u64, p: f64) {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    assert!(
        (count as f64 - mean).abs() <= 5.0 * sd + 1.0,
        "{what}: {count} of {n}, expected {mean:.0} ± {:.0}",
        5.0 * sd
    );
}

fn drain(nic: &mut impl Nic) -> Vec<Vec<u8>> {
    let mut buf = [0u8; 1500];
    let mut out = Vec::new();
    while let Some((n, _)) = nic.recv(&mut buf).unwrap() {
        out.push(buf[..n].to_vec());
    }
    out
}

fn all_faults(seed: u64) -> FaultConfig {
    FaultConfig {
        seed,
        loss: 0.10,
        corrupt: 0.02,
        duplicate: 0.05,
        reorder: 0.03,
        reorder_by: 3,
        reorder_max_hold: Duration::from_secs(3600),
        delay: 0.04,
        delay_by: Duration::ZERO,
        ..FaultConfig::default()
    }
}

#[test]
fn nic_faulty_send_rates_match_config_over_100k_packets() {
    let mut nic = FaultyNic::new(Loopback::default()).on_send(all_faults(7));
    let mut received = Vec::new();
    for seq in 0..N {
        nic.send(&numbered(seq), &TO).unwrap();
        if seq % 1000 == 0 {
            received.extend(drain(nic.inner_mut()));
        }
    }
    nic.flush().unwrap();
    received.extend(drain(nic.inner_mut()));
    let f = nic.send_faults();
    assert_eq!(f.packets, N);
    assert_rate("loss", f.dropped, N, 0.10);
    let survivors = N - f.dropped;
    assert_rate("corrupt", f.corrupted, survivors, 0.02);
    assert_rate("duplicate", f.duplicated, survivors, 0.05);
    assert_rate("reorder", f.reordered, survivors, 0.03);
    assert_rate("delay", f.delayed, survivors - f.reordered, 0.04);
    assert_eq!(
        f.released,
        f.reordered + f.delayed,
        "flush lets every held packet out"
    );
    // Conservation: what came out is the survivors plus the duplicates.
    assert_eq!(received.len() as u64, survivors + f.duplicated);
    assert_eq!(nic.stats().tx_packets, survivors + f.duplicated);

    // Corruption flips exactly one bit: every packet either matches some original exactly
    // or differs from the one it came from in exactly one bit (the sequence number itself
    // may be the bit hit, so compare against the nearest original by Hamming distance).
    let mut flipped = 0;
    for p in &received {
        let seq = u64::from_le_bytes(p[..8].try_into().unwrap());
        let distance =
            |orig: &[u8; 64]| -> u32 { orig.iter().zip(p).map(|(a, b)| (a ^ b).count_ones()).sum() };
        let d = if seq < N {
            distance(&numbered(seq))
        } else {
            u32::MAX
        };
        let d = if d == 0 {
            0
        } else {
            // The flipped bit was in the sequence number: the original is one bit away.
            let by_seq = (0..64).map(|bit| seq ^ (1 << bit)).filter(|s| *s < N);
            d.min(by_seq.map(|s| distance(&numbered(s))).min().unwrap_or(u32::MAX))
        };
        assert!(d <= 1, "a packet differs from every original in {d} bits");
        flipped += d as u64;
    }
    // A corrupted packet that was also duplicated arrives corrupted twice.
    assert!(
        flipped >= f.corrupted && flipped <= 2 * f.corrupted,
        "{flipped} vs {f:?}"
    );
}

#[test]
fn nic_faulty_corruption_flips_exactly_one_bit_of_a_copy() {
    let cfg = FaultConfig {
        seed: 3,
        corrupt: 1.0,
        ..FaultConfig::default()
    };
    let mut nic = FaultyNic::new(Loopback::default()).on_send(cfg);
    let original = [0x5Au8; 100];
    for _ in 0..1000 {
        nic.send(&original, &TO).unwrap();
    }
    let out = drain(nic.inner_mut());
    assert_eq!(out.len(), 1000);
    for p in &out {
        let bits: u32 = p.iter().zip(&original).map(|(a, b)| (a ^ b).count_ones()).sum();
        assert_eq!(bits, 1);
    }
    // The bit is random: many distinct positions over 1000 packets.
    let mut positions: Vec<_> = out
        .iter()
        .map(|p| p.iter().position(|&b| b != 0x5A).unwrap())
        .collect();
    positions.sort_unstable();
    positions.dedup();
    assert!(positions.len() > 50, "{} distinct bytes hit", positions.len());
    assert_eq!(original, [0x5Au8; 100], "the caller's buffer is untouched");
}

#[test]
fn nic_faulty_reordered_packet_is_overtaken_by_exactly_k() {
    let cfg = FaultConfig {
        seed: 11,
        reorder: 0.05,
        reorder_by: 4,
        reorder_max_hold: Duration::from_secs(3600),
        ..FaultConfig::default()
    };
    let mut nic = FaultyNic::new(Loopback::default()).on_recv(cfg);
    for seq in 0..10_000u64 {
        nic.inner_mut().send(&numbered(seq), &TO).unwrap();
    }
    let mut order: Vec<u64> = drain(&mut nic)
        .iter()
        .map(|p| u64::from_le_bytes(p[..8].try_into().unwrap()))
        .collect();
    nic.flush().unwrap();
    let flushed = drain(&mut nic);
    order.extend(
        flushed
            .iter()
            .map(|p| u64::from_le_bytes(p[..8].try_into().unwrap())),
    );
    let f = nic.recv_faults();
    assert_rate("reorder", f.reordered, 10_000, 0.05);
    // Each packet exactly once.
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..10_000).collect::<Vec<_>>());
    // Packets not held go out in order, so a packet is one that was held exactly when a
    // larger number came out before it. Each held packet must follow exactly 4 later
    // packets that were not held (fewer only for the tail let out by the flush).
    let mut max_so_far = None;
    let held: Vec<bool> = order
        .iter()
        .map(|&s| {
            let late = max_so_far.is_some_and(|m| m > s);
            max_so_far = max_so_far.max(Some(s));
            late
        })
        .collect();
    // The flushed tail may hold packets larger than everything before them: not detectable.
    let detected = held.iter().filter(|&&h| h).count();
    assert!(detected as u64 <= f.reordered && detected + flushed.len() >= f.reordered as usize);
    let tail = order.len() - flushed.len();
    for (i, &s) in order.iter().enumerate().filter(|(i, _)| held[*i]) {
        let overtaken_by = (0..i).filter(|&j| !held[j] && order[j] > s).count();
        if i < tail {
            assert_eq!(overtaken_by, 4, "packet {s} at {i}");
        } else {
            assert!(overtaken_by <= 4, "packet {s} at {i}");
        }
    }
}

#[test]
fn nic_faulty_delay_holds_until_due_and_poll_at_says_when() {
    let cfg = FaultConfig {
        seed: 1,
        delay: 1.0,
        delay_by: Duration::from_millis(30),
        ..FaultConfig::default()
    };
    let mut nic = FaultyNic::new(Loopback::default()).on_send(cfg);
    let before = Instant::now();
    nic.send(b"late", &TO).unwrap();
    assert!(nic.inner().queue.is_empty(), "held, not sent");
    let due = nic.poll_at().expect("a held packet has a release time");
    assert!(due >= before + Duration::from_millis(30));
    std::thread::sleep(due.saturating_duration_since(Instant::now()));
    // Any call lets it out once due: recv piggybacks the release of sends.
    let mut buf = [0u8; 16];
    assert_eq!(nic.recv(&mut buf).unwrap(), Some((4, PeerAddr::Shm)));
    assert_eq!(nic.poll_at(), None);
    assert_eq!(nic.send_faults().released, 1);
}

#[test]
fn nic_faulty_same_seed_same_run_different_seed_different_run() {
    let run = |seed| {
        let mut nic = FaultyNic::new(Loopback::default()).on_send(all_faults(seed));
        for seq in 0..2000 {
            nic.send(&numbered(seq), &TO).unwrap();
        }
        nic.flush().unwrap();
        (nic.send_faults(), drain(nic.inner_mut()))
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43));
}

#[test]
fn nic_faulty_keeps_back_pressure_and_refuses_too_large() {
    let cfg = FaultConfig {
        seed: 5,
        duplicate: 1.0,
        ..FaultConfig::default()
    };
    let inner = Loopback {
        limit: Some(3),
        ..Loopback::default()
    };
    let mut nic = FaultyNic::new(inner).on_send(cfg);
    assert!(matches!(
        nic.send(&[0; 1501], &TO),
        Err(NicError::TooLarge { len: 1501, mtu: 1500 })
    ));
    nic.send(b"a", &TO).unwrap(); // a, a
    nic.send(b"b", &TO).unwrap(); // b goes in, its duplicate waits here
    assert!(matches!(nic.send(b"c", &TO), Err(NicError::WouldBlock)));
    assert!(nic.poll_at().is_some(), "a stuck packet asks to be called again");
    assert_eq!(
        drain(nic.inner_mut()),
        vec![b"a".to_vec(), b"a".to_vec(), b"b".to_vec()]
    );
    nic.send(b"c", &TO).unwrap();
    assert_eq!(
        drain(nic.inner_mut()),
        vec![b"b".to_vec(), b"c".to_vec(), b"c".to_vec()]
    );
}

#[test]
fn nic_faulty_recv_side_duplicates_show_in_work_probe() {
    let cfg = FaultConfig {
        seed: 9,
        duplicate: 1.0,
        ..FaultConfig::default()
    };
    let mut nic = FaultyNic::new(Loopback::default()).on_recv(cfg);
    let probe = nic.work_probe();
    nic.inner_mut().send(b"x", &TO).unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(nic.recv(&mut buf).unwrap(), Some((1, PeerAddr::Shm)));
    assert!(probe.has_work(), "the duplicate waits inside the wrapper");
    assert_eq!(nic.recv(&mut buf).unwrap(), Some((1, PeerAddr::Shm)));
    assert!(!probe.has_work());
    assert_eq!(nic.recv(&mut buf).unwrap(), None);
    assert_eq!(nic.recv_faults().duplicated, 1);
}

#[test]
fn nic_faulty_over_shm_wire_loss_only_delivers_the_rest_in_order() {
    let (a, mut b) = crate::nic::ShmWire::pair(crate::nic::ShmWireConfig {
        mtu: 128,
        capacity: 1024,
    })
    .unwrap();
    let cfg = FaultConfig {
        seed: 2,
        loss: 0.25,
        ..FaultConfig::default()
    };
    let mut a = FaultyNic::new(a).on_send(cfg);
    for seq in 0..1000u64 {
        a.send(&seq.to_le_bytes(), &TO).unwrap();
    }
    let got: Vec<u64> = drain(&mut b)
        .iter()
        .map(|p| u64::from_le_bytes(p[..8].try_into().unwrap()))
        .collect();
    assert_eq!(got.len() as u64, 1000 - a.send_faults().dropped);
    assert!(got.windows(2).all(|w| w[0] < w[1]));
    assert_rate("loss", a.send_faults().dropped, 1000, 0.25);
}
