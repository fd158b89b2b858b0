//! An engine thread: runs the engines placed on it, one bounded `run()` step at a time, and
//! when none has work either spins (dedicated cores) or arms the doorbells and blocks in
//! `epoll_wait` (spreading and compacting).
//!
//! The thread owns its engines outright (`Box<dyn Engine>` in a local `Vec`), which is what
//! guarantees an engine never runs on two threads at once: moving an engine (compacting) is a
//! [`Command::Release`] that the owning thread carries out between two steps, handing the box
//! to the target thread with [`Command::Adopt`]. Control operations from the mailbox run here
//! too, between steps. A panic in `run()` or in a control operation is caught: the engine is
//! marked failed and dropped, the thread and its other engines go on.

use std::os::fd::{AsFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::buffer::spare_capacity;
use rustix::event::epoll::{self, EventData, EventFlags};
use rustix::event::{eventfd, EventfdFlags};

use crate::engine::{Engine, WakeSource, WorkProbe};
use crate::mailbox::Mailbox;
use crate::placement;
use crate::stats::{Clock, EngineStats, Health};

/// Epoll key of the thread's own command eventfd; engine keys are their ids.
const CONTROL_KEY: u64 = u64::MAX;

/// The parts of an engine that other threads may see.
#[derive(Debug)]
pub(crate) struct EngineShared {
    pub id: usize,
    pub name: String,
    pub mailbox: Mailbox,
    pub stats: EngineStats,
    pub probe: WorkProbe,
    /// Quarantine and backpressure counters of an app-facing engine.
    pub ledger: Option<Arc<crate::app_facing::ChannelLedger>>,
    /// Set by the control plane to remove the engine: the owning thread drops the engine
    /// after the mailbox operation that follows, then signals here.
    pub retire: Mutex<Option<mpsc::Sender<()>>>,
}

/// An engine and its shared parts, as handed between threads.
pub(crate) struct Placed {
    pub shared: Arc<EngineShared>,
    pub engine: Box<dyn Engine>,
}

/// What a thread does when none of its engines has work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idle {
    /// Poll again at once (dedicated cores): lowest latency, burns the core.
    Spin,
    /// Keep polling for `poll` after the last step that had work, then arm doorbells and
    /// block until an interrupt (spreading, compacting).
    Block { poll: Duration },
}

pub(crate) enum Command {
    Adopt(Placed),
    /// Hand engine `engine` to `to` at the next step boundary.
    Release {
        engine: usize,
        to: Arc<WorkerShared>,
    },
}

/// A thread's mailbox for commands, and what it reports about itself.
#[derive(Debug)]
pub(crate) struct WorkerShared {
    /// CPUs the thread may run on (one for dedicated and compacting, any number for
    /// spreading; empty means no restriction).
    pub cores: Vec<usize>,
    pub tid: AtomicI32,
    pub in_microquanta: AtomicBool,
    pub engine_count: AtomicUsize,
    pub busy_ns: AtomicU64,
    /// The thread's own CPU time when it exited (its `/proc` entry is gone by then).
    pub exit_cpu_ns: AtomicU64,
    /// Tells the thread to exit at its next round (the runtime stops, or its group or its
    /// last engine is removed); its remaining engines are dropped with it.
    pub stop: AtomicBool,
    commands: Mutex<Vec<Command>>,
    has_commands: AtomicBool,
    wake: OwnedFd,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Adopt(p) => write!(f, "Adopt({})", p.shared.name),
            Self::Release { engine, .. } => write!(f, "Release({engine})"),
        }
    }
}

impl WorkerShared {
    pub fn new(cores: Vec<usize>) -> rustix::io::Result<Self> {
        Ok(Self {
            cores,
            tid: AtomicI32::new(0),
            in_microquanta: AtomicBool::new(false),
            engine_count: AtomicUsize::new(0),
            busy_ns: AtomicU64::new(0),
            exit_cpu_ns: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            commands: Mutex::new(Vec::new()),
            has_commands: AtomicBool::new(false),
            wake: eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?,
        })
    }

