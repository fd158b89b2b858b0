//! `cargo xtask bench`: benchmarks that run one of our measurement programs in the sched_ext
//! VM (and, for `modes` and `pony`, natively too; `upgrade`, `efficiency` and `idle` natively
//! only), and turn its
//! machine-readable report into files under `target/experiments/<name>/` (JSON for tools,
//! markdown and SVG plots for people).
//!
//! Each benchmark is a nested subcommand with its own module, so that the command line,
//! the output folder and the report of one benchmark stay independent of the others.

/// `cargo xtask bench efficiency`: the library-OS baseline vs Snap's modes, natively.
pub mod efficiency;
mod efficiency_plot;
/// `cargo xtask bench idle`: spreading vs dedicated with idle states allowed vs polling.
pub mod idle;
mod idle_plot;
/// `cargo xtask bench modes`: the scheduling modes natively and in the VM.
pub mod modes;
mod modes_plot;
mod mqland_report;
/// `cargo xtask bench pipeline`: what each pipeline stage adds to Pony's round trip.
pub mod pipeline;
mod pipeline_plot;
pub(crate) mod plot;
/// `cargo xtask bench pony`: Pony Express vs Linux TCP natively (veth) and in the VM.
pub mod pony;
pub(crate) mod pony_plot;
mod report;
/// `record` turns `mq-bench-sched`'s output into the files and tables; `cargo xtask demo`
/// runs it in its own boot and reports through the same code.
pub mod sched;
/// Running a measurement program natively and in the VM, and reading its tagged report
/// back from guest output (`cargo xtask demo` reads `mq-demo`'s with it too).
pub(crate) mod two_runs;
/// `record` turns `mq-bench-upgrade`'s report into the summary and the RTT-over-time plot.
pub mod upgrade;
mod upgrade_plot;

pub use report::TCG_NOTE;

use anyhow::Result;

use crate::Ctx;

/// Options of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCmd,
}

#[derive(Debug, clap::Subcommand)]
enum BenchCmd {
    /// MicroQuanta vs EEVDF, SCHED_FIFO and SCHED_DEADLINE: wakeup latency, bandwidth
    /// conformance and cyclictest in one boot (runs `mq-bench-sched`).
    Sched(sched::SchedArgs),
    /// Snap's dedicated, spreading and compacting modes under an open-loop echo load:
    /// latency, throughput and cores, natively (EEVDF) and in the VM with MicroQuanta
    /// (runs `mq-bench-modes`).
    Modes(modes::ModesArgs),
    /// Pony Express vs Linux TCP (our echo and sockperf) on a veth pair between two network
    /// namespaces (root; loopback in the VM), the shm wire and the shared-memory floor: RTT,
    /// throughput, cores, context switches, one-sided reads per core, per engine mode and
    /// NIC, 1 to 10 engines per host, and the targets; natively (EEVDF) and in the VM with
    /// MicroQuanta (runs `mq-bench-pony`).
    Pony(pony::PonyArgs),
    /// What each stage of a Pony engine's pipeline adds to Pony's 64 B round trip, against
    /// Pony alone in the same run (interleaved rounds), and the ≤ 10 % target; natively
    /// (veth) and in the VM with MicroQuanta (runs `mq-bench-pipeline`).
    Pipeline(pipeline::PipelineArgs),
    /// Transparent upgrade under load: two snap-host processes in two network namespaces
    /// (root; loopback otherwise), a checked ping-pong and bulk stream between their Pony
    /// apps over 1, 100 and 1000 flows, one host upgraded repeatedly with `snapctl upgrade`:
    /// blackout and brownout per engine, the apps' view over time, exact lost, duplicated
    /// and reordered counts; natively only (runs `mq-bench-upgrade`).
    Upgrade(upgrade::UpgradeArgs),
    /// CPU efficiency: N apps (1, 2, 4, 8) at low, medium and high load with the Pony stack
    /// linked into each app and spinning there (the library-OS baseline) against one
    /// snap-host in dedicated, spreading and compacting mode: the stack's cores, p50/p99,
    /// the target (compacting ≤ 0.25x the baseline's cores at ≤ 2x its p99, 8 apps, low
    /// load); natively only, as root (runs `mq-bench-efficiency`).
    Efficiency(efficiency::EfficiencyArgs),
    /// Spreading vs dedicated engines' round trips with idle CPUs allowed to enter their
    /// idle states vs kept polling (cpuidle), natively only, as root (runs `mq-bench-idle`).
    Idle(idle::IdleArgs),
}

pub fn run(ctx: &Ctx, args: &BenchArgs) -> Result<()> {
    match &args.command {
        BenchCmd::Sched(args) => sched::run(ctx, args),
        BenchCmd::Modes(args) => modes::run(ctx, args),
        BenchCmd::Pony(args) => pony::run(ctx, args),
        BenchCmd::Pipeline(args) => pipeline::run(ctx, args),
        BenchCmd::Upgrade(args) => upgrade::run(ctx, args),
        BenchCmd::Efficiency(args) => efficiency::run(ctx, args),
        BenchCmd::Idle(args) => idle::run(ctx, args),
    }
}
