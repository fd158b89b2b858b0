//! `pony perf` between two real hosts on loopback: a server on one, a client on the other,
//! and the client's report (JSON and text) checked for sense.

mod common;

use common::{spawn, stderr, stderr_line, Host};

/// A server on host B, `n` round trips of `size` bytes from a client on host A with
/// `extra` arguments; the client's output.
fn ping_pong(size: &str, count: &str, extra: &[&str]) -> std::process::Output {
    let a = Host::start();
    let b = Host::start();
    let mut server = spawn(b.pony(&["perf", "server", "--service", "9"]));
    stderr_line(&mut server, "listening on service 9");
    let mut args = vec![
        "perf",
        "client",
        "--peer",
        &b.addr,
        "--service",
        "9",
        "--size",
        size,
        "--count",
        count,
    ];
    args.extend_from_slice(extra);
    let out = spawn(a.pony(&args)).finish();
    assert!(out.status.success(), "pony perf client failed: {}", stderr(&out));
    // The server keeps serving until interrupted: it is still there.
    assert!(server.child().try_wait().unwrap().is_none(), "the server exited");
    out
}

#[test]
fn perf_client_json_has_sane_percentiles_and_rate() {
    let out = ping_pong("64", "500", &["--json", "--warmup", "20"]);
    let text = String::from_utf8(out.stdout).unwrap();
    // One JSON object, nothing else on stdout.
    assert_eq!(text.lines().count(), 1, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let f = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} missing in {text}"));
    assert_eq!(v["samples"].as_u64(), Some(500), "{text}");
    let (p50, p90, p99, p999) = (f("p50_us"), f("p90_us"), f("p99_us"), f("p999_us"));
    // A loopback round trip through two hosts takes more than a microsecond and, even on
    // a loaded 2-CPU machine, less than a second.
    assert!(p50 > 1.0 && p999 < 1_000_000.0, "{text}");
    assert!(
        p50 <= p90 && p90 <= p99 && p99 <= p999,
        "percentiles out of order: {text}"
    );
    // Half the round trips take at least p50 each, so the run takes at least
    // samples/2 × p50: the rate is at most 2 / p50.
    let rate = f("msgs_per_s");
    assert!(
        rate > 0.0 && rate < 2e6 / p50,
        "rate {rate} against p50 {p50} µs: {text}"
    );
}

#[test]
fn perf_client_text_names_the_percentiles_for_large_messages() {
    let out = ping_pong("100000", "20", &["--warmup", "2"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("20 round trips of 100000 B"), "{text}");
    for k in ["p50 ", "p90 ", "p99 ", "p99.9 ", "msgs/s"] {
        assert!(text.contains(k), "{k} missing: {text}");
    }
}
