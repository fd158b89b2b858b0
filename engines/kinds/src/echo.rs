//! The echo engine: serves any number of app channels ([`crate::channel`]) by sending every
//! request back as its response. It is the simplest engine that exercises the whole data
//! path (rings, doorbells, completion notifications, the scheduling modes), and with
//! `work_ns` it models a per-request CPU cost for scheduling experiments.
//!
//! Apps attach and detach through the control plane ([`crate::control`]), which runs
//! [`EchoEngine::attach`] / [`EchoEngine::detach`] on the engine's own thread via its
//! mailbox. The engine cannot see an app die; the control plane detaches the app's channels
//! when its control connection closes, which the kernel does for a crashed app too.
//!
//! A channel found broken is quarantined and detached; an app whose response ring is full
//! is backpressured: its requests wait in its ring, uncounted as work, until it pops (see
//! [`crate::app_channels`]). Neither keeps the engine's thread from blocking, and the other
//! apps are served meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::os::fd::OwnedFd;

use crate::app_channels::{AppChannels, ChannelsState};
use crate::moving;
use snap_ipc::channel::{ChannelEngineEnd, ChannelShape, CloseReason};
use snap_ipc::PushError;
use snap_runtime::{AppFacing, AttachReply, AttachRequest, ChannelLedger};
use snap_runtime::{Engine, Movable, RingSet, RunOutcome, WakeSource, WorkProbe};

/// Requests handled per `run()` by default: bounds the step so that the other engines on a
/// thread (and control operations) get their turn within a few microseconds.
pub const DEFAULT_BATCH: u32 = 32;

/// Counters of an echo engine, read through the control mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct EchoStats {
    /// Channels attached now.
    pub channels: usize,
    /// Requests echoed since start.
    pub echoed: u64,
    /// Times a request had to wait because its app's response ring was full.
    pub stalls: u64,
    /// Channels found broken (corrupt ring, malformed request), quarantined and detached.
    pub corrupt: u64,
}

/// See the module documentation.
#[derive(Debug)]
pub struct EchoEngine {
    name: String,
    work: Duration,
    batch: u32,
    channels: AppChannels,
    stats: EchoStats,
    /// The request, copied in from the app's ring (never read in place: snap_ipc::peer).
    scratch: Vec<u8>,
    /// Stopped for an upgrade ([`Movable::freeze`]): serves nothing.
    frozen: bool,
}

/// What moves to a new host (with the channels' descriptors).
#[derive(serde::Serialize, serde::Deserialize)]
struct EchoState {
    channels: ChannelsState,
    stats: EchoStats,
}

impl EchoEngine {
    /// An engine with no channels. `work_ns` is busy-waited per request.
    pub fn new(name: impl Into<String>, work_ns: u64) -> Self {
        Self {
            name: name.into(),
            work: Duration::from_nanos(work_ns),
            batch: DEFAULT_BATCH,
            channels: AppChannels::new(RingSet::default(), 1),
            stats: EchoStats::default(),
            scratch: Vec::new(),
            frozen: false,
        }
    }

