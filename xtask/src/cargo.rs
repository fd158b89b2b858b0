//! Running cargo from xtask: every child cargo gets the environment `deps` decided on
//! (`BPF_CLANG`), runs in the workspace root, and builds can report the executables they
//! produced (read from `--message-format=json-render-diagnostics`, so compiler messages
//! still reach the user's terminal as usual).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::{deps::Deps, sys};

/// Where the workspace and its build output are.
#[derive(Debug, Clone)]
pub struct Workspace {
    pub root: PathBuf,
    pub target_dir: PathBuf,
}

/// One executable cargo built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub package: String,
    /// The target's name: the binary name, or the integration test's file stem.
    pub target_name: String,
    /// `bin`, `test`, `lib` (for unit-test executables), ...
    pub kinds: Vec<String>,
    /// Built as a libtest harness (`cargo test`), rather than a plain program.
    pub is_test: bool,
    pub executable: PathBuf,
}

/// The cargo that runs us (`$CARGO` under `cargo run`), else `cargo` on PATH.
fn cargo_program() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Reads the workspace layout from `cargo metadata` (honours `CARGO_TARGET_DIR`).
pub fn workspace() -> Result<Workspace> {
    #[derive(Deserialize)]
    struct Metadata {
        workspace_root: PathBuf,
        target_directory: PathBuf,
    }
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let text = sys::output(
        Command::new(cargo_program())
            .args([
                "metadata",
                "--format-version",
                "1",
                "--no-deps",
                "--manifest-path",
            ])
            .arg(manifest),
    )?;
    let meta: Metadata = serde_json::from_str(&text).context("parsing cargo metadata")?;
    Ok(Workspace {
        root: meta.workspace_root,
        target_dir: meta.target_directory,
    })
}

/// `cargo <args>` in the workspace root with the dependencies' environment.
pub fn command(deps: &Deps, ws: &Workspace, args: &[&str]) -> Command {
    let mut cmd = Command::new(cargo_program());
    cmd.args(args).current_dir(&ws.root);
    deps.apply(&mut cmd);
    cmd
}

/// Runs `cargo <args>` with inherited output; fails unless it succeeds.
pub fn run(deps: &Deps, ws: &Workspace, args: &[&str]) -> Result<()> {
    sys::run(&mut command(deps, ws, args))
}

/// Runs a building cargo command (`build ...`, `test --no-run ...`) and returns the
/// executables it produced.
pub fn build(deps: &Deps, ws: &Workspace, args: &[&str]) -> Result<Vec<Artifact>> {
    let mut cmd = command(deps, ws, args);
    cmd.arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped());
    let described = sys::describe(&cmd);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{described}`"))?;
    let stdout = child.stdout.take().context("cargo stdout")?;
    let mut artifacts = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo output")?;
        artifacts.extend(parse_message(&line));
    }
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() {
        bail!("`{described}` failed ({status})");
    }
    Ok(artifacts)
}

/// `cargo build --workspace --release`; returns the release output directory.
pub fn build_release(deps: &Deps, ws: &Workspace) -> Result<PathBuf> {
    println!("cargo: building the workspace (release)");
    build(deps, ws, &["build", "--workspace", "--release"])?;
    Ok(ws.target_dir.join("release"))
}

/// The artifact described by one JSON line of cargo's output, if it is an executable.
pub fn parse_message(line: &str) -> Option<Artifact> {
    #[derive(Deserialize)]
    struct Message {
        reason: String,
        package_id: Option<String>,
        target: Option<Target>,
        profile: Option<Profile>,
        executable: Option<PathBuf>,
    }
    #[derive(Deserialize)]
    struct Target {
        name: String,
        kind: Vec<String>,
    }
    #[derive(Deserialize)]
    struct Profile {
        test: bool,
    }
    let msg: Message = serde_json::from_str(line).ok()?;
    if msg.reason != "compiler-artifact" {
        return None;
    }
    let target = msg.target?;
    Some(Artifact {
        package: package_name(&msg.package_id?),
        target_name: target.name,
        kinds: target.kind,
        is_test: msg.profile.is_some_and(|p| p.test),
        executable: msg.executable?,
    })
}

/// The package name in a package id: `path+file:///w/scheduler#scx_microquanta@0.1.0`,
/// `path+file:///w/xtask#0.1.0` (name = last path segment), or the old
/// `name 0.1.0 (path+file:///...)` form.
fn package_name(id: &str) -> String {
    if id.contains(' ') {
        return id.split(' ').next().unwrap_or(id).to_string();
    }
    match id.split_once('#') {
        Some((_, frag)) if frag.contains('@') => frag.split('@').next().unwrap_or(frag).into(),
        Some((url, _)) => url.rsplit('/').next().unwrap_or(url).to_string(),
        None => id.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integration_test_artifact() {
        let line = r#"{"reason":"compiler-artifact","package_id":"path+file:///work/main/scheduler#scx_microquanta@0.1.0","manifest_path":"/work/main/scheduler/Cargo.toml","target":{"kind":["test"],"crate_types":["bin"],"name":"sched_ext_attach","src_path":"/work/main/scheduler/tests/sched_ext_attach.rs","edition":"2021","doc":false,"doctest":false,"test":true},"profile":{"opt_level":"0","debuginfo":2,"debug_assertions":true,"overflow_checks":true,"test":true},"features":[],"filenames":["/work/main/target/debug/deps/sched_ext_attach-0123abcd"],"executable":"/work/main/target/debug/deps/sched_ext_attach-0123abcd","fresh":true}"#;
        let a = parse_message(line).expect("artifact");
        assert_eq!(a.package, "scx_microquanta");
        assert_eq!(a.target_name, "sched_ext_attach");
        assert_eq!(a.kinds, ["test"]);
        assert!(a.is_test);
        assert_eq!(
            a.executable,
            PathBuf::from("/work/main/target/debug/deps/sched_ext_attach-0123abcd")
        );
    }

    #[test]
    fn libraries_and_other_messages_are_not_executables() {
        let lib = r#"{"reason":"compiler-artifact","package_id":"registry+https://github.com/rust-lang/crates.io-index#anyhow@1.0.100","target":{"kind":["lib"],"name":"anyhow"},"profile":{"test":false},"executable":null}"#;
        assert_eq!(parse_message(lib), None);
        let done = r#"{"reason":"build-finished","success":true}"#;
        assert_eq!(parse_message(done), None);
        assert_eq!(parse_message("not json"), None);
    }

    #[test]
    fn package_id_forms() {
        assert_eq!(package_name("path+file:///w/xtask#0.1.0"), "xtask");
        assert_eq!(
            package_name("path+file:///w/experiments#mq-experiments@0.1.0"),
            "mq-experiments"
        );
        assert_eq!(package_name("xtask 0.1.0 (path+file:///w/xtask)"), "xtask");
    }
}
