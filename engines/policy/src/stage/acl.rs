//! The `acl` stage: every packet, both directions, judged by [`crate::acl::Acl`].
//!
//! Settings: an [`AclSettings`] table (`default`, `[[rule]]`s, memo bounds). A packet
//! without an IP peer (the point-to-point shared-memory wire) is judged with peer `::`.

use std::net::{IpAddr, Ipv6Addr};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use snap_pipeline::{Output, Packet, Peer, Stage, UpdateError};

use crate::acl::{Acl, AclConfig, Action, DenyReason, Direction, RuleConfig, RuleSet, Verdict};

/// The most flows the memo holds unless the settings say otherwise.
pub const DEFAULT_MEMO_CAPACITY: usize = 65_536;
/// How long a memo entry may sit unused before a full memo may sweep it, unless set.
pub const DEFAULT_MEMO_IDLE_MS: u64 = 60_000;

/// The `acl` stage's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclSettings {
    /// What a packet no rule matches gets.
    pub default: Action,
    /// The rules, first match wins.
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleConfig>,
    /// The most flows the memo holds (fixed when the stage is made).
    #[serde(default)]
    pub memo_capacity: Option<usize>,
    /// Idle time after which a full memo may forget a flow, ms (fixed when made).
    #[serde(default)]
    pub memo_idle_ms: Option<u64>,
}

impl AclSettings {
    fn rule_set(&self) -> Result<RuleSet, UpdateError> {
        RuleSet::new(AclConfig {
            default: self.default,
            rules: self.rules.clone(),
        })
        .map_err(|error| UpdateError::new(format!("acl settings: {error}")))
    }
}

/// See the module documentation.
pub struct AclStage {
    acl: Acl,
    epoch: Instant,
}

impl AclStage {
    /// A stage with `settings` (TOML text, an [`AclSettings`] table).
    pub fn new(settings: &str) -> Result<AclStage, UpdateError> {
        let settings: AclSettings = super::parse("acl", settings)?;
        let rules = settings.rule_set()?;
        let capacity = settings.memo_capacity.unwrap_or(DEFAULT_MEMO_CAPACITY);
        let idle_ns = settings
            .memo_idle_ms
            .unwrap_or(DEFAULT_MEMO_IDLE_MS)
            .saturating_mul(1_000_000);
        Ok(AclStage {
            acl: Acl::new(rules, capacity, idle_ns),
            epoch: Instant::now(),
        })
    }

    /// The core (tests).
    pub fn acl(&self) -> &Acl {
        &self.acl
    }
}

impl Stage for AclStage {
    fn kind(&self) -> &'static str {
        "acl"
    }

    fn process(&mut self, pkt: Packet, out: &mut Output<'_>) {
        let direction = match pkt.direction() {
            snap_pipeline::Direction::Tx => Direction::Tx,
            snap_pipeline::Direction::Rx => Direction::Rx,
        };
        let peer = match pkt.peer() {
            Peer::Ip(addr) => addr.ip(),
            Peer::None | Peer::Wire => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let now_ns = super::ns_since(self.epoch, out.now());
        match self.acl.check(now_ns, direction, peer, pkt.bytes()) {
            Verdict::Allow => {
                if let Err(pkt) = out.forward(pkt) {
                    out.drop(pkt, "output_full");
                }
            }
            Verdict::Deny(DenyReason::Rule(_)) => out.drop(pkt, "deny_rule"),
            Verdict::Deny(DenyReason::Default) => out.drop(pkt, "deny_default"),
            Verdict::Deny(DenyReason::MemoFull) => out.drop(pkt, "memo_full"),
        }
    }

    /// A whole new rule table; the memo bounds stay as made (a different value is refused
    /// rather than ignored).
    fn update(&mut self, settings: &str) -> Result<(), UpdateError> {
        let settings: AclSettings = super::parse("acl", settings)?;
        if settings.memo_capacity.is_some() || settings.memo_idle_ms.is_some() {
            return Err(UpdateError::new(
                "acl settings: the memo bounds are fixed when the stage is made",
            ));
        }
        let rules = settings.rule_set()?;
        self.acl.replace(rules);
        Ok(())
    }

    fn counters(&self) -> Option<serde_json::Value> {
        serde_json::to_value(self.acl.counters()).ok()
    }
}
