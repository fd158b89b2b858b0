//! Version strings of the tools we depend on (clang, qemu, Debian packages, kernels) and how
//! to compare them. Kept apart because every other module makes decisions on versions, and
//! getting "10 < 9" wrong by comparing strings would silently pick the wrong qemu or kernel.

use std::cmp::Ordering;

/// `(major, minor, patch)`.
pub type Triple = (u64, u64, u64);

/// The numbers in a version string, in order: `7.3.4+deb13` -> `[7, 3, 4, 13]`.
///
/// Comparing these vectors lexicographically is what "newest" means for the kernel
/// package versions Debian publishes (`<upstream>+deb<NN>`).
pub fn numeric_key(version: &str) -> Vec<u64> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .filter_map(|part| part.parse().ok())
        .collect()
}

/// Compares two version strings by their numeric parts.
pub fn compare(a: &str, b: &str) -> Ordering {
    numeric_key(a).cmp(&numeric_key(b))
}

/// The upstream major version of a Debian package version: `1:10.0.2+ds-2~bpo12+1` -> 10.
pub fn debian_upstream_major(version: &str) -> Option<u64> {
    // The epoch (`1:`) is Debian bookkeeping, not part of the upstream version.
    let without_epoch = version.split_once(':').map_or(version, |(_, rest)| rest);
    numeric_key(without_epoch).first().copied()
}

/// `(major, minor, patch)` from the first line of `clang --version`, e.g.
/// `Debian clang version 19.1.7 (3~deb12u1)`.
pub fn parse_clang_version(output: &str) -> Option<Triple> {
    parse_after_marker(output, "clang version ")
}

/// `(major, minor, patch)` from `qemu-system-x86_64 --version`, e.g.
/// `QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)`.
pub fn parse_qemu_version(output: &str) -> Option<Triple> {
    parse_after_marker(output, "QEMU emulator version ")
}

fn parse_after_marker(output: &str, marker: &str) -> Option<Triple> {
    let line = output.lines().find(|l| l.contains(marker))?;
    let rest = &line[line.find(marker)? + marker.len()..];
    let word = rest.split_whitespace().next()?;
    let key = numeric_key(word);
    Some((
        *key.first()?,
        key.get(1).copied().unwrap_or(0),
        key.get(2).copied().unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_comparison_is_not_lexicographic() {
        assert_eq!(compare("7.10.1+deb13", "7.9.9+deb13"), Ordering::Greater);
        assert_eq!(compare("7.2.13+deb14", "7.3.4+deb13"), Ordering::Less);
        assert_eq!(compare("7.3.4+deb13", "7.3.4+deb13"), Ordering::Equal);
        assert_eq!(numeric_key("7.3.4+deb13"), vec![7, 3, 4, 13]);
    }

    #[test]
    fn debian_major_strips_epoch() {
        assert_eq!(debian_upstream_major("1:10.0.2+ds-2+deb13u1~bpo12+1"), Some(10));
        assert_eq!(debian_upstream_major("1:7.2+dfsg-7+deb12u13"), Some(7));
        assert_eq!(debian_upstream_major("2.38.1-5+deb12u3"), Some(2));
        assert_eq!(debian_upstream_major(""), None);
    }

    #[test]
    fn clang_versions() {
        let debian = "Debian clang version 19.1.7 (3~deb12u1)\nTarget: x86_64-pc-linux-gnu\n";
        assert_eq!(parse_clang_version(debian), Some((19, 1, 7)));
        let old = "Debian clang version 14.0.6\nTarget: x86_64-pc-linux-gnu";
        assert_eq!(parse_clang_version(old), Some((14, 0, 6)));
        assert_eq!(parse_clang_version("gcc (Debian 12.2.0-14) 12.2.0"), None);
    }

    #[test]
    fn qemu_versions() {
        let v = "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\n\
                 Copyright (c) 2003-2025 Fabrice Bellard and the QEMU Project developers";
        assert_eq!(parse_qemu_version(v), Some((10, 0, 2)));
        let old = "QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u13)";
        assert_eq!(parse_qemu_version(old), Some((7, 2, 15)));
    }
}
