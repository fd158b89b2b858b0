//! The VM's root filesystem: an initramfs (uncompressed `newc` cpio) holding busybox-static,
//! host tools with the exact shared libraries `ldd` reports, our binaries at their host
//! paths, and a busybox `/init` that runs one script as root.
//!
//! Copying files to identical paths means test executables can find the scheduler binary
//! through paths baked in at build time (e.g. `CARGO_BIN_EXE_*`), and the dynamic loader
//! finds libraries where the binaries were linked to expect them. Uncompressed cpio avoids a
//! gzip pass on both sides; the kernel unpacks it in well under a second.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::sys;

/// Host programs every VM gets (with their libraries), for experiments and tests.
pub const HOST_TOOLS: &[&str] = &["stress-ng", "cyclictest", "taskset", "chrt", "sockperf", "ip"];

/// What goes into one initramfs.
#[derive(Debug, Default)]
pub struct Contents {
    /// Host programs looked up on PATH and copied to the same path.
    pub host_tools: Vec<String>,
    /// Directories whose executable files (directly inside) are copied to the same path.
    pub bin_dirs: Vec<PathBuf>,
    /// Files copied to the same absolute path.
    pub extra_files: Vec<PathBuf>,
    /// `(guest path, text, mode)` written verbatim, e.g. `/init` and the script.
    pub generated: Vec<(String, String, u32)>,
}

/// Stages `contents` in `staging` (emptied first) and packs it into `output`.
pub fn build(contents: &Contents, staging: &Path, output: &Path) -> Result<()> {
    if staging.exists() {
        std::fs::remove_dir_all(staging).with_context(|| format!("{}", staging.display()))?;
    }
    std::fs::create_dir_all(staging).with_context(|| format!("{}", staging.display()))?;
    mirror_root_symlinks(staging)?;
    for dir in [
        "dev", "proc", "sys", "tmp", "run", "root", "etc", "mq", "usr/bin", "usr/sbin",
    ] {
        std::fs::create_dir_all(staging.join(dir))?;
    }
    let etc = [
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("etc/group", "root:x:0:\n"),
        ("etc/hosts", "127.0.0.1 localhost\n::1 localhost\n"),
    ];
    for (path, text) in etc {
        std::fs::write(staging.join(path), text)?;
    }

    let busybox = Path::new("/bin/busybox");
    if !busybox.is_file() {
        bail!("/bin/busybox missing (package busybox-static)");
    }
    copy_with_libs(busybox, staging)?;
    for tool in &contents.host_tools {
        let path = sys::which(tool).with_context(|| format!("host tool `{tool}` not found"))?;
        copy_with_libs(&path, staging)?;
    }
    for dir in &contents.bin_dirs {
        let entries = std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            // xtask itself is of no use in the guest, and large.
            let is_xtask = path.file_name().is_some_and(|n| n == "xtask");
            if sys::is_executable_file(&path) && !is_xtask {
                if is_elf(&path)? {
                    copy_stripped(&path, staging)?;
                }
                copy_with_libs(&path, staging)?;
            }
        }
    }
    for file in &contents.extra_files {
        copy_with_libs(file, staging)?;
    }
    for (guest_path, text, mode) in &contents.generated {
        let dest = staged_path(staging, Path::new(guest_path));
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&dest, text).with_context(|| format!("{}", dest.display()))?;
        set_mode(&dest, *mode)?;
    }
    pack(staging, output)?;
    // The staging tree is as large as the archive and of no further use.
    std::fs::remove_dir_all(staging).with_context(|| format!("{}", staging.display()))
}

/// Recreates `/bin -> usr/bin` style links so that files land where they do on the host
/// (merged-/usr Debian), with relative targets so nothing ever points outside `staging`.
fn mirror_root_symlinks(staging: &Path) -> Result<()> {
    for name in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(name);
        let Ok(target) = std::fs::read_link(&host) else {
            continue;
        };
        let relative = target.strip_prefix("/").unwrap_or(&target).to_path_buf();
        std::fs::create_dir_all(staging.join(&relative))?;
        std::os::unix::fs::symlink(&relative, staging.join(name))
            .with_context(|| format!("mirroring {}", host.display()))?;
    }
    Ok(())
}

fn staged_path(staging: &Path, guest: &Path) -> PathBuf {
    staging.join(guest.strip_prefix("/").unwrap_or(guest))
}

/// Copies `file` (following symlinks) to its own path under `staging`, plus, for dynamic
/// executables, every library `ldd` lists.
fn copy_with_libs(file: &Path, staging: &Path) -> Result<()> {
    let file = std::path::absolute(file).with_context(|| format!("{}", file.display()))?;
    copy_one(&file, staging)?;
    if sys::is_executable_file(&file) || file.to_string_lossy().contains(".so") {
        for lib in ldd(&file)? {
            copy_one(&lib, staging)?;
        }
    }
    Ok(())
}

/// Whether `file` is an ELF object (not a script).
fn is_elf(file: &Path) -> Result<bool> {
    use std::io::Read as _;
    let mut magic = [0u8; 4];
    let mut f = std::fs::File::open(file).with_context(|| format!("{}", file.display()))?;
    Ok(f.read_exact(&mut magic).is_ok() && magic == *b"\x7fELF")
}

