//! The registry of engine kinds: every kind a configuration can name in `kind`, what each
//! accepts, and the checks of its kind-specific fields. [`super::pipeline`] builds them, all
//! in one match.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{invalid, ConfigError, EngineConfig};

/// Which engine to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// `snap_engines::echo::EchoEngine`: serves app channels.
    Echo,
    /// `snap_engines::udp_echo::UdpEchoEngine`: echoes datagrams on a UDP socket.
    UdpEcho,
    /// `snap_engines::relay::RelayEngine`: serves app channels by forwarding to `next`.
    Relay,
    /// `pony_engine::PonyEngine`: Pony Express on the NIC its `options` choose
    /// ([`super::pony`]).
    Pony,
}

impl EngineKind {
    /// Every kind, in the order error messages list them.
    pub const ALL: [EngineKind; 4] = [Self::Echo, Self::UdpEcho, Self::Relay, Self::Pony];

    /// The name used in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Echo => "echo",
            Self::UdpEcho => "udp_echo",
            Self::Relay => "relay",
            Self::Pony => "pony",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl<'de> Deserialize<'de> for EngineKind {
    /// A known kind's name; anything else is an error listing the known ones (the `toml`
    /// crate adds the key and its line).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Self::from_name(&name).ok_or_else(|| {
            let known: Vec<&str> = Self::ALL.iter().map(|k| k.as_str()).collect();
            serde::de::Error::custom(format!("unknown kind {name:?} (known: {})", known.join(", ")))
        })
    }
}

impl Serialize for EngineKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Checks an engine's `options` against its kind, without acquiring anything (sockets are
/// bound when the engine is built). `at` is the engine's field path.
pub(super) fn validate_options(at: &str, e: &EngineConfig) -> Result<(), ConfigError> {
    match (e.kind, &e.options) {
        (EngineKind::Pony, options) => {
            let empty = toml::Table::new();
            super::pony::validate(options.as_ref().unwrap_or(&empty))
                .map_err(|message| invalid(format!("{at}.options"), message))
        }
        (_, Some(_)) => Err(invalid(
            format!("{at}.options"),
            format!("only applies to kind \"pony\", not \"{}\"", e.kind.as_str()),
        )),
        (_, None) => Ok(()),
    }
}
