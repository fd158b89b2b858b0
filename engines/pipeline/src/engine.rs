//! [`StageEngine`]: a runtime [`Engine`] that runs one [`Stage`] between its upstream
//! queue and its downstream queue, or the NIC ([`Wire`]) for the last stage.
//!
//! One `run()` step, bounded by `batch` packets per direction:
//!
//! 1. push what the last step could not (its downstream was full);
//! 2. `stage.poll(now)`: held packets whose time came;
//! 3. Tx: pop from upstream while the stage accepts and downstream has room, `process`;
//! 4. Rx: pop from downstream (or receive from the NIC into pool buffers) while the stage
//!    accepts and upstream has room, `process`;
//! 5. push the forwarded packets and flush both queues (one doorbell ring per batch).
//!
//! The engine never pops a packet it has no room to forward, so a full downstream leaves
//! packets in the upstream ring: backpressure travels up to Pony's NIC side. While it is
//! blocked that way its work probe says "no work" (so a spreading or compacting thread
//! sleeps instead of spinning), and the consumer that frees space rings its doorbell. The
//! last stage also stops watching its NIC while it cannot take received packets (a
//! readable socket would wake its thread again and again) and watches it again once Pony
//! has made room.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use snap_runtime::{Engine, RunOutcome, WakeSource, WorkProbe};

use crate::packet::{Direction, Packet};
use crate::pool::Pool;
use crate::queue::{EndStats, QueueEnd};
use crate::stage::{DropCounts, Output, Stage, UpdateError};
use crate::wire::{Wire, WireError};

/// How soon a step retries a NIC that refused a packet (it has no "writable" wakeup here).
const WIRE_RETRY: Duration = Duration::from_micros(50);

/// What is below a stage.
pub enum Downstream {
    /// The next stage, through a queue (this engine holds the queue's upper end).
    Queue(QueueEnd),
    /// The NIC: this is the last stage.
    Wire(Box<dyn Wire>),
}

/// Counters the engine keeps for every stage (cumulative).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct StageCounters {
    /// Packets given to the stage travelling toward the NIC.
    pub tx_packets: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Packets given to the stage travelling toward Pony.
    pub rx_packets: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Packets the stage forwarded (both directions).
    pub forwarded: u64,
    /// Nanoseconds spent in steps that moved packets: the stage, its queues' pops and
    /// pushes, and the NIC calls of the last stage.
    pub ns: u64,
    /// Of `ns`, the time inside the NIC's own send and receive calls (last stage only):
    /// what Pony pays for its NIC without a pipeline too.
    pub wire_ns: u64,
    /// Packets the NIC refused for now (kept and retried).
    pub wire_full: u64,
    /// Packets lost because the NIC failed or the pool had no buffer for a received one.
    pub wire_errors: u64,
}

/// See the module documentation.
pub struct StageEngine {
    name: String,
    // Declared before the pool handles so that held packets are freed while it lives.
    stage: Box<dyn Stage>,
    up: QueueEnd,
    down: Downstream,
    pool: Arc<Pool>,
    batch: usize,
    tx_out: Vec<Packet>,
    rx_out: Vec<Packet>,
    spare: Vec<Packet>,
    counters: StageCounters,
    drops: DropCounts,
    retry_at: Option<Instant>,
    /// Set while the engine cannot take input in a direction (its output is full or the
    /// stage refuses): read by the work probe on the runtime's thread.
    blocked: Arc<[AtomicBool; 2]>,
    /// The last stage stopped watching its NIC: upstream is full or the stage takes no
    /// received packets, and a readable NIC (level-triggered) would wake its thread in a
    /// loop. Pony's next pop (the queue's space doorbell) or the stage's `poll_at` wakes it.
    nic_paused: bool,
    sources_changed: bool,
}

impl StageEngine {
    /// An engine named `name` running `stage` below `up` (the lower end of the queue
    /// above it), handling at most `batch` packets per direction and step.
    pub fn new(
        name: impl Into<String>,
        stage: Box<dyn Stage>,
        up: QueueEnd,
        down: Downstream,
        batch: usize,
    ) -> Self {
        let pool = up.pool().clone();
        let batch = batch.max(1);
        Self {
            name: name.into(),
            stage,
            up,
            down,
            pool,
            batch,
            tx_out: Vec::with_capacity(batch),
            rx_out: Vec::with_capacity(batch),
            spare: Vec::with_capacity(batch),
            counters: StageCounters::default(),
            drops: DropCounts::default(),
            retry_at: None,
            blocked: Arc::new([AtomicBool::new(false), AtomicBool::new(false)]),
            nic_paused: false,
            sources_changed: false,
        }
    }

    /// Hands the stage new settings (TOML text): applied whole between two packets, or
    /// refused with nothing changed.
    pub fn update(&mut self, settings: &str) -> Result<(), UpdateError> {
        self.stage.update(settings)
    }

