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
//! [`engine`] is the trait and what an engine tells the runtime, [`app_facing`] how the
//! control plane attaches apps to an engine; `worker` is the thread loop, `compacting` the
//! rebalancer's decisions, `monitor` the sampling thread, `placement` pinning and class
//! membership, `cpu_time` the kernel's per-thread accounting behind the status report
//! (whose types are `snap_ipc::control::status`, shared with clients).

pub mod app_facing;
mod compacting;
mod cpu_time;
pub mod engine;
pub mod mailbox;
mod monitor;
mod placement;
mod stats;
mod worker;

use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use app_facing::{AppFacing, AttachReply, AttachRequest, ChannelLedger, Quarantined};
pub use compacting::{CompactingParams, FULL, PACK};
pub use engine::{Engine, RingSet, RunOutcome, WakeSource, WorkProbe};
pub use mailbox::ControlError;
pub use snap_ipc::control::status::{EngineHealth, EngineStatus, GroupStatus, Status, ThreadStatus};

use mailbox::{ControlOp, Mailbox};
use monitor::{Compacting, Monitor, WatchedGroup};
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

/// Why the runtime could not start.
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

struct Group {
    name: String,
    mode: Mode,
    engines: Vec<Arc<EngineShared>>,
    workers: Vec<Arc<WorkerShared>>,
}

/// A running Snap host runtime. Dropping it stops every thread.
pub struct Runtime {
    groups: Vec<Group>,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    clock: Clock,
    started: Instant,
    microquanta_loaded: bool,
    control_timeout: Duration,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("groups", &self.groups.len())
            .finish()
    }
}

static NEXT_ENGINE_ID: AtomicUsize = AtomicUsize::new(0);

impl Runtime {
    /// Builds every group and starts its threads. Nothing is left running on error.
    pub fn start(specs: Vec<GroupSpec>, options: RuntimeOptions) -> Result<Self, RuntimeError> {
        let mut names = std::collections::HashSet::new();
        for spec in &specs {
            for engine in &spec.engines {
                if !names.insert(engine.name().to_owned()) {
                    return Err(RuntimeError::DuplicateEngine(engine.name().to_owned()));
                }
            }
        }
        let clock = Clock::new();
        let mut runtime = Self {
            groups: Vec::new(),
            threads: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            clock,
            started: Instant::now(),
            microquanta_loaded: options.microquanta && mq_class::sysfs::microquanta_loaded(),
            control_timeout: options.control_timeout,
        };
        let mut watched = Vec::new();
        let mut interval = Duration::from_millis(1);
        for spec in specs {
            // On error `runtime` is dropped, which stops the threads already started.
            let (group, compacting) = runtime.start_group(spec, &options)?;
            if let Some(c) = &compacting {
                interval = interval.min(c.0);
            }
            watched.push(WatchedGroup {
                engines: group.engines.clone(),
                workers: group.workers.clone(),
                waiting_since: vec![None; group.engines.len()],
                compacting: compacting.map(|c| c.1),
            });
            runtime.groups.push(group);
        }
        let monitor = Monitor {
            groups: watched,
            clock,
            stop: runtime.stop.clone(),
            interval,
            stuck_after: options.stuck_after,
        };
        let join_class = options.microquanta && runtime.groups.iter().any(|g| g.mode == Mode::Compacting);
        let handle = std::thread::Builder::new()
            .name("snap-monitor".into())
            .spawn(move || {
                if join_class {
                    // The rebalancer polls every few tens of µs; under load it needs the class
                    // as much as the engines do.
                    placement::join_microquanta(rustix::thread::gettid().as_raw_nonzero().get() as u32);
                }
                monitor.run()
            })
            .map_err(|e| RuntimeError::Group {
                group: "monitor".into(),
                reason: format!("cannot start thread: {e}"),
            })?;
        runtime.threads.push(handle);
        Ok(runtime)
    }

