//! The MicroQuanta class-map interface: which threads are in the class, in which class
//! group ([`group`]), and whether the scheduler is loaded ([`sysfs`]).
//!
//! This is the documented interface between `scx_microquanta` and its users (`mqctl`, the
//! Snap engine runtime, tests). It holds no scheduler code, so programs that only join the
//! class stay under MIT OR Apache-2.0 (libbpf-rs is LGPL-2.1 OR BSD-2-Clause).
//!
//! The class is a BPF hash map of thread ids that the scheduler pins at
//! [`TASKS_MAP_PIN`]. Adding a thread id makes the BPF program treat that
//! thread as a MicroQuanta thread from its next scheduling event on; removing
//! it makes it a normal thread again. Because the map is pinned, membership
//! outlives a scheduler restart, and any root process (the Snap host, `mqctl`,
//! a test) can change it without talking to the scheduler process.
//!
//! Each member carries its class group's id; a thread added without a group is in the
//! default group, and threads it creates inherit its group with the class.
//!
//! A member's hrtimer slack is [`CLASS_TIMER_SLACK_NS`] while it is in the class, as the
//! kernel gives SCHED_FIFO and SCHED_DEADLINE threads none: a class thread that sleeps until
//! a deadline wakes at it, not up to the fair class's default 50 µs later, and the class's
//! wakeup latency is the scheduler's, not the timer's. Joining sets it on the thread (it is
//! inherited across fork and kept across exec, as membership is); leaving puts back the
//! thread's default. The kernel also puts back that default when a task leaves an RT policy,
//! and a task's default is the slack of the task that created it: a thread that joins here
//! and then goes to SCHED_FIFO and back sleeps with the fair class's 50 µs again, while one
//! created by a member (the threads and processes of a command `mqctl run` starts) keeps
//! the class's slack as its default, also after it leaves the class.
//!
//! Only root can open the pinned map (bpffs is root-only and the map needs
//! CAP_BPF), which is exactly the access rule the class wants.

use std::io;
use std::path::{Path, PathBuf};

use libbpf_rs::{ErrorKind, MapCore, MapFlags, MapHandle};

pub mod group;
pub mod sysfs;

pub use group::{parse_cpu_list, Budget, Group, Groups, DEFAULT_GROUP, GROUPS_MAP_PIN, MAX_GROUPS};
pub use sysfs::SchedExtState;

/// Where the scheduler pins its BPF objects.
pub const PIN_DIR: &str = "/sys/fs/bpf/scx_microquanta";
/// The pinned class map: key = thread id (u32), value = `struct mq_member` of
/// `bpf/intf.h` ([`MEMBER_VALUE_SIZE`] bytes: time added as u64 ns of
/// CLOCK_MONOTONIC, then the group id as u32, then 4 bytes of padding).
pub const TASKS_MAP_PIN: &str = "/sys/fs/bpf/scx_microquanta/mq_tasks";
/// Size of `struct mq_member`.
pub const MEMBER_VALUE_SIZE: usize = 16;
/// The hrtimer slack of a class member, in ns: the least `/proc/<tid>/timerslack_ns` takes
/// (0 there means "back to the default").
pub const CLASS_TIMER_SLACK_NS: u64 = 1;

/// Why a class operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClassError {
    #[error(
        "the MicroQuanta class map is not pinned at {}: start scx_microquanta first",
        .0.display()
    )]
    NotPinned(PathBuf),
    #[error("permission denied opening {}: only root may change the MicroQuanta class", .0.display())]
    PermissionDenied(PathBuf),
    #[error("thread {0} does not exist")]
    NoSuchThread(u32),
    #[error("the MicroQuanta class is full")]
    Full,
    #[error("BPF map operation on the MicroQuanta class failed: {0}")]
    Bpf(#[source] libbpf_rs::Error),
    #[error("no class group is called {0:?} (`mqctl group list` shows them)")]
    UnknownGroup(String),
    #[error("a class group called {0:?} exists already")]
    GroupExists(String),
    #[error("all {0} class groups besides the default one are in use")]
    TooManyGroups(u32),
    #[error("the default class group takes its budget from scx_microquanta's --runtime-us/--period-us and cannot be changed or removed")]
    DefaultGroup,
    #[error("invalid class group: {0}")]
    InvalidGroup(String),
    #[error(
        "the class groups' budgets on CPU {cpu} would add up to {percent:.1}% of it, over the \
         whole CPU: {groups}"
    )]
    OverCap { cpu: u32, percent: f64, groups: String },
    #[error("setting thread {tid}'s timer slack (/proc/{tid}/timerslack_ns): {source}")]
    TimerSlack {
        tid: u32,
        #[source]
        source: io::Error,
    },
    #[error("setting thread {tid}'s CPU affinity to its class group's CPUs: {source}")]
    Affinity {
        tid: u32,
        #[source]
        source: io::Error,
    },
}

