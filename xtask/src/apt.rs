//! Reading this machine's apt configuration (deb822 `.sources` and one-line `.list` files)
//! and running apt against a private, throw-away configuration.
//!
//! Both `deps` (adding `<codename>-backports` for a newer qemu) and `kernel` (fetching a
//! sched_ext kernel from trixie-backports/sid) need the Debian mirror this machine already
//! uses, so we read it instead of hard-coding a host. The private configuration lets `kernel`
//! download packages from other suites without changing what the machine would install.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The keyring Debian's own archive is signed with (package `debian-archive-keyring`).
pub const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// One `deb`/`deb-src` source: a deb822 stanza or a one-line entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceEntry {
    pub types: Vec<String>,
    pub uris: Vec<String>,
    pub suites: Vec<String>,
    pub components: Vec<String>,
}

/// Parses a deb822 `.sources` file. Stanzas with `Enabled: no` are dropped.
pub fn parse_deb822(text: &str) -> Vec<SourceEntry> {
    let mut entries = Vec::new();
    // Comment lines are removed first: they must not end a stanza or a folded field.
    let cleaned: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    for stanza in cleaned.split(|l| l.trim().is_empty()) {
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in stanza {
            if line.starts_with([' ', '\t']) {
                // A continuation line belongs to the previous field.
                if let Some((_, value)) = fields.last_mut() {
                    value.push(' ');
                    value.push_str(line.trim());
                }
            } else if let Some((key, value)) = line.split_once(':') {
                fields.push((key.trim().to_ascii_lowercase(), value.trim().to_string()));
            }
        }
        let get = |name: &str| -> Vec<String> {
            fields
                .iter()
                .filter(|(k, _)| k == name)
                .flat_map(|(_, v)| v.split_whitespace().map(str::to_string))
                .collect()
        };
        let enabled = get("enabled");
        if enabled.first().is_some_and(|v| v.eq_ignore_ascii_case("no")) {
            continue;
        }
        let entry = SourceEntry {
            types: get("types"),
            uris: get("uris"),
            suites: get("suites"),
            components: get("components"),
        };
        if !entry.types.is_empty() && !entry.uris.is_empty() {
            entries.push(entry);
        }
    }
    entries
}

/// Parses a one-line-style `sources.list`: `deb [options] uri suite [component...]`.
pub fn parse_one_line(text: &str) -> Vec<SourceEntry> {
    let mut entries = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some((kind, rest)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        if kind != "deb" && kind != "deb-src" {
            continue;
        }
        let mut rest = rest.trim_start();
        if rest.starts_with('[') {
            match rest.find(']') {
                Some(end) => rest = rest[end + 1..].trim_start(),
                None => continue,
            }
        }
        let words: Vec<String> = rest.split_whitespace().map(str::to_string).collect();
        if words.len() < 2 {
            continue;
        }
        entries.push(SourceEntry {
            types: vec![kind.to_string()],
            uris: vec![words[0].clone()],
            suites: vec![words[1].clone()],
            components: words[2..].to_vec(),
        });
    }
    entries
}

/// Every source configured on this machine (`/etc/apt/sources.list` and
/// `/etc/apt/sources.list.d/*.{list,sources}`; other file names are ignored by apt too).
pub fn system_sources() -> Result<Vec<SourceEntry>> {
    let mut entries = Vec::new();
    let main = Path::new("/etc/apt/sources.list");
    if main.exists() {
        let text = std::fs::read_to_string(main).with_context(|| format!("{}", main.display()))?;
        entries.extend(parse_one_line(&text));
    }
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if ext != "list" && ext != "sources" {
                continue;
            }
            let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
            if ext == "list" {
                entries.extend(parse_one_line(&text));
            } else {
                entries.extend(parse_deb822(&text));
            }
        }
    }
    Ok(entries)
}

/// The Debian archive URI this machine installs `codename` from, e.g.
/// `http://deb.debian.org/debian`. Security and snapshot archives are skipped: neither
/// carries backports or sid.
pub fn debian_mirror(entries: &[SourceEntry], codename: &str) -> Option<String> {
    entries
        .iter()
        .filter(|e| e.types.iter().any(|t| t == "deb"))
        .filter(|e| e.suites.iter().any(|s| s == codename))
        .flat_map(|e| e.uris.iter())
        .find(|uri| {
            (uri.starts_with("http://") || uri.starts_with("https://"))
                && !uri.contains("security")
                && !uri.contains("snapshot.debian.org")
        })
        .map(|uri| uri.trim_end_matches('/').to_string())
}

/// Whether any configured `deb` source carries `suite`.
pub fn has_suite(entries: &[SourceEntry], suite: &str) -> bool {
    entries
        .iter()
        .any(|e| e.types.iter().any(|t| t == "deb") && e.suites.iter().any(|s| s == suite))
}

/// `VERSION_CODENAME` from /etc/os-release (`bookworm`).
pub fn codename() -> Result<String> {
    let text = std::fs::read_to_string("/etc/os-release").context("/etc/os-release")?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
        .context("no VERSION_CODENAME in /etc/os-release")
}

