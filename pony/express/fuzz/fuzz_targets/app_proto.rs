//! Decodes arbitrary bytes as an app command and as a completion (what an engine reads from
//! a hostile app's command ring, and an app from its completion ring); whatever decodes must
//! re-encode to the same bytes (see `pony_express::app::proto::fuzz_decode`, which the
//! stable tests run on generated inputs too).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pony_express::app::proto::fuzz_decode(data);
});
