//! A hostile app's writes to the pool interleaved with the engine's pool operations (see
//! `pony_express::pool::fuzz_engine_ops`, which the stable tests run on `seeds/pool` too).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pony_express::pool::fuzz_engine_ops(data);
});
