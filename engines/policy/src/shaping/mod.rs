//! The shaper: per-class token buckets ([`bucket`]) that stamp every packet with a release
//! time, and one timing wheel ([`wheel`]) that holds the packets stamped for later —
//! Carousel's design: no per-flow queue in the fast path, one shaper for every class.
//!
//! ```text
//!  offer(now, class, len, pkt) ─▶ bucket of the class ─▶ release ≤ now → Now(pkt): send it
//!                                                      ─▶ release > now → wheel (Held)
//!                                                      ─▶ wheel full / past the horizon →
//!                                                         Refused(pkt): backpressure, the
//!                                                         bucket unchanged, nothing lost
//!  poll(now, send) ─▶ every held packet due, in release order
//! ```
//!
//! A class is a tenant and optionally a traffic class within it ([`ClassKey`]); a packet
//! whose tenant and class have no bucket uses its tenant's class-less bucket, and one with
//! neither goes unshaped (counted). Accounting is exact: for every class, the packets and
//! bytes sent, the part of them that waited in the wheel, and those refused.

pub mod bucket;
pub mod wheel;

#[cfg(test)]
mod tests;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use bucket::Bucket;
pub use wheel::Refusal;
use wheel::Wheel;

/// The most classes a shaper holds (a bound on the table an operator may send).
pub const MAX_CLASSES: usize = 4096;

/// The most packets a wheel may be configured to hold.
pub const MAX_CAPACITY: usize = 1 << 20;

/// The most slots a wheel may be configured with.
pub const MAX_SLOTS: usize = 1 << 20;

/// Which bucket a packet uses: its tenant, and its class within the tenant if that class
/// has a bucket of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClassKey {
    /// The tenant.
    pub tenant: u32,
    /// The traffic class; `None`: every class of the tenant without a bucket of its own.
    pub class: Option<u8>,
}

/// One class's limit as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassConfig {
    /// The tenant.
    pub tenant: u32,
    /// The traffic class (absent: the tenant's default bucket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<u8>,
    /// Rate in bits per second (wire bytes of the packets the stage sees).
    pub rate_bps: u64,
    /// Bytes that may go back to back after an idle period.
    pub burst_bytes: u64,
}

/// A shaper's configuration: the wheel's shape and the classes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShaperConfig {
    /// Width of one wheel slot, ns: the pacing precision.
    pub granularity_ns: u64,
    /// Slots in the wheel; `granularity_ns × slots` is the horizon.
    pub slots: usize,
    /// The most packets the wheel holds.
    pub capacity: usize,
    /// The classes' limits.
    #[serde(default, rename = "class")]
    pub classes: Vec<ClassConfig>,
}

/// Why a shaper configuration is refused (nothing of it is used then).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShaperConfigError {
    /// A wheel dimension is zero or above its bound.
    #[error("wheel {0} out of range")]
    Wheel(&'static str),
    /// A class with rate or burst zero.
    #[error("tenant {tenant} class {class:?}: rate_bps and burst_bytes must be at least 1")]
    ZeroLimit {
        /// Its tenant.
        tenant: u32,
        /// Its class.
        class: Option<u8>,
    },
    /// Two entries for one class.
    #[error("tenant {tenant} class {class:?} configured twice")]
    Duplicate {
        /// Its tenant.
        tenant: u32,
        /// Its class.
        class: Option<u8>,
    },
    /// More than [`MAX_CLASSES`].
    #[error("{0} classes, at most {MAX_CLASSES}")]
    TooManyClasses(usize),
    /// A new configuration changes the wheel while it holds packets.
    #[error("the wheel's shape changes only while it holds no packet")]
    WheelBusy,
}

impl ShaperConfig {
    /// Checks the whole configuration.
    pub fn check(&self) -> Result<(), ShaperConfigError> {
        if self.granularity_ns == 0 {
            return Err(ShaperConfigError::Wheel("granularity_ns"));
        }
        if self.slots == 0 || self.slots > MAX_SLOTS {
            return Err(ShaperConfigError::Wheel("slots"));
        }
        if self.capacity == 0 || self.capacity > MAX_CAPACITY {
            return Err(ShaperConfigError::Wheel("capacity"));
        }
        if self.classes.len() > MAX_CLASSES {
            return Err(ShaperConfigError::TooManyClasses(self.classes.len()));
        }
        let mut seen = std::collections::HashSet::new();
        for class in &self.classes {
            let (tenant, key) = (class.tenant, class.class);
            if class.rate_bps == 0 || class.burst_bytes == 0 {
                return Err(ShaperConfigError::ZeroLimit { tenant, class: key });
            }
            if !seen.insert((tenant, key)) {
                return Err(ShaperConfigError::Duplicate { tenant, class: key });
            }
        }
        Ok(())
    }
}

