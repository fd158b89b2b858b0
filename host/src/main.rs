//! `snap-host`: the Snap host process. Reads a TOML configuration ([`snap_host::config`]),
//! starts the engine runtime and the control socket, and runs until SIGINT or SIGTERM, then
//! detaches every app, stops the engines, removes the socket and prints a final status
//! summary.
//!
//! With `--takeover-fd N` (given by a running host that upgrades itself) it takes that
//! host's configuration, engines, apps and control socket over instead
//! ([`snap_host::takeover`]); a host that handed everything over to a new one exits at once,
//! detaching nothing and removing nothing.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{mpsc, Arc};

use anyhow::{anyhow, Context, Result};
use clap::Parser;
use log::LevelFilter;
use simplelog::{ColorChoice, ConfigBuilder, TermLogger, TerminalMode};

use snap_host::config::{self, Config};
use snap_host::control::{ControlServer, ServerOptions};
use snap_host::process::READY_PREFIX;
use snap_host::takeover;
use snap_runtime::{Runtime, Status};

/// Snap host: runs engines in dedicated, spreading or compacting mode and serves apps on a
/// Unix control socket.
#[derive(Debug, Parser)]
#[command(version)]
struct Opts {
    /// Configuration file (TOML).
    #[arg(long, value_name = "PATH", required_unless_present = "takeover_fd")]
    config: Option<PathBuf>,
    /// Take over the running host on the other end of this inherited socket (an upgrade
    /// starts the new host so); the configuration comes from it.
    #[arg(long, value_name = "FD", conflicts_with_all = ["config", "socket"])]
    takeover_fd: Option<i32>,
    /// Control socket path; overrides `control_socket` in the configuration.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// More logging (-v: debug, -vv: trace).
    #[arg(short, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> Result<()> {
    let opts = Opts::parse();
    let level = match opts.verbose {
        0 => LevelFilter::Info,
        1 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    };
    // Logs go to stderr; stdout carries only the ready line and the final summary.
    TermLogger::init(
        level,
        ConfigBuilder::new().set_time_format_rfc3339().build(),
        TerminalMode::Stderr,
        ColorChoice::Never,
    )
    .context("initialising logging")?;

    // Resolved now: an upgrade starts this binary again even if the file was replaced.
    let binary = std::env::current_exe().ok();

    // Install the handler before announcing readiness, so that a signal sent as soon as
    // "ready" is seen is always handled as a clean shutdown.
    let (stop_tx, stop_rx) = mpsc::channel();
    let handed_off = stop_tx.clone();
    ctrlc::set_handler(move || {
        let _ = stop_tx.send(());
    })
    .context("installing the SIGINT/SIGTERM handler")?;
    let server_opts = move |config: &Config| ServerOptions {
        binary,
        handed_off: Some(handed_off),
        ..config.server_options()
    };

    let (config, runtime, server) = match opts.takeover_fd {
        Some(fd) => {
            // SAFETY: the host that started us passed this descriptor for us alone, open
            // and not close-on-exec; nothing else in this process owns it.
            let socket = unsafe { OwnedFd::from_raw_fd(fd) };
            let _ = rustix::io::fcntl_setfd(&socket, rustix::io::FdFlags::CLOEXEC);
            let t = takeover::take_over(socket, server_opts).context("taking over the running host")?;
            (t.config, t.runtime, t.server)
        }
        None => {
            let path = opts.config.expect("clap requires --config without --takeover-fd");
            let mut config = Config::load(&path, config::online_cpus())
                .with_context(|| format!("config {}", path.display()))?;
            if let Some(socket) = opts.socket {
                config.control_socket = socket;
            }
            let (groups, options) = config
                .build()
                .with_context(|| format!("config {}", path.display()))?;
            let opts = server_opts(&config);
            // Before the threads start: they join their class groups as they start.
            opts.class_groups
                .ensure_all(&config)
                .map_err(|e| anyhow!(e))
                .with_context(|| format!("config {}", path.display()))?;
            let runtime = Arc::new(Runtime::start(groups, options).context("starting the engine runtime")?);
            let server = ControlServer::start(&config.control_socket, runtime.clone(), opts)
                .context("starting the control server")?;
            (config, runtime, server)
        }
    };
    println!("{READY_PREFIX}{}", config.control_socket.display());

    let _ = stop_rx.recv();
    if server.handed_off() {
        // Everything is the new host's: no detach, no socket removal, no engine stop (the
        // frozen engines hold nothing any more). Connection threads are still blocked.
        log::info!("handed over to the new host; exiting");
        std::process::exit(0);
    }
    log::info!("shutting down");
    // Control plane first: it detaches every app through the engines' mailboxes, which
    // need the engines' threads still running.
    server.shutdown();
    let runtime = Arc::try_unwrap(runtime)
        .map_err(|_| anyhow!("runtime still referenced after the control server stopped"))?;
    let status = runtime.shutdown();
    print_summary(&status);
    Ok(())
}

fn print_summary(status: &Status) {
    println!("snap-host: stopped after {:.1} s", status.uptime_s);
    for group in &status.groups {
        println!(
            "  group {} ({}): {} threads",
            group.name,
            group.mode,
            group.threads.len()
        );
        for e in &group.engines {
            println!(
                "    engine {}: {} items in {} runs, {:?}",
                e.name, e.items, e.runs, e.health
            );
        }
    }
    match serde_json::to_string(status) {
        Ok(json) => println!("{json}"),
        Err(e) => log::warn!("status as JSON: {e}"),
    }
}
