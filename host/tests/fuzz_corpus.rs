//! The configuration's fuzz target (`fuzz/`, target `config`) as a stable test: its body
//! (`config::fuzz_parse`) over the checked-in corpus (`fuzz/seeds/config/`: every engine
//! kind and mode, and typical mistakes) and generated inputs from a fixed seed
//! (`snap-test-fuzz`).

use snap_host::config::{fuzz_parse, ConfigFuzzOutcome};

#[test]
fn config_parse_refuses_or_accepts_without_panicking() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/config");
    let runs = snap_test_fuzz::run(dir, 4096, 6, fuzz_parse);
    for o in [
        ConfigFuzzOutcome::Valid,
        ConfigFuzzOutcome::Invalid,
        ConfigFuzzOutcome::Syntax,
        ConfigFuzzOutcome::NotText,
    ] {
        assert!(runs.contains(&o), "no input parsed as {o:?}");
    }
}
