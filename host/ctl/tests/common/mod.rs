//! Helpers shared by `snapctl`'s integration tests: the `snap-host` binary (built here,
//! since a dependency's binaries are not given to a crate's tests), a host from a
//! configuration, running `snapctl` (as root or as another user) and an echo app.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use snap_host::process::HostProcess;
use snap_ipc::channel::ChannelAppEnd;
use snap_ipc::control::protocol::HostStatus;
use snap_ipc::control::SnapClient;

/// How long a host or a command may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The `snapctl` binary under test.
pub const SNAPCTL: &str = env!("CARGO_BIN_EXE_snapctl");

pub use snap_test_host::snap_host_bin;

/// A running `snap-host` in its own directory, killed and cleaned up when dropped.
pub struct Host {
    /// The host process.
    pub process: HostProcess,
    /// Its control socket.
    pub socket: PathBuf,
    dir: PathBuf,
}

impl Drop for Host {
    fn drop(&mut self) {
        self.process.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Host {
    /// A host with `config` (top-level keys and `[[group]]` tables; MicroQuanta off).
    pub fn start(config: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("snapctl-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!("microquanta = false\n{config}");
        let process =
            HostProcess::start(snap_host_bin(), &dir, &config, TIMEOUT, None).expect("snap-host starts");
        let socket = process.socket().to_owned();
        Self { process, socket, dir }
    }

    /// `snapctl --socket SOCKET args...`.
    pub fn snapctl(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(SNAPCTL);
        cmd.arg("--socket").arg(&self.socket).args(args);
        run(cmd)
    }

    /// `snapctl` run as `uid` (and its group) through `setpriv`.
    pub fn snapctl_as(&self, uid: u32, args: &[&str]) -> Output {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .arg("--clear-groups")
            .arg(SNAPCTL)
            .arg("--socket")
            .arg(&self.socket)
            .args(args);
        run(cmd)
    }

    /// The host's status, through the control client.
    pub fn status(&self) -> HostStatus {
        SnapClient::connect(&self.socket).unwrap().status().unwrap()
    }

    /// A file in the host's directory holding `text`.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// Runs `cmd` to its end within [`TIMEOUT`] (it never blocks on input: stdin is closed).
pub fn run(mut cmd: Command) -> Output {
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("command starts");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(TIMEOUT) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("command did not finish within {TIMEOUT:?}");
        }
    }
}

/// `out`'s stdout and stderr as text.
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts that `out` succeeded, and returns its stdout.
pub fn ok(out: &Output) -> String {
    let (stdout, stderr) = text(out);
    assert!(out.status.success(), "snapctl failed: {stderr}");
    stdout
}

/// Asserts that `out` failed with exit code `code`, and returns its stderr.
pub fn failed(out: &Output, code: i32) -> String {
    let (stdout, stderr) = text(out);
    assert_eq!(out.status.code(), Some(code), "stdout: {stdout} stderr: {stderr}");
    stderr
}

/// An echo app: a channel to `engine` (with the host watched, so a host that goes away is
/// an error, not a wait).
pub struct EchoApp {
    pub channel: ChannelAppEnd,
    seq: u64,
    /// The control connection the channel lives on (closing it detaches the channel).
    _client: SnapClient,
}

impl EchoApp {
    /// Attaches to `engine` of the host at `socket`.
    pub fn attach(socket: &Path, engine: &str) -> Self {
        let mut client = SnapClient::connect(socket).unwrap();
        let channel = client.attach(engine, true).unwrap();
        Self {
            channel,
            seq: 0,
            _client: client,
        }
    }

    /// One round trip; the echo must be the message sent.
    pub fn round_trip(&mut self) -> Result<Duration, String> {
        self.seq += 1;
        let msg = self.seq.to_le_bytes();
        let start = Instant::now();
        self.channel.send(&msg).map_err(|e| format!("send: {e:?}"))?;
        let mut buf = [0u8; 64];
        match self.channel.recv_timeout(&mut buf, TIMEOUT) {
            Ok(Some(8)) if buf[..8] == msg => Ok(start.elapsed()),
            Ok(Some(n)) => Err(format!("wrong echo: {:?}", &buf[..n])),
            Ok(None) => Err("no echo".into()),
            Err(e) => Err(format!("{e}")),
        }
    }
}
