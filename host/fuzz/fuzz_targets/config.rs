//! Arbitrary bytes as a host configuration (see `snap_host::config::fuzz_parse`, which the
//! stable tests run on `seeds/config` too).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    snap_host::config::fuzz_parse(data);
});
