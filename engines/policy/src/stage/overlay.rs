//! The `overlay` stage: Tx packets encapsulated for their tenant's network and sent to the
//! physical peer the mapping gives; Rx packets decapsulated after every check, then handed
//! on with their virtual source as peer and their tenant in the metadata. A packet that
//! fails is dropped under its reason ([`EncapDrop::reason`], [`DecapDrop::reason`]).
//!
//! A Tx packet without a tenant (0: its Pony engine sets none) belongs to the pipeline's
//! tenant: the only local tenant of the table. With several local tenants, such a packet
//! is dropped as `unknown_tenant` rather than guessed.
//!
//! Settings: an [`OverlayConfig`] table (`[[tenant]]`, `[[mapping]]`), replaced whole.

use snap_pipeline::{Direction, Meta, Output, Packet, Peer, Stage, UpdateError};

use crate::overlay::wire::HEADER_LEN;
use crate::overlay::{DecapDrop, EncapDrop, Overlay, OverlayConfig, Tables};

/// See the module documentation.
pub struct OverlayStage {
    overlay: Overlay,
    /// The tenant of Tx packets without one (the only local tenant), if any.
    default_tenant: Option<u32>,
}

fn tables(settings: &str) -> Result<(Tables, Option<u32>), UpdateError> {
    let config: OverlayConfig = super::parse("overlay", settings)?;
    let default_tenant = match config.tenants.as_slice() {
        [only] => Some(only.tenant),
        _ => None,
    };
    let tables =
        Tables::new(config).map_err(|error| UpdateError::new(format!("overlay settings: {error}")))?;
    Ok((tables, default_tenant))
}

impl OverlayStage {
    /// A stage with `settings` (TOML text, an [`OverlayConfig`] table).
    pub fn new(settings: &str) -> Result<OverlayStage, UpdateError> {
        let (tables, default_tenant) = tables(settings)?;
        Ok(OverlayStage {
            overlay: Overlay::new(tables),
            default_tenant,
        })
    }

    /// The core (tests).
    pub fn overlay(&self) -> &Overlay {
        &self.overlay
    }

    fn encap(&mut self, mut pkt: Packet, out: &mut Output<'_>) {
        let Peer::Ip(dst) = pkt.peer() else {
            return out.drop(pkt, EncapDrop::UnknownMapping.reason());
        };
        let meta = pkt.meta();
        let tenant = match (meta.tenant, self.default_tenant) {
            (0, Some(tenant)) => tenant,
            (tenant, _) => tenant,
        };
        let (repr, physical) = match self.overlay.encap(tenant, dst, pkt.len()) {
            Ok(found) => found,
            Err(drop) => return out.drop(pkt, drop.reason()),
        };
        match pkt.prepend(HEADER_LEN) {
            Ok(header) => {
                let header: &mut [u8; HEADER_LEN] =
                    header.try_into().expect("prepend gives HEADER_LEN bytes");
                repr.emit(header);
            }
            Err(_) => return out.drop(pkt, "no_headroom"),
        }
        pkt.set_peer(Peer::Ip(physical));
        pkt.set_meta(Meta { tenant, ..meta });
        if let Err(pkt) = out.forward(pkt) {
            out.drop(pkt, "output_full");
        }
    }

    fn decap(&mut self, mut pkt: Packet, out: &mut Output<'_>) {
        let Peer::Ip(src) = pkt.peer() else {
            return out.drop(pkt, DecapDrop::UnknownMapping.reason());
        };
        let delivery = match self.overlay.decap(src, pkt.bytes()) {
            Ok(delivery) => delivery,
            Err(drop) => return out.drop(pkt, drop.reason()),
        };
        if pkt.strip(delivery.header_len).is_err() {
            return out.drop(pkt, DecapDrop::Malformed.reason());
        }
        pkt.set_peer(Peer::Ip(delivery.src));
        let meta = pkt.meta();
        pkt.set_meta(Meta {
            tenant: delivery.tenant,
            ..meta
        });
        if let Err(pkt) = out.forward(pkt) {
            out.drop(pkt, "output_full");
        }
    }
}

impl Stage for OverlayStage {
    fn kind(&self) -> &'static str {
        "overlay"
    }

    fn process(&mut self, pkt: Packet, out: &mut Output<'_>) {
        match pkt.direction() {
            Direction::Tx => self.encap(pkt, out),
            Direction::Rx => self.decap(pkt, out),
        }
    }

    fn headroom(&self) -> usize {
        HEADER_LEN
    }

    fn update(&mut self, settings: &str) -> Result<(), UpdateError> {
        let (tables, default_tenant) = tables(settings)?;
        self.overlay.replace(tables);
        self.default_tenant = default_tenant;
        Ok(())
    }

    fn counters(&self) -> Option<serde_json::Value> {
        serde_json::to_value(self.overlay.counters()).ok()
    }
}
