//! The Snap host runtime, being built bottom-up.
//!
//! What exists now: [`shm::SharedMem`], a memfd mapping that can be handed to another
//! process, and [`ring`], the lock-free single-producer/single-consumer ring of messages
//! that lives in it and will feed engines from applications and from each other.
//!
//! What will come (not here yet; nothing in this crate pretends otherwise): engines
//! (single-threaded, stateful tasks with a bounded `run()` step), interrupts (eventfd
//! doorbells, epoll on NIC queues), the three scheduling modes (dedicated, spreading in the
//! MicroQuanta class, compacting), and the `snap-host` control plane.

pub mod ring;
pub mod shm;

pub use ring::{Consumer, Peeked, PopError, Producer, PushError, Ring, RingError};
pub use shm::{SharedMem, ShmError};
