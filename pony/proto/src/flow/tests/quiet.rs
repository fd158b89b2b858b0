//! Quiet peers: heartbeats keep an idle but live pair connected indefinitely, a peer that
//! vanishes while nothing is being sent is noticed within the idle timeout, and a peer
//! whose ACKs are only late does not cost the sender its window.

use std::time::Duration;

use super::sim::{LinkCfg, SimNet};
use super::Workload;
use super::*;

fn cfg() -> FlowConfig {
    FlowConfig {
        idle_timeout: Some(Duration::from_millis(40)),
        ..super::cfg()
    }
}

#[test]
fn heartbeats_keep_an_idle_flow_and_silence_fails_it() {
    let mut sim = SimNet::connected(11, cfg(), cfg(), [LinkCfg::default(), LinkCfg::default()]);
    // A second of nothing to send: alive throughout, a heartbeat every 10 ms or so.
    let quiet = sim.now + Duration::from_secs(1);
    while sim.step(quiet) {}
    for side in 0..2 {
        assert!(sim.events(side).is_empty(), "nothing happened on side {side}");
        let s = sim.flow(side).stats();
        assert!((80..=110).contains(&s.keepalives_sent), "side {side}: {s:?}");
    }
    // The network goes dark with nothing in flight: each side gives up on its own.
    sim.filter = Some(Box::new(|_, _, _| true));
    let dark = sim.now;
    let deadline = dark + Duration::from_millis(200);
    while sim.step(deadline) {}
    for side in 0..2 {
        assert_eq!(
            sim.events(side),
            vec![FlowEvent::Failed(FailReason::PeerUnresponsive)],
            "side {side}"
        );
        let s = sim.flow(side).stats();
        assert_eq!(
            (s.retransmits, s.probes_sent),
            (0, 0),
            "failed by silence alone: {s:?}"
        );
    }
}

#[test]
fn without_an_idle_timeout_a_silent_peer_goes_unnoticed() {
    let off = FlowConfig {
        idle_timeout: None,
        ..super::cfg()
    };
    let mut sim = SimNet::connected(12, off.clone(), off, [LinkCfg::default(), LinkCfg::default()]);
    sim.filter = Some(Box::new(|_, _, _| true));
    let deadline = sim.now + Duration::from_secs(1);
    while sim.step(deadline) {}
    assert!(sim.events(0).is_empty() && !sim.flow(0).is_finished());
    assert_eq!(sim.flow(0).stats().keepalives_sent, 0);
}

/// Not an idle flow, but the same kind of quiet: ACKs held up far past the RTO (a
/// descheduled receiver) fire timeouts that the first late ACK shows were spurious.
#[test]
fn a_spurious_timeout_is_undone() {
    let mut sim = SimNet::connected(
        21,
        super::cfg(),
        super::cfg(),
        [LinkCfg::default(), LinkCfg::default()],
    );
    let mut w = Workload::new(vec![(0, 0, 2 << 20)]);
    w.run(&mut sim, Duration::from_secs(1));
    let before = sim.flow(0).stats();
    sim.links[1].delay = Duration::from_millis(3);
    sim.flow(0).send_message(0, vec![1u8; 60_000]).unwrap();
    let held = sim.now + Duration::from_millis(2);
    while sim.step(held) {}
    sim.links[1].delay = LinkCfg::default().delay;
    let done = sim.now + Duration::from_secs(1);
    while sim.step(done) {}
    let after = sim.flow(0).stats();
    assert!(
        after.rtos > before.rtos,
        "the held ACKs fired timeouts: {after:?}"
    );
    assert_eq!(after.spurious_rtos, 1, "one episode, found spurious: {after:?}");
    assert!(!sim.flow(0).is_finished());
    // Back to the window the timeout cut, then one delay-based halving for the 3 ms
    // samples; without the undo it would have restarted from one packet.
    assert!(after.cwnd >= before.cwnd * 0.5 * 0.99, "{before:?} -> {after:?}");
}
