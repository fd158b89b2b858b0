//! The kernel's view of sched_ext, read from `/sys/kernel/sched_ext`.
//!
//! Used by the loader's pre-flight checks (clear errors instead of a failed
//! BPF load), by the engine runtime (join the class only when the scheduler is
//! ours) and by tests that must know whether they can run at all.

use std::fs;
use std::path::Path;

const SCHED_EXT_DIR: &str = "/sys/kernel/sched_ext";

/// State of the sched_ext class as `/sys/kernel/sched_ext/state` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedExtState {
    /// The running kernel was built without `CONFIG_SCHED_CLASS_EXT`.
    Unsupported,
    /// No BPF scheduler is loaded; every task is on the kernel's own classes.
    Disabled,
    Enabling,
    /// A BPF scheduler is loaded ([`root_ops`] names it).
    Enabled,
    Disabling,
}

impl SchedExtState {
    fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "disabled" => Some(Self::Disabled),
            "enabling" => Some(Self::Enabling),
            "enabled" => Some(Self::Enabled),
            "disabling" => Some(Self::Disabling),
            _ => None,
        }
    }
}

/// The current sched_ext state; `Unsupported` when the kernel has no sched_ext
/// (or its state reads as something this code does not know).
pub fn state() -> SchedExtState {
    fs::read_to_string(Path::new(SCHED_EXT_DIR).join("state"))
        .ok()
        .and_then(|text| SchedExtState::parse(&text))
        .unwrap_or(SchedExtState::Unsupported)
}

/// The name of the loaded BPF scheduler's ops, e.g. `microquanta_1.2.3_...`.
pub fn root_ops() -> Option<String> {
    let ops = fs::read_to_string(Path::new(SCHED_EXT_DIR).join("root/ops")).ok()?;
    let ops = ops.trim();
    (!ops.is_empty()).then(|| ops.to_string())
}

/// Whether the loaded scheduler is ours (ops named `microquanta`).
pub fn microquanta_loaded() -> bool {
    state() == SchedExtState::Enabled && root_ops().is_some_and(|ops| ops.starts_with("microquanta"))
}

/// `uname -r` of the running kernel, for messages and reports.
pub fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_state_the_kernel_prints() {
        assert_eq!(SchedExtState::parse("enabled\n"), Some(SchedExtState::Enabled));
        assert_eq!(SchedExtState::parse("disabled"), Some(SchedExtState::Disabled));
        assert_eq!(SchedExtState::parse("enabling"), Some(SchedExtState::Enabling));
        assert_eq!(SchedExtState::parse("disabling"), Some(SchedExtState::Disabling));
        assert_eq!(SchedExtState::parse("bogus"), None);
    }

    #[test]
    fn state_is_consistent_with_the_sysfs_directory() {
        let present = Path::new(SCHED_EXT_DIR).join("state").exists();
        assert_eq!(state() != SchedExtState::Unsupported, present);
    }
}
