//! `cargo xtask`: the project's developer commands (dependencies, the sched_ext kernel, the
//! qemu VM, the test suite, the demo, the benchmarks, the experiments' report and the soak), written in Rust so they need nothing
//! but cargo and behave the same on a laptop and in CI.

mod accel;
mod apt;
mod bench;
mod cargo;
mod demo;
mod deps;
mod experiments;
mod initramfs;
mod kernel;
mod logscan;
mod qemu_loop;
mod soak;
mod steal;
mod sys;
mod test;
mod version;
mod vm;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::accel::{AccelChoice, GuestClock};

/// What every subcommand after `deps` works with.
pub struct Ctx {
    pub deps: deps::Deps,
    pub ws: cargo::Workspace,
}

/// Developer commands of the scx_microquanta workspace.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Check the system packages we need; install missing ones (as root) with apt.
    Deps,
    /// Provide a kernel with sched_ext (given, cached, or downloaded from Debian).
    Kernel {
        /// Use this kernel image (bzImage) instead; also $MQ_KERNEL.
        #[arg(long, value_name = "PATH")]
        kernel: Option<PathBuf>,
    },
    /// Build the workspace (release) and run a command as root in a VM on the sched_ext kernel.
    Vm(VmArgs),
    /// Run fmt, clippy, the host tests, and the sched_ext tests in a VM.
    Test(test::TestArgs),
    /// Run the wakeup-latency demo in a VM and summarise it.
    Demo(demo::DemoArgs),
    /// Run a benchmark in a VM; write its results under target/experiments/.
    Bench(bench::BenchArgs),
    /// Run every experiment of the Snap paper (natively, and in one VM boot where sched_ext
    /// is needed) and write the report: target/experiments/report/ (index.html, report.md,
    /// summary.json), checked in headless Chromium.
    Experiments(experiments::ExperimentsArgs),
    /// Soak Pony between two hosts over veth with faults injected, then summarise (root).
    Soak(soak::SoakArgs),
}

#[derive(Debug, clap::Args)]
struct VmArgs {
    /// Virtual CPUs.
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// Under TCG, run qemu's main-loop thread SCHED_FIFO on the host, as `demo` and `bench`
    /// do, so that guest timers fire on time.
    #[arg(long)]
    main_loop_fifo: bool,
    /// Guest memory in MiB.
    #[arg(long = "mem", value_name = "MIB", default_value_t = 2048)]
    mem_mib: u32,
    /// How qemu runs the VM: auto probes KVM once and falls back to TCG.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    accel: AccelChoice,
    /// What the guest's clocks count under TCG.
    #[arg(long, value_enum, default_value_t = GuestClock::Host)]
    clock: GuestClock,
    /// Seconds before the VM is killed.
    #[arg(long = "timeout", value_name = "SECS", default_value_t = 600)]
    timeout_secs: u64,
    /// Kernel image (bzImage); default: $MQ_KERNEL, the cache, or a download.
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// Run the command on this host instead (needs root and a host kernel with sched_ext).
    #[arg(long)]
    native: bool,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    if let Cmd::Deps = cli.command {
        deps::run()?;
        return Ok(ExitCode::SUCCESS);
    }
    let ctx = Ctx {
        deps: deps::ensure()?,
        ws: cargo::workspace()?,
    };
    match cli.command {
        Cmd::Deps => unreachable!("handled above"),
        Cmd::Kernel { kernel } => kernel::run(kernel)?,
        Cmd::Vm(args) => return run_vm(&ctx, args),
        Cmd::Test(args) => test::run(&ctx, &args)?,
        Cmd::Demo(args) => demo::run(&ctx, &args)?,
        Cmd::Bench(args) => bench::run(&ctx, &args)?,
        Cmd::Experiments(args) => experiments::run(&ctx, &args)?,
        Cmd::Soak(args) => soak::run(&ctx, &args)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `cargo xtask vm`: exits with the command's own status.
fn run_vm(ctx: &Ctx, args: VmArgs) -> Result<ExitCode> {
    let (release_dir, kernel) = vm::prepare_release(ctx, args.native, args.kernel)?;
    let spec = vm::VmSpec {
        cpus: args.cpus,
        mem_mib: args.mem_mib,
        accel: args.accel,
        timeout: Duration::from_secs(args.timeout_secs),
        kernel: &kernel,
        bin_dirs: vec![release_dir],
        extra_files: Vec::new(),
        env: Vec::new(),
        script: sys::quote_all(&args.command) + "\n",
        allow_log_patterns: Vec::new(),
        native: args.native,
        main_loop_fifo: args.main_loop_fifo,
        clock: args.clock,
    };
    let outcome = vm::run(ctx, &spec)?;
    println!("vm: kernel console log: {}", outcome.console_log.display());
    Ok(ExitCode::from(u8::try_from(outcome.exit_status).unwrap_or(1)))
}
