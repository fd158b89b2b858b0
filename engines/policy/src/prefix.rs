//! An IPv4 or IPv6 address prefix (`10.0.0.0/8`, `fd00::/16`), written and read as text in
//! rule tables.
//!
//! Hand-written rather than taken from a crate: the ACL needs only parsing, containment and
//! the `u128` form its matcher compares with masks, about sixty lines.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An address prefix of one family. A prefix matches only addresses of its own family
/// (an IPv4 prefix never matches an IPv4-mapped IPv6 address): the pipeline hands the ACL
/// the address the NIC saw, unconverted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

/// Why a prefix is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// Not `address` or `address/length`.
    #[error("`{0}` is not an address or address/length")]
    Syntax(String),
    /// Longer than the family's address (32 or 128).
    #[error("prefix length {len} is longer than the address ({max} bits)")]
    TooLong {
        /// The length given.
        len: u8,
        /// The family's width.
        max: u8,
    },
    /// Bits set after the prefix length (`10.0.0.1/8`): refused rather than masked, since a
    /// rule that does not mean what it says is a mistake worth reporting.
    #[error("`{0}` has host bits set after the prefix length")]
    HostBits(String),
}

impl Prefix {
    /// The prefix `addr/len`; host bits must be zero.
    pub fn new(addr: IpAddr, len: u8) -> Result<Prefix, PrefixError> {
        let max = family_bits(addr);
        if len > max {
            return Err(PrefixError::TooLong { len, max });
        }
        let prefix = Prefix { addr, len };
        if bits(addr) & !prefix.mask() != 0 {
            return Err(PrefixError::HostBits(format!("{addr}/{len}")));
        }
        Ok(prefix)
    }

    /// The prefix holding only `addr`.
    pub fn host(addr: IpAddr) -> Prefix {
        Prefix {
            addr,
            len: family_bits(addr),
        }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether this is a zero-length prefix (every address of its family).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `addr` is in the prefix (same family, same leading `len` bits).
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.addr.is_ipv4() == addr.is_ipv4() && bits(addr) & self.mask() == bits(self.addr)
    }

    /// The mask of the prefix's bits, in the `u128` form of [`bits`] (IPv4 in the low 32).
    pub fn mask(&self) -> u128 {
        let width = u32::from(family_bits(self.addr));
        let host = width - u32::from(self.len);
        let family = if width == 128 {
            u128::MAX
        } else {
            (1u128 << width) - 1
        };
        if host == 128 {
            0
        } else {
            family & !((1u128 << host) - 1)
        }
    }
}

/// The address as an integer: IPv4 in the low 32 bits, IPv6 all 128.
pub fn bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn family_bits(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    fn from_str(text: &str) -> Result<Prefix, PrefixError> {
        let syntax = || PrefixError::Syntax(text.to_owned());
        match text.split_once('/') {
            None => Ok(Prefix::host(text.parse().map_err(|_| syntax())?)),
            Some((addr, len)) => {
                let addr: IpAddr = addr.parse().map_err(|_| syntax())?;
                let len: u8 = len.parse().map_err(|_| syntax())?;
                Prefix::new(addr, len)
            }
        }
    }
}

impl serde::Serialize for Prefix {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Prefix, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_contains_both_families() {
        let v4: Prefix = "10.1.0.0/16".parse().unwrap();
        assert!(v4.contains("10.1.200.3".parse().unwrap()));
        assert!(!v4.contains("10.2.0.1".parse().unwrap()));
        assert!(!v4.contains("::ffff:10.1.0.1".parse().unwrap()));
        let v6: Prefix = "fd00:1::/32".parse().unwrap();
        assert!(v6.contains("fd00:1::7".parse().unwrap()));
        assert!(!v6.contains("fd00:2::7".parse().unwrap()));
        let all: Prefix = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        assert!(!all.contains("::1".parse().unwrap()));
        let all6: Prefix = "::/0".parse().unwrap();
        assert!(all6.contains("::1".parse().unwrap()));
        assert_eq!("192.0.2.1".parse::<Prefix>().unwrap().len(), 32);
    }

    #[test]
    fn refuses_bad_prefixes() {
        assert!(matches!(
            "10.0.0.1/8".parse::<Prefix>(),
            Err(PrefixError::HostBits(_))
        ));
        assert!(matches!(
            "10.0.0.0/33".parse::<Prefix>(),
            Err(PrefixError::TooLong { len: 33, max: 32 })
        ));
        assert!(matches!("ten/8".parse::<Prefix>(), Err(PrefixError::Syntax(_))));
        assert!(matches!("::/x".parse::<Prefix>(), Err(PrefixError::Syntax(_))));
    }
}
