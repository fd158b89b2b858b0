//! Helpers shared by the host's integration tests that run real `snap-host` processes
//! (through `snap_host::process`): a host from a configuration, a host with one Pony engine
//! on a UDP port of 127.0.0.1, the Pony echo app, reading a child's output, and waiting for a condition. Each test crate uses some of them, hence `dead_code`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pony_express::app::Completions;
use pony_express::client::{ClientError, PonyClient};
use snap_host::process::HostProcess;

/// How long the helpers (and the tests) wait for anything.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A host with one echo engine, `echo0`, in a spreading group (for [`Host::with_config`]).
pub const ECHO_GROUP: &str = r#"
microquanta = false
[[group]]
name = "latency"
mode = "spreading"
[[group.engine]]
name = "echo0"
kind = "echo"
"#;

/// A running `snap-host`, killed if a test fails before it is stopped.
pub struct Host {
    /// The host process.
    pub process: HostProcess,
    /// Its control socket.
    pub socket: PathBuf,
    /// Its Pony engine `pony0`'s UDP address ([`Self::start`]; empty for
    /// [`Self::with_config`]).
    pub addr: String,
}

impl Host {
    /// Starts a host with `config` (`[[group]]` tables and top-level keys) and waits for
    /// its ready line.
    pub fn with_config(config: &str) -> Self {
        Self::spawn(&test_dir("snap-host-test"), config, String::new())
    }

    /// Starts a host with one spreading group holding Pony engine `pony0` on a UDP port of
    /// 127.0.0.1, and waits for its ready line.
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// [`Self::start`] with more lines in the engine's options (e.g. limits).
    pub fn start_with(options: &str) -> Self {
        let dir = test_dir("pony-hosts");
        // A port the kernel just handed out, so that the peer's address is known before
        // the host starts (a tiny race with other processes is accepted for a test).
        let addr = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        let groups = format!(
            "microquanta = false\n\
             [[group]]\nname = \"pony\"\nmode = \"spreading\"\n\
             [[group.engine]]\nname = \"pony0\"\nkind = \"pony\"\n\
             [group.engine.options]\nnic = \"udp\"\nbind = \"{addr}\"\n{options}\n"
        );
        Self::spawn(&dir, &groups, addr)
    }

    fn spawn(dir: &std::path::Path, config: &str, addr: String) -> Self {
        let bin = std::path::Path::new(env!("CARGO_BIN_EXE_snap-host"));
        let process = HostProcess::start(bin, dir, config, TIMEOUT, None).expect("snap-host starts");
        let socket = process.socket().to_owned();
        Self {
            process,
            socket,
            addr,
        }
    }

    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGTERM, then wait (up to [`TIMEOUT`]) for the exit.
    pub fn terminate(self) -> std::process::ExitStatus {
        self.process
            .terminate(TIMEOUT)
            .expect("snap-host exits after SIGTERM")
    }
}

/// A private directory per host for its config and socket.
pub fn test_dir(prefix: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The child's first stdout line containing `prefix` (within [`TIMEOUT`]), from `prefix`
/// on (libtest may have printed the test's name before it); the rest of its output is
/// drained.
pub fn line_starting(child: &mut Child, prefix: &str) -> String {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no line starting with {prefix:?} from the child"));
        if let Some(at) = line.find(prefix) {
            return line[at..].to_owned();
        }
    }
}

pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Message `seq` of `stream`, `len` bytes: the pair first (when it fits), then a pattern
/// derived from both, so a misplaced or mixed-up byte is caught.
pub fn message(stream: u32, seq: u32, len: usize) -> Vec<u8> {
    let mut m: Vec<u8> = (0..len)
        .map(|i| (i as u32 ^ seq.wrapping_mul(31) ^ stream) as u8)
        .collect();
    let head = [stream.to_le_bytes(), seq.to_le_bytes()].concat();
    let n = head.len().min(len);
    m[..n].copy_from_slice(&head[..n]);
    m
}

/// The Pony echo app on a host: connects to `pony0` at `socket`, listens on `service`, says
/// so on `ready`, then echoes every message on the flow and stream it came on until its
/// client fails, and returns that error (a test expects `HostGone` at the end). Its `recv`
/// is blocked across whatever the test does to its host (an upgrade): the call completes
/// afterwards.
pub fn pony_echo_app(socket: PathBuf, service: u32, ready: mpsc::Sender<()>) -> ClientError {
    let mut b = PonyClient::connect(&socket, "pony0", Completions::Block).unwrap();
    b.listen(service).unwrap();
    ready.send(()).unwrap();
    loop {
        match b.recv(Duration::from_secs(60)) {
            Ok(m) => {
                if let Err(e) = b.send(m.flow, m.stream, &m.data) {
                    return e;
                }
            }
            Err(e) => return e,
        }
    }
}
