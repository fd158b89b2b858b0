//! Property tests: the compiled matcher against a reference model that reads the table as
//! written (first rule whose fields all match, in order), and the swap keeping every
//! packet that both sets allow.

use std::net::IpAddr;

use proptest::prelude::*;

use super::tests::{accept, connect, data};
use super::*;
use crate::prefix::Prefix;

/// A small address pool, both families, so that random prefixes and peers overlap often.
fn peer() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (0u8..4, 0u8..4).prop_map(|(a, b)| IpAddr::from([10, a, b, 1])),
        (0u16..4, 0u16..4).prop_map(|(a, b)| IpAddr::from([0xfd00, a, b, 0, 0, 0, 0, 1])),
    ]
}

fn prefix() -> impl Strategy<Value = Prefix> {
    (peer(), 0u8..=128).prop_map(|(addr, len)| {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = len.min(max);
        let mask = Prefix::host(addr).mask(); // every bit of the family
        let keep = if len == 0 {
            0
        } else {
            mask & !((1u128 << (max - len)) - 1)
        };
        let net = crate::prefix::bits(addr) & keep;
        let addr = match addr {
            IpAddr::V4(_) => IpAddr::from((net as u32).to_be_bytes()),
            IpAddr::V6(_) => IpAddr::from(net.to_be_bytes()),
        };
        Prefix::new(addr, len).unwrap()
    })
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![Just(Action::Allow), Just(Action::Deny)]
}

fn direction() -> impl Strategy<Value = Direction> {
    prop_oneof![Just(Direction::Rx), Just(Direction::Tx)]
}

fn rule() -> impl Strategy<Value = RuleConfig> {
    (
        action(),
        proptest::option::of(prefix()),
        proptest::option::of(0u32..4),
        proptest::option::of(direction()),
    )
        .prop_map(|(action, peer, service, direction)| RuleConfig {
            action,
            peer,
            service,
            direction,
        })
}

fn table() -> impl Strategy<Value = AclConfig> {
    (action(), proptest::collection::vec(rule(), 0..12))
        .prop_map(|(default, rules)| AclConfig { default, rules })
}

fn key() -> impl Strategy<Value = PacketKey> {
    (
        peer(),
        direction(),
        prop_oneof![Just(Service::Unknown), (0u32..4).prop_map(Service::Known)],
    )
        .prop_map(|(peer, direction, service)| PacketKey {
            peer,
            direction,
            service,
        })
}

/// The reference: the table as written, rule by rule, with `Prefix::contains`.
fn model(table: &AclConfig, key: &PacketKey) -> (Action, Option<usize>) {
    for (index, rule) in table.rules.iter().enumerate() {
        let peer = rule.peer.is_none_or(|prefix| prefix.contains(key.peer));
        let direction = rule.direction.is_none_or(|d| d == key.direction);
        let service = match (rule.service, key.service) {
            (None, _) => true,
            (Some(wanted), Service::Known(got)) => wanted == got,
            // Not knowing the service never lets a packet through a rule about services.
            (Some(_), Service::Unknown) => rule.action == Action::Deny,
        };
        if peer && direction && service {
            return (rule.action, Some(index));
        }
    }
    (table.default, None)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn matcher_agrees_with_the_first_matching_rule(
        table in table(),
        keys in proptest::collection::vec(key(), 1..32),
    ) {
        let set = RuleSet::new(table.clone()).unwrap();
        for key in &keys {
            prop_assert_eq!(set.evaluate(key), model(&table, key), "{:?}", key);
        }
    }

    /// Flows opened under a permissive set, then data packets judged while set `old` is
    /// replaced by `new` after `swap_at` packets: each packet gets exactly the verdict of
    /// the set in force, so one that both sets allow is never dropped.
    #[test]
    fn the_swap_never_drops_what_both_sets_allow(
        old in table(),
        new in table(),
        flows in proptest::collection::vec((peer(), 0u32..4), 1..8),
        packets in proptest::collection::vec((0usize..8, direction()), 1..64),
        swap_at in 0usize..64,
    ) {
        let open = RuleSet::new(AclConfig { default: Action::Allow, rules: vec![] }).unwrap();
        let mut acl = Acl::new(open, 64, u64::MAX);
        // Flow i: the peer's id 1000 + i, ours i.
        for (i, &(peer, service)) in flows.iter().enumerate() {
            let i = i as u32;
            prop_assert_eq!(acl.check(0, Direction::Rx, peer, &connect(1000 + i, service)), Verdict::Allow);
            prop_assert_eq!(acl.check(0, Direction::Tx, peer, &accept(1000 + i, i)), Verdict::Allow);
        }
        let (old_set, new_set) = (RuleSet::new(old).unwrap(), RuleSet::new(new).unwrap());
        acl.replace(old_set.clone());
        for (n, &(flow, direction)) in packets.iter().enumerate() {
            if n == swap_at {
                acl.replace(new_set.clone());
            }
            let flow = flow % flows.len();
            let (peer, service) = flows[flow];
            let dst = match direction {
                Direction::Rx => flow as u32,
                Direction::Tx => 1000 + flow as u32,
            };
            let key = PacketKey { peer, direction, service: Service::Known(service) };
            let both = old_set.evaluate(&key).0 == Action::Allow && new_set.evaluate(&key).0 == Action::Allow;
            let in_force = if n < swap_at { &old_set } else { &new_set };
            let verdict = acl.check(1, direction, peer, &data(dst));
            prop_assert_eq!(verdict == Verdict::Allow, in_force.evaluate(&key).0 == Action::Allow);
            if both {
                prop_assert_eq!(verdict, Verdict::Allow);
            }
        }
    }
}
