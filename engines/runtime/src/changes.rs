//! Run-time changes to a running [`Runtime`]: adding and removing groups and engines while
//! the others keep running.
//!
//! What the other engines see of a change:
//! - **add group**: nothing; the group's threads start as at [`Runtime::start`].
//! - **remove group**: nothing; its threads are told to stop, exit at their next round and
//!   drop their engines (the apps' channels of those engines lose their host side).
//! - **add engine**: its thread gets one command (dedicated: the thread with the fewest
//!   engines; compacting: the active thread with the fewest, the rebalancer moves it later
//!   if its queueing delay says so; spreading: a new thread of its own).
//! - **remove engine**: one mailbox operation on the engine itself; its own thread drops it
//!   right after, wherever the rebalancer has moved it. A spreading thread left without
//!   engines stops.
//!
//! A refused change changes nothing: names, cores and the group are checked before anything
//! starts, and an engine whose thread does not take the removal in time keeps running.
//! Changes are serialised among themselves; the monitor sees each one at a poll boundary.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc};

use crate::mailbox::{ControlError, ControlOp};
use crate::stats::Health;
use crate::worker::{Command, EngineShared};
use crate::{place, Engine, GroupSpec, Mode, Runtime, RuntimeError};

impl Runtime {
    /// Starts a new group, as [`Runtime::start`] would have. Refused (and nothing started)
    /// if its name or one of its engines' names is taken, or its cores do not suit its mode
    /// or collide with a dedicated group.
    pub fn add_group(&self, spec: GroupSpec) -> Result<(), RuntimeError> {
        let _change = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        {
            let groups = self.lock_groups();
            if groups.iter().any(|g| g.name == spec.name) {
                return Err(RuntimeError::DuplicateGroup(spec.name));
            }
            let mut names = std::collections::HashSet::new();
            for e in &spec.engines {
                let taken = groups.iter().flat_map(|g| &g.engines).any(|s| s.name == e.name());
                if taken || !names.insert(e.name()) {
                    return Err(RuntimeError::DuplicateEngine(e.name().to_owned()));
                }
            }
        }
        self.check_cores(&spec)?;
        let (group, watched) = self.start_group(spec)?;
        log::info!("group {} ({}) added", group.name, group.mode);
        self.lock_watched().push(watched);
        self.lock_groups().push(group);
        Ok(())
    }

    /// Stops a group's threads and drops its engines. The other groups run on untouched.
    pub fn remove_group(&self, name: &str) -> Result<(), RuntimeError> {
        let _change = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let mut group = {
            let mut groups = self.lock_groups();
            let i = groups
                .iter()
                .position(|g| g.name == name)
                .ok_or_else(|| RuntimeError::UnknownGroup(name.to_owned()))?;
            // The monitor first: it must not move engines between threads that are going.
            self.lock_watched().retain(|w| w.name != name);
            groups.remove(i)
        };
        for t in &group.threads {
            t.shared.stop();
        }
        for t in &mut group.threads {
            t.stop_and_join();
        }
        log::info!("group {name} removed with its {} engines", group.engines.len());
        Ok(())
    }

    /// Adds an engine to a running group. Refused if the group does not exist or the name
    /// is taken.
    pub fn add_engine(&self, group: &str, engine: Box<dyn Engine>) -> Result<(), RuntimeError> {
        let _change = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let name = engine.name().to_owned();
        let (mode, threads) = {
            let groups = self.lock_groups();
            if groups.iter().flat_map(|g| &g.engines).any(|e| e.name == name) {
                return Err(RuntimeError::DuplicateEngine(name));
            }
            let g = groups
                .iter()
                .find(|g| g.name == group)
                .ok_or_else(|| RuntimeError::UnknownGroup(group.to_owned()))?;
            let threads: Vec<_> = g.threads.iter().map(|t| t.shared.clone()).collect();
            (g.mode, threads)
        };
        let err = |reason: String| RuntimeError::Group {
            group: group.to_owned(),
            reason,
        };
        let placed = place(engine).map_err(err)?;
        let shared = placed.shared.clone();
        match mode {
            Mode::Dedicated => {
                let target = threads
                    .iter()
                    .min_by_key(|t| t.engine_count.load(Relaxed))
                    .expect("a dedicated group has a thread per core");
                target.send(Command::Adopt(placed));
                self.watch_engine(group, shared.clone(), None);
            }
            Mode::Compacting => {
                // The active thread with the fewest engines (the rebalancer's view, which is
                // also where they go), or the first thread if none is active.
                let t = {
                    let watched = self.lock_watched();
                    let w = watched.iter().find(|w| w.name == group);
                    let assignment = w
                        .and_then(|w| w.compacting.as_ref())
                        .map(|c| c.assignment.clone());
                    let assignment = assignment.unwrap_or_default();
                    (0..threads.len())
                        .filter(|t| assignment.contains(t))
                        .min_by_key(|t| assignment.iter().filter(|a| *a == t).count())
                        .unwrap_or(0)
                };
                // Adopt goes first: a move the monitor orders later queues behind it.
                threads[t].send(Command::Adopt(placed));
                self.watch_engine(group, shared.clone(), Some(t));
            }
            Mode::Spreading => {
                let mut groups = self.lock_groups();
                let g = groups
                    .iter_mut()
                    .find(|g| g.name == group)
                    .expect("groups only change under the change lock");
                let cores = g.cores.clone();
                let thread = self.spawn_thread(g, cores, vec![placed]).map_err(err)?;
                let worker = thread.shared.clone();
                g.threads.push(thread);
                drop(groups);
                self.watch_engine(group, shared.clone(), None);
                if let Some(w) = self.lock_watched().iter_mut().find(|w| w.name == group) {
                    w.workers.push(worker);
                }
            }
        }
        if let Some(g) = self.lock_groups().iter_mut().find(|g| g.name == group) {
            g.engines.push(shared);
        }
        log::info!("engine {name} added to group {group}");
        Ok(())
    }

