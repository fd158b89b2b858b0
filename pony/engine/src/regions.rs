//! The engine's registry of memory regions apps expose to one-sided operations (Read,
//! Write, IndirectRead from peers).
//!
//! An app registers a region by sending a sealed memfd; the engine maps it with
//! [`SharedMem::from_fd`] (which refuses an unsealed one, so the app cannot shrink it under
//! the engine and crash it with `SIGBUS`), gives it a small id and a 64-bit key drawn from
//! the OS random generator. A remote operation must name both: ids are sequential and
//! guessable, keys are not, so a peer that was not told the key cannot touch the region
//! (the RDMA rkey model, with 64 bits instead of 32 and no reuse of ids).
//!
//! Every access goes through [`Regions::check`]: unknown id, wrong key and out-of-bounds
//! (with overflow-checked `offset + len`) are refused and counted, so an operator can see a
//! misbehaving or probing peer in the engine's stats. An unknown id and a wrong key are one
//! answer, [`OpErrorCode::AccessDenied`], and one counter (`access_denied`): a peer without
//! the key cannot tell an existing region from a missing one (the key is compared either
//! way, so the two paths also cost the same). Bounds are checked only after the key, so
//! `OutOfBounds` tells only a key holder the region's size. [`Regions::indirect`] adds one level:
//! it reads a 16-byte entry (`offset: u64`, `len: u32`, 4 reserved bytes, little-endian)
//! from a table region, then checks the target like any other access.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use pony_proto::flow::{HeldBytes, Piece};
use snap_ipc::{SharedMem, ShmError};

use pony_express::app::OpErrorCode;

/// The registry's state in an engine's snapshot ([`Regions::state`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RegionsState {
    /// (region id, app, key), by id.
    pub regions: Vec<(u32, AppId, u64)>,
    next_id: u32,
    refusals: (u64, u64),
}

/// Identifies the app that registered a region (the engine's id for a session).
pub type AppId = u64;

/// Bytes per indirection-table entry.
pub const TABLE_ENTRY_LEN: u64 = 16;

/// Why a region could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    /// The descriptor is not a size-sealed memfd, or could not be mapped.
    #[error("region memory: {0}")]
    Shm(#[from] ShmError),
    /// The region is not the length the app announced.
    #[error("region is {actual} bytes, {announced} announced")]
    LengthMismatch {
        /// Length in the command.
        announced: u64,
        /// Length of the memfd.
        actual: u64,
    },
    /// The OS random generator failed.
    #[error("getrandom: {0}")]
    Random(#[source] rustix::io::Errno),
    /// Region ids are exhausted (ids are never reused, so a stale id stays refused).
    #[error("no region ids left")]
    IdsExhausted,
}

impl RegionError {
    /// The code a completion carries for this failure.
    pub fn code(&self) -> OpErrorCode {
        OpErrorCode::RegionRefused
    }
}

/// What a successful registration gives the app (and through it, its peers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionGrant {
    /// Region id.
    pub region: u32,
    /// Access key.
    pub key: u64,
    /// Bytes.
    pub len: u64,
}

/// Refused accesses, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Refusals {
    /// Unknown region id or wrong key (one answer to the peer: `AccessDenied`).
    pub access_denied: u64,
    /// Out of bounds or overflowing offset/length.
    pub out_of_bounds: u64,
}

#[derive(Debug)]
struct Region {
    app: AppId,
    key: u64,
    /// Shared with the [`RegionPiece`]s of responses not yet acknowledged, which keep the
    /// mapping alive after an unregister.
    mem: Arc<SharedMem>,
}

/// The registry. Checks take `&self` (counters are atomics), so spans borrowed from one
/// check can coexist with further checks (e.g. an indirect read's table and target).
#[derive(Debug, Default)]
pub struct Regions {
    regions: HashMap<u32, Region>,
    next_id: u32,
    access_denied: AtomicU64,
    out_of_bounds: AtomicU64,
}

/// A checked range of a registered region. The app that owns the region may write it
/// concurrently, so it is accessed by copying (`snap_ipc::peer`), never as a Rust slice.
#[derive(Debug)]
pub struct RegionSpan<'a> {
    mem: &'a Arc<SharedMem>,
    offset: usize,
    len: usize,
}