/// What became of an offered packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer<T> {
    /// It conforms now: send it (counted as sent).
    Now(T),
    /// The wheel holds it until its release time.
    Held,
    /// The wheel cannot take it: back to the sender, who offers it again later.
    Refused(Refusal, T),
}

/// One class's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ClassCounters {
    /// Packets released (at once or from the wheel).
    pub sent_packets: u64,
    /// Their bytes.
    pub sent_bytes: u64,
    /// Packets that waited in the wheel (released or still held).
    pub delayed_packets: u64,
    /// Their bytes.
    pub delayed_bytes: u64,
    /// Packets in the wheel now (a gauge: `delayed` minus those released).
    pub held_packets: u64,
    /// Their bytes.
    pub held_bytes: u64,
    /// Offers refused (the same packet offered again counts again).
    pub refused_packets: u64,
    /// Their bytes.
    pub refused_bytes: u64,
}

/// A class's configuration, state and counters.
#[derive(Debug, Clone)]
struct Class {
    key: ClassKey,
    /// `None`: the class was removed by an update; its held packets still go out.
    bucket: Option<Bucket>,
    counters: ClassCounters,
}

struct Held<T> {
    item: T,
    class: u32,
    len: u32,
}

/// The shaper over packets of type `T`.
pub struct Shaper<T> {
    config: ShaperConfig,
    classes: Vec<Class>,
    index: HashMap<ClassKey, u32>,
    wheel: Wheel<Held<T>>,
    unshaped: ClassCounters,
}

/// Every class's counters, for status.
#[derive(Debug, Clone, Serialize)]
pub struct ShaperCounters {
    /// Per configured class (removed classes included while they have counts).
    pub classes: Vec<(ClassKey, Option<u64>, ClassCounters)>,
    /// Packets of no configured class (passed at once).
    pub unshaped: ClassCounters,
    /// Packets in the wheel now.
    pub held: u64,
}

impl<T> Shaper<T> {
    /// A shaper with `config` (checked whole).
    pub fn new(config: ShaperConfig) -> Result<Shaper<T>, ShaperConfigError> {
        config.check()?;
        let wheel = Wheel::new(config.granularity_ns, config.slots, config.capacity);
        let mut shaper = Shaper {
            config: ShaperConfig {
                classes: vec![],
                ..config.clone()
            },
            classes: vec![],
            index: HashMap::new(),
            wheel,
            unshaped: ClassCounters::default(),
        };
        shaper.install_classes(&config.classes);
        shaper.config = config;
        Ok(shaper)
    }

    /// Replaces the configuration whole, between two packets. Classes that stay keep
    /// their bucket's state under the new limits; removed ones let their held packets go
    /// at their stamped times. The wheel's shape may change only while it is empty.
    pub fn update(&mut self, config: ShaperConfig) -> Result<(), ShaperConfigError> {
        config.check()?;
        let reshape = (config.granularity_ns, config.slots, config.capacity)
            != (
                self.config.granularity_ns,
                self.config.slots,
                self.config.capacity,
            );
        if reshape {
            if self.wheel.held() > 0 {
                return Err(ShaperConfigError::WheelBusy);
            }
            self.wheel = Wheel::new(config.granularity_ns, config.slots, config.capacity);
        }
        let kept: std::collections::HashSet<ClassKey> = config
            .classes
            .iter()
            .map(|class| ClassKey {
                tenant: class.tenant,
                class: class.class,
            })
            .collect();
        for class in &mut self.classes {
            if !kept.contains(&class.key) {
                class.bucket = None;
            }
        }
        self.install_classes(&config.classes);
        self.config = config;
        Ok(())
    }

