//! The flow memo: which Pony service each flow belongs to, so that the ACL can match a data
//! packet (which names only its flow) on its service.
//!
//! A Pony packet names the *receiver's* id for its flow (`dst_flow`), and each side picks
//! its own id. The memo therefore keys an entry by the peer's address, whose id it is
//! ([`Side`]) and the id:
//!
//! ```text
//!  Tx Connect{src_flow F, service S}   → (peer, Local,  F) = S   (their replies carry F)
//!  Rx Accept{dst_flow F, src_flow G}   → (peer, Remote, G) = S of (peer, Local, F)
//!  Rx Connect{src_flow F, service S}   → (peer, Remote, F) = S   (our packets carry F)
//!  Tx Accept{dst_flow F, src_flow G}   → (peer, Local,  G) = S of (peer, Remote, F)
//!  Rx packet with dst_flow F           ← (peer, Local,  F)
//!  Tx packet with dst_flow F           ← (peer, Remote, F)
//! ```
//!
//! The Pony engine hands a packet to the flow its `dst_flow` names, so the service the
//! memo gives is the service of the flow the packet would reach: a packet that names
//! another flow of the same peer is judged as that flow's packet, and a packet naming a
//! flow that its source address never opened finds no entry ([`Service::Unknown`], which
//! no allow-by-service rule matches). Only checksummed handshakes that the ACL allowed
//! create entries.
//!
//! Bounded: at most `capacity` entries. When full, entries idle longer than `idle_ns` are
//! swept (at most once per quarter of `idle_ns`, so a flood of new flows cannot make every
//! packet pay for a sweep); if that frees nothing, the new flow is refused and its
//! handshake dropped and counted (the sender retries its Connect), rather than evicting a
//! live flow whose packets would then lose their service.
//!
//! [`Service::Unknown`]: super::Service::Unknown

use std::collections::HashMap;
use std::net::IpAddr;

use pony_proto::wire::{FlowId, ServiceId};

/// Whose id a memo key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// This host's id for the flow (carried by Rx packets).
    Local,
    /// The peer's id for the flow (carried by Tx packets).
    Remote,
}

/// One memo key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// The peer's address.
    pub peer: IpAddr,
    /// Whose id `flow` is.
    pub side: Side,
    /// The id.
    pub flow: FlowId,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    service: ServiceId,
    last_seen_ns: u64,
}

/// The bounded map from flow keys to services.
#[derive(Debug)]
pub struct FlowMemo {
    entries: HashMap<FlowKey, Entry>,
    capacity: usize,
    idle_ns: u64,
    last_sweep_ns: Option<u64>,
}

/// The memo is full of live flows: the new one is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoFull;

impl FlowMemo {
    /// An empty memo of at most `capacity` entries, whose entries may be swept once idle
    /// for `idle_ns`.
    pub fn new(capacity: usize, idle_ns: u64) -> FlowMemo {
        FlowMemo {
            entries: HashMap::with_capacity(capacity),
            capacity,
            idle_ns,
            last_sweep_ns: None,
        }
    }

    /// The service of `key`, marking the entry seen at `now_ns`.
    pub fn lookup(&mut self, now_ns: u64, key: &FlowKey) -> Option<ServiceId> {
        let entry = self.entries.get_mut(key)?;
        entry.last_seen_ns = entry.last_seen_ns.max(now_ns);
        Some(entry.service)
    }

    /// The service of `key` without touching it.
    pub fn peek(&self, key: &FlowKey) -> Option<ServiceId> {
        self.entries.get(key).map(|entry| entry.service)
    }

    /// Whether `key` could be inserted now (it exists, or there is room, possibly after a
    /// sweep of idle entries).
    pub fn make_room(&mut self, now_ns: u64, key: &FlowKey) -> Result<(), MemoFull> {
        if self.entries.contains_key(key) || self.entries.len() < self.capacity {
            return Ok(());
        }
        let due = match self.last_sweep_ns {
            None => true,
            Some(last) => now_ns.saturating_sub(last) >= (self.idle_ns / 4).max(1),
        };
        if due {
            self.last_sweep_ns = Some(now_ns);
            let idle = self.idle_ns;
            self.entries
                .retain(|_, entry| now_ns.saturating_sub(entry.last_seen_ns) < idle);
        }
        if self.entries.len() < self.capacity {
            Ok(())
        } else {
            Err(MemoFull)
        }
    }

    /// Records `key → service` (after [`FlowMemo::make_room`] said yes). A key that exists
    /// is overwritten: a peer reusing one of its flow ids opens a new flow.
    pub fn insert(&mut self, now_ns: u64, key: FlowKey, service: ServiceId) {
        debug_assert!(self.entries.contains_key(&key) || self.entries.len() < self.capacity);
        self.entries.insert(
            key,
            Entry {
                service,
                last_seen_ns: now_ns,
            },
        );
    }

    /// Forgets `key` (the flow was closed or rejected).
    pub fn remove(&mut self, key: &FlowKey) {
        self.entries.remove(key);
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the memo is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The most entries it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}
