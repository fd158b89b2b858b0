//! The pipeline as a NIC: [`PipeNic`] is the Pony engine's end of a pipeline's first
//! queue, and [`NicWire`] lets a pipeline's last stage own any [`Nic`].
//!
//! ```text
//!   PonyEngine ── PipeNic ══ queue 0 ══ stage … stage ══ last stage ── NicWire<UdpNic | XdpNic | ShmWire>
//!      emit_in_place: Pony writes each packet once, straight into a pool buffer
//!      recv_in_place: Pony parses each packet where the last stage put it
//! ```
//!
//! So a packet's bytes are written once by Pony and copied once more only by the stage
//! that owns the NIC (by `sendmsg`, or into a UMEM frame), and the same on receive.
//! Backpressure: a full first queue, or an empty pool, is [`NicError::WouldBlock`], as a
//! full NIC ring is; the transport keeps its packets and retries.

use std::time::Instant;

use snap_pipeline::{Direction, Peer, QueueEnd, Wire, WireError};

use super::{FaultStats, Nic, NicError, NicStats, PeerAddr, WakeSource, WorkProbe};

/// Packets per emit round (one doorbell ring each).
const BATCH: usize = 32;

fn to_peer(p: &PeerAddr) -> Peer {
    match p {
        PeerAddr::Udp(a) => Peer::Ip(*a),
        PeerAddr::Shm => Peer::Wire,
    }
}

