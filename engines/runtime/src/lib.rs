//! The Snap engine runtime: the [`Engine`] trait every engine kind implements, the
//! [`mailbox`] that runs control operations on an engine's own thread, and [`Runtime`],
//! which places engine groups on threads in one of Snap's three scheduling modes and gives
//! the control plane handles, status and shutdown.
//!
//! It knows no engine kind, no configuration format and no control server: `snap-host`
//! builds engines from its configuration and hands them over as [`GroupSpec`]s.
//!
//! ```text
//!  Runtime::start(groups)
//!   ├─ dedicated:  one thread per listed core, pinned, spin-polling its engines
//!   ├─ spreading:  one thread per engine, blocked in epoll until a doorbell / NIC fd /
//!   │              mailbox wakes it; in the MicroQuanta class when the scheduler is loaded
//!   ├─ compacting: one (pinned) thread per allowed core, engines packed on as few as the
//!   │              queueing-delay target allows; the monitor's rebalancer moves them
//!   └─ monitor:    samples queueing delay, flags stuck engines, runs the rebalancer
//! ```
//!
//! Groups and engines can be added and removed while the others run (`changes`): a new
//! group gets its own threads, a new engine joins a thread of its group through that
//! thread's command queue, and a removed engine is dropped by its own thread after one
//! mailbox operation, so no other engine's thread pauses for it.
//!
//! [`engine`] is the trait and what an engine tells the runtime, [`app_facing`] how the
//! control plane attaches apps to an engine, [`movable`] how an engine's state leaves it for
//! a new host process; `worker` is the thread loop, `compacting` the
//! rebalancer's decisions, `monitor` the sampling thread, `placement` pinning and class
//! membership, `cpu_time` the kernel's per-thread accounting behind the status report
//! (whose types are `snap_ipc::control::status`, shared with clients).

pub mod app_facing;
mod changes;
mod compacting;
mod cpu_time;
pub mod engine;
pub mod mailbox;
mod monitor;
pub mod movable;
mod placement;
mod stats;
mod worker;

use std::any::Any;
use std::sync::atomic::{
    AtomicBool, AtomicUsize,
    Ordering::{Acquire, Relaxed},
};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use app_facing::{AppFacing, AttachReply, AttachRequest, ChannelLedger, Quarantined};
pub use compacting::{CompactingParams, FULL, PACK};
pub use engine::{Engine, RingSet, RunOutcome, WakeSource, WorkProbe};
pub use mailbox::ControlError;
pub use movable::Movable;
pub use snap_ipc::control::status::{EngineHealth, EngineStatus, GroupStatus, Status, ThreadStatus};

use mailbox::{ControlOp, Mailbox};
use monitor::{Compacting, Monitor, Watched, WatchedGroup};
use stats::{Clock, EngineStats, Health};
use worker::{EngineShared, Idle, Placed, WorkerSetup, WorkerShared};

/// How a group's engines are scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Threads pinned to dedicated cores, spin-polling.
    Dedicated,
    /// One blocking thread per engine, woken by interrupts, in the MicroQuanta class.
    Spreading,
    /// Engines packed onto as few cores as their queueing delay allows.
    Compacting,
}

impl Mode {
    /// The name used in configuration and status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dedicated => "dedicated",
            Self::Spreading => "spreading",
            Self::Compacting => "compacting",
        }
    }
}

