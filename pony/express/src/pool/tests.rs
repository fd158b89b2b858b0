//! Pool tests: shape and attach validation, chains, corruption handling, a proptest model
//! of alloc/free/chains, and a two-thread stress of the lock-free free list.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;

use proptest::prelude::*;

use super::*;

fn small(buffers: u32) -> Pool {
    Pool::create(PoolShape {
        buffers,
        buf_size: 64,
    })
    .unwrap()
}

#[test]
fn fresh_pool_is_all_free_and_attach_round_trips() {
    let p = small(16);
    assert_eq!(p.stats().free, 16);
    assert_eq!(p.count_free().unwrap(), 16);
    let q = p.try_clone(Owner::App).unwrap();
    assert_eq!(q.shape(), p.shape());
    let a = q.alloc().unwrap();
    assert_eq!(a, BufIdx(0), "fresh pools allocate in index order");
    assert_eq!(p.stats().free, 15);
    assert_eq!(p.buf(0).unwrap().owner.load(Relaxed), Owner::App as u32);
    assert!(p.release(a).unwrap());
    assert_eq!(q.stats().free, 16);
}

#[test]
fn attach_validates_the_header() {
    let mem = SharedMem::create("t", 1 << 16).unwrap();
    assert!(matches!(Pool::attach(mem), Err(PoolError::BadMagic(0))));
    let mem = SharedMem::create("t", 100).unwrap();
    assert!(matches!(Pool::attach(mem), Err(PoolError::Truncated { .. })));
    let p = small(4);
    // Claim more buffers than the region holds.
    // SAFETY: count is the u32 at offset 16 of the header.
    unsafe { p.shared_mem().as_ptr().add(16).cast::<u32>().write(1 << 20) };
    assert!(matches!(p.try_clone(Owner::App), Err(PoolError::BadShape { .. })));
    let p = small(4);
    // SAFETY: version is the u32 at offset 8.
    unsafe { p.shared_mem().as_ptr().add(8).cast::<u32>().write(9) };
    assert!(matches!(
        p.try_clone(Owner::App),
        Err(PoolError::UnsupportedVersion(9))
    ));
}

#[test]
fn default_pool_carries_an_8_mib_message() {
    let p = Pool::create(PoolShape::default()).unwrap();
    let msg: Vec<u8> = (0..8 << 20).map(|i: u32| (i * 7 + i / 4099) as u8).collect();
    let c = p.write_chain(&msg).unwrap();
    assert_eq!(c.segments, 4096);
    let snap = p.snapshot(c.head, Some(msg.len() as u64)).unwrap();
    let mut off = 0;
    for seg in snap.chain_segments(&p) {
        assert_eq!(seg, &msg[off..off + seg.len()]);
        off += seg.len();
    }
    assert_eq!(off, msg.len());
    let mut out = Vec::new();
    assert_eq!(p.read_chain(c.head, &mut out).unwrap(), msg.len());
    assert!(out == msg);
    assert_eq!(snap.release(&p).unwrap(), 4096);
    assert_eq!(p.stats().free, 8192);
}

#[test]
fn exhaustion_and_too_large_leave_nothing_allocated() {
    let p = small(4);
    assert!(matches!(p.alloc_chain(5 * 64), Err(PoolError::TooLarge { .. })));
    let one = p.alloc().unwrap();
    assert!(matches!(
        p.alloc_chain(4 * 64),
        Err(PoolError::Exhausted { needed: 4 })
    ));
    assert_eq!(p.stats().free, 3);
    p.release(one).unwrap();
    let c = p.alloc_chain(0).unwrap();
    assert_eq!((c.len, c.segments), (0, 1));
}

