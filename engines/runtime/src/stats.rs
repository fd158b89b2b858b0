//! Per-engine counters, written by the thread that runs the engine and read by the monitor
//! and the control plane. All relaxed atomics: they are statistics, never synchronisation.
//!
//! Times are nanoseconds since the runtime's epoch ([`Clock`]), so that one `u64` can say
//! "not running" (0) or "running since t".

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The runtime's time base.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    epoch: Instant,
}

impl Clock {
    pub fn new() -> Self {
        // Start one nanosecond before "now" so that no real timestamp is 0 (0 means "unset").
        Self {
            epoch: Instant::now() - Duration::from_nanos(1),
        }
    }

    pub fn ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    pub fn now_ns(&self) -> u64 {
        self.ns(Instant::now())
    }
}

/// Counters of one engine.
#[derive(Debug, Default)]
pub(crate) struct EngineStats {
    pub runs: AtomicU64,
    pub items: AtomicU64,
    /// Time inside `run()` steps that made progress (idle polls are not busy).
    pub busy_ns: AtomicU64,
    /// Times the engine's thread woke from blocking because of this engine's interrupts.
    pub wakeups: AtomicU64,
    pub control_ops: AtomicU64,
    /// Start of the `run()` in progress, 0 when not inside `run()`.
    pub running_since_ns: AtomicU64,
    pub last_run_end_ns: AtomicU64,
    /// Thread now hosting the engine (0 while moving between threads).
    pub tid: AtomicI32,
    /// Latest queueing delay sample and the largest seen, from the monitor.
    pub queueing_delay_ns: AtomicU64,
    pub max_queueing_delay_ns: AtomicU64,
    /// Times the engine moved between threads (compacting).
    pub migrations: AtomicU64,
    pub health: Mutex<Health>,
}

/// Whether the engine is working, as far as the runtime can tell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Health {
    #[default]
    Ok,
    /// Inside one `run()` for longer than the runtime's `stuck_after`: it spins or blocks.
    Stuck { since_ns: u64 },
    /// `run()` or a control operation panicked; the engine was removed from its thread.
    Failed { reason: String },
}

impl EngineStats {
    pub fn health(&self) -> Health {
        self.health.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_health(&self, health: Health) {
        *self.health.lock().unwrap_or_else(|e| e.into_inner()) = health;
    }

    /// Sets `to` only if the current health satisfies `from`, atomically: the monitor's
    /// stuck/recovered flags must never overwrite a failure the engine's thread just set.
    pub fn transition(&self, from: impl FnOnce(&Health) -> bool, to: Health) -> bool {
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let ok = from(&health);
        if ok {
            *health = to;
        }
        ok
    }

    pub fn record_run(&self, start_ns: u64, end_ns: u64, items: u32) {
        self.runs.fetch_add(1, Relaxed);
        if items > 0 {
            self.items.fetch_add(u64::from(items), Relaxed);
            self.busy_ns.fetch_add(end_ns.saturating_sub(start_ns), Relaxed);
        }
        self.last_run_end_ns.store(end_ns, Relaxed);
    }
}
