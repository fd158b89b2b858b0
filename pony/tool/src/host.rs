//! Finding the engine to attach to: the host behind `--socket` (with errors that tell a
//! missing host from a stale socket) and, without `--engine`, its only Pony engine, from the
//! kinds its `status` reports.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use pony_express::app::Completions;
use pony_express::client::PonyClient;
use snap_ipc::control::protocol::HostStatus;
use snap_ipc::control::{ClientError, SnapClient};

use crate::HostOpts;

/// The kind of the engines this tool attaches to.
const PONY: &str = "pony";

/// A Pony engine of the local host.
#[derive(Debug, Clone)]
pub struct Engine {
    /// The host's control socket.
    pub socket: PathBuf,
    /// The engine's name.
    pub name: String,
}

impl Engine {
    /// Asks the host at `--socket` which engine to use.
    pub fn find(opts: &HostOpts) -> anyhow::Result<Self> {
        let mut control = SnapClient::connect(&opts.socket).map_err(|e| no_host(&opts.socket, e))?;
        let status = control.status().with_context(|| {
            format!(
                "asking the Snap host at {} for its engines",
                opts.socket.display()
            )
        })?;
        let name = choose(&status, opts.engine.as_deref())?;
        Ok(Self {
            socket: opts.socket.clone(),
            name,
        })
    }

    /// Attaches a session (blocking on completions rather than spinning: the tool shares
    /// the machine with the host's engines).
    pub fn attach(&self) -> anyhow::Result<PonyClient> {
        PonyClient::connect(&self.socket, &self.name, Completions::Block)
            .with_context(|| format!("attaching to Pony engine {:?}", self.name))
    }
}

/// The error for a control socket nobody answers on.
fn no_host(socket: &Path, e: ClientError) -> anyhow::Error {
    let path = socket.display();
    match e {
        ClientError::Connect { source, .. } if io_kind(source) == ErrorKind::NotFound => anyhow!(
            "no Snap host at {path}: the socket does not exist (is snap-host running? \
             --socket must name its control_socket)"
        ),
        ClientError::Connect { source, .. } if io_kind(source) == ErrorKind::ConnectionRefused => {
            anyhow!("no Snap host at {path}: connection refused (a stale socket: its host has exited)")
        }
        e => anyhow!(e).context(format!("connecting to the Snap host at {path}")),
    }
}

fn io_kind(errno: impl Into<std::io::Error>) -> ErrorKind {
    errno.into().kind()
}

/// The engine to use: `wanted` if it is a Pony engine, else the only one.
fn choose(status: &HostStatus, wanted: Option<&str>) -> anyhow::Result<String> {
    let pony = status.engines_of_kind(PONY);
    let list = |names: &[&str]| names.join(", ");
    if let Some(name) = wanted {
        return match status.kinds.get(name) {
            Some(kind) if kind == PONY => Ok(name.to_owned()),
            Some(kind) => bail!(
                "engine {name:?} is of kind {kind:?}, not a Pony engine (Pony engines: {})",
                list(&pony)
            ),
            // A host that predates `kinds` lists none: let the attach answer.
            None if status.kinds.is_empty() => Ok(name.to_owned()),
            None => bail!("the host has no engine {name:?} (Pony engines: {})", list(&pony)),
        };
    }
    match pony.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] if status.kinds.is_empty() => {
            bail!("the host does not list its engines' kinds; name the Pony engine with --engine")
        }
        [] => bail!(
            "the host runs no Pony engine (its engines: {})",
            status
                .kinds
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        several => bail!(
            "the host runs several Pony engines ({}): choose one with --engine",
            list(several)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(kinds: &[(&str, &str)]) -> HostStatus {
        let kinds: serde_json::Map<String, serde_json::Value> =
            kinds.iter().map(|(n, k)| ((*n).into(), (*k).into())).collect();
        serde_json::from_value(serde_json::json!({
            "runtime": { "uptime_s": 0.0, "microquanta_loaded": false, "groups": [] },
            "channels": [],
            "kinds": kinds,
        }))
        .unwrap()
    }

    #[test]
    fn the_only_pony_engine_is_the_default() {
        let s = status(&[("echo0", "echo"), ("p", "pony")]);
        assert_eq!(choose(&s, None).unwrap(), "p");
        assert_eq!(choose(&s, Some("p")).unwrap(), "p");
    }

    #[test]
    fn several_or_none_or_a_wrong_name_are_errors_naming_the_choices() {
        let s = status(&[("a", "pony"), ("b", "pony"), ("e", "echo")]);
        let e = choose(&s, None).unwrap_err().to_string();
        assert!(
            e.contains("several") && e.contains("a, b") && e.contains("--engine"),
            "{e}"
        );
        let e = choose(&s, Some("e")).unwrap_err().to_string();
        assert!(e.contains("kind \"echo\"") && e.contains("a, b"), "{e}");
        let e = choose(&s, Some("zz")).unwrap_err().to_string();
        assert!(e.contains("no engine \"zz\"") && e.contains("a, b"), "{e}");
        let e = choose(&status(&[("e", "echo")]), None).unwrap_err().to_string();
        assert!(e.contains("no Pony engine") && e.contains('e'), "{e}");
    }
}
