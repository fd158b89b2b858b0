//! Test engines for the runtime tests: a forwarder between two rings with a doorbell, an
//! engine woken by a readable descriptor, and misbehaving engines.

#![allow(dead_code)]

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use snap_engines::echo::spin;
use snap_ipc::{Consumer, Doorbell, Producer, Ring, Ringer, SharedMem};
use snap_runtime::{Engine, RingSet, RunOutcome, WakeSource, WorkProbe};

/// Moves messages from an input ring to an output ring, spinning `work` per message, at most
/// `batch` per step.
pub struct Forwarder {
    pub name: String,
    input: Consumer,
    output: Producer,
    bell: Doorbell,
    rings: RingSet,
    pub work: Duration,
    pub batch: u32,
}

/// The app's ends of a forwarder.
pub struct App {
    pub tx: Producer,
    pub rx: Consumer,
    pub ringer: Ringer,
}

pub fn ring(capacity: u64) -> Ring {
    let len = Ring::required_len(capacity, 64).unwrap();
    Ring::create(SharedMem::create("test-ring", len).unwrap(), capacity, 64).unwrap()
}

pub fn forwarder(name: &str, work: Duration) -> (Forwarder, App) {
    let (app_tx, input) = ring(1024).split();
    let (output, app_rx) = ring(1 << 16).split();
    let bell = Doorbell::new().unwrap();
    let rings = RingSet::default();
    rings.insert(0, input.probe());
    let app = App {
        tx: app_tx,
        rx: app_rx,
        ringer: bell.ringer(),
    };
    let engine = Forwarder {
        name: name.into(),
        input,
        output,
        bell,
        rings,
        work,
        batch: 16,
    };
    (engine, app)
}

impl Engine for Forwarder {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(&mut self, _now: Instant) -> RunOutcome {
        let mut items = 0;
        while items < self.batch {
            let Some(msg) = self.input.peek().unwrap() else {
                return RunOutcome {
                    items,
                    pending: false,
                };
            };
            if self.output.push(&msg.to_vec()).is_err() {
                // Output full: keep the message, try again next step.
                return RunOutcome { items, pending: true };
            }
            msg.release();
            spin(self.work);
            items += 1;
        }
        RunOutcome {
            items,
            pending: !self.input.probe().is_empty(),
        }
    }

    fn wake_sources(&self) -> Vec<WakeSource> {
        vec![WakeSource::Doorbell(self.bell.clone())]
    }

    fn work_probe(&self) -> WorkProbe {
        WorkProbe::rings(self.rings.clone())
    }
}

impl App {
    /// Pushes `seq` (retrying while full) and rings the doorbell.
    pub fn send(&mut self, seq: u64) {
        while self.tx.push(&seq.to_le_bytes()).is_err() {
            self.ringer.ring();
            std::thread::yield_now();
        }
        self.ringer.ring();
    }

    pub fn try_recv(&mut self) -> Option<u64> {
        let mut buf = [0u8; 64];
        let n = self.rx.try_pop(&mut buf).unwrap()?;
        assert_eq!(n, 8);
        Some(u64::from_le_bytes(buf[..8].try_into().unwrap()))
    }

    /// Waits up to `timeout` for the next message.
    pub fn recv(&mut self, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.try_recv() {
                return Some(v);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::yield_now();
        }
    }
}

/// Counts bytes read from a pipe: woken only by descriptor readiness (a NIC queue stand-in).
pub struct PipeReader {
    pub name: String,
    pub fd: Arc<OwnedFd>,
    pub bytes: Arc<AtomicU64>,
}

pub fn pipe_reader(name: &str) -> (PipeReader, OwnedFd, Arc<AtomicU64>) {
    let (r, w) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::NONBLOCK | rustix::pipe::PipeFlags::CLOEXEC)
            .unwrap();
    let bytes = Arc::new(AtomicU64::new(0));
    let engine = PipeReader {
        name: name.into(),
        fd: Arc::new(r),
        bytes: bytes.clone(),
    };
    (engine, w, bytes)
}

impl Engine for PipeReader {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(&mut self, _now: Instant) -> RunOutcome {
        let mut buf = [0u8; 256];
        match rustix::io::read(&*self.fd, &mut buf) {
            Ok(n) if n > 0 => {
                self.bytes.fetch_add(n as u64, Ordering::Relaxed);
                RunOutcome {
                    items: 1,
                    pending: true,
                }
            }
            _ => RunOutcome::IDLE,
        }
    }

    fn wake_sources(&self) -> Vec<WakeSource> {
        vec![WakeSource::Readable(self.fd.clone())]
    }

    fn work_probe(&self) -> WorkProbe {
        WorkProbe::never()
    }
}

/// How an engine misbehaves once it sees a message.
#[derive(Clone, Copy)]
pub enum Misbehaviour {
    Panic,
    Spin(Duration),
}

/// A forwarder that misbehaves on the message `trigger`.
pub struct Faulty {
    pub inner: Forwarder,
    pub trigger: u64,
    pub how: Misbehaviour,
}

impl Engine for Faulty {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn run(&mut self, now: Instant) -> RunOutcome {
        // One message per step, so that the trigger is always seen before it is forwarded.
        self.inner.batch = 1;
        if let Some(msg) = self.inner.input.peek().unwrap() {
            if u64::from_le_bytes(msg.to_vec()[..8].try_into().unwrap()) == self.trigger {
                msg.release();
                match self.how {
                    Misbehaviour::Panic => panic!("engine {} hit message {}", self.inner.name, self.trigger),
                    Misbehaviour::Spin(d) => spin(d),
                }
                return RunOutcome {
                    items: 1,
                    pending: true,
                };
            }
        }
        self.inner.run(now)
    }

    fn wake_sources(&self) -> Vec<WakeSource> {
        self.inner.wake_sources()
    }

    fn work_probe(&self) -> WorkProbe {
        self.inner.work_probe()
    }
}
