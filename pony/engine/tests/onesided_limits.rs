//! The one-sided size limit and chunked serving, between two Pony engines in their own
//! runtimes over a shared-memory wire: a read over the serving engine's
//! `max_onesided_bytes` is refused with `TooLarge` (counted) while the engine goes on
//! serving another app, and a read just under the limit arrives byte-exact without the
//! serving engine ever making an allocation anywhere near the read's size.
//!
//! The binary's global allocator records the largest single allocation made by threads
//! other than the test's own (the engines' runtime threads), which is how "never one
//! allocation proportional to the request" is checked. One test per binary, so no other
//! test's allocations are counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use pony_engine::nic::{ShmWire, ShmWireConfig};
use pony_engine::{PonyConfig, PonyEngine};
use pony_express::app::{AppSession, Command, Completion, OpErrorCode};
use pony_express::pool::BufIdx;
use snap_ipc::SharedMem;
use snap_runtime::EngineHandle;

mod common;

use common::{host_with, stats, Host};

const DEADLINE: Duration = Duration::from_secs(20);
const LIMIT: u32 = 8 << 20;

struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Set on the test's own thread, whose allocations (expected bytes, results) are not
    /// the engines'.
    static EXEMPT: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards to the system allocator; only records sizes on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !EXEMPT.try_with(Cell::get).unwrap_or(true) {
            LARGEST.fetch_max(layout.size(), Relaxed);
        }
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !EXEMPT.try_with(Cell::get).unwrap_or(true) {
            LARGEST.fetch_max(new_size, Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn host(name: &str, nic: ShmWire, max_onesided_bytes: u32) -> Host {
    let cfg = PonyConfig {
        max_onesided_bytes,
        ..PonyConfig::default()
    };
    host_with(name, nic, cfg)
}

fn attach(h: &EngineHandle) -> (u64, AppSession) {
    let (id, app, _) = common::attach(h);
    (id, app)
}

fn wait(app: &mut AppSession, what: &str) -> Completion {
    common::wait_for(app, DEADLINE, what)
}

/// Opens a flow from `a` to `b` (which listens on `service`); returns a's flow.
fn connect(a: &mut AppSession, b: &mut AppSession, service: u32, first: bool) -> u64 {
    if first {
        b.submit(&Command::Listen { cookie: 7, service }).unwrap();
        assert_eq!(wait(b, "Listening"), Completion::Listening { cookie: 7 });
    }
    a.submit(&Command::OpenFlow {
        cookie: 1,
        peer: "shm".into(),
        service,
    })
    .unwrap();
    let Completion::FlowOpened { result: Ok(fa), .. } = wait(a, "FlowOpened") else {
        panic!("open failed")
    };
    let Completion::FlowAccepted { .. } = wait(b, "FlowAccepted") else {
        panic!("no accept")
    };
    fa
}

/// Reads `len` bytes at `offset` of (`region`, `key`) over `flow` into a fresh chain.
fn read(
    app: &mut AppSession,
    flow: u64,
    (region, key): (u32, u64),
    offset: u64,
    len: u32,
) -> Result<Vec<u8>, OpErrorCode> {
    let chain = app.pool().alloc_chain(len as usize).unwrap();
    app.submit(&Command::Read {
        flow,
        region,
        key,
        offset,
        len,
        local: chain.head.0,
        cookie: 5,
    })
    .unwrap();
    let Completion::ReadDone { result, .. } = wait(app, "ReadDone") else {
        panic!("expected ReadDone")
    };
    match result {
        Ok(n) => {
            let mut out = Vec::new();
            app.take_received(chain.head.0, n, &mut out).unwrap();
            Ok(out)
        }
        Err(e) => {
            app.pool().release_chain(BufIdx(chain.head.0)).unwrap();
            Err(e)
        }
    }
}

fn byte(i: usize) -> u8 {
    (i * 13 + i / 4093) as u8
}

#[test]
fn oversized_reads_are_refused_and_large_ones_are_served_in_chunks() {
    EXEMPT.with(|e| e.set(true));
    let (wa, wb) = ShmWire::pair(ShmWireConfig::default()).unwrap();
    // A may ask for anything its pool holds; B serves at most LIMIT bytes per op.
    let ha = host("pony-a", wa, u32::MAX);
    let hb = host("pony-b", wb, LIMIT);
    let (_, mut a1) = attach(&ha.h);
    let (_, mut a2) = attach(&ha.h);
    let (sb, mut b) = attach(&hb.h);
    let flow1 = connect(&mut a1, &mut b, 9, true);
    let flow2 = connect(&mut a2, &mut b, 9, false);

    // B's 12 MiB region, larger than the limit.
    const REGION: usize = 12 << 20;
    let mem = SharedMem::create("big-region", REGION).unwrap();
    let pattern: Vec<u8> = (0..REGION).map(byte).collect();
    mem.write_at(0, &pattern).unwrap();
    let g =
        hb.h.control::<PonyEngine, _>(move |e| e.register_region_local(sb, mem))
            .unwrap()
            .unwrap();
    let target = (g.region, g.key);

    // Over the limit: refused with TooLarge by B, counted there, whether the region is
    // large enough (12 MiB) or not (the limit is checked before the bounds).
    assert_eq!(
        read(&mut a1, flow1, target, 0, LIMIT + 1),
        Err(OpErrorCode::TooLarge)
    );
    assert_eq!(
        read(&mut a1, flow1, target, 4 << 20, 12 << 20),
        Err(OpErrorCode::TooLarge)
    );
    let s = stats(&hb.h);
    assert_eq!((s.onesided_too_large, s.ops_refused), (2, 2));

    // B keeps serving: another app reads just under the limit, byte-exact, and the
    // refused app can still read.
    LARGEST.store(0, Relaxed);
    let offset = 3 << 20;
    let len = LIMIT - 1000;
    let got = read(&mut a2, flow2, target, offset, len).unwrap();
    assert!(
        got == pattern[offset as usize..offset as usize + len as usize],
        "bytes differ"
    );
    let got = read(&mut a1, flow1, target, 100, 5000).unwrap();
    assert_eq!(got, pattern[100..5100]);
    let largest = LARGEST.load(Relaxed);
    assert!(
        largest < (LIMIT / 8) as usize,
        "an engine allocated {largest} bytes at once serving an {len}-byte read"
    );
    eprintln!("largest single allocation by the engines during the 8 MiB read: {largest} bytes");
    let s = stats(&hb.h);
    assert_eq!((s.ops_served, s.onesided_too_large), (2, 2));
}
