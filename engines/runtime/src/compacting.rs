//! The compacting rebalancer's decisions, kept free of threads and clocks (time and samples
//! are passed in) so that its behaviour is tested deterministically.
//!
//! Snap's compacting mode packs engines onto as few cores as possible while every engine's
//! queueing delay stays under a target. Each poll the monitor hands us, per engine, the
//! thread it is on, its current queueing delay and its cumulative busy time; we answer with
//! moves:
//!
//! - **Grow.** An engine whose delay exceeds the target while sharing its thread is moved to
//!   the least-loaded other active thread if the engine's load fits there (total below
//!   [`FULL`]), else to a parked thread (one more core). An engine alone on its thread has
//!   nowhere better to go.
//! - **Shrink.** When no engine has been above half the target for `shrink_after`, the
//!   least-loaded thread is emptied onto the next least-loaded one if both together stay
//!   below [`PACK`]: one core fewer.
//!
//! Loads are exponentially weighted busy fractions (time in `run()` steps that made progress
//! over wall time). The two threads of a move take part in no other move for a settle time,
//! so that its effect shows in their samples first: that, and the gap between [`FULL`] and
//! [`PACK`], keeps the set of cores from oscillating.
//!
//! A move is a message to the engine's thread, which hands the engine on when it next looks
//! at its mailbox, possibly a step or a preemption later. Until the engine is on the thread it
//! was sent to ([`Sample::moving`]), neither thread takes part in another move, and their
//! settle time counts from the arrival. A second move sent earlier could reach the target
//! thread ahead of the engine, find nothing to release, and leave the engine somewhere other
//! than where we believe it is. The group's other threads go on being balanced, so an engine
//! stuck inside one step holds up only its own thread and the one its thread-mate was sent to.

use std::time::Duration;

/// A thread is considered full above this load when choosing where to grow.
pub const FULL: f64 = 0.8;
/// Two threads are merged only when their loads sum below this.
pub const PACK: f64 = 0.6;

/// The rebalancer's knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompactingParams {
    /// How often the rebalancer samples queueing delay (Snap: tens of µs).
    pub poll_interval: Duration,
    /// Queueing delay above which engines are spread over more cores.
    pub max_queueing_delay: Duration,
    /// Calm time before a core is given back.
    pub shrink_after: Duration,
}

impl Default for CompactingParams {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_micros(50),
            max_queueing_delay: Duration::from_micros(200),
            shrink_after: Duration::from_millis(50),
        }
    }
}

/// One engine as the monitor saw it at this poll.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Thread (index in the group) the engine is assigned to.
    pub thread: usize,
    /// Current queueing delay.
    pub delay_ns: u64,
    /// Cumulative busy time.
    pub busy_ns: u64,
    /// The engine is not yet on `thread`: a move (or its adding) is under way.
    pub moving: bool,
}

/// Move engine `engine` (index in the group) to thread `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    /// Engine index.
    pub engine: usize,
    /// Target thread index.
    pub to: usize,
}

/// Rebalancer state for one compacting group.
#[derive(Debug)]
pub struct Rebalancer {
    params: CompactingParams,
    threads: usize,
    load: Vec<f64>,
    last_busy_ns: Vec<u64>,
    last_poll_ns: Option<u64>,
    /// Per engine: the thread it was last moved from (`None`: never moved, or added).
    moved_from: Vec<Option<usize>>,
    /// Per thread: when it last took part in a move, or had one under way.
    last_move_ns: Vec<u64>,
    last_pressure_ns: u64,
}

impl Rebalancer {
    /// A rebalancer over `threads` threads (one per core) and `engines` engines.
    pub fn new(params: CompactingParams, threads: usize, engines: usize) -> Self {
        Self {
            params,
            threads,
            load: vec![0.0; engines],
            last_busy_ns: vec![0; engines],
            last_poll_ns: None,
            moved_from: vec![None; engines],
            last_move_ns: vec![0; threads],
            last_pressure_ns: 0,
        }
    }

