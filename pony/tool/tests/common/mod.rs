//! Helpers shared by the `pony` tool's integration tests: the `snap-host` binary (built
//! here, since a dependency's binaries are not given to a crate's tests), hosts with Pony
//! engines on UDP ports of 127.0.0.1, and running `pony` with a deadline. Each test file
//! uses some of them, hence `dead_code`.

#![allow(dead_code)]

use std::io::Write;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use snap_host::process::HostProcess;

/// How long a host or a `pony` command may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The `pony` binary under test.
pub const PONY: &str = env!("CARGO_BIN_EXE_pony");

pub use snap_test_host::snap_host_bin;

/// A private directory for a host's or a test's files.
pub fn test_dir(prefix: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A UDP port of 127.0.0.1 the kernel just handed out (so the peer's address is known
/// before its host starts; a tiny race with other processes is accepted for a test).
pub fn free_addr() -> String {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string()
}

/// The `[[group.engine]]` table of Pony engine `name` on a UDP NIC bound to `addr`.
pub fn pony_engine(name: &str, addr: &str) -> String {
    format!(
        "[[group.engine]]\nname = \"{name}\"\nkind = \"pony\"\n\
         [group.engine.options]\nnic = \"udp\"\nbind = \"{addr}\"\n"
    )
}

/// A running `snap-host` (killed when dropped).
pub struct Host {
    /// The host process.
    pub process: HostProcess,
    /// Its control socket.
    pub socket: PathBuf,
    /// Its Pony engine's UDP address ([`Host::start`]).
    pub addr: String,
    /// Its directory (configuration, socket), removed with the host.
    dir: PathBuf,
}

impl Drop for Host {
    fn drop(&mut self) {
        self.process.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Host {
    /// A host with one spreading group holding Pony engine `pony0` on a UDP port of
    /// 127.0.0.1.
    pub fn start() -> Self {
        let addr = free_addr();
        let mut host = Self::with_engines(&pony_engine("pony0", &addr));
        host.addr = addr;
        host
    }

    /// A host with one spreading group holding `engines` (`[[group.engine]]` tables).
    pub fn with_engines(engines: &str) -> Self {
        let dir = test_dir("pony-tool-host");
        let config = format!("microquanta = false\n[[group]]\nname = \"g\"\nmode = \"spreading\"\n{engines}");
        let process =
            HostProcess::start(snap_host_bin(), &dir, &config, TIMEOUT, None).expect("snap-host starts");
        let socket = process.socket().to_owned();
        Self {
            process,
            socket,
            addr: String::new(),
            dir,
        }
    }

    /// `pony` with `args`, then `--socket` of this host.
    pub fn pony(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(PONY);
        cmd.args(args).arg("--socket").arg(&self.socket);
        cmd
    }
}

/// A child killed when dropped (a test that fails leaves no `pony` behind).
pub struct Running(Option<Child>, Option<mpsc::Receiver<String>>);

impl Running {
    /// Takes over `child`.
    pub fn new(child: Child) -> Self {
        Self(Some(child), None)
    }

    /// The child.
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("not finished")
    }

    /// Waits (up to [`TIMEOUT`]) for the exit and returns the output (read meanwhile, so
    /// a child never blocks on a full pipe); kills the child and fails the test if it does
    /// not exit.
    pub fn finish(mut self) -> Output {
        fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut p) = pipe {
                    let _ = p.read_to_end(&mut buf);
                }
                buf
            })
        }
        let stdout = drain(self.child().stdout.take());
        let stderr = drain(self.child().stderr.take());
        let stderr_lines = self.1.take();
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(status) = self.child().try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "pony did not exit within {TIMEOUT:?}");
            std::thread::sleep(Duration::from_millis(10));
        };
        self.0 = None;
        let mut stderr = stderr.join().unwrap();
        // What [`stderr_line`] did not consume (its reader ends with the pipe).
        for line in stderr_lines.iter().flat_map(|rx| rx.iter()) {
            stderr.extend_from_slice(line.as_bytes());
            stderr.push(b'\n');
        }
        Output {
            status,
            stdout: stdout.join().unwrap(),
            stderr,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `cmd` with stdout and stderr piped and stdin closed.
pub fn spawn(mut cmd: Command) -> Running {
    Running::new(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("pony starts"),
    )
}

/// Runs `cmd` to its end (stdin: `input`) within [`TIMEOUT`].
pub fn run(mut cmd: Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pony starts");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = Running::new(child).finish();
    writer.join().unwrap();
    out
}

/// Waits for a line containing `pattern` on `child`'s stderr (the tool says there when it
/// listens) and returns it; later lines stay for [`Running::finish`].
pub fn stderr_line(child: &mut Running, pattern: &str) -> String {
    use std::io::{BufRead, BufReader};
    if child.1.is_none() {
        let stderr = child.child().stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        child.1 = Some(rx);
    }
    let rx = child.1.as_ref().unwrap();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no stderr line with {pattern:?} from pony"));
        if line.contains(pattern) {
            return line;
        }
    }
}

/// `n` random bytes (from the kernel).
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut f = std::fs::File::open("/dev/urandom").unwrap();
    let mut buf = vec![0; n];
    std::io::Read::read_exact(&mut f, &mut buf).unwrap();
    buf
}

/// A hash of `bytes` for messages that compare large buffers.
pub fn hash(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// `out`'s stderr as text, for assertions.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Waits (up to [`TIMEOUT`]) until `cond` holds.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
