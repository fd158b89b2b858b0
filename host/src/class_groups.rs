//! The MicroQuanta class groups of the host's engine groups: a `[[group]]` with
//! `microquanta = { runtime_us, period_us }` has a class group of the same name, which the
//! host creates (or updates to the configured budget, if one of that name exists) before the
//! group's threads start, and removes when the operator removes the group at run time, if
//! the host created it.
//!
//! Class groups live in the scheduler's pinned group map (`mq_class::Groups`), so they
//! outlive the host: a host restarting with the same configuration finds them there and
//! updates them. The host removes only a class group it created itself; one it found
//! already there (made by `mqctl group add`, or by an earlier host) is left for whoever made
//! it. Nothing is done unless `scx_microquanta` is loaded and the configuration's
//! `microquanta` is on: without the class the threads run as normal threads, as they do
//! without the option.
//!
//! [`ClassMap`] is what this needs of the group map, so that the bookkeeping can be tested
//! against an in-memory map; [`PinnedClass`] is the real one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use mq_class::{Budget, Class, ClassError};

use crate::config::{Config, GroupConfig};

/// What the host needs of the class's group map.
pub trait ClassMap: Send + Sync + std::fmt::Debug {
    /// The budget of the class group of this name, if it exists.
    fn budget(&self, name: &str) -> Result<Option<Budget>, ClassError>;
    /// Creates the class group, or gives the existing one this budget (every CPU).
    fn set(&self, name: &str, budget: Budget) -> Result<(), ClassError>;
    /// Removes the class group (its remaining members go to the default group).
    fn remove(&self, name: &str) -> Result<(), ClassError>;
}

/// The scheduler's pinned group map, opened for each operation (the scheduler may have
/// been restarted in between; the pinned map is the same).
#[derive(Debug)]
pub struct PinnedClass;