fn from_peer(p: Peer) -> Option<PeerAddr> {
    match p {
        Peer::Ip(a) => Some(PeerAddr::Udp(a)),
        Peer::Wire => Some(PeerAddr::Shm),
        Peer::None => None,
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct PipeNic {
    end: QueueEnd,
    mtu: usize,
    stats: NicStats,
    /// Received packets without a peer (a stage forgot to set it): dropped.
    rx_no_peer: u64,
}

impl PipeNic {
    /// Pony's NIC side over `end` (the upper end of the pipeline's first queue), for
    /// packets of up to `mtu` bytes (at most what a pool buffer holds after its headroom).
    pub fn new(end: QueueEnd, mtu: usize) -> Self {
        let mtu = mtu.min(end.pool().mtu());
        Self {
            end,
            mtu,
            stats: NicStats::default(),
            rx_no_peer: 0,
        }
    }

    /// Received packets dropped because no stage had set where they came from.
    pub fn rx_no_peer(&self) -> u64 {
        self.rx_no_peer
    }

    fn push(&mut self, pkt: snap_pipeline::Packet) -> Result<(), NicError> {
        let len = pkt.len() as u64;
        match self.end.push(pkt) {
            Ok(()) => {
                self.stats.tx_packets += 1;
                self.stats.tx_bytes += len;
                Ok(())
            }
            Err(_refused) => {
                self.stats.tx_full += 1;
                Err(NicError::WouldBlock)
            }
        }
    }
}

impl Nic for PipeNic {
    fn send(&mut self, packet: &[u8], to: &PeerAddr) -> Result<(), NicError> {
        if packet.len() > self.mtu {
            return Err(NicError::TooLarge {
                len: packet.len(),
                mtu: self.mtu,
            });
        }
        if !self.end.has_room() {
            self.stats.tx_full += 1;
            return Err(NicError::WouldBlock);
        }
        let Some(mut pkt) = self.end.pool().alloc(Direction::Tx) else {
            self.stats.tx_full += 1;
            return Err(NicError::WouldBlock);
        };
        pkt.copy_from(packet).map_err(|_| NicError::TooLarge {
            len: packet.len(),
            mtu: self.mtu,
        })?;
        pkt.set_peer(to_peer(to));
        let r = self.push(pkt);
        self.end.flush();
        r
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<(usize, PeerAddr)>, NicError> {
        loop {
            let Some(pkt) = self.end.pop() else {
                self.end.flush();
                return Ok(None);
            };
            let Some(from) = from_peer(pkt.peer()) else {
                self.rx_no_peer += 1;
                continue;
            };
            if pkt.len() > buf.len() {
                self.stats.rx_oversize += 1;
                continue;
            }
            buf[..pkt.len()].copy_from_slice(pkt.bytes());
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += pkt.len() as u64;
            self.end.flush();
            return Ok(Some((pkt.len(), from)));
        }
    }

    fn recv_in_place(
        &mut self,
        max: usize,
        deliver: &mut dyn FnMut(&[u8], PeerAddr),
    ) -> Result<usize, NicError> {
        let mut n = 0;
        while n < max {
            let Some(pkt) = self.end.pop() else { break };
            let Some(from) = from_peer(pkt.peer()) else {
                self.rx_no_peer += 1;
                continue;
            };
            if pkt.len() > self.mtu {
                self.stats.rx_oversize += 1;
                continue;
            }
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += pkt.len() as u64;
            deliver(pkt.bytes(), from);
            n += 1;
            // Dropping `pkt` here returns its buffer to the pool.
        }
        self.end.flush();
        Ok(n)
    }

    fn emits_in_place(&self) -> bool {
        true
    }

    fn emit_in_place(
        &mut self,
        to: &PeerAddr,
        max: usize,
        emit: &mut dyn FnMut(&mut [u8]) -> Option<usize>,
    ) -> Result<usize, NicError> {
        let peer = to_peer(to);
        let mtu = self.mtu;
        let mut n = 0;
        while n < max && self.end.has_room() {
            // An empty pool is a full NIC: stop, as when the ring is full.
            let Some(mut pkt) = self.end.pool().alloc(Direction::Tx) else {
                break;
            };
            let mut emitted = None;
            pkt.fill(|room| {
                let room = &mut room[..mtu];
                emitted = emit(room);
                emitted.unwrap_or(0).min(room.len())
            });
            if emitted.is_none() {
                break; // `pkt` goes back to the pool unsent.
            }
            pkt.set_peer(peer);
            // Cannot be refused: has_room said a slot is free and only we push here.
            self.push(pkt)?;
            n += 1;
        }
        self.end.flush();
        Ok(n)
    }

    fn wake_source(&self) -> Option<WakeSource> {
        Some(self.end.wake_source())
    }

    fn work_probe(&self) -> WorkProbe {
        self.end.work_probe()
    }

    fn max_batch(&self) -> usize {
        BATCH
    }

    fn mtu(&self) -> usize {
        self.mtu
    }

    fn stats(&self) -> NicStats {
        self.stats
    }
}

/// Any [`Nic`] as the [`Wire`] of a pipeline's last stage.
#[derive(Debug)]
pub struct NicWire<N>(pub N);

impl<N: Nic> Wire for NicWire<N> {
    fn send(&mut self, packet: &[u8], to: Peer) -> Result<(), WireError> {
        let to = from_peer(to).ok_or_else(|| WireError::Failed("packet without a peer".into()))?;
        match self.0.send(packet, &to) {
            Ok(()) => Ok(()),
            Err(NicError::WouldBlock) => Err(WireError::WouldBlock),
            Err(e) => Err(WireError::Failed(e.to_string())),
        }
    }

    fn recv(&mut self, max: usize, deliver: &mut dyn FnMut(&[u8], Peer)) -> Result<usize, WireError> {
        self.0
            .recv_in_place(max, &mut |b, from| deliver(b, to_peer(&from)))
            .map_err(|e| WireError::Failed(e.to_string()))
    }

    fn wake_source(&self) -> Option<WakeSource> {
        self.0.wake_source()
    }

    fn work_probe(&self) -> WorkProbe {
        self.0.work_probe()
    }

    fn poll_at(&self) -> Option<Instant> {
        self.0.poll_at()
    }

    fn counters(&self) -> Option<serde_json::Value> {
        let s = self.0.stats();
        let faults = self.0.fault_stats().map(|[tx, rx]: [FaultStats; 2]| {
            serde_json::json!({"tx_dropped": tx.dropped, "rx_dropped": rx.dropped})
        });
        Some(serde_json::json!({
            "tx_packets": s.tx_packets,
            "tx_bytes": s.tx_bytes,
            "tx_full": s.tx_full,
            "rx_packets": s.rx_packets,
            "rx_bytes": s.rx_bytes,
            "rx_oversize": s.rx_oversize,
            "faults": faults,
        }))
    }
}

#[cfg(test)]
mod tests;
