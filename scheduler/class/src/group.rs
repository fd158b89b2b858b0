//! Class groups: sets of class threads with their own budget (runtime out of every period,
//! per CPU) and optionally their own CPU set.
//!
//! The groups live in a BPF array map of [`MAX_GROUPS`] slots that the scheduler pins at
//! [`GROUPS_MAP_PIN`], next to the class map, so they outlive a scheduler restart as
//! membership does. Slot [`DEFAULT_GROUP`] is the default group: its budget is the
//! scheduler's `--runtime-us/--period-us`, written by the scheduler at each start; a thread
//! added without a group belongs to it. The other slots are written here only.
//!
//! The rules checked here, before anything is written:
//! - a name is 1 to 31 bytes of `[A-Za-z0-9._-]`, unique, and not `default`;
//! - a budget has 2 µs <= period <= 1 s and 1 µs <= runtime <= period (the scheduler's
//!   own bounds);
//! - CPU ids are below the kernel's possible CPUs;
//! - the cap: on every CPU, the budgets of the groups that may run there (the default
//!   group's included) sum to at most the whole CPU. Each group's budget is a promise for
//!   each CPU, so two groups sharing a CPU can only both be kept if the sum fits.
//!
//! The slot layout is `struct mq_group` of `bpf/intf.h`; the scheduler's tests check that
//! [`GROUP_VALUE_SIZE`] and the offsets here match what bindgen makes of it.

use std::collections::BTreeSet;
use std::path::Path;

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::{open_pinned, ClassError};

/// The pinned group map: key = group id (u32), value = `struct mq_group`.
pub const GROUPS_MAP_PIN: &str = "/sys/fs/bpf/scx_microquanta/mq_groups";
/// Slots in the group map, the default group's included (`MQ_MAX_GROUPS`).
pub const MAX_GROUPS: u32 = 16;
/// The default group's id (`MQ_DEFAULT_GROUP`).
pub const DEFAULT_GROUP: u32 = 0;
/// The default group's name in listings.
pub const DEFAULT_GROUP_NAME: &str = "default";
/// Bytes of a name slot, the terminating NUL included (`MQ_GROUP_NAME_LEN`).
pub const NAME_LEN: usize = 32;
/// CPU ids the group map can hold (`MQ_MAX_CPUS`).
pub const MAX_CPUS: u32 = 512;
/// Size of `struct mq_group`.
pub const GROUP_VALUE_SIZE: usize = 120;
/// Period bounds in µs, of a group's budget and the schedulers' `--period-us`: the kernel
/// patch demonstrated 2 µs periods; beyond a second, a tick-based class would do.
pub const PERIOD_US_RANGE: std::ops::RangeInclusive<u64> = 2..=1_000_000;

// Offsets in `struct mq_group`.
const PERIOD_OFF: usize = 0;
const RUNTIME_OFF: usize = 8;
const CPUS_OFF: usize = 16;
const CPU_WORDS: usize = MAX_CPUS as usize / 64;
const IN_USE_OFF: usize = CPUS_OFF + CPU_WORDS * 8;
const HAS_CPUS_OFF: usize = IN_USE_OFF + 4;
const NAME_OFF: usize = HAS_CPUS_OFF + 4;
const _: () = assert!(NAME_OFF + NAME_LEN == GROUP_VALUE_SIZE);

/// Runtime out of every period, per CPU, while normal work competes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub period_us: u64,
    pub runtime_us: u64,
}

impl Budget {
    /// Checks the bounds the scheduler accepts.
    pub fn validate(&self) -> Result<(), ClassError> {
        self.check("period_us", "runtime_us")
            .map_err(ClassError::InvalidGroup)
    }

