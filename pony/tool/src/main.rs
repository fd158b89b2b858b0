//! `pony`: Pony Express from the command line, as `sockperf`/`iperf` and `nc` are for the
//! kernel's sockets. It is an app like any other: it attaches to a Pony engine of a running
//! `snap-host` through the host's control socket (`pony_express`), and talks to the peer
//! host's engine from there.
//!
//! ```text
//!   pony perf client ─┐                                      ┌─ pony perf server (echo)
//!   pony cat ─────────┤ control socket    Pony flow (NIC)    ├─ pony cat --listen
//!   pony read ────────┴─▶ snap-host A ◀═══════════════════▶ snap-host B ◀─ pony region serve
//! ```
//!
//! Modules, one concern each: [`host`] finds the host and the engine to attach to,
//! [`perf`] the ping-pong, [`cat`] streams between stdin/stdout and a flow, [`region`]
//! serves a file as a region and [`read`] reads one, [`progress`] the meter on stderr,
//! [`interrupt`] Ctrl-C, [`fail`] the errors people read and the exit codes.

mod cat;
mod fail;
mod host;
mod interrupt;
mod perf;
mod progress;
mod read;
mod region;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use pony_express::app::ServiceId;

/// Pony Express from the command line: latency, streams and one-sided reads through a
/// running snap-host.
#[derive(Debug, Parser)]
#[command(name = "pony", version)]
struct Opts {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ping-pong latency and rate between two hosts (like sockperf).
    #[command(subcommand)]
    Perf(PerfCommand),
    /// Copies stdin to one stream to a peer, or (--listen) one incoming stream to stdout
    /// (like nc).
    Cat(CatOpts),
    /// Reads bytes of a peer's region (see `pony region serve`) with one-sided reads, which
    /// the peer's engine serves from the region without its app taking part, and writes
    /// them to stdout.
    Read(ReadOpts),
    /// Registers memory as a region that peers may read.
    #[command(subcommand)]
    Region(RegionCommand),
}

#[derive(Debug, Subcommand)]
enum PerfCommand {
    /// Echoes every message back on its flow, for `pony perf client`, until interrupted.
    Server(PerfServerOpts),
    /// Sends --count messages of --size bytes one at a time, each after the echo of the
    /// previous, and reports the round-trip times.
    Client(PerfClientOpts),
}

#[derive(Debug, Subcommand)]
enum RegionCommand {
    /// Registers a file (or stdin) as a region, prints its id and key, and lets peers that
    /// open a flow to --service read it until interrupted.
    Serve(RegionServeOpts),
}

/// Where the local host is and which of its engines to use.
#[derive(Debug, Args)]
pub struct HostOpts {
    /// The local snap-host's control socket (its `control_socket` setting).
    #[arg(long, value_name = "PATH", default_value = "/run/snap/snap.sock")]
    socket: PathBuf,
    /// The Pony engine to attach to [default: the host's only Pony engine].
    #[arg(long, value_name = "NAME")]
    engine: Option<String>,
}

/// The peer to open a flow to.
#[derive(Debug, Args)]
pub struct PeerOpts {
    /// The peer engine's address: `ip:port` (its `bind`), or `shm` for a shared-memory wire.
    #[arg(long, value_name = "ADDR", value_parser = parse_peer)]
    peer: String,
    /// The service (like a port) an app listens on at the peer.
    #[arg(long, value_name = "N")]
    service: ServiceId,
}

#[derive(Debug, Args)]
struct PerfServerOpts {
    #[command(flatten)]
    host: HostOpts,
    /// The service to listen on.
    #[arg(long, value_name = "N")]
    service: ServiceId,
}

#[derive(Debug, Args)]
struct PerfClientOpts {
    #[command(flatten)]
    host: HostOpts,
    #[command(flatten)]
    peer: PeerOpts,
    /// Bytes per message.
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    size: usize,
    /// Round trips measured.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,
    /// Round trips before the measured ones, not counted (warms caches and the peer's
    /// path).
    #[arg(long, value_name = "N", default_value_t = 100)]
    warmup: u64,
    /// Prints one JSON object (`p50_us`, `p90_us`, `p99_us`, `p999_us`, `msgs_per_s`,
    /// `samples`) instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct CatOpts {
    #[command(flatten)]
    host: HostOpts,
    /// Waits for one stream to --service and copies it to stdout, instead of sending stdin.
    #[arg(long, conflicts_with = "peer")]
    listen: bool,
    /// The peer engine's address: `ip:port` (its `bind`), or `shm` for a shared-memory wire.
    #[arg(long, value_name = "ADDR", value_parser = parse_peer, required_unless_present = "listen")]
    peer: Option<String>,
    /// The service: listened on with --listen, else the one to send to at the peer.
    #[arg(long, value_name = "N")]
    service: ServiceId,
}

