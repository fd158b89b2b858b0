//! Connecting to the host behind `--socket`, with errors that tell a missing host from a
//! stale socket and from a socket we may not use (the same words as the `pony` tool).

use std::io::ErrorKind;
use std::path::Path;

use anyhow::anyhow;
use snap_ipc::control::{ClientError, SnapClient};

/// A control connection to the host at `socket`.
pub fn connect(socket: &Path) -> anyhow::Result<SnapClient> {
    SnapClient::connect(socket).map_err(|e| no_host(socket, e))
}

fn no_host(socket: &Path, e: ClientError) -> anyhow::Error {
    let path = socket.display();
    match e {
        ClientError::Connect { source, .. } => match std::io::Error::from(source).kind() {
            ErrorKind::NotFound => anyhow!(
                "no Snap host at {path}: the socket does not exist (is snap-host running? \
                 --socket must name its control_socket)"
            ),
            ErrorKind::ConnectionRefused => {
                anyhow!("no Snap host at {path}: connection refused (a stale socket: its host has exited)")
            }
            ErrorKind::PermissionDenied => anyhow!(
                "cannot reach the Snap host at {path}: permission denied on the socket or its directory"
            ),
            _ => anyhow!(ClientError::Connect {
                path: path.to_string(),
                source
            }),
        },
        e => anyhow!(e).context(format!("connecting to the Snap host at {path}")),
    }
}