    pub fn send(&self, cmd: Command) {
        self.commands.lock().unwrap_or_else(|e| e.into_inner()).push(cmd);
        self.has_commands.store(true, Release);
        self.wake();
    }

    /// Stops the thread at its next round, waking it if it is blocked.
    pub fn stop(&self) {
        self.stop.store(true, Relaxed);
        self.wake();
    }

    /// Wakes the thread if it is blocked (shutdown, commands).
    pub fn wake(&self) {
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
    }

    fn take_commands(&self) -> Vec<Command> {
        if !self.has_commands.load(Acquire) {
            return Vec::new();
        }
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.wake, &mut buf);
        self.has_commands.store(false, Relaxed);
        std::mem::take(&mut *self.commands.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Everything a thread needs to start.
pub(crate) struct WorkerSetup {
    pub name: String,
    pub shared: Arc<WorkerShared>,
    pub idle: Idle,
    pub clock: Clock,
    /// Join the MicroQuanta class if the scheduler is loaded.
    pub microquanta: bool,
    /// The class group to join (`None`: the default group).
    pub class_group: Option<String>,
    pub initial: Vec<Placed>,
}

/// Starts the thread and waits until it is pinned (and in the class, if asked): a core that
/// cannot be used is an error at start, not a silent fallback.
pub(crate) fn spawn(setup: WorkerSetup) -> Result<JoinHandle<()>, String> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name(setup.name.clone())
        .spawn(move || thread_main(setup, ready_tx))
        .map_err(|e| format!("cannot start thread: {e}"))?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(e)
        }
        Err(_) => Err("engine thread died during start-up".into()),
    }
}

/// One engine on this thread.
struct Slot {
    placed: Placed,
    sources: Vec<WakeSource>,
}

struct Worker {
    setup_shared: Arc<WorkerShared>,
    clock: Clock,
    epoll: OwnedFd,
    slots: Vec<Slot>,
    tid: i32,
}

fn thread_main(setup: WorkerSetup, ready: mpsc::Sender<Result<(), String>>) {
    let tid = rustix::thread::gettid().as_raw_nonzero().get();
    setup.shared.tid.store(tid, Relaxed);
    if !setup.shared.cores.is_empty() {
        if let Err(e) = placement::restrict_to(&setup.shared.cores) {
            let cores = &setup.shared.cores;
            let _ = ready.send(Err(format!("cannot put {} on cores {cores:?}: {e}", setup.name)));
            return;
        }
    }
    if setup.microquanta {
        let joined = placement::join_microquanta(tid as u32, setup.class_group.as_deref());
        setup.shared.in_microquanta.store(joined, Relaxed);
    }
    let epoll = match epoll::create(epoll::CreateFlags::CLOEXEC) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = ready.send(Err(format!("epoll_create: {e}")));
            return;
        }
    };
    if let Err(e) = epoll::add(
        &epoll,
        &setup.shared.wake,
        EventData::new_u64(CONTROL_KEY),
        EventFlags::IN,
    ) {
        let _ = ready.send(Err(format!("epoll_ctl: {e}")));
        return;
    }
    let mut worker = Worker {
        setup_shared: setup.shared.clone(),
        clock: setup.clock,
        epoll,
        slots: Vec::new(),
        tid,
    };
    for placed in setup.initial {
        worker.adopt(placed);
    }
    let _ = ready.send(Ok(()));
    worker.run_loop(setup.idle, &setup.shared.stop);
    for slot in worker.slots.drain(..) {
        slot.placed.shared.mailbox.close();
        slot.placed.shared.stats.tid.store(0, Relaxed);
    }
    worker.setup_shared.engine_count.store(0, Relaxed);
    let cpu = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    let cpu_ns = cpu.tv_sec as u64 * 1_000_000_000 + cpu.tv_nsec as u64;
    worker.setup_shared.exit_cpu_ns.store(cpu_ns, Relaxed);
}