#[derive(Debug, Args)]
struct ReadOpts {
    #[command(flatten)]
    host: HostOpts,
    #[command(flatten)]
    peer: PeerOpts,
    /// The region's id, as `pony region serve` printed it.
    #[arg(long, value_name = "ID")]
    region: u32,
    /// The region's key, as `pony region serve` printed it (decimal, or hex with 0x).
    #[arg(long, value_name = "KEY", value_parser = parse_key)]
    key: u64,
    /// The first byte to read.
    #[arg(long, value_name = "O", default_value_t = 0)]
    offset: u64,
    /// How many bytes to read.
    #[arg(long, value_name = "L")]
    len: u64,
}

#[derive(Debug, Args)]
struct RegionServeOpts {
    #[command(flatten)]
    host: HostOpts,
    /// The file whose bytes the region holds (read once, at start) [default: stdin].
    #[arg(long, value_name = "F")]
    file: Option<PathBuf>,
    /// The service peers open their flow to (one-sided reads ride a flow this listener
    /// accepted).
    #[arg(long, value_name = "N")]
    service: ServiceId,
}

fn parse_peer(s: &str) -> Result<String, String> {
    if s == "shm" || s.parse::<std::net::SocketAddr>().is_ok() {
        Ok(s.to_owned())
    } else {
        Err("expected ip:port (e.g. 10.77.0.2:7000) or shm".into())
    }
}

fn parse_key(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|e| format!("{e} (expected a number, decimal or 0x-prefixed hex)"))
}

fn main() -> ExitCode {
    // clap prints its own message and exits with 2 for bad arguments (0 for --help).
    let opts = Opts::parse();
    if let Err(e) = interrupt::install() {
        return fail::report(&e);
    }
    let result = match opts.command {
        Command::Perf(PerfCommand::Server(o)) => perf::server(&o.host, o.service),
        Command::Perf(PerfCommand::Client(o)) => perf::client(
            &o.host,
            &o.peer,
            &perf::ClientSettings {
                size: o.size,
                count: o.count,
                warmup: o.warmup,
                json: o.json,
            },
        ),
        Command::Cat(o) => match o.peer {
            Some(peer) => cat::send(&o.host, &peer, o.service),
            None => cat::listen(&o.host, o.service),
        },
        Command::Read(o) => read::run(&o.host, &o.peer, o.region, o.key, o.offset, o.len),
        Command::Region(RegionCommand::Serve(o)) => region::serve(&o.host, o.file.as_deref(), o.service),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail::report(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Opts::command().debug_assert();
    }

    #[test]
    fn peers_and_keys_parse_or_say_what_is_expected() {
        assert_eq!(parse_peer("10.0.0.2:7000").unwrap(), "10.0.0.2:7000");
        assert_eq!(parse_peer("shm").unwrap(), "shm");
        assert!(parse_peer("10.0.0.2").unwrap_err().contains("ip:port"));
        assert_eq!(parse_key("0x1F").unwrap(), 31);
        assert_eq!(parse_key("31").unwrap(), 31);
        assert!(parse_key("key").unwrap_err().contains("decimal"));
    }

    #[test]
    fn cat_needs_a_peer_unless_it_listens() {
        let base = ["pony", "cat", "--socket", "/s", "--service", "7"];
        assert!(Opts::try_parse_from(base).is_err());
        assert!(Opts::try_parse_from(base.iter().chain(&["--listen"])).is_ok());
        assert!(Opts::try_parse_from(base.iter().chain(&["--peer", "1.2.3.4:5"])).is_ok());
        let both = base.iter().chain(&["--listen", "--peer", "1.2.3.4:5"]);
        assert!(Opts::try_parse_from(both).is_err());
    }
}