impl ClassMap for PinnedClass {
    fn budget(&self, name: &str) -> Result<Option<Budget>, ClassError> {
        match Class::open()?.groups().get(name) {
            Ok(g) => Ok(Some(g.budget)),
            Err(ClassError::UnknownGroup(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn set(&self, name: &str, budget: Budget) -> Result<(), ClassError> {
        Class::open()?.groups().set(name, budget, None).map(|_| ())
    }

    fn remove(&self, name: &str) -> Result<(), ClassError> {
        Class::open()?.remove_group(name).map(|_| ())
    }
}

/// What [`ClassGroups::ensure`] did for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ensured {
    /// The class group's name (the host group's).
    pub name: String,
    /// Its budget before, if it existed.
    pub previous: Option<Budget>,
}

/// The host's class groups: which it created, and the map it made them in.
#[derive(Debug, Clone)]
pub struct ClassGroups {
    /// `None`: the class is not in use (not loaded, or `microquanta = false`).
    map: Option<Arc<dyn ClassMap>>,
    /// Class groups this host created, by name, with their budget.
    created: Arc<Mutex<BTreeMap<String, Budget>>>,
    /// Class groups this host found already there and updated.
    found: Arc<Mutex<BTreeSet<String>>>,
}

impl Default for ClassGroups {
    /// Class groups not in use.
    fn default() -> Self {
        Self::with_map(None)
    }
}

impl ClassGroups {
    /// For a host with `config`: the pinned map if `config.microquanta` is on and
    /// `scx_microquanta` is loaded, else not in use.
    pub fn for_config(config: &Config) -> Self {
        let in_use = config.microquanta && mq_class::sysfs::microquanta_loaded();
        Self::with_map(in_use.then(|| Arc::new(PinnedClass) as Arc<dyn ClassMap>))
    }

    /// Over `map` (`None`: not in use).
    pub fn with_map(map: Option<Arc<dyn ClassMap>>) -> Self {
        Self {
            map,
            created: Arc::default(),
            found: Arc::default(),
        }
    }

    /// Creates or updates the class group of `group` if it asks for one and the class is in
    /// use. Returns what it did, for [`Self::undo`], when it did. The error names the group.
    pub fn ensure(&self, group: &GroupConfig) -> Result<Option<Ensured>, String> {
        let (Some(map), Some(mq)) = (&self.map, &group.microquanta) else {
            return Ok(None);
        };
        let name = &group.name;
        let budget = mq.budget();
        let refused = |e: ClassError| {
            format!(
                "group {name}: cannot make its MicroQuanta class group {name:?} ({}/{} µs): {e}",
                budget.runtime_us, budget.period_us
            )
        };
        let previous = map.budget(name).map_err(refused)?;
        map.set(name, budget).map_err(refused)?;
        if previous.is_some() && !lock(&self.created).contains_key(name) {
            log::info!(
                "group {name}: MicroQuanta class group {name:?} was already there; its budget is now {}/{} µs",
                budget.runtime_us,
                budget.period_us
            );
            lock(&self.found).insert(name.clone());
        } else {
            log::info!(
                "group {name}: MicroQuanta class group {name:?} made with {}/{} µs",
                budget.runtime_us,
                budget.period_us
            );
            lock(&self.created).insert(name.clone(), budget);
        }
        Ok(Some(Ensured {
            name: name.clone(),
            previous,
        }))
    }

    /// Takes back what [`Self::ensure`] did when the group it was for did not start: a class
    /// group it made is removed, one it updated gets its previous budget back.
    pub fn undo(&self, ensured: &Ensured) -> Result<(), String> {
        let Some(previous) = ensured.previous else {
            return self.release(&ensured.name).map(|_| ());
        };
        let name = &ensured.name;
        let Some(map) = &self.map else { return Ok(()) };
        if !lock(&self.created).contains_key(name) {
            lock(&self.found).remove(name);
        }
        map.set(name, previous)
            .map_err(|e| format!("group {name}: restoring its MicroQuanta class group's budget: {e}"))
    }

    /// Creates or updates the class groups of every group of `config`, before its threads
    /// start. The first refusal is the error.
    pub fn ensure_all(&self, config: &Config) -> Result<(), String> {
        for g in &config.group {
            self.ensure(g)?;
        }
        Ok(())
    }

    /// The host group `name` is gone: removes its class group if this host created it.
    /// Returns whether it did.
    pub fn release(&self, name: &str) -> Result<bool, String> {
        lock(&self.found).remove(name);
        if lock(&self.created).remove(name).is_none() {
            return Ok(false);
        }
        let Some(map) = &self.map else { return Ok(false) };
        map.remove(name)
            .map_err(|e| format!("group {name}: removing its MicroQuanta class group: {e}"))?;
        log::info!("group {name}: MicroQuanta class group {name:?} removed");
        Ok(true)
    }

    /// Names of the class groups this host created.
    pub fn created(&self) -> Vec<String> {
        lock(&self.created).keys().cloned().collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MicroquantaBudget;

    /// An in-memory group map with the class's cap on one CPU: the default group's budget
    /// plus every group's must fit the CPU, as `Groups::set` checks.
    #[derive(Debug, Default)]
    struct FakeMap {
        groups: Mutex<BTreeMap<String, Budget>>,
        default_ppm: u64,
    }

    impl ClassMap for FakeMap {
        fn budget(&self, name: &str) -> Result<Option<Budget>, ClassError> {
            Ok(lock(&self.groups).get(name).copied())
        }
        fn set(&self, name: &str, budget: Budget) -> Result<(), ClassError> {
            let mut groups = lock(&self.groups);
            let others: u64 = groups
                .iter()
                .filter(|(n, _)| *n != name)
                .map(|(_, b)| b.runtime_us * 1_000_000 / b.period_us)
                .sum();
            let total = self.default_ppm + others + budget.runtime_us * 1_000_000 / budget.period_us;
            if total > 1_000_000 {
                return Err(ClassError::OverCap {
                    cpu: 0,
                    percent: total as f64 / 1e4,
                    groups: name.into(),
                });
            }
            groups.insert(name.into(), budget);
            Ok(())
        }
        fn remove(&self, name: &str) -> Result<(), ClassError> {
            lock(&self.groups)
                .remove(name)
                .map(|_| ())
                .ok_or_else(|| ClassError::UnknownGroup(name.into()))
        }
    }

    fn group(name: &str, budget: Option<(u64, u64)>) -> GroupConfig {
        let text = format!("name = {name:?}\nmode = \"spreading\"\n");
        let mut g: GroupConfig = toml::from_str(&text).unwrap();
        g.microquanta = budget.map(|(runtime_us, period_us)| MicroquantaBudget {
            runtime_us,
            period_us,
        });
        g
    }

    fn with_fake(default_ppm: u64) -> (Arc<FakeMap>, ClassGroups) {
        let map = Arc::new(FakeMap {
            default_ppm,
            ..FakeMap::default()
        });
        let groups = ClassGroups::with_map(Some(map.clone() as Arc<dyn ClassMap>));
        (map, groups)
    }

    #[test]
    fn a_group_with_a_budget_gets_its_class_group_and_loses_it_on_removal() {
        let (map, cg) = with_fake(0);
        let made = cg.ensure(&group("lat", Some((200, 1000)))).unwrap().unwrap();
        assert_eq!((made.name.as_str(), made.previous), ("lat", None));
        assert_eq!(
            lock(&map.groups).get("lat"),
            Some(&Budget {
                period_us: 1000,
                runtime_us: 200
            })
        );
        assert_eq!(cg.created(), ["lat"]);
        assert!(cg.release("lat").unwrap());
        assert!(lock(&map.groups).is_empty());
        assert!(!cg.release("lat").unwrap(), "released once");
    }

    #[test]
    fn a_group_without_a_budget_or_without_the_class_makes_nothing() {
        let (map, cg) = with_fake(0);
        assert_eq!(cg.ensure(&group("plain", None)).unwrap(), None);
        assert!(lock(&map.groups).is_empty());
        let off = ClassGroups::default();
        assert_eq!(off.ensure(&group("lat", Some((200, 1000)))).unwrap(), None);
        assert!(!off.release("lat").unwrap());
    }

    #[test]
    fn a_class_group_found_already_there_is_updated_and_kept_on_removal() {
        let (map, cg) = with_fake(0);
        lock(&map.groups).insert(
            "lat".into(),
            Budget {
                period_us: 1000,
                runtime_us: 100,
            },
        );
        cg.ensure(&group("lat", Some((300, 1000)))).unwrap();
        assert_eq!(lock(&map.groups)["lat"].runtime_us, 300, "a restart updates it");
        assert!(cg.created().is_empty());
        assert!(!cg.release("lat").unwrap());
        assert!(lock(&map.groups).contains_key("lat"), "not ours to remove");
    }

    #[test]
    fn undoing_removes_what_was_made_and_restores_what_was_updated() {
        let (map, cg) = with_fake(0);
        let before = Budget {
            period_us: 1000,
            runtime_us: 100,
        };
        lock(&map.groups).insert("found".into(), before);
        let found = cg.ensure(&group("found", Some((300, 1000)))).unwrap().unwrap();
        let made = cg.ensure(&group("made", Some((300, 1000)))).unwrap().unwrap();
        cg.undo(&found).unwrap();
        cg.undo(&made).unwrap();
        assert_eq!(*lock(&map.groups), BTreeMap::from([("found".to_owned(), before)]));
        assert!(cg.created().is_empty());
    }

    #[test]
    fn a_refusal_names_the_group_and_records_nothing() {
        // The default group holds 90 % of the CPU: 20 % more does not fit.
        let (map, cg) = with_fake(900_000);
        let e = cg.ensure(&group("bulk", Some((200, 1000)))).unwrap_err();
        assert!(
            e.starts_with("group bulk: cannot make its MicroQuanta class group"),
            "{e}"
        );
        assert!(
            e.contains("200/1000 µs") && e.contains("over the whole CPU"),
            "{e}"
        );
        assert!(cg.created().is_empty());
        assert!(lock(&map.groups).is_empty());
    }
}
