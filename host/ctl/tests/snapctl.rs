//! `snapctl` against real `snap-host` processes: status as text and JSON, engines and
//! groups added and removed while an echo ping-pong runs on another engine, refused
//! commands that change nothing, users who may not change the engines, and apps of a
//! removed engine told promptly.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{failed, ok, EchoApp, Host};
use snap_ipc::control::protocol::HostStatus;

/// Longest ping-pong round trip accepted on the undisturbed engine while others come and
/// go. A change sends nothing to its thread; the bound only absorbs a busy test machine
/// (the measured longest is printed).
const MAX_GAP: Duration = Duration::from_millis(500);

/// How soon an app of a removed engine must hear of it.
const PROMPT: Duration = Duration::from_secs(2);

const BASE: &str = r#"
allowed_uids = [65534]
[[group]]
name = "base"
mode = "spreading"
[[group.engine]]
name = "echo0"
kind = "echo"
[[group.engine]]
name = "echo1"
kind = "echo"
[[group]]
name = "packed"
mode = "compacting"
[[group.engine]]
name = "c0"
kind = "echo"
"#;

/// One group as [`shape`] sees it: name, mode, cores, thread ids, engine names.
type GroupShape = (String, String, Vec<usize>, Vec<i32>, Vec<String>);

/// What must not change when a command is refused: groups, modes, cores, threads and
/// engines.
fn shape(s: &HostStatus) -> Vec<GroupShape> {
    s.runtime
        .groups
        .iter()
        .map(|g| {
            (
                g.name.clone(),
                g.mode.clone(),
                g.cores.clone(),
                g.threads.iter().map(|t| t.tid).collect(),
                g.engines.iter().map(|e| e.name.clone()).collect(),
            )
        })
        .collect()
}

#[test]
fn status_shows_groups_threads_and_engines_as_text_and_json() {
    let host = Host::start(BASE);
    let mut app = EchoApp::attach(&host.socket, "echo0");
    app.round_trip().unwrap();
    let json: HostStatus = serde_json::from_str(&ok(&host.snapctl(&["status", "--json"]))).unwrap();
    assert_eq!(shape(&json), shape(&host.status()));
    assert_eq!(json.kinds.get("c0").map(String::as_str), Some("echo"));
    let base = &json.runtime.groups[0];
    assert!(base.threads.iter().all(|t| t.last_cpu.is_some()), "{base:?}");

    let text = ok(&host.snapctl(&["status"]));
    assert!(
        text.contains("group base: spreading, cores any, 2 threads (2 active)"),
        "{text}"
    );
    assert!(text.contains("group packed: compacting"), "{text}");
    assert!(text.contains("1 channels attached"), "{text}");
    let echo0 = base.engines.iter().find(|e| e.name == "echo0").unwrap();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("echo0 "))
        .unwrap_or_else(|| panic!("no echo0 row: {text}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        cols[..4],
        ["echo0", "echo", &echo0.tid.to_string(), "ok"],
        "{line}"
    );
    assert_eq!(cols.last(), Some(&"1"), "one app on echo0: {line}");
    let thread = text
        .lines()
        .find(|l| l.trim_start().starts_with(&echo0.tid.to_string()))
        .unwrap();
    assert!(thread.ends_with("echo0"), "{thread}");
}

