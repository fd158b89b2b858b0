//! The ACL core: ordered allow/deny rules ([`rules`]) matched on a packet's peer, direction
//! and Pony service, the service of data packets coming from the flow memo ([`memo`]).
//!
//! ```text
//!  (now, direction, peer, bytes) ─▶ classify: Connect names its service; any other kind
//!                                   names a flow → memo → service (or Unknown)
//!                                ─▶ RuleSet::evaluate: first matching rule, else default
//!                                ─▶ allowed handshakes teach the memo (bounded: a flow it
//!                                   cannot hold is refused, its handshake dropped)
//!                                ─▶ Verdict, counters (per rule, default, drop reasons)
//! ```
//!
//! The rule set is replaced whole ([`Acl::replace`]): a table is read and checked into a
//! [`RuleSet`] before the ACL sees it, and the swap happens between two packets, so every
//! packet is judged by exactly one whole set; the memo outlives the swap, so a packet that
//! both sets allow is allowed whichever set judges it.

pub mod memo;
mod rules;

#[cfg(test)]
mod proptests;
#[cfg(test)]
pub(crate) mod tests;

use std::net::IpAddr;

use pony_proto::wire::{Kind, Packet};

pub use memo::{FlowKey, FlowMemo, MemoFull, Side};
pub use rules::{
    AclConfig, Action, Direction, PacketKey, RuleConfig, RuleSet, RuleSetError, Service, MAX_RULES,
};

/// Why the ACL dropped a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// The rule at this index denied it.
    Rule(usize),
    /// No rule matched and the default is deny.
    Default,
    /// An allowed handshake of a new flow that the full memo could not hold.
    MemoFull,
}

/// The ACL's decision on one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Pass it on.
    Allow,
    /// Drop it (counted).
    Deny(DenyReason),
}

/// What the ACL counted since it was made (rule hits: since the current set was installed).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct AclCounters {
    /// Packets allowed.
    pub allowed: u64,
    /// Packets denied by a rule or the default.
    pub denied: u64,
    /// Allowed handshakes dropped because the memo was full of live flows.
    pub memo_full: u64,
    /// Packets judged with an unknown service (no memo entry for their flow).
    pub unknown_service: u64,
    /// Rule sets installed by [`Acl::replace`].
    pub replacements: u64,
    /// Hits of each rule of the current set, by index.
    pub rule_hits: Vec<u64>,
    /// Packets the current set's default judged.
    pub default_hits: u64,
    /// Flows the memo holds now.
    pub memo_entries: u64,
}

/// The ACL: a rule set, the flow memo and the counters.
#[derive(Debug)]
pub struct Acl {
    rules: RuleSet,
    memo: FlowMemo,
    counters: AclCounters,
}

enum Learn {
    Insert(FlowKey, pony_proto::wire::ServiceId),
    Remove(FlowKey),
}

impl Acl {
    /// An ACL with `rules` and a memo of at most `memo_capacity` flows, swept of flows idle
    /// for `memo_idle_ns` when full.
    pub fn new(rules: RuleSet, memo_capacity: usize, memo_idle_ns: u64) -> Acl {
        let counters = AclCounters {
            rule_hits: vec![0; rules.len()],
            ..AclCounters::default()
        };
        Acl {
            rules,
            memo: FlowMemo::new(memo_capacity, memo_idle_ns),
            counters,
        }
    }

    /// Installs `rules` for every later packet and returns the set it replaces. Rule hit
    /// counters restart at zero (they count hits of the set's own rules).
    pub fn replace(&mut self, rules: RuleSet) -> RuleSet {
        self.counters.rule_hits = vec![0; rules.len()];
        self.counters.default_hits = 0;
        self.counters.replacements += 1;
        std::mem::replace(&mut self.rules, rules)
    }

    /// The current rule set.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// The counters, with the memo's size now.
    pub fn counters(&self) -> AclCounters {
        AclCounters {
            memo_entries: self.memo.len() as u64,
            ..self.counters.clone()
        }
    }

    /// Judges one Pony packet (`bytes`, exactly the packet) going `direction` to or from
    /// `peer` at `now_ns`, and learns from it if it is an allowed handshake.
    pub fn check(&mut self, now_ns: u64, direction: Direction, peer: IpAddr, bytes: &[u8]) -> Verdict {
        let (service, learn) = self.classify(now_ns, direction, peer, bytes);
        if service == Service::Unknown {
            self.counters.unknown_service += 1;
        }
        let key = PacketKey {
            peer,
            direction,
            service,
        };
        let (action, rule) = self.rules.evaluate(&key);
        match rule {
            Some(index) => self.counters.rule_hits[index] += 1,
            None => self.counters.default_hits += 1,
        }
        if action == Action::Deny {
            self.counters.denied += 1;
            return Verdict::Deny(rule.map_or(DenyReason::Default, DenyReason::Rule));
        }
        match learn {
            Some(Learn::Insert(key, service)) => {
                if self.memo.make_room(now_ns, &key).is_err() {
                    self.counters.memo_full += 1;
                    return Verdict::Deny(DenyReason::MemoFull);
                }
                self.memo.insert(now_ns, key, service);
            }
            Some(Learn::Remove(key)) => self.memo.remove(&key),
            None => {}
        }
        self.counters.allowed += 1;
        Verdict::Allow
    }

    /// The packet's service and what an allowed packet teaches the memo.
    fn classify(
        &mut self,
        now_ns: u64,
        direction: Direction,
        peer: IpAddr,
        bytes: &[u8],
    ) -> (Service, Option<Learn>) {
        let Ok(packet) = Packet::new_checked(bytes) else {
            return (Service::Unknown, None);
        };
        let Some(kind) = packet.kind() else {
            return (Service::Unknown, None);
        };
        // The side whose id this packet's dst_flow is, and the other one.
        let (own, other) = match direction {
            Direction::Rx => (Side::Local, Side::Remote),
            Direction::Tx => (Side::Remote, Side::Local),
        };
        let key = |side, flow| FlowKey { peer, side, flow };
        // Handshakes teach the memo only when their checksum holds: a corrupted one would
        // be dropped by Pony anyway, and must not leave a wrong service behind.
        let checksummed = || packet.verify_checksum();
        match kind {
            Kind::Connect => {
                if !checksummed() {
                    return (Service::Unknown, None);
                }
                let service = packet.connect_service();
                // Our own Connect's replies carry our id; the peer's Connect's id is
                // carried by our replies.
                let side = match direction {
                    Direction::Tx => Side::Local,
                    Direction::Rx => Side::Remote,
                };
                let learn = Learn::Insert(key(side, packet.connect_src_flow()), service);
                (Service::Known(service), Some(learn))
            }
            _ => {
                let own_key = key(own, packet.dst_flow());
                let Some(id) = self.memo.lookup(now_ns, &own_key) else {
                    return (Service::Unknown, None);
                };
                let learn = match kind {
                    Kind::Accept if checksummed() => {
                        Some(Learn::Insert(key(other, packet.accept_src_flow()), id))
                    }
                    Kind::Reject | Kind::Close if checksummed() => Some(Learn::Remove(own_key)),
                    _ => None,
                };
                (Service::Known(id), learn)
            }
        }
    }
}