impl Mode {
    /// The idle poll window a group in this mode gets by default: [`DEFAULT_IDLE_POLL`],
    /// zero for dedicated groups (which never block).
    pub fn default_idle_poll(self) -> Duration {
        match self {
            Self::Dedicated => Duration::ZERO,
            Self::Spreading | Self::Compacting => DEFAULT_IDLE_POLL,
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One group of engines and how to run it.
pub struct GroupSpec {
    /// Name for status and errors.
    pub name: String,
    /// Scheduling mode.
    pub mode: Mode,
    /// Dedicated: the cores to spin on (required, one thread each). Spreading: the CPUs the
    /// threads may use (empty: any). Compacting: the cores it may grow onto (empty: all).
    pub cores: Vec<usize>,
    /// The engines.
    pub engines: Vec<Box<dyn Engine>>,
    /// Rebalancer settings (compacting only).
    pub compacting: CompactingParams,
    /// Spreading and compacting: how long a thread whose engines ran out of work keeps
    /// polling them before it arms their doorbells and blocks ([`DEFAULT_IDLE_POLL`]; zero
    /// blocks at once). Work that arrives within the window is picked up without a wakeup
    /// through epoll, at the price of that much CPU after each burst. Dedicated threads
    /// always poll, so it must be zero there.
    pub idle_poll: Duration,
    /// Spreading and compacting: the MicroQuanta class group (`mq_class::Groups`) its
    /// threads join, which must exist when they start; `None`: the default class group.
    /// Dedicated threads never join the class, so it must be `None` there.
    pub microquanta_group: Option<String>,
}

/// The idle poll window groups get unless they say otherwise ([`GroupSpec::idle_poll`]):
/// none, from `mq-bench-pony` measurements on a 2-CPU machine, where no window lowered the
/// round trip and 50 µs or more raised it (docs/ENGINES.md, "Idle poll window").
pub const DEFAULT_IDLE_POLL: Duration = Duration::ZERO;

impl std::fmt::Debug for GroupSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.engines.iter().map(|e| e.name()).collect();
        f.debug_struct("GroupSpec")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .field("cores", &self.cores)
            .field("engines", &names)
            .field("idle_poll", &self.idle_poll)
            .field("microquanta_group", &self.microquanta_group)
            .finish()
    }
}

/// Runtime-wide settings.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// An engine inside one `run()` for longer than this is reported stuck.
    pub stuck_after: Duration,
    /// Put spreading and compacting threads in the MicroQuanta class when it is loaded.
    pub microquanta: bool,
    /// How long a control operation may wait for the engine's thread.
    pub control_timeout: Duration,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            stuck_after: Duration::from_millis(100),
            microquanta: true,
            control_timeout: Duration::from_secs(2),
        }
    }
}

/// Why the runtime could not start, or refused a run-time change (a refused change changes
/// nothing).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A group cannot be built as specified.
    #[error("group {group}: {reason}")]
    Group {
        /// Group name.
        group: String,
        /// What is wrong.
        reason: String,
    },
    /// Two engines share a name.
    #[error("duplicate engine name {0:?}")]
    DuplicateEngine(String),
    /// Two groups share a name.
    #[error("duplicate group name {0:?}")]
    DuplicateGroup(String),
    /// No group has this name.
    #[error("no group named {0:?}")]
    UnknownGroup(String),
    /// No engine has this name.
    #[error("no engine named {0:?}")]
    UnknownEngine(String),
    /// Removing the engine would leave its group empty, which no mode gives a meaning to
    /// (a group is started with at least one engine, too): remove the group instead.
    #[error("engine {engine:?} is the last one of group {group:?}; remove the group instead")]
    LastEngine {
        /// Engine name.
        engine: String,
        /// Its group.
        group: String,
    },
    /// The engine's thread did not take the removal (the engine is stuck in `run()`); the
    /// engine keeps running.
    #[error("cannot remove engine {engine:?}: {source}")]
    Control {
        /// Engine name.
        engine: String,
        /// Why its mailbox refused.
        source: ControlError,
    },
}

/// The control plane's handle on one engine.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    shared: Arc<EngineShared>,
    timeout: Duration,
}

