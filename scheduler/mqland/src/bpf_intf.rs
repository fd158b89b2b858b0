// SPDX-License-Identifier: GPL-2.0-only
//! Bindings of scx_rustland_core's `intf.h` (the records exchanged with the dispatcher).

#![allow(non_upper_case_globals)]
#![allow(non_camel_case_types)]
#![allow(non_snake_case)]
#![allow(dead_code)]

include!(concat!(env!("OUT_DIR"), "/bpf_intf.rs"));
