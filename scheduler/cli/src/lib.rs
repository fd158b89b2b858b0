// SPDX-License-Identifier: GPL-2.0-only
//! What the two loaders of the MicroQuanta policy share: `scx_microquanta` (the policy in
//! BPF) and `scx_mqland` (the same policy decided in userspace on scx_rustland_core) take
//! the same policy flags with the same bounds ([`PolicyArgs`]), refuse a load that cannot
//! work with a reason instead of a BPF error ([`preflight`]), and log alike
//! ([`init_logging`]).
//!
//! Each binary keeps its own flags beyond these and all of its scheduling code; this crate
//! changes only when the policy's flags or the loaders' common front does.

mod args;
mod logging;
mod preflight;

pub use args::PolicyArgs;
pub use logging::init_logging;
pub use preflight::preflight;
