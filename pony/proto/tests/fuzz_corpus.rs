//! The wire parser's fuzz target (`fuzz/`, target `parse`) as a stable test: its body
//! (`wire::fuzz_parse`) over the checked-in corpus (`fuzz/seeds/parse/`: one packet of
//! every kind) and generated inputs from a fixed seed (`snap-test-fuzz`).

use pony_proto::wire::{fuzz_parse, Repr};

#[test]
fn wire_parser_corpus_and_mutations() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/parse");
    let parsed = snap_test_fuzz::run(dir, 4096, 5, |data| {
        fuzz_parse(data);
        Repr::parse(data).is_ok()
    });
    // Every seed parses (they reach the per-kind field checks); mutations mostly do not.
    let seeds = std::fs::read_dir(dir).unwrap().count();
    assert!(
        parsed[..seeds].iter().all(|&ok| ok),
        "a seed packet does not parse"
    );
    assert!(parsed[seeds..].iter().any(|&ok| !ok));
}
