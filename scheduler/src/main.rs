// SPDX-License-Identifier: GPL-2.0-only
//! `scx_microquanta`: loads the MicroQuanta BPF scheduler (`bpf/main.bpf.c`),
//! pins its class map, serves its statistics (`scx_stats`), and detaches
//! cleanly on Ctrl-C; with `--monitor`, reads those of the running one.
//!
//! If the kernel ejects the scheduler (watchdog stall, BPF error, SysRq-S),
//! every task falls back to the fair class on its own; we print the kernel's
//! exit reason (UEI) and exit non-zero, or restart when the kernel asks for it.

mod bpf_intf;
mod bpf_skel;
mod stats;
mod wait;

use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use libbpf_rs::{MapCore, MapHandle, OpenObject};
use log::{debug, info, warn};
use mq_class::group::{self, Group, Groups};
use mq_class::{Class, GROUPS_MAP_PIN, PIN_DIR, TASKS_MAP_PIN};
use mq_sched_cli::{init_logging, preflight, PolicyArgs};
use scx_utils::{scx_ops_attach, scx_ops_load, scx_ops_open, uei_exited, uei_report, UserExitInfo};

use bpf_skel::{BpfSkel, BpfSkelBuilder};
use stats::run_time::{Progs, RunTimeStats};
use stats::serve::Server as StatsServer;
use stats::{Report, StatsReader};
use wait::{Shutdown, Woken};

/// The longest the loader sleeps without looking at the scheduler's exit state, should the
/// BPF exit notice not wake it (scx's schedulers look every second).
const EXIT_CHECK: Duration = Duration::from_secs(1);

/// scx_microquanta: Snap's MicroQuanta scheduling class as a sched_ext scheduler.
///
/// Threads in the MicroQuanta class (see `class` in the scheduler crate) run
/// before every normal task: on wakeup they take an idle CPU or preempt one
/// that runs normal work. Per CPU they may use RUNTIME out of every PERIOD
/// while normal tasks want that CPU, and all of it when nothing else does.
/// Every other task is a normal task: normal tasks share the remaining time
/// in proportion to their weights.
#[derive(Debug, Parser)]
#[command(version)]
struct Opts {
    #[command(flatten)]
    policy: PolicyArgs,

    /// sched_ext watchdog: eject the scheduler if a runnable task waits this
    /// long (milliseconds, 0 = kernel default of 30 s). Tests set it low to
    /// prove that nothing starves.
    #[arg(long, default_value_t = 0)]
    watchdog_timeout_ms: u32,

    /// Print statistics every SECS seconds: counters, then per CPU the
    /// MicroQuanta share, throttles, kicks, class wakeup-to-run latency and
    /// budget overrun.
    #[arg(long, value_name = "SECS")]
    stats: Option<f64>,

    /// Do not load a scheduler: print the statistics of the running one every
    /// SECS seconds (an `scx_stats` client of its --stats-socket).
    #[arg(long, value_name = "SECS", conflicts_with = "stats")]
    monitor: Option<f64>,

    /// The UNIX socket on which the scheduler serves its statistics
    /// (`scx_stats`) and which --monitor reads.
    #[arg(long, value_name = "PATH", default_value = stats::DEFAULT_SOCKET)]
    stats_socket: PathBuf,

    /// Print statistics as JSON lines instead of text (with --stats or
    /// --monitor).
    #[arg(long)]
    stats_json: bool,

    /// Add each BPF callback's calls and mean run time to the statistics.
    /// Turns on the kernel's BPF run-time statistics while the scheduler
    /// runs, which costs every BPF program on the machine two clock reads
    /// per call: for profiling, not for production.
    #[arg(long, conflicts_with = "monitor")]
    callback_run_time: bool,

    /// Exit debug dump buffer length (0 = kernel default).
    #[arg(long, default_value_t = 0)]
    exit_dump_len: u32,

