//! The README's `pony` example, run as written: the two host configurations and the
//! commands of its last shell block, in two network namespaces joined by a veth pair of the
//! README's names (made and removed here, through `snap-test-netns`). Needs root.
//!
//! The commands run one line at a time, as a person types them in an interactive shell:
//! `&` puts a line in the background (then the runner waits for what a person would wait
//! for: a host's ready line, the listener's "listening"), `< F` and `> F` redirect, `wait %N`
//! and `kill %N…` act on the background jobs by number. Any other shell syntax fails the
//! test, so the README cannot drift into something this runner does not run.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use common::{hash, snap_host_bin, test_dir, PONY, TIMEOUT};
use snap_host::process::READY_PREFIX;
use snap_test_netns::{ADDR_A, ADDR_B};

/// The README's names, which the test creates.
const NAMESPACES: [&str; 2] = ["cli-a", "cli-b"];
const VETH: [&str; 2] = ["cli-veth-a", "cli-veth-b"];

/// The README's code blocks of the `pony` tool's section: (language, text).
fn readme_blocks() -> Vec<(String, String)> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap();
    let start = readme
        .find("## The `pony` tool")
        .expect("README has the `pony` section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut blocks = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        if let Some(lang) = line.strip_prefix("```") {
            let body: Vec<&str> = lines.by_ref().take_while(|l| !l.starts_with("```")).collect();
            blocks.push((lang.to_owned(), body.join("\n") + "\n"));
        }
    }
    blocks
}

/// A background job: the child, killed if the test fails before it ends.
struct Job {
    line: String,
    child: Option<Child>,
}

impl Drop for Job {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Job {
    /// Waits (up to [`TIMEOUT`]) for the exit and checks it succeeded.
    fn wait_success(&mut self) {
        let mut child = self.child.take().expect("job waited for twice");
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("`{}` did not exit within {TIMEOUT:?}", self.line);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert!(status.success(), "`{}` exited with {status}", self.line);
    }
}

/// Forwards `pipe`'s lines to the test's stderr (tagged with the command) and to `tx`.
fn forward(pipe: impl Read + Send + 'static, tag: String, tx: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            // The host's final status is one long JSON line nobody needs here.
            if !line.starts_with('{') {
                eprintln!("  {tag}| {line}");
            }
            let _ = tx.send(line);
        }
    });
}

/// Runs one README line in `dir`; background jobs are numbered from 1 in `jobs`.
fn run_line(line: &str, dir: &Path, path_env: &str, jobs: &mut Vec<Job>) {
    eprintln!("$ {line}");
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["wait", job] => return job_of(jobs, job).wait_success(),
        ["kill", targets @ ..] => {
            for job in targets {
                let pid = job_of(jobs, job).child.as_ref().expect("job still running").id();
                let ok = Command::new("kill")
                    .arg(pid.to_string())
                    .status()
                    .unwrap()
                    .success();
                assert!(ok, "kill {pid}");
                job_of(jobs, job).wait_success();
            }
            return;
        }
        _ => {}
    }
    let (words, background) = match words.split_last() {
        Some((&"&", rest)) => (rest.to_vec(), true),
        _ => (words, false),
    };
    let mut argv = Vec::new();
    let mut cmd_stdin = Stdio::null();
    let mut redirected_out = None;
    let mut it = words.iter();
    while let Some(w) = it.next() {
        match *w {
            "<" => cmd_stdin = std::fs::File::open(dir.join(it.next().unwrap())).unwrap().into(),
            ">" => redirected_out = Some(std::fs::File::create(dir.join(it.next().unwrap())).unwrap()),
            w if w.contains(['|', ';', '&', '$', '`', '"', '\'']) => {
                panic!("the README line `{line}` uses shell syntax this runner does not run: {w}")
            }
            w => argv.push(w),
        }
    }
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..])
        .current_dir(dir)
        .env("PATH", path_env)
        .stdin(cmd_stdin)
        .stderr(Stdio::piped());
    match redirected_out {
        Some(f) => cmd.stdout(f),
        None => cmd.stdout(Stdio::piped()),
    };
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("`{line}`: {e}"));
    let (tx, rx) = mpsc::channel();
    let tag = argv
        .iter()
        .find(|w| ["snap-host", "pony"].contains(w))
        .unwrap_or(&argv[0]);
    let tag = format!("{tag} {}", jobs.len() + 1);
    if let Some(out) = child.stdout.take() {
        forward(out, tag.clone(), tx.clone());
    }
    forward(child.stderr.take().unwrap(), tag, tx);
    let mut job = Job {
        line: line.to_owned(),
        child: Some(child),
    };
    if !background {
        return job.wait_success();
    }
    // What a person waits for before the next line.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("`{line}` did not say it is ready within {TIMEOUT:?}"));
        if got.contains(READY_PREFIX) || got.contains("listening on service") {
            break;
        }
    }
    jobs.push(job);
}

fn job_of<'a>(jobs: &'a mut [Job], spec: &str) -> &'a mut Job {
    let n: usize = spec
        .strip_prefix('%')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("job spec {spec}"));
    &mut jobs[n - 1]
}

#[test]
fn the_readmes_two_namespace_cat_example_runs_as_written() {
    if let Some(why) = snap_test_netns::skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let blocks = readme_blocks();
    let shell: Vec<&String> = blocks.iter().filter(|(l, _)| l == "sh").map(|(_, b)| b).collect();
    let [setup, commands] = shell[..] else {
        panic!("the README's `pony` section has {} sh blocks, not 2", shell.len());
    };
    // The setup the README shows is the one made here.
    for name in NAMESPACES.iter().chain(&VETH).chain(&[ADDR_A, ADDR_B]) {
        assert!(setup.contains(name), "README setup does not mention {name}");
    }

    let dir = test_dir("pony-readme");
    let mut configs = 0;
    for (lang, text) in &blocks {
        if lang != "toml" {
            continue;
        }
        let name = text
            .lines()
            .next()
            .unwrap()
            .strip_prefix("# ")
            .expect("a `# FILE` line first");
        std::fs::write(dir.join(name), text).unwrap();
        configs += 1;
    }
    assert_eq!(configs, 2, "the README shows two host configurations");
    // A leftover of a killed run would make the setup fail: remove it first.
    for ns in NAMESPACES {
        let _ = snap_test_netns::ip(&["netns", "del", ns]);
    }
    let _topology =
        snap_test_netns::Topology::named(NAMESPACES.map(String::from), VETH.map(String::from), 1500);

    // `pony` and this workspace's `snap-host` first on PATH, as "target/release on PATH".
    let bins = [
        Path::new(PONY).parent().unwrap(),
        snap_host_bin().parent().unwrap(),
    ];
    let path_env = std::env::join_paths(bins.iter().map(|p| p.to_path_buf()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let path_env = path_env.to_str().unwrap();
    let mut jobs = Vec::new();
    for line in commands.lines().map(str::trim).filter(|l| !l.is_empty()) {
        run_line(line, &dir, path_env, &mut jobs);
    }
    // `cmp` passed; the copy is also checked here, so the test does not rest on the README.
    let (sent, got) = (
        std::fs::read(dir.join("big.bin")).unwrap(),
        std::fs::read(dir.join("copy.bin")).unwrap(),
    );
    assert_eq!(sent.len(), 8 << 20);
    assert_eq!(hash(&sent), hash(&got), "copy.bin differs from big.bin");
    drop(jobs);
    std::fs::remove_dir_all(dir).unwrap();
}
