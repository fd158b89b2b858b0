//! Snap's inter-process communication: what an application and a Snap host share, and
//! nothing else.
//!
//! [`shm::SharedMem`] is a sealed memfd mapping that can be handed to another process;
//! [`ring`] is the lock-free single-producer/single-consumer ring of messages that lives in
//! it; [`doorbell`] is how a producer wakes a blocked consumer (suppressed while the consumer
//! polls); [`channel`] is one app's connection to an engine (request and response rings,
//! doorbells) and its descriptor layout; [`control`] is the host's control protocol (attach,
//! descriptors over `SCM_RIGHTS`, status) and the app-side client. [`peer`] is the one way
//! to read memory another process can write: by copy, never through a reference.
//!
//! Applications link this crate (through the Pony app library), so it has no threads of its
//! own, no BPF, no configuration format and no engine runtime: the host's side lives in
//! `snap-runtime` and `snap-host`.

pub mod channel;
pub mod control;
pub mod doorbell;
pub mod fd_passing;
pub mod peer;
pub mod ring;
pub mod shm;

pub use doorbell::{Doorbell, DoorbellError, Ringer};
pub use ring::{Consumer, Peeked, PopError, Producer, PushError, Ring, RingError, RingProbe};
pub use shm::{SharedMem, ShmError};
