//! `snapctl`: the operator's tool for a running `snap-host`, over its control socket. It
//! shows what runs where (`status`) and changes the engines and groups while they run (`engine add`,
//! `engine remove`, `group add`, `group remove`, `stage update`); the host checks every change as it
//! checks its configuration file and refuses bad ones with the field at fault, changing
//! nothing. `upgrade` replaces the host process by a new one that takes over its engines
//! and apps, and prints how long each engine paused.
//!
//! ```text
//!   snapctl ── control socket (root or the host's user) ──▶ snap-host ──▶ engine runtime
//! ```
//!
//! Modules, one concern each: [`host`] connects (telling a missing host from a stale
//! socket), [`table`] reads the TOML tables to send, [`status`] prints the status,
//! [`upgrade`] prints an upgrade's report, [`fail`] the errors people read and the exit
//! codes.

mod fail;
mod host;
mod status;
mod table;
mod upgrade;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

/// Operates a running snap-host: its status, and engines and groups added and removed
/// while it runs.
#[derive(Debug, Parser)]
#[command(name = "snapctl", version)]
struct Opts {
    /// The snap-host's control socket (its `control_socket` setting).
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/run/snap/snap.sock",
        global = true
    )]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Shows groups (mode, cores), their threads (tid, CPU), engines (kind, health,
    /// counters) and attached apps.
    Status(StatusOpts),
    /// Adds or removes an engine of a running group.
    #[command(subcommand)]
    Engine(EngineCommand),
    /// Adds or removes a group with its engines.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Changes a pipeline stage while it runs.
    #[command(subcommand)]
    Stage(StageCommand),
    /// Replaces the running snap-host process by a new one that takes over every engine
    /// (state and descriptors), every app connection and the control socket; apps keep
    /// their sessions. Prints each engine's brownout and blackout.
    Upgrade(UpgradeOpts),
}

#[derive(Debug, Subcommand)]
enum StageCommand {
    /// Replaces a stage's settings: the body of its `settings` table in the host's
    /// configuration (its keys, without a header). The stage applies them whole, between
    /// two packets, or refuses them and keeps its old ones.
    Update {
        /// The stage's name (its `[[pipeline.stage]]` name).
        name: String,
        #[command(flatten)]
        table: table::TableOpts,
    },
}

#[derive(Debug, Args)]
struct UpgradeOpts {
    /// The new snap-host binary (default: the binary the running host was started from).
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
    /// Prints the report as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct StatusOpts {
    /// Prints the host's status as one JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum EngineCommand {
    /// Starts an engine in a running group. The engine is described as one
    /// `[[group.engine]]` table of the host's configuration, without the header (`name`,
    /// `kind`, ...); every key means what it means in the file.
    Add(EngineAddOpts),
    /// Stops and drops an engine (not the last of its group: remove the group). Apps
    /// attached to it see the host gone.
    Remove {
        /// The engine's name.
        name: String,
    },
}

#[derive(Debug, Args)]
struct EngineAddOpts {
    /// The group to add it to.
    #[arg(long, value_name = "NAME")]
    group: String,
    #[command(flatten)]
    table: table::TableOpts,
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// Starts a group with its engines. The group is described as one `[[group]]` table of
    /// the host's configuration, without the header (`name`, `mode`, `cores`, ...), its
    /// engines as `[[engine]]` tables.
    Add {
        #[command(flatten)]
        table: table::TableOpts,
    },
    /// Stops a group and drops its engines. Apps attached to them see the host gone.
    Remove {
        /// The group's name.
        name: String,
    },
}

fn main() -> ExitCode {
    let opts = Opts::parse();
    match run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail::report(&e),
    }
}

fn run(opts: Opts) -> anyhow::Result<()> {
    let mut client = host::connect(&opts.socket)?;
    match opts.command {
        Command::Status(s) => {
            let status = client
                .status()
                .map_err(|e| fail::request(e, "asking for the status"))?;
            if s.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).context("status as JSON")?
                );
            } else {
                print!("{}", status::render(&opts.socket, &status));
            }
        }
        Command::Engine(EngineCommand::Add(a)) => {
            let table = a.table.read()?;
            let what = format!("adding an engine to group {:?}", a.group);
            println!(
                "{}",
                client
                    .engine_add(&a.group, &table)
                    .map_err(|e| fail::request(e, &what))?
            );
        }
        Command::Engine(EngineCommand::Remove { name }) => {
            let what = format!("removing engine {name:?}");
            println!(
                "{}",
                client.engine_remove(&name).map_err(|e| fail::request(e, &what))?
            );
        }
        Command::Group(GroupCommand::Add { table }) => {
            let table = table.read()?;
            println!(
                "{}",
                client
                    .group_add(&table)
                    .map_err(|e| fail::request(e, "adding a group"))?
            );
        }
        Command::Stage(StageCommand::Update { name, table }) => {
            let settings = table.read()?;
            let what = format!("updating stage {name:?}");
            println!(
                "{}",
                client
                    .stage_update(&name, &settings)
                    .map_err(|e| fail::request(e, &what))?
            );
        }
        Command::Upgrade(u) => {
            let binary = match &u.binary {
                Some(b) => Some(
                    std::fs::canonicalize(b)
                        .with_context(|| format!("--binary {}", b.display()))?
                        .to_string_lossy()
                        .into_owned(),
                ),
                None => None,
            };
            let report = client
                .upgrade(binary.as_deref())
                .map_err(|e| fail::request(e, "upgrading the host"))?;
            if u.json {
                println!("{}", serde_json::to_string(&report).context("report as JSON")?);
            } else {
                print!("{}", upgrade::render(&report));
            }
        }
        Command::Group(GroupCommand::Remove { name }) => {
            let what = format!("removing group {name:?}");
            println!(
                "{}",
                client.group_remove(&name).map_err(|e| fail::request(e, &what))?
            );
        }
    }
    Ok(())
}
