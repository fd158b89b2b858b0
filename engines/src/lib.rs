//! The Snap host runtime (not built yet; see the engine-runtime issue).
//!
//! What will live here: engines (single-threaded, stateful tasks with a
//! bounded `run()` step), the lock-free shared-memory rings that feed them,
//! interrupts (eventfd doorbells, epoll on NIC queues), the three scheduling
//! modes (dedicated, spreading in the MicroQuanta class, compacting), and the
//! `snap-host` control plane. This crate is deliberately empty until then:
//! nothing here pretends to work.