    /// A new engine (index = the current count), added at run time: its load starts at
    /// zero and is learnt like the others'.
    pub fn add_engine(&mut self) {
        self.load.push(0.0);
        self.last_busy_ns.push(0);
        self.moved_from.push(None);
    }

    /// Engine `i` was removed at run time: the engines after it shift down by one, as in
    /// the samples from now on. The others keep their learnt loads.
    pub fn remove_engine(&mut self, i: usize) {
        self.load.remove(i);
        self.last_busy_ns.remove(i);
        self.moved_from.remove(i);
    }

    fn settle_ns(&self) -> u64 {
        (self.params.poll_interval * 20)
            .max(Duration::from_millis(1))
            .as_nanos() as u64
    }

    /// Thread `t` may take part in a move: none has touched it for a settle time.
    fn settled(&self, t: usize, now_ns: u64) -> bool {
        now_ns.saturating_sub(self.last_move_ns[t]) >= self.settle_ns()
    }

    /// Takes one poll's samples (`samples[i]` is engine `i`) and returns the moves to make.
    pub fn poll(&mut self, now_ns: u64, samples: &[Sample]) -> Vec<Move> {
        self.update_loads(now_ns, samples);
        let target_ns = self.params.max_queueing_delay.as_nanos() as u64;
        if samples.iter().any(|s| s.delay_ns > target_ns / 2) {
            self.last_pressure_ns = now_ns;
        }
        for (i, s) in samples.iter().enumerate().filter(|(_, s)| s.moving) {
            self.last_move_ns[s.thread] = now_ns;
            if let Some(from) = self.moved_from[i] {
                self.last_move_ns[from] = now_ns;
            }
        }
        let thread_load = self.thread_loads(samples);
        let moves = self
            .grow(now_ns, samples, &thread_load, target_ns)
            .map(|m| vec![m])
            .unwrap_or_else(|| self.shrink(now_ns, samples, &thread_load));
        for m in &moves {
            let from = samples[m.engine].thread;
            self.moved_from[m.engine] = Some(from);
            self.last_move_ns[from] = now_ns;
            self.last_move_ns[m.to] = now_ns;
            // A shrink must wait for a whole calm window again; so must one after a grow.
            self.last_pressure_ns = now_ns;
        }
        moves
    }

    fn update_loads(&mut self, now_ns: u64, samples: &[Sample]) {
        let Some(last) = self.last_poll_ns.replace(now_ns) else {
            for (i, s) in samples.iter().enumerate() {
                self.last_busy_ns[i] = s.busy_ns;
            }
            return;
        };
        let dt = now_ns.saturating_sub(last).max(1) as f64;
        // Time constant: a quarter of the calm window, so a shrink sees settled loads.
        let tau = (self.params.shrink_after.as_nanos() as f64 / 4.0).max(dt);
        let alpha = dt / (dt + tau);
        for (i, s) in samples.iter().enumerate() {
            let busy = s.busy_ns.saturating_sub(self.last_busy_ns[i]) as f64;
            self.last_busy_ns[i] = s.busy_ns;
            let instant = (busy / dt).min(1.0);
            self.load[i] += alpha * (instant - self.load[i]);
        }
    }

    fn thread_loads(&self, samples: &[Sample]) -> Vec<(usize, f64)> {
        let mut per_thread = vec![(0usize, 0.0f64); self.threads];
        for (i, s) in samples.iter().enumerate() {
            per_thread[s.thread].0 += 1;
            per_thread[s.thread].1 += self.load[i];
        }
        per_thread
    }

