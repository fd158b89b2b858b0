//! The overlay core: each tenant has a virtual network (a VNI); packets between virtual
//! endpoints travel encapsulated ([`wire`]) between physical addresses, found in a
//! virtual→physical mapping table.
//!
//! ```text
//!  Tx: (tenant, virtual dst, inner) ─ tenant local here? ─ mapping (VNI, dst) → physical
//!      ─▶ header in the headroom in front of the inner bytes (no copy) ─▶ physical peer
//!  Rx: (physical src, bytes) ─ header parses (magic, version, CRC32C, lengths)
//!      ─ VNI is a tenant of this host ─ dst is that tenant's endpoint here
//!      ─ mapping (VNI, virtual src) → exactly the physical src ─▶ (tenant, virtual src, inner)
//!      anything else: dropped and counted by reason, never delivered
//! ```
//!
//! The last Rx check is what keeps tenants apart: a packet reaches tenant T only if the
//! physical host it came from is where T's mapping puts its virtual source. A corrupted
//! VNI fails the checksum; a well-formed packet claiming another tenant's VNI from a host
//! that carries no endpoint of that tenant finds no mapping to its source.
//!
//! The tables ([`OverlayConfig`]) are checked and built whole, then swapped between two
//! packets, like the ACL's rule set.

pub mod wire;

#[cfg(test)]
mod proptests;

use std::collections::HashMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The most mappings a table may hold.
pub const MAX_MAPPINGS: usize = 1 << 16;

/// A tenant that lives on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalTenant {
    /// The tenant's id in the pipeline (a packet's `tenant` metadata).
    pub tenant: u32,
    /// Its virtual network id.
    pub vni: u32,
    /// Its virtual endpoint on this host (the address its Pony engine is known by).
    pub endpoint: SocketAddr,
}

/// One virtual endpoint's physical address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// The virtual network.
    pub vni: u32,
    /// The virtual endpoint.
    pub endpoint: SocketAddr,
    /// Where its host receives overlay packets.
    pub physical: SocketAddr,
}

/// The overlay's tables as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverlayConfig {
    /// Tenants on this host.
    #[serde(default, rename = "tenant")]
    pub tenants: Vec<LocalTenant>,
    /// Virtual → physical, for every endpoint this host exchanges packets with.
    #[serde(default, rename = "mapping")]
    pub mappings: Vec<Mapping>,
}

/// Why tables are refused (nothing of them is used then).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverlayConfigError {
    /// VNI 0 is not a network.
    #[error("VNI 0 is not a virtual network")]
    ZeroVni,
    /// Tenant 0 means "no tenant" in a packet's metadata.
    #[error("tenant 0 means no tenant")]
    ZeroTenant,
    /// A tenant or VNI listed twice among the local tenants.
    #[error("tenant {tenant} / VNI {vni} listed twice")]
    DuplicateTenant {
        /// The tenant.
        tenant: u32,
        /// Its VNI.
        vni: u32,
    },
    /// Two mappings of one endpoint.
    #[error("VNI {vni} endpoint {endpoint} mapped twice")]
    DuplicateMapping {
        /// The VNI.
        vni: u32,
        /// The endpoint.
        endpoint: SocketAddr,
    },
    /// An IPv4-mapped IPv6 virtual address (the header cannot tell it from IPv4).
    #[error("{0}: IPv4-mapped IPv6 addresses are not virtual addresses")]
    MappedAddress(SocketAddr),
    /// More than [`MAX_MAPPINGS`].
    #[error("{0} mappings, at most {MAX_MAPPINGS}")]
    TooManyMappings(usize),
}

/// Checked, indexed tables.
#[derive(Debug, Clone)]
pub struct Tables {
    config: OverlayConfig,
    by_tenant: HashMap<u32, LocalTenant>,
    by_vni: HashMap<u32, LocalTenant>,
    mappings: HashMap<(u32, SocketAddr), SocketAddr>,
}

fn check_virtual(endpoint: SocketAddr) -> Result<(), OverlayConfigError> {
    match endpoint.ip() {
        std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
            Err(OverlayConfigError::MappedAddress(endpoint))
        }
        _ => Ok(()),
    }
}

impl Tables {
    /// Checks and indexes `config` whole.
    pub fn new(config: OverlayConfig) -> Result<Tables, OverlayConfigError> {
        if config.mappings.len() > MAX_MAPPINGS {
            return Err(OverlayConfigError::TooManyMappings(config.mappings.len()));
        }
        let mut by_tenant = HashMap::new();
        let mut by_vni = HashMap::new();
        for local in &config.tenants {
            if local.vni == 0 {
                return Err(OverlayConfigError::ZeroVni);
            }
            if local.tenant == 0 {
                return Err(OverlayConfigError::ZeroTenant);
            }
            check_virtual(local.endpoint)?;
            let duplicate = by_tenant.insert(local.tenant, local.clone()).is_some()
                | by_vni.insert(local.vni, local.clone()).is_some();
            if duplicate {
                return Err(OverlayConfigError::DuplicateTenant {
                    tenant: local.tenant,
                    vni: local.vni,
                });
            }
        }
        let mut mappings = HashMap::with_capacity(config.mappings.len());
        for mapping in &config.mappings {
            if mapping.vni == 0 {
                return Err(OverlayConfigError::ZeroVni);
            }
            check_virtual(mapping.endpoint)?;
            if mappings
                .insert((mapping.vni, mapping.endpoint), mapping.physical)
                .is_some()
            {
                return Err(OverlayConfigError::DuplicateMapping {
                    vni: mapping.vni,
                    endpoint: mapping.endpoint,
                });
            }
        }
        Ok(Tables {
            config,
            by_tenant,
            by_vni,
            mappings,
        })
    }

