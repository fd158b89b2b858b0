//! Feeds arbitrary bytes, as one control packet, to the host's and the client's receive
//! path; whatever parses must re-encode to the same message (see
//! `snap_ipc::control::protocol::fuzz_recv`, which the stable tests run on generated inputs
//! too).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    snap_ipc::control::protocol::fuzz_recv(data);
});
