//! Tests of the configuration parser: one per error, each checking the field is named.

use super::*;

const GOOD: &str = r#"
    control_socket = "/tmp/snap-test.sock"
    stuck_after_ms = 50
    allowed_uids = [1000]
    [[group]]
    name = "latency"
    mode = "spreading"
    [[group.engine]]
    name = "echo0"
    kind = "echo"
    work_ns = 100
    [[group]]
    name = "bulk"
    mode = "compacting"
    cores = [0, 1]
    poll_interval_us = 50
    max_queueing_delay_us = 100
    shrink_after_ms = 20
    [[group.engine]]
    name = "udp0"
    kind = "udp_echo"
    bind = "127.0.0.1:0"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, 4)
}

/// The error message of `text`, which must be refused.
fn err(text: &str) -> String {
    parse(text).expect_err("config should be refused").to_string()
}

fn group(body: &str) -> String {
    format!("[[group]]\nname = \"g\"\n{body}\n[[group.engine]]\nname = \"e\"\nkind = \"echo\"\n")
}

#[test]
fn good_config_parses_and_builds() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.control_socket, Path::new("/tmp/snap-test.sock"));
    assert_eq!(c.allowed_uids, [1000]);
    assert_eq!(c.group[1].engine[0].kind, EngineKind::UdpEcho);
    let (specs, opts) = c.build().unwrap();
    assert_eq!(opts.stuck_after, Duration::from_millis(50));
    assert_eq!(specs.len(), 2);
    assert_eq!(specs[0].mode, Mode::Spreading);
    assert_eq!(specs[1].cores, [0, 1]);
    assert_eq!(specs[1].compacting.poll_interval, Duration::from_micros(50));
    assert_eq!(specs[1].compacting.shrink_after, Duration::from_millis(20));
    assert_eq!(specs[1].engines[0].name(), "udp0");
}

#[test]
fn defaults() {
    let c = parse(&group("mode = \"spreading\"")).unwrap();
    assert_eq!(c.control_socket, Path::new(DEFAULT_CONTROL_SOCKET));
    assert_eq!(c.stuck_after_ms, 100);
    assert!(c.allowed_uids.is_empty());
    assert_eq!(c.group[0].engine[0].work_ns, 0);
    assert_eq!(c.control, ControlConfig::default());
    let opts = c.server_options();
    assert_eq!(opts.max_connections, 256);
    assert_eq!(opts.idle_timeout, Duration::from_secs(10));
    assert_eq!(opts.request_timeout, Duration::from_secs(2));
}

#[test]
fn control_table_sets_the_server_limits_within_range() {
    let text = format!(
        "[control]\nmax_connections = 8\nidle_timeout_ms = 500\nrequest_timeout_ms = 100\n{}",
        group("mode = \"spreading\"")
    );
    let opts = parse(&text).unwrap().server_options();
    assert_eq!(opts.max_connections, 8);
    assert_eq!(opts.idle_timeout, Duration::from_millis(500));
    assert_eq!(opts.request_timeout, Duration::from_millis(100));
    let e = err(&format!(
        "[control]\nmax_connections = 0\n{}",
        group("mode = \"spreading\"")
    ));
    assert!(
        e.starts_with("control.max_connections: 0 connections is outside"),
        "{e}"
    );
    let e = err(&format!(
        "[control]\nidle_timeout_ms = 1\n{}",
        group("mode = \"spreading\"")
    ));
    assert!(e.starts_with("control.idle_timeout_ms:"), "{e}");
    let e = err(&format!(
        "[control]\nbacklog = 1\n{}",
        group("mode = \"spreading\"")
    ));
    assert!(e.contains("backlog"), "{e}");
}

#[test]
fn unknown_keys_name_key_and_line() {
    let e = err("stuck_after_ms = 5\nbogus = 1\n");
    assert!(e.contains("bogus") && e.contains("line 2"), "{e}");
    let e = err(&group("mode = \"spreading\"\ncoers = [1]"));
    assert!(e.contains("coers") && e.contains("line 4"), "{e}");
    let e = err(&format!("{}colour = 1\n", group("mode = \"spreading\"")));
    assert!(e.contains("colour"), "{e}");
}