    /// The engine's counters.
    pub fn stage_counters(&self) -> StageCounters {
        self.counters
    }

    /// Drops by direction and reason.
    pub fn drops(&self) -> &DropCounts {
        &self.drops
    }

    /// The stage's kind.
    pub fn kind(&self) -> &'static str {
        self.stage.kind()
    }

    /// Pushes the forwarded Tx packets downstream; what does not fit stays, in order.
    /// Returns the time spent inside the NIC's send calls (zero for a queue).
    fn flush_tx(&mut self, now: Instant) -> Duration {
        if self.tx_out.is_empty() {
            return Duration::ZERO;
        }
        let mut pending = std::mem::replace(&mut self.tx_out, std::mem::take(&mut self.spare));
        let wire_start = matches!(self.down, Downstream::Wire(_)).then(Instant::now);
        {
            let mut it = pending.drain(..);
            while let Some(p) = it.next() {
                let refused = match &mut self.down {
                    Downstream::Queue(q) => q.push(p).err(),
                    Downstream::Wire(w) => match w.send(p.bytes(), p.peer()) {
                        Ok(()) => None,
                        Err(WireError::WouldBlock) => {
                            self.counters.wire_full += 1;
                            self.retry_at = Some(now + WIRE_RETRY);
                            Some(p)
                        }
                        Err(WireError::Failed(e)) => {
                            log::debug!("{}: send failed: {e}", self.name);
                            self.counters.wire_errors += 1;
                            self.drops.add(Direction::Tx, "wire_error", p.len());
                            None
                        }
                    },
                };
                if let Some(p) = refused {
                    self.tx_out.push(p);
                    self.tx_out.extend(it);
                    break;
                }
            }
        }
        self.spare = pending;
        wire_start.map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// Pushes the forwarded Rx packets upstream; what does not fit stays, in order.
    fn flush_rx(&mut self) {
        if self.rx_out.is_empty() {
            return;
        }
        let mut pending = std::mem::replace(&mut self.rx_out, std::mem::take(&mut self.spare));
        {
            let mut it = pending.drain(..);
            while let Some(p) = it.next() {
                if let Err(p) = self.up.push(p) {
                    self.rx_out.push(p);
                    self.rx_out.extend(it);
                    break;
                }
            }
        }
        self.spare = pending;
    }

    fn tx_limit(&mut self) -> usize {
        match &mut self.down {
            Downstream::Queue(q) => {
                if q.has_room() {
                    self.batch.min(q.room())
                } else {
                    0
                }
            }
            Downstream::Wire(_) if self.tx_out.is_empty() => self.batch,
            Downstream::Wire(_) => 0,
        }
    }

    fn rx_limit(&mut self) -> usize {
        if self.up.has_room() {
            self.batch.min(self.up.room())
        } else {
            0
        }
    }
}

