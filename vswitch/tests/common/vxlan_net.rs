//! The VXLAN tests' network: a private network namespace per test, a veth pair, a second named
//! namespace for a kernel peer, VXLAN uplinks and a raw peer VTEP (`uplink_vxlan.rs`,
//! `uplink_vxlan_kernel.rs`).

#![allow(unused_imports)]

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{ch, drain, eth, mac, vm, Net, BCAST};
use vswitch::counters::Drops;
use vswitch::port::{Uplink, UplinkSpec};
use vswitch::uplink::vxlan::Vxlan;
use vswitch::uplink::{open, Transport, UplinkConfig, VXLAN_PORT};
use vswitch_channels::ChannelSet;
use vswitch_testguest::{EthFrame, TestGuest};

pub const T: Duration = Duration::from_secs(5);
/// Underlay addresses: this namespace's end of the veth pair, the far end, and a stranger.
pub const A: &str = "10.99.0.1";
pub const B: &str = "10.99.0.2";
pub const STRANGER: &str = "10.99.0.3";

// ---------------------------------------------------------------------------------------------
// Namespaces

/// Runs `ip ARGS` (in the calling thread's network namespace); panics with its output on
/// failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Moves the calling thread into a new network namespace of its own, with loopback up.
/// `false` (after one line saying why) when that is not possible: not root, or unshare failed.
pub fn private_netns(test: &str) -> bool {
    // SAFETY: plain system calls without pointers.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP {test}: needs root to create network namespaces");
        return false;
    }
    // SAFETY: as above; affects only the calling thread's network namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        eprintln!(
            "SKIP {test}: unshare(CLONE_NEWNET) failed: {}",
            io::Error::last_os_error()
        );
        return false;
    }
    ip(&["link", "set", "lo", "up"]);
    true
}

/// A veth pair `va` (here, with address `a`) and `vb` (with address `b`, here too unless moved).
pub fn veth(a: &str, b: &str) {
    ip(&["link", "add", "va", "type", "veth", "peer", "name", "vb"]);
    ip(&["addr", "add", &format!("{a}/24"), "dev", "va"]);
    ip(&["link", "set", "va", "up"]);
    ip(&["addr", "add", &format!("{b}/24"), "dev", "vb"]);
    ip(&["link", "set", "vb", "up"]);
}

pub fn gettid() -> libc::pid_t {
    // SAFETY: a system call without arguments.
    unsafe { libc::gettid() }
}

/// A named network namespace (`ip netns add`), deleted when dropped.
pub struct NamedNetns {
    name: String,
}

impl NamedNetns {
    pub fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "vxt-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        let ns = NamedNetns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Runs `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name, "ip"];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// Moves interface `ifname` (from the calling thread's namespace) into this one, with
    /// address `addr` (a /24), up.
    pub fn take(&self, ifname: &str, addr: &str) {
        ip(&["link", "set", ifname, "netns", &self.name]);
        self.ip(&["addr", "add", &format!("{addr}/24"), "dev", ifname]);
        self.ip(&["link", "set", ifname, "up"]);
    }

    /// Runs `f` on a thread inside the namespace: sockets it opens live there.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = std::fs::File::open(&path).expect("open the namespace");
                // SAFETY: `ns` is an open namespace descriptor; only this thread moves.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
                f()
            })
            .join()
            .expect("thread in the namespace")
        })
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

// ---------------------------------------------------------------------------------------------
// Uplinks and frames

pub fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("ip"), port)
}

pub fn carrying(channels: &[u16]) -> UplinkSpec {
    UplinkSpec {
        name: "vx".into(),
        channels: channels.iter().map(|&c| ch(c)).collect::<ChannelSet>(),
        mac_limit: None,
        reflective_relay: false,
    }
}

/// Opens a VXLAN uplink through `vswitch::uplink::open`, as the configuration does.
pub fn vxlan_uplink(local: &str, remotes: &[&str]) -> Arc<dyn Uplink> {
    open(&UplinkConfig {
        spec: carrying(&[100, 200]),
        transport: Transport::Vxlan {
            local: addr(local, VXLAN_PORT),
            remotes: remotes.iter().map(|r| r.parse().expect("ip")).collect(),
        },
        mtu: 1500,
    })
    .expect("VXLAN uplink opens")
}

/// A VXLAN datagram: `flags`, `vni`, then `inner`.
pub fn vxlan(flags: u8, vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut d = vec![flags, 0, 0, 0];
    d.extend_from_slice(&vni.to_be_bytes()[1..]);
    d.push(0);
    d.extend_from_slice(inner);
    d
}

/// A frame with a payload of `len` bytes in total (Ethernet header included).
pub fn sized(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len - 14).map(|i| i as u8).collect();
    EthFrame::new(dst, src, 0x88b5, &payload).build()
}

/// A peer VTEP played by a plain UDP socket.
pub struct Peer {
    sock: UdpSocket,
}

impl Peer {
    pub fn bind(ip: &str, port: u16) -> Peer {
        let sock = UdpSocket::bind(addr(ip, port)).expect("bind peer");
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        Peer { sock }
    }

    pub fn send_to_switch(&self, datagram: &[u8], switch: &str) {
        self.sock
            .send_to(datagram, addr(switch, VXLAN_PORT))
            .expect("send");
    }

    /// The datagrams that arrive until the line is quiet, with their source.
    pub fn drain(&self) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = self.sock.recv_from(&mut buf) {
            out.push((from, buf[..n].to_vec()));
        }
        out
    }
}

/// Calls `receive` on `up` until it hands something over or counts a drop (or 5 s pass):
/// the frames with their channel, and the drops.
pub fn receive(up: &dyn Uplink) -> (Vec<(u16, Vec<u8>)>, Drops) {
    let end = Instant::now() + T;
    loop {
        let mut got = Vec::new();
        let r = up.receive(&mut |batch, stamps| {
            for (i, f) in batch.iter().enumerate() {
                let mut b = vec![0u8; f.len()];
                f.copy_to(&mut b);
                got.push((stamps[i].get(), b));
            }
        });
        if !got.is_empty() || !r.drops.is_zero() || Instant::now() > end {
            return (got, r.drops);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

// ---------------------------------------------------------------------------------------------
// Switch to switch
