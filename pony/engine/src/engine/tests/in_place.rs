//! The engine's in-place NIC paths, over a lossless `ShmWire` pair wrapped in a NIC that
//! emits in place from a few "frames" per step (as `XdpNic` emits into UMEM frames): a
//! large message crosses byte for byte although the frames run out every step (the flow
//! keeps its packets and the engine retries, nothing is stashed or lost), and nothing goes
//! through `send_batch`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::*;
use crate::nic::{NicError, NicStats, PeerAddr, ShmWire, ShmWireConfig, WakeSource, WorkProbe};
use pony_express::app::{Command, Completion, SessionShape};
use pony_express::pool::PoolShape;

/// A `ShmWire` with `frames` transmit frames per step (refilled when the engine receives,
/// once a step), emitting in place; counts what went which way.
struct Framed {
    inner: ShmWire,
    frames: usize,
    free: usize,
    frame: Vec<u8>,
    batch_sends: Arc<AtomicU64>,
    emitted: Arc<AtomicU64>,
}

impl Nic for Framed {
    fn send(&mut self, packet: &[u8], to: &PeerAddr) -> Result<(), NicError> {
        self.inner.send(packet, to)
    }
    fn send_batch(&mut self, batch: &[u8], segment: usize, to: &PeerAddr) -> Result<(), (usize, NicError)> {
        self.batch_sends.fetch_add(1, Ordering::Relaxed);
        self.inner.send_batch(batch, segment, to)
    }
    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<(usize, PeerAddr)>, NicError> {
        self.inner.recv(buf)
    }
    fn recv_in_place(
        &mut self,
        max: usize,
        deliver: &mut dyn FnMut(&[u8], PeerAddr),
    ) -> Result<usize, NicError> {
        self.free = self.frames;
        self.inner.recv_in_place(max, deliver)
    }
    fn emits_in_place(&self) -> bool {
        true
    }
    fn emit_in_place(
        &mut self,
        to: &PeerAddr,
        max: usize,
        emit: &mut dyn FnMut(&mut [u8]) -> Option<usize>,
    ) -> Result<usize, NicError> {
        let mut n = 0;
        while n < max && self.free > 0 {
            let Some(len) = emit(&mut self.frame) else { break };
            self.free -= 1;
            self.emitted.fetch_add(1, Ordering::Relaxed);
            self.inner
                .send(&self.frame[..len], to)
                .expect("the wire has room");
            n += 1;
        }
        Ok(n)
    }
    fn wake_source(&self) -> Option<WakeSource> {
        self.inner.wake_source()
    }
    fn work_probe(&self) -> WorkProbe {
        self.inner.work_probe()
    }
    fn mtu(&self) -> usize {
        self.inner.mtu()
    }
    fn stats(&self) -> NicStats {
        self.inner.stats()
    }
}

#[test]
fn a_message_crosses_an_in_place_nic_that_runs_out_of_frames_every_step() {
    let (na, nb) = ShmWire::pair(ShmWireConfig::default()).unwrap();
    let (batch_sends, emitted) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let framed = |inner: ShmWire| Framed {
        frame: vec![0; inner.mtu()],
        inner,
        frames: 3,
        free: 0,
        batch_sends: batch_sends.clone(),
        emitted: emitted.clone(),
    };
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
    let mut a = PonyEngine::new("a", Box::new(framed(na)), cfg.clone());
    let mut b = PonyEngine::new("b", Box::new(framed(nb)), cfg);
    let (_, mut x) = a.attach_local(Completions::Poll).unwrap();
    let (_, mut y) = b.attach_local(Completions::Poll).unwrap();
    let next = |a: &mut PonyEngine, b: &mut PonyEngine, app: &mut AppSession| {
        for _ in 0..50_000 {
            let now = Instant::now();
            a.run(now);
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
    assert_eq!(next(&mut a, &mut b, &mut y), Completion::Listening { cookie: 1 });
    x.submit(&Command::OpenFlow {
        cookie: 2,
        peer: "shm".into(),
        service: 0,
    })
    .unwrap();
    let Completion::FlowOpened { result: Ok(flow), .. } = next(&mut a, &mut b, &mut x) else {
        panic!("open")
    };
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 13 + i / 977) as u8).collect();
    x.send(flow, 0, &data, 9).unwrap();
    let received = loop {
        match next(&mut a, &mut b, &mut y) {
            Completion::Received { head, len, .. } => break (head, len),
            _ => continue,
        }
    };
    let mut got = Vec::new();
    y.take_received(received.0, received.1, &mut got).unwrap();
    assert!(got == data, "the message crossed byte for byte");
    let sa = a.stats();
    assert!(sa.tx_would_block > 0, "the frames ran out: {sa:?}");
    assert_eq!(sa.tx_errors, 0, "{sa:?}");
    assert_eq!(
        batch_sends.load(Ordering::Relaxed),
        0,
        "nothing went through send_batch"
    );
    assert!(emitted.load(Ordering::Relaxed) >= data.len() as u64 / 9000);
}