    #[allow(clippy::type_complexity)]
    fn start_group(
        &mut self,
        spec: GroupSpec,
        options: &RuntimeOptions,
    ) -> Result<(Group, Option<(Duration, Compacting)>), RuntimeError> {
        let err = |reason: String| RuntimeError::Group {
            group: spec.name.clone(),
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
        let mut placed = Vec::new();
        for engine in spec.engines {
            let mut engine = engine;
            let ledger = engine.app_facing().and_then(|app| app.ledger());
            let shared = Arc::new(EngineShared {
                id: NEXT_ENGINE_ID.fetch_add(1, Relaxed),
                name: engine.name().to_owned(),
                mailbox: Mailbox::new().map_err(|e| err(format!("eventfd: {e}")))?,
                stats: EngineStats::default(),
                probe: engine.work_probe(),
                ledger,
            });
            placed.push(Placed { shared, engine });
        }
        let engines: Vec<Arc<EngineShared>> = placed.iter().map(|p| p.shared.clone()).collect();
        // Per thread: its CPUs and its initial engines.
        let mut layout: Vec<(Vec<usize>, Vec<Placed>)> = match spec.mode {
            Mode::Dedicated => {
                if spec.cores.is_empty() {
                    return Err(err("dedicated mode needs at least one core".into()));
                }
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
            Mode::Spreading | Mode::Compacting => (Idle::Block { poll: spec.idle_poll }, options.microquanta),
        };
        let mut workers = Vec::new();
        for (i, (cores, initial)) in layout.drain(..).enumerate() {
            let shared = Arc::new(WorkerShared::new(cores).map_err(|e| err(format!("eventfd: {e}")))?);
            let handle = worker::spawn(WorkerSetup {
                name: format!("snap-{}-{i}", spec.name),
                shared: shared.clone(),
                idle,
                stop: self.stop.clone(),
                clock: self.clock,
                microquanta,
                initial,
            })
            .map_err(err)?;
            self.threads.push(handle);
            workers.push(shared);
        }
        let compacting = (spec.mode == Mode::Compacting).then(|| {
            let rebalancer = compacting::Rebalancer::new(spec.compacting, workers.len(), engines.len());
            let assignment = vec![0; engines.len()];
            (
                spec.compacting.poll_interval,
                Compacting {
                    rebalancer,
                    assignment,
                    samples: Vec::with_capacity(engines.len()),
                },
            )
        });
        let group = Group {
            name: spec.name,
            mode: spec.mode,
            engines,
            workers,
        };
        Ok((group, compacting))
    }

    /// The handle of the engine called `name`.
    pub fn engine(&self, name: &str) -> Option<EngineHandle> {
        self.groups
            .iter()
            .flat_map(|g| &g.engines)
            .find(|e| e.name == name)
            .map(|shared| EngineHandle {
                shared: shared.clone(),
                timeout: self.control_timeout,
            })
    }

    /// Names of all engines, group by group.
    pub fn engine_names(&self) -> Vec<String> {
        self.groups
            .iter()
            .flat_map(|g| &g.engines)
            .map(|e| e.name.clone())
            .collect()
    }

    /// A snapshot of every group, thread and engine.
    pub fn status(&self) -> Status {
        let now = self.clock.now_ns();
        let stopped = self.threads.is_empty();
        let groups = self
            .groups
            .iter()
            .map(|g| {
                let engines: Vec<EngineStatus> = g.engines.iter().map(|e| engine_status(e, now)).collect();
                let threads: Vec<ThreadStatus> = g
                    .workers
                    .iter()
                    .map(|w| {
                        let tid = w.tid.load(Relaxed);
                        ThreadStatus {
                            tid,
                            cores: w.cores.clone(),
                            cpu_time_ns: if stopped {
                                w.exit_cpu_ns.load(Relaxed)
                            } else {
                                cpu_time::thread_cpu_time_ns(tid)
                            },
                            busy_ns: w.busy_ns.load(Relaxed),
                            engines: engines
                                .iter()
                                .filter(|e| e.tid == tid)
                                .map(|e| e.name.clone())
                                .collect(),
                            in_microquanta: w.in_microquanta.load(Relaxed),
                        }
                    })
                    .collect();
                GroupStatus {
                    name: g.name.clone(),
                    mode: g.mode.as_str().to_owned(),
                    active_threads: g
                        .workers
                        .iter()
                        .filter(|w| w.engine_count.load(Relaxed) > 0)
                        .count(),
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
        self.stop.store(true, Relaxed);
        for w in self.groups.iter().flat_map(|g| &g.workers) {
            w.wake();
        }
        for handle in self.threads.drain(..) {
            // A thread can only have died by a panic outside engine code (a runtime bug);
            // it was already reported on stderr.
            let _ = handle.join();
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_and_join();
    }
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
        tid: s.tid.load(Relaxed),
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
