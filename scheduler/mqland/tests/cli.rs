// SPDX-License-Identifier: GPL-2.0-only
//! scx_mqland's answer to bad input, run for real on any host: a bad flag is refused with
//! the flag named, and the process exits, also with `RUST_BACKTRACE=1` (our VM runs set it)
//! under scx_rustland_core's fixed-arena allocator.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_bad_period_is_refused_and_the_process_exits_with_backtraces_asked_for() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_scx_mqland"))
        .args(["--period-us", "1"])
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("scx_mqland did not exit within 30 s of a bad flag");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("--period-us 1 is outside"), "{err}");
}
