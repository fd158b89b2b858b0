//! The ACL on handshakes and flows: how a data packet's service is known, what a packet
//! lying about its flow gets, the memo's bound, and the rule swap.

use std::net::IpAddr;

use pony_proto::wire::{Repr, SUPPORTED_VERSIONS};

use super::*;

pub(crate) fn emit(repr: &Repr<'_>) -> Vec<u8> {
    let mut buf = vec![0; repr.buffer_len()];
    repr.emit(&mut buf).unwrap();
    buf
}

pub(crate) fn connect(src_flow: u32, service: u32) -> Vec<u8> {
    emit(&Repr::Connect {
        versions: SUPPORTED_VERSIONS,
        src_flow,
        credit: 1 << 20,
        service,
    })
}

pub(crate) fn accept(dst_flow: u32, src_flow: u32) -> Vec<u8> {
    emit(&Repr::Accept {
        dst_flow,
        version: SUPPORTED_VERSIONS.max,
        src_flow,
        credit: 1 << 20,
    })
}

pub(crate) fn data(dst_flow: u32) -> Vec<u8> {
    emit(&Repr::Data {
        dst_flow,
        seq: 1,
        timestamp_ns: 0,
        stream: 0,
        message: 0,
        message_len: 4,
        offset: 0,
        payload: b"ping",
    })
}

fn close(dst_flow: u32) -> Vec<u8> {
    emit(&Repr::Close { dst_flow })
}

