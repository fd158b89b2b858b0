// SPDX-License-Identifier: GPL-2.0-only
//! `scx_mqland`: the MicroQuanta policy of `scx_microquanta` with its decisions taken in
//! userspace, on `scx_rustland_core`. The BPF side is rustland_core's generic dispatcher: it
//! queues every task that needs a decision to this process through a ring buffer and
//! dispatches what this process sends back (task, CPU, slice, vtime).
//!
//! ```text
//!   kernel ──enqueue──► rustland BPF ──ring buffer──► Policy (src/policy.rs)
//!                            ▲                          class FIFO / normal tree,
//!                            └──user ring buffer──────  per-CPU budget (src/budget.rs)
//! ```
//!
//! What it cannot do that the BPF scheduler does, because rustland_core gives a userspace
//! policy no way to (the measurements are in docs/MICROQUANTA.md):
//! - no preemption: a class wakeup waits for a CPU to come free (a slice ending, at the tick
//!   at the latest), where `scx_microquanta` kicks a CPU running normal work at once;
//! - no timer below the tick: a slice (the class's budget included) ends at the first tick
//!   after it expires, where `scx_microquanta` arms a per-CPU hrtimer;
//! - no inheritance of membership by threads a class member creates (see `membership`);
//! - a wakeup that finds an idle CPU is dispatched by the kernel without a decision here.

mod bpf_intf;
mod bpf_skel;
pub use bpf_skel::*;
// Written by scx_rustland_core's build step, not ours to restyle or lint.
#[rustfmt::skip]
#[allow(clippy::all)]
mod bpf;
mod budget;
mod membership;
mod policy;
mod stats;

use std::mem::MaybeUninit;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bpf::{BpfScheduler, DispatchedTask, QueuedTask, RL_CPU_ANY};
use clap::Parser;
use libbpf_rs::OpenObject;
use log::{info, warn};
use mq_sched_cli::{init_logging, preflight, PolicyArgs};
use scx_utils::UserExitInfo;

use budget::Bandwidth;
use membership::Membership;
use policy::{Config, Decision, Policy, Queued};
use stats::{Report, Snapshot};

/// scx_mqland: Snap's MicroQuanta class with its decisions taken in userspace.
///
/// The same policy as scx_microquanta (class threads first and round-robin, RUNTIME out of
/// every PERIOD per CPU while normal tasks compete, normal tasks by virtual time), on
/// scx_rustland_core: every decision is a round trip to this process. It exists to show
/// what putting the policy in userspace costs; use scx_microquanta to run engines.
#[derive(Debug, Parser)]
#[command(version)]
struct Opts {
    #[command(flatten)]
    policy: PolicyArgs,

    /// Print statistics every SECS seconds: decisions, the scheduler's own CPU time, and per
    /// CPU the MicroQuanta share and throttles.
    #[arg(long, value_name = "SECS")]
    stats: Option<f64>,

    /// Print statistics as JSON lines instead of text (with --stats).
    #[arg(long)]
    stats_json: bool,

    /// Exit debug dump buffer length (0 = kernel default).
    #[arg(long, default_value_t = 0)]
    exit_dump_len: u32,

    /// More output; -vv also shows libbpf's and the dispatcher's debug messages.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

impl Opts {
    fn validate(&self) -> Result<()> {
        self.policy.validate()?;
        if let Some(secs) = self.stats {
            if !(secs.is_finite() && secs > 0.0) {
                bail!("--stats {secs} must be a positive number of seconds");
            }
        }
        Ok(())
    }