    fn install_classes(&mut self, classes: &[ClassConfig]) {
        for class in classes {
            let key = ClassKey {
                tenant: class.tenant,
                class: class.class,
            };
            let (rate, burst) = (class.rate_bps, class.burst_bytes);
            match self.index.get(&key) {
                Some(&at) => {
                    let slot = &mut self.classes[at as usize];
                    match &mut slot.bucket {
                        Some(bucket) => bucket.set(rate, burst),
                        None => slot.bucket = Some(Bucket::new(rate, burst)),
                    }
                }
                None => {
                    self.index.insert(key, self.classes.len() as u32);
                    self.classes.push(Class {
                        key,
                        bucket: Some(Bucket::new(rate, burst)),
                        counters: ClassCounters::default(),
                    });
                }
            }
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &ShaperConfig {
        &self.config
    }

    fn class_of(&self, tenant: u32, class: u8) -> Option<u32> {
        let exact = ClassKey {
            tenant,
            class: Some(class),
        };
        let any = ClassKey { tenant, class: None };
        [exact, any]
            .iter()
            .filter_map(|key| self.index.get(key))
            .copied()
            .find(|&at| self.classes[at as usize].bucket.is_some())
    }

    /// Offers a packet of `len` bytes of `tenant`/`class` at `now_ns`.
    pub fn offer(&mut self, now_ns: u64, tenant: u32, class: u8, len: usize, item: T) -> Offer<T> {
        let Some(at) = self.class_of(tenant, class) else {
            count_sent(&mut self.unshaped, len);
            return Offer::Now(item);
        };
        let entry = &mut self.classes[at as usize];
        let bucket = entry
            .bucket
            .as_mut()
            .expect("class_of returns classes with a bucket");
        let stamp = bucket.stamp(now_ns, len);
        if stamp.release_ns <= now_ns {
            bucket.commit(stamp);
            count_sent(&mut entry.counters, len);
            return Offer::Now(item);
        }
        let held = Held {
            item,
            class: at,
            len: len as u32,
        };
        match self.wheel.insert(now_ns, stamp.release_ns, held) {
            Ok(()) => {
                bucket.commit(stamp);
                entry.counters.delayed_packets += 1;
                entry.counters.delayed_bytes += len as u64;
                entry.counters.held_packets += 1;
                entry.counters.held_bytes += len as u64;
                Offer::Held
            }
            Err((refusal, held)) => {
                entry.counters.refused_packets += 1;
                entry.counters.refused_bytes += len as u64;
                Offer::Refused(refusal, held.item)
            }
        }
    }

    /// Hands every held packet due at `now_ns` to `send`, in release order; a packet `send`
    /// gives back (its output is full) stays first in line for the next poll.
    pub fn poll(&mut self, now_ns: u64, mut send: impl FnMut(T) -> Result<(), T>) {
        let classes = &mut self.classes;
        self.wheel.poll(now_ns, |held| {
            let Held { item, class, len } = held;
            match send(item) {
                Ok(()) => {
                    let counters = &mut classes[class as usize].counters;
                    count_sent(counters, len as usize);
                    counters.held_packets -= 1;
                    counters.held_bytes -= u64::from(len);
                    Ok(())
                }
                Err(item) => Err(Held { item, class, len }),
            }
        });
    }

    /// When the next held packet is due, if any.
    pub fn next_due_ns(&self) -> Option<u64> {
        self.wheel.next_due_ns()
    }

    /// Packets held now.
    pub fn held(&self) -> usize {
        self.wheel.held()
    }

    /// Whether the wheel has a free node (a stage stops taking input while it has none).
    pub fn has_room(&self) -> bool {
        self.wheel.held() < self.wheel.capacity()
    }

    /// The counters of `tenant`/`class`'s bucket (as [`Shaper::offer`] would pick it).
    pub fn class_counters(&self, tenant: u32, class: Option<u8>) -> Option<ClassCounters> {
        self.index
            .get(&ClassKey { tenant, class })
            .map(|&at| self.classes[at as usize].counters)
    }

    /// Every counter.
    pub fn counters(&self) -> ShaperCounters {
        ShaperCounters {
            classes: self
                .classes
                .iter()
                .map(|class| {
                    (
                        class.key,
                        class.bucket.as_ref().map(Bucket::rate_bps),
                        class.counters,
                    )
                })
                .collect(),
            unshaped: self.unshaped,
            held: self.wheel.held() as u64,
        }
    }
}

fn count_sent(counters: &mut ClassCounters, len: usize) {
    counters.sent_packets += 1;
    counters.sent_bytes += len as u64;
}
