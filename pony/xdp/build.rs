// SPDX-License-Identifier: MIT OR Apache-2.0
//! Compiles `bpf/pony_xdp.bpf.c` with the scheduler's BPF toolchain (clang >= 18 picked by
//! `BPF_CLANG`, libbpf-cargo through scx_cargo) and generates its libbpf-rs skeleton.

fn main() {
    scx_cargo::BpfBuilder::new()
        .expect("BPF toolchain: install clang >= 18 and set BPF_CLANG (cargo xtask deps does both)")
        .enable_skel("../../bpf/pony_xdp.bpf.c", "bpf")
        .compile_link_gen()
        .expect("building the XDP program failed");
}
