//! The `shaper` stage: Tx packets through [`crate::shaping::Shaper`] by their tenant and
//! class metadata; Rx packets pass untouched.
//!
//! Backpressure: a packet the wheel refuses (full, or past the horizon) is parked — one at
//! most — and the stage stops accepting Tx input until it is taken, so the upstream ring
//! fills and Pony, the local sender, sees it full. Nothing is dropped for rate.

use std::time::{Duration, Instant};

use snap_pipeline::{Direction, Output, Packet, Stage, UpdateError};

use crate::shaping::{Offer, Shaper, ShaperConfig};

/// See the module documentation.
pub struct ShaperStage {
    shaper: Shaper<Packet>,
    parked: Option<Packet>,
    epoch: Instant,
    /// The latest `now` seen (ns since `epoch`): a parked packet is offered again a slot
    /// after it.
    last_ns: u64,
}

impl ShaperStage {
    /// A stage with `settings` (TOML text, a [`ShaperConfig`] table).
    pub fn new(settings: &str) -> Result<ShaperStage, UpdateError> {
        let config: ShaperConfig = super::parse("shaper", settings)?;
        let shaper =
            Shaper::new(config).map_err(|error| UpdateError::new(format!("shaper settings: {error}")))?;
        Ok(ShaperStage {
            shaper,
            parked: None,
            epoch: Instant::now(),
            last_ns: 0,
        })
    }

    /// The core (tests).
    pub fn shaper(&self) -> &Shaper<Packet> {
        &self.shaper
    }

    /// Offers `pkt`; a refused one is parked. Returns the packet to forward now, if any.
    fn offer(&mut self, now_ns: u64, pkt: Packet) -> Option<Packet> {
        let meta = pkt.meta();
        let len = pkt.len();
        match self.shaper.offer(now_ns, meta.tenant, meta.class, len, pkt) {
            Offer::Now(pkt) => Some(pkt),
            Offer::Held => None,
            Offer::Refused(_, pkt) => {
                debug_assert!(
                    self.parked.is_none(),
                    "accepts() is false while a packet is parked"
                );
                self.parked = Some(pkt);
                None
            }
        }
    }
}

impl Stage for ShaperStage {
    fn kind(&self) -> &'static str {
        "shaper"
    }

    fn process(&mut self, pkt: Packet, out: &mut Output<'_>) {
        if pkt.direction() == Direction::Rx {
            if let Err(pkt) = out.forward(pkt) {
                out.drop(pkt, "output_full");
            }
            return;
        }
        let now_ns = super::ns_since(self.epoch, out.now());
        self.last_ns = self.last_ns.max(now_ns);
        if let Some(pkt) = self.offer(now_ns, pkt) {
            if let Err(pkt) = out.forward(pkt) {
                out.drop(pkt, "output_full");
            }
        }
    }

    fn accepts(&self, dir: Direction) -> bool {
        dir == Direction::Rx || (self.parked.is_none() && self.shaper.has_room())
    }

    fn poll(&mut self, now: Instant, out: &mut Output<'_>) {
        let now_ns = super::ns_since(self.epoch, now);
        self.last_ns = self.last_ns.max(now_ns);
        self.shaper.poll(now_ns, |pkt| out.forward(pkt));
        // Offered again only when its output has room, so that a packet the bucket lets
        // go at once can always be forwarded.
        if out.has_room(Direction::Tx) {
            if let Some(pkt) = self.parked.take() {
                if let Some(pkt) = self.offer(now_ns, pkt) {
                    if let Err(pkt) = out.forward(pkt) {
                        out.drop(pkt, "output_full");
                    }
                }
            }
        }
    }

    fn poll_at(&self) -> Option<Instant> {
        let due = self
            .shaper
            .next_due_ns()
            .map(|ns| self.epoch + Duration::from_nanos(ns));
        match (&self.parked, due) {
            // A parked packet waits for room in the wheel, which the next slot makes.
            (Some(_), None) => {
                Some(Instant::now() + Duration::from_nanos(self.shaper.config().granularity_ns))
            }
            (_, due) => due,
        }
    }

    fn held(&self) -> u64 {
        self.shaper.held() as u64 + u64::from(self.parked.is_some())
    }

    fn update(&mut self, settings: &str) -> Result<(), UpdateError> {
        let config: ShaperConfig = super::parse("shaper", settings)?;
        self.shaper
            .update(config)
            .map_err(|error| UpdateError::new(format!("shaper settings: {error}")))
    }

    fn counters(&self) -> Option<serde_json::Value> {
        serde_json::to_value(self.shaper.counters()).ok()
    }
}