#[test]
fn double_release_and_bad_indices_are_errors() {
    let p = small(4);
    let a = p.alloc().unwrap();
    p.retain(a).unwrap();
    assert!(!p.release(a).unwrap());
    assert!(p.release(a).unwrap());
    assert!(matches!(p.release(a), Err(PoolError::NotAllocated(0))));
    assert!(matches!(p.retain(a), Err(PoolError::NotAllocated(0))));
    assert!(matches!(p.release(BufIdx(4)), Err(PoolError::OutOfRange(4))));
    assert!(matches!(
        p.snapshot(BufIdx(NONE), None),
        Err(PoolError::OutOfRange(_))
    ));
    assert!(matches!(p.snapshot(a, None), Err(PoolError::NotAllocated(0))));
    assert_eq!(p.stats().free, 4);
}

#[test]
fn corrupt_chains_are_errors_not_hangs() {
    let p = small(8);
    let c = p.write_chain(&[1u8; 200]).unwrap(); // 4 buffers
    let snap = p.snapshot(c.head, Some(200)).unwrap();
    let ids: Vec<u32> = snap.buffers().collect();
    // Cycle: last links back to the head.
    p.buf(ids[3]).unwrap().next.store(ids[0], Relaxed);
    assert!(matches!(p.snapshot(c.head, None), Err(PoolError::Cycle(_))));
    assert!(p.read_chain(c.head, &mut Vec::new()).is_err());
    assert!(p.chain_segments(c.head).any(|s| s.is_err()));
    // Out-of-range link.
    p.buf(ids[3]).unwrap().next.store(1000, Relaxed);
    assert!(matches!(
        p.snapshot(c.head, None),
        Err(PoolError::OutOfRange(1000))
    ));
    // Oversized segment.
    p.buf(ids[3]).unwrap().next.store(NONE, Relaxed);
    p.buf(ids[1]).unwrap().len.store(65, Relaxed);
    assert!(matches!(
        p.snapshot(c.head, None),
        Err(PoolError::BadSegmentLen { len: 65, .. })
    ));
    p.buf(ids[1]).unwrap().len.store(64, Relaxed);
    assert!(matches!(
        p.snapshot(c.head, Some(201)),
        Err(PoolError::LengthMismatch {
            expected: 201,
            found: 200
        })
    ));
    // The engine's snapshot still frees exactly what it accepted.
    assert_eq!(snap.release(&p).unwrap(), 4);
    assert_eq!(p.count_free().unwrap(), 8);
}

#[test]
fn corrupt_free_list_is_an_error_and_rebuild_repairs_it() {
    let p = small(4);
    let held = p.alloc().unwrap();
    p.free_head().store(stack::pack(3, 77), Relaxed);
    assert!(matches!(p.try_alloc(), Err(PoolError::CorruptFreeList)));
    assert_eq!(p.alloc(), None);
    assert!(matches!(p.count_free(), Err(PoolError::CorruptFreeList)));
    p.rebuild_after_peer_death(|i| i == held.0);
    assert_eq!(p.count_free().unwrap(), 3);
    assert_eq!(p.stats().free, 3);
    assert!(p.release(held).unwrap());
    assert_eq!(p.count_free().unwrap(), 4);
}

#[test]
fn snapshot_fill_sets_lengths_for_the_reader() {
    let p = small(4);
    let c = p.alloc_chain(3 * 64).unwrap();
    let mut snap = p.snapshot(c.head, None).unwrap();
    snap.fill(&p, &[9u8; 100]).unwrap();
    let mut out = Vec::new();
    p.read_chain(c.head, &mut out).unwrap();
    assert_eq!(out, vec![9u8; 100]);
    assert!(matches!(
        snap.fill(&p, &[0u8; 193]),
        Err(PoolError::ChainTooSmall { .. })
    ));
}

