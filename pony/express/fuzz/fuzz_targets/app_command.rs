//! Arbitrary bytes as a command slot from an app (and a completion slot from an engine);
//! see `pony_express::app::proto::fuzz_decode`, which the stable tests run on
//! `seeds/app_command` too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pony_express::app::proto::fuzz_decode(data);
});
