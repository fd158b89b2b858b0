// SPDX-License-Identifier: GPL-2.0-only
//! Class membership for a userspace policy: the same pinned class map as `scx_microquanta`
//! (`mq-class`), created and pinned here when no scheduler has pinned it yet, and read into
//! a set that the scheduling loop consults without a system call per decision.
//!
//! The BPF scheduler looks the map up at every decision and keeps it current itself (threads
//! inherit membership from their creator, exited threads are dropped). This loop reloads the
//! set every [`REFRESH`] and prunes exited threads every [`PRUNE`]; threads started by a class
//! member do not join the class here (creation is not visible to a userspace policy).

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use libbpf_rs::libbpf_sys::bpf_map_create_opts;
use libbpf_rs::{MapHandle, MapType};
use mq_class::{Class, PIN_DIR, TASKS_MAP_PIN};

/// How stale membership may be: a thread added to the class is treated as one within this.
pub const REFRESH: Duration = Duration::from_millis(10);
const PRUNE: Duration = Duration::from_secs(1);
/// The class map's capacity, as `MQ_MAX_TASKS` in `bpf/intf.h`, so that `scx_microquanta`
/// can reuse a map this scheduler pinned.
const MAX_MEMBERS: u32 = 65_536;

/// The class as the loop sees it.
pub struct Membership {
    class: Class,
    members: HashSet<u32>,
    loaded: Instant,
    pruned: Instant,
}

impl Membership {
    /// Opens the pinned class map, pinning a new empty one if there is none.
    pub fn open() -> Result<Self> {
        let pin = Path::new(TASKS_MAP_PIN);
        if !pin.exists() {
            std::fs::create_dir_all(PIN_DIR)
                .with_context(|| format!("creating {PIN_DIR} (is bpffs mounted on /sys/fs/bpf?)"))?;
            let opts = bpf_map_create_opts {
                sz: std::mem::size_of::<bpf_map_create_opts>() as _,
                ..Default::default()
            };
            let mut map = MapHandle::create(MapType::Hash, Some("mq_tasks"), 4, 8, MAX_MEMBERS, &opts)
                .context("creating the class map")?;
            map.pin(pin)
                .with_context(|| format!("pinning {}", pin.display()))?;
        }
        let class = Class::open()?;
        let pruned = class.prune_exited()?;
        if pruned > 0 {
            log::info!("dropped {pruned} class members whose threads exited while no scheduler ran");
        }
        let now = Instant::now();
        let mut m = Self {
            members: HashSet::new(),
            class,
            loaded: now,
            pruned: now,
        };
        m.reload();
        Ok(m)
    }

    fn reload(&mut self) {
        self.members.clear();
        self.members.extend(self.class.list());
        self.loaded = Instant::now();
    }

    /// Brings the set up to date if it is older than [`REFRESH`].
    pub fn refresh(&mut self) {
        if self.loaded.elapsed() < REFRESH {
            return;
        }
        if self.pruned.elapsed() >= PRUNE {
            if let Err(e) = self.class.prune_exited() {
                log::warn!("pruning exited class members: {e}");
            }
            self.pruned = Instant::now();
        }
        self.reload();
    }

    pub fn contains(&self, tid: i32) -> bool {
        u32::try_from(tid).is_ok_and(|t| self.members.contains(&t))
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }
}
