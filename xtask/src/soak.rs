//! `cargo xtask soak`: the long form of the soak test (`host/tests/soak`): two `snap-host`
//! processes in two network namespaces joined by a veth pair, each NIC injecting loss,
//! duplication, reordering and corruption, and rounds of 100 000 messages over 64 streams
//! until the time is up; the test prints the summary (messages, bytes, faults injected,
//! retransmissions, p50/p99 message latency, errors). It runs on this machine, not in the
//! VM, and needs root and iproute2's `ip` (it fails saying so without them).

use anyhow::{bail, Result};

use crate::{cargo, sys, Ctx};

/// Options of `cargo xtask soak`.
#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// How long to run, in minutes; no round starts after that (a round takes seconds).
    #[arg(long, default_value_t = 10.0)]
    pub minutes: f64,
}

/// Runs the ignored long-form test with the duration in `SNAP_SOAK_MINUTES`.
pub fn run(ctx: &Ctx, args: &SoakArgs) -> Result<()> {
    if !(args.minutes.is_finite() && args.minutes > 0.0) {
        bail!("--minutes must be a positive number, not {}", args.minutes);
    }
    let mut cmd = cargo::command(
        &ctx.deps,
        &ctx.ws,
        &[
            "test",
            "-p",
            "snap-host",
            "--test",
            "soak",
            "--",
            "--ignored",
            "--exact",
            "soak_for_minutes",
            "--nocapture",
        ],
    );
    cmd.env("SNAP_SOAK_MINUTES", args.minutes.to_string());
    println!(
        "soak: {} minute(s) of traffic between two hosts over veth",
        args.minutes
    );
    sys::run(&mut cmd)
}
