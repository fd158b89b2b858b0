//! The zero-copy data path, observed through the pools, with two engines stepped by hand
//! over a lossless `ShmWire` pair: a Send's buffers stay the engine's until the peer
//! acknowledges them (the flow sends from them; nothing was copied out), a message is
//! reassembled in the receiver's pool before it completes, and an app that holds its pool
//! full stalls the sender through credit instead of losing or failing the flow.

use std::time::{Duration, Instant};

use crate::engine::*;
use crate::nic::{ShmWire, ShmWireConfig};
use pony_express::app::{Command, Completion, SessionShape};
use pony_express::pool::PoolShape;

const BUF: u32 = 2048;

fn engine(name: &str, nic: ShmWire, buffers: u32) -> PonyEngine {
    let cfg = PonyConfig {
        session: SessionShape {
            ring_capacity: 64,
            pool: PoolShape {
                buffers,
                buf_size: BUF,
            },
        },
        ..PonyConfig::default()
    };
    PonyEngine::new(name, Box::new(nic), cfg)
}

struct Two {
    a: PonyEngine,
    b: PonyEngine,
    x: AppSession,
    y: AppSession,
    flow: u64,
}

impl Two {
    /// x on engine a (256 buffers) opens a flow to y on engine b (`y_buffers`).
    fn new(y_buffers: u32) -> Self {
        let (na, nb) = ShmWire::pair(ShmWireConfig::default()).unwrap();
        let (mut a, mut b) = (engine("a", na, 256), engine("b", nb, y_buffers));
        let (_, x) = a.attach_local(Completions::Poll).unwrap();
        let (_, y) = b.attach_local(Completions::Poll).unwrap();
        let mut t = Two { a, b, x, y, flow: 0 };
        t.y.submit(&Command::Listen {
            cookie: 1,
            service: 0,
        })
        .unwrap();
        assert_eq!(t.next_y(), Completion::Listening { cookie: 1 });
        t.x.submit(&Command::OpenFlow {
            cookie: 2,
            peer: "shm".into(),
            service: 0,
        })
        .unwrap();
        let Completion::FlowOpened { result: Ok(flow), .. } = t.next_x() else {
            panic!("open")
        };
        assert!(matches!(t.next_y(), Completion::FlowAccepted { .. }));
        t.flow = flow;
        t
    }

    fn step(&mut self) {
        let now = Instant::now();
        self.a.run(now);
        self.b.run(now);
        std::thread::sleep(Duration::from_micros(20));
    }

    fn next_x(&mut self) -> Completion {
        self.next(false)
    }

    fn next_y(&mut self) -> Completion {
        self.next(true)
    }

    /// Steps both engines until x's (or y's) next completion.
    fn next(&mut self, y: bool) -> Completion {
        for _ in 0..20_000 {
            self.step();
            let app = if y { &mut self.y } else { &mut self.x };
            if let Some(c) = app.poll_completion().unwrap() {
                return c;
            }
        }
        panic!("no completion for {}", if y { "y" } else { "x" });
    }

    fn send(&mut self, data: &[u8], cookie: u64) {
        self.x.send(self.flow, 0, data, cookie).unwrap();
    }
}

fn free(app: &AppSession) -> u32 {
    app.pool().stats().free
}

#[test]
fn sent_buffers_are_sent_from_in_place_and_messages_land_in_the_receivers_pool() {
    let mut t = Two::new(256);
    // 196 buffers, more packets (45) than the initial window (16).
    let data: Vec<u8> = (0..400_000u32).map(|i| (i * 7 + i / 4096) as u8).collect();
    let needed = data.len().div_ceil(BUF as usize) as u32;
    t.send(&data, 9);
    assert_eq!(free(&t.x), 256 - needed);
    // One step of each: the first window leaves a, and b reserves the whole message in
    // y's pool as its first segment arrives.
    let now = Instant::now();
    t.a.run(now);
    t.b.run(now);
    assert_eq!(
        free(&t.x),
        256 - needed,
        "a sends from x's buffers: none was released"
    );
    assert_eq!(free(&t.y), 256 - needed, "b reassembles in y's pool");
    assert!(
        t.y.poll_completion().unwrap().is_none(),
        "the message is not complete yet"
    );
    // Sent comes with the last acknowledgement, and with it the buffers are free again.
    assert_eq!(t.next_x(), Completion::Sent { cookie: 9 });
    assert_eq!(free(&t.x), 256);
    let Completion::Received { head, len, .. } = t.next_y() else {
        panic!("received")
    };
    let mut got = Vec::new();
    t.y.take_received(head, len, &mut got).unwrap();
    assert_eq!(got, data);
    assert_eq!(free(&t.y), 256, "the app released the message it was handed");
    let s = t.b.stats();
    assert_eq!((s.messages_delivered, s.buffer_drops), (1, 0));
}

#[test]
fn an_app_holding_its_pool_full_stalls_the_sender_by_credit() {
    // y's pool: 64 buffers (128 KiB) holds three 40 KiB messages (20 buffers each).
    let mut t = Two::new(64);
    let msg = |i: u8| vec![i; 40 << 10];
    for i in 0..6 {
        t.send(&msg(i), u64::from(i));
    }
    let mut held = Vec::new();
    while held.len() < 3 {
        if let Completion::Received { head, len, .. } = t.next_y() {
            held.push((head, len));
        }
    }
    // y sits on them: the fourth message cannot land, and must not kill the flow.
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until {
        t.step();
        assert!(t.y.poll_completion().unwrap().is_none());
    }
    let (sa, sb) = (t.a.stats(), t.b.stats());
    assert_eq!((sa.flows, sa.flows_failed), (1, 0), "{sa:?}");
    assert!(
        sb.buffer_drops <= 4,
        "credit, not drops, held the sender back: {sb:?}"
    );
    // y releases them; the other three follow, in order.
    for (head, len) in held {
        let mut out = Vec::new();
        t.y.take_received(head, len, &mut out).unwrap();
    }
    for i in 3..6 {
        let Completion::Received { head, len, .. } = t.next_y() else {
            panic!("received")
        };
        let mut out = Vec::new();
        t.y.take_received(head, len, &mut out).unwrap();
        assert_eq!(out, msg(i));
    }
    assert_eq!(free(&t.y), 64);
}
