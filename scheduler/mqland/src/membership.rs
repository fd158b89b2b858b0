// SPDX-License-Identifier: GPL-2.0-only
//! Class membership for a userspace policy: the same pinned class map as `scx_microquanta`
//! (`mq-class`), created and pinned here when no scheduler has pinned it yet, and read into
//! a set that the scheduling loop consults without a system call per decision.
//!
//! The BPF scheduler looks the map up at every decision and keeps it current itself (threads
//! inherit membership from their creator, exited threads are dropped). This loop reloads the
//! set every [`REFRESH`] and prunes exited threads every [`PRUNE`]; threads started by a class
//! member do not join the class here (creation is not visible to a userspace policy).
//!
//! Class groups: a member's entry names its group (`struct mq_member`), and the group map is
//! pinned next to the class map. This policy reads membership only: every member, whatever
//! its group, is a class thread under the one budget of `--runtime-us/--period-us` (as if all
//! were in the default group). Both maps are pinned here with `scx_microquanta`'s layout when
//! missing, and a map of another layout (an older build's) is replaced by an empty one, as
//! `scx_microquanta` does, so that `mqctl` and either scheduler keep working on them.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use libbpf_rs::libbpf_sys::bpf_map_create_opts;
use libbpf_rs::{MapCore, MapHandle, MapType};
use mq_class::group::GROUP_VALUE_SIZE;
use mq_class::{Class, GROUPS_MAP_PIN, MAX_GROUPS, MEMBER_VALUE_SIZE, PIN_DIR, TASKS_MAP_PIN};

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
    /// Opens the pinned class map (and the group map next to it), pinning new empty ones if
    /// there are none or if they have another layout.
    pub fn open() -> Result<Self> {
        ensure_pinned(
            Path::new(TASKS_MAP_PIN),
            MapType::Hash,
            "mq_tasks",
            MEMBER_VALUE_SIZE,
            MAX_MEMBERS,
        )?;
        ensure_pinned(
            Path::new(GROUPS_MAP_PIN),
            MapType::Array,
            "mq_groups",
            GROUP_VALUE_SIZE,
            MAX_GROUPS,
        )?;
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

/// Pins an empty map of this layout at `pin` unless one of the same layout is there; one of
/// another layout is unpinned first (its entries could not be read as this layout's).
fn ensure_pinned(pin: &Path, map_type: MapType, name: &str, value_size: usize, max: u32) -> Result<()> {
    if let Ok(old) = MapHandle::from_pinned_path(pin) {
        if old.map_type() == map_type
            && old.key_size() == 4
            && old.value_size() as usize == value_size
            && old.max_entries() == max
        {
            return Ok(());
        }
        log::warn!(
            "{} has another layout (older build?): starting with an empty one",
            pin.display()
        );
        std::fs::remove_file(pin).with_context(|| format!("unpinning {}", pin.display()))?;
    }
    std::fs::create_dir_all(PIN_DIR)
        .with_context(|| format!("creating {PIN_DIR} (is bpffs mounted on /sys/fs/bpf?)"))?;
    let opts = bpf_map_create_opts {
        sz: std::mem::size_of::<bpf_map_create_opts>() as _,
        ..Default::default()
    };
    let mut map = MapHandle::create(map_type, Some(name), 4, value_size as u32, max, &opts)
        .with_context(|| format!("creating the {name} map"))?;
    map.pin(pin)
        .with_context(|| format!("pinning {}", pin.display()))?;
    Ok(())
}