    /// More output; -vv also shows libbpf's debug messages.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

// mq_class encodes the pinned maps' values by hand (it must not depend on this GPL crate):
// its layout must be bindgen's rendering of bpf/intf.h.
const _: () = {
    assert!(std::mem::size_of::<bpf_intf::mq_group>() == group::GROUP_VALUE_SIZE);
    assert!(std::mem::size_of::<bpf_intf::mq_member>() == mq_class::MEMBER_VALUE_SIZE);
    assert!(std::mem::offset_of!(bpf_intf::mq_group, name) == group::GROUP_VALUE_SIZE - group::NAME_LEN);
    assert!(std::mem::offset_of!(bpf_intf::mq_member, group) == 8);
    assert!(bpf_intf::mq_consts_MQ_MAX_GROUPS == group::MAX_GROUPS);
    assert!(bpf_intf::mq_consts_MQ_MAX_CPUS == group::MAX_CPUS);
    assert!(bpf_intf::mq_consts_MQ_GROUP_NAME_LEN as usize == group::NAME_LEN);
};

impl Opts {
    fn validate(&self) -> Result<()> {
        self.policy.validate()?;
        if self.watchdog_timeout_ms > 30_000 {
            bail!(
                "--watchdog-timeout-ms {} exceeds the kernel's 30000 ms limit",
                self.watchdog_timeout_ms
            );
        }
        for (flag, value) in [("--stats", self.stats), ("--monitor", self.monitor)] {
            if let Some(secs) = value {
                if !(secs.is_finite() && secs > 0.0) {
                    bail!("{flag} {secs} must be a positive number of seconds");
                }
            }
        }
        Ok(())
    }
}

/// Logs how many instructions the kernel's verifier checked for each callback (the number
/// `veristat` reports): what a decision may cost, comparable across builds.
fn log_verified_insns(skel: &BpfSkel<'_>) {
    use libbpf_rs::skel::Skel;
    use std::os::fd::AsFd;

    let mut counts = Vec::new();
    for prog in skel.object().progs() {
        if let Some(info) = stats::run_time::prog_info(prog.as_fd()) {
            counts.push(format!(
                "{}={}",
                prog.name().to_string_lossy(),
                info.verified_insns
            ));
        }
    }
    info!("verified instructions per callback: {}", counts.join(" "));
}

struct Scheduler<'obj> {
    skel: BpfSkel<'obj>,
    struct_ops: Option<libbpf_rs::Link>,
    class: Arc<Class>,
    stats: Arc<StatsReader>,
    stats_server: Option<StatsServer>,
    /// Held while the callbacks' run time is counted (`--callback-run-time`).
    _run_time: Option<RunTimeStats>,
}

