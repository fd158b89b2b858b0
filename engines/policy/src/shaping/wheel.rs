//! The timing wheel (Carousel, SIGCOMM'17): one ring of `slots` slots of `granularity_ns`
//! each, holding every delayed packet of every class under its release time. Slot `k`
//! (absolute) covers release times in `((k-1)·g, k·g]` and is emptied once `now ≥ k·g`,
//! so a packet never leaves before its release time and at most one granularity after it.
//!
//! ```text
//!   cursor (first slot not yet emptied)
//!      ▼
//!   [ k ][k+1][k+2] … [k+slots-1]      ← the horizon: slots·g ahead of the cursor
//!     │    │
//!     a→b  c          each slot a FIFO (intrusive list through the node arena)
//! ```
//!
//! Bounded: a fixed arena of `capacity` nodes, allocated once, with a free list; a packet
//! past the horizon or with no free node is refused and handed back to the caller. There
//! are no per-flow queues: packets of one class come out in order because their release
//! times never decrease and each slot is first in, first out.

const NONE: u32 = u32::MAX;

struct Node<T> {
    item: Option<T>,
    next: u32,
}

/// Why the wheel refused an item (the item comes back with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every node holds a packet.
    Full,
    /// The release time is beyond the last slot.
    PastHorizon,
}

/// The wheel of items `T`.
pub struct Wheel<T> {
    granularity_ns: u64,
    heads: Vec<u32>,
    tails: Vec<u32>,
    nodes: Vec<Node<T>>,
    free: u32,
    held: usize,
    /// Absolute index of the first slot not yet emptied (`None` until the first use).
    cursor: Option<u64>,
}

impl<T> Wheel<T> {
    /// A wheel of `slots` slots of `granularity_ns` holding at most `capacity` items (all
    /// ≥ 1 and `capacity < u32::MAX`, checked by the configuration).
    pub fn new(granularity_ns: u64, slots: usize, capacity: usize) -> Wheel<T> {
        assert!(granularity_ns >= 1 && slots >= 1 && capacity >= 1 && capacity < NONE as usize);
        let nodes = (0..capacity)
            .map(|i| Node {
                item: None,
                next: if i + 1 < capacity { i as u32 + 1 } else { NONE },
            })
            .collect();
        Wheel {
            granularity_ns,
            heads: vec![NONE; slots],
            tails: vec![NONE; slots],
            nodes,
            free: 0,
            held: 0,
            cursor: None,
        }
    }

    /// Items held.
    pub fn held(&self) -> usize {
        self.held
    }

    /// The most items it holds.
    pub fn capacity(&self) -> usize {
        self.nodes.len()
    }

    /// How far ahead of the cursor a release time may be.
    pub fn horizon_ns(&self) -> u64 {
        self.granularity_ns.saturating_mul(self.heads.len() as u64)
    }

    fn slot_of(&self, release_ns: u64) -> u64 {
        release_ns.div_ceil(self.granularity_ns)
    }

    /// The cursor an insert at `now_ns` works from: an empty wheel's cursor catches up
    /// with `now_ns` (nothing is left to empty behind it), so that an idle spell without
    /// polls does not push every release time past the horizon.
    fn cursor_at(&self, now_ns: u64) -> u64 {
        let now_slot = now_ns / self.granularity_ns;
        match self.cursor {
            None => now_slot,
            Some(cursor) if self.held == 0 => cursor.max(now_slot),
            Some(cursor) => cursor,
        }
    }

    /// Whether an item released at `release_ns` would be taken at `now_ns`.
    pub fn check(&self, now_ns: u64, release_ns: u64) -> Result<(), Refusal> {
        if self.free == NONE {
            return Err(Refusal::Full);
        }
        let cursor = self.cursor_at(now_ns);
        if self.slot_of(release_ns).saturating_sub(cursor) >= self.heads.len() as u64 {
            return Err(Refusal::PastHorizon);
        }
        Ok(())
    }

    /// Holds `item` until `release_ns`, or hands it back with why not.
    pub fn insert(&mut self, now_ns: u64, release_ns: u64, item: T) -> Result<(), (Refusal, T)> {
        if let Err(refusal) = self.check(now_ns, release_ns) {
            return Err((refusal, item));
        }
        let cursor = self.cursor_at(now_ns);
        self.cursor = Some(cursor);
        // A release time in a slot already emptied (a caller's `now` behind the last
        // poll's) goes in the next slot to be emptied: due, and still after its class's
        // earlier packets.
        let slot = self.slot_of(release_ns).max(cursor);
        let index = (slot % self.heads.len() as u64) as usize;
        let node = self.free;
        self.free = self.nodes[node as usize].next;
        self.nodes[node as usize] = Node {
            item: Some(item),
            next: NONE,
        };
        match self.tails[index] {
            NONE => self.heads[index] = node,
            tail => self.nodes[tail as usize].next = node,
        }
        self.tails[index] = node;
        self.held += 1;
        Ok(())
    }