impl RegionSpan<'_> {
    /// Bytes in the span.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the span is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies the span into `out` (which must be exactly as long), with
    /// [`SharedMem::read_at`]: a copy-in, as the app may be writing the bytes.
    pub fn read_into(&self, out: &mut [u8]) -> Result<(), OpErrorCode> {
        self.read_part(0, out)
    }

    /// Copies `out.len()` bytes from `at` bytes into the span into `out`: how a large read
    /// is served in pieces without one allocation of its size.
    pub fn read_part(&self, at: usize, out: &mut [u8]) -> Result<(), OpErrorCode> {
        if at.checked_add(out.len()).is_none_or(|end| end > self.len) {
            return Err(OpErrorCode::TooLarge);
        }
        self.mem
            .read_at(self.offset + at, out)
            .map_err(|_| OpErrorCode::OutOfBounds)
    }

    /// `len` bytes from `at` bytes into the span as a held [`Piece`]: no bytes are copied
    /// now; emitting the packet copies them straight from the region into the packet
    /// ([`RegionPiece`]). `None` if the range is not inside the span.
    pub fn piece(&self, at: usize, len: usize) -> Option<Piece> {
        if at.checked_add(len).is_none_or(|end| end > self.len) {
            return None;
        }
        Some(Piece::held(Arc::new(RegionPiece {
            mem: self.mem.clone(),
            offset: self.offset + at,
            len,
        })))
    }

    /// The span's bytes as a vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.len];
        let _ = self.read_into(&mut v);
        v
    }

    /// Overwrites the span with `data` (exactly as long): a remote Write landing.
    pub fn write_from(&self, data: &[u8]) -> Result<(), OpErrorCode> {
        if data.len() != self.len {
            return Err(OpErrorCode::TooLarge);
        }
        self.mem
            .write_at(self.offset, data)
            .map_err(|_| OpErrorCode::OutOfBounds)
    }
}

/// A checked range of a registered region as [`HeldBytes`]: the bytes of a one-sided read
/// response, copied from the region (with [`SharedMem::read_at`], a copy-in: the app may be
/// writing them) into each packet that carries them, when the packet is emitted. So a read
/// is served with one copy, region to packet, and no buffer of our own in between; the
/// bytes are the region's as each packet is emitted, a retransmission included (like an
/// RDMA NIC reading host memory at transmit time). The piece holds the mapping, so it stays
/// valid after an unregister until the response is acknowledged: at most
/// `engine::target::SERVE_AHEAD` bytes of responses already cut are emitted from a region
/// after it was unregistered (chunks not yet cut are refused then).
#[derive(Debug)]
pub struct RegionPiece {
    mem: Arc<SharedMem>,
    offset: usize,
    len: usize,
}

impl HeldBytes for RegionPiece {
    fn len(&self) -> usize {
        self.len
    }

    fn copy_to(&self, offset: usize, dst: &mut [u8]) {
        // The range was checked against the mapping when the piece was cut (and a sealed
        // memfd cannot shrink), so this fails only if a caller breaks `offset + dst.len()
        // <= len`: zeros then, not a panic on the data path.
        let in_piece = offset.checked_add(dst.len()).is_some_and(|end| end <= self.len);
        if !in_piece || self.mem.read_at(self.offset + offset, dst).is_err() {
            dst.fill(0);
        }
    }
}

/// Compares keys without an early exit, so response timing does not reveal how many
/// leading bytes of a guess were right.
fn keys_match(a: u64, b: u64) -> bool {
    core::hint::black_box(a ^ b) == 0
}

fn random_key() -> Result<u64, RegionError> {
    let mut buf = [0u8; 8];
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(RegionError::Random(e)),
        }
    }
    // Never 0: that is the key an unknown region id is compared against.
    Ok(u64::from_le_bytes(buf).max(1))
}

impl Regions {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps the memfd `fd` sent by `app` and registers it. `announced_len`, if given, must
    /// match the memfd's size (catches an app that sent the wrong descriptor).
    pub fn register(
        &mut self,
        app: AppId,
        fd: OwnedFd,
        announced_len: Option<u64>,
    ) -> Result<RegionGrant, RegionError> {
        let mem = SharedMem::from_fd(fd)?;
        if let Some(announced) = announced_len {
            if announced != mem.len() as u64 {
                return Err(RegionError::LengthMismatch {
                    announced,
                    actual: mem.len() as u64,
                });
            }
        }
        self.register_mem(app, mem)
    }

