//! Each way `pony` can fail for the user: a clear one-line message on stderr starting with
//! `pony: `, a nonzero exit, and no panic (no backtrace, no "panicked").

mod common;

use std::process::Command;

use common::{free_addr, pony_engine, spawn, stderr, test_dir, Host, PONY};

/// Runs `pony args` and returns its stderr, checking it failed with `code` and cleanly.
fn fails(cmd: Command, code: i32) -> String {
    let out = spawn(cmd).finish();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    err
}

#[test]
fn a_missing_host_says_so_for_every_subcommand() {
    let dir = test_dir("pony-nohost");
    let sock = dir.join("snap.sock");
    let s = sock.to_str().unwrap();
    let cmds: [&[&str]; 5] = [
        &["perf", "server", "--service", "1"],
        &["perf", "client", "--peer", "127.0.0.1:1", "--service", "1"],
        &["cat", "--listen", "--service", "1"],
        &[
            "read",
            "--peer",
            "127.0.0.1:1",
            "--service",
            "1",
            "--region",
            "1",
            "--key",
            "1",
            "--len",
            "1",
        ],
        &["region", "serve", "--service", "1", "--file", "/etc/hostname"],
    ];
    for args in cmds {
        let mut cmd = Command::new(PONY);
        cmd.args(args).args(["--socket", s]);
        let err = fails(cmd, 1);
        assert!(
            err.starts_with("pony: no Snap host at") && err.contains("does not exist"),
            "{args:?}: {err}"
        );
    }
    // A socket file nobody listens on (its host died): refused, and said so.
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    drop(listener);
    let mut cmd = Command::new(PONY);
    cmd.args(["cat", "--listen", "--service", "1", "--socket", s]);
    let err = fails(cmd, 1);
    assert!(
        err.contains("no Snap host at") && err.contains("connection refused"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn nobody_listening_on_the_service_is_a_refused_connection() {
    let a = Host::start();
    let b = Host::start();
    for args in [
        vec!["cat", "--peer", &b.addr, "--service", "77"],
        vec![
            "perf",
            "client",
            "--peer",
            &b.addr,
            "--service",
            "77",
            "--count",
            "1",
        ],
        vec![
            "read",
            "--peer",
            &b.addr,
            "--service",
            "77",
            "--region",
            "1",
            "--key",
            "1",
            "--len",
            "1",
        ],
    ] {
        let err = fails(a.pony(&args), 1);
        assert!(
            err.starts_with("pony: connection refused: nothing listens on service 77"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn several_pony_engines_need_engine_and_a_wrong_name_lists_the_choices() {
    let engines = format!(
        "{}{}[[group.engine]]\nname = \"echo0\"\nkind = \"echo\"\n",
        pony_engine("ponya", &free_addr()),
        pony_engine("ponyb", &free_addr())
    );
    let host = Host::with_engines(&engines);
    let err = fails(host.pony(&["cat", "--listen", "--service", "1"]), 1);
    assert!(
        err.contains("several Pony engines (ponya, ponyb)") && err.contains("--engine"),
        "{err}"
    );
    let err = fails(
        host.pony(&["cat", "--listen", "--service", "1", "--engine", "echo0"]),
        1,
    );
    assert!(
        err.contains("not a Pony engine") && err.contains("ponya, ponyb"),
        "{err}"
    );
    let err = fails(
        host.pony(&["cat", "--listen", "--service", "1", "--engine", "nope"]),
        1,
    );
    assert!(
        err.contains("no engine \"nope\"") && err.contains("ponya, ponyb"),
        "{err}"
    );
    // Named, it works: the listener starts (and is stopped by the test).
    let mut ok = spawn(host.pony(&["cat", "--listen", "--service", "1", "--engine", "ponyb"]));
    common::stderr_line(&mut ok, "listening on service 1 of engine ponyb");
}

#[test]
fn bad_arguments_are_refused_before_anything_runs() {
    let bad: [&[&str]; 4] = [
        &["cat", "--peer", "not-an-address", "--service", "1"],
        &["perf", "client", "--peer", "127.0.0.1:1", "--service", "x"],
        &[
            "perf",
            "client",
            "--peer",
            "127.0.0.1:1",
            "--service",
            "1",
            "--count",
            "0",
        ],
        &[
            "read",
            "--peer",
            "127.0.0.1:1",
            "--service",
            "1",
            "--region",
            "1",
            "--key",
            "k",
            "--len",
            "1",
        ],
    ];
    for args in bad {
        let mut cmd = Command::new(PONY);
        cmd.args(args);
        let err = fails(cmd, 2);
        assert!(err.contains("error:"), "{args:?}: {err}");
    }
}

#[test]
fn a_service_already_listened_on_is_an_error() {
    let host = Host::start();
    let mut first = spawn(host.pony(&["cat", "--listen", "--service", "3"]));
    common::stderr_line(&mut first, "listening on service 3");
    let err = fails(host.pony(&["perf", "server", "--service", "3"]), 1);
    assert!(
        err.contains("listening on service 3") && err.contains("already"),
        "{err}"
    );
}
