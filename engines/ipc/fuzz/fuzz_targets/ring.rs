//! A hostile producer's program against the engine's ring consumer (see
//! `snap_ipc::ring::fuzz_consumer`, which the stable tests run on `seeds/ring` too).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    snap_ipc::ring::fuzz_consumer(data);
});