    /// Registers an already mapped region.
    pub fn register_mem(&mut self, app: AppId, mem: SharedMem) -> Result<RegionGrant, RegionError> {
        let region = self.next_id;
        self.next_id = self.next_id.checked_add(1).ok_or(RegionError::IdsExhausted)?;
        let key = random_key()?;
        let len = mem.len() as u64;
        let mem = Arc::new(mem);
        self.regions.insert(region, Region { app, key, mem });
        Ok(RegionGrant { region, key, len })
    }

    /// The registry for a state snapshot: (id, app, key) per region, the next id, the
    /// refusal counters. The memory itself travels as a handle (its memfd).
    pub fn state(&self) -> RegionsState {
        let mut regions: Vec<_> = self.regions.iter().map(|(&id, r)| (id, r.app, r.key)).collect();
        regions.sort_unstable();
        let r = self.refusals();
        RegionsState {
            regions,
            next_id: self.next_id,
            refusals: (r.access_denied, r.out_of_bounds),
        }
    }

    /// Every region's memory, by id, taken out (an engine handing its state over).
    pub fn drain_mems(&mut self) -> Vec<(u32, Arc<SharedMem>)> {
        self.regions.drain().map(|(id, r)| (id, r.mem)).collect()
    }

    /// The registry `st` describes, each region on the memory `mems` has for its id.
    pub fn adopt(st: RegionsState, mems: &mut HashMap<u32, Arc<SharedMem>>) -> Result<Self, String> {
        let mut regions = HashMap::new();
        for (id, app, key) in st.regions {
            if id >= st.next_id {
                return Err(format!("region {id} at or past the next id {}", st.next_id));
            }
            let mem = mems
                .remove(&id)
                .ok_or_else(|| format!("no memory handed over for region {id}"))?;
            regions.insert(id, Region { app, key, mem });
        }
        Ok(Regions {
            regions,
            next_id: st.next_id,
            access_denied: AtomicU64::new(st.refusals.0),
            out_of_bounds: AtomicU64::new(st.refusals.1),
        })
    }