impl<'obj> Scheduler<'obj> {
    fn init(opts: &Opts, open_object: &'obj mut MaybeUninit<OpenObject>) -> Result<Self> {
        let mut builder = BpfSkelBuilder::default();
        builder.obj_builder.debug(opts.verbose > 1);
        let mut skel = scx_ops_open!(builder, open_object, microquanta_ops, None)?;

        let ops = skel.struct_ops.microquanta_ops_mut();
        ops.exit_dump_len = opts.exit_dump_len;
        ops.timeout_ms = opts.watchdog_timeout_ms;

        let nr_cpus = libbpf_rs::num_possible_cpus().context("counting possible CPUs")?;
        if nr_cpus > bpf_intf::mq_consts_MQ_MAX_CPUS as usize {
            bail!(
                "{nr_cpus} CPUs exceed the {} this build supports",
                bpf_intf::mq_consts_MQ_MAX_CPUS
            );
        }
        let rodata = skel
            .maps
            .rodata_data
            .as_mut()
            .context("BPF object has no rodata")?;
        rodata.normal_slice_ns = opts.policy.normal_slice_us * 1000;
        rodata.class_slice_ns = opts.policy.class_slice_us * 1000;
        rodata.mq_period_ns = opts.policy.period_us * 1000;
        rodata.mq_runtime_ns = opts.policy.runtime_us * 1000;
        rodata.nr_cpus = nr_cpus as u32;

        // Keep the class and its groups across restarts: reuse the pinned maps
        // when they have the shape this build expects, else start with empty
        // ones (both, so that no member names a group that is not there).
        let pin = Path::new(TASKS_MAP_PIN);
        let groups_pin = Path::new(GROUPS_MAP_PIN);
        let reused =
            reusable_pin(pin, &skel.maps.mq_tasks)? & reusable_pin(groups_pin, &skel.maps.mq_groups)?;
        if reused {
            skel.maps
                .mq_tasks
                .reuse_pinned_map(pin)
                .with_context(|| format!("reusing {}", pin.display()))?;
            skel.maps
                .mq_groups
                .reuse_pinned_map(groups_pin)
                .with_context(|| format!("reusing {}", groups_pin.display()))?;
        } else {
            for p in [pin, groups_pin] {
                let _ = std::fs::remove_file(p);
            }
        }

        let mut skel = scx_ops_load!(skel, microquanta_ops, uei)?;
        log_verified_insns(&skel);
        if !reused {
            std::fs::create_dir_all(PIN_DIR)
                .with_context(|| format!("creating {} (is bpffs mounted on /sys/fs/bpf?)", PIN_DIR))?;
            skel.maps
                .mq_tasks
                .pin(pin)
                .with_context(|| format!("pinning {}", pin.display()))?;
            skel.maps
                .mq_groups
                .pin(groups_pin)
                .with_context(|| format!("pinning {}", groups_pin.display()))?;
        }
        set_default_group(
            &Groups::from_handle(MapHandle::try_from(&skel.maps.mq_groups)?),
            opts,
        )?;
        let mut reader = StatsReader::new(
            MapHandle::try_from(&skel.maps.stats)?,
            MapHandle::try_from(&skel.maps.hists)?,
        );
        let run_time = if opts.callback_run_time {
            use libbpf_rs::skel::Skel;
            use std::os::fd::AsFd;
            let run_time = RunTimeStats::enable()?;
            let progs = skel
                .object()
                .progs()
                .map(|p| {
                    let name = p.name().to_string_lossy().into_owned();
                    let fd = p
                        .as_fd()
                        .try_clone_to_owned()
                        .with_context(|| format!("keeping a descriptor of {name}"))?;
                    Ok((name, fd))
                })
                .collect::<Result<Vec<_>>>()?;
            reader = reader.with_progs(Progs::new(progs));
            Some(run_time)
        } else {
            None
        };
        let stats = Arc::new(reader);
        let class = Arc::new(Class::open()?);
        let pruned = class.prune_exited()?;
        if pruned > 0 {
            info!("dropped {pruned} class members whose threads exited while no scheduler ran");
        }

        let members = class.clone();
        let stats_server = StatsServer::launch(
            &opts.stats_socket,
            stats.clone(),
            move || members.list().len(),
            stats.snapshot()?,
        )?;
        let struct_ops = Some(scx_ops_attach!(skel, microquanta_ops)?);
        info!(
            "scx_microquanta attached: {} CPUs, period {} µs, runtime {} µs, {} class members",
            nr_cpus,
            opts.policy.period_us,
            opts.policy.runtime_us,
            class.list().len()
        );
        Ok(Self {
            skel,
            struct_ops,
            class,
            stats,
            stats_server: Some(stats_server),
            _run_time: run_time,
        })
    }

    fn run(&mut self, opts: &Opts, shutdown: &Shutdown) -> Result<UserExitInfo> {
        let interval = opts.stats.map(Duration::from_secs_f64);
        let mut last = self.stats.snapshot()?;
        let mut last_at = Instant::now();
        let exit_notify = self.skel.maps.exit_notify.as_fd();
        let mut watch_exit = true;
        while !shutdown.requested() && !uei_exited!(&self.skel, uei) {
            let timeout = interval.map_or(EXIT_CHECK, |interval| {
                (last_at + interval)
                    .saturating_duration_since(Instant::now())
                    .min(EXIT_CHECK)
            });
            let exit = watch_exit.then_some(exit_notify);
            if shutdown
                .wait(exit, timeout)
                .context("waiting for the scheduler")?
                == Woken::Exited
            {
                // The loop's condition reads the exit reason; a notice without one (which
                // exit() does not write) is not watched again, as it would end every wait.
                debug!("the scheduler's exit notice came");
                watch_exit = false;
                continue;
            }
            let Some(interval) = interval else { continue };
            let now = self.stats.snapshot()?;
            if now.age_since(&last) < interval {
                continue;
            }
            print_report(
                &Report::between(&last, &now, self.class.list().len()),
                opts.stats_json,
            )?;
            last = now;
            last_at = Instant::now();
        }
        // Dropping the link detaches: every task goes back to the fair class.
        self.struct_ops.take();
        self.stats_server.take();
        uei_report!(&self.skel, uei)
    }
}

/// Prints one report on stdout; an error (such as a closed pipe) is returned, not a panic.
fn print_report(report: &Report, json: bool) -> std::io::Result<()> {
    use std::io::Write;
    let line = if json {
        serde_json::to_string(report)?
    } else {
        report.format()
    };
    writeln!(std::io::stdout().lock(), "{line}")
}

