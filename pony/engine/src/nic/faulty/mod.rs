//! [`FaultyNic`]: wraps any [`Nic`] and makes its wire worse on purpose, deterministically,
//! so the transport's loss recovery, reordering tolerance, duplicate suppression and
//! checksum can be tested (smoltcp's `FaultInjector` is the model).
//!
//! Faults are configured per direction ([`FaultyNic::on_send`], [`FaultyNic::on_recv`]),
//! each with its own seeded RNG, so a run is reproducible from its seeds. Per packet, in
//! this order:
//!
//! 1. **loss** with probability `loss`: gone (it never counts as "a later packet" below);
//! 2. **corruption** with probability `corrupt`: one random bit of a *copy* is flipped (the
//!    caller's buffer is never touched); the wire checksum must catch it;
//! 3. **duplication** with probability `duplicate`: an identical extra copy goes out right
//!    away, whatever happens to the original next;
//! 4. **reordering** with probability `reorder`: held back until `reorder_by` later packets
//!    have gone out, or `reorder_max_hold` has passed (so the tail of a burst is not held
//!    forever);
//! 5. otherwise **delay** with probability `delay`: held for `delay_by` plus up to
//!    `delay_jitter`.
//!
//! Held packets leave on a later `send`/`recv` call that finds them due; [`Nic::poll_at`]
//! tells the engine when the next one is due so it can arrange such a call. [`FaultyNic::flush`]
//! lets everything out (end of a test). Time comes from `Instant::now()`: delays are real, so
//! tests that need exact timing use `delay_by` of zero or a few milliseconds.
//!
//! Back-pressure stays honest on send: if the inner NIC refuses a packet this layer already
//! accepted (a released held packet), it waits here and the *next* `send` returns
//! [`NicError::WouldBlock`] until it has gone out.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Nic, NicError, NicStats, PeerAddr, WakeSource, WorkProbe};

/// What to do to packets in one direction. Probabilities are in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultConfig {
    /// Seeds this direction's RNG.
    pub seed: u64,
    /// Probability that a packet is lost.
    pub loss: f64,
    /// Probability that a surviving packet has one bit flipped.
    pub corrupt: f64,
    /// Probability that a surviving packet is sent twice.
    pub duplicate: f64,
    /// Probability that a surviving packet is held back behind later ones.
    pub reorder: f64,
    /// How many later packets overtake a reordered one.
    pub reorder_by: u32,
    /// Longest a reordered packet is held if fewer than `reorder_by` packets follow.
    pub reorder_max_hold: Duration,
    /// Probability that a surviving, not reordered packet is delayed.
    pub delay: f64,
    /// Extra delay of a delayed packet.
    pub delay_by: Duration,
    /// Up to this much more, uniformly at random.
    pub delay_jitter: Duration,
}

impl Default for FaultConfig {
    /// No faults (set the probabilities you want); reordering by 3 packets or 1 ms; a
    /// 1 ms delay.
    fn default() -> Self {
        Self {
            seed: 0,
            loss: 0.0,
            corrupt: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_by: 3,
            reorder_max_hold: Duration::from_millis(1),
            delay: 0.0,
            delay_by: Duration::from_millis(1),
            delay_jitter: Duration::ZERO,
        }
    }
}

/// What the injector did in one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct FaultStats {
    /// Packets that entered this direction (sent by the caller, or taken off the inner NIC).
    pub packets: u64,
    /// Lost on purpose.
    pub dropped: u64,
    /// Had a bit flipped.
    pub corrupted: u64,
    /// Sent twice.
    pub duplicated: u64,
    /// Held back for reordering.
    pub reordered: u64,
    /// Held back for delay.
    pub delayed: u64,
    /// Held packets let out (reordered + delayed, once all have left).
    pub released: u64,
}

/// A packet held back, and when it may leave.
#[derive(Debug)]
struct Held {
    data: Vec<u8>,
    peer: PeerAddr,
    /// Later packets still to overtake it (reordering only).
    after: Option<u32>,
    /// Leaves at this time at the latest.
    at: Instant,
}

/// One direction's injector: decides, holds and queues.
#[derive(Debug)]
struct Faults {
    cfg: FaultConfig,
    rng: fastrand::Rng,
    stats: FaultStats,
    held: Vec<Held>,
    /// Packets decided and due, in the order they leave.
    ready: VecDeque<(Vec<u8>, PeerAddr)>,
}

