//! The UDP echo engine: stands in for a NIC queue. It owns a nonblocking Linux UDP socket
//! and sends every datagram back to where it came from, so an ordinary load generator
//! (`sockperf ping-pong -i 127.0.0.1 -p PORT --udp`) can drive an engine from outside.
//!
//! Unlike [`crate::echo::EchoEngine`], its input is a descriptor, not a ring: it gives the
//! runtime the socket as a level-triggered [`WakeSource::Readable`], and its
//! [`WorkProbe`] never reports work because the runtime checks readiness with epoll itself.

use std::io::{self, ErrorKind};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::echo::spin;
use crate::moving;
use snap_runtime::{Engine, Movable, RunOutcome, WakeSource, WorkProbe};

/// Datagrams handled per `run()` by default.
pub const DEFAULT_BATCH: u32 = 32;

/// Largest datagram echoed whole; longer ones are truncated by the kernel (UDP over
/// loopback can carry 64 KiB).
const MAX_DATAGRAM: usize = 65536;

/// Counters of a UDP echo engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct UdpEchoStats {
    /// Datagrams received.
    pub received: u64,
    /// Datagrams sent back.
    pub sent: u64,
    /// Datagrams not sent back (socket buffer full or send error): UDP may drop, and
    /// blocking the engine on one slow peer would stall all the others.
    pub dropped: u64,
}

/// See the module documentation.
#[derive(Debug)]
pub struct UdpEchoEngine {
    name: String,
    socket: Arc<UdpSocket>,
    work: Duration,
    batch: u32,
    buf: Vec<u8>,
    stats: UdpEchoStats,
    /// Stopped for an upgrade ([`Movable::freeze`]): reads nothing.
    frozen: bool,
}

/// What moves to a new host (with the socket's descriptor).
#[derive(serde::Serialize, serde::Deserialize)]
struct UdpEchoState {
    stats: UdpEchoStats,
}

impl UdpEchoEngine {
    /// Binds a nonblocking socket to `addr` (port 0 picks a free port; see
    /// [`Self::local_addr`]). `work_ns` is busy-waited per datagram.
    pub fn bind(name: impl Into<String>, addr: SocketAddr, work_ns: u64) -> io::Result<Self> {
        Self::from_socket(name, UdpSocket::bind(addr)?, work_ns)
    }

    /// An engine on a socket that is already bound (e.g. handed over by the host process
    /// this one upgrades): datagrams queued in it are still there.
    pub fn from_socket(name: impl Into<String>, socket: UdpSocket, work_ns: u64) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        Ok(Self {
            name: name.into(),
            socket: Arc::new(socket),
            work: Duration::from_nanos(work_ns),
            batch: DEFAULT_BATCH,
            buf: vec![0; MAX_DATAGRAM],
            stats: UdpEchoStats::default(),
            frozen: false,
        })
    }

    /// The engine another host process exported ([`Movable`]): its final state and its
    /// socket (one descriptor, checked to be a UDP socket).
    pub fn import(
        name: impl Into<String>,
        work_ns: u64,
        state: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<Self, String> {
        let st: UdpEchoState = moving::decode(state)?;
        let [fd]: [OwnedFd; 1] = fds
            .try_into()
            .map_err(|v: Vec<OwnedFd>| format!("a UDP echo engine needs 1 descriptor, got {}", v.len()))?;
        let ty =
            rustix::net::sockopt::socket_type(&fd).map_err(|e| format!("the handed-over socket: {e}"))?;
        if ty != rustix::net::SocketType::DGRAM {
            return Err(format!(
                "the handed-over descriptor is not a datagram socket ({ty:?})"
            ));
        }
        let mut e = Self::from_socket(name, UdpSocket::from(fd), work_ns).map_err(|e| e.to_string())?;
        e.stats = st.stats;
        Ok(e)
    }

    /// Changes the per-step bound (at least 1).
    pub fn with_batch(mut self, batch: u32) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Counters.
    pub fn stats(&self) -> UdpEchoStats {
        self.stats
    }
}

