//! What a failure looks like to the person at the terminal: one line on stderr, `pony:`
//! then the error and its causes, and an exit code (1 for a failure, 130 for Ctrl-C, as a
//! shell reports a SIGINT; clap's own 2 for bad arguments). The tool never panics on an
//! expected failure, so no backtrace reaches the user.
//!
//! The library's errors say what failed in its terms (`no listener on the service`); the
//! helpers here add what it means for the command and what to check.

use std::fmt;
use std::process::ExitCode;

use anyhow::anyhow;
use pony_express::app::OpErrorCode;
use pony_express::client::ClientError;
use pony_express::socket::SocketError;

/// The user pressed Ctrl-C (or the tool got SIGTERM) before the command finished.
#[derive(Debug)]
pub struct Interrupted;

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// Prints `e` and returns the exit code it stands for.
pub fn report(e: &anyhow::Error) -> ExitCode {
    if e.downcast_ref::<Interrupted>().is_some() {
        eprintln!("pony: interrupted");
        return ExitCode::from(130);
    }
    eprintln!("pony: {e:#}");
    ExitCode::FAILURE
}

/// Why opening a flow to `service` at `peer` failed, in words that say what to check.
pub fn open_flow(e: ClientError, peer: &str, service: u32) -> anyhow::Error {
    match e {
        ClientError::Op { code } => open_code(code, peer, service),
        e => anyhow!(e).context(format!("opening a flow to service {service} at {peer}")),
    }
}

/// [`open_flow`] for the socket layer's errors.
pub fn connect(e: SocketError, peer: &str, service: u32) -> anyhow::Error {
    match e {
        SocketError::Op(code) => open_code(code, peer, service),
        SocketError::Client(e) => open_flow(e, peer, service),
        e => anyhow!(e).context(format!("opening a flow to service {service} at {peer}")),
    }
}

fn open_code(code: OpErrorCode, peer: &str, service: u32) -> anyhow::Error {
    match code {
        // A service exists only while an app listens on it, so "unknown service" and
        // "refused" are one answer from the peer.
        OpErrorCode::NoListener => anyhow!(
            "connection refused: nothing listens on service {service} at {peer} \
             (start e.g. `pony cat --listen --service {service}` on the peer's host)"
        ),
        OpErrorCode::Unreachable => anyhow!(
            "{peer} does not answer: no Pony engine there, or the path to it is down \
             (check --peer against the peer engine's `bind`)"
        ),
        OpErrorCode::VersionMismatch => {
            anyhow!("the Pony engine at {peer} speaks no wire version in common with ours")
        }
        code => anyhow!("opening a flow to service {service} at {peer}: {code}"),
    }
}

/// Why a one-sided read of `region` failed.
pub fn read(e: ClientError, region: u32) -> anyhow::Error {
    match e {
        ClientError::Op {
            code: OpErrorCode::AccessDenied,
        } => anyhow!(
            "the peer refused the read: no region {region} there, or a wrong --key \
             (Pony does not say which, so that keys cannot be guessed)"
        ),
        ClientError::Op {
            code: OpErrorCode::OutOfBounds,
        } => anyhow!("the read lies outside region {region} (check --offset and --len)"),
        ClientError::Op {
            code: OpErrorCode::TooLarge,
        } => anyhow!("the peer refused the read as too large for one operation"),
        e => anyhow!(e).context(format!("reading region {region}")),
    }
}
