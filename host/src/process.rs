//! `snap-host` as a child process, for programs that start hosts of their own (the host's
//! integration tests, the benchmarks): write its configuration, start it, wait for its
//! ready line, read the rest of its output, and stop it with SIGTERM.
//!
//! The ready line (`snap-host: ready, control socket at PATH`) is the binary's contract with
//! these callers; [`READY_PREFIX`] and `main.rs` print and parse it in one place.
//!
//! An upgrade (`snapctl upgrade`) replaces the host process by one the old host started:
//! [`HostProcess::upgraded`] follows it. The caller becomes a child subreaper when it starts
//! a host, so that the new process, orphaned when the old one exits, becomes its child and
//! is reaped (and its exit status read) like the first.

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
    /// The process serving now, if an upgrade replaced `child`.
    successor: Option<Pid>,
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
        Self::start_with_env(bin, dir, config, timeout, echo, &[])
    }

    /// [`Self::start`] with more environment variables for the host (e.g. the test hooks
    /// of `crate::takeover` and `crate::config::import`; an upgrade's new host inherits
    /// them).
    pub fn start_with_env(
        bin: &Path,
        dir: &Path,
        config: &str,
        timeout: Duration,
        echo: Option<&'static str>,
        env: &[(&str, &str)],
    ) -> Result<Self, ProcessError> {
        let socket = dir.join("snap.sock");
        let path = dir.join("snap.toml");
        std::fs::write(&path, config_text(&socket, config))
            .map_err(io(format!("writing {}", path.display())))?;
        // Idempotent, process-wide: a host's successor (an upgrade) is reparented to us.
        rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
            .map_err(|e| io("PR_SET_CHILD_SUBREAPER")(e.into()))?;
        let mut child = Command::new(bin)
            .arg("--config")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .envs(env.iter().copied())
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
            successor: None,
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

    /// The id of the process serving now (the successor after an upgrade).
    pub fn pid(&self) -> u32 {
        match self.successor {
            Some(p) => p.as_raw_nonzero().get() as u32,
            None => self.child.id(),
        }
    }

    /// Follows an upgrade: `new_pid` (from the upgrade's report) serves now. Waits up to
    /// `timeout` for the old process to exit, and returns its exit status. Its stdout is
    /// the new one's too, so [`Self::line_containing`] keeps reading.
    pub fn upgraded(&mut self, new_pid: u32, timeout: Duration) -> Result<ExitStatus, ProcessError> {
        let new = Pid::from_raw(new_pid as i32).ok_or_else(|| ProcessError::Io {
            what: format!("following the upgrade to pid {new_pid}"),
            source: std::io::ErrorKind::InvalidInput.into(),
        })?;
        let status = match self.successor.replace(new) {
            None => wait_child(&mut self.child, timeout)?,
            Some(old) => wait_pid(old, timeout)?,
        };
        Ok(status)
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
        if let Some(p) = self.successor {
            let _ = kill_process(p, Signal::KILL);
            let _ = rustix::process::waitpid(Some(p), rustix::process::WaitOptions::empty());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then its exit status (within `timeout`, else it is killed).
    pub fn terminate(mut self, timeout: Duration) -> Result<ExitStatus, ProcessError> {
        if let Some(p) = self.successor {
            if let Err(e) = kill_process(p, Signal::TERM) {
                return Err(ProcessError::Io {
                    what: "sending SIGTERM to snap-host".into(),
                    source: e.into(),
                });
            }
            return wait_pid(p, timeout);
        }
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

/// Waits up to `timeout` for `child` to exit.
fn wait_child(child: &mut Child, timeout: Duration) -> Result<ExitStatus, ProcessError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().map_err(io("waiting for snap-host"))? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            return Err(ProcessError::NoExit(timeout));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits up to `timeout` for `pid`, a child of ours (adopted as subreaper), to exit.
fn wait_pid(pid: Pid, timeout: Duration) -> Result<ExitStatus, ProcessError> {
    use std::os::unix::process::ExitStatusExt;
    let deadline = Instant::now() + timeout;
    loop {
        match rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::NOHANG) {
            Ok(Some((_, status))) => return Ok(ExitStatus::from_raw(status.as_raw())),
            Ok(None) => {}
            Err(e) => {
                return Err(ProcessError::Io {
                    what: format!("waiting for snap-host pid {}", pid.as_raw_nonzero()),
                    source: e.into(),
                })
            }
        }
        if Instant::now() > deadline {
            return Err(ProcessError::NoExit(timeout));
        }
        std::thread::sleep(Duration::from_millis(5));
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