impl EngineHandle {
    /// Engine name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Runs `f` on the engine's own thread, between two of its `run()` steps, and returns
    /// its result. `E` must be the engine's concrete type.
    pub fn control<E: Engine, R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut E) -> R + Send + 'static,
    ) -> Result<R, ControlError> {
        let name = self.shared.name.clone();
        self.control_dyn(move |engine| {
            let any: &mut dyn Any = engine;
            match any.downcast_mut::<E>() {
                Some(engine) => Ok(f(engine)),
                None => Err(ControlError::WrongType {
                    engine: name,
                    expected: std::any::type_name::<E>(),
                }),
            }
        })?
    }

    /// Channels the engine quarantined and detached on its own since the last call (the
    /// control plane drops them from its registry).
    pub fn take_quarantined(&self) -> Vec<Quarantined> {
        self.shared
            .ledger
            .as_ref()
            .map_or_else(Vec::new, |l| l.take_quarantined())
    }

    /// Like [`Self::control`] for code that works on any engine type (through the trait's
    /// methods, e.g. [`Engine::app_facing`]).
    pub fn control_dyn<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Engine) -> R + Send + 'static,
    ) -> Result<R, ControlError> {
        let name = self.shared.name.clone();
        let (tx, rx) = mpsc::sync_channel(1);
        let op: ControlOp = Box::new(move |engine: &mut dyn Engine| {
            let _ = tx.send(f(engine));
        });
        self.shared.mailbox.post(&name, op, self.timeout)?;
        match rx.recv_timeout(self.timeout) {
            Ok(result) => Ok(result),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(ControlError::Timeout {
                engine: name,
                timeout: self.timeout,
            }),
            // The operation was dropped unrun (engine failed, runtime stopped) or panicked.
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(ControlError::Gone(name)),
        }
    }
}

/// One running group: its engines, its threads, and what a thread started for it later
/// (spreading: one per added engine) needs.
struct Group {
    name: String,
    mode: Mode,
    cores: Vec<usize>,
    idle: Idle,
    microquanta: bool,
    /// The class group its threads join (`None`: the default group).
    class_group: Option<String>,
    engines: Vec<Arc<EngineShared>>,
    threads: Vec<Thread>,
    /// Suffix of the next thread's name (`snap-GROUP-N`), never reused.
    next_thread: usize,
}

/// One engine thread of a group.
struct Thread {
    shared: Arc<WorkerShared>,
    handle: Option<JoinHandle<()>>,
}

impl Thread {
    /// Tells the thread to stop and waits for it (its engines are dropped as it exits).
    fn stop_and_join(&mut self) {
        self.shared.stop();
        if let Some(handle) = self.handle.take() {
            // A thread can only have died by a panic outside engine code (a runtime bug);
            // it was already reported on stderr.
            let _ = handle.join();
        }
    }
}

/// A running Snap host runtime. Dropping it stops every thread.
///
/// Shared by the control plane (`&self` everywhere but [`Runtime::shutdown`]): the groups
/// sit behind a lock taken briefly by status, lookups and changes; changes are also
/// serialised among themselves, and do their slow part (starting threads, waiting for an
/// engine's thread) without holding the groups' lock.
pub struct Runtime {
    groups: Mutex<Vec<Group>>,
    watched: Watched,
    changes: Mutex<()>,
    monitor: Option<JoinHandle<()>>,
    monitor_stop: Arc<AtomicBool>,
    stopped: bool,
    clock: Clock,
    started: Instant,
    microquanta_loaded: bool,
    options: RuntimeOptions,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("groups", &self.lock_groups().len())
            .finish()
    }
}

static NEXT_ENGINE_ID: AtomicUsize = AtomicUsize::new(0);

impl Runtime {
    /// Builds every group and starts its threads. Nothing is left running on error.
    pub fn start(specs: Vec<GroupSpec>, options: RuntimeOptions) -> Result<Self, RuntimeError> {
        let mut names = std::collections::HashSet::new();
        let mut group_names = std::collections::HashSet::new();
        for spec in &specs {
            if !group_names.insert(spec.name.clone()) {
                return Err(RuntimeError::DuplicateGroup(spec.name.clone()));
            }
            for engine in &spec.engines {
                if !names.insert(engine.name().to_owned()) {
                    return Err(RuntimeError::DuplicateEngine(engine.name().to_owned()));
                }
            }
        }
        let monitor_stop = Arc::new(AtomicBool::new(false));
        let mut runtime = Self {
            groups: Mutex::new(Vec::new()),
            watched: Arc::new(Mutex::new(Vec::new())),
            changes: Mutex::new(()),
            monitor: None,
            monitor_stop: monitor_stop.clone(),
            stopped: false,
            clock: Clock::new(),
            started: Instant::now(),
            microquanta_loaded: options.microquanta && mq_class::sysfs::microquanta_loaded(),
            options,
        };
        for spec in specs {
            // On error `runtime` is dropped, which stops the threads already started.
            runtime.check_cores(&spec)?;
            let (group, watched) = runtime.start_group(spec)?;
            runtime.lock_watched().push(watched);
            runtime.lock_groups().push(group);
        }
        let monitor = Monitor {
            groups: runtime.watched.clone(),
            clock: runtime.clock,
            stop: monitor_stop,
            stuck_after: runtime.options.stuck_after,
            microquanta: runtime.options.microquanta,
        };
        let handle = std::thread::Builder::new()
            .name("snap-monitor".into())
            .spawn(move || monitor.run())
            .map_err(|e| RuntimeError::Group {
                group: "monitor".into(),
                reason: format!("cannot start thread: {e}"),
            })?;
        runtime.monitor = Some(handle);
        Ok(runtime)
    }

