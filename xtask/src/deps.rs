//! `cargo xtask deps`: the Debian packages every other subcommand needs (BPF toolchain,
//! qemu, and the tools copied into the VM), installed with apt when we are root.
//!
//! `ensure()` runs before every other subcommand, so its common path (everything present)
//! is one `dpkg-query` plus a couple of `--version` probes. It also checks the clang that
//! builds the BPF code (`BPF_CLANG`, read by scx_cargo and scx_utils' build scripts; by
//! default the `bpf/clang` shim, which `.cargo/config.toml` names), because Debian
//! bookworm's default `clang` (14) is too old for `-mcpu=v4`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{apt, sys, version};

/// clang older than this rejects the BPF flags scx uses ("does not support -mcpu=v4").
const MIN_CLANG_MAJOR: u64 = 18;
/// The clang package we install when no usable clang is present (in bookworm main).
const CLANG_PACKAGE: &str = "clang-19";
/// Below this, multi-threaded TCG occasionally oopses while the guest patches its own text
/// (qemu 7.2: `Oops: int3` in about 1 run in 14 at -smp 2; none seen with 10.0), so we
/// prefer backports' qemu and vm.rs falls back to single-threaded TCG with an older one.
pub const QEMU_GOOD_MAJOR: u64 = 10;
const QEMU_PACKAGE: &str = "qemu-system-x86";

/// Packages and why we need them (shown by `cargo xtask deps`).
const PACKAGES: &[(&str, &str)] = &[
    (CLANG_PACKAGE, "compiles the BPF scheduler (clang >= 18)"),
    ("gcc", "C compiler and linker for libbpf-sys"),
    ("libelf-dev", "libbpf"),
    ("zlib1g-dev", "libbpf"),
    ("pkg-config", "libbpf-sys build"),
    ("make", "libbpf-sys build"),
    ("libseccomp-dev", "scx_rustland_core"),
    (QEMU_PACKAGE, "boots the sched_ext kernel"),
    ("busybox-static", "the VM's shell and init"),
    ("cpio", "packs the VM's initramfs"),
    (
        "binutils",
        "strips our binaries' debug information in the VM's initramfs",
    ),
    ("stress-ng", "CPU interference in experiments"),
    ("chromium", "checks the experiments report (headless)"),
    ("rt-tests", "cyclictest"),
    ("util-linux", "taskset, chrt"),
    ("sockperf", "network latency experiments"),
    ("iproute2", "ip"),
    ("debian-archive-keyring", "verifies downloaded kernel packages"),
];

/// What the rest of xtask needs to know about the installed tools.
#[derive(Debug, Clone)]
pub struct Deps {
    /// The clang that builds BPF programs; exported as `BPF_CLANG` to cargo.
    pub bpf_clang: PathBuf,
    /// `qemu-system-x86_64 --version`, `(major, minor, patch)`.
    pub qemu_version: version::Triple,
}

impl Deps {
    /// Sets the environment every cargo child process needs.
    pub fn apply(&self, cmd: &mut Command) {
        cmd.env("BPF_CLANG", &self.bpf_clang);
    }
}

/// Checks (and as root installs) dependencies quietly; used before every other subcommand.
pub fn ensure() -> Result<Deps> {
    check(false)
}

/// `cargo xtask deps`: like `ensure`, but reports every package and also upgrades an old
/// qemu from backports.
pub fn run() -> Result<()> {
    let deps = check(true)?;
    println!(
        "deps: all present; BPF_CLANG={} ; qemu {}.{}.{}",
        deps.bpf_clang.display(),
        deps.qemu_version.0,
        deps.qemu_version.1,
        deps.qemu_version.2
    );
    Ok(())
}

