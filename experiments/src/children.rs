// SPDX-License-Identifier: GPL-2.0-only
//! The processes a child started: found by parent and command name in `/proc`, for tests
//! and benchmarks that start a wrapper (`mqctl run`, `sh -c`) and need what it runs.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// The pid of a child of `parent` whose command name is `comm`, waiting up to `timeout`
/// for `parent` to start one.
pub fn wait_for_child(parent: u32, comm: &str, timeout: Duration) -> Result<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        let found = procfs::process::all_processes()?
            .filter_map(|p| p.ok()?.stat().ok())
            .find(|s| u32::try_from(s.ppid) == Ok(parent) && s.comm == comm);
        if let Some(stat) = found {
            return Ok(stat.pid as u32);
        }
        if Instant::now() > deadline {
            bail!("process {parent} started no {comm} within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn finds_what_a_shell_started_and_says_when_nothing_came() {
        let mut sh = Command::new("sh").args(["-c", "sleep 2 & wait"]).spawn().unwrap();
        let sleeper = wait_for_child(sh.id(), "sleep", Duration::from_secs(5)).unwrap();
        let stat = procfs::process::Process::new(sleeper as i32)
            .unwrap()
            .stat()
            .unwrap();
        assert_eq!(stat.ppid, sh.id() as i32);
        let err = wait_for_child(sh.id(), "nosuch", Duration::from_millis(50)).unwrap_err();
        assert!(err.to_string().contains("started no nosuch"), "{err}");
        sh.kill().unwrap();
        sh.wait().unwrap();
    }
}
