// SPDX-License-Identifier: GPL-2.0-only
//! `mqctl`: put threads in the MicroQuanta class and take them out, like
//! `chrt` does for the kernel's classes, and manage the class groups (each
//! with its own budget). Talks to the maps that a running `scx_microquanta`
//! pinned; only root may change them.

mod relay;

use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use mq_class::{current_tid, parse_cpu_list, thread_exists, threads_of, Budget, Class, Group};

/// Control membership of the MicroQuanta class (needs scx_microquanta running).
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a command in the class: it and every thread or process it creates.
    /// mqctl waits for it as its parent, passes on the signals it is sent, and
    /// exits with the command's status (128 + N for a command killed by signal N).
    Run {
        /// The class group to run it in (default: the default group).
        #[arg(long, value_name = "NAME")]
        group: Option<String>,
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Add threads: a process id adds all its threads (and, through
    /// inheritance, the ones it creates from now on); a thread id adds that
    /// thread.
    Add {
        /// The class group to put them in (default: the default group).
        #[arg(long, value_name = "NAME")]
        group: Option<String>,
        #[arg(required = true)]
        ids: Vec<u32>,
    },
    /// Remove threads (same id rules as `add`).
    Remove {
        #[arg(required = true)]
        ids: Vec<u32>,
    },
    /// List the class members: thread id, process id, class group, command name.
    List,
    /// Manage class groups: sets of class threads with their own budget.
    #[command(subcommand)]
    Group(GroupCmd),
}

#[derive(Debug, Subcommand)]
enum GroupCmd {
    /// Make a class group. On every CPU, the budgets of the groups that may run
    /// there (the default group's included) must add up to at most the CPU.
    Add {
        /// Its name: 1 to 31 characters of A-Z a-z 0-9 . _ -
        name: String,
        /// Runtime per period, per CPU, while normal work competes, in microseconds.
        #[arg(long)]
        runtime_us: u64,
        /// Bandwidth period, in microseconds (2 to 1000000).
        #[arg(long)]
        period_us: u64,
        /// CPUs where its threads are class threads, as taskset -c takes them
        /// (e.g. 0-3,6); its members' affinity is set to them. Default: every CPU.
        #[arg(long, value_name = "LIST")]
        cpus: Option<String>,
    },
    /// List the class groups: id, name, runtime/period, CPU set, members.
    List,
    /// Remove a class group; its members stay in the class, in the default group.
    Remove { name: String },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // Values are checked before the maps are opened: a typo is named as such
    // even where no scheduler runs.
    if let Cmd::Group(GroupCmd::Add {
        name,
        runtime_us,
        period_us,
        cpus,
    }) = &cli.command
    {
        mq_class::group::validate_name(name)?;
        Budget {
            period_us: *period_us,
            runtime_us: *runtime_us,
        }
        .validate()?;
        cpus.as_deref().map(parse_cpu_list).transpose()?;
    }
    let class = Class::open()?;
    match cli.command {
        Cmd::Run { group, command } => {
            // The command is our child, created while we are in the class: it inherits the
            // membership, and the class's timer slack as its default (see `relay`).
            let relay = relay::Relay::block().context("blocking the signals mqctl relays")?;
            match &group {
                Some(name) => class.add_to_group(current_tid(), name)?,
                None => class.add(current_tid())?,
            }
            let mut cmd = Command::new(&command[0]);
            relay.restore_mask_in(cmd.args(&command[1..]));
            let child = cmd.spawn();
            let left = class.remove(current_tid());
            let mut child = child.with_context(|| format!("running {}", command[0]))?;
            // The command runs either way, and is waited for: mqctl leaves the class at the
            // latest when it exits.
            if let Err(err) = left {
                eprintln!("mqctl: staying in the class while {} runs: {err}", command[0]);
            }
            let status = relay
                .wait(&mut child)
                .with_context(|| format!("waiting for {}", command[0]))?;
            std::process::exit(relay::exit_code(status))
        }
        Cmd::Add { group, ids } => {
            if let Some(name) = &group {
                // Before touching any thread: an unknown group is refused whole.
                class.groups().get(name)?;
            }
            for id in ids {
                for tid in threads_of(id)? {
                    match &group {
                        Some(name) => class.add_to_group(tid, name)?,
                        None => class.add(tid)?,
                    }
                }
            }
            Ok(())
        }
        Cmd::Remove { ids } => {
            let mut missing = Vec::new();
            for id in ids {
                let tids = if thread_exists(id) {
                    threads_of(id)?
                } else {
                    vec![id]
                };
                for tid in tids {
                    if !class.remove(tid)? {
                        missing.push(tid);
                    }
                }
            }
            if !missing.is_empty() {
                bail!("not in the class: {missing:?}");
            }
            Ok(())
        }
        Cmd::List => {
            let groups = class.groups().list()?;
            println!("{:>8} {:>8}  {:<16} COMMAND", "TID", "PID", "GROUP");
            for (tid, group) in class.members() {
                let (pid, comm) = describe(tid);
                println!("{tid:>8} {pid:>8}  {:<16} {comm}", group_name(&groups, group));
            }
            Ok(())
        }
        Cmd::Group(cmd) => group(&class, cmd),
    }
}

fn group(class: &Class, cmd: GroupCmd) -> Result<()> {
    match cmd {
        GroupCmd::Add {
            name,
            runtime_us,
            period_us,
            cpus,
        } => {
            let cpus = cpus.as_deref().map(parse_cpu_list).transpose()?;
            let g = class.groups().add(
                &name,
                Budget {
                    period_us,
                    runtime_us,
                },
                cpus,
            )?;
            println!("class group {} (id {}) made", g.name, g.id);
            Ok(())
        }
        GroupCmd::List => {
            let members = class.members();
            println!(
                "{:>3}  {:<16} {:>12} {:>12}  {:<12} {:>7}",
                "ID", "NAME", "RUNTIME_US", "PERIOD_US", "CPUS", "MEMBERS"
            );
            for g in class.groups().list()? {
                let n = members.iter().filter(|(_, group)| *group == g.id).count();
                println!(
                    "{:>3}  {:<16} {:>12} {:>12}  {:<12} {n:>7}",
                    g.id,
                    g.name,
                    g.budget.runtime_us,
                    g.budget.period_us,
                    cpu_list(&g)
                );
            }
            Ok(())
        }
        GroupCmd::Remove { name } => {
            let moved = class.remove_group(&name)?;
            println!("class group {name} removed; {moved} members moved to the default group");
            Ok(())
        }
    }
}

/// A group's name for a listing; a member of a slot no longer in use counts
/// as the default group's, as the scheduler treats it.
fn group_name(groups: &[Group], id: u32) -> String {
    groups
        .iter()
        .find(|g| g.id == id)
        .or_else(|| groups.iter().find(|g| g.id == mq_class::DEFAULT_GROUP))
        .map_or_else(|| id.to_string(), |g| g.name.clone())
}

/// A CPU set as taskset -c writes it (`0-3,6`); `all` for none.
fn cpu_list(g: &Group) -> String {
    let Some(cpus) = &g.cpus else {
        return "all".into();
    };
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        while i + 1 < cpus.len() && cpus[i + 1] == cpus[i] + 1 {
            i += 1;
        }
        parts.push(if cpus[i] == start {
            start.to_string()
        } else {
            format!("{start}-{}", cpus[i])
        });
        i += 1;
    }
    parts.join(",")
}

/// Process id and command name of a thread, from /proc.
fn describe(tid: u32) -> (String, String) {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| "-".into())
    };
    (field("Tgid:"), field("Name:"))
}