fn check(explicit: bool) -> Result<Deps> {
    let names: Vec<&str> = PACKAGES.iter().map(|(name, _)| *name).collect();
    let installed = installed_versions(&names)?;
    let clang = find_clang()?;
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|name| !installed.contains_key(*name))
        // Any clang >= 18 will do; only install ours when there is none.
        .filter(|name| *name != CLANG_PACKAGE || clang.is_none())
        .collect();
    let qemu_major = installed
        .get(QEMU_PACKAGE)
        .and_then(|v| version::debian_upstream_major(v));
    let qemu_old = qemu_major.is_some_and(|m| m < QEMU_GOOD_MAJOR);

    if explicit {
        for (name, why) in PACKAGES {
            let state = installed.get(*name).map_or("MISSING", String::as_str);
            println!("  {name:<24} {state:<36} {why}");
        }
        if let Some((path, v)) = &clang {
            println!("  BPF clang: {} ({}.{}.{})", path.display(), v.0, v.1, v.2);
        }
    }

    let upgrade_qemu = explicit && qemu_old;
    if !missing.is_empty() || upgrade_qemu {
        if !sys::is_root() {
            let qemu_hint = if missing.contains(&QEMU_PACKAGE) || upgrade_qemu {
                format!(
                    "\n(qemu >= {QEMU_GOOD_MAJOR} is preferred: on bookworm, add bookworm-backports \
                     and install it with `apt-get install -t bookworm-backports {QEMU_PACKAGE}`)"
                )
            } else {
                String::new()
            };
            bail!(
                "missing packages: {}\nrun as root:\n  apt-get update && \
                 DEBIAN_FRONTEND=noninteractive apt-get install -y {}{qemu_hint}",
                missing.join(" "),
                missing.join(" ")
            );
        }
        install(&missing, upgrade_qemu)?;
    } else if qemu_old && !explicit {
        eprintln!(
            "note: qemu {} < {QEMU_GOOD_MAJOR}: VMs use single-threaded TCG (slower); \
             `cargo xtask deps` as root installs a newer qemu from backports",
            installed[QEMU_PACKAGE]
        );
    }

    // Verify the result instead of trusting apt's exit status.
    let installed = installed_versions(&names)?;
    let still_missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !installed.contains_key(*n) && *n != CLANG_PACKAGE)
        .collect();
    if !still_missing.is_empty() {
        bail!("still missing after install: {}", still_missing.join(" "));
    }
    let (bpf_clang, _) =
        find_clang()?.with_context(|| format!("no clang >= {MIN_CLANG_MAJOR} found after installing"))?;
    let qemu_text = sys::probe("qemu-system-x86_64".as_ref(), ["--version"])
        .context("qemu-system-x86_64 cannot be run")?;
    let qemu_version = version::parse_qemu_version(&qemu_text)
        .with_context(|| format!("cannot parse qemu version from {qemu_text:?}"))?;
    Ok(Deps {
        bpf_clang,
        qemu_version,
    })
}

/// `apt-get update` once, then installs `missing`; qemu may come from backports.
fn install(missing: &[&str], upgrade_qemu: bool) -> Result<()> {
    println!("deps: apt-get update");
    sys::run(Command::new("apt-get").args(["update", "-q"]))?;
    let mut rest: Vec<&str> = missing.to_vec();
    if rest.contains(&QEMU_PACKAGE) || upgrade_qemu {
        match install_qemu_from_backports() {
            Ok(true) => rest.retain(|p| *p != QEMU_PACKAGE),
            Ok(false) => {}
            Err(err) => eprintln!(
                "deps: warning: qemu from backports failed ({err:#}); using the distribution's \
                 qemu, and VMs will use single-threaded TCG if it is older than {QEMU_GOOD_MAJOR}"
            ),
        }
    }
    if rest.is_empty() {
        return Ok(());
    }
    println!("deps: installing {}", rest.join(" "));
    sys::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&rest),
    )
}

/// Installs qemu from `<codename>-backports` when the default suites only offer an old one.
/// Returns whether it did (false: the default candidate is already new enough).
fn install_qemu_from_backports() -> Result<bool> {
    let policy = sys::output(Command::new("apt-cache").args(["policy", QEMU_PACKAGE]))?;
    let candidate = apt::parse_policy_candidate(&policy).unwrap_or_default();
    if version::debian_upstream_major(&candidate).is_some_and(|m| m >= QEMU_GOOD_MAJOR) {
        return Ok(false);
    }
    let codename = apt::codename()?;
    let suite = format!("{codename}-backports");
    if !apt::has_suite(&apt::system_sources()?, &suite) {
        let mirror = apt::mirror_for_this_machine()?;
        let path = PathBuf::from(format!("/etc/apt/sources.list.d/{suite}.sources"));
        let text = format!(
            "Types: deb\nURIs: {mirror}\nSuites: {suite}\nComponents: main\nSigned-By: {}\n",
            apt::DEBIAN_KEYRING
        );
        println!("deps: adding {} ({mirror} {suite})", path.display());
        std::fs::write(&path, text).with_context(|| format!("{}", path.display()))?;
        sys::run(Command::new("apt-get").args(["update", "-q"]))?;
    }
    println!("deps: installing {QEMU_PACKAGE} from {suite}");
    sys::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends", "-t"])
            .args([suite.as_str(), QEMU_PACKAGE]),
    )?;
    Ok(true)
}

