//! The `[[pipeline]]` tables: what is accepted, each refusal naming its field, and the
//! build (stage engines in their groups, the Pony engine on the first queue).

use super::super::Config;

const GOOD: &str = r#"
    control_socket = "/tmp/snap-pipeline-test.sock"
    [[group]]
    name = "pony"
    mode = "spreading"
    [[group.engine]]
    name = "pony0"
    kind = "pony"
    options = { pipeline = "path0", max_flows = 64 }
    [[group]]
    name = "stages"
    mode = "compacting"
    [[pipeline]]
    name = "path0"
    buffers = 256
    queue_capacity = 64
    [[pipeline.stage]]
    name = "pass0"
    kind = "pass"
    group = "stages"
    [[pipeline.stage]]
    name = "pass1"
    kind = "pass"
    group = "pony"
    [pipeline.nic]
    nic = "udp"
    bind = "127.0.0.1:0"
"#;

fn err(text: &str) -> String {
    Config::parse(text, 2)
        .expect_err("config should be refused")
        .to_string()
}

#[test]
fn a_pipeline_is_accepted_and_its_stages_are_engines_of_kind_stage() {
    let c = Config::parse(GOOD, 2).unwrap();
    assert_eq!(c.pipeline[0].stage.len(), 2);
    let kinds = c.server_options().engine_kinds;
    assert_eq!(kinds.get("pass0").map(String::as_str), Some("stage"));
    assert_eq!(kinds.get("pony0").map(String::as_str), Some("pony"));
}

#[test]
fn every_mistake_is_refused_naming_its_field() {
    let cases = [
        (
            GOOD.replace(
                "kind = \"pass\"\n    group = \"stages\"",
                "kind = \"nope\"\n    group = \"stages\"",
            ),
            "pipeline[0].stage[0].kind: unknown stage kind \"nope\"",
        ),
        (
            GOOD.replace("group = \"pony\"", "group = \"elsewhere\""),
            "pipeline[0].stage[1].group: no group named \"elsewhere\"",
        ),
        (
            GOOD.replace("name = \"pass1\"", "name = \"pony0\""),
            "pipeline[0].stage[1].name: \"pony0\" is already the name of an engine or stage",
        ),
        (
            GOOD.replace("name = \"pass1\"", "name = \"pass0\""),
            "pipeline[0].stage[1].name",
        ),
        (
            GOOD.replace("queue_capacity = 64", "queue_capacity = 48"),
            "pipeline[0].queue_capacity: 48 is not a power of two",
        ),
        (
            GOOD.replace("buffers = 256", "buffers = 8"),
            "pipeline[0].buffers: 8 is outside",
        ),
        (
            GOOD.replace(
                "options = { pipeline = \"path0\", max_flows = 64 }",
                "options = { pipeline = \"other\" }",
            ),
            "options.pipeline: no [[pipeline]] named \"other\"",
        ),
        (
            GOOD.replace(
                "options = { pipeline = \"path0\", max_flows = 64 }",
                "options = { nic = \"udp\", bind = \"127.0.0.1:0\" }",
            ),
            "pipeline[0]: no Pony engine names pipeline \"path0\"",
        ),
        (
            GOOD.replace(
                "options = { pipeline = \"path0\", max_flows = 64 }",
                "options = { pipeline = \"path0\", bind = \"127.0.0.1:0\" }",
            ),
            "bind: does not apply with pipeline = \"path0\"",
        ),
        (
            GOOD.replace(
                "nic = \"udp\"\n    bind",
                "nic = \"udp\"\n    max_flows = 3\n    bind",
            ),
            "pipeline[0].nic: unknown option \"max_flows\"",
        ),
        (
            GOOD.replace("nic = \"udp\"", "nic = \"carrier-pigeon\""),
            "pipeline[0].nic: nic: unknown NIC",
        ),
        (
            GOOD.replace(
                "group = \"stages\"",
                "group = \"stages\"\n    settings = { rate = 1 }",
            ),
            "pipeline[0].stage[0].settings: stage kind \"pass\" has no settings",
        ),
        (
            GOOD.replace(
                "[[pipeline.stage]]\n    name = \"pass0\"\n    kind = \"pass\"\n    group = \"stages\"\n",
                "",
            )
            .replace(
                "[[pipeline.stage]]\n    name = \"pass1\"\n    kind = \"pass\"\n    group = \"pony\"\n",
                "",
            ),
            "at least one [[group.engine]] is required",
        ),
    ];
    for (text, want) in cases {
        let e = err(&text);
        assert!(e.contains(want), "expected {want:?} in {e:?}");
    }
    // Two Pony engines on one pipeline.
    let two = GOOD.replace(
        "    [[group]]\n    name = \"stages\"",
        "    [[group.engine]]\n    name = \"pony1\"\n    kind = \"pony\"\n    options = { pipeline = \"path0\" }\n    [[group]]\n    name = \"stages\"",
    );
    assert!(
        err(&two).contains("already serves Pony engine \"pony0\""),
        "{}",
        err(&two)
    );
}