    fn config(&self) -> Config {
        Config {
            bandwidth: Bandwidth {
                period_ns: self.policy.period_us * 1000,
                runtime_ns: self.policy.runtime_us * 1000,
            },
            class_slice_ns: self.policy.class_slice_us * 1000,
            normal_slice_ns: self.policy.normal_slice_us * 1000,
        }
    }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

struct Scheduler<'obj> {
    bpf: BpfScheduler<'obj>,
    policy: Policy<QueuedTask>,
    members: Membership,
    stats_every: Option<Duration>,
    stats_json: bool,
    /// Where reports go: the printer thread ([`spawn_printer`]).
    printer: std::sync::mpsc::SyncSender<String>,
}

impl<'obj> Scheduler<'obj> {
    fn init(
        opts: &Opts,
        open_object: &'obj mut MaybeUninit<OpenObject>,
        printer: std::sync::mpsc::SyncSender<String>,
    ) -> Result<Self> {
        let nr_cpus = libbpf_rs::num_possible_cpus().context("counting possible CPUs")?;
        // Membership first: the map and its pin need memory mappings, which the dispatcher's
        // allocator forbids once it has locked the scheduler's memory.
        let members = Membership::open()?;
        let bpf = BpfScheduler::init(
            open_object,
            None,
            opts.exit_dump_len,
            false, // full switch: in partial mode every normal task would outrank the class
            opts.verbose > 1,
            true, // a wakeup that finds an idle CPU runs there without a round trip
            false,
            opts.policy.class_slice_us.min(opts.policy.normal_slice_us) * 1000,
            "mqland",
        )?;
        info!(
            "scx_mqland attached: {} CPUs, period {} µs, runtime {} µs, {} class members (scx_rustland_core {})",
            nr_cpus,
            opts.policy.period_us,
            opts.policy.runtime_us,
            members.len(),
            scx_rustland_core::VERSION
        );
        Ok(Self {
            bpf,
            policy: Policy::new(opts.config(), nr_cpus, monotonic_ns()),
            members,
            stats_every: opts.stats.map(Duration::from_secs_f64),
            stats_json: opts.stats_json,
            printer,
        })
    }

    fn snapshot(&mut self) -> Snapshot {
        Snapshot {
            taken: Instant::now(),
            counts: self.policy.counts(),
            cpus: self
                .policy
                .cpus()
                .iter()
                .map(|b| (b.class_run_ns, b.throttles))
                .collect(),
            kernel_dispatches: *self.bpf.nr_kernel_dispatches_mut(),
            congested: *self.bpf.nr_sched_congested_mut(),
            process_cpu_ns: stats::process_cpu_ns(),
        }
    }

    /// One round: take every queued task, hand one decision to the dispatcher, and tell it
    /// how many tasks still wait here (it calls us again while any do).
    fn schedule(&mut self) {
        // The dispatcher runs this process only while it believes work is pending: queued
        // tasks in its ring, or a count of tasks held here. Draining the ring empties the
        // first before the count is told at the end of the round, so a preemption in between
        // (a slice ending in the middle of a round) would leave the drained tasks runnable
        // but invisible, and this process unscheduled until the dispatcher's 1 s heartbeat
        // (seen: every CPU idle, three runnable tasks queued, the scheduler runnable 0.9 s).
        // Claiming one more than is held for the whole round closes that window.
        *self.bpf.nr_scheduled_mut() = self.policy.pending() as u64 + 1;
        self.members.refresh();
        let now = monotonic_ns();
        loop {
            match self.bpf.dequeue_task() {
                Ok(Some(task)) => {
                    let q = Queued {
                        pid: task.pid,
                        cpu: task.cpu,
                        start_ns: task.start_ts,
                        stop_ns: task.stop_ts,
                        weight: task.weight,
                        vtime: task.vtime,
                    };
                    let class = self.members.contains(task.pid);
                    self.policy.enqueue(now, q, class, task);
                }
                Ok(None) => break,
                Err(err) => {
                    warn!("reading the dispatcher's queue: error {err}");
                    break;
                }
            }
        }
        if let Some(decision) = self.policy.next(now) {
            self.dispatch(decision);
        }
        self.bpf.notify_complete(self.policy.pending() as u64);
    }

    fn dispatch(&mut self, d: Decision<QueuedTask>) {
        let task = &d.task;
        let mut out = DispatchedTask::new(task);
        out.slice_ns = d.slice_ns;
        out.vtime = d.vtime;
        // An idle CPU if there is one, else the first CPU that comes free (the shared queue
        // is ordered by vtime, so the class goes first there too).
        out.cpu = match self.bpf.select_cpu(task.pid, task.cpu, task.flags) {
            cpu if cpu >= 0 => cpu,
            _ => RL_CPU_ANY,
        };
        if self.bpf.dispatch_task(&out).is_err() {
            let q = Queued {
                pid: task.pid,
                cpu: task.cpu,
                start_ns: task.start_ts,
                stop_ns: task.stop_ts,
                weight: task.weight,
                vtime: task.vtime,
            };
            self.policy.requeue(d, q);
        }
    }

