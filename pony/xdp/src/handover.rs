// SPDX-License-Identifier: MIT OR Apache-2.0
//! An [`XdpNic`] handed over to another process (a `snap-host` upgrade) and rebuilt there,
//! with the program still attached and the socket still in the XSKMAP throughout.
//!
//! The hand-over is one group of descriptors, in this order ([`FDS`]):
//!
//! ```text
//!   0 the AF_XDP socket     its four rings' positions live in the rings, which the new
//!                           process maps again from it; its UMEM registration stays
//!   1 the UMEM's memfd      the same frames, mapped again
//!   2 the NIC's state       a memfd holding a `NicState` (below)
//!   3 the XDP program       kept alive with its maps,
//!   4 the XSKMAP            whose entry for the queue still names this socket,
//!   5 the counters map      read for `status`,
//!   6 the BPF link          the attachment: the program stays on the interface while a
//!                           descriptor of the link is open in either process
//!   7 the reserved UDP port also the neighbour resolver's trigger socket
//! ```
//!
//! The state says where the frames that are the NIC's own are (the rest are in a ring or
//! the kernel, and the rings say which): free transmit frames, receive frames waiting for
//! the fill ring, and received frames taken off the RX ring but not yet handed to the
//! engine (they are delivered by the new process, so nothing received is lost). Its
//! counters and IP identification carry over. The neighbour cache does not: the new
//! process reads the kernel's table again and learns from received frames.
//!
//! `NicState`'s layout, little-endian, checked whole before anything is built:
//!
//! ```text
//!   "PONYXSK\0" | version u16 (1) | frame_size u32 | frame_count u32 | ring_size u32
//!   | queue u32 | zero_copy u8 | attach u8 (0 native, 1 generic) | ip_id u16
//!   | 8 × u64 counters (tx_packets, tx_bytes, tx_full, rx_packets, rx_bytes, rx_oversize,
//!     tx_unresolved, rx_invalid)
//!   | n_tx u32 | n_rx u32 | n_pending u32
//!   | n_tx × addr u64 | n_rx × addr u64 | n_pending × (addr u64, len u32, options u32)
//! ```
//!
//! Every frame address is checked against the UMEM: aligned, in its half (receive frames
//! in the first, transmit frames in the second), none named twice.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use pony_engine::nic::NicStats;
use rustix::net::xdp::{XdpDesc, XdpDescOptions};

use crate::program::AttachMode;
use crate::xsk::Frames;

/// Descriptors in a hand-over (see the module documentation).
pub const FDS: usize = 8;

const MAGIC: &[u8; 8] = b"PONYXSK\0";
/// The state's layout version; a reader refuses any other.
pub const STATE_VERSION: u16 = 1;
const FIXED_LEN: usize = 8 + 2 + 4 * 4 + 1 + 1 + 2 + 8 * 8 + 3 * 4;
/// Largest state accepted: every frame of the largest UMEM named once, as a pending
/// descriptor (16 bytes).
const MAX_STATE: usize = FIXED_LEN + 16 * (1 << 20);

/// What an [`crate::XdpNic`] carries across a hand-over besides its descriptors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NicState {
    pub(crate) frame_size: u32,
    pub(crate) frame_count: u32,
    pub(crate) ring_size: u32,
    pub(crate) queue: u32,
    pub(crate) zero_copy: bool,
    pub(crate) attach: AttachMode,
    pub(crate) ip_id: u16,
    pub(crate) stats: NicStats,
    pub(crate) tx_unresolved: u64,
    pub(crate) rx_invalid: u64,
    pub(crate) frames: Frames,
    /// Received, taken off the RX ring, not yet delivered.
    pub(crate) pending: Vec<XdpDesc>,
}

