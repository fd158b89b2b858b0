// SPDX-License-Identifier: GPL-2.0-only
//! `scx_microquanta` as a library: what other programs need from a running
//! MicroQuanta scheduler without loading BPF themselves.
//!
//! - [`class`]: put threads into the MicroQuanta class and take them out (the
//!   Snap host registers its spreading engine threads this way);
//! - [`sysfs`]: is sched_ext available, which scheduler is loaded.
//!
//! The scheduler itself (BPF program, loader, stats) lives in the binary.

pub mod class;
pub mod sysfs;

pub use class::{Class, ClassError};
pub use sysfs::SchedExtState;
