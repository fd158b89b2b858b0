//! This crate's fuzz targets (`fuzz/`: `app_command`, `pool`) as stable tests: each
//! target's body over its checked-in corpus (`fuzz/seeds/<target>/`) and generated inputs
//! from a fixed seed (`snap-test-fuzz`), so CI runs them without nightly.

use pony_express::app::proto::fuzz_decode;
use pony_express::pool::fuzz_engine_ops;

const GENERATED: usize = 4096;

fn seeds(target: &str) -> String {
    format!("{}/fuzz/seeds/{target}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn app_commands_decode_or_refuse_and_round_trip() {
    let runs = snap_test_fuzz::run(seeds("app_command"), GENERATED, 3, fuzz_decode);
    assert!(runs.iter().any(|o| o.command), "no input decoded as a command");
    assert!(
        runs.iter().any(|o| o.completion),
        "no input decoded as a completion"
    );
    assert!(
        runs.iter().any(|o| !o.command && !o.completion),
        "every input decoded"
    );
}

#[test]
fn pool_engine_ops_survive_a_hostile_app() {
    let runs = snap_test_fuzz::run(seeds("pool"), GENERATED, 4, fuzz_engine_ops);
    let ok: u64 = runs.iter().map(|o| o.ok).sum();
    let errors: u64 = runs.iter().map(|o| o.errors).sum();
    let chains: u64 = runs.iter().map(|o| o.chains).sum();
    assert!(
        ok > 0 && errors > 0 && chains > 0,
        "ok {ok}, errors {errors}, chains {chains}"
    );
}