impl NicState {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let f = &self.frames;
        let mut b =
            Vec::with_capacity(FIXED_LEN + 8 * (f.tx_free.len() + f.rx_done.len()) + 16 * self.pending.len());
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&STATE_VERSION.to_le_bytes());
        for v in [self.frame_size, self.frame_count, self.ring_size, self.queue] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.push(u8::from(self.zero_copy));
        b.push(match self.attach {
            AttachMode::Native => 0,
            AttachMode::Generic => 1,
        });
        b.extend_from_slice(&self.ip_id.to_le_bytes());
        let s = &self.stats;
        for v in [
            s.tx_packets,
            s.tx_bytes,
            s.tx_full,
            s.rx_packets,
            s.rx_bytes,
            s.rx_oversize,
            self.tx_unresolved,
            self.rx_invalid,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for n in [f.tx_free.len(), f.rx_done.len(), self.pending.len()] {
            b.extend_from_slice(&(n as u32).to_le_bytes());
        }
        for a in f.tx_free.iter().chain(&f.rx_done) {
            b.extend_from_slice(&a.to_le_bytes());
        }
        for d in &self.pending {
            b.extend_from_slice(&d.addr.to_le_bytes());
            b.extend_from_slice(&d.len.to_le_bytes());
            b.extend_from_slice(&d.options.bits().to_le_bytes());
        }
        b
    }

    /// Reads and checks a state (layout, sizes, every frame against the UMEM).
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(8)? != MAGIC {
            return Err("not an AF_XDP NIC state (bad magic)".into());
        }
        let version = r.u16()?;
        if version != STATE_VERSION {
            return Err(format!(
                "AF_XDP NIC state version {version} is not supported (this host reads version {STATE_VERSION})"
            ));
        }
        let (frame_size, frame_count, ring_size, queue) = (r.u32()?, r.u32()?, r.u32()?, r.u32()?);
        let zero_copy = match r.u8()? {
            0 => false,
            1 => true,
            z => return Err(format!("zero_copy flag {z}")),
        };
        let attach = match r.u8()? {
            0 => AttachMode::Native,
            1 => AttachMode::Generic,
            a => return Err(format!("attach mode {a}")),
        };
        let ip_id = r.u16()?;
        let mut c = [0u64; 8];
        for v in &mut c {
            *v = r.u64()?;
        }
        let stats = NicStats {
            tx_packets: c[0],
            tx_bytes: c[1],
            tx_full: c[2],
            rx_packets: c[3],
            rx_bytes: c[4],
            rx_oversize: c[5],
        };
        if !matches!(frame_size, 2048 | 4096)
            || !(16..=1 << 20).contains(&frame_count)
            || !ring_size.is_power_of_two()
            || ring_size < 8
        {
            return Err(format!(
                "sizes out of range: frame_size {frame_size}, frame_count {frame_count}, ring_size {ring_size}"
            ));
        }
        let (n_tx, n_rx, n_pending) = (r.u32()? as usize, r.u32()? as usize, r.u32()? as usize);
        let half = frame_count / 2;
        if n_tx > (frame_count - half) as usize || n_rx + n_pending > half as usize {
            return Err(format!(
                "{n_tx} transmit and {} receive frames named, for {frame_count} frames",
                n_rx + n_pending
            ));
        }
        if r.bytes.len() - r.at != 8 * (n_tx + n_rx) + 16 * n_pending {
            return Err("the state's length does not match its frame counts".into());
        }
        let frame = u64::from(frame_size);
        let mut seen = vec![false; frame_count as usize];
        let mut own = |addr: u64, rx: bool| -> Result<u64, String> {
            let index = addr / frame;
            let in_half = if rx {
                index < u64::from(half)
            } else {
                (u64::from(half)..u64::from(frame_count)).contains(&index)
            };
            if !in_half || std::mem::replace(&mut seen[index as usize], true) {
                return Err(format!(
                    "{} frame at {addr:#x} is outside its half of the UMEM or named twice",
                    if rx { "receive" } else { "transmit" }
                ));
            }
            Ok(addr - addr % frame)
        };
        let mut frames = Frames::default();
        for _ in 0..n_tx {
            let a = r.u64()?;
            if a % frame != 0 {
                return Err(format!("transmit frame at {a:#x} is not aligned"));
            }
            frames.tx_free.push(own(a, false)?);
        }
        for _ in 0..n_rx {
            let a = r.u64()?;
            if a % frame != 0 {
                return Err(format!("receive frame at {a:#x} is not aligned"));
            }
            frames.rx_done.push(own(a, true)?);
        }
        let mut pending = Vec::with_capacity(n_pending);
        for _ in 0..n_pending {
            let (addr, len, options) = (r.u64()?, r.u32()?, r.u32()?);
            // A received descriptor lies inside its frame (aligned mode).
            if (addr % frame) + u64::from(len) > frame {
                return Err(format!("received descriptor {addr:#x}+{len} crosses its frame"));
            }
            own(addr, true)?;
            pending.push(XdpDesc {
                addr,
                len,
                options: XdpDescOptions::from_bits_retain(options),
            });
        }
        Ok(Self {
            frame_size,
            frame_count,
            ring_size,
            queue,
            zero_copy,
            attach,
            ip_id,
            stats,
            tx_unresolved: c[6],
            rx_invalid: c[7],
            frames,
            pending,
        })
    }

    /// The state in a memfd of its own (descriptor 2 of the hand-over).
    pub(crate) fn to_memfd(&self) -> io::Result<OwnedFd> {
        let fd = rustix::fs::memfd_create("pony-xdp-state", rustix::fs::MemfdFlags::CLOEXEC)?;
        let mut file = std::fs::File::from(fd);
        file.write_all(&self.encode())?;
        Ok(file.into())
    }

    /// Reads a state from its memfd (bounded: a larger file is refused unread).
    pub(crate) fn from_memfd(fd: OwnedFd) -> Result<Self, String> {
        let size = rustix::fs::fstat(fd.as_fd())
            .map_err(|e| format!("the state's memfd: {e}"))?
            .st_size as u64;
        if size > MAX_STATE as u64 {
            return Err(format!("the state is {size} bytes, more than {MAX_STATE}"));
        }
        let mut file = std::fs::File::from(fd);
        let mut bytes = Vec::with_capacity(size as usize);
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0)).map_err(|e| e.to_string())?;
        file.take(MAX_STATE as u64)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("reading the state: {e}"))?;
        Self::decode(&bytes)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or("the state is cut short")?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn state() -> NicState {
        NicState {
            frame_size: 2048,
            frame_count: 64,
            ring_size: 32,
            queue: 0,
            zero_copy: false,
            attach: AttachMode::Generic,
            ip_id: 77,
            stats: NicStats {
                tx_packets: 1,
                tx_bytes: 2,
                tx_full: 3,
                rx_packets: 4,
                rx_bytes: 5,
                rx_oversize: 6,
            },
            tx_unresolved: 7,
            rx_invalid: 8,
            frames: Frames {
                tx_free: (32..64).map(|i| i * 2048).collect(),
                rx_done: vec![0, 2048],
            },
            pending: vec![XdpDesc {
                addr: 3 * 2048 + 256,
                len: 100,
                options: XdpDescOptions::empty(),
            }],
        }
    }

    #[test]
    fn a_state_reads_back_through_its_memfd() {
        let s = state();
        assert_eq!(NicState::from_memfd(s.to_memfd().unwrap()).unwrap(), s);
    }

    #[test]
    fn frames_outside_their_half_or_named_twice_are_refused() {
        let mut s = state();
        s.frames.rx_done.push(40 * 2048); // a transmit frame as a receive frame
        assert!(NicState::decode(&s.encode())
            .unwrap_err()
            .contains("outside its half"));
        let mut s = state();
        s.pending[0].addr = 2048 + 10; // the same frame as rx_done[1]
        assert!(NicState::decode(&s.encode()).unwrap_err().contains("named twice"));
        let mut s = state();
        s.frames.tx_free[0] += 1;
        assert!(NicState::decode(&s.encode()).unwrap_err().contains("not aligned"));
        let mut s = state();
        s.pending[0].len = 2000;
        assert!(NicState::decode(&s.encode())
            .unwrap_err()
            .contains("crosses its frame"));
        let mut b = state().encode();
        b[8] = 2;
        assert!(NicState::decode(&b)
            .unwrap_err()
            .contains("version 2 is not supported"));
    }

    proptest! {
        /// Damaged states are errors, never panics.
        #[test]
        fn damaged_states_never_panic(at in 0usize..400, byte in any::<u8>(), cut in 0usize..400) {
            let mut b = state().encode();
            if at < b.len() {
                b[at] = byte;
            }
            b.truncate(cut.max(1));
            let _ = NicState::decode(&b);
        }
    }
}