#[test]
fn engines_and_groups_come_and_go_while_a_ping_pong_runs() {
    let host = Host::start(BASE);
    let mut pinger = EchoApp::attach(&host.socket, "echo0");
    let stop = Arc::new(AtomicBool::new(false));
    let changing = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    // The longest round trip before the changes start (the machine's own noise) and during.
    let ping = {
        let (stop, changing, count) = (stop.clone(), changing.clone(), count.clone());
        std::thread::spawn(move || {
            let (mut quiet, mut longest) = (Duration::ZERO, Duration::ZERO);
            while !stop.load(Relaxed) {
                let during = changing.load(Relaxed);
                let rtt = pinger.round_trip().expect("ping-pong on echo0");
                if during {
                    longest = longest.max(rtt);
                    count.fetch_add(1, Relaxed);
                } else {
                    quiet = quiet.max(rtt);
                }
            }
            (quiet, longest)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    changing.store(true, Relaxed);
    let group = host.file(
        "group.toml",
        "name = \"extra\"\nmode = \"compacting\"\n[[engine]]\nname = \"x0\"\nkind = \"echo\"\n\
         [[engine]]\nname = \"x1\"\nkind = \"echo\"\n",
    );
    let engine = host.file(
        "engine.toml",
        "name = \"added\"\nkind = \"echo\"\nwork_ns = 100\n",
    );
    for _ in 0..3 {
        let out = ok(&host.snapctl(&[
            "engine",
            "add",
            "--group",
            "base",
            "--file",
            engine.to_str().unwrap(),
        ]));
        assert!(out.contains("engine added (echo) added to group base"), "{out}");
        EchoApp::attach(&host.socket, "added").round_trip().unwrap();
        ok(&host.snapctl(&["engine", "remove", "added"]));

        ok(&host.snapctl(&["group", "add", "--file", group.to_str().unwrap()]));
        EchoApp::attach(&host.socket, "x0").round_trip().unwrap();
        ok(&host.snapctl(&[
            "engine",
            "add",
            "--group",
            "extra",
            "--toml",
            "name = \"x2\"",
            "--toml",
            "kind = \"echo\"",
        ]));
        EchoApp::attach(&host.socket, "x2").round_trip().unwrap();
        ok(&host.snapctl(&["engine", "remove", "x1"]));
        EchoApp::attach(&host.socket, "x2").round_trip().unwrap();
        let status = host.status();
        let extra = status.runtime.groups.iter().find(|g| g.name == "extra").unwrap();
        let names: Vec<&str> = extra.engines.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["x0", "x2"]);
        ok(&host.snapctl(&["group", "remove", "extra"]));
    }
    stop.store(true, Relaxed);
    let (quiet, longest) = ping.join().unwrap();
    let n = count.load(Relaxed);
    eprintln!(
        "ping-pong on echo0: {n} round trips during the changes, longest {longest:?} \
         (longest in the 300 ms before them: {quiet:?})"
    );
    assert!(n > 0);
    assert!(longest < MAX_GAP, "a change disturbed echo0: {longest:?}");
    let status = host.status();
    let groups: Vec<&str> = status.runtime.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(groups, ["base", "packed"]);
    assert!(status.runtime.unhealthy().is_empty(), "{status:?}");
    assert_eq!(status.kinds.len(), 3, "{:?}", status.kinds);
}

#[test]
fn refused_commands_say_why_and_change_nothing() {
    let host = Host::start(BASE);
    let before = shape(&host.status());
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "engine",
                "add",
                "--group",
                "base",
                "--toml",
                "name = \"u\"",
                "--toml",
                "kind = \"udp_echo\"",
            ],
            "engine.bind: required for kind \"udp_echo\"",
        ),
        (
            &[
                "engine",
                "add",
                "--group",
                "base",
                "--toml",
                "name = \"echo1\"",
                "--toml",
                "kind = \"echo\"",
            ],
            "engine.name: duplicate engine name \"echo1\"",
        ),
        (
            &[
                "engine",
                "add",
                "--group",
                "nope",
                "--toml",
                "name = \"e\"",
                "--toml",
                "kind = \"echo\"",
            ],
            "no group named \"nope\"",
        ),
        (
            &[
                "engine",
                "add",
                "--group",
                "base",
                "--toml",
                "name = \"e\"",
                "--toml",
                "kind = \"echo\"",
                "--toml",
                "speed = 1",
            ],
            "unknown field `speed`",
        ),
        (
            &[
                "engine",
                "add",
                "--group",
                "base",
                "--toml",
                "name = \"r\"",
                "--toml",
                "kind = \"relay\"",
                "--toml",
                "next = \"echo0\"",
            ],
            "engine.kind: a relay",
        ),
        (&["engine", "remove", "nope"], "no engine named \"nope\""),
        (&["engine", "remove", "c0"], "last engine of group \"packed\""),
        (
            &[
                "group",
                "add",
                "--toml",
                "name = \"d\"",
                "--toml",
                "mode = \"dedicated\"",
                "--toml",
                "[[engine]]",
                "--toml",
                "name = \"d0\"",
                "--toml",
                "kind = \"echo\"",
            ],
            "group.cores: dedicated mode needs at least one core",
        ),
        (
            &[
                "group",
                "add",
                "--toml",
                "name = \"base\"",
                "--toml",
                "mode = \"spreading\"",
                "--toml",
                "[[engine]]",
                "--toml",
                "name = \"d0\"",
                "--toml",
                "kind = \"echo\"",
            ],
            "group.name: duplicate group name",
        ),
        (&["group", "remove", "nope"], "no group named \"nope\""),
    ];
    for (args, expected) in cases {
        let err = failed(&host.snapctl(args), 1);
        // One line, but for the TOML parser's, which shows the line at fault below.
        assert!(
            err.starts_with("snapctl: ") && err.contains(expected),
            "{args:?}: {err}"
        );
    }
    assert_eq!(shape(&host.status()), before);
    // Bad arguments are clap's: exit code 2.
    failed(&host.snapctl(&["engine", "add", "--group", "base"]), 2);
    failed(
        &host.snapctl(&["engine", "add", "--group", "base", "--file", "x", "--toml", "y"]),
        2,
    );
    let err = failed(
        &host.snapctl(&["engine", "add", "--group", "base", "--file", "/nonexistent.toml"]),
        1,
    );
    assert!(err.contains("reading /nonexistent.toml"), "{err}");
    assert_eq!(shape(&host.status()), before);
}