    fn run(&mut self) -> Result<UserExitInfo> {
        let mut last = self.snapshot();
        while !self.bpf.exited() {
            self.schedule();
            let Some(every) = self.stats_every else {
                continue;
            };
            if last.taken.elapsed() < every {
                continue;
            }
            let now = self.snapshot();
            let report = Report::between(&last, &now, self.members.len());
            let line = if self.stats_json {
                serde_json::to_string(&report)?
            } else {
                report.format()
            };
            // Never wait for the printer: a report it has no room for is dropped.
            let _ = self.printer.try_send(line);
            last = now;
        }
        self.bpf.shutdown_and_report()
    }
}

/// Starts the thread that writes the statistics to stdout. The scheduling loop must never
/// block on output: a write to a console or pipe can wait for a task (an unbound kworker, a
/// reader) that only this loop would schedule, and then nothing runs until the kernel's
/// watchdog ejects the scheduler. Started before the dispatcher locks this process's memory
/// (a thread's stack is a new mapping).
///
/// The thread runs SCHED_FIFO (priority 1), outside sched_ext: every thread of this process
/// allocates through scx_rustland_core's allocator, one mutex, so a printer that this loop
/// had to schedule could be preempted holding it, and the loop's next allocation would then
/// sleep on it with nobody left to run the printer (a 7.5 s runnable-task stall in the full
/// suite: both CPUs idle, the printer runnable, the loop asleep). As an RT task it runs
/// whenever it is runnable and lets go of the lock at once.
fn spawn_printer() -> Result<std::sync::mpsc::SyncSender<String>> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<String>(16);
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<std::io::Result<()>>(1);
    std::thread::Builder::new()
        .name("mqland-stats".into())
        .spawn(move || {
            use std::io::Write as _;
            let param = libc::sched_param { sched_priority: 1 };
            // SAFETY: plain syscall on the calling thread with a valid parameter.
            let rt = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
            let _ = ready_tx.send(if rt == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            });
            if rt != 0 {
                return;
            }
            for line in rx {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
        })
        .context("starting the statistics printer thread")?;
    ready_rx
        .recv()
        .context("the statistics printer thread ended at once")?
        .context("making the statistics printer thread SCHED_FIFO")?;
    Ok(tx)
}

/// Prints an error as its chain of causes, without the backtrace that `RUST_BACKTRACE=1`
/// (set by our VM runs) has anyhow print: scx_rustland_core's global allocator serves
/// everything from a fixed 64 MiB arena, the symbolizer's tables for an error's backtrace do
/// not fit in what is left of it, and the failed allocation hangs the process instead of
/// ending it.
fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let opts = Opts::parse();
    init_logging(opts.verbose)?;
    opts.validate()?;
    preflight("scx_mqland")?;
    // rustland_core installs the Ctrl-C handler (and stops the loop through `exited()`).
    let printer = spawn_printer()?;
    let mut open_object = MaybeUninit::uninit();
    loop {
        let mut sched = Scheduler::init(&opts, &mut open_object, printer.clone())?;
        let exit = sched.run()?;
        drop(sched);
        if !exit.should_restart() {
            // An ejection by the kernel (stall, error) came back above as an error with its
            // reason; what is left is a detach asked for (Ctrl-C, SIGTERM, sysrq).
            info!("detached; all tasks are back on the fair class");
            return Ok(());
        }
        info!("the kernel asked for a restart");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Opts> {
        let opts = Opts::try_parse_from(std::iter::once("scx_mqland").chain(args.iter().copied()))?;
        opts.validate()?;
        Ok(opts)
    }

    #[test]
    fn flags_and_defaults_are_scx_microquantas() {
        let opts = parse(&[]).unwrap();
        assert_eq!((opts.policy.period_us, opts.policy.runtime_us), (40, 20));
        assert_eq!(
            (opts.policy.class_slice_us, opts.policy.normal_slice_us),
            (1000, 3000)
        );
        assert!(parse(&[
            "--period-us",
            "1000",
            "--runtime-us",
            "200",
            "--stats",
            "1",
            "--stats-json"
        ])
        .is_ok());
    }

    #[test]
    fn nonsense_values_are_refused() {
        let err = parse(&["--period-us", "40", "--runtime-us", "50"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--runtime-us 50") && err.contains("(40)"), "{err}");
        assert!(parse(&["--runtime-us", "0"]).is_err());
        assert!(parse(&["--period-us", "1"]).is_err());
        assert!(parse(&["--class-slice-us", "0"]).is_err());
        assert!(parse(&["--stats", "-1"]).is_err());
    }
}
