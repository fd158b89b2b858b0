//! `snap-host` as a child process, for programs that start hosts of their own (the host's
//! integration tests, the benchmarks): write its configuration, start it, wait for its
//! ready line, read the rest of its output, and stop it with SIGTERM.
//!
//! The ready line (`snap-host: ready, control socket at PATH`) is the binary's contract with
//! these callers; [`READY_PREFIX`] and `main.rs` print and parse it in one place.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

/// What `snap-host` prints once its control socket serves, followed by the socket's path.
pub const READY_PREFIX: &str = "snap-host: ready, control socket at ";

/// Why a host could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// Writing the configuration, starting or waiting for the process failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The host exited before it was ready (its stderr says why).
    #[error("snap-host exited before it was ready ({status}); configuration {}", config.display())]
    ExitedEarly {
        /// Its exit status.
        status: ExitStatus,
        /// The configuration it was given.
        config: PathBuf,
    },
    /// No ready line in time (the host is killed).
    #[error("snap-host printed no ready line within {0:?}")]
    NotReady(Duration),
    /// It announced a socket other than the one configured.
    #[error("snap-host is ready on {announced}, not on the configured {}", configured.display())]
    WrongSocket {
        /// The configured socket.
        configured: PathBuf,
        /// What the ready line said.
        announced: String,
    },
    /// It did not exit in time after SIGTERM (it is killed).
    #[error("snap-host did not exit within {0:?} of SIGTERM")]
    NoExit(Duration),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ProcessError {
    let what = what.into();
    move |source| ProcessError::Io { what, source }
}

/// The configuration file: the control socket, then the caller's `config`.
fn config_text(socket: &Path, config: &str) -> String {
    // Debug quoting: a TOML basic string has the same escapes for what a path can hold.
    format!("control_socket = {:?}\n{config}", socket.display().to_string())
}

/// A running `snap-host`; killed when dropped.
#[derive(Debug)]
pub struct HostProcess {
    child: Child,
    socket: PathBuf,
    /// Its stdout after the ready line, one line at a time.
    output: mpsc::Receiver<String>,
}

impl HostProcess {
    /// Writes `dir/snap.toml` (control socket `dir/snap.sock`, then `config`: top-level keys
    /// and `[[group]]` tables), starts `bin` on it and waits up to `timeout` for the ready
    /// line. Lines are forwarded to stderr behind `echo` when it is given.
    pub fn start(
        bin: &Path,
        dir: &Path,
        config: &str,
        timeout: Duration,
        echo: Option<&'static str>,
    ) -> Result<Self, ProcessError> {
        let socket = dir.join("snap.sock");
        let path = dir.join("snap.toml");
        std::fs::write(&path, config_text(&socket, config))
            .map_err(io(format!("writing {}", path.display())))?;
        let mut child = Command::new(bin)
            .arg("--config")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(io(format!("starting {}", bin.display())))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        // The reader keeps draining the pipe, so the host never blocks on it.
        let (tx, output) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // The final status as JSON is one long line nobody reads on a terminal.
                if let Some(prefix) = echo.filter(|_| !line.starts_with('{')) {
                    eprintln!("{prefix}{line}");
                }
                let _ = tx.send(line);
            }
        });
        let mut host = Self {
            child,
            socket,
            output,
        };
        let deadline = Instant::now() + timeout;
        let announced = loop {
            match host.output.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => match line.find(READY_PREFIX) {
                    Some(at) => break line[at + READY_PREFIX.len()..].to_owned(),
                    None => continue,
                },
                Err(mpsc::RecvTimeoutError::Timeout) | Err(mpsc::RecvTimeoutError::Disconnected) => {}
            }
            if let Some(status) = host.child.try_wait().map_err(io("waiting for snap-host"))? {
                return Err(ProcessError::ExitedEarly { status, config: path });
            }
            if Instant::now() > deadline {
                return Err(ProcessError::NotReady(timeout));
            }
        };
        if Path::new(&announced) != host.socket {
            return Err(ProcessError::WrongSocket {
                configured: host.socket.clone(),
                announced,
            });
        }
        Ok(host)
    }

    /// Its control socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line of its stdout containing `pattern`, from `pattern` on, waiting up to
    /// `timeout`; lines before it are skipped.
    pub fn line_containing(&self, pattern: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let line = self
                .output
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .ok()?;
            if let Some(at) = line.find(pattern) {
                return Some(line[at..].to_owned());
            }
        }
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then its exit status (within `timeout`, else it is killed).
    pub fn terminate(mut self, timeout: Duration) -> Result<ExitStatus, ProcessError> {
        if let Err(e) = kill_process(Pid::from_child(&self.child), Signal::TERM) {
            return Err(ProcessError::Io {
                what: "sending SIGTERM to snap-host".into(),
                source: e.into(),
            });
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().map_err(io("waiting for snap-host"))? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err(ProcessError::NoExit(timeout));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_socket_comes_first_and_quoted() {
        let text = config_text(Path::new("/tmp/x/snap.sock"), "[[group]]\n");
        assert!(
            text.starts_with("control_socket = \"/tmp/x/snap.sock\"\n"),
            "{text}"
        );
        assert!(text.ends_with("[[group]]\n"), "{text}");
        let config: crate::config::Config = toml::from_str(&format!(
            "{}name = \"g\"\nmode = \"spreading\"\n[[group.engine]]\nname = \"e\"\nkind = \"echo\"\n",
            config_text(Path::new("/tmp/a \"b\"/snap.sock"), "[[group]]\n")
        ))
        .unwrap();
        assert_eq!(config.control_socket, Path::new("/tmp/a \"b\"/snap.sock"));
    }
}
