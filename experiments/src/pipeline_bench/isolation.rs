// SPDX-License-Identifier: GPL-2.0-only
//! The isolation part of the pipeline bench: two tenants with the same virtual addresses in
//! two virtual networks, each host's tenant an `overlay` stage (snap-policy) in a real
//! `StageEngine` behind a real queue. Host A's tenants encapsulate; what they send is
//! delivered to host B's tenant pipelines, a share of it on purpose to the wrong one
//! (misrouted), corrupted, or re-stamped with the other tenant's VNI by a hostile sender
//! (with a valid checksum). Every packet that comes out of B's stages toward Pony is checked
//! against the tenant its bytes were written by. Outer source addresses are not forged: the
//! overlay trusts the physical network for them (docs/SECURITY.md).
//!
//! ```text
//!  tenant t sender ═ queue ═▶ StageEngine(overlay A_t) ─▶ capture ─(route; misroute,
//!     corrupt, re-stamp)─▶ InboxWire ─▶ StageEngine(overlay B_u) ═ queue ═▶ check: u == t
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{anyhow, Result};
use snap_pipeline::{
    queue, Direction, Downstream, Peer, Pool, PoolConfig, QueueEnd, StageEngine, Wire, WireError,
};
use snap_policy::overlay::wire::{Packet as OverlayPacket, HEADER_LEN};
use snap_policy::stage::OverlayStage;
use snap_runtime::{Engine, WakeSource};

/// What the isolation run counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct IsolationCounts {
    /// Packets the senders offered.
    pub sent: u64,
    /// Packets delivered toward a Pony engine on host B.
    pub delivered: u64,
    /// Packets delivered to another tenant than the one that wrote them (must be 0).
    pub violations: u64,
}

type Inbox = Arc<Mutex<VecDeque<(Vec<u8>, Peer)>>>;

/// A wire that keeps what is sent (host A) or hands out what was put in (host B).
#[derive(Clone, Default)]
struct MemWire {
    sent: Inbox,
    inbox: Inbox,
}

impl Wire for MemWire {
    fn send(&mut self, packet: &[u8], to: Peer) -> Result<(), WireError> {
        self.sent.lock().unwrap().push_back((packet.to_vec(), to));
        Ok(())
    }

    fn recv(&mut self, max: usize, deliver: &mut dyn FnMut(&[u8], Peer)) -> Result<usize, WireError> {
        let mut n = 0;
        while n < max {
            let Some((bytes, peer)) = self.inbox.lock().unwrap().pop_front() else {
                break;
            };
            deliver(&bytes, peer);
            n += 1;
        }
        Ok(n)
    }

    fn wake_source(&self) -> Option<WakeSource> {
        None
    }
}

fn physical(host: usize, tenant: u32) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, host as u8 + 1], 7000 + tenant as u16))
}

fn virt(host: usize) -> SocketAddr {
    SocketAddr::from(([192, 168, 1, host as u8 + 1], 9000))
}

/// Host `me`'s overlay settings for `tenant` (VNI 100 + tenant).
fn settings(me: usize, tenant: u32) -> String {
    let other = 1 - me;
    format!(
        "tenant = [{{ tenant = {tenant}, vni = {vni}, endpoint = \"{}\" }}]\n\
         mapping = [{{ vni = {vni}, endpoint = \"{}\", physical = \"{}\" }}]\n",
        virt(me),
        virt(other),
        physical(other, tenant),
        vni = 100 + tenant,
    )
}

struct Side {
    engine: StageEngine,
    pony: QueueEnd,
    wire: MemWire,
}

fn side(pool: &Arc<Pool>, name: &str, settings: &str) -> Result<Side> {
    let stage = OverlayStage::new(settings).map_err(|e| anyhow!("overlay settings: {e}"))?;
    let (pony, up) = queue(name, 1024, pool)?;
    let wire = MemWire::default();
    let engine = StageEngine::new(
        name,
        Box::new(stage),
        up,
        Downstream::Wire(Box::new(wire.clone())),
        64,
    );
    Ok(Side { engine, pony, wire })
}

/// Sends `packets` per tenant (two tenants) from host A to host B, tampering with every
/// fourth one in turn (misrouted, corrupted, re-stamped), and counts what B delivers.
pub fn run(packets: u64) -> Result<IsolationCounts> {
    let pool = Pool::new(
        "bench-isolation",
        PoolConfig::for_mtu(4096, 1500, HEADER_LEN as u32),
    )?;
    let tenants = [1u32, 2];
    let mut a: Vec<Side> = tenants
        .iter()
        .map(|&t| side(&pool, &format!("bench-iso-a{t}"), &settings(0, t)))
        .collect::<Result<_>>()?;
    let mut b: Vec<Side> = tenants
        .iter()
        .map(|&t| side(&pool, &format!("bench-iso-b{t}"), &settings(1, t)))
        .collect::<Result<_>>()?;
    let mut counts = IsolationCounts::default();
    let mut n = 0u64;
    while counts.sent < packets * 2 {
        for (i, &t) in tenants.iter().enumerate() {
            let mut pkt = pool.alloc(Direction::Tx).ok_or_else(|| anyhow!("pool empty"))?;
            let mut bytes = vec![t as u8; 200];
            bytes[1..9].copy_from_slice(&n.to_le_bytes());
            pkt.copy_from(&bytes).map_err(|e| anyhow!("{e:?}"))?;
            pkt.set_peer(Peer::Ip(virt(1)));
            if a[i].pony.push(pkt).is_ok() {
                counts.sent += 1;
            }
            a[i].pony.flush();
            a[i].engine.run(Instant::now());
        }
        // Route what A sent to B's pipeline for its physical port; tamper with some.
        for (i, side_a) in a.iter().enumerate() {
            let sent: Vec<_> = side_a.wire.sent.lock().unwrap().drain(..).collect();
            for (mut bytes, to) in sent {
                n += 1;
                let Peer::Ip(to) = to else { continue };
                let mut target = usize::from(to.port() - 7001);
                match n % 8 {
                    1 => target = 1 - target,           // misrouted to the other tenant's port
                    3 => bytes[HEADER_LEN / 2] ^= 0x10, // corrupted header
                    5 => {
                        // A hostile sender re-stamps the other tenant's VNI (checksum valid)
                        // and sends to that tenant's port: its source is not mapped there.
                        target = 1 - target;
                        let mut p = OverlayPacket::new_unchecked(&mut bytes[..]);
                        p.set_vni(100 + tenants[1 - i]);
                        p.fill_checksum();
                    }
                    _ => {}
                }
                b[target]
                    .wire
                    .inbox
                    .lock()
                    .unwrap()
                    .push_back((bytes, Peer::Ip(physical(0, tenants[i]))));
            }
        }
        for (u, side_b) in b.iter_mut().enumerate() {
            side_b.engine.run(Instant::now());
            while let Some(pkt) = side_b.pony.pop() {
                counts.delivered += 1;
                if u32::from(pkt.bytes()[0]) != tenants[u] || pkt.meta().tenant != tenants[u] {
                    counts.violations += 1;
                }
            }
            side_b.pony.flush();
        }
    }
    eprintln!(
        "mq-bench-pipeline: isolation: {} packets of 2 tenants sent (1 in 8 misrouted, corrupted or \
         re-stamped each), {} delivered, {} across tenants",
        counts.sent, counts.delivered, counts.violations
    );
    Ok(counts)
}
