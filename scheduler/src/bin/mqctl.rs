// SPDX-License-Identifier: GPL-2.0-only
//! `mqctl`: put threads in the MicroQuanta class and take them out, like
//! `chrt` does for the kernel's classes. Talks to the class map that a
//! running `scx_microquanta` pinned; only root may change it.

use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use mq_class::{current_tid, thread_exists, threads_of, Class};

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
    Run {
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Add threads: a process id adds all its threads (and, through
    /// inheritance, the ones it creates from now on); a thread id adds that
    /// thread.
    Add {
        #[arg(required = true)]
        ids: Vec<u32>,
    },
    /// Remove threads (same id rules as `add`).
    Remove {
        #[arg(required = true)]
        ids: Vec<u32>,
    },
    /// List the class members: thread id, process id, command name.
    List,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let class = Class::open()?;
    match cli.command {
        Cmd::Run { command } => {
            // Single-threaded here, so our tid is our pid and exec keeps it.
            class.add(current_tid())?;
            let err = Command::new(&command[0]).args(&command[1..]).exec();
            class.remove(current_tid())?;
            Err(err).with_context(|| format!("running {}", command[0]))
        }
        Cmd::Add { ids } => {
            for id in ids {
                for tid in threads_of(id)? {
                    class.add(tid)?;
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
            println!("{:>8} {:>8}  COMMAND", "TID", "PID");
            for tid in class.list() {
                let (pid, comm) = describe(tid);
                println!("{tid:>8} {pid:>8}  {comm}");
            }
            Ok(())
        }
    }
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
