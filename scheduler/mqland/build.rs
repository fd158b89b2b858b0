// SPDX-License-Identifier: GPL-2.0-only
//! Writes scx_rustland_core's BPF dispatcher (`main.bpf.c`, `intf.h`) and its Rust connector
//! (`src/bpf.rs`) into this crate, then compiles the BPF side and generates its skeleton and
//! bindings, as every scheduler on scx_rustland_core does. The policy is all in `src/`.

fn main() {
    scx_rustland_core::RustLandBuilder::new()
        .expect("BPF toolchain: install clang >= 18 and set BPF_CLANG (cargo xtask deps does both)")
        .build()
        .expect("building scx_rustland_core's BPF dispatcher failed");
}