#[test]
fn a_group_holding_a_stage_cannot_be_removed_and_settings_go_to_named_stages_only() {
    let c = Config::parse(GOOD, 2).unwrap();
    let e = c.without_group("stages").unwrap_err().to_string();
    assert!(e.contains("runs pipeline stages"), "{e}");
    let e = c.without_group("pony").unwrap_err().to_string();
    assert!(e.contains("Pony engine of pipeline \"path0\""), "{e}");
    assert!(
        c.without_engine("pass0").is_err(),
        "a stage is not an engine to remove"
    );
    let next = c.with_stage_settings("pass0", "").unwrap();
    assert!(next.pipeline[0].stage[0].settings.is_none());
    let e = c.with_stage_settings("pony0", "").unwrap_err().to_string();
    assert!(e.contains("no pipeline stage named \"pony0\""), "{e}");
    assert!(c.with_stage_settings("pass0", "not toml [").is_err());
}

#[test]
fn the_build_puts_each_stage_in_its_group_and_pony_on_the_first_queue() {
    let c = Config::parse(GOOD, 2).unwrap();
    let (specs, _) = c.build().unwrap();
    let names = |g: usize| {
        specs[g]
            .engines
            .iter()
            .map(|e| e.name().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(0), ["pony0", "pass1"]);
    assert_eq!(names(1), ["pass0"]);
    let counters = specs[1].engines[0].counters().unwrap();
    assert_eq!(counters["stage"], "pass");
    // A Pony engine on a pipeline is not built outside the host's start.
    let e = c.group[0].engine[0]
        .clone()
        .build_standalone()
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("built when the host starts"), "{e}");
}

/// The policy kinds (snap-policy) in one pipeline, their settings as TOML tables; a bad
/// setting is refused naming the stage.
const POLICY: &str = r#"
    control_socket = "/tmp/snap-pipeline-policy-test.sock"
    [[group]]
    name = "pony"
    mode = "spreading"
    [[group.engine]]
    name = "pony0"
    kind = "pony"
    options = { pipeline = "path0", max_flows = 64 }
    [[pipeline]]
    name = "path0"
    buffers = 256
    [[pipeline.stage]]
    name = "acl0"
    kind = "acl"
    group = "pony"
    [pipeline.stage.settings]
    default = "deny"
    rule = [{ action = "allow", service = 8 }, { action = "allow", peer = "192.168.7.0/24", direction = "tx" }]
    [[pipeline.stage]]
    name = "overlay0"
    kind = "overlay"
    group = "pony"
    [pipeline.stage.settings]
    tenant = [{ tenant = 1, vni = 7, endpoint = "192.168.7.1:9000" }]
    mapping = [{ vni = 7, endpoint = "192.168.7.2:9000", physical = "127.0.0.1:7001" }]
    [[pipeline.stage]]
    name = "shaper0"
    kind = "shaper"
    group = "pony"
    [pipeline.stage.settings]
    granularity_ns = 1000
    slots = 4096
    capacity = 1024
    class = [{ tenant = 1, rate_bps = 100_000_000, burst_bytes = 15000 }]
    [pipeline.nic]
    nic = "udp"
    bind = "127.0.0.1:0"
"#;

#[test]
fn the_policy_stage_kinds_are_built_from_their_settings() {
    let c = Config::parse(POLICY, 2).unwrap();
    let kinds: Vec<&str> = c.pipeline[0].stage.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(kinds, ["acl", "overlay", "shaper"]);
    let e = err(&POLICY.replace("192.168.7.0/24", "192.168.7.1/24"));
    assert!(
        e.contains("pipeline[0].stage[0].settings") && e.contains("host bits"),
        "{e}"
    );
    let e = err(&POLICY.replace(
        "vni = 7, endpoint = \"192.168.7.1:9000\"",
        "vni = 0, endpoint = \"192.168.7.1:9000\"",
    ));
    assert!(
        e.contains("pipeline[0].stage[1].settings") && e.contains("VNI 0"),
        "{e}"
    );
    let e = err(&POLICY.replace("slots = 4096", "slots = 0"));
    assert!(
        e.contains("pipeline[0].stage[2].settings") && e.contains("slots"),
        "{e}"
    );
}