#[test]
fn bad_enum_values_are_refused() {
    let e = err(&group("mode = \"lazy\""));
    assert!(e.contains("lazy") && e.contains("line 3"), "{e}");
    let e = err(
        "[[group]]\nname = \"g\"\nmode = \"spreading\"\n[[group.engine]]\nname = \"e\"\nkind = \"tcp\"\n",
    );
    assert!(e.contains("tcp"), "{e}");
}

#[test]
fn needs_a_group_and_an_engine() {
    assert_eq!(err(""), "group: at least one [[group]] is required");
    let e = err("[[group]]\nname = \"g\"\nmode = \"spreading\"\n");
    assert_eq!(e, "group[0].engine: at least one [[group.engine]] is required");
}

#[test]
fn duplicate_names() {
    let two = format!(
        "{}{}",
        group("mode = \"spreading\""),
        group("mode = \"spreading\"")
    );
    assert_eq!(err(&two), "group[1].name: duplicate group name \"g\"");
    let e = err(&format!(
        "{}[[group.engine]]\nname = \"e\"\nkind = \"echo\"\n",
        group("mode = \"spreading\"")
    ));
    assert_eq!(e, "group[0].engine[1].name: duplicate engine name \"e\"");
    let other = group("mode = \"spreading\"").replace("name = \"g\"", "name = \"h\"");
    let e = err(&format!("{}{other}", group("mode = \"spreading\"")));
    assert_eq!(e, "group[1].engine[0].name: duplicate engine name \"e\"");
}

#[test]
fn dedicated_needs_cores() {
    let e = err(&group("mode = \"dedicated\""));
    assert_eq!(e, "group[0].cores: dedicated mode needs at least one core");
    let e = err(&group("mode = \"dedicated\"\ncores = []"));
    assert_eq!(e, "group[0].cores: dedicated mode needs at least one core");
    parse(&group("mode = \"dedicated\"\ncores = [3]")).unwrap();
}

#[test]
fn cores_must_exist_and_be_unique() {
    let e = err(&group("mode = \"spreading\"\ncores = [4]"));
    assert_eq!(
        e,
        "group[0].cores: core 4 does not exist (this machine has cores 0..=3)"
    );
    let e = err(&group("mode = \"spreading\"\ncores = [1, 1]"));
    assert_eq!(e, "group[0].cores: core 1 is listed twice");
    let e = err(&group("mode = \"spreading\"\ncores = []"));
    assert!(e.starts_with("group[0].cores: must not be empty"), "{e}");
}

#[test]
fn dedicated_cores_are_not_shared() {
    let a = group("mode = \"dedicated\"\ncores = [1]");
    let b = group("mode = \"spreading\"\ncores = [0, 1]")
        .replace("\"g\"", "\"h\"")
        .replace("\"e\"", "\"f\"");
    let e = err(&format!("{a}{b}"));
    assert!(
        e.starts_with("group[1].cores: core 1 is also used by group \"g\""),
        "{e}"
    );
    // The other way round too.
    let e = err(&format!("{b}{a}").replace("[[group]]\nname = \"g\"", "[[group]]\nname = \"g\""));
    assert!(
        e.starts_with("group[1].cores: core 1 is also used by group \"h\""),
        "{e}"
    );
    // Two non-dedicated groups may share.
    let c = group("mode = \"compacting\"\ncores = [1]");
    parse(&format!("{c}{b}")).unwrap();
}

#[test]
fn compacting_fields_only_in_compacting_mode() {
    let e = err(&group("mode = \"spreading\"\npoll_interval_us = 50"));
    assert_eq!(
        e,
        "group[0].poll_interval_us: only applies to mode \"compacting\""
    );
    let e = err(&group("mode = \"dedicated\"\ncores = [0]\nshrink_after_ms = 5"));
    assert_eq!(e, "group[0].shrink_after_ms: only applies to mode \"compacting\"");
    let e = err(&group("mode = \"spreading\"\nmax_queueing_delay_us = 5"));
    assert_eq!(
        e,
        "group[0].max_queueing_delay_us: only applies to mode \"compacting\""
    );
}

