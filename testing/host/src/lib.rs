//! The workspace's `snap-host` binary, for the integration tests of crates that run it as a
//! process without being `snap-host` (cargo hands a crate's tests only that crate's own
//! binaries, `CARGO_BIN_EXE_*`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The `snap-host` binary of this workspace, built once per test process with the profile
/// of the calling test (cargo runs tests after its own build, so the nested build does not
/// wait for a lock; it is a no-op when the binary is fresh).
pub fn snap_host_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test's own path");
        // target/<profile>/deps/<test> → target/<profile>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("a test runs from target/<profile>/deps")
            .to_owned();
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev".to_owned(),
            Some(other) => other.to_owned(),
            None => panic!("no profile directory above {}", exe.display()),
        };
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "-p",
                "snap-host",
                "--bin",
                "snap-host",
                "--profile",
            ])
            .arg(&profile)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building snap-host failed");
        let bin = profile_dir.join("snap-host");
        assert!(bin.exists(), "{} after the build", bin.display());
        bin
    })
}
