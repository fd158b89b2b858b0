// SPDX-License-Identifier: GPL-2.0-only
//! The physical floor: two threads pinned to two different cores ping-pong a message over
//! two `snap_ipc::Ring`s (shared memory, spin-polling, no system calls). Nothing that
//! crosses cores can do a round trip faster on this machine.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use snap_ipc::{Consumer, Producer, Ring, SharedMem};

use crate::wakeup::{pin_to_cpu, thread_cpu_ns as own_thread_cpu_ns};

use super::{
    gettid, histogram, payload, record, thread_cpu_ns, BenchConfig, Layout, Measured, Point, Probe, Row,
};
use crate::thread_counters::Counts;

fn ring(size: usize) -> Result<(Producer, Consumer)> {
    let slot = (size + 8).next_multiple_of(64) as u32;
    let len = Ring::required_len(2, slot).map_err(|e| anyhow!("ring shape: {e}"))?;
    let mem = SharedMem::create("pony-bench-floor", len).context("ring memory")?;
    Ok(Ring::create(mem, 2, slot)
        .map_err(|e| anyhow!("ring: {e}"))?
        .split())
}

fn push(p: &mut Producer, msg: &[u8]) -> Result<()> {
    loop {
        match p.push(msg) {
            Ok(()) => return Ok(()),
            Err(snap_ipc::PushError::Full) => std::hint::spin_loop(),
            Err(e) => bail!("push: {e}"),
        }
    }
}

fn pop(c: &mut Consumer, buf: &mut [u8]) -> Result<usize> {
    loop {
        if let Some(n) = c.try_pop(buf).map_err(|e| anyhow!("pop: {e}"))? {
            return Ok(n);
        }
        std::hint::spin_loop();
    }
}

fn one(size: usize, iters: usize, cores: (usize, usize)) -> Result<Measured> {
    let (mut to_b, mut at_b) = ring(size)?;
    let (mut to_a, mut at_a) = ring(size)?;
    let total = iters + (iters / 10).max(5);
    let pong_tid = AtomicI32::new(0);
    let pong_tid = &pong_tid;
    // The pong thread stays alive until ping has read its CPU time.
    let done = AtomicBool::new(false);
    let done = &done;
    std::thread::scope(|s| {
        let pong = s.spawn(move || -> Result<()> {
            pin_to_cpu(cores.1)?;
            pong_tid.store(gettid(), Ordering::Release);
            let mut buf = vec![0; size + 8];
            for _ in 0..total {
                let n = pop(&mut at_b, &mut buf)?;
                push(&mut to_a, &buf[..n])?;
            }
            while !done.load(Ordering::Acquire) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Ok(())
        });
        let ping = s.spawn(move || -> Result<Measured> {
            pin_to_cpu(cores.0)?;
            let tid = loop {
                match pong_tid.load(Ordering::Acquire) {
                    0 => std::hint::spin_loop(),
                    t => break t,
                }
            };
            let data = payload(size);
            let mut buf = vec![0; size + 8];
            let mut hist = histogram();
            let warm = total - iters;
            // Per thread: a running thread's schedstat on another CPU lags until its next
            // tick, so over a short window each is clamped to the wall time it could use.
            let probe = Probe::new(Vec::new(), vec![gettid(), tid]);
            let sample = || {
                (
                    own_thread_cpu_ns(),
                    thread_cpu_ns(tid),
                    Instant::now(),
                    probe.sample().counts,
                )
            };
            let mut first = sample();
            for i in 0..total {
                if i == warm {
                    first = sample();
                }
                let t0 = Instant::now();
                push(&mut to_b, &data)?;
                let n = pop(&mut at_a, &mut buf)?;
                if i >= warm {
                    record(&mut hist, t0.elapsed());
                }
                if n != size {
                    bail!("floor: {n} bytes back for {size}");
                }
            }
            let last = sample();
            done.store(true, Ordering::Release);
            let wall = last.2 - first.2;
            let wall_ns = wall.as_nanos() as u64;
            let ping_ns = last.0.saturating_sub(first.0).min(wall_ns);
            let pong_ns = last.1.saturating_sub(first.1).min(wall_ns);
            let counts = match (first.3, last.3) {
                (Some(a), Some(b)) => Some(b.since(&a)),
                _ => None::<Counts>,
            };
            Ok(Measured {
                hist,
                count: iters as u64,
                wall,
                engine_ns: 0,
                app_ns: ping_ns + pong_ns,
                counts,
            })
        });
        let m = ping.join().map_err(|_| anyhow!("ping thread panicked"));
        // Whatever happened to ping, let pong go.
        done.store(true, Ordering::Release);
        let p = pong.join().map_err(|_| anyhow!("pong thread panicked"))?;
        let m = m??;
        p?;
        Ok(m)
    })
}

/// The floor at every ping-pong size, on CPUs 0 and 1 (both 0 on one CPU).
pub fn run(cfg: &BenchConfig, layout: &Layout) -> Result<Vec<Row>> {
    let cores = (0, usize::from(layout.cpus >= 2));
    cfg.sizes
        .iter()
        .map(|&size| {
            let m = one(size, cfg.iterations(size), cores).with_context(|| format!("floor at {size} B"))?;
            Ok(m.row(Point {
                transport: "shm_floor",
                nic: "shm",
                path: "local",
                mode: "spin",
                test: "ping_pong",
                msg_bytes: size,
                window: 1,
                engines: 1,
            }))
        })
        .collect()
}