/// Copies our own executable `file` without its debug information: a release build
/// carries line tables that make each binary ~20 times larger, and the kernel unpacks the
/// initramfs into the guest's memory (the demo's 2 GiB guest could no longer hold them).
/// Symbols stay, for `perf` in the guest; a panic's message keeps its file and line.
fn copy_stripped(file: &Path, staging: &Path) -> Result<()> {
    let file = std::path::absolute(file).with_context(|| format!("{}", file.display()))?;
    let dest = staged_path(staging, &file);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("{}", parent.display()))?;
    }
    let mut strip = Command::new("strip");
    strip.arg("--strip-debug").arg("-o").arg(&dest).arg(&file);
    sys::output(&mut strip)
        .map(drop)
        .with_context(|| format!("stripping {} into the initramfs", file.display()))
}

fn copy_one(file: &Path, staging: &Path) -> Result<()> {
    let dest = staged_path(staging, file);
    if dest.exists() {
        return Ok(());
    }
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("{}", parent.display()))?;
    }
    std::fs::copy(file, &dest).with_context(|| format!("copying {} into the initramfs", file.display()))?;
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

/// The shared libraries (and loader) `file` needs; empty for static executables.
fn ldd(file: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .context("cannot run ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let errors = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if text.contains("not a dynamic executable") || errors.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        bail!("ldd {} failed: {}", file.display(), errors.trim());
    }
    parse_ldd(&text).with_context(|| format!("libraries of {}", file.display()))
}

/// Library paths in `ldd` output; fails on `=> not found`.
pub fn parse_ldd(output: &str) -> Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in output.lines() {
        let line = line.trim();
        let path_part = match line.split_once("=>") {
            Some((name, rest)) => {
                if rest.trim().starts_with("not found") {
                    bail!("{} not found", name.trim());
                }
                rest
            }
            None => line,
        };
        // "libm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x...)", or the loader
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"; linux-vdso.so.1 has no file.
        if let Some(word) = path_part.split_whitespace().next() {
            if word.starts_with('/') {
                libs.push(PathBuf::from(word));
            }
        }
    }
    Ok(libs)
}

/// Packs `staging` into an uncompressed newc cpio owned by root.
fn pack(staging: &Path, output: &Path) -> Result<()> {
    let mut list = Vec::new();
    collect_paths(staging, Path::new("."), &mut list)?;
    let out_file = std::fs::File::create(output).with_context(|| format!("{}", output.display()))?;
    let mut child = Command::new("cpio")
        .args(["--create", "--format=newc", "--null", "--quiet", "--owner=0:0"])
        .current_dir(staging)
        .stdin(Stdio::piped())
        .stdout(out_file)
        .spawn()
        .context("cannot run cpio")?;
    let mut stdin = child.stdin.take().context("cpio stdin")?;
    let mut names = Vec::new();
    for path in &list {
        names.extend_from_slice(path.as_os_str().as_encoded_bytes());
        names.push(0);
    }
    stdin.write_all(&names).context("writing to cpio")?;
    drop(stdin);
    let status = child.wait().context("waiting for cpio")?;
    if !status.success() {
        bail!("cpio failed ({status})");
    }
    Ok(())
}

/// Paths under `root` relative to it, parents before children, symlinks not followed.
fn collect_paths(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let dir = root.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("{}", dir.display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let rel_path = rel.join(entry.file_name());
        out.push(rel_path.clone());
        if entry.file_type()?.is_dir() {
            collect_paths(root, &rel_path, out)?;
        }
    }
    Ok(())
}

/// Settings of the generated `/init`.
#[derive(Debug)]
pub struct InitParams<'a> {
    /// Directories put in front of the standard PATH.
    pub path_prefix: &'a [PathBuf],
    /// Exported before the script runs.
    pub env: &'a [(String, String)],
    /// Guest path of the script to run.
    pub script_path: &'a str,
    /// Written with the exit status so the host can tell it from the command's output.
    pub nonce: &'a str,
}

/// The marker line `/init` prints after the script: `@@MQ_VM_EXIT <nonce> <status>@@`.
pub fn exit_marker(nonce: &str, status: &str) -> String {
    format!("@@MQ_VM_EXIT {nonce} {status}@@")
}

/// Finds an exit marker in `line`: the text before it (output without a final newline) and
/// the status.
pub fn find_exit_marker<'l>(line: &'l str, nonce: &str) -> Option<(&'l str, i32)> {
    let start = line.find(&format!("@@MQ_VM_EXIT {nonce} "))?;
    let rest = &line[start..].strip_prefix(&format!("@@MQ_VM_EXIT {nonce} "))?;
    let status = rest.strip_suffix("@@").unwrap_or(rest).trim().parse().ok()?;
    Some((&line[..start], status))
}

