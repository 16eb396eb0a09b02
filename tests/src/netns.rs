//! Hosts as network namespaces: named namespaces this process creates (`ip netns add`), joined
//! by veth pairs, removed when dropped (with every interface in them). Nothing is created in the
//! namespace the tests run in.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

/// Runs `ip ARGS`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("running ip {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Why network-namespace tests cannot run here, if they cannot (not root, no `ip`, no netns).
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces and veth pairs)".into());
    }
    let probe = Netns::new("probe").err()?;
    Some(format!("cannot create a network namespace: {probe:#}"))
}

/// A named network namespace, deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `vswt-<tag>-<pid>-<n>`, with its loopback up.
    pub fn new(tag: &str) -> Result<Netns> {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "vswt-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Creates the namespace `name` as given (for a demo whose namespaces users inspect with
    /// `ip netns exec NAME ...`), with its loopback up. A namespace of that name left by a
    /// crashed run is deleted first ([`Netns::exists`] tells whether there is one); one in which
    /// processes still run is refused, since deleting its name would not stop them.
    pub fn named(name: &str) -> Result<Netns> {
        if Netns::exists(name) {
            let pids = Command::new("ip")
                .args(["netns", "pids", name])
                .output()
                .with_context(|| format!("running ip netns pids {name}"))?;
            let pids = String::from_utf8_lossy(&pids.stdout);
            let pids: Vec<&str> = pids.split_whitespace().collect();
            if !pids.is_empty() {
                bail!(
                    "network namespace {name} exists and processes run in it (pids {}): an \
                     earlier run is still going; stop those processes first",
                    pids.join(" ")
                );
            }
            ip(&["netns", "del", name])?;
        }
        ip(&["netns", "add", name])?;
        let ns = Netns {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// True when a named namespace `name` exists (`/run/netns/NAME`, where `ip netns` keeps
    /// them).
    pub fn exists(name: &str) -> bool {
        std::path::Path::new("/run/netns").join(name).exists()
    }

    /// Its name (for `ip netns exec NAME ...`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip ARGS` inside this namespace.
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Runs a command inside this namespace; returns its stdout, failing with its stderr.
    pub fn exec(&self, cmd: &[&str]) -> Result<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .output()
            .with_context(|| format!("running {} in {}", cmd.join(" "), self.name))?;
        if !out.status.success() {
            bail!(
                "{} in {} failed: {}",
                cmd.join(" "),
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Netns {
    /// Sets sysctl `key` to `value` inside this namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec(&["sysctl", "-qw", &format!("{key}={value}")])
            .map(|_| ())
    }

    /// Path of the namespace's handle, for [`enter`].
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs `f` on a new thread inside this namespace (sockets it opens live there) and
    /// returns what it returned. The thread keeps the caller's CPU affinity.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> Result<R> + Send) -> Result<R> {
        let path = self.path();
        std::thread::scope(|s| {
            s.spawn(|| {
                enter(&path)?;
                f()
            })
            .join()
            .map_err(|_| anyhow::anyhow!("a thread inside {} panicked", self.name))?
        })
    }
}

/// Moves the calling thread into the network namespace whose handle is at `path` (for good:
/// call it only on a thread of its own).
pub fn enter(path: &str) -> Result<()> {
    let ns = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
    // SAFETY: `ns` is an open namespace descriptor for the duration of the call; setns moves
    // only the calling thread.
    if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) } != 0 {
        bail!("setns({path}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Joins `a` and `b` with a veth pair: interface `a_if` in `a` with `a_addr` (CIDR, or none),
/// `b_if` in `b` with `b_addr`; both up, IPv6 off (no neighbour discovery chatter on a trunk).
pub fn veth(
    a: &Netns,
    a_if: &str,
    a_addr: Option<&str>,
    b: &Netns,
    b_if: &str,
    b_addr: Option<&str>,
) -> Result<()> {
    ip(&[
        "link",
        "add",
        a_if,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ])?;
    for (ns, ifname, addr) in [(a, a_if, a_addr), (b, b_if, b_addr)] {
        let _ = ns.exec(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{ifname}.disable_ipv6=1"),
        ]);
        if let Some(addr) = addr {
            ns.ip(&["addr", "add", addr, "dev", ifname])?;
        }
        ns.ip(&["link", "set", ifname, "up"])?;
    }
    Ok(())
}
