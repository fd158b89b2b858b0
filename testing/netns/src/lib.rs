//! Two network namespaces joined by a veth pair, for tests that need a real link (the UDP
//! NIC, Pony between two engines, two `snap-host` processes). Needs root and iproute2's
//! `ip` ([`skip_reason`] says when the machine cannot). Names carry the pid and a per-test
//! tag so that concurrent tests and runs do not clash; dropping the [`Topology`] deletes
//! the namespaces, which destroys the veth pair with them, also on panic.
//!
//! A thread enters a namespace with [`Topology::spawn_in`]; sockets it creates belong to
//! that namespace, and so do processes it starts (a child inherits its creator's network
//! namespace), so a test can run a whole host inside one.
//!
//! It is its own crate (a dev-dependency of `pony-engine` and `snap-host`) so that both
//! crates' integration tests share it without a test helper in a library's public API.

use std::os::fd::AsFd;
use std::process::Command;

use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};

/// Address of namespace 0's end.
pub const ADDR_A: &str = "10.77.0.1";
/// Address of namespace 1's end.
pub const ADDR_B: &str = "10.77.0.2";

/// Runs `ip ARGS`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Why this machine cannot run the test, if it cannot.
pub fn skip_reason() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root (network namespaces and veth need CAP_NET_ADMIN)".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => None,
        Ok(_) => Some("`ip -V` failed".into()),
        Err(e) => Some(format!("iproute2's `ip` is not available: {e}")),
    }
}

/// Two namespaces joined by a veth pair. Made before the first `ip` command so that Drop
/// cleans up a half-finished setup too.
pub struct Topology {
    ns: [String; 2],
    veth: [String; 2],
}

impl Topology {
    /// `tag` (one character) tells apart the tests of one run, which go in parallel.
    pub fn new(tag: char, mtu: u32) -> Self {
        Self::prefixed("snap-veth", "sv", tag, mtu)
    }

    /// Like [`Topology::new`], with the namespaces named `{ns_prefix}-{pid}{tag}-a`/`-b`
    /// and the interfaces `{if_prefix}{pid}{tag}a`/`b` (so that several suites' names never
    /// collide). `if_prefix` is at most 6 bytes: interface names have 15.
    pub fn prefixed(ns_prefix: &str, if_prefix: &str, tag: char, mtu: u32) -> Self {
        assert!(if_prefix.len() <= 6, "interface prefix {if_prefix:?} too long");
        let pid = std::process::id();
        Self::named(
            [
                format!("{ns_prefix}-{pid}{tag}-a"),
                format!("{ns_prefix}-{pid}{tag}-b"),
            ],
            // Interface names are at most 15 bytes: prefix (≤ 6) + pid (≤ 7 digits) + 2.
            [
                format!("{if_prefix}{pid}{tag}a"),
                format!("{if_prefix}{pid}{tag}b"),
            ],
            mtu,
        )
    }

    /// Namespaces `ns` and veth ends `veth` of fixed names, for a test that runs commands
    /// naming them (a documented example); the caller keeps the names unique to its test.
    /// A leftover of a killed run fails the setup with `ip`'s message (and is removed as
    /// the half-made topology is dropped).
    pub fn named(ns: [String; 2], veth: [String; 2], mtu: u32) -> Self {
        let topo = Self { ns, veth };
        let [ns_a, ns_b] = &topo.ns;
        let [veth_a, veth_b] = &topo.veth;
        let mtu = mtu.to_string();
        let steps: Vec<Vec<&str>> = vec![
            vec!["netns", "add", ns_a],
            vec!["netns", "add", ns_b],
            vec!["link", "add", veth_a, "type", "veth", "peer", "name", veth_b],
            vec!["link", "set", veth_a, "netns", ns_a],
            vec!["link", "set", veth_b, "netns", ns_b],
        ];
        for step in &steps {
            ip(step).unwrap_or_else(|e| panic!("setting up the veth pair: {e}"));
        }
        for (ns, dev, addr) in [(ns_a, veth_a, ADDR_A), (ns_b, veth_b, ADDR_B)] {
            let cidr = format!("{addr}/24");
            for step in [
                vec!["-n", ns, "link", "set", dev, "mtu", &mtu],
                vec!["-n", ns, "addr", "add", &cidr, "dev", dev],
                vec!["-n", ns, "link", "set", dev, "up"],
                vec!["-n", ns, "link", "set", "lo", "up"],
            ] {
                ip(&step).unwrap_or_else(|e| panic!("configuring {dev}: {e}"));
            }
        }
        topo
    }

    /// The veth end in namespace `i` (0 or 1).
    pub fn interface(&self, i: usize) -> &str {
        &self.veth[i]
    }

    /// The name of namespace `i` (0 or 1), for `ip netns exec`.
    pub fn namespace(&self, i: usize) -> &str {
        &self.ns[i]
    }

    /// Runs `f` on a new thread inside namespace `i` (0 or 1).
    pub fn spawn_in<T: Send + 'static>(
        &self,
        i: usize,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.ns[i]);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network))
                .unwrap_or_else(|e| panic!("setns {path}: {e}"));
            f()
        })
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Deleting a namespace destroys the veth end inside it, and with it the pair. The
        // link delete is for a setup that failed before moving the end into a namespace.
        for ns in &self.ns {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["link", "del", &self.veth[0]]);
        if !self.ns.iter().all(|ns| ip(&["-n", ns, "link"]).is_err()) {
            eprintln!("veth topology: namespaces {:?} may be left behind", self.ns);
        }
    }
}