fn set(text: &str) -> RuleSet {
    RuleSet::new(toml::from_str(text).unwrap()).unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

const P: &str = "10.0.0.2";
const Q: &str = "10.0.0.3";

#[test]
fn a_data_packet_takes_the_service_its_flow_was_opened_with() {
    let mut acl = Acl::new(
        set(r#"
            default = "allow"
            [[rule]]
            action = "deny"
            service = 7
            direction = "rx"
        "#),
        64,
        1_000_000,
    );
    let p = ip(P);
    assert_eq!(
        acl.check(0, Direction::Rx, p, &connect(100, 7)),
        Verdict::Deny(DenyReason::Rule(0))
    );
    // The peer opens a flow of service 8; our Accept names our id 5 for it.
    assert_eq!(acl.check(1, Direction::Rx, p, &connect(101, 8)), Verdict::Allow);
    assert_eq!(acl.check(2, Direction::Tx, p, &accept(101, 5)), Verdict::Allow);
    assert_eq!(acl.check(3, Direction::Rx, p, &data(5)), Verdict::Allow);
    assert_eq!(acl.counters().unknown_service, 0);
    // Service 8 denied from now on: the flow's data packets are its packets.
    acl.replace(set(r#"
        default = "allow"
        [[rule]]
        action = "deny"
        service = 8
    "#));
    assert_eq!(
        acl.check(4, Direction::Rx, p, &data(5)),
        Verdict::Deny(DenyReason::Rule(0))
    );
    // Our replies carry the peer's id 101 and are judged as service 8 too.
    assert_eq!(
        acl.check(5, Direction::Tx, p, &data(101)),
        Verdict::Deny(DenyReason::Rule(0))
    );
    let counters = acl.counters();
    assert_eq!(counters.rule_hits, vec![2]);
    assert_eq!(counters.replacements, 1);
}

#[test]
fn flows_this_host_opens_are_known_both_ways() {
    let mut acl = Acl::new(
        set(r#"
            default = "deny"
            [[rule]]
            action = "allow"
            service = 8
        "#),
        64,
        1_000_000,
    );
    let p = ip(P);
    assert_eq!(acl.check(0, Direction::Tx, p, &connect(9, 8)), Verdict::Allow);
    assert_eq!(acl.check(1, Direction::Rx, p, &accept(9, 33)), Verdict::Allow);
    assert_eq!(acl.check(2, Direction::Tx, p, &data(33)), Verdict::Allow);
    assert_eq!(acl.check(3, Direction::Rx, p, &data(9)), Verdict::Allow);
    assert_eq!(
        acl.check(4, Direction::Tx, p, &connect(10, 9)),
        Verdict::Deny(DenyReason::Default)
    );
}

#[test]
fn a_packet_lying_about_its_flow_gets_no_service_and_no_allow_by_service() {
    let mut acl = Acl::new(
        set(r#"
            default = "deny"
            [[rule]]
            action = "allow"
            service = 8
        "#),
        64,
        1_000_000,
    );
    let (p, q) = (ip(P), ip(Q));
    acl.check(0, Direction::Rx, p, &connect(101, 8));
    acl.check(1, Direction::Tx, p, &accept(101, 5));
    // Another address naming P's flow, and P naming a flow it never opened.
    assert_eq!(
        acl.check(2, Direction::Rx, q, &data(5)),
        Verdict::Deny(DenyReason::Default)
    );
    assert_eq!(
        acl.check(3, Direction::Rx, p, &data(6)),
        Verdict::Deny(DenyReason::Default)
    );
    // An Accept for a flow nobody opened teaches nothing.
    assert_eq!(
        acl.check(4, Direction::Rx, q, &accept(77, 78)),
        Verdict::Deny(DenyReason::Default)
    );
    assert_eq!(acl.counters().unknown_service, 3);
    assert_eq!(acl.counters().memo_entries, 2);
}

#[test]
fn an_unknown_service_matches_deny_rules_that_name_a_service() {
    let mut acl = Acl::new(
        set(r#"
            default = "allow"
            [[rule]]
            action = "deny"
            service = 7
        "#),
        64,
        1_000_000,
    );
    // Without the rule's service constraint being knowable, the deny holds.
    assert_eq!(
        acl.check(0, Direction::Rx, ip(Q), &data(5)),
        Verdict::Deny(DenyReason::Rule(0))
    );
    // Garbage is not a Pony packet: unknown service too.
    assert_eq!(
        acl.check(1, Direction::Rx, ip(Q), b"not pony"),
        Verdict::Deny(DenyReason::Rule(0))
    );
}

#[test]
fn a_corrupted_handshake_teaches_nothing() {
    let mut acl = Acl::new(
        set(r#"
            default = "deny"
            [[rule]]
            action = "allow"
            service = 8
        "#),
        64,
        1_000_000,
    );
    let mut bad = connect(101, 8);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(
        acl.check(0, Direction::Rx, ip(P), &bad),
        Verdict::Deny(DenyReason::Default)
    );
    assert_eq!(acl.counters().memo_entries, 0);
}

#[test]
fn close_forgets_the_flow() {
    let mut acl = Acl::new(
        set(r#"
            default = "deny"
            [[rule]]
            action = "allow"
            service = 8
        "#),
        64,
        1_000_000,
    );
    let p = ip(P);
    acl.check(0, Direction::Rx, p, &connect(101, 8));
    acl.check(1, Direction::Tx, p, &accept(101, 5));
    assert_eq!(acl.check(2, Direction::Rx, p, &close(5)), Verdict::Allow);
    assert_eq!(
        acl.check(3, Direction::Rx, p, &data(5)),
        Verdict::Deny(DenyReason::Default)
    );
}

#[test]
fn a_full_memo_refuses_new_flows_until_old_ones_go_idle() {
    let mut acl = Acl::new(set(r#"default = "allow""#), 2, 1_000);
    let p = ip(P);
    assert_eq!(acl.check(0, Direction::Rx, p, &connect(1, 8)), Verdict::Allow);
    assert_eq!(acl.check(0, Direction::Rx, p, &connect(2, 8)), Verdict::Allow);
    assert_eq!(
        acl.check(10, Direction::Rx, p, &connect(3, 8)),
        Verdict::Deny(DenyReason::MemoFull)
    );
    // Flow 1 stays in use (Tx packets carry the peer's id 1); flow 2 goes idle.
    acl.check(900, Direction::Tx, p, &data(1));
    assert_eq!(acl.check(1_500, Direction::Rx, p, &connect(3, 8)), Verdict::Allow);
    let counters = acl.counters();
    assert_eq!(counters.memo_full, 1);
    assert_eq!(counters.memo_entries, 2);
    assert_eq!(acl.check(1_600, Direction::Tx, p, &data(1)), Verdict::Allow);
    assert_eq!(acl.counters().unknown_service, 0);
}

#[test]
fn a_table_is_refused_whole() {
    let bad_prefix = toml::from_str::<AclConfig>(
        r#"
            default = "allow"
            [[rule]]
            action = "deny"
            peer = "10.0.0.0/8"
            [[rule]]
            action = "deny"
            peer = "10.0.0.1/8"
        "#,
    );
    assert!(bad_prefix.unwrap_err().to_string().contains("host bits"));
    let too_many = AclConfig {
        default: Action::Allow,
        rules: vec![
            RuleConfig {
                action: Action::Deny,
                peer: None,
                service: None,
                direction: None,
            };
            MAX_RULES + 1
        ],
    };
    assert_eq!(
        RuleSet::new(too_many).unwrap_err(),
        RuleSetError::TooManyRules(MAX_RULES + 1)
    );
}
