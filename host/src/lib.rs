//! The Snap host: what the `snap-host` binary is made of, and the helpers other programs use
//! to run one.
//!
//! [`config`] is the declarative host configuration (TOML) and the registry of engine kinds
//! it builds (echo, UDP echo, relay chains, Pony), and checks the operator's run-time
//! changes to it; [`control`] is the control server (attach with peer credentials checked,
//! descriptors, status, the operator's engine and group changes) on `snap_ipc::control`'s
//! protocol; [`class_groups`] makes the MicroQuanta class groups of engine groups that ask
//! for a budget of their own; [`process`] starts a `snap-host` binary as a child and waits for it to be ready.
//!
//! This crate is the top of the graph: it may depend on every engine kind, the runtime and
//! the IPC layer; nothing but tools and tests depends on it.

pub mod class_groups;
pub mod config;
pub mod control;
pub mod process;
pub mod takeover;
