//! The Snap host runtime: engines, the rings and interrupts that feed them, the three
//! scheduling modes, and the host's control plane.
//!
//! Bottom-up: [`shm::SharedMem`] is a memfd mapping that can be handed to another process;
//! [`ring`] is the lock-free single-producer/single-consumer ring of messages that lives in
//! it; [`doorbell`] is how a producer wakes a blocked engine (suppressed while the engine is
//! polled); [`mailbox`] is the depth-one control queue run on the engine's thread;
//! [`engine`] is the trait every engine implements; [`runtime`] places engine groups on
//! threads in dedicated, spreading (MicroQuanta) or compacting mode and reports status.
//!
//! On top: [`channel`] is one app's connection (request and response rings, doorbells) in
//! shared memory; [`echo`] and [`udp_echo`] are engines (an app-facing echo server and a
//! NIC-queue echo over a UDP socket); [`relay`] is the app-facing first stage of a pipeline
//! of engines (it forwards app requests over an internal channel to the next engine and
//! routes the responses back); [`config`] is the declarative host configuration;
//! [`control`] is the host's Unix-socket control API (attach with peer credentials checked,
//! status) and its client; `snap-host` (the `host/` crate) is the binary that ties them
//! together, with engine kinds from other crates plugged in as [`config::EngineFactory`].

pub mod app_channels;
pub mod channel;
pub mod config;
pub mod control;
pub mod doorbell;
pub mod echo;
pub mod engine;
pub mod mailbox;
pub mod relay;
pub mod ring;
pub mod runtime;
pub mod shm;
pub mod udp_echo;

pub use doorbell::{Doorbell, DoorbellError, Ringer};
pub use engine::{Engine, RingSet, RunOutcome, WakeSource, WorkProbe};
pub use mailbox::ControlError;
pub use ring::{Consumer, Peeked, PopError, Producer, PushError, Ring, RingError, RingProbe};
pub use runtime::{EngineHandle, GroupSpec, Mode, Runtime, RuntimeError, RuntimeOptions, Status};
pub use shm::{SharedMem, ShmError};
