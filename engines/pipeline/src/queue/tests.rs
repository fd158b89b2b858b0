use std::collections::VecDeque;

use proptest::prelude::*;

use super::*;
use crate::packet::{Meta, Peer};
use crate::pool::PoolConfig;

fn setup(buffers: u32, capacity: u64) -> (Arc<Pool>, QueueEnd, QueueEnd) {
    let pool = Pool::new("queue-test", PoolConfig::for_mtu(buffers, 256, 32)).unwrap();
    let (up, low) = queue("queue-test", capacity, &pool).unwrap();
    (pool, up, low)
}

fn packet(pool: &Arc<Pool>, dir: Direction, seq: u32) -> Packet {
    let mut p = pool.alloc(dir).unwrap();
    p.copy_from(&seq.to_le_bytes()).unwrap();
    p.set_peer(Peer::Ip(([10, 0, 0, 1], seq as u16).into()));
    p.set_meta(Meta {
        tenant: seq,
        class: seq as u8,
    });
    p
}

fn seq_of(p: &Packet) -> u32 {
    u32::from_le_bytes(p.bytes().try_into().unwrap())
}

#[test]
fn carries_bytes_peer_and_meta_both_ways_across_wraps() {
    let (pool, mut up, mut low) = setup(8, 4);
    for seq in 0..100 {
        up.push(packet(&pool, Direction::Tx, seq)).unwrap();
        let got = low.pop().unwrap();
        assert_eq!((got.direction(), seq_of(&got)), (Direction::Tx, seq));
        assert_eq!(got.peer(), Peer::Ip(([10, 0, 0, 1], seq as u16).into()));
        assert_eq!(got.meta().tenant, seq);
        low.push(packet(&pool, Direction::Rx, seq + 1000)).unwrap();
        let back = up.pop().unwrap();
        assert_eq!((back.direction(), seq_of(&back)), (Direction::Rx, seq + 1000));
    }
    assert!(up.pop().is_none() && low.pop().is_none());
    assert_eq!(pool.stats().free, 8);
}

#[test]
fn a_full_ring_hands_the_packet_back_and_the_consumer_wakes_the_producer() {
    let (pool, mut up, mut low) = setup(8, 2);
    up.push(packet(&pool, Direction::Tx, 0)).unwrap();
    up.push(packet(&pool, Direction::Tx, 1)).unwrap();
    assert!(!up.has_room());
    let back = up.push(packet(&pool, Direction::Tx, 2)).unwrap_err();
    assert_eq!(seq_of(&back), 2, "the refused packet comes back intact");
    assert_eq!(up.stats().full, 1);
    up.bell.drain();
    // The consumer frees a slot; its flush rings the producer's doorbell for space.
    assert_eq!(seq_of(&low.pop().unwrap()), 0);
    low.flush();
    assert!(up.bell.drain() > 0, "the producer waiting for space was woken");
    up.push(back).unwrap();
    assert_eq!(seq_of(&low.pop().unwrap()), 1);
    assert_eq!(seq_of(&low.pop().unwrap()), 2);
    assert_eq!(pool.stats().free, 8);
}

#[test]
fn flush_rings_an_armed_consumer_once_per_batch() {
    let (pool, mut up, low) = setup(8, 8);
    low.bell.arm();
    for seq in 0..3 {
        up.push(packet(&pool, Direction::Tx, seq)).unwrap();
    }
    assert_eq!(low.bell.drain(), 0, "nothing rung before the batch ends");
    up.flush();
    assert_eq!(low.bell.drain(), 1);
    assert!(low.has_input() && low.work_probe().has_work());
}