impl Engine for StageEngine {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(&mut self, now: Instant) -> RunOutcome {
        let start = Instant::now();
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
        }
        let mut wire = self.flush_tx(now);
        self.flush_rx();
        let tx_limit = self.tx_limit();
        let rx_limit = self.rx_limit();
        let forwarded_before = self.tx_out.len() + self.rx_out.len();
        let mut items = 0u32;
        let mut pending = false;
        {
            let mut out = Output::with_limits(
                now,
                &mut self.tx_out,
                &mut self.rx_out,
                [tx_limit, rx_limit],
                &mut self.drops,
            );
            self.stage.poll(now, &mut out);

            // Tx: from the queue above.
            let mut n = 0;
            while n < self.batch && out.has_room(Direction::Tx) && self.stage.accepts(Direction::Tx) {
                let Some(pkt) = self.up.pop() else { break };
                n += 1;
                self.counters.tx_packets += 1;
                self.counters.tx_bytes += pkt.len() as u64;
                self.stage.process(pkt, &mut out);
            }
            let tx_blocked = !out.has_room(Direction::Tx) || !self.stage.accepts(Direction::Tx);
            pending |= n == self.batch && self.up.has_input();
            items += n as u32;

            // Rx: from the queue below, or from the NIC into fresh pool buffers.
            let mut n = 0;
            let stage = &mut self.stage;
            let counters = &mut self.counters;
            match &mut self.down {
                Downstream::Queue(q) => {
                    while n < self.batch && out.has_room(Direction::Rx) && stage.accepts(Direction::Rx) {
                        let Some(pkt) = q.pop() else { break };
                        n += 1;
                        counters.rx_packets += 1;
                        counters.rx_bytes += pkt.len() as u64;
                        stage.process(pkt, &mut out);
                    }
                    pending |= n == self.batch && q.has_input();
                }
                Downstream::Wire(w) => {
                    let room = if stage.accepts(Direction::Rx) { rx_limit } else { 0 };
                    let pool = &self.pool;
                    let name = &self.name;
                    // The NIC's time is the call's minus what the stage spent inside it.
                    let recv_start = Instant::now();
                    let mut inside = Duration::ZERO;
                    let got = w.recv(room, &mut |bytes, peer| {
                        let t = Instant::now();
                        let _inside = Defer(&mut inside, t);
                        counters.rx_packets += 1;
                        counters.rx_bytes += bytes.len() as u64;
                        let Some(mut pkt) = pool.alloc(Direction::Rx) else {
                            counters.wire_errors += 1;
                            out.drop_unowned(Direction::Rx, "pool_empty", bytes.len());
                            return;
                        };
                        if pkt.copy_from(bytes).is_err() {
                            out.drop(pkt, "too_large");
                            return;
                        }
                        pkt.set_peer(peer);
                        stage.process(pkt, &mut out);
                    });
                    wire += recv_start.elapsed().saturating_sub(inside);
                    match got {
                        Ok(k) => {
                            n = k;
                            pending |= k == self.batch && k > 0;
                        }
                        Err(e) => {
                            log::debug!("{name}: receive failed: {e}");
                            counters.wire_errors += 1;
                        }
                    }
                }
            }
            let rx_blocked = !out.has_room(Direction::Rx) || !stage.accepts(Direction::Rx);
            items += n as u32;
            self.blocked[0].store(tx_blocked, Ordering::Relaxed);
            self.blocked[1].store(rx_blocked, Ordering::Relaxed);
        }
        self.counters.forwarded +=
            (self.tx_out.len() + self.rx_out.len()).saturating_sub(forwarded_before) as u64;
        wire += self.flush_tx(now);
        self.flush_rx();
        self.up.flush();
        if let Downstream::Queue(q) = &mut self.down {
            q.flush();
        } else {
            // `has_room` flags that we want space, so Pony's next pop rings us.
            let paused = !self.up.has_room() || !self.stage.accepts(Direction::Rx);
            if paused != self.nic_paused {
                self.nic_paused = paused;
                self.sources_changed = true;
            }
        }
        // Only steps that moved packets count: a polled engine's empty steps are the
        // mode's cost, not the stage's.
        if items > 0 {
            self.counters.ns += start.elapsed().as_nanos() as u64;
            self.counters.wire_ns += wire.as_nanos() as u64;
        }
        RunOutcome { items, pending }
    }

    fn wake_sources(&self) -> Vec<WakeSource> {
        let mut v = vec![self.up.wake_source()];
        match &self.down {
            Downstream::Queue(q) => v.push(q.wake_source()),
            Downstream::Wire(_) if self.nic_paused => {}
            Downstream::Wire(w) => v.extend(w.wake_source()),
        }
        v
    }

    fn take_sources_changed(&mut self) -> bool {
        std::mem::take(&mut self.sources_changed)
    }

    fn work_probe(&self) -> WorkProbe {
        let up = self.up.input_probe();
        let blocked = self.blocked.clone();
        let below: Box<dyn Fn() -> bool + Send + Sync> = match &self.down {
            Downstream::Queue(q) => {
                let p = q.input_probe();
                Box::new(move || !p.is_empty())
            }
            Downstream::Wire(w) => {
                let p = w.work_probe();
                Box::new(move || p.has_work())
            }
        };
        WorkProbe::new(move || {
            (!blocked[0].load(Ordering::Relaxed) && !up.is_empty())
                || (!blocked[1].load(Ordering::Relaxed) && below())
        })
    }

    fn poll_at(&self) -> Option<Instant> {
        let wire = match &self.down {
            Downstream::Wire(w) => w.poll_at(),
            Downstream::Queue(_) => None,
        };
        [self.stage.poll_at(), wire, self.retry_at]
            .into_iter()
            .flatten()
            .min()
    }

    fn counters(&self) -> Option<serde_json::Value> {
        let ends = |e: EndStats| serde_json::to_value(e).unwrap_or_default();
        let mut v = serde_json::json!({
            "stage": self.stage.kind(),
            "counters": self.counters,
            "held": self.stage.held(),
            "drops": self.drops.entries(),
            "up": ends(self.up.stats()),
        });
        match &self.down {
            Downstream::Queue(q) => v["down"] = ends(q.stats()),
            Downstream::Wire(w) => v["nic"] = w.counters().unwrap_or_default(),
        }
        if let Some(own) = self.stage.counters() {
            v["own"] = own;
        }
        Some(v)
    }
}

/// Adds the time since `.1` to `.0` when dropped (on every return path of a closure).
struct Defer<'a>(&'a mut Duration, Instant);

impl Drop for Defer<'_> {
    fn drop(&mut self) {
        *self.0 += self.1.elapsed();
    }
}

#[cfg(test)]
mod tests;