#[test]
fn idle_poll_reaches_the_group_and_is_refused_in_dedicated_mode() {
    let c = parse(&group("mode = \"spreading\"\nidle_poll_us = 75")).unwrap();
    let (specs, _) = c.build().unwrap();
    assert_eq!(specs[0].idle_poll, Duration::from_micros(75));
    let c = parse(&group("mode = \"compacting\"\nidle_poll_us = 0")).unwrap();
    assert_eq!(c.build().unwrap().0[0].idle_poll, Duration::ZERO);
    let (specs, _) = parse(&group("mode = \"spreading\"")).unwrap().build().unwrap();
    assert_eq!(specs[0].idle_poll, snap_runtime::DEFAULT_IDLE_POLL);
    let (specs, _) = parse(&group("mode = \"dedicated\"\ncores = [0]"))
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(specs[0].idle_poll, Duration::ZERO);
    let e = err(&group("mode = \"dedicated\"\ncores = [0]\nidle_poll_us = 5"));
    assert!(
        e.starts_with("group[0].idle_poll_us: only applies to modes \"spreading\" and \"compacting\""),
        "{e}"
    );
    let e = err(&group("mode = \"spreading\"\nidle_poll_us = 10001"));
    assert_eq!(e, "group[0].idle_poll_us: 10001 µs is outside 0..=10000 µs");
}

#[test]
fn ranges() {
    let e = err(&group("mode = \"compacting\"\npoll_interval_us = 4"));
    assert_eq!(e, "group[0].poll_interval_us: 4 µs is outside 5..=100000 µs");
    let e = err(&group("mode = \"compacting\"\npoll_interval_us = 100001"));
    assert_eq!(e, "group[0].poll_interval_us: 100001 µs is outside 5..=100000 µs");
    parse(&group("mode = \"compacting\"\npoll_interval_us = 5")).unwrap();
    let e = err(&group("mode = \"compacting\"\nmax_queueing_delay_us = 0"));
    assert!(
        e.starts_with("group[0].max_queueing_delay_us: 0 µs is outside"),
        "{e}"
    );
    let e = err(&format!("stuck_after_ms = 0\n{}", group("mode = \"spreading\"")));
    assert!(e.starts_with("stuck_after_ms: 0 ms is outside"), "{e}");
    let e =
        err(&group("mode = \"spreading\"").replace("kind = \"echo\"", "kind = \"echo\"\nwork_ns = 20000000"));
    assert!(
        e.starts_with("group[0].engine[0].work_ns: 20000000 ns is more than"),
        "{e}"
    );
    let e = err(&group("mode = \"spreading\"\npoll_interval_us = -1"));
    assert!(e.contains("poll_interval_us"), "{e}");
}

#[test]
fn kind_specific_fields() {
    let e = err(&group("mode = \"spreading\"").replace("kind = \"echo\"", "kind = \"udp_echo\""));
    assert_eq!(e, "group[0].engine[0].bind: required for kind \"udp_echo\"");
    let e =
        err(&group("mode = \"spreading\"")
            .replace("kind = \"echo\"", "kind = \"echo\"\nbind = \"127.0.0.1:1\""));
    assert_eq!(e, "group[0].engine[0].bind: only applies to kind \"udp_echo\"");
    let e =
        err(&group("mode = \"spreading\"")
            .replace("kind = \"echo\"", "kind = \"udp_echo\"\nbind = \"nowhere\""));
    assert!(e.contains("line 7") && e.contains("bind = \"nowhere\""), "{e}");
}

#[test]
fn build_names_the_engine_whose_socket_is_taken() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let text = group("mode = \"spreading\"").replace(
        "kind = \"echo\"",
        &format!("kind = \"udp_echo\"\nbind = \"{addr}\""),
    );
    let e = parse(&text)
        .unwrap()
        .build()
        .expect_err("bind should fail")
        .to_string();
    assert!(
        e.starts_with(&format!("group[0].engine[0].bind: cannot bind {addr}")),
        "{e}"
    );
}

