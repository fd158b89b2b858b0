//! Arbitrary bytes as one control-socket packet (see `snap_ipc::control::fuzz_recv`, which
//! the stable tests run on `seeds/control` too).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    snap_ipc::control::fuzz_recv(data);
});