/// Opens a map the scheduler pinned, with the errors a user can act on.
pub(crate) fn open_pinned(path: &Path) -> Result<MapHandle, ClassError> {
    MapHandle::from_pinned_path(path).map_err(|e| match e.kind() {
        ErrorKind::NotFound => ClassError::NotPinned(path.to_path_buf()),
        ErrorKind::PermissionDenied => ClassError::PermissionDenied(path.to_path_buf()),
        _ => ClassError::Bpf(e),
    })
}

fn encode_member(added_ns: u64, group: u32) -> [u8; MEMBER_VALUE_SIZE] {
    let mut v = [0u8; MEMBER_VALUE_SIZE];
    v[..8].copy_from_slice(&added_ns.to_ne_bytes());
    v[8..12].copy_from_slice(&group.to_ne_bytes());
    v
}

fn member_group(v: &[u8]) -> u32 {
    v.get(8..12)
        .and_then(|b| b.try_into().ok())
        .map_or(DEFAULT_GROUP, u32::from_ne_bytes)
}

/// A handle on the MicroQuanta class of a running (or previously run)
/// scheduler.
#[derive(Debug)]
pub struct Class {
    map: MapHandle,
    groups: Groups,
}

impl Class {
    /// Opens the class the scheduler pinned at [`TASKS_MAP_PIN`], and its groups.
    pub fn open() -> Result<Self, ClassError> {
        Self::open_at(Path::new(TASKS_MAP_PIN))
    }

    /// Opens a class map pinned at `path`, and the group map pinned next to it.
    pub fn open_at(path: &Path) -> Result<Self, ClassError> {
        let map = open_pinned(path)?;
        let groups = Groups::open_at(&path.with_file_name("mq_groups"))?;
        Ok(Self { map, groups })
    }

    /// The class groups.
    pub fn groups(&self) -> &Groups {
        &self.groups
    }

    /// Puts thread `tid` into the class, in the default group. Adding a
    /// member again is not an error (it moves to the default group).
    pub fn add(&self, tid: u32) -> Result<(), ClassError> {
        self.put(tid, DEFAULT_GROUP)
    }

    /// Puts thread `tid` into the class, in the group called `group`. If the
    /// group has a CPU set, the thread's CPU affinity becomes that set first
    /// (outside it the scheduler treats the thread as a normal one).
    pub fn add_to_group(&self, tid: u32, group: &str) -> Result<(), ClassError> {
        let g = self.groups.get(group)?;
        if !thread_exists(tid) {
            return Err(ClassError::NoSuchThread(tid));
        }
        if let Some(cpus) = &g.cpus {
            set_affinity(tid, cpus)?;
        }
        self.put(tid, g.id)
    }

    /// The slack first: a thread that cannot get it is not made a member, and one that is
    /// refused membership gets its default back.
    fn put(&self, tid: u32, group: u32) -> Result<(), ClassError> {
        if !thread_exists(tid) {
            return Err(ClassError::NoSuchThread(tid));
        }
        set_timer_slack(tid, CLASS_TIMER_SLACK_NS)?;
        self.map
            .update(
                &tid.to_ne_bytes(),
                &encode_member(monotonic_ns(), group),
                MapFlags::ANY,
            )
            .map_err(|e| {
                let _ = set_timer_slack(tid, 0);
                match e.kind() {
                    ErrorKind::OutOfMemory | ErrorKind::TooBig => ClassError::Full,
                    _ => ClassError::Bpf(e),
                }
            })
    }

    /// The group id of member `tid`; `None` if it is not in the class.
    pub fn group_of(&self, tid: u32) -> Result<Option<u32>, ClassError> {
        self.map
            .lookup(&tid.to_ne_bytes(), MapFlags::ANY)
            .map(|v| v.map(|v| member_group(&v)))
            .map_err(ClassError::Bpf)
    }

    /// The members with their group ids, sorted by thread id.
    pub fn members(&self) -> Vec<(u32, u32)> {
        self.list()
            .into_iter()
            .filter_map(|tid| Some((tid, self.group_of(tid).ok()??)))
            .collect()
    }

