//! The runtime's monitor thread: every poll interval it samples each engine's queueing
//! delay, flags engines stuck inside `run()`, and drives the compacting rebalancer.
//!
//! Queueing delay is measured from outside, without timestamps in the rings: an engine that
//! has input waiting ([`crate::engine::WorkProbe`]) and is not inside `run()` is waiting for
//! its thread. The delay is the time since we first saw it waiting after its last step ended,
//! so its resolution is the poll interval (Snap polls every few tens of µs for the same
//! reason).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::compacting::{Rebalancer, Sample};
use crate::stats::{Clock, Health};
use crate::worker::{Command, EngineShared, WorkerShared};

/// A compacting group's rebalancer and where it has put each engine.
pub(crate) struct Compacting {
    /// How often this group wants to be sampled.
    pub poll_interval: Duration,
    pub rebalancer: Rebalancer,
    pub assignment: Vec<usize>,
    /// This poll's samples for the rebalancer; kept so that polling does not allocate.
    pub samples: Vec<Sample>,
}

/// What the monitor watches of one group.
pub(crate) struct WatchedGroup {
    pub name: String,
    pub engines: Vec<Arc<EngineShared>>,
    pub workers: Vec<Arc<WorkerShared>>,
    pub compacting: Option<Compacting>,
    /// The MicroQuanta class group its threads join (`None`: the default group).
    pub class_group: Option<String>,
    /// Per engine: when we first saw it waiting since its last step (ns), if it is waiting.
    pub waiting_since: Vec<Option<u64>>,
}

/// The groups the monitor watches: the runtime's control plane adds and removes groups and
/// engines here while the monitor runs (it holds the lock for one poll round).
pub(crate) type Watched = Arc<Mutex<Vec<WatchedGroup>>>;

/// Sampling interval when no compacting group asks for a shorter one.
const DEFAULT_INTERVAL: Duration = Duration::from_millis(1);

pub(crate) struct Monitor {
    pub groups: Watched,
    pub clock: Clock,
    pub stop: Arc<AtomicBool>,
    pub stuck_after: Duration,
    /// Join the MicroQuanta class once a compacting group exists (the rebalancer polls
    /// every few tens of µs; under load it needs the class as much as the engines do), in
    /// the class group of the first compacting group (the one it starts working for).
    pub microquanta: bool,
}

impl Monitor {
    pub fn run(self) {
        let mut in_class = false;
        let mut interval = DEFAULT_INTERVAL;
        while !self.stop.load(Relaxed) {
            std::thread::sleep(interval);
            let now = self.clock.now_ns();
            let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
            interval = DEFAULT_INTERVAL;
            for group in groups.iter_mut() {
                poll_group(group, now, self.stuck_after.as_nanos() as u64);
                if let Some(c) = &group.compacting {
                    interval = interval.min(c.poll_interval);
                }
            }
            let compacting = groups
                .iter()
                .find(|g| g.compacting.is_some())
                .map(|g| g.class_group.clone());
            drop(groups);
            if let Some(class_group) = compacting.filter(|_| self.microquanta && !in_class) {
                in_class = true;
                let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
                crate::placement::join_microquanta(tid, class_group.as_deref());
            }
        }
    }
}

fn poll_group(group: &mut WatchedGroup, now: u64, stuck_after_ns: u64) {
    if let Some(compacting) = &mut group.compacting {
        compacting.samples.clear();
    }
    for (i, engine) in group.engines.iter().enumerate() {
        let stats = &engine.stats;
        let running_since = stats.running_since_ns.load(Relaxed);
        check_stuck(engine, running_since, now, stuck_after_ns);
        let delay = if running_since != 0 || !engine.probe.has_work() {
            group.waiting_since[i] = None;
            0
        } else {
            let last_end = stats.last_run_end_ns.load(Relaxed);
            let since = match group.waiting_since[i] {
                Some(seen) if seen >= last_end => seen,
                _ => now,
            };
            group.waiting_since[i] = Some(since);
            now - since
        };
        stats.queueing_delay_ns.store(delay, Relaxed);
        stats.max_queueing_delay_ns.fetch_max(delay, Relaxed);
        // Only the rebalancer uses samples: other modes just get the delay stored above.
        if let Some(compacting) = &mut group.compacting {
            let thread = compacting.assignment[i];
            let on = stats.tid.load(Relaxed);
            // A failed engine was dropped by its thread and will arrive nowhere.
            let failed = matches!(stats.health(), Health::Failed { .. });
            compacting.samples.push(Sample {
                thread,
                delay_ns: delay,
                busy_ns: stats.busy_ns.load(Relaxed),
                moving: !failed && on != group.workers[thread].tid.load(Relaxed),
            });
        }
    }
    if let Some(compacting) = &mut group.compacting {
        for m in compacting.rebalancer.poll(now, &compacting.samples) {
            let from = compacting.assignment[m.engine];
            let engine = &group.engines[m.engine];
            log::debug!(
                "compacting: moving {} from thread {from} to {}",
                engine.name,
                m.to
            );
            group.workers[from].send(Command::Release {
                engine: engine.id,
                to: group.workers[m.to].clone(),
            });
            compacting.assignment[m.engine] = m.to;
        }
    }
}

/// Flags an engine inside one `run()` for longer than `stuck_after_ns`, and clears the flag
/// when it returns. A failed engine keeps its failure.
fn check_stuck(engine: &EngineShared, running_since: u64, now: u64, stuck_after_ns: u64) {
    let in_run = if running_since == 0 {
        0
    } else {
        now.saturating_sub(running_since)
    };
    match engine.stats.health() {
        Health::Ok if in_run > stuck_after_ns => {
            let flagged = engine.stats.transition(
                |h| *h == Health::Ok,
                Health::Stuck {
                    since_ns: running_since,
                },
            );
            if flagged {
                log::error!(
                    "engine {} has been inside one run() step for {} ms (spinning or blocked); \
                     the other engines on its thread are starved until it returns",
                    engine.name,
                    in_run / 1_000_000
                );
            }
        }
        Health::Stuck { since_ns } if running_since != since_ns => {
            let stuck = |h: &Health| matches!(h, Health::Stuck { since_ns: s } if *s == since_ns);
            if engine.stats.transition(stuck, Health::Ok) {
                log::warn!("engine {} returned from its stuck run() step", engine.name);
            }
        }
        _ => {}
    }
}
