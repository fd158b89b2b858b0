// SPDX-License-Identifier: GPL-2.0-only
//! How an experiment is being run: natively, in a KVM guest, or under TCG
//! emulation (`cargo xtask vm` sets `MQ_ACCEL`), and under TCG what the guest's
//! clocks count (`MQ_GUEST_CLOCK`: the host's time, or one ns per instruction).
//!
//! Under TCG a context switch or timer interrupt costs around a hundred
//! times what it does on hardware, so a 20 µs budget every 40 µs buys the
//! guest almost nothing but switching. Latency experiments therefore scale
//! the class's period under TCG, keeping runtime/period (the share) the same,
//! and say so in their output.

/// `native`, or what `cargo xtask vm` says the guest runs under (`kvm`, `tcg`).
pub fn name() -> String {
    std::env::var("MQ_ACCEL").unwrap_or_else(|_| "native".into())
}

/// Whether the guest runs under TCG.
pub fn is_tcg() -> bool {
    name() == "tcg"
}

/// Whether the guest's clocks count its instructions (qemu's icount, `cargo xtask vm
/// --clock instructions`): time then passes only as the guest executes, so a duration is a
/// path's length and no host stall is in it.
pub fn instruction_clock() -> bool {
    std::env::var("MQ_GUEST_CLOCK").is_ok_and(|c| c == "instructions")
}

/// Whether a duration measured here is the guest's own: on hardware, under KVM, or under TCG
/// with the instruction clock; not under TCG on the host's clock, where the emulator's stalls
/// are in every duration.
pub fn durations_are_the_guests() -> bool {
    !is_tcg() || instruction_clock()
}

/// The kernel patch's default bandwidth (runtime 20 µs every 40 µs).
pub const PATCH_PERIOD_US: u64 = 40;
pub const PATCH_RUNTIME_US: u64 = 20;
/// Under TCG: the same 50% share at a 25x longer period.
pub const TCG_PERIOD_US: u64 = 1000;
pub const TCG_RUNTIME_US: u64 = 500;

/// `(period_us, runtime_us)` for latency experiments on this accelerator.
pub fn latency_bandwidth_us() -> (u64, u64) {
    if is_tcg() {
        (TCG_PERIOD_US, TCG_RUNTIME_US)
    } else {
        (PATCH_PERIOD_US, PATCH_RUNTIME_US)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_bandwidths_give_the_same_share() {
        assert_eq!(PATCH_RUNTIME_US * TCG_PERIOD_US, TCG_RUNTIME_US * PATCH_PERIOD_US);
    }
}
