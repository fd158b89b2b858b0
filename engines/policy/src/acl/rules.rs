//! The ACL's rule table: its serde form ([`AclConfig`], what TOML and `snapctl` carry), the
//! checked, compiled [`RuleSet`] the matcher runs, and the match itself.
//!
//! A rule names any of: a peer prefix, a Pony service, a direction; an absent field matches
//! everything. The first rule that matches decides; if none does, the default action does.
//! A packet whose service is not known (see [`Service::Unknown`]) matches every deny rule
//! that names a service and no allow rule that names one, so not knowing a service can
//! only make a packet's verdict stricter.

use std::net::IpAddr;

use pony_proto::wire::ServiceId;
use serde::{Deserialize, Serialize};

use crate::prefix::{bits, Prefix};

/// The most rules a set may hold: the matcher is a linear scan, and a bound keeps a
/// hostile or mistaken table from making every packet slow.
pub const MAX_RULES: usize = 1024;

/// What a rule (or the default) does with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The packet goes on.
    Allow,
    /// The packet is dropped and counted.
    Deny,
}

/// Which way a packet crosses the stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From the network towards this host's apps.
    Rx,
    /// From this host's apps towards the network.
    Tx,
}

/// A packet's Pony service, as far as the ACL can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// Named by the packet (a Connect) or by the flow memo.
    Known(ServiceId),
    /// Not known: a packet of a flow the memo does not hold, or not a Pony packet.
    Unknown,
}

/// One rule as written in a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// What a matching packet gets.
    pub action: Action,
    /// The peer's address prefix; absent: any peer of either family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<Prefix>,
    /// The Pony service; absent: any service, known or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceId>,
    /// The direction; absent: both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
}

/// A whole rule table: rules in order and the default action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclConfig {
    /// What a packet no rule matches gets.
    pub default: Action,
    /// The rules, first match wins.
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleConfig>,
}

/// Why a rule table is refused (nothing of it is used then).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleSetError {
    /// More than [`MAX_RULES`] rules.
    #[error("{0} rules, at most {MAX_RULES} allowed")]
    TooManyRules(usize),
}

/// What one packet is matched on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketKey {
    /// The remote address: the source of an Rx packet, the destination of a Tx one.
    pub peer: IpAddr,
    /// Which way it goes.
    pub direction: Direction,
    /// Its service.
    pub service: Service,
}

/// A checked rule table in the form the matcher scans: each rule's prefix as a family tag,
/// network bits and mask, so that a match is a few integer compares.
#[derive(Debug, Clone)]
pub struct RuleSet {
    config: AclConfig,
    compiled: Vec<Compiled>,
}

#[derive(Debug, Clone, Copy)]
struct Compiled {
    /// 0: any family; 4 or 6: that family only.
    family: u8,
    net: u128,
    mask: u128,
    service: Option<ServiceId>,
    /// Bit 0: Rx, bit 1: Tx.
    directions: u8,
    action: Action,
}

const RX: u8 = 1;
const TX: u8 = 2;

impl RuleSet {
    /// Checks the whole table and compiles it; an error leaves nothing half-built.
    /// (Prefixes are already checked when the table is read: [`Prefix`] refuses bad ones.)
    pub fn new(config: AclConfig) -> Result<RuleSet, RuleSetError> {
        if config.rules.len() > MAX_RULES {
            return Err(RuleSetError::TooManyRules(config.rules.len()));
        }
        let compiled = config
            .rules
            .iter()
            .map(|rule| {
                let (family, net, mask) = match rule.peer {
                    None => (0, 0, 0),
                    Some(prefix) => (
                        if prefix.addr().is_ipv4() { 4 } else { 6 },
                        bits(prefix.addr()),
                        prefix.mask(),
                    ),
                };
                let directions = match rule.direction {
                    None => RX | TX,
                    Some(Direction::Rx) => RX,
                    Some(Direction::Tx) => TX,
                };
                Compiled {
                    family,
                    net,
                    mask,
                    service: rule.service,
                    directions,
                    action: rule.action,
                }
            })
            .collect();
        Ok(RuleSet { config, compiled })
    }

    /// The table this set was built from.
    pub fn config(&self) -> &AclConfig {
        &self.config
    }

    /// The number of rules.
    pub fn len(&self) -> usize {
        self.compiled.len()
    }

    /// Whether the set has no rules (only its default).
    pub fn is_empty(&self) -> bool {
        self.compiled.is_empty()
    }

    /// The verdict for `key`: the action and the index of the rule that gave it (`None`:
    /// the default).
    #[inline]
    pub fn evaluate(&self, key: &PacketKey) -> (Action, Option<usize>) {
        let family = if key.peer.is_ipv4() { 4 } else { 6 };
        let peer = bits(key.peer);
        let direction = match key.direction {
            Direction::Rx => RX,
            Direction::Tx => TX,
        };
        for (index, rule) in self.compiled.iter().enumerate() {
            if rule.directions & direction == 0 {
                continue;
            }
            if rule.family != 0 && (rule.family != family || peer & rule.mask != rule.net) {
                continue;
            }
            let service_matches = match (rule.service, key.service) {
                (None, _) => true,
                (Some(wanted), Service::Known(got)) => wanted == got,
                (Some(_), Service::Unknown) => rule.action == Action::Deny,
            };
            if service_matches {
                return (rule.action, Some(index));
            }
        }
        (self.config.default, None)
    }
}
