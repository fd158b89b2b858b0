//! This crate's fuzz targets (`fuzz/`: `ring`, `control`) as stable tests: each target's
//! body over its checked-in corpus (`fuzz/seeds/<target>/`) and generated inputs from a
//! fixed seed (`snap-test-fuzz`), so CI runs them without nightly.

use snap_ipc::control::protocol::MAX_MESSAGE;
use snap_ipc::control::{fuzz_recv, ControlFuzzOutcome};
use snap_ipc::ring::{fuzz_consumer, RingFuzzOutcome};

const GENERATED: usize = 4096;

fn seeds(target: &str) -> String {
    format!("{}/fuzz/seeds/{target}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn ring_consumer_survives_a_hostile_producer() {
    let runs = snap_test_fuzz::run(seeds("ring"), GENERATED, 1, fuzz_consumer);
    let total = runs
        .iter()
        .fold(RingFuzzOutcome::default(), |a, o| RingFuzzOutcome {
            popped: a.popped + o.popped,
            empty: a.empty + o.empty,
            too_small: a.too_small + o.too_small,
            corrupt: a.corrupt + o.corrupt,
            bad_length: a.bad_length + o.bad_length,
        });
    // The inputs reach every outcome: good messages and each kind of refusal.
    for (what, n) in [
        ("popped", total.popped),
        ("empty", total.empty),
        ("too_small", total.too_small),
        ("corrupt", total.corrupt),
        ("bad_length", total.bad_length),
    ] {
        assert!(n > 0, "no input reached {what}: {total:?}");
    }
}

#[test]
fn control_recv_survives_arbitrary_packets() {
    let runs = snap_test_fuzz::run(seeds("control"), GENERATED, 2, fuzz_recv);
    let count = |o| runs.iter().filter(|r| **r == o).count();
    assert!(count(ControlFuzzOutcome::Request) > 0);
    assert!(count(ControlFuzzOutcome::Malformed) > 0);
    // One packet past the limit: refused as too large, from the fixed buffer.
    let big = vec![b' '; MAX_MESSAGE + 1];
    assert_eq!(fuzz_recv(&big), ControlFuzzOutcome::TooLarge);
}
