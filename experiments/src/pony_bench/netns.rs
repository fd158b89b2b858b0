// SPDX-License-Identifier: GPL-2.0-only
//! The benchmark's path: two network namespaces, `bench-<pid>-a` and `bench-<pid>-b`, joined
//! by a veth pair (`bench<pid>a` in A with [`ADDR`]`[0]`, `bench<pid>b` in B with
//! [`ADDR`]`[1]`), made by [`Veth::create`] and removed when the [`Veth`] is dropped (on
//! errors and panics, which unwind through its owner), or by the Ctrl-C / SIGTERM handler
//! [`install_cleanup`] installs, which removes every live pair before the process exits.
//!
//! ```text
//!  this process (root namespace)
//!   thread in A ─ socket(s) ─┐                         ┌─ socket(s) ─ thread in B
//!                  bench-<pid>-a: bench<pid>a ══ veth ══ bench<pid>b :bench-<pid>-b
//!                              10.78.0.1/24             10.78.0.2/24
//!  `ip netns exec bench-<pid>-b sockperf server …`  (processes in a namespace)
//! ```
//!
//! A socket belongs to the namespace of the thread that created it, for its whole life, so
//! [`Veth::open_in`] runs a closure on a short-lived thread that has entered the namespace
//! and hands back what it opened (a NIC, a listener); [`Veth::enter`] moves a thread of the
//! benchmark's own for its remaining life (the TCP client and server). The main thread never
//! changes namespace. Needs root and iproute2's `ip` ([`check`] says which is missing).
//!
//! This is not `snap-test-netns` (a dev-dependency for tests, which panics on failure): the
//! benchmark reports errors, names its namespaces `bench-…`, and cleans up on Ctrl-C.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};

/// The address of side A's end and side B's end.
pub const ADDR: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 78, 0, 1), Ipv4Addr::new(10, 78, 0, 2)];

/// Namespace pairs alive in this process, for the Ctrl-C handler.
static LIVE: Mutex<Vec<[String; 2]>> = Mutex::new(Vec::new());

/// Runs `ip ARGS`; an error carries its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("running `ip {}`", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Whether this process can make the path: root, iproute2's `ip`, network namespaces.
pub fn check() -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!(
            "the veth path needs root (network namespaces and veth need CAP_NET_ADMIN); \
             run as root, or use `--path loopback`"
        );
    }
    match Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => bail!("`ip -V` failed ({}); install iproute2", out.status),
        Err(e) => bail!("iproute2's `ip` is not available ({e}); install iproute2 or use `--path loopback`"),
    }
    if !std::path::Path::new("/proc/self/ns/net").exists() {
        bail!("this kernel has no network namespaces (/proc/self/ns/net is missing); use `--path loopback`");
    }
    Ok(())
}

/// Deletes every pair still alive (the Ctrl-C handler's job; Drop does it otherwise).
pub fn remove_all() {
    let live = std::mem::take(&mut *LIVE.lock().unwrap_or_else(|e| e.into_inner()));
    for ns in live.iter().flatten() {
        let _ = ip(&["netns", "del", ns]);
    }
}

/// On Ctrl-C, SIGTERM or SIGHUP: removes the live namespaces and exits with 130. Call once,
/// before the first [`Veth::create`].
pub fn install_cleanup() -> Result<()> {
    ctrlc::set_handler(|| {
        eprintln!("mq-bench-pony: interrupted; removing the benchmark's network namespaces");
        remove_all();
        std::process::exit(130);
    })
    .context("installing the Ctrl-C handler")
}

/// Side A (0) or side B (1).
pub type Side = usize;

/// Two namespaces joined by a veth pair; dropping it removes both, and the pair with them.
#[derive(Debug)]
pub struct Veth {
    ns: [String; 2],
    dev: [String; 2],
}

impl Veth {
    /// Makes the namespaces and the pair, with `mtu` on both ends, addresses and links up;
    /// `tag` tells apart pairs of one process (tests run in parallel).
    pub fn create(tag: &str, mtu: u32) -> Result<Self> {
        Self::create_named("bench", tag, mtu)
    }