    fn lock_groups(&self) -> MutexGuard<'_, Vec<Group>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_watched(&self) -> MutexGuard<'_, Vec<WatchedGroup>> {
        self.watched.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks `spec`'s cores against its mode and the running groups: dedicated needs at
    /// least one; every core exists and is listed once; a dedicated core is nobody else's.
    fn check_cores(&self, spec: &GroupSpec) -> Result<(), RuntimeError> {
        let err = |reason: String| RuntimeError::Group {
            group: spec.name.clone(),
            reason,
        };
        if spec.mode == Mode::Dedicated && spec.cores.is_empty() {
            return Err(err("dedicated mode needs at least one core".into()));
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut seen = std::collections::HashSet::new();
        for &core in &spec.cores {
            if core >= cpus {
                return Err(err(format!(
                    "core {core} does not exist (this machine has cores 0..={})",
                    cpus - 1
                )));
            }
            if !seen.insert(core) {
                return Err(err(format!("core {core} is listed twice")));
            }
        }
        for g in self.lock_groups().iter() {
            let dedicated = spec.mode == Mode::Dedicated || g.mode == Mode::Dedicated;
            if let Some(core) = g.cores.iter().find(|c| seen.contains(c)).filter(|_| dedicated) {
                return Err(err(format!(
                    "core {core} is also used by group {:?}, and dedicated cores cannot be shared",
                    g.name
                )));
            }
        }
        Ok(())
    }

    /// Starts one group's threads with its engines. On error the threads already started
    /// for it are stopped (and its engines dropped).
    fn start_group(&self, spec: GroupSpec) -> Result<(Group, WatchedGroup), RuntimeError> {
        let name = spec.name.clone();
        let err = |reason: String| RuntimeError::Group {
            group: name.clone(),
            reason,
        };
        if spec.engines.is_empty() {
            return Err(err("has no engines".into()));
        }
        if spec.mode == Mode::Dedicated && !spec.idle_poll.is_zero() {
            return Err(err(
                "an idle poll window only applies to spreading and compacting groups (dedicated threads always poll)".into(),
            ));
        }
        if spec.mode == Mode::Dedicated && spec.microquanta_group.is_some() {
            return Err(err(
                "a MicroQuanta class group only applies to spreading and compacting groups (dedicated threads never join the class)".into(),
            ));
        }
        let mut placed = Vec::new();
        for engine in spec.engines {
            placed.push(place(engine).map_err(&err)?);
        }
        let engines: Vec<Arc<EngineShared>> = placed.iter().map(|p| p.shared.clone()).collect();
        // Per thread: its CPUs and its initial engines.
        let mut layout: Vec<(Vec<usize>, Vec<Placed>)> = match spec.mode {
            Mode::Dedicated => {
                let mut threads: Vec<_> = spec.cores.iter().map(|&c| (vec![c], Vec::new())).collect();
                let n = threads.len();
                for (i, p) in placed.into_iter().enumerate() {
                    threads[i % n].1.push(p);
                }
                threads
            }
            Mode::Spreading => placed
                .into_iter()
                .map(|p| (spec.cores.clone(), vec![p]))
                .collect(),
            Mode::Compacting => {
                let cores = if spec.cores.is_empty() {
                    (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
                } else {
                    spec.cores.clone()
                };
                let mut threads: Vec<_> = cores.iter().map(|&c| (vec![c], Vec::new())).collect();
                threads[0].1 = placed;
                threads
            }
        };
        let (idle, microquanta) = match spec.mode {
            // Dedicated threads own their cores; the class would only throttle them.
            Mode::Dedicated => (Idle::Spin, false),
            Mode::Spreading | Mode::Compacting => {
                (Idle::Block { poll: spec.idle_poll }, self.options.microquanta)
            }
        };
        let mut group = Group {
            name: spec.name,
            mode: spec.mode,
            cores: spec.cores,
            idle,
            microquanta,
            class_group: spec.microquanta_group,
            engines,
            threads: Vec::new(),
            next_thread: 0,
        };
        for (cores, initial) in layout.drain(..) {
            match self.spawn_thread(&mut group, cores, initial) {
                Ok(thread) => group.threads.push(thread),
                Err(reason) => {
                    for t in &mut group.threads {
                        t.stop_and_join();
                    }
                    return Err(err(reason));
                }
            }
        }
        let workers: Vec<Arc<WorkerShared>> = group.threads.iter().map(|t| t.shared.clone()).collect();
        let compacting = (spec.mode == Mode::Compacting).then(|| Compacting {
            poll_interval: spec.compacting.poll_interval,
            rebalancer: compacting::Rebalancer::new(spec.compacting, workers.len(), group.engines.len()),
            assignment: vec![0; group.engines.len()],
            samples: Vec::with_capacity(group.engines.len()),
        });
        let watched = WatchedGroup {
            name: group.name.clone(),
            engines: group.engines.clone(),
            workers,
            waiting_since: vec![None; group.engines.len()],
            compacting,
            class_group: group.class_group.clone(),
        };
        Ok((group, watched))
    }

    /// Starts one thread of `group` on `cores` with its `initial` engines.
    fn spawn_thread(
        &self,
        group: &mut Group,
        cores: Vec<usize>,
        initial: Vec<Placed>,
    ) -> Result<Thread, String> {
        let shared = Arc::new(WorkerShared::new(cores).map_err(|e| format!("eventfd: {e}"))?);
        let handle = worker::spawn(WorkerSetup {
            name: format!("snap-{}-{}", group.name, group.next_thread),
            shared: shared.clone(),
            idle: group.idle,
            clock: self.clock,
            microquanta: group.microquanta,
            class_group: group.class_group.clone(),
            initial,
        })?;
        group.next_thread += 1;
        Ok(Thread {
            shared,
            handle: Some(handle),
        })
    }

    /// The handle of the engine called `name`.
    pub fn engine(&self, name: &str) -> Option<EngineHandle> {
        self.lock_groups()
            .iter()
            .flat_map(|g| &g.engines)
            .find(|e| e.name == name)
            .map(|shared| EngineHandle {
                shared: shared.clone(),
                timeout: self.options.control_timeout,
            })
    }

    /// Names of all engines, group by group.
    pub fn engine_names(&self) -> Vec<String> {
        self.lock_groups()
            .iter()
            .flat_map(|g| &g.engines)
            .map(|e| e.name.clone())
            .collect()
    }

    /// A snapshot of every group, thread and engine.
    pub fn status(&self) -> Status {
        let now = self.clock.now_ns();
        let stopped = self.stopped;
        let groups = self
            .lock_groups()
            .iter()
            .map(|g| {
                let engines: Vec<EngineStatus> = g.engines.iter().map(|e| engine_status(e, now)).collect();
                let threads: Vec<ThreadStatus> = g
                    .threads
                    .iter()
                    .map(|t| {
                        let w = &t.shared;
                        let tid = w.tid.load(Relaxed);
                        ThreadStatus {
                            tid,
                            cores: w.cores.clone(),
                            cpu_time_ns: if stopped {
                                w.exit_cpu_ns.load(Relaxed)
                            } else {
                                cpu_time::thread_cpu_time_ns(tid)
                            },
                            last_cpu: if stopped {
                                None
                            } else {
                                cpu_time::thread_last_cpu(tid)
                            },
                            busy_ns: w.busy_ns.load(Relaxed),
                            engines: engines
                                .iter()
                                .filter(|e| e.tid == tid)
                                .map(|e| e.name.clone())
                                .collect(),
                            in_microquanta: w.in_microquanta.load(Relaxed),
                            microquanta_group: w.in_microquanta.load(Relaxed).then(|| {
                                g.class_group
                                    .clone()
                                    .unwrap_or_else(|| mq_class::group::DEFAULT_GROUP_NAME.to_owned())
                            }),
                        }
                    })
                    .collect();
                GroupStatus {
                    name: g.name.clone(),
                    mode: g.mode.as_str().to_owned(),
                    cores: g.cores.clone(),
                    // From this snapshot's engines, not the threads' own counts: those
                    // are read later, and a move in between would tear the status.
                    active_threads: threads.iter().filter(|t| !t.engines.is_empty()).count(),
                    threads,
                    engines,
                }
            })
            .collect();
        Status {
            uptime_s: self.started.elapsed().as_secs_f64(),
            microquanta_loaded: self.microquanta_loaded,
            groups,
        }
    }

    /// Stops every thread (engines finish their current step) and returns the final status:
    /// taken after the threads exited, so every step is counted; threads report the CPU
    /// time they had at exit and host no engines any more.
    pub fn shutdown(mut self) -> Status {
        self.stop_and_join();
        self.status()
    }

    fn stop_and_join(&mut self) {
        self.stopped = true;
        self.monitor_stop.store(true, Relaxed);
        let groups = self.groups.get_mut().unwrap_or_else(|e| e.into_inner());
        // Tell every thread first, so that they wind down together.
        for t in groups.iter().flat_map(|g| &g.threads) {
            t.shared.stop();
        }
        for t in groups.iter_mut().flat_map(|g| &mut g.threads) {
            t.stop_and_join();
        }
        if let Some(handle) = self.monitor.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// An engine with the parts other threads see, ready for a thread to adopt.
fn place(mut engine: Box<dyn Engine>) -> Result<Placed, String> {
    let ledger = engine.app_facing().and_then(|app| app.ledger());
    let shared = Arc::new(EngineShared {
        id: NEXT_ENGINE_ID.fetch_add(1, Relaxed),
        name: engine.name().to_owned(),
        mailbox: Mailbox::new().map_err(|e| format!("eventfd: {e}"))?,
        stats: EngineStats::default(),
        probe: engine.work_probe(),
        ledger,
        retire: Mutex::new(None),
    });
    Ok(Placed { shared, engine })
}

fn engine_status(e: &EngineShared, now: u64) -> EngineStatus {
    let s = &e.stats;
    let health = match s.health() {
        Health::Ok => EngineHealth::Ok,
        Health::Stuck { since_ns } => EngineHealth::Stuck {
            in_run_ms: now.saturating_sub(since_ns) / 1_000_000,
        },
        Health::Failed { reason } => EngineHealth::Failed { reason },
    };
    EngineStatus {
        name: e.name.clone(),
        // Before `migrations` (Acquire): an engine seen off its old thread has its move counted.
        tid: s.tid.load(Acquire),
        runs: s.runs.load(Relaxed),
        items: s.items.load(Relaxed),
        busy_ns: s.busy_ns.load(Relaxed),
        wakeups: s.wakeups.load(Relaxed),
        control_ops: s.control_ops.load(Relaxed),
        migrations: s.migrations.load(Relaxed),
        queueing_delay_us: s.queueing_delay_ns.load(Relaxed) as f64 / 1e3,
        max_queueing_delay_us: s.max_queueing_delay_ns.load(Relaxed) as f64 / 1e3,
        health,
        quarantined: e.ledger.as_ref().map_or(0, |l| l.quarantined()),
        backpressured: e.ledger.as_ref().map_or(0, |l| l.backpressured()),
    }
}
