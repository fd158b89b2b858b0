//! The Pony engine with a pipeline as its NIC side: engine A's NIC is the first queue of
//! two `pass` stages, the last of which owns one end of a lossless `ShmWire`; engine B is
//! on the other end directly. Large messages cross byte for byte both ways, emitted in
//! place into pool buffers (nothing goes through `send_batch`), and every pool buffer is
//! back at the end.

use std::time::{Duration, Instant};

use crate::engine::*;
use crate::nic::{NicWire, PipeNic, ShmWire, ShmWireConfig};
use pony_express::app::{Command, Completion, SessionShape};
use pony_express::pool::PoolShape;
use snap_pipeline::{queue, Downstream, PassStage, Pool, PoolConfig, StageEngine};

#[test]
fn messages_cross_a_two_stage_pipeline_both_ways() {
    let (na, nb) = ShmWire::pair(ShmWireConfig::default()).unwrap();
    let mtu = na.mtu();
    let pool = Pool::new("pony-pipe", PoolConfig::for_mtu(512, mtu as u32, 64)).unwrap();
    let (pony_end, s0_up) = queue("pony-pipe-q0", 64, &pool).unwrap();
    let (s0_down, s1_up) = queue("pony-pipe-q1", 64, &pool).unwrap();
    let mut s0 = StageEngine::new("s0", Box::new(PassStage), s0_up, Downstream::Queue(s0_down), 32);
    let mut s1 = StageEngine::new(
        "s1",
        Box::new(PassStage),
        s1_up,
        Downstream::Wire(Box::new(NicWire(na))),
        32,
    );
    let cfg = PonyConfig {
        session: SessionShape {
            ring_capacity: 64,
            pool: PoolShape {
                buffers: 256,
                buf_size: 2048,
            },
        },
        ..PonyConfig::default()
    };
    let mut a = PonyEngine::new("a", Box::new(PipeNic::new(pony_end, mtu)), cfg.clone());
    let mut b = PonyEngine::new("b", Box::new(nb), cfg);
    let (_, mut x) = a.attach_local(Completions::Poll).unwrap();
    let (_, mut y) = b.attach_local(Completions::Poll).unwrap();
    let mut next = |app: &mut AppSession| {
        for _ in 0..50_000 {
            let now = Instant::now();
            a.run(now);
            s0.run(now);
            s1.run(now);
            b.run(now);
            if let Some(c) = app.poll_completion().unwrap() {
                return c;
            }
            std::thread::sleep(Duration::from_micros(5));
        }
        panic!("no completion");
    };
    y.submit(&Command::Listen {
        cookie: 1,
        service: 0,
    })
    .unwrap();
    assert_eq!(next(&mut y), Completion::Listening { cookie: 1 });
    x.submit(&Command::OpenFlow {
        cookie: 2,
        peer: "shm".into(),
        service: 0,
    })
    .unwrap();
    let Completion::FlowOpened { result: Ok(flow), .. } = next(&mut x) else {
        panic!("open")
    };
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 13 + i / 977) as u8).collect();
    x.send(flow, 0, &data, 9).unwrap();
    let (bflow, head, len) = loop {
        if let Completion::Received { flow, head, len, .. } = next(&mut y) {
            break (flow, head, len);
        }
    };
    let mut got = Vec::new();
    y.take_received(head, len, &mut got).unwrap();
    assert!(got == data, "A→B crossed byte for byte");

    let reply: Vec<u8> = data.iter().rev().map(|b| b ^ 0x5a).collect();
    y.send(bflow, 0, &reply, 10).unwrap();
    let (head, len) = loop {
        if let Completion::Received { head, len, .. } = next(&mut x) {
            break (head, len);
        }
    };
    let mut got = Vec::new();
    x.take_received(head, len, &mut got).unwrap();
    assert!(got == reply, "B→A crossed byte for byte");

    let (c0, c1) = (s0.stage_counters(), s1.stage_counters());
    assert!(c0.tx_packets >= (data.len() / mtu) as u64, "{c0:?}");
    assert_eq!((c0.tx_packets, c0.rx_packets), (c1.tx_packets, c1.rx_packets));
    assert_eq!(s0.drops().total() + s1.drops().total(), 0);
    assert_eq!(a.stats().tx_errors, 0);
    assert_eq!(pool.stats().free, 512, "every pool buffer came back");
}
