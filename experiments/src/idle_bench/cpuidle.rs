// SPDX-License-Identifier: GPL-2.0-only
//! Keeping idle CPUs polling instead of entering their idle states, and putting back what
//! was there: the cpuidle `disable` file of every state but `POLL` on every CPU
//! (`/sys/devices/system/cpu/cpu*/cpuidle/state*/`) where the kernel has cpuidle, else a
//! zero held open on `/dev/cpu_dma_latency` (the PM QoS request every idle governor obeys,
//! dropped when the file closes).
//!
//! What was changed is also kept in a process-wide list, so that the Ctrl-C handler can put
//! it back ([`restore_all`]) as well as the guard's drop.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use mq_report::idle::IdleState;

/// `disable` files changed and the value each had.
static CHANGED: Mutex<Vec<(PathBuf, String)>> = Mutex::new(Vec::new());

const CPUS: &str = "/sys/devices/system/cpu";
const DMA_LATENCY: &str = "/dev/cpu_dma_latency";

/// The cpuidle state directories of CPU `cpu` under `root`, in index order.
fn state_dirs(root: &Path, cpu: usize) -> Vec<PathBuf> {
    let dir = root.join(format!("cpu{cpu}/cpuidle"));
    let mut v: Vec<(usize, PathBuf)> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let n = e.file_name().to_str()?.strip_prefix("state")?.parse().ok()?;
                    Some((n, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// CPU 0's idle states (name and exit latency) under `root`.
pub fn states_in(root: &Path) -> Vec<IdleState> {
    state_dirs(root, 0)
        .iter()
        .filter_map(|d| {
            Some(IdleState {
                name: read(&d.join("name"))?,
                exit_latency_us: read(&d.join("latency"))?.parse().ok()?,
            })
        })
        .collect()
}

/// This machine's idle states.
pub fn states() -> Vec<IdleState> {
    states_in(Path::new(CPUS))
}

/// The cpuidle driver, or `none`.
pub fn driver() -> String {
    read(Path::new("/sys/devices/system/cpu/cpuidle/current_driver")).unwrap_or_else(|| "none".into())
}

/// The `disable` files of every state but `POLL`, on every CPU under `root`.
fn disable_files(root: &Path) -> Vec<PathBuf> {
    (0..crate::sched_bench::cpus().max(1))
        .flat_map(|cpu| state_dirs(root, cpu))
        .filter(|d| read(&d.join("name")).is_some_and(|n| n != "POLL"))
        .map(|d| d.join("disable"))
        .filter(|f| f.exists())
        .collect()
}

/// Idle CPUs kept polling while this lives.
pub struct PollOnly {
    /// How: for the report.
    pub mechanism: String,
    /// The held `/dev/cpu_dma_latency` request, when that is the mechanism.
    _qos: Option<File>,
}

impl PollOnly {
    /// Disables every idle state but polling under `root` (the machine's: [`Self::start`]).
    pub fn start_in(root: &Path, dma_latency: &Path) -> Result<Self> {
        let files = disable_files(root);
        if !files.is_empty() {
            let mut changed = CHANGED.lock().unwrap_or_else(|e| e.into_inner());
            for f in &files {
                let old = read(f).with_context(|| format!("reading {}", f.display()))?;
                // Recorded before the write, so that a failure halfway is put back too.
                changed.push((f.clone(), old));
                std::fs::write(f, "1").with_context(|| format!("writing 1 to {}", f.display()))?;
            }
            return Ok(Self {
                mechanism: format!(
                    "cpuidle: `disable` = 1 on every state but POLL ({} files under {}/cpu*/cpuidle/), put back after",
                    files.len(),
                    root.display()
                ),
                _qos: None,
            });
        }
        let mut qos = File::options()
            .write(true)
            .open(dma_latency)
            .with_context(|| format!("no cpuidle states, and opening {}", dma_latency.display()))?;
        qos.write_all(&0i32.to_ne_bytes())
            .with_context(|| format!("writing 0 to {}", dma_latency.display()))?;
        Ok(Self {
            mechanism: format!(
                "{}: 0 µs held open (no cpuidle states to disable)",
                dma_latency.display()
            ),
            _qos: Some(qos),
        })
    }

    pub fn start() -> Result<Self> {
        if !rustix::process::geteuid().is_root() {
            bail!("keeping CPUs polling needs root (cpuidle's disable files, /dev/cpu_dma_latency)");
        }
        Self::start_in(Path::new(CPUS), Path::new(DMA_LATENCY))
    }
}

impl Drop for PollOnly {
    fn drop(&mut self) {
        restore_all();
    }
}

/// Puts back every `disable` file changed (the guard's drop and the Ctrl-C handler).
pub fn restore_all() {
    let changed = std::mem::take(&mut *CHANGED.lock().unwrap_or_else(|e| e.into_inner()));
    for (f, old) in changed.iter().rev() {
        if let Err(e) = std::fs::write(f, old) {
            eprintln!("could not put {old} back into {}: {e}", f.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake sysfs tree: CPU 0 and 1 with POLL and one halting state each.
    fn tree(root: &Path) {
        for cpu in 0..2 {
            for (i, (name, lat)) in [("POLL", 0), ("C1", 2)].iter().enumerate() {
                let d = root.join(format!("cpu{cpu}/cpuidle/state{i}"));
                std::fs::create_dir_all(&d).unwrap();
                std::fs::write(d.join("name"), format!("{name}\n")).unwrap();
                std::fs::write(d.join("latency"), format!("{lat}\n")).unwrap();
                std::fs::write(d.join("disable"), "0\n").unwrap();
            }
        }
    }

    #[test]
    fn disables_all_but_poll_and_puts_them_back() {
        let root = std::env::temp_dir().join(format!("mq-cpuidle-test-{}", std::process::id()));
        tree(&root);
        let states = states_in(&root);
        assert_eq!(states.len(), 2);
        assert_eq!((states[1].name.as_str(), states[1].exit_latency_us), ("C1", 2));
        let disable =
            |cpu: usize, s: usize| read(&root.join(format!("cpu{cpu}/cpuidle/state{s}/disable"))).unwrap();
        {
            let guard = PollOnly::start_in(&root, Path::new("/nonexistent")).unwrap();
            assert!(guard.mechanism.contains("2 files"), "{}", guard.mechanism);
            if crate::sched_bench::cpus() >= 2 {
                assert_eq!(disable(1, 1), "1");
            }
            assert_eq!((disable(0, 0), disable(0, 1)), ("0".into(), "1".into()));
        }
        assert_eq!((disable(0, 1), disable(1, 1)), ("0".into(), "0".into()));
        // Nothing to disable and no PM QoS file: a clear error.
        let empty = root.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        assert!(PollOnly::start_in(&empty, Path::new("/nonexistent")).is_err());
        let _ = std::fs::remove_dir_all(&root);
    }
}