/// The mirror to use: `MQ_DEBIAN_MIRROR` if set, else the one this machine uses.
pub fn mirror_for_this_machine() -> Result<String> {
    if let Ok(mirror) = std::env::var("MQ_DEBIAN_MIRROR") {
        return Ok(mirror.trim_end_matches('/').to_string());
    }
    let codename = codename()?;
    let entries = system_sources()?;
    match debian_mirror(&entries, &codename) {
        Some(mirror) => Ok(mirror),
        None => bail!(
            "no Debian mirror for `{codename}` found in /etc/apt/sources.list{{,.d/*}}; \
             set MQ_DEBIAN_MIRROR (e.g. http://deb.debian.org/debian)"
        ),
    }
}

/// The candidate version apt would install, from `apt-cache policy <pkg>` output.
pub fn parse_policy_candidate(policy: &str) -> Option<String> {
    policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(|v| v.trim().to_string())
        .filter(|v| v != "(none)" && !v.is_empty())
}

/// apt-get/apt-cache confined to a private directory: its own source list, package lists
/// and download cache; the machine's sources, preferences and lists are never touched.
pub struct PrivateApt {
    pub root: PathBuf,
}

impl PrivateApt {
    /// Prepares `root` with a source list holding `lines`.
    pub fn new(root: &Path, source_lines: &[String]) -> Result<Self> {
        for dir in ["lists/partial", "cache/archives/partial"] {
            let dir = root.join(dir);
            std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
        }
        let list = root.join("sources.list");
        std::fs::write(&list, source_lines.join("\n") + "\n")
            .with_context(|| format!("{}", list.display()))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    fn options(&self) -> Vec<String> {
        let mut opts = vec![
            format!(
                "Dir::Etc::SourceList={}",
                self.root.join("sources.list").display()
            ),
            "Dir::Etc::SourceParts=/dev/null".to_string(),
            format!("Dir::State::Lists={}", self.root.join("lists").display()),
            format!("Dir::Cache={}", self.root.join("cache").display()),
            "Dir::Etc::Preferences=/dev/null".to_string(),
            "Dir::Etc::PreferencesParts=/dev/null".to_string(),
            "APT::Architectures=amd64".to_string(),
        ];
        if crate::sys::is_root() {
            // As root apt downloads as user _apt, which cannot write into root's private
            // cache; it then warns and downloads as root anyway. Say so up front.
            opts.push("APT::Sandbox::User=root".to_string());
        }
        opts.into_iter().flat_map(|o| ["-o".to_string(), o]).collect()
    }

    /// `apt-get <private options> <args>`.
    pub fn apt_get(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("apt-get");
        cmd.args(self.options()).args(args);
        cmd
    }

    /// `apt-cache <private options> <args>`.
    pub fn apt_cache(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("apt-cache");
        cmd.args(self.options()).args(args);
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN_SOURCES: &str = "\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";

    #[test]
    fn deb822_stanzas_and_comments() {
        let entries = parse_deb822(DEBIAN_SOURCES);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].uris, ["http://deb.debian.org/debian"]);
        assert_eq!(entries[0].suites, ["bookworm", "bookworm-updates"]);
        assert_eq!(entries[1].suites, ["bookworm-security"]);
        assert_eq!(
            debian_mirror(&entries, "bookworm").as_deref(),
            Some("http://deb.debian.org/debian")
        );
        assert!(!has_suite(&entries, "bookworm-backports"));
        assert!(has_suite(&entries, "bookworm-updates"));
    }

    #[test]
    fn deb822_disabled_and_folded() {
        let text = "Types: deb\nURIs: http://a.example/debian\nSuites: bookworm\nEnabled: no\n\n\
                    Types: deb deb-src\nURIs:\n http://b.example/debian/\nSuites: bookworm\n";
        let entries = parse_deb822(text);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].types, ["deb", "deb-src"]);
        assert_eq!(
            debian_mirror(&entries, "bookworm").as_deref(),
            Some("http://b.example/debian")
        );
    }

    #[test]
    fn one_line_format_with_options() {
        let text = "# comment\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://ftp.de.debian.org/debian/ bookworm main contrib\n\
                    deb http://security.debian.org/debian-security bookworm-security main\n\
                    deb-src http://ftp.de.debian.org/debian bookworm main\n\
                    deb http://snapshot.debian.org/archive/debian/2025 bookworm main\n";
        let entries = parse_one_line(text);
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[0].components, ["main", "contrib"]);
        assert_eq!(
            debian_mirror(&entries, "bookworm").as_deref(),
            Some("http://ftp.de.debian.org/debian")
        );
        // Only the snapshot archive carries the suite: it is not a usable mirror.
        assert_eq!(debian_mirror(&entries[3..], "bookworm"), None);
    }

    #[test]
    fn policy_candidate() {
        let policy =
            "qemu-system-x86:\n  Installed: (none)\n  Candidate: 1:7.2+dfsg-7+deb12u13\n  Version table:\n";
        assert_eq!(
            parse_policy_candidate(policy).as_deref(),
            Some("1:7.2+dfsg-7+deb12u13")
        );
        assert_eq!(parse_policy_candidate("x:\n  Candidate: (none)\n"), None);
    }
}