/// The busybox shell `/init`: mounts, environment, the script with its output on the
/// virtio console (hvc0) and the exit marker, then an immediate power-off.
pub fn init_script(p: &InitParams) -> String {
    let mut s = String::from("#!/bin/busybox sh\n");
    s.push_str(
        "# Generated by cargo xtask. proc must be mounted before `busybox --install`, which\n\
         # resolves /proc/self/exe; sysfs and proc before any sched_ext scheduler starts.\n\
         /bin/busybox mkdir -p /proc /sys /dev\n\
         /bin/busybox mount -t proc proc /proc\n\
         /bin/busybox mount -t sysfs sysfs /sys\n\
         /bin/busybox mount -t devtmpfs devtmpfs /dev\n\
         /bin/busybox --install -s\n\
         exec </dev/null >/dev/console 2>&1\n\
         mkdir -p /dev/pts /dev/shm /tmp /run /root\n\
         mount -t devpts devpts /dev/pts\n\
         mount -t tmpfs tmpfs /dev/shm\n\
         # The rootfs is already writable; a tmpfs would hide files staged under /tmp or /run\n\
         # (a workspace in /tmp puts our binaries there), so mount one only on empty dirs.\n\
         for d in /tmp /run; do [ -n \"$(ls -A $d)\" ] || mount -t tmpfs tmpfs $d; done\n\
         mount -t bpf bpf /sys/fs/bpf\n\
         mount -t tracefs tracefs /sys/kernel/tracing\n\
         mount -t debugfs debugfs /sys/kernel/debug\n\
         mount -t cgroup2 cgroup2 /sys/fs/cgroup\n\
         /bin/busybox ip link set lo up\n\
         hostname mq-vm\n\
         ulimit -l unlimited\n",
    );
    let mut path: Vec<String> = p.path_prefix.iter().map(|d| d.display().to_string()).collect();
    path.push("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    let _ = writeln!(s, "export PATH={}", sys::quote(&path.join(":")));
    s.push_str("export HOME=/root TERM=dumb MQ_IN_VM=1\n");
    for (key, value) in p.env {
        let _ = writeln!(s, "export {key}={}", sys::quote(value));
    }
    let marker = exit_marker(p.nonce, "$status");
    let _ = write!(
        s,
        "out=/dev/hvc0\n\
         if [ ! -c $out ]; then echo 'mq-init: no /dev/hvc0, output goes to the console'; out=/dev/console; fi\n\
         echo \"mq-init: $(uname -r), $(nproc) CPUs, running {script}\"\n\
         cd /tmp\n\
         /bin/busybox sh {script} </dev/null >$out 2>&1\n\
         status=$?\n\
         echo \"{marker}\" >$out\n\
         echo \"{marker}\"\n\
         sync\n\
         poweroff -f\n",
        script = p.script_path,
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_with_loader_and_vdso() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f95)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f95)\n";
        let libs = parse_ldd(out).unwrap();
        assert_eq!(
            libs,
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libm.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
    }

    #[test]
    fn ldd_missing_library_is_an_error() {
        let out = "\tlibJudy.so.1 => not found\n";
        let err = parse_ldd(out).unwrap_err().to_string();
        assert!(err.contains("libJudy.so.1"), "{err}");
    }

    #[test]
    fn exit_marker_round_trip() {
        let line = exit_marker("n0nce", "3");
        assert_eq!(find_exit_marker(&line, "n0nce"), Some(("", 3)));
        // Output that did not end in a newline shares the marker's line.
        let joined = format!("partial{}", exit_marker("n0nce", "0"));
        assert_eq!(find_exit_marker(&joined, "n0nce"), Some(("partial", 0)));
        // A marker with another nonce (e.g. printed by a nested run) is just output.
        assert_eq!(find_exit_marker(&exit_marker("other", "1"), "n0nce"), None);
        assert_eq!(find_exit_marker("@@MQ_VM_EXIT n0nce x@@", "n0nce"), None);
    }

    #[test]
    fn init_script_quotes_env_and_runs_script() {
        let env = vec![("MQ_X".to_string(), "a b'c".to_string())];
        let prefix = [PathBuf::from("/work/main/target/release")];
        let init = init_script(&InitParams {
            path_prefix: &prefix,
            env: &env,
            script_path: "/mq/script.sh",
            nonce: "abc",
        });
        assert!(init.contains("export MQ_X='a b'\\''c'\n"));
        assert!(init.contains("export PATH=/work/main/target/release:/usr/local/sbin:"));
        assert!(init.contains("/bin/busybox sh /mq/script.sh"));
        assert!(init.contains("@@MQ_VM_EXIT abc $status@@"));
        // proc before --install, and sysfs before anything else runs.
        let proc_at = init.find("mount -t proc").unwrap();
        assert!(proc_at < init.find("/bin/busybox --install -s").unwrap());
        assert!(init.find("mount -t sysfs").unwrap() < init.find("/mq/script.sh").unwrap());
    }

    #[test]
    fn pack_stages_and_lists_parents_first() {
        let dir = std::env::temp_dir().join(format!("xtask-initramfs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::fs::write(dir.join("a/b/f"), "x").unwrap();
        let mut list = Vec::new();
        collect_paths(&dir, Path::new("."), &mut list).unwrap();
        assert_eq!(list, ["./a", "./a/b", "./a/b/f"].map(PathBuf::from).to_vec());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