#[test]
fn bad_descriptors_are_counted_and_skipped() {
    let (pool, mut up, mut low) = setup(4, 16);
    let good = |seq| {
        let p = packet(&pool, Direction::Tx, seq);
        p.into_desc()
    };
    let raw = |up: &mut QueueEnd, d: DescRepr| {
        let mut b = [0; DESC_LEN];
        d.emit(&mut b);
        up.out.push(&b).unwrap();
    };
    let a = good(1);
    raw(&mut up, a);
    up.out.push(&[0; 12]).unwrap(); // wrong length
    raw(&mut up, DescRepr { index: 99, ..a }); // outside the pool
    raw(&mut up, DescRepr { offset: 4000, ..a }); // bytes outside the buffer
    raw(&mut up, a); // duplicate of a buffer already claimed
    raw(&mut up, DescRepr { index: 3, ..a }); // a free buffer: not in flight
    let b = good(2);
    raw(&mut up, b);

    let first = low.pop().unwrap();
    assert_eq!(seq_of(&first), 1);
    let second = low.pop().unwrap();
    assert_eq!(
        seq_of(&second),
        2,
        "the good descriptor after the bad ones arrives"
    );
    assert!(low.pop().is_none());
    assert_eq!(low.stats().bad, 5);
    assert_eq!(low.stats().popped, 2);
    assert_eq!(low.last_bad(), Some(DescError::NotQueued(3)));
    drop((first, second));
    assert_eq!(pool.stats().free, 4, "no buffer leaked or freed twice");
}

#[test]
fn threads_carry_every_packet_once_in_order() {
    let (pool, mut up, mut low) = setup(64, 16);
    const N: u32 = 50_000;
    let consumer = std::thread::spawn(move || {
        let mut next = 0;
        while next < N {
            match low.pop() {
                Some(p) => {
                    assert_eq!(seq_of(&p), next);
                    next += 1;
                }
                None => std::thread::yield_now(),
            }
            low.flush();
        }
    });
    let mut seq = 0;
    let mut stash = None;
    while seq < N {
        let p = match stash.take() {
            Some(p) => p,
            None => match pool.alloc(Direction::Tx) {
                Some(mut p) => {
                    p.copy_from(&seq.to_le_bytes()).unwrap();
                    p
                }
                None => {
                    std::thread::yield_now();
                    continue;
                }
            },
        };
        match up.push(p) {
            Ok(()) => seq += 1,
            Err(p) => {
                stash = Some(p);
                std::thread::yield_now();
            }
        }
        up.flush();
    }
    consumer.join().unwrap();
    assert_eq!(pool.stats().free, 64);
}

#[derive(Debug, Clone)]
enum Op {
    Push(Direction),
    Pop(Direction),
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    let dir = prop_oneof![Just(Direction::Tx), Just(Direction::Rx)];
    prop_oneof![
        3 => dir.clone().prop_map(Op::Push),
        3 => dir.prop_map(Op::Pop),
        1 => Just(Op::Flush),
    ]
}

proptest! {
    /// Against a model (one FIFO per direction): every push either lands or comes back,
    /// every pop returns the model's head, and no buffer is lost or duplicated.
    #[test]
    fn no_loss_no_duplication_under_any_schedule(ops in proptest::collection::vec(op(), 1..400)) {
        let (pool, mut up, mut low) = setup(6, 4);
        let mut model: [VecDeque<u32>; 2] = [VecDeque::new(), VecDeque::new()];
        let mut held = Vec::new();
        let mut seq = 0u32;
        for op in ops {
            match op {
                Op::Push(dir) => {
                    let Some(mut p) = pool.alloc(dir) else { continue };
                    p.copy_from(&seq.to_le_bytes()).unwrap();
                    let end = if dir == Direction::Tx { &mut up } else { &mut low };
                    match end.push(p) {
                        Ok(()) => model[dir as usize].push_back(seq),
                        Err(p) => {
                            prop_assert_eq!(model[dir as usize].len(), 4, "refused only when full");
                            prop_assert_eq!(seq_of(&p), seq);
                        }
                    }
                    seq += 1;
                }
                Op::Pop(dir) => {
                    let end = if dir == Direction::Tx { &mut low } else { &mut up };
                    let got = end.pop();
                    prop_assert_eq!(got.as_ref().map(seq_of), model[dir as usize].pop_front());
                    // Keep some packets alive a while so the pool runs dry sometimes.
                    if let Some(p) = got {
                        held.push(p);
                        if held.len() > 2 {
                            held.remove(0);
                        }
                    }
                }
                Op::Flush => {
                    up.flush();
                    low.flush();
                }
            }
            let in_flight = model[0].len() + model[1].len() + held.len();
            prop_assert_eq!(pool.stats().free as usize + in_flight, 6);
        }
        prop_assert_eq!(up.stats().bad + low.stats().bad, 0);
    }
}
