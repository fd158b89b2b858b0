//! The Snap host runtime: engines, the rings and interrupts that feed them, the three
//! scheduling modes, and the host's control plane.
//!
//! Bottom-up: [`shm::SharedMem`] is a memfd mapping that can be handed to another process;
//! [`ring`] is the lock-free single-producer/single-consumer ring of messages that lives in
//! it; [`doorbell`] is how a producer wakes a blocked engine (suppressed while the engine is
//! polled); [`mailbox`] is the depth-one control queue run on the engine's thread;
//! [`engine`] is the trait every engine implements; [`runtime`] places engine groups on
//! threads in dedicated, spreading (MicroQuanta) or compacting mode and reports status.

pub mod doorbell;
pub mod engine;
pub mod mailbox;
pub mod ring;
pub mod runtime;
pub mod shm;

pub use doorbell::{Doorbell, DoorbellError, Ringer};
pub use engine::{Engine, RingSet, RunOutcome, WakeSource, WorkProbe};
pub use mailbox::ControlError;
pub use ring::{Consumer, Peeked, PopError, Producer, PushError, Ring, RingError, RingProbe};
pub use runtime::{EngineHandle, GroupSpec, Mode, Runtime, RuntimeError, RuntimeOptions, Status};
pub use shm::{SharedMem, ShmError};