/// Writes this run's budget into the default group's slot, after checking that the groups
/// kept from earlier runs still fit next to it on every CPU (the cap of `mq_class::group`).
fn set_default_group(groups: &Groups, opts: &Opts) -> Result<()> {
    let default = Group {
        id: group::DEFAULT_GROUP,
        name: group::DEFAULT_GROUP_NAME.to_string(),
        budget: opts.policy.budget(),
        cpus: None,
    };
    let mut all: Vec<Group> = groups
        .list()?
        .into_iter()
        .filter(|g| g.id != group::DEFAULT_GROUP)
        .collect();
    if !all.is_empty() {
        info!(
            "class groups kept from an earlier run: {}",
            all.iter()
                .map(|g| format!("{} {}/{} µs", g.name, g.budget.runtime_us, g.budget.period_us))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    all.push(default.clone());
    group::check_cap(&all, group::possible_cpus()).context(
        "--runtime-us/--period-us do not fit next to the class groups: lower them, or remove a group with `mqctl group remove NAME`",
    )?;
    groups.store(&default)?;
    Ok(())
}

/// Whether the map pinned at `pin` can back `mq_tasks` of this build; a
/// pinned map of another shape (an older build) is unpinned.
fn reusable_pin(pin: &Path, map: &libbpf_rs::OpenMapMut) -> Result<bool> {
    let Ok(handle) = libbpf_rs::MapHandle::from_pinned_path(pin) else {
        return Ok(false);
    };
    let same = handle.map_type() == map.map_type()
        && handle.key_size() == map.key_size()
        && handle.value_size() == map.value_size()
        && handle.max_entries() == map.max_entries();
    if !same {
        warn!(
            "{} has another layout (older build?): starting with an empty class",
            pin.display()
        );
        std::fs::remove_file(pin).with_context(|| format!("unpinning {}", pin.display()))?;
    }
    Ok(same)
}

fn main() -> Result<()> {
    let opts = Opts::parse();
    init_logging(opts.verbose)?;
    opts.validate()?;

    let shutdown = Arc::new(Shutdown::new().context("creating the shutdown eventfd")?);
    let handler = shutdown.clone();
    ctrlc::set_handler(move || handler.request()).context("installing the Ctrl-C handler")?;
    if let Some(secs) = opts.monitor {
        return stats::monitor::run(
            &opts.stats_socket,
            secs,
            |report| print_report(report, opts.stats_json),
            shutdown.flag(),
        );
    }
    preflight("scx_microquanta")?;

    loop {
        let mut open_object = MaybeUninit::uninit();
        let mut sched = Scheduler::init(&opts, &mut open_object)?;
        let exit = sched.run(&opts, &shutdown)?;
        if shutdown.requested() {
            info!("detached; all tasks are back on the fair class");
            return Ok(());
        }
        if !exit.should_restart() {
            bail!("the kernel ejected scx_microquanta (see the exit reason above); tasks are back on the fair class");
        }
        info!("the kernel asked for a restart");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Opts> {
        let opts = Opts::try_parse_from(std::iter::once("scx_microquanta").chain(args.iter().copied()))?;
        opts.validate()?;
        Ok(opts)
    }

    #[test]
    fn defaults_are_the_kernel_patch_defaults() {
        let opts = parse(&[]).unwrap();
        assert_eq!((opts.policy.period_us, opts.policy.runtime_us), (40, 20));
    }

    #[test]
    fn runtime_above_period_is_refused_with_both_values() {
        let err = parse(&["--period-us", "40", "--runtime-us", "50"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--runtime-us 50") && err.contains("(40)"), "{err}");
    }

    #[test]
    fn nonsense_values_are_refused() {
        assert!(parse(&["--runtime-us", "0"]).is_err());
        assert!(parse(&["--period-us", "1"]).is_err());
        assert!(parse(&["--normal-slice-us", "0"]).is_err());
        assert!(parse(&["--class-slice-us", "0"]).is_err());
        assert!(parse(&["--watchdog-timeout-ms", "60000"]).is_err());
        assert!(parse(&["--stats", "-1"]).is_err());
        assert!(parse(&["--period-us", "abc"]).is_err());
        assert!(parse(&["--period-us", "1000", "--runtime-us", "200"]).is_ok());
    }
}
