//! What a failure looks like to the person at the terminal, as for the `pony` tool: one
//! line on stderr, `snapctl:` then the error and its causes, and an exit code (1 for a
//! failure; clap's own 2 for bad arguments). The tool never panics on an expected failure.

use std::process::ExitCode;

use anyhow::anyhow;
use snap_ipc::control::ClientError;

/// Prints `e` and returns the exit code it stands for.
pub fn report(e: &anyhow::Error) -> ExitCode {
    eprintln!("snapctl: {e:#}");
    ExitCode::FAILURE
}

/// A request that failed while `what`: the host's refusal is said as the host said it (it
/// names the field or the engine at fault), anything else with what we were doing.
pub fn request(e: ClientError, what: &str) -> anyhow::Error {
    match e {
        ClientError::Refused(message) => anyhow!("{what}: refused by the host: {message}"),
        ClientError::Closed => anyhow!("{what}: the Snap host closed the connection (did it exit?)"),
        e => anyhow!(e).context(what.to_owned()),
    }
}
