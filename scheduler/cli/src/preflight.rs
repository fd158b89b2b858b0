// SPDX-License-Identifier: GPL-2.0-only
//! The checks before a load that turn a cryptic BPF failure into a reason: a kernel without
//! sched_ext, another sched_ext scheduler loaded, not root.

use anyhow::{bail, Result};
use mq_class::{sysfs, SchedExtState};

/// Refuses to load `bin` (the binary's name, for the messages) where it cannot work.
pub fn preflight(bin: &str) -> Result<()> {
    match sysfs::state() {
        SchedExtState::Unsupported => bail!(
            "kernel {} has no sched_ext (CONFIG_SCHED_CLASS_EXT): boot a kernel with it, \
             or run `cargo xtask vm -- {bin}` to use one in a VM",
            sysfs::kernel_release()
        ),
        SchedExtState::Disabled => {}
        _ => bail!(
            "another sched_ext scheduler is loaded ({}); stop it first",
            sysfs::root_ops().unwrap_or_else(|| "unknown".into())
        ),
    }
    if !rustix::process::geteuid().is_root() {
        bail!("{bin} must run as root: loading a sched_ext scheduler needs CAP_BPF and CAP_SYS_ADMIN");
    }
    Ok(())
}