impl Worker {
    fn run_loop(&mut self, idle: Idle, stop: &AtomicBool) {
        let mut events = Vec::with_capacity(64);
        // When the engines last had work, while polling before blocking.
        let mut idle_since: Option<Instant> = None;
        while !stop.load(Relaxed) {
            for cmd in self.setup_shared.take_commands() {
                self.handle(cmd);
            }
            let (progressed, pending) = self.step_all();
            if progressed || pending {
                idle_since = None;
                continue;
            }
            match idle {
                Idle::Spin => std::hint::spin_loop(),
                Idle::Block { poll } => {
                    // The poll window: a reply that comes back within it (the other half
                    // of a round trip) costs no epoll wakeup and no context switch. The
                    // window restarts after every step with work, and blocking itself is
                    // unchanged (arm, probe, wait), so no wakeup can be lost.
                    if !poll.is_zero() {
                        let since = *idle_since.get_or_insert_with(Instant::now);
                        if since.elapsed() < poll {
                            std::hint::spin_loop();
                            continue;
                        }
                    }
                    idle_since = None;
                    self.block(stop, &mut events);
                }
            }
        }
    }

    /// One round over every engine: mailbox first, then one `run()` step.
    fn step_all(&mut self) -> (bool, bool) {
        let (mut progressed, mut pending) = (false, false);
        let mut busy = 0;
        let mut i = 0;
        while i < self.slots.len() {
            // Borrowed, not cloned: no reference-count traffic on every step of every engine.
            let Placed { shared, engine } = &mut self.slots[i].placed;
            if let Some(op) = shared.mailbox.take() {
                // Counted before it runs: its poster may read status as soon as it replies.
                shared.stats.control_ops.fetch_add(1, Relaxed);
                let engine = &mut **engine;
                let result = panic::catch_unwind(AssertUnwindSafe(|| op(engine)));
                if let Err(payload) = result {
                    self.fail(
                        i,
                        format!("control operation panicked: {}", panic_message(&*payload)),
                    );
                    continue;
                }
                progressed = true;
                let retire = shared.retire.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(done) = retire {
                    // Removed by the control plane: dropped here, on its own thread, like a
                    // failed engine (its apps' channels lose their host side).
                    let slot = self.remove(i);
                    slot.placed.shared.mailbox.close();
                    drop(slot);
                    let _ = done.send(());
                    continue;
                }
                // The operation may have attached or detached an interrupt source.
                self.reregister(i);
            }
            let Placed { shared, engine } = &mut self.slots[i].placed;
            let start = Instant::now();
            let start_ns = self.clock.ns(start);
            shared.stats.running_since_ns.store(start_ns, Relaxed);
            let engine = &mut **engine;
            let result = panic::catch_unwind(AssertUnwindSafe(|| engine.run(start)));
            let end_ns = self.clock.now_ns();
            shared.stats.running_since_ns.store(0, Relaxed);
            match result {
                Ok(outcome) => {
                    shared.stats.record_run(start_ns, end_ns, outcome.items);
                    if outcome.progressed() {
                        busy += end_ns - start_ns;
                        progressed = true;
                    }
                    pending |= outcome.pending;
                    // The step dropped or added an interrupt source (e.g. a quarantined
                    // session's doorbell): stop watching what it no longer has.
                    if engine.take_sources_changed() {
                        self.reregister(i);
                    }
                    i += 1;
                }
                Err(payload) => {
                    self.fail(i, format!("run() panicked: {}", panic_message(&*payload)));
                }
            }
        }
        if busy > 0 {
            self.setup_shared.busy_ns.fetch_add(busy, Relaxed);
        }
        (progressed, pending)
    }

