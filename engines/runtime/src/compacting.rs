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
//! over wall time). After any move we wait `settle` so that its effect shows in the samples
//! before deciding again: that, and the gap between [`FULL`] and [`PACK`], keeps the set of
//! cores from oscillating.
//!
//! A move is a message to the engine's thread, which hands the engine on when it next looks
//! at its mailbox, possibly a step or a preemption later. While any engine is not yet on the
//! thread it was sent to ([`Sample::moving`]) we decide nothing, and the settle time counts
//! from its arrival: a second move sent before the first arrived could reach the target
//! thread ahead of the engine, find nothing to release, and leave the engine somewhere other
//! than where we believe it is.

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
    last_move_ns: u64,
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
            last_move_ns: 0,
            last_pressure_ns: 0,
        }
    }

    /// A new engine (index = the current count), added at run time: its load starts at
    /// zero and is learnt like the others'.
    pub fn add_engine(&mut self) {
        self.load.push(0.0);
        self.last_busy_ns.push(0);
    }

    /// Engine `i` was removed at run time: the engines after it shift down by one, as in
    /// the samples from now on. The others keep their learnt loads.
    pub fn remove_engine(&mut self, i: usize) {
        self.load.remove(i);
        self.last_busy_ns.remove(i);
    }

    fn settle_ns(&self) -> u64 {
        (self.params.poll_interval * 20)
            .max(Duration::from_millis(1))
            .as_nanos() as u64
    }

    /// Takes one poll's samples (`samples[i]` is engine `i`) and returns the moves to make.
    pub fn poll(&mut self, now_ns: u64, samples: &[Sample]) -> Vec<Move> {
        self.update_loads(now_ns, samples);
        let target_ns = self.params.max_queueing_delay.as_nanos() as u64;
        if samples.iter().any(|s| s.delay_ns > target_ns / 2) {
            self.last_pressure_ns = now_ns;
        }
        if samples.iter().any(|s| s.moving) {
            self.last_move_ns = now_ns;
            return Vec::new();
        }
        if now_ns.saturating_sub(self.last_move_ns) < self.settle_ns() {
            return Vec::new();
        }
        let thread_load = self.thread_loads(samples);
        let moves = self
            .grow(samples, &thread_load, target_ns)
            .map(|m| vec![m])
            .unwrap_or_else(|| self.shrink(now_ns, samples, &thread_load));
        if !moves.is_empty() {
            self.last_move_ns = now_ns;
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

    fn grow(&self, samples: &[Sample], threads: &[(usize, f64)], target_ns: u64) -> Option<Move> {
        let (engine, sample) = samples
            .iter()
            .enumerate()
            .filter(|(_, s)| s.delay_ns > target_ns && threads[s.thread].0 > 1)
            .max_by_key(|(_, s)| s.delay_ns)?;
        let need = self.load[engine];
        let best_active = threads
            .iter()
            .enumerate()
            .filter(|&(t, &(count, load))| t != sample.thread && count > 0 && load + need < FULL)
            .min_by(|a, b| a.1 .1.total_cmp(&b.1 .1))
            .map(|(t, _)| t);
        let parked = threads.iter().position(|&(count, _)| count == 0);
        best_active.or(parked).map(|to| Move { engine, to })
    }

    fn shrink(&self, now_ns: u64, samples: &[Sample], threads: &[(usize, f64)]) -> Vec<Move> {
        if now_ns.saturating_sub(self.last_pressure_ns) < self.params.shrink_after.as_nanos() as u64 {
            return Vec::new();
        }
        let mut active: Vec<(usize, f64)> = threads
            .iter()
            .enumerate()
            .filter(|(_, &(count, _))| count > 0)
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
    fn decides_nothing_until_a_moving_engine_arrives_then_settles_from_there() {
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
}