    /// The engine another host process exported ([`Movable`]): `state` is its final
    /// export and `fds` the descriptors it handed over. Apps keep their channels and ids.
    pub fn import(
        name: impl Into<String>,
        work_ns: u64,
        state: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<Self, String> {
        let st: EchoState = moving::decode(state)?;
        let mut e = Self::new(name, work_ns);
        e.channels = AppChannels::adopt(RingSet::default(), st.channels, fds)?;
        e.stats = st.stats;
        Ok(e)
    }

    fn state(&self) -> Result<(Vec<u8>, Vec<OwnedFd>), String> {
        let (channels, fds) = self.channels.export()?;
        let bytes = moving::encode(&EchoState {
            channels,
            stats: self.stats,
        })?;
        Ok((bytes, fds))
    }

    /// Changes the per-step bound (at least 1).
    pub fn with_batch(mut self, batch: u32) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Starts serving a channel; returns its id for [`Self::detach`].
    pub fn attach(&mut self, end: ChannelEngineEnd) -> u64 {
        self.channels.attach(end)
    }

    /// Stops serving a channel and drops its end (unmapping the rings). Returns whether it
    /// was attached.
    pub fn detach(&mut self, id: u64) -> bool {
        self.channels.detach(id)
    }

    /// Ids of attached channels.
    pub fn channel_ids(&self) -> Vec<u64> {
        self.channels.ids()
    }

    /// Counters.
    pub fn stats(&self) -> EchoStats {
        EchoStats {
            channels: self.channels.len(),
            ..self.stats
        }
    }

    /// Echoes one request of channel `i`. Returns `Some(true)` if it did, `Some(false)` if
    /// a request is waiting but the response ring is full (the channel is then
    /// backpressured, unless room appeared meanwhile), `None` if there is nothing to do.
    fn echo_one(&mut self, i: usize) -> Option<bool> {
        let work = self.work;
        let ch = self.channels.get_mut(i);
        if !ch.serving() {
            return None;
        }
        // Check for room first: a request is never popped without a slot for its response,
        // so a slow app's requests stay queued instead of being dropped.
        let full = ch.end.responses_full();
        let (requests, responses) = ch.end.rings();
        let broken = match requests.peek() {
            Ok(None) => return None,
            Ok(Some(_)) if full => {
                self.stats.stalls += 1;
                self.channels.backpressure(i);
                return Some(false);
            }
            Ok(Some(msg)) => {
                spin(work);
                // Copied in from the app's ring, never read in place (snap_ipc::peer).
                self.scratch.resize(msg.len(), 0);
                let request = msg
                    .copy_into(&mut self.scratch)
                    .expect("scratch sized to the message");
                match responses.push(request) {
                    Ok(()) => {
                        msg.release();
                        self.stats.echoed += 1;
                        return Some(true);
                    }
                    // Cannot happen while we are the only producer and checked for room;
                    // keep the request for the next step anyway.
                    Err(PushError::Full) => {
                        self.stats.stalls += 1;
                        return Some(false);
                    }
                    // Both rings have the same slot size, so this means a malformed
                    // channel.
                    Err(e @ PushError::TooLarge { .. }) => (CloseReason::BadMessage, e.to_string()),
                }
            }
            Err(e) => (CloseReason::of_pop(&e), e.to_string()),
        };
        self.channels.quarantine(&self.name, i, broken.0, broken.1);
        self.stats.corrupt += 1;
        None
    }
}

/// Busy-waits `work`: the modelled CPU cost of handling one request or packet (every
/// built-in engine's `work_ns`, and test engines').
pub fn spin(work: Duration) {
    if work.is_zero() {
        return;
    }
    let start = Instant::now();
    while start.elapsed() < work {
        std::hint::spin_loop();
    }
}

impl Engine for EchoEngine {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(&mut self, _now: Instant) -> RunOutcome {
        let n = self.channels.len();
        if n == 0 || self.frozen {
            return RunOutcome::IDLE;
        }
        self.channels.resume_backpressured();
        let order = self.channels.round_robin();
        let mut items = 0u32;
        // Passes of one request per channel, starting at the cursor, until the bound is
        // reached or a whole pass finds nothing to do.
        'passes: loop {
            let mut progress = false;
            for i in order.clone() {
                if items >= self.batch {
                    break 'passes;
                }
                if self.echo_one(i) == Some(true) {
                    items += 1;
                    self.channels.mark(i);
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
        self.channels.advance();
        self.channels.notify_marked();
        self.channels.reap();
        // Pending only if we stopped at the bound with input left. Input stuck behind a
        // full response ring is not pending: that channel is backpressured and its app
        // rings our doorbell when it pops.
        let pending = items >= self.batch && self.channels.any_requests();
        RunOutcome { items, pending }
    }

    fn take_sources_changed(&mut self) -> bool {
        self.channels.take_sources_changed()
    }

    fn wake_sources(&self) -> Vec<WakeSource> {
        if self.frozen {
            return Vec::new();
        }
        self.channels.doorbells().collect()
    }

    fn movable(&mut self) -> Option<&mut dyn Movable> {
        Some(self)
    }

    fn work_probe(&self) -> WorkProbe {
        WorkProbe::rings(self.channels.rings().clone())
    }

    fn app_facing(&mut self) -> Option<&mut dyn AppFacing> {
        Some(self)
    }
}

/// Every export is whole (see [`crate::moving`]); the descriptors are duplicated at
/// `hand_over`, after which the engine drops its channels without closing them for the
/// apps (no quarantine: the new host serves them).
impl Movable for EchoEngine {
    fn export_full(&mut self) -> Result<Vec<u8>, String> {
        self.state().map(|(bytes, _)| bytes)
    }

