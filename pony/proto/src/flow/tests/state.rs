//! Flow state (`flow::state`): a flow serialized mid-transfer and rebuilt from the bytes
//! carries on as if nothing happened.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::sim::{LinkCfg, SimNet};
use super::{cfg, mixed_messages, Workload};
use crate::flow::state::{self, Adopter, BufRef, HeldRef};
use crate::flow::{Flow, HeldBytes};

/// Held references cannot appear in a heap flow's state; anything asking is a bug.
struct NoRefs;

impl Adopter for NoRefs {
    fn adopt_held(&mut self, r: HeldRef) -> Result<Arc<dyn HeldBytes>, String> {
        Err(format!("unexpected held reference {r:?}"))
    }
    fn adopt_buf(&mut self, r: BufRef) -> Result<Box<dyn Any>, String> {
        Err(format!("unexpected buffer reference {r:?}"))
    }
}

fn export(sim: &SimNet, side: usize) -> Vec<u8> {
    let flow = sim.flows[side].as_ref().expect("flow exists");
    state::with_export(sim.now, || postcard::to_allocvec(flow)).expect("serializes")
}

fn import(bytes: &[u8], sim: &SimNet) -> Result<Flow, postcard::Error> {
    state::with_import(sim.now, Box::new(NoRefs), || postcard::from_bytes(bytes))
}

/// Both ends are moved into new flows from their serialized state every few hundred
/// steps of a lossy transfer of 8 MiB and 120 smaller messages on four streams: every
/// message arrives once, in order, byte-exact (the workload checks each), and everything
/// is acknowledged.
#[test]
fn flows_moved_mid_transfer_lose_nothing() {
    let mut sim = SimNet::connected(21, cfg(), cfg(), [LinkCfg::lossy(0.05), LinkCfg::lossy(0.05)]);
    let mut w = Workload::new(mixed_messages());
    let deadline = sim.start + Duration::from_secs(5);
    let (mut steps, mut moves, mut largest) = (0u64, 0u32, 0usize);
    w.app(&mut sim);
    while !w.done() {
        assert!(sim.step(deadline), "stalled: {}/{} received", w.received, w.total);
        w.app(&mut sim);
        steps += 1;
        if steps % 300 == 0 {
            for side in 0..2 {
                let bytes = export(&sim, side);
                largest = largest.max(bytes.len());
                let moved = import(&bytes, &sim).expect("imports");
                // (Not compared byte for byte: hash maps iterate in a per-instance order.)
                assert_eq!(moved.stats(), sim.flow(side).stats(), "the same counters");
                sim.flows[side] = Some(moved);
            }
            moves += 1;
        }
    }
    eprintln!(
        "{moves} moves of both ends, largest state {largest} B, net {:?}",
        sim.net
    );
    assert!(moves >= 10, "the transfer outlasted several moves ({moves})");
    assert!(sim.net.lost > 50, "the moves happened under loss");
    assert_eq!(sim.flow(0).stats().bytes_in_flight, 0);
}

/// Instants keep their distance from the base: a flow exported against one base and
/// imported against a later one has its timers shifted by exactly the difference.
#[test]
fn timers_follow_the_base() {
    let mut sim = SimNet::connected(3, cfg(), cfg(), [LinkCfg::default(), LinkCfg::default()]);
    sim.flow(0).send_message(1, vec![7u8; 10_000]).expect("queued");
    sim.flush();
    let before = sim.flow(0).poll_timeout().expect("an RTO is armed");
    let bytes = export(&sim, 0);
    let later = sim.now + Duration::from_millis(3);
    let moved: Flow =
        state::with_import(later, Box::new(NoRefs), || postcard::from_bytes(&bytes)).expect("imports");
    assert_eq!(moved.poll_timeout(), Some(before + Duration::from_millis(3)));
}

proptest! {
    /// Damaged state (bytes flipped, truncated) is an error or a flow, never a panic.
    #[test]
    fn damaged_state_never_panics(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8), cut in any::<prop::sample::Index>()) {
        let mut sim = SimNet::connected(5, cfg(), cfg(), [LinkCfg::lossy(0.1), LinkCfg::lossy(0.1)]);
        sim.flow(0).send_message(1, vec![1u8; 50_000]).expect("queued");
        for _ in 0..40 {
            sim.step(sim.start + Duration::from_secs(1));
        }
        let mut bytes = export(&sim, 0);
        for (at, x) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        let _ = import(&bytes, &sim);
    }
}

/// The change mark: an idle flow that is only polled stays unmarked; a send marks it.
#[test]
fn idle_flows_stay_unmarked() {
    let mut sim = SimNet::connected(9, cfg(), cfg(), [LinkCfg::default(), LinkCfg::default()]);
    sim.flush();
    let now = sim.now;
    let f = sim.flow(0);
    f.limit_credit(1 << 20);
    while f.poll_transmit(now).is_some() {}
    while f.poll_event().is_some() {}
    f.take_changed();
    for _ in 0..3 {
        f.limit_credit(1 << 20);
        assert!(f.poll_transmit(now).is_none());
        assert!(f.poll_event().is_none());
    }
    assert!(!f.take_changed(), "polling an idle flow changes nothing");
    f.limit_credit(1 << 19);
    assert!(f.take_changed(), "a new credit cap is a change");
    f.send_message(1, vec![1u8; 10]).expect("queued");
    assert!(f.take_changed(), "a send is a change");
}