#[test]
fn load_names_the_file() {
    let e = Config::load("/nonexistent/snap.toml", 4).unwrap_err().to_string();
    assert!(e.starts_with("cannot read /nonexistent/snap.toml"), "{e}");
}

#[test]
fn microquanta_is_on_unless_opted_out() {
    assert!(parse(GOOD).unwrap().microquanta);
    let off = format!("microquanta = false\n{GOOD}");
    assert!(!parse(&off).unwrap().microquanta);
}

/// A spreading group named `g` with the given `[[group.engine]]` bodies.
fn engines(bodies: &[&str]) -> String {
    let mut s = "[[group]]\nname = \"g\"\nmode = \"spreading\"\n".to_owned();
    for b in bodies {
        s.push_str("[[group.engine]]\n");
        s.push_str(b);
        s.push('\n');
    }
    s
}

#[test]
fn relay_chain_parses_and_builds_across_groups() {
    let text = format!(
        "{}[[group]]\nname = \"h\"\nmode = \"compacting\"\n[[group.engine]]\nname = \"echo1\"\nkind = \"echo\"\n",
        engines(&[
            "name = \"r0\"\nkind = \"relay\"\nnext = \"r1\"",
            "name = \"r1\"\nkind = \"relay\"\nnext = \"echo1\"",
        ])
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.group[0].engine[0].kind, EngineKind::Relay);
    assert_eq!(c.group[0].engine[0].next.as_deref(), Some("r1"));
    let (specs, _) = c.build().unwrap();
    let names: Vec<_> = specs[0].engines.iter().map(|e| e.name().to_owned()).collect();
    assert_eq!(names, ["r0", "r1"]);
    // Each relay wakes on its internal completion doorbell, and each engine a relay feeds
    // on that relay's channel doorbell: r0 (no apps yet) has 1, r1 (fed by r0) 2, echo1 1.
    assert_eq!(specs[0].engines[0].wake_sources().len(), 1);
    assert_eq!(specs[0].engines[1].wake_sources().len(), 2);
    assert_eq!(specs[1].engines[0].wake_sources().len(), 1);
}

#[test]
fn relay_next_is_required_and_only_for_relays() {
    let e = err(&engines(&["name = \"r\"\nkind = \"relay\""]));
    assert_eq!(e, "group[0].engine[0].next: required for kind \"relay\"");
    let e = err(&engines(&[
        "name = \"a\"\nkind = \"echo\"",
        "name = \"b\"\nkind = \"echo\"\nnext = \"a\"",
    ]));
    assert_eq!(e, "group[0].engine[1].next: only applies to kind \"relay\"");
    let e = err(&engines(&[
        "name = \"r\"\nkind = \"relay\"\nnext = \"r\"\nbind = \"127.0.0.1:1\"",
    ]));
    assert_eq!(e, "group[0].engine[0].bind: only applies to kind \"udp_echo\"");
}

#[test]
fn relay_next_must_exist_and_accept_apps() {
    let e = err(&engines(&[
        "name = \"a\"\nkind = \"echo\"",
        "name = \"r\"\nkind = \"relay\"\nnext = \"nope\"",
    ]));
    assert_eq!(e, "group[0].engine[1].next: no engine named \"nope\"");
    let e = err(&engines(&[
        "name = \"u\"\nkind = \"udp_echo\"\nbind = \"127.0.0.1:0\"",
        "name = \"r\"\nkind = \"relay\"\nnext = \"u\"",
    ]));
    assert!(
        e.starts_with("group[0].engine[1].next: engine \"u\" is a udp_echo engine"),
        "{e}"
    );
}

