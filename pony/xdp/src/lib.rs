// SPDX-License-Identifier: MIT OR Apache-2.0
//! Pony Express over AF_XDP: a kernel-bypass [`Nic`](pony_engine::nic::Nic) for the Pony
//! engine.
//!
//! ```text
//!   wire ─► driver ─► pony_xdp (bpf/pony_xdp.bpf.c) ─┬─ UDP to bind ─► XSKMAP[queue] ─► RX ring ─┐
//!                                                    └─ the rest ──► kernel stack (XDP_PASS)    │
//!   XdpNic ◄── UMEM frame (payload copied out) ◄───────────────────────────────────────────────┘
//!   XdpNic ──► UMEM frame (headers + payload) ──► TX ring ──► driver ──► wire
//! ```
//!
//! - [`program`]: loads and attaches the XDP program, its XSKMAP and counters;
//! - `xsk`: the AF_XDP socket, UMEM and rings; `ring`: the rings' index protocol;
//! - [`frame`]: Ethernet/IPv4/UDP headers; `neighbour`: peers' MACs from the kernel;
//! - [`XdpNic`]: all of it behind pony-engine's `Nic` trait;
//! - [`handover`]: the NIC's descriptors and state, moved to a new process (upgrade).
//!
//! # The ring code: evaluated crates
//!
//! The XSK rings are a small module of our own (`ring`, over rustix's AF_XDP socket
//! options and `mmap`), its index arithmetic checked by proptest against a queue model
//! across the 2^32 wrap. Evaluated and not taken:
//!
//! - `xdp` (pure Rust, no C): the closest fit, but by its own description early and shaped
//!   by one user's needs (Quilkin); it would be a second, different AF_XDP abstraction
//!   beside the rustix socket calls this crate needs anyway for the UDP port and ioctls.
//! - `xsk-rs`: builds libxdp and libbpf from C source (a second libbpf beside libbpf-rs's),
//!   and libxdp wants to load its own dispatcher program, which we do not want on the
//!   interface next to ours.
//! - `aya`: its `XskMap` is the BPF-side map only; using aya for loading would duplicate
//!   libbpf-rs, which the scheduler already uses, and it has no socket or ring code.
//!
//! The rings are ~200 lines whose only subtle part (acquire/release pairing with the
//! kernel, wrapping indices) is the part the proptests check; loom is not used because
//! the other side of every ring is the kernel, which loom cannot model.
//!
//! Licence: the Rust code is MIT OR Apache-2.0; the BPF program it embeds and loads into
//! the kernel (`bpf/pony_xdp.bpf.c`) is GPL-2.0-only, like every BPF program of the
//! project, and runs in the kernel, not linked with this code. Apps never link the crate
//! (they link pony-express); only snap-host and the experiments do.

mod bpf_skel;
pub mod frame;
pub mod handover;
mod neighbour;
mod nic;
pub mod program;
mod ring;
mod xsk;

pub use nic::{XdpConfig, XdpError, XdpMode, XdpNic, XdpStats};
pub use program::{AttachMode, ProgramCounters};