/// Installed packages among `names`, with their versions.
fn installed_versions(names: &[&str]) -> Result<HashMap<String, String>> {
    // dpkg-query exits 1 when some package is unknown, but still lists the others.
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Package}\t${Status}\t${Version}\n"])
        .args(names)
        .output()
        .context("cannot run dpkg-query (is this Debian?)")?;
    Ok(parse_dpkg_query(&String::from_utf8_lossy(&out.stdout)))
}

/// Parses `${Package}\t${Status}\t${Version}` lines, keeping only installed packages.
fn parse_dpkg_query(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split('\t');
            let (name, status, ver) = (parts.next()?, parts.next()?, parts.next()?);
            (status == "install ok installed").then(|| (name.to_string(), ver.to_string()))
        })
        .collect()
}

/// The clang that builds BPF: `$BPF_CLANG` if set (and new enough), else the workspace's
/// `bpf/clang` shim (what a plain `cargo build` uses, through `.cargo/config.toml`) if it
/// finds a clang >= 18. `None`: there is none, and [`CLANG_PACKAGE`] must be installed.
fn find_clang() -> Result<Option<(PathBuf, version::Triple)>> {
    let version_of = |path: &PathBuf| {
        sys::probe(path.as_os_str(), ["--version"]).and_then(|text| version::parse_clang_version(&text))
    };
    let shim = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../bpf/clang"));
    let shim = shim.canonicalize().unwrap_or(shim);
    // `.cargo/config.toml` sets BPF_CLANG to the shim for every process cargo runs, this one
    // included; that is the default, not a user's choice, and on a fresh machine the shim
    // finds no clang yet, which must lead to installing one rather than to an error.
    let explicit = std::env::var_os("BPF_CLANG")
        .filter(|path| PathBuf::from(path).canonicalize().ok().as_ref() != Some(&shim));
    if let Some(explicit) = explicit {
        let path = PathBuf::from(&explicit);
        let path = if path.components().count() == 1 {
            sys::which(&path.to_string_lossy()).unwrap_or(path)
        } else {
            path
        };
        return match version_of(&path) {
            Some(v) if v.0 >= MIN_CLANG_MAJOR => Ok(Some((path, v))),
            Some(v) => bail!(
                "BPF_CLANG={} is clang {}.{}.{}; need >= {MIN_CLANG_MAJOR}",
                path.display(),
                v.0,
                v.1,
                v.2
            ),
            None => bail!("BPF_CLANG={} is not a working clang", path.display()),
        };
    }
    Ok(version_of(&shim)
        .filter(|v| v.0 >= MIN_CLANG_MAJOR)
        .map(|v| (shim, v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_query_keeps_only_installed() {
        let text = "busybox-static\tinstall ok installed\t1:1.35.0-4+deb12u1+b1\n\
                    clang-19\tdeinstall ok config-files\t1:19.1.7-3~deb12u1\n\
                    qemu-system-x86\tinstall ok installed\t1:10.0.2+ds-2+deb13u1~bpo12+1\n\
                    garbage line\n";
        let got = parse_dpkg_query(text);
        assert_eq!(got.len(), 2);
        assert_eq!(got["busybox-static"], "1:1.35.0-4+deb12u1+b1");
        assert!(!got.contains_key("clang-19"));
        assert_eq!(version::debian_upstream_major(&got["qemu-system-x86"]), Some(10));
    }

    #[test]
    fn package_list_has_no_duplicates() {
        let mut names: Vec<&str> = PACKAGES.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before);
    }
}