#[test]
fn relay_cycles_are_refused() {
    let e = err(&engines(&["name = \"r\"\nkind = \"relay\"\nnext = \"r\""]));
    assert_eq!(e, "group[0].engine[0].next: relay chain cycle: r -> r");
    let e = err(&engines(&[
        "name = \"e\"\nkind = \"echo\"",
        "name = \"a\"\nkind = \"relay\"\nnext = \"b\"",
        "name = \"b\"\nkind = \"relay\"\nnext = \"c\"",
        "name = \"c\"\nkind = \"relay\"\nnext = \"a\"",
    ]));
    assert_eq!(e, "group[0].engine[1].next: relay chain cycle: a -> b -> c -> a");
    // A relay leading into a cycle it is not part of is refused too, at the first relay.
    let e = err(&engines(&[
        "name = \"x\"\nkind = \"relay\"\nnext = \"a\"",
        "name = \"a\"\nkind = \"relay\"\nnext = \"b\"",
        "name = \"b\"\nkind = \"relay\"\nnext = \"a\"",
    ]));
    assert_eq!(e, "group[0].engine[0].next: relay chain cycle: x -> a -> b -> a");
    // Two relays feeding the same engine is a tree, not a cycle.
    parse(&engines(&[
        "name = \"e\"\nkind = \"echo\"",
        "name = \"a\"\nkind = \"relay\"\nnext = \"e\"",
        "name = \"b\"\nkind = \"relay\"\nnext = \"e\"",
    ]))
    .unwrap()
    .build()
    .unwrap();
}

#[test]
fn pony_engines_parse_and_build_with_their_options() {
    let text = engines(&[
        "name = \"p\"\nkind = \"pony\"\n[group.engine.options]\nnic = \"udp\"\nbind = \"127.0.0.1:0\"",
    ]);
    let c = parse(&text).unwrap();
    assert_eq!(c.group[0].engine[0].kind, EngineKind::Pony);
    // The control server reports each engine's kind, so that clients find Pony engines.
    let kinds = c.server_options().engine_kinds;
    assert_eq!(kinds.get("p").map(String::as_str), Some("pony"));
    let (groups, _) = c.build().unwrap();
    assert_eq!(groups[0].engines[0].name(), "p");
}

#[test]
fn unknown_kinds_and_misplaced_options_are_refused() {
    let e = err(&engines(&["name = \"p\"\nkind = \"tcp\""]));
    assert!(
        e.contains("unknown kind \"tcp\" (known: echo, udp_echo, relay, pony)"),
        "{e}"
    );
    assert!(e.contains("line"), "{e}");
    let e = err(&engines(&[
        "name = \"e\"\nkind = \"echo\"\n[group.engine.options]\nok = true",
    ]));
    assert_eq!(
        e,
        "group[0].engine[0].options: only applies to kind \"pony\", not \"echo\""
    );
    let e = err(&engines(&[
        "name = \"p\"\nkind = \"pony\"\nbind = \"127.0.0.1:1\"\n[group.engine.options]\nnic = \"udp\"\nbind = \"127.0.0.1:0\"",
    ]));
    assert_eq!(e, "group[0].engine[0].bind: only applies to kind \"udp_echo\"");
}

#[test]
fn pony_option_errors_name_the_options() {
    let e = err(&engines(&[
        "name = \"p\"\nkind = \"pony\"\n[group.engine.options]\nnic = \"tcp\"",
    ]));
    assert_eq!(
        e,
        "group[0].engine[0].options: nic: unknown NIC \"tcp\" (known: udp, xdp, shm_listen, shm_connect)"
    );
    let e = err(&engines(&["name = \"p\"\nkind = \"pony\""]));
    assert!(e.starts_with("group[0].engine[0].options: nic: required"), "{e}");
    // Valid options whose NIC cannot be made: the build names the options too.
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let c = parse(&engines(&[&format!(
        "name = \"p\"\nkind = \"pony\"\n[group.engine.options]\nnic = \"udp\"\nbind = \"{addr}\""
    )]))
    .unwrap();
    let Err(e) = c.build() else {
        panic!("a bound address was bound again")
    };
    assert!(
        e.to_string()
            .starts_with(&format!("group[0].engine[0].options: cannot bind {addr}")),
        "{e}"
    );
}

#[test]
fn relays_do_not_forward_to_pony() {
    let e = err(&engines(&[
        "name = \"p\"\nkind = \"pony\"\n[group.engine.options]\nnic = \"udp\"\nbind = \"127.0.0.1:0\"",
        "name = \"r\"\nkind = \"relay\"\nnext = \"p\"",
    ]));
    assert_eq!(
        e,
        "group[0].engine[1].next: engine \"p\" is a pony engine; a relay forwards only to echo or relay engines"
    );
}