    fn export_delta(&mut self) -> Result<Vec<u8>, String> {
        self.export_full()
    }

    fn freeze(&mut self) -> Result<Vec<u8>, String> {
        self.frozen = true;
        self.channels.set_paused(true);
        self.export_full()
    }

    fn thaw(&mut self) {
        self.frozen = false;
        self.channels.set_paused(false);
    }

    /// One group: the channels' descriptors, counted per channel in the state.
    fn hand_over(&mut self) -> Result<Vec<Vec<OwnedFd>>, String> {
        let (_, fds) = self.state()?;
        self.channels = AppChannels::new(RingSet::default(), 1);
        Ok(vec![fds])
    }
}

impl AppFacing for EchoEngine {
    fn attach_app(&mut self, request: AttachRequest) -> Result<AttachReply, String> {
        if self.frozen {
            // Its final state is already written: a channel made now would not move.
            return Err(format!(
                "engine {} is moving to a new host; attach again",
                self.name
            ));
        }
        self.channels.attach_app(request, ChannelShape::default())
    }

    fn detach(&mut self, id: u64) -> bool {
        EchoEngine::detach(self, id)
    }

    fn channel_ids(&self) -> Vec<u64> {
        EchoEngine::channel_ids(self)
    }

    fn ledger(&self) -> Option<Arc<ChannelLedger>> {
        Some(self.channels.ledger())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use snap_ipc::channel::{AppChannel, ChannelAppEnd, ChannelShape};

    fn shape(capacity: u64) -> ChannelShape {
        ChannelShape {
            capacity,
            slot_size: 64,
        }
    }

    fn attach(engine: &mut EchoEngine, capacity: u64, notify: bool) -> (u64, ChannelAppEnd) {
        let (eng, app) = AppChannel::pair(shape(capacity), notify).unwrap();
        (engine.attach(eng), app)
    }

    fn now() -> Instant {
        Instant::now()
    }

    /// The engine moves by its state and descriptors: a request pushed while the old
    /// engine is frozen is answered by the new one, on the same channel id, counters kept;
    /// a thawed engine serves again; an unknown state format is refused.
    #[test]
    fn moves_by_state_and_descriptors() {
        let mut old = EchoEngine::new("e", 0);
        let (id, mut app) = attach(&mut old, 8, true);
        app.send(b"one").unwrap();
        old.run(now());
        let mut buf = [0u8; 64];
        assert_eq!(app.try_recv(&mut buf).unwrap(), Some(3));
        let m = Movable::freeze(&mut old).unwrap();
        app.send(b"two").unwrap();
        assert_eq!(old.run(now()), RunOutcome::IDLE);
        assert!(old.wake_sources().is_empty());
        Movable::thaw(&mut old);
        assert_eq!(old.run(now()).items, 1);
        assert_eq!(app.try_recv(&mut buf).unwrap(), Some(3));
        let state = Movable::freeze(&mut old).unwrap();
        assert_ne!(m, state, "the counters moved on");
        app.send(b"three").unwrap();
        let fds = old.hand_over().unwrap().into_iter().flatten().collect();
        drop(old);
        let mut new = EchoEngine::import("e", 0, &state, fds).unwrap();
        assert_eq!(new.channel_ids(), vec![id]);
        assert_eq!(new.run(now()).items, 1);
        assert_eq!(app.try_recv(&mut buf).unwrap(), Some(5));
        assert_eq!(&buf[..5], b"three");
        assert_eq!(new.stats().echoed, 3);
        let future = String::from_utf8(state)
            .unwrap()
            .replace("\"format\":1", "\"format\":9");
        let err = EchoEngine::import("e", 0, future.as_bytes(), Vec::new()).unwrap_err();
        assert!(err.contains("format 9"), "{err}");
    }

    #[test]
    fn echoes_in_order_and_reports_bound() {
        let mut e = EchoEngine::new("e", 0).with_batch(4);
        let (_, mut app) = attach(&mut e, 16, false);
        for i in 0u8..6 {
            app.send(&[i; 3]).unwrap();
        }
        assert_eq!(
            e.run(now()),
            RunOutcome {
                items: 4,
                pending: true
            }
        );
        assert_eq!(
            e.run(now()),
            RunOutcome {
                items: 2,
                pending: false
            }
        );
        assert_eq!(e.run(now()), RunOutcome::IDLE);
        let mut buf = [0u8; 64];
        for i in 0u8..6 {
            assert_eq!(app.try_recv(&mut buf).unwrap(), Some(3));
            assert_eq!(&buf[..3], &[i; 3]);
        }
        assert_eq!(e.stats().echoed, 6);
    }

    #[test]
    fn round_robin_across_channels() {
        let mut e = EchoEngine::new("e", 0).with_batch(4);
        let (_, mut a) = attach(&mut e, 16, false);
        let (_, mut b) = attach(&mut e, 16, false);
        for _ in 0..8 {
            a.send(b"a").unwrap();
        }
        b.send(b"b").unwrap();
        e.run(now());
        // The single request of b was served within the first bounded step.
        let mut buf = [0u8; 8];
        assert_eq!(b.try_recv(&mut buf).unwrap(), Some(1));
    }

    #[test]
    fn full_response_ring_keeps_requests() {
        let mut e = EchoEngine::new("e", 0);
        let (_, mut app) = attach(&mut e, 2, false);
        app.send(b"1").unwrap();
        app.send(b"2").unwrap();
        assert_eq!(e.run(now()).items, 2);
        app.send(b"3").unwrap();
        // Response ring full: the request stays, but the app is backpressured: no work
        // until it pops, which rings the engine's doorbell.
        assert_eq!(e.run(now()), RunOutcome::IDLE);
        assert!(!e.work_probe().has_work());
        let WakeSource::Doorbell(bell) = &e.wake_sources()[0] else {
            panic!("expected a doorbell");
        };
        assert_eq!(bell.drain(), 0);
        let mut buf = [0u8; 8];
        assert_eq!(app.try_recv(&mut buf).unwrap(), Some(1));
        assert_eq!(bell.drain(), 1);
        assert_eq!(e.run(now()).items, 1);
        for want in [b"2", b"3"] {
            app.try_recv(&mut buf).unwrap().unwrap();
            assert_eq!(&buf[..1], want);
        }
        assert!(e.stats().stalls >= 1);
        assert_eq!(e.ledger().unwrap().backpressured(), 1);
    }

    #[test]
    fn backpressured_app_does_not_hold_up_the_others() {
        let mut e = EchoEngine::new("e", 0);
        let (_, mut slow) = attach(&mut e, 2, false);
        let (_, mut other) = attach(&mut e, 16, false);
        for i in 0u8..2 {
            slow.send(&[i]).unwrap();
        }
        assert_eq!(e.run(now()).items, 2);
        for i in 2u8..4 {
            slow.send(&[i]).unwrap();
        }
        assert_eq!(e.run(now()), RunOutcome::IDLE);
        assert!(!e.work_probe().has_work());
        other.send(b"o").unwrap();
        assert!(e.work_probe().has_work());
        assert_eq!(e.run(now()).items, 1);
        let mut buf = [0u8; 8];
        assert_eq!(other.try_recv(&mut buf).unwrap(), Some(1));
        // Nothing of the slow app was lost: it drains, the engine resumes, all arrive in
        // order.
        let mut got = Vec::new();
        while got.len() < 4 {
            while let Some(1) = slow.try_recv(&mut buf).unwrap() {
                got.push(buf[0]);
            }
            e.run(now());
        }
        assert_eq!(got, (0u8..4).collect::<Vec<_>>());
    }

    #[test]
    fn corrupt_request_ring_is_quarantined() {
        let mut e = EchoEngine::new("e", 0);
        let (bad_id, mut bad, request_ring) = attach_hostile(&mut e);
        let (_, mut good) = attach(&mut e, 4, false);
        assert_eq!(e.wake_sources().len(), 2);
        // The hostile app publishes a producer index far past the ring's capacity.
        for _ in 0..3 {
            bad.push(b"x").unwrap();
        }
        // SAFETY: offset 64 is the producer index of the ring header (ring::layout), inside
        // the mapping; this is what a hostile app does to its own mapping.
        unsafe {
            request_ring
                .as_ptr()
                .add(64)
                .cast::<u64>()
                .write_volatile(1 << 40)
        };
        assert!(e.work_probe().has_work());
        e.run(now());
        assert!(e.take_sources_changed());
        assert_eq!(e.wake_sources().len(), 1);
        assert_eq!(e.channel_ids().len(), 1);
        assert!(!e.channel_ids().contains(&bad_id));
        assert!(!e.work_probe().has_work());
        assert_eq!(bad.quarantined(), Some(CloseReason::CorruptIndices));
        let mut buf = [0u8; 8];
        assert!(matches!(
            bad.recv_timeout(&mut buf, Duration::from_secs(5)),
            Err(snap_ipc::channel::ChannelError::Quarantined(
                CloseReason::CorruptIndices
            ))
        ));
        let ledger = e.ledger().unwrap();
        assert_eq!(ledger.quarantined(), 1);
        assert_eq!(ledger.take_quarantined()[0].channel, bad_id);
        assert_eq!(e.stats().corrupt, 1);
        good.send(b"g").unwrap();
        assert_eq!(e.run(now()).items, 1);
        assert_eq!(good.try_recv(&mut buf).unwrap(), Some(1));
    }

    #[test]
    fn bad_length_prefix_is_quarantined_and_others_unaffected() {
        let mut e = EchoEngine::new("e", 0);
        let (_, mut good) = attach(&mut e, 4, false);
        let (bad_id, mut bad, request_ring) = attach_hostile(&mut e);
        bad.push(b"ok").unwrap();
        // SAFETY: offset 192 is slot 0's length prefix (ring::layout), inside the mapping.
        unsafe {
            request_ring
                .as_ptr()
                .add(192)
                .cast::<u32>()
                .write_volatile(u32::MAX)
        };
        good.send(b"g").unwrap();
        assert_eq!(e.run(now()).items, 1);
        assert_eq!(bad.quarantined(), Some(CloseReason::BadLength));
        assert_eq!(e.channel_ids().len(), 1);
        assert!(!e.channel_ids().contains(&bad_id));
        let mut buf = [0u8; 8];
        assert_eq!(good.try_recv(&mut buf).unwrap(), Some(1));
        assert_eq!(e.run(now()), RunOutcome::IDLE);
        assert!(!e.work_probe().has_work());
    }

    /// A channel whose app also keeps a raw mapping of its request ring, to scribble it.
    fn attach_hostile(engine: &mut EchoEngine) -> (u64, ChannelAppEnd, snap_ipc::SharedMem) {
        let bell = snap_ipc::Doorbell::new().unwrap();
        let (page, efd) = bell.fds();
        let ringer = snap_ipc::channel::completion_ringer(vec![
            page.try_clone_to_owned().unwrap(),
            efd.try_clone_to_owned().unwrap(),
        ])
        .unwrap();
        let (end, fds) = AppChannel::create(shape(4), Some(ringer)).unwrap().into_parts();
        let raw = snap_ipc::SharedMem::from_fd(fds[0].try_clone().unwrap()).unwrap();
        let app = ChannelAppEnd::from_fds(fds, Some(bell)).unwrap();
        (engine.attach(end), app, raw)
    }

    #[test]
    fn detach_removes_channel_probe_and_wake_source() {
        let mut e = EchoEngine::new("e", 0);
        let (a, mut app_a) = attach(&mut e, 4, false);
        let (_b, _app_b) = attach(&mut e, 4, false);
        assert_eq!(e.wake_sources().len(), 2);
        app_a.send(b"x").unwrap();
        let probe = e.work_probe();
        assert!(probe.has_work());
        assert!(e.detach(a));
        assert!(!e.detach(a));
        assert!(!probe.has_work());
        assert_eq!(e.wake_sources().len(), 1);
        assert_eq!(e.stats().channels, 1);
        assert_eq!(e.run(now()), RunOutcome::IDLE);
    }

    #[test]
    fn notifies_app_and_spins_work() {
        let mut e = EchoEngine::new("e", 200_000);
        let (_, mut app) = attach(&mut e, 4, true);
        app.completion().unwrap().arm();
        app.send(b"q").unwrap();
        let start = Instant::now();
        assert_eq!(e.run(now()).items, 1);
        assert!(start.elapsed() >= Duration::from_micros(200));
        assert_eq!(app.completion().unwrap().drain(), 1);
    }

    #[test]
    fn engine_doorbells_are_wake_sources() {
        let mut e = EchoEngine::new("e", 0);
        let (_, mut app) = attach(&mut e, 4, false);
        let WakeSource::Doorbell(bell) = &e.wake_sources()[0] else {
            panic!("expected a doorbell");
        };
        bell.arm();
        app.send(b"x").unwrap();
        assert_eq!(bell.drain(), 1);
    }
}
