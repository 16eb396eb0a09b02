//! Two hosts as network namespaces for the two-host scenarios (`vswitch_tests::netns`: named
//! namespaces this process creates, deleted with every interface in them when dropped), joined
//! by one veth pair. Nothing is created in the namespace the benchmark runs in, and no thread of
//! the benchmark changes namespace for good: what must live in a namespace (sockets, counter
//! reads) is done on a thread that enters it and ends.

use anyhow::{anyhow, Context, Result};
pub use vswitch_tests::netns::{enter, ip, Netns};

/// Underlay address of host A (on `va`) and host B (on `vb`).
pub const ADDR_A: &str = "10.99.0.1";
pub const ADDR_B: &str = "10.99.0.2";
/// The veth pair's interfaces.
pub const IF_A: &str = "va";
pub const IF_B: &str = "vb";
/// Underlay MTU: a 1518-byte frame needs 1518 + 36 (outer IPv4, UDP, VXLAN) = 1554 bytes of
/// IP packet, 4 more than 1500 for an 802.1ad tag.
pub const UNDERLAY_MTU: u32 = 1600;

/// Why the two-host scenarios cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces and a veth pair)".into());
    }
    None
}

/// The counters of interface `ifname` inside namespace `ns`.
pub fn if_counters(ns: &Netns, ifname: &str) -> Result<IfCounters> {
    let dev = ns.run(|| {
        // The calling thread's namespace (/proc/self/net would be the main thread's).
        std::fs::read_to_string("/proc/thread-self/net/dev")
            .context("reading /proc/thread-self/net/dev")
    })?;
    IfCounters::parse(&dev, ifname).ok_or_else(|| anyhow!("no interface {ifname} in {}", ns.name()))
}

/// An interface's counters from /proc/net/dev.
#[derive(Debug, Clone, Copy, Default)]
pub struct IfCounters {
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Packets the interface dropped on receive.
    pub rx_dropped: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
}

impl IfCounters {
    /// `ifname`'s line of /proc/net/dev text `dev` (other lines are skipped), or `None` when it
    /// is missing or short.
    pub fn parse(dev: &str, ifname: &str) -> Option<IfCounters> {
        dev.lines().find_map(|l| {
            let (name, rest) = l.split_once(':')?;
            if name.trim() != ifname {
                return None;
            }
            // rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes packets ...
            let v: Vec<u64> = rest
                .split_whitespace()
                .map(|x| x.parse().ok())
                .collect::<Option<_>>()?;
            Some(IfCounters {
                rx_bytes: *v.first()?,
                rx_packets: *v.get(1)?,
                rx_dropped: *v.get(3)?,
                tx_bytes: *v.get(8)?,
                tx_packets: *v.get(9)?,
            })
        })
    }
}

/// Host A and host B, joined by the veth pair `va` (A, [`ADDR_A`]) — `vb` (B, [`ADDR_B`]),
/// both of MTU [`UNDERLAY_MTU`], up, IPv6 off (no neighbour discovery on the wire).
pub struct TwoHosts {
    pub a: Netns,
    pub b: Netns,
}

impl TwoHosts {
    /// Creates both namespaces and the veth pair.
    pub fn new() -> Result<TwoHosts> {
        let hosts = TwoHosts {
            a: Netns::new("a")?,
            b: Netns::new("b")?,
        };
        let mtu = UNDERLAY_MTU.to_string();
        ip(&[
            "link",
            "add",
            IF_A,
            "netns",
            hosts.a.name(),
            "mtu",
            &mtu,
            "type",
            "veth",
            "peer",
            "name",
            IF_B,
            "netns",
            hosts.b.name(),
            "mtu",
            &mtu,
        ])?;
        for (ns, ifname, addr) in [(&hosts.a, IF_A, ADDR_A), (&hosts.b, IF_B, ADDR_B)] {
            ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", ifname])?;
            ns.ip(&["link", "set", ifname, "up"])?;
        }
        Ok(hosts)
    }
}

#[cfg(test)]
mod tests {
    use super::IfCounters;

    #[test]
    fn parses_proc_net_dev() {
        let dev = "Inter-|   Receive                                                |  Transmit\n \
             face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
             lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0\n   \
             vxb: 6400000  100000    0    7    0     0          0         0      512       4    0    2    0     0       0          0\n";
        let c = IfCounters::parse(dev, "vxb").expect("vxb");
        assert_eq!((c.rx_packets, c.rx_dropped), (100000, 7));
        assert!(IfCounters::parse(dev, "vx").is_none());
    }
}