#[test]
fn a_microquanta_budget_names_the_groups_class_group() {
    let c = parse(&group(
        "mode = \"spreading\"\nmicroquanta = { runtime_us = 200, period_us = 1000 }",
    ))
    .unwrap();
    let mq = c.group[0].microquanta.unwrap();
    assert_eq!((mq.runtime_us, mq.period_us), (200, 1000));
    let (specs, _) = c.build().unwrap();
    assert_eq!(specs[0].microquanta_group.as_deref(), Some("g"));
    let c = parse(&group(
        "mode = \"compacting\"\nmicroquanta = { runtime_us = 1000, period_us = 1000 }",
    ))
    .unwrap();
    assert_eq!(c.build().unwrap().0[0].microquanta_group.as_deref(), Some("g"));
    // Without it: the default class group, as before.
    let c = parse(&group("mode = \"spreading\"")).unwrap();
    assert_eq!(c.group[0].microquanta, None);
    assert_eq!(c.build().unwrap().0[0].microquanta_group, None);
    // It goes to the upgrade's new host as it came.
    assert_eq!(
        parse(
            &parse(&group(
                "mode = \"spreading\"\nmicroquanta = { runtime_us = 5, period_us = 10 }",
            ))
            .unwrap()
            .to_toml()
            .unwrap()
        )
        .unwrap()
        .group[0]
            .microquanta
            .map(|m| m.runtime_us),
        Some(5)
    );
}

#[test]
fn a_microquanta_budget_is_refused_where_the_class_would_refuse_it() {
    let with = |mode: &str, budget: &str| {
        group(&format!(
            "mode = \"{mode}\"\ncores = [0]\nmicroquanta = {{ {budget} }}"
        ))
    };
    let cases = [
        (
            with("dedicated", "runtime_us = 200, period_us = 1000"),
            "group[0].microquanta: group \"g\": only applies to modes \"spreading\" and \"compacting\"",
        ),
        (
            with("spreading", "runtime_us = 2000, period_us = 1000"),
            "group[0].microquanta: group \"g\": runtime_us 2000 must be between 1 and period_us (1000)",
        ),
        (
            with("spreading", "runtime_us = 0, period_us = 1000"),
            "group[0].microquanta: group \"g\": runtime_us 0 must be between 1",
        ),
        (
            with("compacting", "runtime_us = 1, period_us = 1"),
            "group[0].microquanta: group \"g\": period_us 1 is outside 2..=1000000 µs",
        ),
        (
            with("spreading", "runtime_us = 1, period_us = 0"),
            "group[0].microquanta: group \"g\": period_us 0 is outside",
        ),
        (
            with("spreading", "runtime_us = 1, period_us = 1000001"),
            "group[0].microquanta: group \"g\": period_us 1000001 is outside",
        ),
        (
            with("spreading", "runtime_us = 100, period_us = 1000, cpus = [0]"),
            "unknown field `cpus`",
        ),
        (with("spreading", "runtime_us = 100"), "missing field `period_us`"),
    ];
    for (text, expected) in cases {
        let e = err(&text);
        assert!(e.contains(expected), "{text:?}: {e}");
    }
    let named = |name: &str| {
        format!(
            "[[group]]\nname = {name:?}\nmode = \"spreading\"\nmicroquanta = {{ runtime_us = 1, period_us = 10 }}\n\
             [[group.engine]]\nname = \"e\"\nkind = \"echo\"\n"
        )
    };
    let e = err(&named("two words"));
    assert!(
        e.starts_with(
            "group[0].microquanta: group \"two words\": name \"two words\" must be 1 to 31 characters"
        ),
        "{e}"
    );
    let e = err(&named(&"x".repeat(32)));
    assert!(e.contains("must be 1 to 31 characters"), "{e}");
    let e = err(&named("default"));
    assert!(e.starts_with("group[0].microquanta: group \"default\""), "{e}");
    // A name the class cannot take is fine without the option.
    assert!(
        parse(&named("two words").replace("microquanta = { runtime_us = 1, period_us = 10 }\n", "")).is_ok()
    );
}
