//! `cargo xtask kernel`: provides a kernel image with sched_ext for the VM.
//!
//! Debian's stable kernels lack `CONFIG_SCHED_CLASS_EXT`, but trixie-backports and sid ship
//! 7.x "cloud" kernels that have it. We fetch those with a private apt configuration (the
//! machine's apt setup is left alone), unpack them into a per-user cache and verify their
//! config. Backports keep only their newest version, so the choice is made from what apt
//! offers, preferring versions known to load our scheduler.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{apt, sys, version};

/// Versions seen to load and run scx 1.1.4 schedulers, preferred in this order.
const KNOWN_GOOD: &[&str] = &["7.3.4+deb13", "7.2.13+deb14"];
/// Versions whose BTF carries old scx kfunc prototypes (`func_proto ... incompatible`).
const KNOWN_BAD: &[&str] = &["7.2.12+deb13"];
/// sched_ext is upstream since 6.12, but Debian only enables it in 7.x.
const MIN_MAJOR: u64 = 7;
/// The flavour with virtio-pci, the virtio console and the 8250 serial built in.
const FLAVOUR: &str = "cloud-amd64";
/// Marks a cache entry as completely unpacked and verified.
const VERIFIED_MARKER: &str = ".verified";

/// A kernel the VM can boot.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The release (`uname -r`), e.g. `7.3.4+deb13-cloud-amd64`.
    pub version: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` with the kernel's modules, when we have them.
    pub modules_dir: Option<PathBuf>,
}

impl Kernel {
    /// The running host kernel, for `--native` runs (no image is booted).
    pub fn host() -> Kernel {
        let version = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        Kernel {
            vmlinuz: PathBuf::from(format!("/boot/vmlinuz-{version}")),
            modules_dir: Some(PathBuf::from(format!("/lib/modules/{version}"))),
            version,
        }
    }
}

/// `cargo xtask kernel`: ensure a kernel and say where it is.
pub fn run(explicit: Option<PathBuf>) -> Result<()> {
    let kernel = ensure(explicit)?;
    println!("kernel:  {}", kernel.version);
    println!("vmlinuz: {}", kernel.vmlinuz.display());
    if let Some(modules) = &kernel.modules_dir {
        println!("modules: {}", modules.display());
    }
    Ok(())
}

/// The kernel to boot: `explicit` (from `--kernel`), else `$MQ_KERNEL`, else the best cached
/// one, else one downloaded now.
pub fn ensure(explicit: Option<PathBuf>) -> Result<Kernel> {
    let explicit = explicit.or_else(|| std::env::var_os("MQ_KERNEL").map(PathBuf::from));
    if let Some(path) = explicit {
        return from_path(&path);
    }
    let kernels = cache_root()?.join("kernels");
    if let Some(kernel) = best_cached(&kernels)? {
        return Ok(kernel);
    }
    download(&cache_root()?)
}

/// `$MQ_CACHE_DIR`, else `$XDG_CACHE_HOME/scx-microquanta`, else `~/.cache/scx-microquanta`.
pub fn cache_root() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("MQ_CACHE_DIR") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("scx-microquanta"));
    }
    let home = std::env::var_os("HOME").context("neither MQ_CACHE_DIR nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache/scx-microquanta"))
}

/// A kernel given by the user: a bzImage file, or a directory holding `vmlinuz` (such as
/// `lib/modules/<release>` or one of our cache entries).
fn from_path(path: &Path) -> Result<Kernel> {
    let vmlinuz = if path.is_dir() {
        find_file(path, &|p| file_name_starts(p, "vmlinuz"))
            .with_context(|| format!("no vmlinuz under {}", path.display()))?
    } else {
        path.to_path_buf()
    };
    let bytes = std::fs::read(&vmlinuz).with_context(|| format!("{}", vmlinuz.display()))?;
    let version =
        bzimage_release(&bytes).with_context(|| format!("{} is not an x86 bzImage", vmlinuz.display()))?;
    let dir = vmlinuz.parent().unwrap_or(Path::new("/"));
    let configs = [
        dir.join("config"),
        dir.join(format!("config-{version}")),
        PathBuf::from(format!("/boot/config-{version}")),
    ];
    match configs.iter().find(|c| c.is_file()) {
        Some(config) => check_config_file(config)?,
        None => eprintln!(
            "kernel: warning: no config next to {}; cannot check CONFIG_SCHED_CLASS_EXT",
            vmlinuz.display()
        ),
    }
    let modules_dir = [
        dir.to_path_buf(),
        PathBuf::from(format!("/lib/modules/{version}")),
    ]
    .into_iter()
    .find(|d| d.join("modules.dep").is_file() || d.join("kernel").is_dir());
    Ok(Kernel {
        version,
        vmlinuz,
        modules_dir,
    })
}

/// The best verified kernel in the cache, if any.
fn best_cached(kernels: &Path) -> Result<Option<Kernel>> {
    let Ok(dir) = std::fs::read_dir(kernels) else {
        return Ok(None);
    };
    let mut versions = Vec::new();
    for entry in dir {
        let entry = entry.with_context(|| format!("{}", kernels.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(ver) = name.strip_suffix(&format!("-{FLAVOUR}")) {
            if entry.path().join(VERIFIED_MARKER).is_file() {
                versions.push(ver.to_string());
            }
        }
    }
    match choose_candidates(&versions).first() {
        Some(ver) => Ok(Some(locate(&kernels.join(format!("{ver}-{FLAVOUR}")), ver)?)),
        None => Ok(None),
    }
}

/// Candidate versions in order of preference: known-good ones (in `KNOWN_GOOD` order), then
/// any other >= 7.0, newest first. Known-bad versions never appear.
pub fn choose_candidates(available: &[String]) -> Vec<String> {
    let mut chosen: Vec<String> = KNOWN_GOOD
        .iter()
        .filter(|good| available.iter().any(|a| a == *good))
        .map(|good| good.to_string())
        .collect();
    let mut others: Vec<String> = available
        .iter()
        .filter(|v| !KNOWN_BAD.contains(&v.as_str()) && !chosen.contains(v))
        .filter(|v| version::numeric_key(v).first().is_some_and(|m| *m >= MIN_MAJOR))
        .cloned()
        .collect();
    others.sort_by(|a, b| version::compare(b, a));
    others.dedup();
    chosen.extend(others);
    chosen
}

/// Versions of `linux-binary-<ver>-cloud-amd64` packages in `apt-cache search` output.
pub fn parse_search(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|name| name.strip_prefix("linux-binary-"))
        .filter_map(|rest| rest.strip_suffix(&format!("-{FLAVOUR}")))
        .map(str::to_string)
        .collect()
}

/// Downloads, unpacks and verifies the best available kernel into `root/kernels`.
fn download(root: &Path) -> Result<Kernel> {
    let mirror = apt::mirror_for_this_machine()?;
    let sources: Vec<String> = ["trixie-backports", "sid"]
        .iter()
        .map(|suite| format!("deb [signed-by={}] {mirror} {suite} main", apt::DEBIAN_KEYRING))
        .collect();
    let apt = apt::PrivateApt::new(&root.join("apt"), &sources)?;
    println!("kernel: no cached sched_ext kernel; asking {mirror} (trixie-backports, sid)");
    sys::run(&mut apt.apt_get(&["update", "-qq"]))?;
    let search = sys::output(&mut apt.apt_cache(&["search", "^linux-binary-[0-9]"]))?;
    let available = parse_search(&search);
    let candidates = choose_candidates(&available);
    if candidates.is_empty() {
        bail!("no linux-binary-*-{FLAVOUR} >= {MIN_MAJOR}.0 offered (saw: {available:?})");
    }
    let mut errors = Vec::new();
    for ver in &candidates {
        match download_version(root, &apt, ver) {
            Ok(kernel) => return Ok(kernel),
            Err(err) => {
                eprintln!("kernel: {ver} unusable: {err:#}");
                errors.push(format!("{ver}: {err:#}"));
            }
        }
    }
    bail!("no usable kernel:\n  {}", errors.join("\n  "))
}

fn download_version(root: &Path, apt: &apt::PrivateApt, ver: &str) -> Result<Kernel> {
    let release = format!("{ver}-{FLAVOUR}");
    let debs = root.join("debs");
    std::fs::create_dir_all(&debs).with_context(|| format!("{}", debs.display()))?;
    // The image package holds only vmlinuz; the config is in linux-base.
    let required = [format!("linux-binary-{release}"), format!("linux-base-{release}")];
    let modules = format!("linux-modules-{release}");
    println!("kernel: downloading {} and {modules}", required.join(", "));
    let required_refs: Vec<&str> = required.iter().map(String::as_str).collect();
    sys::run(
        apt.apt_get(&[&["download", "-q"], required_refs.as_slice()].concat())
            .current_dir(&debs),
    )?;
    let have_modules = sys::run(apt.apt_get(&["download", "-q", &modules]).current_dir(&debs))
        .map_err(|err| eprintln!("kernel: warning: no modules package: {err:#}"))
        .is_ok();

    let kernels = root.join("kernels");
    let partial = kernels.join(format!(".{release}.partial"));
    let final_dir = kernels.join(&release);
    for dir in [&partial, &final_dir] {
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
        }
    }
    std::fs::create_dir_all(&partial).with_context(|| format!("{}", partial.display()))?;
    let mut packages = required.to_vec();
    if have_modules {
        packages.push(modules);
    }
    for package in &packages {
        let deb = find_deb(&debs, package)?;
        sys::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?;
        // The unpacked tree is what we keep; the .deb would only take space.
        std::fs::remove_file(&deb).with_context(|| format!("{}", deb.display()))?;
    }
    // Verify before the tree becomes visible as a cache entry.
    locate(&partial, ver)?;
    std::fs::rename(&partial, &final_dir).with_context(|| format!("{}", final_dir.display()))?;
    std::fs::write(final_dir.join(VERIFIED_MARKER), "")?;
    locate(&final_dir, ver)
}

/// Finds vmlinuz, config and modules in an unpacked kernel tree and checks the config.
fn locate(tree: &Path, ver: &str) -> Result<Kernel> {
    let release = format!("{ver}-{FLAVOUR}");
    let modules_dir = tree.join("usr/lib/modules").join(&release);
    let vmlinuz = [
        modules_dir.join("vmlinuz"),
        tree.join(format!("boot/vmlinuz-{release}")),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .or_else(|| find_file(tree, &|p| file_name_starts(p, "vmlinuz")))
    .with_context(|| format!("no vmlinuz in {}", tree.display()))?;
    let config = [
        modules_dir.join("config"),
        tree.join(format!("boot/config-{release}")),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .or_else(|| find_file(tree, &|p| file_name_starts(p, "config")))
    .with_context(|| format!("no kernel config in {}", tree.display()))?;
    check_config_file(&config)?;
    let has_modules = modules_dir.join("kernel").is_dir();
    Ok(Kernel {
        version: release,
        vmlinuz,
        modules_dir: has_modules.then_some(modules_dir),
    })
}

fn check_config_file(config: &Path) -> Result<()> {
    let text = std::fs::read_to_string(config).with_context(|| format!("{}", config.display()))?;
    check_config(&text).with_context(|| format!("kernel config {}", config.display()))
}

/// The kernel options a sched_ext scheduler needs.
pub fn check_config(text: &str) -> Result<()> {
    let missing: Vec<&str> = ["CONFIG_SCHED_CLASS_EXT", "CONFIG_DEBUG_INFO_BTF"]
        .into_iter()
        .filter(|opt| !text.lines().any(|l| l.trim() == format!("{opt}=y")))
        .collect();
    if !missing.is_empty() {
        bail!("not set to y: {}", missing.join(", "));
    }
    Ok(())
}

/// The release string embedded in an x86 bzImage (`7.3.4+deb13-cloud-amd64`).
///
/// The boot protocol header has the magic `HdrS` at 0x202 and, at 0x20e, the offset (minus
/// 0x200) of a NUL-terminated "<release> (<builder>) #<n> ..." string.
pub fn bzimage_release(image: &[u8]) -> Option<String> {
    if image.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let ptr = u16::from_le_bytes([*image.get(0x20e)?, *image.get(0x20f)?]) as usize + 0x200;
    let rest = image.get(ptr..)?;
    let end = rest.iter().position(|b| *b == 0)?;
    let text = std::str::from_utf8(&rest[..end]).ok()?;
    text.split_whitespace().next().map(str::to_string)
}

/// The newest `.deb` of `package` that `apt-get download` left in `dir`.
fn find_deb(dir: &Path, package: &str) -> Result<PathBuf> {
    let prefix = format!("{package}_");
    let mut debs: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .with_context(|| format!("{}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with(&prefix) && name.ends_with(".deb")
        })
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    debs.sort();
    debs.pop()
        .map(|(_, p)| p)
        .with_context(|| format!("apt-get download left no {package}_*.deb in {}", dir.display()))
}

fn file_name_starts(path: &Path, prefix: &str) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
}

/// Depth-first search for a regular file matching `pred` (the trees are small except for
/// modules, which we only walk when the usual places are empty).
fn find_file(dir: &Path, pred: &dyn Fn(&Path) -> bool) -> Option<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in &entries {
        if path.is_file() && pred(path) {
            return Some(path.clone());
        }
    }
    entries
        .iter()
        .filter(|p| p.is_dir() && !p.is_symlink() && !p.ends_with("kernel"))
        .find_map(|p| find_file(p, pred))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn known_good_first_then_newest() {
        let available = strings(&["7.2.12+deb13", "7.2.13+deb14", "7.4.1+deb14", "7.3.4+deb13"]);
        assert_eq!(
            choose_candidates(&available),
            strings(&["7.3.4+deb13", "7.2.13+deb14", "7.4.1+deb14"])
        );
    }

    #[test]
    fn known_bad_and_old_are_skipped() {
        let available = strings(&["7.2.12+deb13", "6.12.38+deb13", "7.10.2+deb14", "7.9.1+deb14"]);
        // 7.10 is newer than 7.9: numeric, not string, comparison.
        assert_eq!(
            choose_candidates(&available),
            strings(&["7.10.2+deb14", "7.9.1+deb14"])
        );
        assert!(choose_candidates(&strings(&["7.2.12+deb13"])).is_empty());
    }

    #[test]
    fn search_output_keeps_cloud_flavour_only() {
        let out = "linux-binary-7.3.4+deb13-cloud-amd64 - Linux 7.3.4+deb13 for x86-64 cloud\n\
                   linux-binary-7.3.4+deb13-amd64 - Linux 7.3.4+deb13 for 64-bit PCs\n\
                   linux-binary-7.2.13+deb14-cloud-amd64 - Linux 7.2.13+deb14 cloud\n\
                   linux-binary-7.3.4+deb13-cloud-amd64-dbg - debug symbols\n";
        assert_eq!(parse_search(out), strings(&["7.3.4+deb13", "7.2.13+deb14"]));
    }

    #[test]
    fn config_check_needs_both_options() {
        let good = "# comment\nCONFIG_SCHED_CLASS_EXT=y\nCONFIG_DEBUG_INFO_BTF=y\n";
        assert!(check_config(good).is_ok());
        let stable = "# CONFIG_SCHED_CLASS_EXT is not set\nCONFIG_DEBUG_INFO_BTF=y\n";
        let err = check_config(stable).unwrap_err().to_string();
        assert!(err.contains("CONFIG_SCHED_CLASS_EXT"), "{err}");
        assert!(!err.contains("BTF"), "{err}");
    }

    #[test]
    fn bzimage_header_release() {
        let mut image = vec![0u8; 0x1000];
        image[0x202..0x206].copy_from_slice(b"HdrS");
        let text = b"7.3.4+deb13-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP\0";
        image[0x400..0x400 + text.len()].copy_from_slice(text);
        image[0x20e..0x210].copy_from_slice(&(0x400u16 - 0x200).to_le_bytes());
        assert_eq!(
            bzimage_release(&image).as_deref(),
            Some("7.3.4+deb13-cloud-amd64")
        );
        image[0x202] = b'X';
        assert_eq!(bzimage_release(&image), None);
        assert_eq!(bzimage_release(&[0u8; 16]), None);
    }
}