    /// Arms every doorbell, checks once more for work (closing the race with producers, see
    /// `doorbell`), and blocks until an interrupt, a command or shutdown.
    fn block(&mut self, stop: &AtomicBool, events: &mut Vec<epoll::Event>) {
        for slot in &self.slots {
            for source in &slot.sources {
                if let WakeSource::Doorbell(bell) = source {
                    bell.arm();
                }
            }
        }
        let work_waiting = self.slots.iter().any(|s| s.placed.shared.probe.has_work());
        // Engines with timers (retransmissions) must run by their deadline without an
        // interrupt: wait at most until the earliest.
        let deadline = self.slots.iter().filter_map(|s| s.placed.engine.poll_at()).min();
        let timeout = deadline.map(|d| {
            let left = d.saturating_duration_since(Instant::now());
            rustix::time::Timespec {
                tv_sec: left.as_secs() as i64,
                tv_nsec: i64::from(left.subsec_nanos()),
            }
        });
        let due = timeout.is_some_and(|t| t.tv_sec == 0 && t.tv_nsec == 0);
        if !work_waiting && !due && !stop.load(Relaxed) {
            events.clear();
            // EINTR (a signal for the process landed on this thread) just means "go round".
            let _ = epoll::wait(&self.epoll, spare_capacity(&mut *events), timeout.as_ref());
        }
        for slot in &self.slots {
            for source in &slot.sources {
                if let WakeSource::Doorbell(bell) = source {
                    bell.disarm();
                }
            }
        }
        for event in events.drain(..) {
            let key = event.data.u64();
            if key == CONTROL_KEY {
                continue;
            }
            if let Some(slot) = self.slots.iter().find(|s| s.placed.shared.id as u64 == key) {
                slot.placed.shared.stats.wakeups.fetch_add(1, Relaxed);
                for source in &slot.sources {
                    if let WakeSource::Doorbell(bell) = source {
                        bell.drain();
                    }
                }
            }
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Adopt(placed) => self.adopt(placed),
            Command::Release { engine, to } => {
                let Some(i) = self.slots.iter().position(|s| s.placed.shared.id == engine) else {
                    return; // failed or removed in the meantime
                };
                // Counted before `remove()` clears the engine's thread (a Release store),
                // so that a status that sees the engine off this thread sees the move.
                self.slots[i].placed.shared.stats.migrations.fetch_add(1, Relaxed);
                let slot = self.remove(i);
                to.send(Command::Adopt(slot.placed));
            }
        }
    }

    fn adopt(&mut self, placed: Placed) {
        placed.shared.stats.tid.store(self.tid, Release);
        let key = EventData::new_u64(placed.shared.id as u64);
        let _ = epoll::add(&self.epoll, placed.shared.mailbox.wake_fd(), key, EventFlags::IN);
        self.slots.push(Slot {
            placed,
            sources: Vec::new(),
        });
        self.reregister(self.slots.len() - 1);
        self.setup_shared.engine_count.store(self.slots.len(), Relaxed);
    }

    fn remove(&mut self, i: usize) -> Slot {
        let slot = self.slots.remove(i);
        for source in &slot.sources {
            let _ = epoll::delete(&self.epoll, source_fd(source));
        }
        let _ = epoll::delete(&self.epoll, slot.placed.shared.mailbox.wake_fd());
        slot.placed.shared.stats.tid.store(0, Release);
        self.setup_shared.engine_count.store(self.slots.len(), Relaxed);
        slot
    }

    /// Replaces the epoll registrations of slot `i` with its engine's current sources.
    fn reregister(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        for source in slot.sources.drain(..) {
            let _ = epoll::delete(&self.epoll, source_fd(&source));
        }
        slot.sources = slot.placed.engine.wake_sources();
        let key = EventData::new_u64(slot.placed.shared.id as u64);
        for source in &slot.sources {
            // Level-triggered: a NIC queue the engine did not drain keeps waking the thread.
            if let Err(e) = epoll::add(&self.epoll, source_fd(source), key, EventFlags::IN) {
                log::warn!("engine {}: cannot watch {source:?}: {e}", slot.placed.shared.name);
            }
        }
    }

    fn fail(&mut self, i: usize, reason: String) {
        let slot = self.remove(i);
        let shared = &slot.placed.shared;
        log::error!("engine {} failed and was stopped: {reason}", shared.name);
        shared.stats.set_health(Health::Failed { reason });
        shared.mailbox.close();
    }
}

fn source_fd(source: &WakeSource) -> std::os::fd::BorrowedFd<'_> {
    match source {
        WakeSource::Doorbell(bell) => bell.eventfd(),
        WakeSource::Readable(fd) => fd.as_fd(),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