    /// Checks the bounds the scheduler accepts, naming the two values as the caller does
    /// (a group's fields; a scheduler's `--period-us` and `--runtime-us`).
    pub fn check(&self, period: &str, runtime: &str) -> Result<(), String> {
        if !PERIOD_US_RANGE.contains(&self.period_us) {
            return Err(format!(
                "{period} {} is outside {}..={} µs",
                self.period_us,
                PERIOD_US_RANGE.start(),
                PERIOD_US_RANGE.end()
            ));
        }
        if self.runtime_us == 0 || self.runtime_us > self.period_us {
            return Err(format!(
                "{runtime} {} must be between 1 and {period} ({})",
                self.runtime_us, self.period_us
            ));
        }
        Ok(())
    }

    /// The share of a CPU, in parts per billion (rounded down: the cap tolerates a few ppb).
    fn ppb(&self) -> u64 {
        self.runtime_us * 1_000_000_000 / self.period_us.max(1)
    }
}

/// One group as the map holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Its slot in the group map, the id class members carry.
    pub id: u32,
    pub name: String,
    pub budget: Budget,
    /// Where its threads are class threads (sorted); `None`: every CPU.
    pub cpus: Option<Vec<u32>>,
}

impl Group {
    fn covers(&self, cpu: u32) -> bool {
        self.cpus
            .as_ref()
            .is_none_or(|set| set.binary_search(&cpu).is_ok())
    }
}

/// Checks a group name: 1..=31 bytes of `[A-Za-z0-9._-]`.
pub fn validate_name(name: &str) -> Result<(), ClassError> {
    let ok = !name.is_empty()
        && name.len() < NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        return Err(ClassError::InvalidGroup(format!(
            "name {name:?} must be 1 to {} characters of A-Z a-z 0-9 . _ -",
            NAME_LEN - 1
        )));
    }
    Ok(())
}

/// Parses a CPU list as `taskset -c` takes it: `0-3,6`. Sorted, without duplicates.
pub fn parse_cpu_list(list: &str) -> Result<Vec<u32>, ClassError> {
    let bad = |why: &str| ClassError::InvalidGroup(format!("CPU list {list:?}: {why}"));
    let mut cpus = BTreeSet::new();
    for part in list.split(',').map(str::trim) {
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (lo.trim(), hi.trim()),
            None => (part, part),
        };
        let lo: u32 = lo.parse().map_err(|_| bad("expected CPU ids like 0-3,6"))?;
        let hi: u32 = hi.parse().map_err(|_| bad("expected CPU ids like 0-3,6"))?;
        if lo > hi {
            return Err(bad("a range must go upwards"));
        }
        if hi >= MAX_CPUS {
            return Err(bad(&format!("CPU {hi} is beyond the {MAX_CPUS} supported")));
        }
        cpus.extend(lo..=hi);
    }
    Ok(cpus.into_iter().collect())
}