    /// [`Self::create`] with names starting with `prefix` instead of `bench`
    /// (`<prefix>-<pid><tag>-a`, `<prefix><pid><tag>a`), for another benchmark's pairs.
    pub fn create_named(prefix: &str, tag: &str, mtu: u32) -> Result<Self> {
        check()?;
        let pid = std::process::id();
        let veth = Self {
            ns: [format!("{prefix}-{pid}{tag}-a"), format!("{prefix}-{pid}{tag}-b")],
            // Interface names have at most 15 bytes: prefix + pid (≤ 7 digits) + tag + 1.
            dev: [format!("{prefix}{pid}{tag}a"), format!("{prefix}{pid}{tag}b")],
        };
        if veth.dev[0].len() > 15 {
            bail!(
                "interface name {} is longer than 15 bytes (tag {tag:?} too long)",
                veth.dev[0]
            );
        }
        // Registered (and owned) before the first command, so a half-made pair is removed too.
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(veth.ns.clone());
        let [ns_a, ns_b] = &veth.ns;
        let [dev_a, dev_b] = &veth.dev;
        ip(&["netns", "add", ns_a]).context("network namespaces unavailable?")?;
        ip(&["netns", "add", ns_b])?;
        ip(&["link", "add", dev_a, "type", "veth", "peer", "name", dev_b])
            .context("veth unavailable (CONFIG_VETH)?")?;
        ip(&["link", "set", dev_a, "netns", ns_a])?;
        ip(&["link", "set", dev_b, "netns", ns_b])?;
        let mtu = mtu.to_string();
        for ((ns, dev), addr) in veth.ns.iter().zip(&veth.dev).zip(ADDR) {
            let cidr = format!("{addr}/24");
            ip(&["-n", ns, "link", "set", dev, "mtu", &mtu])
                .with_context(|| format!("MTU {mtu} on {dev}"))?;
            ip(&["-n", ns, "addr", "add", &cidr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(veth)
    }

    /// The namespace of `side`.
    pub fn namespace(&self, side: Side) -> &str {
        &self.ns[side]
    }

    /// The veth end in `side`'s namespace (what an AF_XDP socket binds to).
    pub fn device(&self, side: Side) -> &str {
        &self.dev[side]
    }

    /// Moves the calling thread into `side`'s namespace for the rest of its life. For threads
    /// the benchmark spawned only: the main thread stays in its own namespace.
    pub fn enter(&self, side: Side) -> Result<()> {
        let path = format!("/run/netns/{}", self.ns[side]);
        let ns = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network))
            .with_context(|| format!("setns into {path}"))
    }

    /// Runs `f` on a thread inside `side`'s namespace and returns what it made: a socket keeps
    /// the namespace it was created in.
    pub fn open_in<T: Send>(&self, side: Side, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        std::thread::scope(|s| {
            s.spawn(|| {
                self.enter(side)?;
                f()
            })
            .join()
            .map_err(|_| anyhow!("the thread opening a socket in {} panicked", self.ns[side]))?
        })
    }

    /// `ip netns exec NS program`: a process in `side`'s namespace.
    pub fn exec(&self, side: Side, program: &std::path::Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns[side]]).arg(program);
        cmd
    }

    /// Whether either namespace still exists.
    pub fn exists(&self) -> bool {
        self.ns
            .iter()
            .any(|ns| std::path::Path::new("/run/netns").join(ns).exists())
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // Deleting a namespace destroys the veth end inside it, and with it the pair. The
        // link delete is for a setup that failed before moving the end into a namespace.
        for ns in &self.ns {
            let _ = ip(&["netns", "del", ns]);
        }
        if ip(&["link", "show", &self.dev[0]]).is_ok() {
            let _ = ip(&["link", "del", &self.dev[0]]);
        }
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|ns| ns != &self.ns);
        if self.exists() {
            eprintln!("namespaces {:?} may be left behind", self.ns);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};

    use super::*;

    /// Makes a pair, checks that a TCP connection crosses it from A to B (B sees A's veth
    /// address as the peer), drops it and checks it is gone.
    #[test]
    fn a_pair_carries_traffic_and_is_gone_after_drop() {
        if let Err(why) = check() {
            eprintln!("skipped: {why:#}");
            return;
        }
        let veth = Veth::create("t", 1500).unwrap();
        let names = (veth.namespace(0).to_string(), veth.device(1).to_string());
        assert!(veth.exists());
        let server: SocketAddr = (ADDR[1], 7300).into();
        let listener = veth.open_in(1, || Ok(TcpListener::bind(server)?)).unwrap();
        std::thread::scope(|s| {
            let echo = s.spawn(|| {
                let (mut c, peer) = listener.accept().unwrap();
                let mut buf = [0u8; 5];
                c.read_exact(&mut buf).unwrap();
                c.write_all(&buf).unwrap();
                peer
            });
            let mut c = veth.open_in(0, || Ok(TcpStream::connect(server)?)).unwrap();
            c.write_all(b"hello").unwrap();
            let mut back = [0u8; 5];
            c.read_exact(&mut back).unwrap();
            assert_eq!(&back, b"hello");
            let peer = echo.join().unwrap();
            assert_eq!(
                peer.ip(),
                std::net::IpAddr::V4(ADDR[0]),
                "came over the veth from A"
            );
        });
        drop(listener);
        drop(veth);
        assert!(!std::path::Path::new("/run/netns").join(&names.0).exists());
        assert!(
            ip(&["link", "show", &names.1]).is_err(),
            "{} still exists",
            names.1
        );
        assert!(!LIVE.lock().unwrap().iter().flatten().any(|ns| *ns == names.0));
    }

    /// A setup that fails half-way (an MTU veth refuses) leaves nothing behind.
    #[test]
    fn a_failed_setup_is_removed() {
        if let Err(why) = check() {
            eprintln!("skipped: {why:#}");
            return;
        }
        let err = Veth::create("f", 1_000_000).unwrap_err();
        assert!(format!("{err:#}").contains("MTU 1000000"), "{err:#}");
        let pid = std::process::id();
        assert!(!std::path::Path::new(&format!("/run/netns/bench-{pid}f-a")).exists());
        assert!(ip(&["link", "show", &format!("bench{pid}fa")]).is_err());
        assert!(Veth::create("toolong", 1500).is_err());
    }
}