impl Faults {
    fn new(cfg: FaultConfig) -> Self {
        Self {
            cfg,
            rng: fastrand::Rng::with_seed(cfg.seed),
            stats: FaultStats::default(),
            held: Vec::new(),
            ready: VecDeque::new(),
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.f64() < p
    }

    /// Runs one packet through the faults; whatever leaves now is appended to `ready`.
    fn process(&mut self, packet: &[u8], peer: PeerAddr, now: Instant) {
        self.stats.packets += 1;
        if self.chance(self.cfg.loss) {
            self.stats.dropped += 1;
            return;
        }
        let mut data = packet.to_vec();
        if self.chance(self.cfg.corrupt) && !data.is_empty() {
            let bit = self.rng.usize(..data.len() * 8);
            data[bit / 8] ^= 1 << (bit % 8);
            self.stats.corrupted += 1;
        }
        if self.chance(self.cfg.duplicate) {
            self.ready.push_back((data.clone(), peer));
            self.stats.duplicated += 1;
        }
        if self.chance(self.cfg.reorder) {
            self.stats.reordered += 1;
            self.held.push(Held {
                data,
                peer,
                after: Some(self.cfg.reorder_by),
                at: now + self.cfg.reorder_max_hold,
            });
            return;
        }
        if self.chance(self.cfg.delay) {
            self.stats.delayed += 1;
            let jitter = self.cfg.delay_jitter.as_nanos() as u64;
            let jitter = Duration::from_nanos(if jitter == 0 { 0 } else { self.rng.u64(..jitter) });
            self.held.push(Held {
                data,
                peer,
                after: None,
                at: now + self.cfg.delay_by + jitter,
            });
            return;
        }
        self.ready.push_back((data, peer));
        // One more packet went out: reordered ones it overtook may now follow.
        for h in &mut self.held {
            if let Some(n) = h.after.as_mut() {
                *n = n.saturating_sub(1);
            }
        }
        self.release(|h| h.after == Some(0));
    }

    /// Lets out every held packet whose time has come.
    fn release_due(&mut self, now: Instant) {
        self.release(|h| h.at <= now);
    }

    /// Moves held packets matching `due` to `ready`, oldest first.
    fn release(&mut self, due: impl Fn(&Held) -> bool) {
        let mut i = 0;
        while i < self.held.len() {
            if due(&self.held[i]) {
                let h = self.held.remove(i);
                self.ready.push_back((h.data, h.peer));
                self.stats.released += 1;
            } else {
                i += 1;
            }
        }
    }

    fn next_release(&self) -> Option<Instant> {
        self.held.iter().map(|h| h.at).min()
    }
}

/// A [`Nic`] wrapper that injects faults. See the module documentation.
#[derive(Debug)]
pub struct FaultyNic<N: Nic> {
    inner: N,
    tx: Option<Faults>,
    rx: Option<Faults>,
    /// Received packets queued here (duplicates, releases), for the work probe: the inner
    /// NIC's wake source does not know about them.
    rx_queued: Arc<AtomicUsize>,
}

impl<N: Nic> FaultyNic<N> {
    /// Wraps `inner` with no faults yet.
    pub fn new(inner: N) -> Self {
        Self {
            inner,
            tx: None,
            rx: None,
            rx_queued: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Injects faults into packets sent.
    pub fn on_send(mut self, cfg: FaultConfig) -> Self {
        self.tx = Some(Faults::new(cfg));
        self
    }

    /// Injects faults into packets received.
    pub fn on_recv(mut self, cfg: FaultConfig) -> Self {
        self.rx = Some(Faults::new(cfg));
        self
    }

    /// What was done to packets sent.
    pub fn send_faults(&self) -> FaultStats {
        self.tx.as_ref().map(|f| f.stats).unwrap_or_default()
    }

    /// What was done to packets received.
    pub fn recv_faults(&self) -> FaultStats {
        self.rx.as_ref().map(|f| f.stats).unwrap_or_default()
    }

    /// Releases every held packet now: sent ones go to the inner NIC (as far as it takes
    /// them), received ones are returned by the next `recv` calls.
    pub fn flush(&mut self) -> Result<(), NicError> {
        if let Some(rx) = &mut self.rx {
            rx.release(|_| true);
            self.rx_queued.store(rx.ready.len(), Ordering::Relaxed);
        }
        if let Some(tx) = &mut self.tx {
            tx.release(|_| true);
        }
        self.drain_tx()
    }

    /// The wrapped NIC.
    pub fn inner(&self) -> &N {
        &self.inner
    }

    /// The wrapped NIC, mutably (e.g. to send around the faults).
    pub fn inner_mut(&mut self) -> &mut N {
        &mut self.inner
    }

    /// Unwraps; held packets are discarded.
    pub fn into_inner(self) -> N {
        self.inner
    }

    /// Sends queued packets to the inner NIC until it is full.
    fn drain_tx(&mut self) -> Result<(), NicError> {
        let Some(tx) = &mut self.tx else { return Ok(()) };
        while let Some((data, peer)) = tx.ready.front() {
            match self.inner.send(data, peer) {
                Ok(()) => {}
                Err(NicError::WouldBlock) => return Err(NicError::WouldBlock),
                // This one can never go (too large, wrong peer): drop it, report it.
                Err(e) => {
                    tx.ready.pop_front();
                    return Err(e);
                }
            }
            tx.ready.pop_front();
        }
        Ok(())
    }
}

impl<N: Nic> Nic for FaultyNic<N> {
    fn send(&mut self, packet: &[u8], to: &PeerAddr) -> Result<(), NicError> {
        let Some(tx) = &mut self.tx else {
            return self.inner.send(packet, to);
        };
        // Refuse what the inner NIC would refuse anyway, before any fault hides it.
        let mtu = self.inner.mtu();
        if packet.len() > mtu {
            return Err(NicError::TooLarge {
                len: packet.len(),
                mtu,
            });
        }
        let now = Instant::now();
        tx.release_due(now);
        // Earlier packets first; while they are stuck, so is the caller.
        self.drain_tx()?;
        if let Some(tx) = &mut self.tx {
            tx.process(packet, *to, now);
        }
        match self.drain_tx() {
            // Accepted: it (or what the faults made of it) waits here for room.
            Err(NicError::WouldBlock) => Ok(()),
            other => other,
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<(usize, PeerAddr)>, NicError> {
        let now = Instant::now();
        if let Some(tx) = &mut self.tx {
            // Piggyback: the engine calls recv every step, so held sends are let out here too.
            tx.release_due(now);
            match self.drain_tx() {
                Ok(()) | Err(NicError::WouldBlock) => {}
                Err(e) => return Err(e),
            }
        }
        let Some(rx) = &mut self.rx else {
            return self.inner.recv(buf);
        };
        rx.release_due(now);
        let got = loop {
            if let Some((data, peer)) = rx.ready.pop_front() {
                let Some(dst) = buf.get_mut(..data.len()) else {
                    continue; // too long for the caller: dropped, as the backends do
                };
                dst.copy_from_slice(&data);
                break Some((data.len(), peer));
            }
            match self.inner.recv(buf)? {
                Some((n, peer)) => rx.process(&buf[..n], peer, now),
                None => break None,
            }
        };
        self.rx_queued.store(rx.ready.len(), Ordering::Relaxed);
        Ok(got)
    }

    /// Without receive faults, the inner NIC's in-place delivery (held sends let out
    /// first, as in `recv`); with them, packets go through `recv` and a buffer allocated
    /// per call (a testing knob: the copy does not matter).
    fn recv_in_place(
        &mut self,
        max: usize,
        deliver: &mut dyn FnMut(&[u8], PeerAddr),
    ) -> Result<usize, NicError> {
        if self.rx.is_some() {
            let mut buf = vec![0; self.inner.mtu()];
            let mut n = 0;
            while n < max {
                let Some((len, from)) = self.recv(&mut buf)? else {
                    break;
                };
                deliver(&buf[..len], from);
                n += 1;
            }
            return Ok(n);
        }
        if let Some(tx) = &mut self.tx {
            tx.release_due(Instant::now());
            match self.drain_tx() {
                Ok(()) | Err(NicError::WouldBlock) => {}
                Err(e) => return Err(e),
            }
        }
        self.inner.recv_in_place(max, deliver)
    }

    fn wake_source(&self) -> Option<WakeSource> {
        self.inner.wake_source()
    }

    /// The inner NIC's: the faults are configuration, rebuilt by the new host. Packets
    /// held back for later release (delay, reordering) are not moved: they are lost, as
    /// the faults they stand for may lose them.
    fn dup_for_handover(&self) -> Option<std::io::Result<Vec<std::os::fd::OwnedFd>>> {
        self.inner.dup_for_handover()
    }

    fn can_hand_over(&self) -> bool {
        self.inner.can_hand_over()
    }

    fn work_probe(&self) -> WorkProbe {
        let inner = self.inner.work_probe();
        let queued = self.rx_queued.clone();
        WorkProbe::new(move || queued.load(Ordering::Relaxed) > 0 || inner.has_work())
    }

    fn poll_at(&self) -> Option<Instant> {
        let held = [&self.tx, &self.rx]
            .into_iter()
            .flatten()
            .filter_map(Faults::next_release)
            .min();
        let stuck = self.tx.as_ref().is_some_and(|t| !t.ready.is_empty());
        let mine = if stuck { Some(Instant::now()) } else { held };
        [mine, self.inner.poll_at()].into_iter().flatten().min()
    }

    fn mtu(&self) -> usize {
        self.inner.mtu()
    }

    /// The inner NIC's counters: what really crossed it. Faults are in
    /// [`FaultyNic::send_faults`] and [`FaultyNic::recv_faults`].
    fn stats(&self) -> NicStats {
        self.inner.stats()
    }

    fn fault_stats(&self) -> Option<[FaultStats; 2]> {
        Some([self.send_faults(), self.recv_faults()])
    }

    fn backend_counters(&self) -> Option<Vec<(&'static str, u64)>> {
        self.inner.backend_counters()
    }
}

#[cfg(test)]
mod tests;