    /// Removes the group called `name`: its members go back to the default
    /// group (still in the class), then its slot is freed. Returns how many
    /// members moved.
    pub fn remove_group(&self, name: &str) -> Result<usize, ClassError> {
        if name == group::DEFAULT_GROUP_NAME {
            return Err(ClassError::DefaultGroup);
        }
        let g = self.groups.get(name)?;
        let mut moved = 0;
        for (tid, group) in self.members() {
            if group == g.id {
                // A member that exited meanwhile is gone already: nothing to move.
                let added = self.map.lookup(&tid.to_ne_bytes(), MapFlags::ANY).ok().flatten();
                if let Some(v) = added {
                    let added_ns = v
                        .get(..8)
                        .and_then(|b| b.try_into().ok())
                        .map_or(0, u64::from_ne_bytes);
                    self.map
                        .update(
                            &tid.to_ne_bytes(),
                            &encode_member(added_ns, DEFAULT_GROUP),
                            MapFlags::EXIST,
                        )
                        .or_else(|e| {
                            if e.kind() == ErrorKind::NotFound {
                                Ok(())
                            } else {
                                Err(ClassError::Bpf(e))
                            }
                        })?;
                    moved += 1;
                }
            }
        }
        self.groups.free(g.id)?;
        Ok(moved)
    }

    /// Takes thread `tid` out of the class, with its default timer slack back; `Ok(false)`
    /// if it was not in it.
    pub fn remove(&self, tid: u32) -> Result<bool, ClassError> {
        match self.map.delete(&tid.to_ne_bytes()) {
            // A thread that exited meanwhile has no slack to restore.
            Ok(()) => match set_timer_slack(tid, 0) {
                Err(ClassError::TimerSlack { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                    Ok(true)
                }
                Err(e) => Err(e),
                Ok(()) => Ok(true),
            },
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(ClassError::Bpf(e)),
        }
    }

    /// Whether thread `tid` is in the class.
    pub fn contains(&self, tid: u32) -> Result<bool, ClassError> {
        self.map
            .lookup(&tid.to_ne_bytes(), MapFlags::ANY)
            .map(|v| v.is_some())
            .map_err(ClassError::Bpf)
    }

    /// The thread ids in the class, sorted.
    pub fn list(&self) -> Vec<u32> {
        let mut tids: Vec<u32> = self
            .map
            .keys()
            .filter_map(|key| key.try_into().ok().map(u32::from_ne_bytes))
            .collect();
        tids.sort_unstable();
        tids
    }

    /// Removes members whose thread no longer exists. The BPF program drops
    /// threads that exit while it runs; this catches those that exited while
    /// no scheduler was loaded, before their ids can be reused.
    pub fn prune_exited(&self) -> Result<usize, ClassError> {
        let mut pruned = 0;
        for tid in self.list() {
            if !thread_exists(tid) && self.remove(tid)? {
                pruned += 1;
            }
        }
        Ok(pruned)
    }
}

/// The threads an id names: every current thread of the process if `id` is
/// a process (thread-group leader), else the one thread. Threads created
/// later inherit the class from their creator in the BPF program.
pub fn threads_of(id: u32) -> Result<Vec<u32>, ClassError> {
    if !thread_exists(id) {
        return Err(ClassError::NoSuchThread(id));
    }
    let status = std::fs::read_to_string(format!("/proc/{id}/status")).unwrap_or_default();
    let tgid = status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse::<u32>().ok());
    if tgid != Some(id) {
        return Ok(vec![id]);
    }
    let mut tids: Vec<u32> = std::fs::read_dir(format!("/proc/{id}/task"))
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_else(|_| vec![id]);
    tids.sort_unstable();
    Ok(tids)
}

/// The calling thread's id, the key the class uses.
pub fn current_tid() -> u32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    let tid = unsafe { libc::gettid() };
    tid as u32
}

/// Whether a thread with this id exists (any process's thread: `/proc/<tid>`
/// resolves thread ids too, even though `ls /proc` only shows leaders).
pub fn thread_exists(tid: u32) -> bool {
    tid != 0
        && match std::fs::metadata(format!("/proc/{tid}")) {
            Ok(_) => true,
            Err(e) => e.kind() != io::ErrorKind::NotFound,
        }
}

