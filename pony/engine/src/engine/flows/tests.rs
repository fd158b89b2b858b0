//! Flow ids: slots and generations, stale ids, the generation wrap, the size limit.

use std::time::Instant;

use pony_express::app::{Completions, SessionShape};
use pony_proto::flow::{Flow, FlowConfig};

use super::{FlowTable, Lookup};
use crate::engine::entry::{FlowEntry, Origin};
use crate::nic::PeerAddr;
use crate::session::EngineSession;

fn session() -> EngineSession {
    EngineSession::pair(SessionShape::default(), Completions::Poll)
        .unwrap()
        .0
}

/// Adds a flow with the table's next id; returns the id.
fn add(t: &mut FlowTable, s: &EngineSession) -> u32 {
    let id = t.next_id();
    let flow = Flow::connect_with(FlowConfig::default(), id, 1, Instant::now(), s.recv_buffers());
    t.insert(FlowEntry::new(flow, PeerAddr::Shm, 1, Origin::Opened(0)));
    id
}

fn remove(t: &mut FlowTable, id: u32) {
    let e = t.take(id).unwrap();
    t.retire(&e);
}

#[test]
fn a_closed_flows_id_is_stale_after_its_slot_is_reused() {
    let s = session();
    let mut t = FlowTable::new(4);
    let a = add(&mut t, &s);
    let b = add(&mut t, &s);
    assert_ne!(a, b);
    assert_eq!(t.lookup(a.into()), Lookup::Live);
    remove(&mut t, a);
    assert_eq!(t.lookup(a.into()), Lookup::Stale);
    // Fresh slots first would also be fine; reuse is oldest-freed first once slots run
    // out, and the reused slot carries a new generation.
    let c = add(&mut t, &s);
    let d = add(&mut t, &s);
    let e = add(&mut t, &s);
    assert!(t.is_full());
    assert!([c, d, e].iter().all(|&x| x != a && x != b));
    assert_eq!(t.lookup(a.into()), Lookup::Stale);
    assert_eq!(t.lookup(0), Lookup::Unknown);
    assert_eq!(t.lookup(u64::MAX), Lookup::Unknown);
    assert_eq!(t.len(), 4);
}

#[test]
fn generations_wrap_without_panic_and_skip_zero() {
    let s = session();
    // One slot, two bits of generation: ids cycle through generations 1, 2, 3.
    let mut t = FlowTable::with_generation_bits(1, 2);
    let mut seen = Vec::new();
    for _ in 0..10 {
        let id = add(&mut t, &s);
        assert_ne!(id, 0);
        assert!(t.is_full());
        seen.push(id);
        remove(&mut t, id);
    }
    // Slot 1 (one slot bit), generation g: id = g << 1 | 1.
    let want: Vec<u32> = (0..10).map(|i| (i % 3 + 1) << 1 | 1).collect();
    assert_eq!(seen, want);
    assert_eq!(t.len(), 0);
}

#[test]
fn the_largest_table_keeps_twelve_generation_bits() {
    let t = FlowTable::new(u32::MAX);
    assert_eq!(t.max_flows, super::MAX_FLOWS_LIMIT);
    assert_eq!(t.slot_bits, 20);
    assert_eq!(t.generation_mask, (1 << 12) - 1);
}