    /// Checks an access of `len` bytes at `offset` of `region` with `key`.
    pub fn check(&self, region: u32, key: u64, offset: u64, len: u64) -> Result<RegionSpan<'_>, OpErrorCode> {
        let r = self.regions.get(&region);
        // Compared even for an unknown id (against 0, a key `random_key` never draws), so
        // both refusals take the same path.
        let matches = keys_match(r.map_or(0, |r| r.key), key);
        let Some(r) = r.filter(|_| matches) else {
            self.access_denied.fetch_add(1, Relaxed);
            return Err(OpErrorCode::AccessDenied);
        };
        let in_bounds = offset
            .checked_add(len)
            .is_some_and(|end| end <= r.mem.len() as u64);
        if !in_bounds {
            self.out_of_bounds.fetch_add(1, Relaxed);
            return Err(OpErrorCode::OutOfBounds);
        }
        // offset + len <= mem.len() (checked above, no overflow), so both fit in usize.
        Ok(RegionSpan {
            mem: &r.mem,
            offset: offset as usize,
            len: len as usize,
        })
    }

    /// Resolves entry `index` of the `table` region, then checks the access it names in
    /// `region`. Both steps are checked (and refusals counted) like [`Regions::check`].
    pub fn indirect(
        &self,
        table: u32,
        table_key: u64,
        index: u64,
        region: u32,
        key: u64,
    ) -> Result<RegionSpan<'_>, OpErrorCode> {
        let (offset, len) = self.resolve(table, table_key, index)?;
        self.check(region, key, offset, u64::from(len))
    }

    /// Reads (copies in) entry `index` of the `table` region, checked like
    /// [`Regions::check`]: the `(offset, len)` it names, not yet checked against any region.
    pub fn resolve(&self, table: u32, table_key: u64, index: u64) -> Result<(u64, u32), OpErrorCode> {
        let Some(at) = index.checked_mul(TABLE_ENTRY_LEN) else {
            // Count it against the table like any other out-of-bounds access, after the
            // id and key checks so that a probe without the key learns nothing.
            self.check(table, table_key, 0, 0)?;
            self.out_of_bounds.fetch_add(1, Relaxed);
            return Err(OpErrorCode::OutOfBounds);
        };
        let mut entry = [0u8; TABLE_ENTRY_LEN as usize];
        self.check(table, table_key, at, TABLE_ENTRY_LEN)?
            .read_into(&mut entry)?;
        let (offset, rest) = entry.split_at(8);
        let offset = u64::from_le_bytes(offset.try_into().unwrap_or_default());
        let len = u32::from_le_bytes(rest[..4].try_into().unwrap_or_default());
        Ok((offset, len))
    }

    /// Withdraws `region` if `app` registered it.
    pub fn unregister(&mut self, app: AppId, region: u32) -> Result<(), OpErrorCode> {
        match self.regions.get(&region) {
            Some(r) if r.app == app => {
                self.regions.remove(&region);
                Ok(())
            }
            // Another app's region looks the same as a missing one: no probing by id.
            _ => Err(OpErrorCode::UnknownRegion),
        }
    }

    /// Withdraws every region of `app` (it exited or crashed); returns how many.
    pub fn remove_all_of(&mut self, app: AppId) -> usize {
        let before = self.regions.len();
        self.regions.retain(|_, r| r.app != app);
        before - self.regions.len()
    }

    /// Regions `app` has registered now.
    pub fn count_of(&self, app: AppId) -> usize {
        self.regions.values().filter(|r| r.app == app).count()
    }

    /// Registered regions.
    pub fn len(&self) -> usize {
        self.regions.len()
    }

    /// Whether none are registered.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// Refusals so far.
    pub fn refusals(&self) -> Refusals {
        Refusals {
            access_denied: self.access_denied.load(Relaxed),
            out_of_bounds: self.out_of_bounds.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn region_with(data: &[u8]) -> SharedMem {
        let m = SharedMem::create("region", data.len()).unwrap();
        m.write_at(0, data).unwrap();
        m
    }

    /// A response chunk is a held piece of the region: it copies the region's bytes as they
    /// are when it is emitted, only inside its own range, and keeps the mapping alive after
    /// the region is unregistered.
    #[test]
    fn pieces_copy_the_region_when_emitted_and_outlive_an_unregister() {
        let data: Vec<u8> = (0..4096u32).map(|i| (i * 13) as u8).collect();
        let mut regs = Regions::new();
        let g = regs.register_mem(1, region_with(&data)).unwrap();
        let span = regs.check(g.region, g.key, 1000, 2000).unwrap();
        assert!(span.piece(1500, 501).is_none(), "a piece past the span's end");
        let mut piece = span.piece(100, 1000).unwrap();
        assert_eq!(piece.len(), 1000);
        let mut got = vec![0u8; 1000];
        piece.copy_to(&mut got);
        assert_eq!(got, data[1100..2100]);
        // The app writes the region: the piece copies what is there now.
        let mem = &regs.regions[&g.region].mem;
        mem.write_at(1100, &[0xEE; 10]).unwrap();
        let front = piece.split_to(10);
        let mut first = [0u8; 10];
        front.copy_to(&mut first);
        assert_eq!(first, [0xEE; 10]);
        regs.unregister(1, g.region).unwrap();
        assert!(regs.check(g.region, g.key, 0, 1).is_err());
        let mut rest = vec![0u8; 990];
        piece.copy_to(&mut rest);
        assert_eq!(rest, data[1110..2100]);
    }

    #[test]
    fn check_refuses_and_counts() {
        let mut regs = Regions::new();
        let g = regs.register_mem(1, region_with(&[7u8; 4096])).unwrap();
        assert_eq!(
            regs.check(g.region, g.key, 4000, 96).unwrap().to_vec(),
            vec![7u8; 96]
        );
        assert_eq!(regs.check(g.region, g.key, 4096, 0).unwrap().len(), 0);
        // Unknown id and wrong key: the same answer, one counter.
        assert_eq!(
            regs.check(g.region + 1, g.key, 0, 1).unwrap_err(),
            OpErrorCode::AccessDenied
        );
        assert_eq!(
            regs.check(g.region, !g.key, 0, 1).unwrap_err(),
            OpErrorCode::AccessDenied
        );
        // Without the key, bounds are not even looked at.
        assert_eq!(
            regs.check(g.region, !g.key, u64::MAX, 2).unwrap_err(),
            OpErrorCode::AccessDenied
        );
        assert_eq!(
            regs.check(g.region, g.key, 4000, 97).unwrap_err(),
            OpErrorCode::OutOfBounds
        );
        assert_eq!(
            regs.check(g.region, g.key, u64::MAX, 2).unwrap_err(),
            OpErrorCode::OutOfBounds
        );
        assert_eq!(
            regs.check(g.region, g.key, 1, u64::MAX).unwrap_err(),
            OpErrorCode::OutOfBounds
        );
        assert_eq!(
            regs.refusals(),
            Refusals {
                access_denied: 3,
                out_of_bounds: 3
            }
        );
    }

    #[test]
    fn keys_differ_and_ids_are_not_reused() {
        let mut regs = Regions::new();
        let a = regs.register_mem(1, region_with(&[0; 64])).unwrap();
        regs.unregister(1, a.region).unwrap();
        let b = regs.register_mem(1, region_with(&[0; 64])).unwrap();
        assert_ne!(a.key, b.key);
        assert_ne!(a.region, b.region);
        assert_eq!(
            regs.check(a.region, a.key, 0, 1).unwrap_err(),
            OpErrorCode::AccessDenied
        );
    }

    #[test]
    fn unregister_is_per_app_and_crash_cleanup_removes_all() {
        let mut regs = Regions::new();
        let a = regs.register_mem(1, region_with(&[0; 64])).unwrap();
        regs.register_mem(1, region_with(&[0; 64])).unwrap();
        let c = regs.register_mem(2, region_with(&[0; 64])).unwrap();
        assert_eq!(regs.unregister(2, a.region), Err(OpErrorCode::UnknownRegion));
        assert_eq!(regs.remove_all_of(1), 2);
        assert_eq!(regs.len(), 1);
        assert!(regs.check(c.region, c.key, 0, 64).is_ok());
    }

    #[test]
    fn indirect_resolves_and_checks_both_levels() {
        let mut regs = Regions::new();
        let data: Vec<u8> = (0..1024u32).map(|i| i as u8).collect();
        let d = regs.register_mem(1, region_with(&data)).unwrap();
        let mut table = Vec::new();
        for (off, len) in [(10u64, 5u32), (1000, 24), (1020, 5), (u64::MAX - 1, 4)] {
            table.extend_from_slice(&off.to_le_bytes());
            table.extend_from_slice(&len.to_le_bytes());
            table.extend_from_slice(&[0; 4]);
        }
        let t = regs.register_mem(1, region_with(&table)).unwrap();
        let got = regs
            .indirect(t.region, t.key, 1, d.region, d.key)
            .unwrap()
            .to_vec();
        assert_eq!(got, data[1000..1024]);
        assert_eq!(
            regs.indirect(t.region, t.key, 0, d.region, d.key)
                .unwrap()
                .to_vec(),
            data[10..15]
        );
        let err = |i, tk, k| regs.indirect(t.region, tk, i, d.region, k).unwrap_err();
        assert_eq!(err(2, t.key, d.key), OpErrorCode::OutOfBounds);
        assert_eq!(err(3, t.key, d.key), OpErrorCode::OutOfBounds);
        assert_eq!(err(4, t.key, d.key), OpErrorCode::OutOfBounds);
        assert_eq!(err(u64::MAX, t.key, d.key), OpErrorCode::OutOfBounds);
        assert_eq!(err(u64::MAX, !t.key, d.key), OpErrorCode::AccessDenied);
        assert_eq!(err(0, t.key, !d.key), OpErrorCode::AccessDenied);
        assert_eq!(regs.refusals().out_of_bounds, 4);
    }

    #[test]
    fn unsealed_or_wrong_length_memfds_are_refused() {
        let mut regs = Regions::new();
        let loose = rustix::fs::memfd_create("loose", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&loose, 4096).unwrap();
        assert!(matches!(
            regs.register(1, loose, None),
            Err(RegionError::Shm(ShmError::NotSealed))
        ));
        let m = SharedMem::create("r", 4096).unwrap();
        let fd = m.as_fd().try_clone_to_owned().unwrap();
        assert!(matches!(
            regs.register(1, fd, Some(100)),
            Err(RegionError::LengthMismatch {
                announced: 100,
                actual: 4096
            })
        ));
        let fd = m.as_fd().try_clone_to_owned().unwrap();
        assert_eq!(regs.register(1, fd, Some(4096)).unwrap().len, 4096);
    }

    #[test]
    fn writes_land_in_the_apps_mapping() {
        let mut regs = Regions::new();
        let app_side = SharedMem::create("r", 64).unwrap();
        let fd = app_side.as_fd().try_clone_to_owned().unwrap();
        let g = regs.register(1, fd, None).unwrap();
        regs.check(g.region, g.key, 8, 3)
            .unwrap()
            .write_from(b"abc")
            .unwrap();
        let mut got = [0u8; 3];
        app_side.read_at(8, &mut got).unwrap();
        assert_eq!(&got, b"abc");
    }
}