#[test]
fn two_threads_alloc_and_free_without_sharing_a_buffer() {
    let p = small(64);
    let q = p.try_clone(Owner::App).unwrap();
    let run = |pool: &Pool, tag: u8| {
        for round in 0..20_000u32 {
            let n = 1 + (round % 5) as usize;
            let Ok(c) = pool.alloc_chain(n * 64 - 1) else {
                continue;
            };
            let fill = tag.wrapping_add(round as u8);
            let snap = pool.snapshot(c.head, None).unwrap();
            let mut snap2 = snap.clone();
            snap2.fill(pool, &vec![fill; n * 64 - 1]).unwrap();
            // Nobody else may have written our buffers in between.
            assert!(snap.chain_segments(pool).all(|s| s.iter().all(|&b| b == fill)));
            pool.release_chain(c.head).unwrap();
        }
    };
    std::thread::scope(|s| {
        s.spawn(|| run(&p, 0));
        s.spawn(|| run(&q, 128));
    });
    assert_eq!(p.count_free().unwrap(), 64);
    assert_eq!(p.stats().free, 64);
}

#[derive(Debug, Clone)]
enum Op {
    Alloc,
    Chain(usize),
    Retain(usize),
    Release(usize),
    ReleaseChain(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Alloc),
        (0usize..600).prop_map(Op::Chain),
        any::<usize>().prop_map(Op::Retain),
        any::<usize>().prop_map(Op::Release),
        any::<usize>().prop_map(Op::ReleaseChain),
    ]
}

proptest! {
    /// The pool against a model: a map of live chains (head -> (contents, refcount of each
    /// buffer)). Free counts, contents and errors must agree after every step.
    #[test]
    fn pool_matches_model(ops in proptest::collection::vec(op(), 1..80)) {
        let p = small(8);
        let mut live: HashMap<u32, (Vec<u8>, u32)> = HashMap::new();
        let mut held_bufs = 0u32;
        let mut counter = 0u8;
        for op in ops {
            let mut keys: Vec<u32> = live.keys().copied().collect();
            keys.sort();
            match op {
                Op::Alloc => match p.alloc() {
                    Some(b) => { live.insert(b.0, (Vec::new(), 1)); held_bufs += 1; }
                    None => prop_assert_eq!(held_bufs, 8),
                },
                Op::Chain(len) => {
                    counter = counter.wrapping_add(1);
                    let data: Vec<u8> = (0..len).map(|i| counter ^ i as u8).collect();
                    let need = len.div_ceil(64).max(1) as u32;
                    match p.write_chain(&data) {
                        Ok(c) => {
                            prop_assert_eq!(c.segments, need);
                            live.insert(c.head.0, (data, 1));
                            held_bufs += need;
                        }
                        Err(PoolError::Exhausted { .. }) => prop_assert!(held_bufs + need > 8),
                        Err(PoolError::TooLarge { .. }) => prop_assert!(len > 8 * 64),
                        Err(e) => prop_assert!(false, "unexpected {e}"),
                    }
                }
                Op::Retain(k) if !keys.is_empty() => {
                    let h = keys[k % keys.len()];
                    p.retain_chain(BufIdx(h)).unwrap();
                    live.get_mut(&h).unwrap().1 += 1;
                }
                Op::Release(k) | Op::ReleaseChain(k) if !keys.is_empty() => {
                    let h = keys[k % keys.len()];
                    let (data, rc) = live.get_mut(&h).unwrap();
                    let segs = data.len().div_ceil(64).max(1) as u32;
                    let freed = p.release_chain(BufIdx(h)).unwrap();
                    *rc -= 1;
                    if *rc == 0 {
                        prop_assert_eq!(freed, segs);
                        held_bufs -= segs;
                        live.remove(&h);
                    } else {
                        prop_assert_eq!(freed, 0);
                    }
                }
                Op::Retain(_) | Op::Release(_) | Op::ReleaseChain(_) => {}
            }
            prop_assert_eq!(p.stats().free, 8 - held_bufs);
            prop_assert_eq!(p.count_free().unwrap(), 8 - held_bufs);
            for (&h, (data, _)) in &live {
                let mut out = Vec::new();
                p.read_chain(BufIdx(h), &mut out).unwrap();
                prop_assert_eq!(&out, data);
            }
        }
    }
}
