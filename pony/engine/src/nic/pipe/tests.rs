use std::time::Instant;

use snap_pipeline::{queue, Downstream, Pool, PoolConfig, StageEngine};
use snap_runtime::Engine;

use super::*;
use crate::nic::{ShmWire, ShmWireConfig};

/// PipeNic ══ q0 ══ pass stage ── NicWire(ShmWire) ─── ShmWire (the far side)
fn line(capacity: u64) -> (PipeNic, StageEngine, ShmWire) {
    let pool = Pool::new("pipe-test", PoolConfig::for_mtu(64, 1500, 64)).unwrap();
    let (pony, stage_up) = queue("pipe-q0", capacity, &pool).unwrap();
    let (near, far) = ShmWire::pair(ShmWireConfig {
        mtu: 1500,
        capacity: 64,
    })
    .unwrap();
    let stage = StageEngine::new(
        "pass0",
        Box::new(snap_pipeline::PassStage),
        stage_up,
        Downstream::Wire(Box::new(NicWire(near))),
        16,
    );
    (PipeNic::new(pony, 1500), stage, far)
}

#[test]
fn emitted_packets_cross_byte_exact_and_replies_come_back_in_place() {
    let (mut nic, mut stage, mut far) = line(8);
    let mut i = 0u8;
    let sent = nic
        .emit_in_place(&PeerAddr::Shm, 5, &mut |room| {
            i += 1;
            room[..300].fill(i);
            Some(300)
        })
        .unwrap();
    assert_eq!(sent, 5);
    stage.run(Instant::now());
    let mut buf = vec![0; 1500];
    for i in 1..=5u8 {
        let (n, from) = far.recv(&mut buf).unwrap().unwrap();
        assert_eq!((&buf[..n], from), (&[i; 300][..], PeerAddr::Shm));
    }
    for i in 0..3u8 {
        far.send(&[i; 77], &PeerAddr::Shm).unwrap();
    }
    stage.run(Instant::now());
    let mut got = Vec::new();
    nic.recv_in_place(10, &mut |b, from| got.push((b.to_vec(), from)))
        .unwrap();
    assert_eq!(
        got,
        (0..3u8).map(|i| (vec![i; 77], PeerAddr::Shm)).collect::<Vec<_>>()
    );
    assert_eq!(nic.stats().tx_packets, 5);
    assert_eq!(nic.stats().rx_packets, 3);
}

#[test]
fn a_full_first_queue_is_would_block_and_the_emitter_keeps_its_packet() {
    let (mut nic, mut stage, mut far) = line(4);
    let mut calls = 0;
    let sent = nic
        .emit_in_place(&PeerAddr::Shm, 10, &mut |room| {
            calls += 1;
            room[0] = calls;
            Some(1)
        })
        .unwrap();
    assert_eq!((sent, calls), (4, 4), "emit is called only while a slot is free");
    assert!(matches!(
        nic.send(b"x", &PeerAddr::Shm),
        Err(NicError::WouldBlock)
    ));
    assert!(matches!(
        nic.send(&[0; 1501], &PeerAddr::Shm),
        Err(NicError::TooLarge { .. })
    ));
    stage.run(Instant::now());
    nic.send(b"y", &PeerAddr::Shm).unwrap();
    stage.run(Instant::now());
    let mut buf = [0; 1500];
    let got: Vec<u8> = std::iter::from_fn(|| far.recv(&mut buf).unwrap().map(|(n, _)| buf[n - 1])).collect();
    assert_eq!(got, [1, 2, 3, 4, b'y']);
}
