//! The policy cores of Snap's packet pipeline, sans-IO: each takes packets (their bytes and
//! the peer they come from or go to) and `now` as arguments and hands back a verdict; none
//! owns a thread, a clock, a socket or shared memory. The stages that run them between two
//! packet queues are built on top (see docs/ENGINES.md).
//!
//! - [`acl`]: ordered allow/deny rules on peer prefix, Pony service and direction, with a
//!   bounded per-flow memo that tells a data packet's service, per-rule hit counters and an
//!   atomic rule-set swap.
//! - [`shaping`]: per-class token buckets whose verdicts are release times, and one
//!   Carousel-style timing wheel that holds delayed packets until then (bounded horizon and
//!   capacity; a packet that does not fit is handed back to its sender, never dropped).
//! - [`overlay`]: a virtual network per tenant: the encapsulation header
//!   ([`overlay::wire`]), the virtual→physical mapping table and checked decapsulation.
//!
//! [`prefix`] is the address prefix the ACL's rules use. [`stage`] runs each core as a
//! `snap_pipeline::Stage` (kinds `acl`, `shaper`, `overlay`); it is the only module that
//! knows the pipeline.

pub mod acl;
pub mod overlay;
pub mod prefix;
pub mod shaping;
pub mod stage;
