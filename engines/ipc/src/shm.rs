//! Shared memory that can cross a process boundary: an anonymous `memfd`, sized with
//! `ftruncate` and mapped read-write and shared.
//!
//! The rings in [`crate::ring`] live in a [`SharedMem`]. One process creates it; another gets
//! the same pages by receiving the file descriptor (inherited across `exec`, or sent over a
//! Unix socket) and calling [`SharedMem::from_fd`]. A memfd needs no name in the file system,
//! so nothing is left behind when the last process holding it exits.
//!
//! The size is sealed (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`) right after creation, and
//! [`SharedMem::from_fd`] refuses a memfd whose size is not sealed. Otherwise a peer could
//! `ftruncate` the region under our mapping and kill us with `SIGBUS` on the next access: an
//! app must never be able to crash the host that way (nor the host an app).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::{self, MemfdFlags, SealFlags};
use rustix::io::FdFlags;

/// Why a [`SharedMem`] could not be created, mapped or configured.
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    /// A zero-length region cannot be mapped.
    #[error("shared memory region must not be empty")]
    Empty,
    /// The region does not fit in this process's address space.
    #[error("shared memory region of {0} bytes is too large for this address space")]
    TooLarge(u64),
    /// `memfd_create`, `ftruncate`, `fstat` or `fcntl` failed.
    #[error("{op} failed: {source}")]
    Sys {
        /// The system call that failed.
        op: &'static str,
        /// The error it returned.
        source: rustix::io::Errno,
    },
    /// `mmap` failed.
    #[error("mmap failed: {0}")]
    Map(#[from] io::Error),
    /// The descriptor is not a memfd whose size is sealed, so its owner could shrink it under
    /// our mapping.
    #[error("shared memory descriptor is not a size-sealed memfd")]
    NotSealed,
}

/// Seals that make a memfd's size immutable.
const SIZE_SEALS: SealFlags = SealFlags::SHRINK.union(SealFlags::GROW);

/// An owned, shared, read-write mapping of a memfd.
///
/// The mapping stays valid for the life of this value, whatever other processes do with
/// their own mappings or descriptors: the kernel keeps the pages while any mapping exists.
#[derive(Debug)]
pub struct SharedMem {
    // Kept open so that the region can be handed to another process later.
    fd: OwnedFd,
    // MmapRaw rather than MmapMut: the region is written through raw pointers while other
    // processes write it too, so handing out `&mut [u8]` to it would be unsound.
    map: MmapRaw,
}

impl SharedMem {
    /// Creates a new zero-filled region of `len` bytes. `name` only shows up in
    /// `/proc/PID/fd` and `/proc/PID/maps`, for debugging.
    ///
    /// The descriptor is close-on-exec; see [`SharedMem::set_inheritable`].
    pub fn create(name: &str, len: usize) -> Result<Self, ShmError> {
        if len == 0 {
            return Err(ShmError::Empty);
        }
        let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
        let fd = fs::memfd_create(name, flags).map_err(|source| ShmError::Sys {
            op: "memfd_create",
            source,
        })?;
        fs::ftruncate(&fd, len as u64).map_err(|source| ShmError::Sys {
            op: "ftruncate",
            source,
        })?;
        fs::fcntl_add_seals(&fd, SIZE_SEALS | SealFlags::SEAL).map_err(|source| ShmError::Sys {
            op: "fcntl(F_ADD_SEALS)",
            source,
        })?;
        Self::map(fd, len)
    }

    /// Maps the whole of a region created by [`SharedMem::create`], possibly in another
    /// process; its length is taken from the descriptor.
    /// Refuses a descriptor that is not a memfd with a sealed size ([`ShmError::NotSealed`]).
    pub fn from_fd(fd: OwnedFd) -> Result<Self, ShmError> {
        match fs::fcntl_get_seals(&fd) {
            Ok(seals) if seals.contains(SIZE_SEALS) => {}
            _ => return Err(ShmError::NotSealed),
        }
        let stat = fs::fstat(&fd).map_err(|source| ShmError::Sys { op: "fstat", source })?;
        let size = u64::try_from(stat.st_size).unwrap_or(0);
        let len = usize::try_from(size).map_err(|_| ShmError::TooLarge(size))?;
        if len == 0 {
            return Err(ShmError::Empty);
        }
        Self::map(fd, len)
    }

    fn map(fd: OwnedFd, len: usize) -> Result<Self, ShmError> {
        let map = MmapOptions::new().len(len).map_raw(&fd)?;
        Ok(Self { fd, map })
    }

    /// Controls whether the descriptor survives `exec`, which is how a child process started
    /// with `std::process::Command` receives the region (pass the number from
    /// [`AsRawFd::as_raw_fd`](std::os::fd::AsRawFd::as_raw_fd) along, e.g. in an
    /// environment variable).
    pub fn set_inheritable(&self, inheritable: bool) -> Result<(), ShmError> {
        let flags = if inheritable {
            FdFlags::empty()
        } else {
            FdFlags::CLOEXEC
        };
        rustix::io::fcntl_setfd(&self.fd, flags).map_err(|source| ShmError::Sys {
            op: "fcntl(F_SETFD)",
            source,
        })
    }

    /// Length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Always false: empty regions are refused at creation.
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// Start of the mapping; page-aligned. Other processes may write through their own
    /// mappings at any time, so accesses must be atomic or follow a protocol (like the ring's)
    /// that gives one side exclusive use of a range.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }
}

impl AsFd for SharedMem {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_refused() {
        assert!(matches!(SharedMem::create("t", 0), Err(ShmError::Empty)));
    }

    #[test]
    fn second_mapping_sees_writes() {
        let a = SharedMem::create("t", 4096).unwrap();
        let b = SharedMem::from_fd(a.as_fd().try_clone_to_owned().unwrap()).unwrap();
        assert_eq!(b.len(), 4096);
        // SAFETY: both mappings are 4096 bytes long and only this thread touches them.
        unsafe {
            a.as_ptr().add(100).write(42);
            assert_eq!(b.as_ptr().add(100).read(), 42);
        }
    }

    #[test]
    fn size_is_sealed_and_unsealed_memfds_are_refused() {
        let a = SharedMem::create("t", 4096).unwrap();
        assert!(fs::ftruncate(&a, 0).is_err(), "a peer must not shrink the region");
        let loose = fs::memfd_create("loose", MemfdFlags::CLOEXEC).unwrap();
        fs::ftruncate(&loose, 4096).unwrap();
        assert!(matches!(SharedMem::from_fd(loose), Err(ShmError::NotSealed)));
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        assert!(matches!(
            SharedMem::from_fd(file.into()),
            Err(ShmError::NotSealed)
        ));
    }

    #[test]
    fn inheritable_toggles_cloexec() {
        let m = SharedMem::create("t", 64).unwrap();
        m.set_inheritable(true).unwrap();
        assert!(!rustix::io::fcntl_getfd(&m).unwrap().contains(FdFlags::CLOEXEC));
        m.set_inheritable(false).unwrap();
        assert!(rustix::io::fcntl_getfd(&m).unwrap().contains(FdFlags::CLOEXEC));
    }
}