    /// The tables as written.
    pub fn config(&self) -> &OverlayConfig {
        &self.config
    }
}

/// Why a Tx packet was not encapsulated (dropped and counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncapDrop {
    /// Its tenant has no network on this host.
    UnknownTenant,
    /// No mapping for its virtual destination in its tenant's network.
    UnknownMapping,
    /// Longer than the header's length field can say.
    TooLong,
}

impl EncapDrop {
    /// The counter name.
    pub fn reason(self) -> &'static str {
        match self {
            EncapDrop::UnknownTenant => "unknown_tenant",
            EncapDrop::UnknownMapping => "unknown_mapping",
            EncapDrop::TooLong => "too_long",
        }
    }
}

/// Why an Rx packet was not delivered (dropped and counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecapDrop {
    /// The header does not parse (truncated, magic, version, reserved, lengths).
    Malformed,
    /// The header's checksum does not match.
    BadChecksum,
    /// Its VNI is no tenant of this host.
    WrongVni,
    /// Its virtual destination is not its tenant's endpoint here.
    NotLocal,
    /// Its virtual source has no mapping in that network.
    UnknownMapping,
    /// Its virtual source is mapped to another physical address than it came from.
    SourceMismatch,
}

impl DecapDrop {
    /// The counter name.
    pub fn reason(self) -> &'static str {
        match self {
            DecapDrop::Malformed => "malformed",
            DecapDrop::BadChecksum => "bad_checksum",
            DecapDrop::WrongVni => "wrong_vni",
            DecapDrop::NotLocal => "not_local",
            DecapDrop::UnknownMapping => "unknown_mapping",
            DecapDrop::SourceMismatch => "source_mismatch",
        }
    }
}

/// What an Rx packet decapsulates to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// The tenant it is for.
    pub tenant: u32,
    /// Its virtual source (the peer its Pony engine sees).
    pub src: SocketAddr,
    /// Header bytes to strip in front of the inner packet.
    pub header_len: usize,
}

/// The overlay's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OverlayCounters {
    /// Tx packets encapsulated.
    pub encapsulated: u64,
    /// Rx packets delivered.
    pub decapsulated: u64,
    /// Tables installed by [`Overlay::replace`].
    pub replacements: u64,
}

/// The overlay: tables and counters (drops are counted by the caller under
/// [`EncapDrop::reason`] / [`DecapDrop::reason`]).
#[derive(Debug)]
pub struct Overlay {
    tables: Tables,
    counters: OverlayCounters,
}

impl Overlay {
    /// An overlay with `tables`.
    pub fn new(tables: Tables) -> Overlay {
        Overlay {
            tables,
            counters: OverlayCounters::default(),
        }
    }

    /// Installs new tables for every later packet; returns the old ones.
    pub fn replace(&mut self, tables: Tables) -> Tables {
        self.counters.replacements += 1;
        std::mem::replace(&mut self.tables, tables)
    }

    /// The tables in force.
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// The counters.
    pub fn counters(&self) -> OverlayCounters {
        self.counters.clone()
    }

    /// The header for `tenant`'s packet of `inner_len` bytes to virtual `dst`, and the
    /// physical address to send it to. The caller writes the header in the packet's
    /// headroom with [`wire::Repr::emit`].
    pub fn encap(
        &mut self,
        tenant: u32,
        dst: SocketAddr,
        inner_len: usize,
    ) -> Result<(wire::Repr, SocketAddr), EncapDrop> {
        let local = self
            .tables
            .by_tenant
            .get(&tenant)
            .ok_or(EncapDrop::UnknownTenant)?;
        let physical = *self
            .tables
            .mappings
            .get(&(local.vni, dst))
            .ok_or(EncapDrop::UnknownMapping)?;
        let inner_len = u32::try_from(inner_len).map_err(|_| EncapDrop::TooLong)?;
        self.counters.encapsulated += 1;
        Ok((
            wire::Repr {
                vni: local.vni,
                src: local.endpoint,
                dst,
                inner_len,
            },
            physical,
        ))
    }

    /// Checks an overlay packet (`bytes`: header and inner packet) that came from
    /// `physical_src`, and says whom it is for. See the module documentation for the
    /// checks, in order.
    pub fn decap(&mut self, physical_src: SocketAddr, bytes: &[u8]) -> Result<Delivery, DecapDrop> {
        let packet = wire::Packet::new_checked(bytes).map_err(|_| DecapDrop::Malformed)?;
        let repr = wire::Repr::parse(&packet).map_err(|error| match error {
            wire::WireError::BadChecksum => DecapDrop::BadChecksum,
            _ => DecapDrop::Malformed,
        })?;
        let local = self.tables.by_vni.get(&repr.vni).ok_or(DecapDrop::WrongVni)?;
        if repr.dst != local.endpoint {
            return Err(DecapDrop::NotLocal);
        }
        match self.tables.mappings.get(&(repr.vni, repr.src)) {
            None => return Err(DecapDrop::UnknownMapping),
            Some(&mapped) if mapped != physical_src => return Err(DecapDrop::SourceMismatch),
            Some(_) => {}
        }
        self.counters.decapsulated += 1;
        Ok(Delivery {
            tenant: local.tenant,
            src: repr.src,
            header_len: wire::HEADER_LEN,
        })
    }
}
