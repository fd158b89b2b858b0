// SPDX-License-Identifier: MIT OR Apache-2.0
//! The libbpf-rs skeleton generated from `bpf/pony_xdp.bpf.c` by `build.rs`.
#![allow(clippy::all, missing_docs, non_camel_case_types, non_snake_case, dead_code)]

include!(concat!(env!("OUT_DIR"), "/bpf_skel.rs"));
