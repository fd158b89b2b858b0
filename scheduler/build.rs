// SPDX-License-Identifier: GPL-2.0-only
//! Compiles `bpf/main.bpf.c` with clang (>= 18; `BPF_CLANG` picks the binary),
//! generates the libbpf-rs skeleton, and runs bindgen over `bpf/intf.h` so the
//! constants shared with BPF are defined once.

fn main() {
    scx_cargo::BpfBuilder::new()
        .expect("BPF toolchain: install clang >= 18 and set BPF_CLANG (cargo xtask deps does both)")
        .enable_intf("../bpf/intf.h", "bpf_intf.rs")
        .enable_skel("../bpf/main.bpf.c", "bpf")
        .compile_link_gen()
        .expect("building the BPF scheduler failed");
}
