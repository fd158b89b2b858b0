//! Parses arbitrary bytes as a Pony packet; whatever parses must re-emit to the same packet
//! and parse back to the same `Repr` (see `pony_proto::wire::fuzz_parse`, which
//! the stable tests run on generated inputs too).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pony_proto::wire::fuzz_parse(data);
});