    /// Tells the monitor about a new engine of `group`, on thread `thread` (compacting).
    fn watch_engine(&self, group: &str, shared: Arc<EngineShared>, thread: Option<usize>) {
        let mut watched = self.lock_watched();
        let Some(w) = watched.iter_mut().find(|w| w.name == group) else {
            return;
        };
        w.engines.push(shared);
        w.waiting_since.push(None);
        if let (Some(c), Some(t)) = (&mut w.compacting, thread) {
            c.assignment.push(t);
            c.rebalancer.add_engine();
        }
    }

    /// Removes an engine: its own thread drops it after one mailbox operation (so the
    /// engine is never dropped mid-step), and the apps' channels to it lose their host
    /// side. Refused if there is no such engine, if it is the last of its group (remove the
    /// group instead), or if its thread does not take the operation within the control
    /// timeout (the engine is stuck in `run()`; it keeps running).
    pub fn remove_engine(&self, name: &str) -> Result<(), RuntimeError> {
        let _change = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let (group, shared) = {
            let groups = self.lock_groups();
            let (g, e) = groups
                .iter()
                .find_map(|g| g.engines.iter().find(|e| e.name == name).map(|e| (g, e)))
                .ok_or_else(|| RuntimeError::UnknownEngine(name.to_owned()))?;
            if g.engines.len() == 1 {
                return Err(RuntimeError::LastEngine {
                    engine: name.to_owned(),
                    group: g.name.clone(),
                });
            }
            (g.name.clone(), e.clone())
        };
        self.retire(&shared)?;
        {
            let mut watched = self.lock_watched();
            if let Some(w) = watched.iter_mut().find(|w| w.name == group) {
                if let Some(i) = w.engines.iter().position(|e| e.id == shared.id) {
                    w.engines.remove(i);
                    w.waiting_since.remove(i);
                    if let Some(c) = &mut w.compacting {
                        c.assignment.remove(i);
                        c.rebalancer.remove_engine(i);
                    }
                }
            }
        }
        let mut idle = Vec::new();
        {
            let mut groups = self.lock_groups();
            let g = groups
                .iter_mut()
                .find(|g| g.name == group)
                .expect("groups only change under the change lock");
            g.engines.retain(|e| e.id != shared.id);
            if g.mode == Mode::Spreading {
                // One thread per engine: the one left without engines stops.
                let (keep, go) = std::mem::take(&mut g.threads)
                    .into_iter()
                    .partition(|t| t.shared.engine_count.load(Relaxed) > 0);
                g.threads = keep;
                idle = go;
            }
        }
        if !idle.is_empty() {
            let mut watched = self.lock_watched();
            if let Some(w) = watched.iter_mut().find(|w| w.name == group) {
                w.workers
                    .retain(|w| !idle.iter().any(|t| Arc::ptr_eq(&t.shared, w)));
            }
        }
        for mut t in idle {
            t.stop_and_join();
        }
        log::info!("engine {name} removed from group {group}");
        Ok(())
    }

    /// Has the engine's own thread drop it, and waits until it has. An engine that already
    /// failed is already dropped.
    fn retire(&self, shared: &EngineShared) -> Result<(), RuntimeError> {
        let timeout = self.options.control_timeout;
        let refused = |source| RuntimeError::Control {
            engine: shared.name.clone(),
            source,
        };
        let take_back = || shared.retire.lock().unwrap_or_else(|e| e.into_inner()).take();
        let (tx, rx) = mpsc::channel();
        *shared.retire.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        let noop: ControlOp = Box::new(|_| {});
        match shared.mailbox.post(&shared.name, noop, timeout) {
            Ok(()) => {}
            Err(ControlError::Gone(_)) => {
                take_back();
                return Ok(());
            }
            Err(e) => {
                take_back();
                return Err(refused(e));
            }
        }
        if rx.recv_timeout(timeout).is_ok() {
            return Ok(());
        }
        if take_back().is_none() {
            // Its thread took the request just now: the drop is under way.
            let _ = rx.recv_timeout(timeout);
            return Ok(());
        }
        if matches!(shared.stats.health(), Health::Failed { .. }) {
            // It failed meanwhile, and its thread dropped it then.
            return Ok(());
        }
        // The no-op stays posted and runs harmlessly when the engine returns.
        Err(refused(ControlError::Timeout {
            engine: shared.name.clone(),
            timeout,
        }))
    }
}
