//! Snap's built-in engine kinds, each an [`snap_runtime::Engine`]:
//!
//! - [`echo`]: an app-facing echo server (apps attach over the control socket);
//! - [`udp_echo`]: a NIC-queue echo over a UDP socket;
//! - [`relay`]: the app-facing first stage of a chain of engines: it forwards app
//!   requests over an internal channel to the next engine and routes the responses back.
//!
//! [`app_channels`] is the channel bookkeeping the app-facing kinds share. Pony's engine is
//! its own crate (`pony-engine`); `snap-host` builds every kind from its configuration.

pub mod app_channels;
pub mod echo;
pub mod moving;
pub mod relay;
pub mod udp_echo;