    fn grow(
        &self,
        now_ns: u64,
        samples: &[Sample],
        threads: &[(usize, f64)],
        target_ns: u64,
    ) -> Option<Move> {
        let (engine, sample) = samples
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.delay_ns > target_ns && threads[s.thread].0 > 1 && self.settled(s.thread, now_ns)
            })
            .max_by_key(|(_, s)| s.delay_ns)?;
        let need = self.load[engine];
        let best_active = threads
            .iter()
            .enumerate()
            .filter(|&(t, &(count, load))| {
                t != sample.thread && self.settled(t, now_ns) && count > 0 && load + need < FULL
            })
            .min_by(|a, b| a.1 .1.total_cmp(&b.1 .1))
            .map(|(t, _)| t);
        let parked = (0..threads.len()).find(|&t| self.settled(t, now_ns) && threads[t].0 == 0);
        best_active.or(parked).map(|to| Move { engine, to })
    }

    fn shrink(&self, now_ns: u64, samples: &[Sample], threads: &[(usize, f64)]) -> Vec<Move> {
        if now_ns.saturating_sub(self.last_pressure_ns) < self.params.shrink_after.as_nanos() as u64 {
            return Vec::new();
        }
        let mut active: Vec<(usize, f64)> = threads
            .iter()
            .enumerate()
            .filter(|&(t, &(count, _))| count > 0 && self.settled(t, now_ns))
            .map(|(t, &(_, load))| (t, load))
            .collect();
        if active.len() < 2 {
            return Vec::new();
        }
        active.sort_by(|a, b| a.1.total_cmp(&b.1));
        let (from, from_load) = active[0];
        let (to, to_load) = active[1];
        if from_load + to_load >= PACK {
            return Vec::new();
        }
        samples
            .iter()
            .enumerate()
            .filter(|(_, s)| s.thread == from)
            .map(|(engine, _)| Move { engine, to })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: u64 = 1_000;
    const MS: u64 = 1_000_000;

    fn params() -> CompactingParams {
        CompactingParams {
            poll_interval: Duration::from_micros(50),
            max_queueing_delay: Duration::from_micros(100),
            shrink_after: Duration::from_millis(10),
        }
    }

    /// Drives the rebalancer like the monitor would: engines on `assign`, each with a load
    /// fraction and a delay, applying its moves, for `ms` milliseconds of 50 µs polls.
    fn drive(r: &mut Rebalancer, t: &mut u64, assign: &mut [usize], load: &[f64], delay: &[u64], ms: u64) {
        let mut busy = vec![0u64; assign.len()];
        let end = *t + ms * MS;
        while *t < end {
            *t += 50 * US;
            for (b, l) in busy.iter_mut().zip(load) {
                *b += (50.0 * US as f64 * l) as u64;
            }
            let samples: Vec<Sample> = (0..assign.len())
                .map(|i| Sample {
                    thread: assign[i],
                    delay_ns: delay[i],
                    busy_ns: busy[i],
                    moving: false,
                })
                .collect();
            for m in r.poll(*t, &samples) {
                assign[m.engine] = m.to;
            }
        }
    }

    fn threads_used(assign: &[usize]) -> usize {
        let mut t = assign.to_vec();
        t.sort_unstable();
        t.dedup();
        t.len()
    }

    #[test]
    fn grows_onto_parked_threads_under_queueing_delay_then_stops_at_core_count() {
        let mut r = Rebalancer::new(params(), 2, 3);
        let mut assign = vec![0, 0, 0];
        let mut t = 0;
        drive(&mut r, &mut t, &mut assign, &[0.6, 0.6, 0.6], &[500 * US; 3], 20);
        assert_eq!(threads_used(&assign), 2, "{assign:?}");
    }

    #[test]
    fn no_growth_when_delay_is_under_target() {
        let mut r = Rebalancer::new(params(), 4, 3);
        let mut assign = vec![0, 0, 0];
        let mut t = 0;
        drive(&mut r, &mut t, &mut assign, &[0.2, 0.2, 0.2], &[20 * US; 3], 30);
        assert_eq!(assign, vec![0, 0, 0]);
    }

    #[test]
    fn shrinks_back_to_one_thread_when_idle() {
        let mut r = Rebalancer::new(params(), 4, 4);
        let mut assign = vec![0, 1, 2, 3];
        let mut t = 0;
        drive(&mut r, &mut t, &mut assign, &[0.05; 4], &[0; 4], 200);
        assert_eq!(threads_used(&assign), 1, "{assign:?}");
    }

    #[test]
    fn does_not_merge_busy_threads() {
        let mut r = Rebalancer::new(params(), 2, 2);
        let mut assign = vec![0, 1];
        let mut t = 0;
        drive(&mut r, &mut t, &mut assign, &[0.5, 0.5], &[0, 0], 200);
        assert_eq!(assign, vec![0, 1]);
    }

    #[test]
    fn lone_engine_over_target_stays_put() {
        let mut r = Rebalancer::new(params(), 2, 2);
        let mut assign = vec![0, 1];
        let mut t = 0;
        drive(&mut r, &mut t, &mut assign, &[1.0, 0.1], &[900 * US, 0], 20);
        assert_eq!(assign, vec![0, 1]);
    }

    #[test]
    fn moves_are_spaced_by_the_settle_time() {
        let mut r = Rebalancer::new(params(), 8, 8);
        let mut assign = vec![0; 8];
        let mut t = 0;
        // 1 ms of pressure allows at most one move per millisecond.
        drive(&mut r, &mut t, &mut assign, &[0.3; 8], &[900 * US; 8], 1);
        assert!(threads_used(&assign) <= 2, "{assign:?}");
    }

    #[test]
    fn a_move_holds_its_two_threads_until_the_engine_arrives_then_settles_from_there() {
        let mut r = Rebalancer::new(params(), 2, 3);
        let sample = |thread, moving| Sample {
            thread,
            delay_ns: 900 * US,
            busy_ns: 0,
            moving,
        };
        // Three engines on thread 0, all over target: the first poll moves one.
        let mut t = 10 * MS;
        let first = r.poll(t, &[sample(0, false), sample(0, false), sample(0, false)]);
        assert_eq!(first.len(), 1, "{first:?}");
        let moved = first[0].engine;
        let after = |moving: bool, t: &mut u64| {
            *t += 50 * US;
            let samples: Vec<Sample> = (0..3)
                .map(|i| {
                    if i == moved {
                        sample(1, moving)
                    } else {
                        sample(0, false)
                    }
                })
                .collect();
            samples
        };
        // Still under way long past the settle time: no decision.
        while t < 20 * MS {
            let samples = after(true, &mut t);
            assert!(
                r.poll(t, &samples).is_empty(),
                "moved again at {t} ns while moving"
            );
        }
        // Arrived: the settle time (1 ms here) starts now, not at the move.
        let arrived = t;
        let mut next = None;
        while next.is_none() {
            assert!(t < arrived + 20 * MS, "never moved again after the arrival");
            let samples = after(false, &mut t);
            next = r.poll(t, &samples).first().copied();
        }
        assert!(
            t - arrived >= MS,
            "moved {} µs after the arrival",
            (t - arrived) / US
        );
    }

    #[test]
    fn a_move_that_never_arrives_holds_only_its_own_two_threads() {
        // Engines 0 and 1 on thread 0, 2 on thread 1, 3 and 4 on thread 3; thread 2 parked.
        let mut r = Rebalancer::new(params(), 4, 5);
        let sample = |thread, delay_ns, moving| Sample {
            thread,
            delay_ns,
            busy_ns: 0,
            moving,
        };
        let mut t = 10 * MS;
        let first = r.poll(
            t,
            &[
                sample(0, 900 * US, false),
                sample(0, 0, false),
                sample(1, 0, false),
                sample(3, 0, false),
                sample(3, 0, false),
            ],
        );
        assert_eq!(first, vec![Move { engine: 0, to: 1 }]);
        // Engine 0 never arrives (its thread is stuck inside a step). Engines 1 and 3 are
        // now over target: 1 may not leave thread 0, 3 may leave thread 3.
        let mut moves = Vec::new();
        while t < 30 * MS {
            t += 50 * US;
            let samples = [
                sample(1, 0, true),
                sample(0, 900 * US, false),
                sample(1, 0, false),
                sample(3, 900 * US, false),
                sample(3, 0, false),
            ];
            moves.extend(r.poll(t, &samples));
            if !moves.is_empty() {
                break;
            }
        }
        assert_eq!(moves, vec![Move { engine: 3, to: 2 }]);
    }
}
