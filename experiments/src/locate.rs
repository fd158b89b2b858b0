// SPDX-License-Identifier: GPL-2.0-only
//! Finding the project's own binaries and the external tools experiments run.
//!
//! Our binaries sit next to each other in `target/<profile>/` (and in the VM
//! at the same path); a binary found there wins over one on `PATH`, so an
//! experiment never mixes builds.

use std::env;
use std::path::{Path, PathBuf};

/// The sibling binary `name` of the running executable, else `name` on `PATH`.
/// Test executables live one level deeper (`target/<profile>/deps/`), so the
/// parent of their directory is searched too.
pub fn binary(name: &str) -> Option<PathBuf> {
    let exe = env::current_exe().ok()?;
    let dir = exe.parent()?;
    let sibling = [Some(dir), dir.parent()]
        .into_iter()
        .flatten()
        .map(|d| d.join(name))
        .find(|p| is_executable(p));
    sibling.or_else(|| on_path(name))
}

/// `name` on `PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_system_tool_on_path_and_not_a_made_up_one() {
        assert!(on_path("sh").is_some());
        assert!(binary("no-such-binary-anywhere").is_none());
    }
}