impl Engine for UdpEchoEngine {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(&mut self, _now: Instant) -> RunOutcome {
        if self.frozen {
            return RunOutcome::IDLE;
        }
        let mut items = 0u32;
        while items < self.batch {
            let (n, from) = match self.socket.recv_from(&mut self.buf) {
                Ok(got) => got,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    return RunOutcome {
                        items,
                        pending: false,
                    };
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // ICMP errors from an earlier send (port unreachable) surface here as
                // ECONNREFUSED; they concern a peer that left, not this socket.
                Err(e) => {
                    log::debug!("{}: recv: {e}", self.name);
                    continue;
                }
            };
            self.stats.received += 1;
            items += 1;
            spin(self.work);
            match self.socket.send_to(&self.buf[..n], from) {
                Ok(_) => self.stats.sent += 1,
                Err(e) => {
                    log::debug!("{}: send to {from}: {e}", self.name);
                    self.stats.dropped += 1;
                }
            }
        }
        // Stopped at the bound: the socket may hold more, and the runtime's epoll would say
        // so too, but saying it here saves a system call.
        RunOutcome { items, pending: true }
    }

    fn wake_sources(&self) -> Vec<WakeSource> {
        if self.frozen {
            // Level triggered: a readable socket would wake a thread that reads nothing.
            return Vec::new();
        }
        let fd: Arc<dyn AsFd + Send + Sync> = self.socket.clone();
        vec![WakeSource::Readable(fd)]
    }

    fn work_probe(&self) -> WorkProbe {
        WorkProbe::never()
    }

    fn movable(&mut self) -> Option<&mut dyn Movable> {
        Some(self)
    }
}

/// The state is the counters (the socket is the rest); the socket's descriptor is
/// duplicated at `hand_over`, and the kernel keeps its queue for the new host.
impl Movable for UdpEchoEngine {
    fn export_full(&mut self) -> Result<Vec<u8>, String> {
        moving::encode(&UdpEchoState { stats: self.stats })
    }

    fn export_delta(&mut self) -> Result<Vec<u8>, String> {
        self.export_full()
    }

    fn freeze(&mut self) -> Result<Vec<u8>, String> {
        self.frozen = true;
        self.export_full()
    }

    fn thaw(&mut self) {
        self.frozen = false;
    }

    fn hand_over(&mut self) -> Result<Vec<Vec<OwnedFd>>, String> {
        let fd = self
            .socket
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| e.to_string())?;
        Ok(vec![vec![fd]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    #[test]
    fn echoes_datagrams_to_their_source() {
        let mut e = UdpEchoEngine::bind("u", loopback(), 0).unwrap().with_batch(2);
        let server = e.local_addr().unwrap();
        let client = UdpSocket::bind(loopback()).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        for i in 0u8..3 {
            client.send_to(&[i; 10], server).unwrap();
        }
        // Loopback delivery is synchronous, but do not depend on it: run until all three
        // were echoed.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut total = 0;
        while total < 3 && Instant::now() < deadline {
            let out = e.run(Instant::now());
            assert!(out.items <= 2);
            total += out.items;
        }
        assert_eq!(total, 3);
        let mut buf = [0u8; 64];
        for i in 0u8..3 {
            let (n, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!((n, from), (10, server));
            assert_eq!(&buf[..n], &[i; 10]);
        }
        assert_eq!(
            e.stats(),
            UdpEchoStats {
                received: 3,
                sent: 3,
                dropped: 0
            }
        );
        assert_eq!(e.run(Instant::now()), RunOutcome::IDLE);
    }

    #[test]
    fn wakes_on_socket_and_never_probes() {
        let e = UdpEchoEngine::bind("u", loopback(), 0).unwrap();
        assert!(matches!(e.wake_sources()[..], [WakeSource::Readable(_)]));
        assert!(!e.work_probe().has_work());
    }

    #[test]
    fn bind_conflict_is_an_error() {
        let taken = UdpSocket::bind(loopback()).unwrap();
        let err = UdpEchoEngine::bind("u", taken.local_addr().unwrap(), 0).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AddrInUse);
    }
}