    /// Hands every item due at `now_ns` to `release`, in slot order and first in, first
    /// out within a slot. When `release` gives an item back (its output is full) the item
    /// stays first in line and polling stops until the next call.
    pub fn poll(&mut self, now_ns: u64, mut release: impl FnMut(T) -> Result<(), T>) {
        let due = now_ns / self.granularity_ns;
        let Some(mut cursor) = self.cursor else {
            return;
        };
        let slots = self.heads.len() as u64;
        while cursor <= due && self.held > 0 {
            let index = (cursor % slots) as usize;
            while self.heads[index] != NONE {
                let node = self.heads[index];
                let item = self.nodes[node as usize]
                    .item
                    .take()
                    .expect("a listed node holds an item");
                if let Err(item) = release(item) {
                    self.nodes[node as usize].item = Some(item);
                    self.cursor = Some(cursor);
                    return;
                }
                self.heads[index] = self.nodes[node as usize].next;
                if self.heads[index] == NONE {
                    self.tails[index] = NONE;
                }
                self.nodes[node as usize].next = self.free;
                self.free = node;
                self.held -= 1;
            }
            cursor += 1;
        }
        if self.held == 0 {
            cursor = cursor.max(due + 1);
        }
        self.cursor = Some(cursor);
    }

    /// When the earliest held item is due (ns), if any: a scan of at most `slots` slots.
    pub fn next_due_ns(&self) -> Option<u64> {
        if self.held == 0 {
            return None;
        }
        let cursor = self.cursor?;
        let slots = self.heads.len() as u64;
        (cursor..cursor + slots)
            .find(|slot| self.heads[(slot % slots) as usize] != NONE)
            .map(|slot| slot.saturating_mul(self.granularity_ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(wheel: &mut Wheel<u32>, now: u64) -> Vec<u32> {
        let mut out = vec![];
        wheel.poll(now, |item| {
            out.push(item);
            Ok(())
        });
        out
    }

    #[test]
    fn items_leave_at_their_slot_never_early_in_order() {
        let mut wheel = Wheel::new(10, 8, 16);
        wheel.insert(0, 25, 1).unwrap();
        wheel.insert(0, 21, 2).unwrap();
        wheel.insert(0, 30, 3).unwrap();
        wheel.insert(0, 31, 4).unwrap();
        assert_eq!(drain(&mut wheel, 29), Vec::<u32>::new());
        assert_eq!(wheel.next_due_ns(), Some(30));
        assert_eq!(drain(&mut wheel, 30), vec![1, 2, 3]);
        assert_eq!(drain(&mut wheel, 1000), vec![4]);
        assert_eq!(wheel.held(), 0);
        assert_eq!(wheel.next_due_ns(), None);
    }

    #[test]
    fn refuses_past_the_horizon_and_when_full() {
        let mut wheel = Wheel::new(10, 4, 2);
        assert_eq!(wheel.insert(0, 40, 1), Err((Refusal::PastHorizon, 1)));
        wheel.insert(0, 30, 1).unwrap();
        wheel.insert(0, 30, 2).unwrap();
        assert_eq!(wheel.insert(0, 10, 3), Err((Refusal::Full, 3)));
        assert_eq!(drain(&mut wheel, 30), vec![1, 2]);
        // The horizon moves with the cursor.
        wheel.insert(30, 60, 3).unwrap();
        assert_eq!(drain(&mut wheel, 60), vec![3]);
    }

    #[test]
    fn an_item_handed_back_stays_first() {
        let mut wheel = Wheel::new(10, 4, 4);
        for item in 1..=3 {
            wheel.insert(0, 10, item).unwrap();
        }
        let mut out = vec![];
        wheel.poll(10, |item| {
            if out.len() == 1 {
                return Err(item);
            }
            out.push(item);
            Ok(())
        });
        assert_eq!(out, vec![1]);
        assert_eq!(drain(&mut wheel, 10), vec![2, 3]);
    }
}