#[test]
fn only_root_and_the_hosts_user_may_change_the_pipeline() {
    let host = Host::start(BASE);
    let before = shape(&host.status());
    // 65534 is in allowed_uids: it may read status (and attach apps), not reconfigure.
    let out = host.snapctl_as(65534, &["status", "--json"]);
    assert!(out.status.success(), "{:?}", common::text(&out));
    for args in [
        &["engine", "remove", "echo1"][..],
        &[
            "engine",
            "add",
            "--group",
            "base",
            "--toml",
            "name = \"e\"",
            "--toml",
            "kind = \"echo\"",
        ],
        &["group", "remove", "packed"],
    ] {
        let err = failed(&host.snapctl_as(65534, args), 1);
        assert!(
            err.contains("uid 65534 may not change this Snap host's engines"),
            "{err}"
        );
    }
    // A user not allowed at all is refused at the connection.
    let err = failed(&host.snapctl_as(65533, &["engine", "remove", "echo1"]), 1);
    assert!(err.contains("uid 65533 is not allowed"), "{err}");
    assert_eq!(shape(&host.status()), before);
}

#[test]
fn apps_of_a_removed_engine_hear_of_it_promptly() {
    let host = Host::start(BASE);
    let mut gone = EchoApp::attach(&host.socket, "echo1");
    gone.round_trip().unwrap();
    let mut stays = EchoApp::attach(&host.socket, "echo0");
    let out = ok(&host.snapctl(&["engine", "remove", "echo1"]));
    assert!(out.contains("1 app connections closed"), "{out}");
    let start = Instant::now();
    let err = gone.round_trip().unwrap_err();
    let took = start.elapsed();
    eprintln!("the removed engine's app heard of it after {took:?}: {err}");
    assert!(err.contains("host"), "{err}");
    assert!(took < PROMPT, "{took:?}");
    stays.round_trip().unwrap();
    // Its channel is no longer listed once its connection is gone.
    let deadline = Instant::now() + PROMPT;
    while host.status().channels_of("echo1") > 0 {
        assert!(Instant::now() < deadline, "echo1's channel still listed");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_missing_host_is_named() {
    let err = failed(
        &common::run({
            let mut c = std::process::Command::new(common::SNAPCTL);
            c.args(["--socket", "/nonexistent/snap.sock", "status"]);
            c
        }),
        1,
    );
    assert!(err.contains("no Snap host at /nonexistent/snap.sock"), "{err}");
}

#[test]
fn a_pony_engine_is_added_with_its_options_and_removed() {
    let host = Host::start(BASE);
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let table = format!("name = \"pony1\"\nkind = \"pony\"\n[options]\nnic = \"udp\"\nbind = \"{port}\"\n");
    let file = host.file("pony.toml", &table);
    // The port is free again once our probe socket is gone.
    let out = ok(&host.snapctl(&[
        "engine",
        "add",
        "--group",
        "base",
        "--file",
        file.to_str().unwrap(),
    ]));
    assert!(out.contains("engine pony1 (pony) added"), "{out}");
    let status = host.status();
    assert_eq!(status.kinds.get("pony1").map(String::as_str), Some("pony"));
    assert!(
        status.counters.contains_key("pony1"),
        "{:?}",
        status.counters.keys()
    );
    // A second engine on the same port is refused by the bind, naming the field.
    let again = table.replace("pony1", "pony2");
    let err = failed(
        &host.snapctl(&["engine", "add", "--group", "base", "--toml", &again]),
        1,
    );
    assert!(err.contains("engine.options"), "{err}");
    ok(&host.snapctl(&["engine", "remove", "pony1"]));
    assert!(!host.status().kinds.contains_key("pony1"));
}

#[test]
fn a_pony_app_waiting_on_a_removed_engine_gets_host_gone() {
    use pony_express::app::Completions;
    use pony_express::client::{ClientError, PonyClient};
    let [a, b] = [0, 1].map(|_| {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    });
    let host = Host::start(&format!(
        "[[group]]\nname = \"pony\"\nmode = \"spreading\"\n\
         [[group.engine]]\nname = \"pony0\"\nkind = \"pony\"\n[group.engine.options]\nnic = \"udp\"\nbind = \"{a}\"\n\
         [[group.engine]]\nname = \"pony1\"\nkind = \"pony\"\n[group.engine.options]\nnic = \"udp\"\nbind = \"{b}\"\n"
    ));
    let mut app = PonyClient::connect(&host.socket, "pony1", Completions::Block).unwrap();
    app.listen(7).unwrap();
    // Blocked in accept (nobody connects) when the engine goes.
    let waiter = std::thread::spawn(move || {
        let result = app.accept(Duration::from_secs(20));
        (result, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(100));
    let removed = Instant::now();
    let out = ok(&host.snapctl(&["engine", "remove", "pony1"]));
    assert!(out.contains("1 app connections closed"), "{out}");
    let (result, ended) = waiter.join().unwrap();
    let took = ended.duration_since(removed);
    eprintln!("accept on the removed engine ended {took:?} after the remove began: {result:?}");
    assert!(matches!(result, Err(ClientError::HostGone)), "{result:?}");
    assert!(took < PROMPT, "{took:?}");
    // The other Pony engine serves on.
    let mut other = PonyClient::connect(&host.socket, "pony0", Completions::Block).unwrap();
    other.listen(7).unwrap();
}