/// Checks the cap on every one of `nr_cpus` CPUs: the budgets of the groups that may run on
/// a CPU sum to at most the whole CPU. Returns the first CPU over it, with the groups there.
pub fn check_cap(groups: &[Group], nr_cpus: u32) -> Result<(), ClassError> {
    for cpu in 0..nr_cpus {
        let here: Vec<&Group> = groups.iter().filter(|g| g.covers(cpu)).collect();
        let total: u64 = here.iter().map(|g| g.budget.ppb()).sum();
        if total > 1_000_000_000 {
            return Err(ClassError::OverCap {
                cpu,
                percent: total as f64 / 1e7,
                groups: here
                    .iter()
                    .map(|g| format!("{} {}/{} µs", g.name, g.budget.runtime_us, g.budget.period_us))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    Ok(())
}

/// `struct mq_group` of a group (`None`: a free slot).
pub(crate) fn encode(group: Option<&Group>) -> [u8; GROUP_VALUE_SIZE] {
    let mut v = [0u8; GROUP_VALUE_SIZE];
    let Some(g) = group else { return v };
    v[PERIOD_OFF..PERIOD_OFF + 8].copy_from_slice(&(g.budget.period_us * 1000).to_ne_bytes());
    v[RUNTIME_OFF..RUNTIME_OFF + 8].copy_from_slice(&(g.budget.runtime_us * 1000).to_ne_bytes());
    if let Some(cpus) = &g.cpus {
        let mut words = [0u64; CPU_WORDS];
        for &cpu in cpus {
            words[cpu as usize / 64] |= 1 << (cpu % 64);
        }
        for (i, w) in words.iter().enumerate() {
            v[CPUS_OFF + 8 * i..CPUS_OFF + 8 * i + 8].copy_from_slice(&w.to_ne_bytes());
        }
        v[HAS_CPUS_OFF..HAS_CPUS_OFF + 4].copy_from_slice(&1u32.to_ne_bytes());
    }
    v[IN_USE_OFF..IN_USE_OFF + 4].copy_from_slice(&1u32.to_ne_bytes());
    v[NAME_OFF..NAME_OFF + g.name.len()].copy_from_slice(g.name.as_bytes());
    v
}

/// The group in slot `id`, or `None` for a free slot or one of another shape.
pub(crate) fn decode(id: u32, v: &[u8]) -> Option<Group> {
    if v.len() != GROUP_VALUE_SIZE {
        return None;
    }
    let u64_at = |off: usize| u64::from_ne_bytes(v[off..off + 8].try_into().unwrap());
    let u32_at = |off: usize| u32::from_ne_bytes(v[off..off + 4].try_into().unwrap());
    if u32_at(IN_USE_OFF) == 0 {
        return None;
    }
    let name = &v[NAME_OFF..NAME_OFF + NAME_LEN];
    let end = name.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
    let cpus = (u32_at(HAS_CPUS_OFF) != 0).then(|| {
        (0..MAX_CPUS)
            .filter(|&cpu| u64_at(CPUS_OFF + 8 * (cpu as usize / 64)) >> (cpu % 64) & 1 == 1)
            .collect()
    });
    Some(Group {
        id,
        name: String::from_utf8_lossy(&name[..end]).into_owned(),
        budget: Budget {
            period_us: u64_at(PERIOD_OFF) / 1000,
            runtime_us: u64_at(RUNTIME_OFF) / 1000,
        },
        cpus,
    })
}

/// CPUs the kernel may ever bring online (`/sys/devices/system/cpu/possible`).
pub fn possible_cpus() -> u32 {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| parse_cpu_list(s.trim()).ok())
        .and_then(|cpus| cpus.last().map(|&c| c + 1))
        .unwrap_or(1)
}

/// A handle on the pinned group map.
#[derive(Debug)]
pub struct Groups {
    map: MapHandle,
}

impl Groups {
    /// Opens the groups the scheduler pinned at [`GROUPS_MAP_PIN`].
    pub fn open() -> Result<Self, ClassError> {
        Self::open_at(Path::new(GROUPS_MAP_PIN))
    }

    /// Opens a group map pinned at `path`.
    pub fn open_at(path: &Path) -> Result<Self, ClassError> {
        Ok(Self {
            map: open_pinned(path)?,
        })
    }

    /// Wraps an open handle on a group map (the scheduler's own, before it is pinned).
    pub fn from_handle(map: MapHandle) -> Self {
        Self { map }
    }

    /// Every group in use, by id, the default group first.
    pub fn list(&self) -> Result<Vec<Group>, ClassError> {
        let mut groups = Vec::new();
        for id in 0..MAX_GROUPS {
            let v = self
                .map
                .lookup(&id.to_ne_bytes(), MapFlags::ANY)
                .map_err(ClassError::Bpf)?;
            if let Some(mut g) = v.and_then(|v| decode(id, &v)) {
                if id == DEFAULT_GROUP {
                    g.name = DEFAULT_GROUP_NAME.to_string();
                }
                groups.push(g);
            }
        }
        Ok(groups)
    }

    /// The group called `name`.
    pub fn get(&self, name: &str) -> Result<Group, ClassError> {
        self.list()?
            .into_iter()
            .find(|g| g.name == name)
            .ok_or_else(|| ClassError::UnknownGroup(name.to_string()))
    }

    /// Makes a group; its id is the lowest free slot. Refused if the name is taken, all
    /// slots are used, or the cap would be exceeded on some CPU.
    pub fn add(&self, name: &str, budget: Budget, cpus: Option<Vec<u32>>) -> Result<Group, ClassError> {
        let existing = self.list()?;
        if existing.iter().any(|g| g.name == name) || name == DEFAULT_GROUP_NAME {
            return Err(ClassError::GroupExists(name.to_string()));
        }
        let id = (1..MAX_GROUPS)
            .find(|id| existing.iter().all(|g| g.id != *id))
            .ok_or(ClassError::TooManyGroups(MAX_GROUPS - 1))?;
        self.write(
            existing,
            Group {
                id,
                name: name.to_string(),
                budget,
                cpus,
            },
        )
    }

    /// Changes the budget and CPU set of the group called `name` (the cap is checked with
    /// the new values). Its members stay in it.
    pub fn update(&self, name: &str, budget: Budget, cpus: Option<Vec<u32>>) -> Result<Group, ClassError> {
        if name == DEFAULT_GROUP_NAME {
            return Err(ClassError::DefaultGroup);
        }
        let existing = self.list()?;
        let id = existing
            .iter()
            .find(|g| g.name == name)
            .ok_or_else(|| ClassError::UnknownGroup(name.to_string()))?
            .id;
        let others = existing.into_iter().filter(|g| g.id != id).collect();
        self.write(
            others,
            Group {
                id,
                name: name.to_string(),
                budget,
                cpus,
            },
        )
    }

    /// Makes the group, or updates it if one of that name exists.
    pub fn set(&self, name: &str, budget: Budget, cpus: Option<Vec<u32>>) -> Result<Group, ClassError> {
        match self.update(name, budget, cpus.clone()) {
            Err(ClassError::UnknownGroup(_)) => self.add(name, budget, cpus),
            other => other,
        }
    }

    fn write(&self, mut others: Vec<Group>, mut group: Group) -> Result<Group, ClassError> {
        validate_name(&group.name)?;
        group.budget.validate()?;
        let nr_cpus = possible_cpus();
        if let Some(cpus) = &mut group.cpus {
            cpus.sort_unstable();
            cpus.dedup();
            if cpus.is_empty() {
                return Err(ClassError::InvalidGroup("the CPU set is empty".into()));
            }
            if let Some(&cpu) = cpus.iter().find(|&&c| c >= nr_cpus.min(MAX_CPUS)) {
                return Err(ClassError::InvalidGroup(format!(
                    "CPU {cpu} does not exist ({nr_cpus} possible CPUs)"
                )));
            }
        }
        others.push(group.clone());
        check_cap(&others, nr_cpus)?;
        self.store(&group)?;
        Ok(group)
    }

    /// Writes `group` into its slot, unchecked: the scheduler's own update of the default
    /// group goes through here after its own checks.
    pub fn store(&self, group: &Group) -> Result<(), ClassError> {
        self.map
            .update(&group.id.to_ne_bytes(), &encode(Some(group)), MapFlags::ANY)
            .map_err(ClassError::Bpf)
    }

    /// Frees the slot of the group called `name`. Its members must have left it first
    /// ([`crate::Class::remove_group`] moves them to the default group and then calls this).
    pub(crate) fn free(&self, id: u32) -> Result<(), ClassError> {
        self.map
            .update(&id.to_ne_bytes(), &encode(None), MapFlags::ANY)
            .map_err(ClassError::Bpf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(id: u32, name: &str, runtime_us: u64, period_us: u64, cpus: Option<Vec<u32>>) -> Group {
        Group {
            id,
            name: name.into(),
            budget: Budget {
                period_us,
                runtime_us,
            },
            cpus,
        }
    }

    #[test]
    fn a_group_survives_encoding_with_its_cpu_set() {
        let g = group(3, "latency", 200, 1000, Some(vec![0, 5, 64, 511]));
        assert_eq!(decode(3, &encode(Some(&g))), Some(g));
        let all = group(1, "bulk", 600, 1000, None);
        assert_eq!(decode(1, &encode(Some(&all))), Some(all));
        assert_eq!(decode(2, &encode(None)), None, "a free slot is no group");
        assert_eq!(decode(2, &[0u8; 8]), None, "a slot of another shape is no group");
    }

    #[test]
    fn names_are_short_and_plain() {
        assert!(validate_name("latency-1.a_b").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name(&"x".repeat(NAME_LEN)).is_err());
        assert!(validate_name(&"x".repeat(NAME_LEN - 1)).is_ok());
        let err = validate_name("a b").unwrap_err().to_string();
        assert!(err.contains("\"a b\""), "{err}");
    }

    #[test]
    fn budgets_are_held_to_the_schedulers_bounds() {
        assert!(Budget {
            period_us: 1000,
            runtime_us: 200
        }
        .validate()
        .is_ok());
        assert!(Budget {
            period_us: 1000,
            runtime_us: 1000
        }
        .validate()
        .is_ok());
        let err = Budget {
            period_us: 1000,
            runtime_us: 1001,
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("runtime_us 1001"), "{err}");
        assert!(Budget {
            period_us: 1000,
            runtime_us: 0
        }
        .validate()
        .is_err());
        let err = Budget {
            period_us: 1,
            runtime_us: 1,
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("period_us 1"), "{err}");
        assert!(Budget {
            period_us: 2_000_000,
            runtime_us: 1
        }
        .validate()
        .is_err());
    }

    #[test]
    fn cpu_lists_parse_as_taskset_writes_them() {
        assert_eq!(parse_cpu_list("0-3,6").unwrap(), vec![0, 1, 2, 3, 6]);
        assert_eq!(parse_cpu_list("5, 1,1").unwrap(), vec![1, 5]);
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("a").is_err());
        assert!(parse_cpu_list("").is_err());
        assert!(parse_cpu_list("512").unwrap_err().to_string().contains("512"));
    }

    #[test]
    fn the_cap_sums_the_budgets_of_the_groups_sharing_each_cpu() {
        let default = group(0, "default", 100, 1000, None);
        let a = group(1, "a", 200, 1000, None);
        let b = group(2, "b", 600, 1000, None);
        assert!(check_cap(&[default.clone(), a.clone(), b.clone()], 2).is_ok());
        // 10 + 20 + 60 + 20 = 110 % on every CPU.
        let c = group(3, "c", 40, 200, None);
        let err = check_cap(&[default.clone(), a.clone(), b.clone(), c], 2).unwrap_err();
        assert!(matches!(err, ClassError::OverCap { cpu: 0, .. }), "{err:?}");
        assert!(err.to_string().contains("c 40/200"), "{err}");
        // Disjoint CPU sets do not add up: each CPU sees 10 + 60 %.
        let b0 = group(2, "b0", 600, 1000, Some(vec![0]));
        let b1 = group(3, "b1", 600, 1000, Some(vec![1]));
        assert!(check_cap(&[default.clone(), b0.clone(), b1], 2).is_ok());
        // ... but a third one on CPU 0 does: 10 + 60 + 60 %.
        let b2 = group(4, "b2", 600, 1000, Some(vec![0]));
        let err = check_cap(&[default, b0, b2], 2).unwrap_err();
        assert!(matches!(err, ClassError::OverCap { cpu: 0, .. }), "{err:?}");
    }

    #[test]
    fn exactly_a_whole_cpu_is_within_the_cap() {
        let thirds = [group(0, "default", 1, 3, None), group(1, "a", 2, 3, None)];
        assert!(check_cap(&thirds, 1).is_ok());
    }
}