/// Sets thread `tid`'s hrtimer slack to `ns`; 0 puts back the slack it started with.
/// (Through procfs rather than prctl, which only sets the caller's own.)
pub fn set_timer_slack(tid: u32, ns: u64) -> Result<(), ClassError> {
    std::fs::write(format!("/proc/{tid}/timerslack_ns"), ns.to_string())
        .map_err(|source| ClassError::TimerSlack { tid, source })
}

/// Thread `tid`'s hrtimer slack in ns.
pub fn timer_slack(tid: u32) -> Result<u64, ClassError> {
    let text = std::fs::read_to_string(format!("/proc/{tid}/timerslack_ns"))
        .map_err(|source| ClassError::TimerSlack { tid, source })?;
    text.trim().parse().map_err(|_| ClassError::TimerSlack {
        tid,
        source: io::Error::new(io::ErrorKind::InvalidData, format!("not a number: {text:?}")),
    })
}

/// Restricts thread `tid` to `cpus`.
fn set_affinity(tid: u32, cpus: &[u32]) -> Result<(), ClassError> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set, CPU_SET stays within it (ids are
    // below group::MAX_CPUS, within CPU_SETSIZE), and the syscall only reads it.
    let ret = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu as usize, &mut set);
        }
        libc::sched_setaffinity(tid as libc::pid_t, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if ret != 0 {
        return Err(ClassError::Affinity {
            tid,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_thread_exists_and_a_bogus_one_does_not() {
        assert!(thread_exists(current_tid()));
        assert!(!thread_exists(0));
        // Above the kernel's PID_MAX_LIMIT (4M), so never a real thread.
        assert!(!thread_exists(u32::MAX - 1));
    }

    #[test]
    fn timer_slack_is_set_per_thread_and_zero_puts_the_default_back() {
        std::thread::spawn(|| {
            let tid = current_tid();
            let default = timer_slack(tid).unwrap();
            assert!(default > CLASS_TIMER_SLACK_NS, "default slack {default} ns");
            set_timer_slack(tid, CLASS_TIMER_SLACK_NS).unwrap();
            assert_eq!(timer_slack(tid).unwrap(), CLASS_TIMER_SLACK_NS);
            // Only this thread's: the process's other threads keep theirs.
            assert_eq!(timer_slack(std::process::id()).unwrap(), default);
            set_timer_slack(tid, 0).unwrap();
            assert_eq!(timer_slack(tid).unwrap(), default);
        })
        .join()
        .unwrap();
        assert!(matches!(
            set_timer_slack(u32::MAX - 1, 1),
            Err(ClassError::TimerSlack { .. })
        ));
    }

    #[test]
    fn each_thread_has_its_own_tid() {
        let main_tid = current_tid();
        let other = std::thread::spawn(current_tid).join().unwrap();
        assert_ne!(main_tid, other);
        assert!(main_tid > 0 && other > 0);
    }

    #[test]
    fn a_process_id_names_all_its_threads_and_a_thread_id_only_itself() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            tx.send(current_tid()).unwrap();
            done_rx.recv().unwrap();
        });
        let worker_tid = rx.recv().unwrap();
        let pid = std::process::id();
        let all = threads_of(pid).unwrap();
        assert!(all.contains(&pid) && all.contains(&worker_tid), "{all:?}");
        assert_eq!(threads_of(worker_tid).unwrap(), vec![worker_tid]);
        assert!(matches!(
            threads_of(u32::MAX - 1),
            Err(ClassError::NoSuchThread(_))
        ));
        done_tx.send(()).unwrap();
        worker.join().unwrap();
    }

    #[test]
    fn a_member_value_carries_its_group_after_the_time_added() {
        let v = encode_member(0x0102_0304_0506_0708, 7);
        assert_eq!(v.len(), MEMBER_VALUE_SIZE);
        assert_eq!(
            u64::from_ne_bytes(v[..8].try_into().unwrap()),
            0x0102_0304_0506_0708
        );
        assert_eq!(member_group(&v), 7);
        assert_eq!(
            member_group(&[0u8; 8]),
            DEFAULT_GROUP,
            "a short value is the default group"
        );
    }

    #[test]
    fn opening_a_missing_pin_says_the_scheduler_is_not_running() {
        let err = Class::open_at(Path::new("/nonexistent/mq_tasks")).unwrap_err();
        assert!(matches!(err, ClassError::NotPinned(_)), "{err:?}");
        assert!(err.to_string().contains("start scx_microquanta first"));
    }
}
