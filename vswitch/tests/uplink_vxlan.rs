//! The VXLAN uplink on a real network: switches in network namespaces the test creates, joined
//! by a veth pair, guests on channels 100 and 200 behind each. The channel travels as the VNI;
//! frames cross on their own channel only, byte for byte; datagrams forged or broken on the
//! wire are dropped and counted by the transport, never delivered to another channel; and the
//! Linux kernel's own VXLAN device is a working far end on channel 100 and unreachable from
//! channel 200.
//!
//! Needs root (network namespaces); each test skips with one line otherwise.

mod common;

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ch, drain, eth, mac, vm, Net, BCAST};
use vswitch::counters::Drops;
use vswitch::port::{Uplink, UplinkSpec};
use vswitch::uplink::vxlan::Vxlan;
use vswitch::uplink::{open, Transport, UplinkConfig, VXLAN_PORT};
use vswitch_channels::ChannelSet;
use vswitch_testguest::{EthFrame, TestGuest};

const T: Duration = Duration::from_secs(5);
/// Underlay addresses: this namespace's end of the veth pair, the far end, and a stranger.
const A: &str = "10.99.0.1";
const B: &str = "10.99.0.2";
const STRANGER: &str = "10.99.0.3";

// ---------------------------------------------------------------------------------------------
// Namespaces

/// Runs `ip ARGS` (in the calling thread's network namespace); panics with its output on
/// failure.
fn ip(args: &[&str]) {
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
fn private_netns(test: &str) -> bool {
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
fn veth(a: &str, b: &str) {
    ip(&["link", "add", "va", "type", "veth", "peer", "name", "vb"]);
    ip(&["addr", "add", &format!("{a}/24"), "dev", "va"]);
    ip(&["link", "set", "va", "up"]);
    ip(&["addr", "add", &format!("{b}/24"), "dev", "vb"]);
    ip(&["link", "set", "vb", "up"]);
}

fn gettid() -> libc::pid_t {
    // SAFETY: a system call without arguments.
    unsafe { libc::gettid() }
}

/// A named network namespace (`ip netns add`), deleted when dropped.
struct NamedNetns {
    name: String,
}

impl NamedNetns {
    fn new() -> Self {
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
    fn ip(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name, "ip"];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// Moves interface `ifname` (from the calling thread's namespace) into this one, with
    /// address `addr` (a /24), up.
    fn take(&self, ifname: &str, addr: &str) {
        ip(&["link", "set", ifname, "netns", &self.name]);
        self.ip(&["addr", "add", &format!("{addr}/24"), "dev", ifname]);
        self.ip(&["link", "set", ifname, "up"]);
    }

    /// Runs `f` on a thread inside the namespace: sockets it opens live there.
    fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
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

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("ip"), port)
}

fn carrying(channels: &[u16]) -> UplinkSpec {
    UplinkSpec {
        name: "vx".into(),
        channels: channels.iter().map(|&c| ch(c)).collect::<ChannelSet>(),
        mac_limit: None,
        reflective_relay: false,
    }
}

/// Opens a VXLAN uplink through `vswitch::uplink::open`, as the configuration does.
fn vxlan_uplink(local: &str, remotes: &[&str]) -> Arc<dyn Uplink> {
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
fn vxlan(flags: u8, vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut d = vec![flags, 0, 0, 0];
    d.extend_from_slice(&vni.to_be_bytes()[1..]);
    d.push(0);
    d.extend_from_slice(inner);
    d
}

/// A frame with a payload of `len` bytes in total (Ethernet header included).
fn sized(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len - 14).map(|i| i as u8).collect();
    EthFrame::new(dst, src, 0x88b5, &payload).build()
}

/// A peer VTEP played by a plain UDP socket.
struct Peer {
    sock: UdpSocket,
}

impl Peer {
    fn bind(ip: &str, port: u16) -> Peer {
        let sock = UdpSocket::bind(addr(ip, port)).expect("bind peer");
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        Peer { sock }
    }

    fn send_to_switch(&self, datagram: &[u8], switch: &str) {
        self.sock
            .send_to(datagram, addr(switch, VXLAN_PORT))
            .expect("send");
    }

    /// The datagrams that arrive until the line is quiet, with their source.
    fn drain(&self) -> Vec<(SocketAddr, Vec<u8>)> {
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
fn receive(up: &dyn Uplink) -> (Vec<(u16, Vec<u8>)>, Drops) {
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

/// Host A (this namespace, underlay 10.99.0.1) and host B (a second namespace, 10.99.0.2)
/// joined by a veth pair, each a switch with VMs on channels 100 and 200 and a VXLAN uplink
/// carrying both: frames cross both ways on their own channel only, byte for byte; a frame
/// too long for the underlay with its encapsulation is not sent, and counted.
#[test]
fn same_channel_crosses_hosts_both_ways_other_channel_never() {
    if !private_netns("same_channel_crosses_hosts_both_ways_other_channel_never") {
        return;
    }
    veth(A, B);
    let host_b = NamedNetns::new();
    host_b.take("vb", B);

    let a = Net::new(&[vm("vm1", 100, None), vm("vm3", 200, None)]);
    let b = Net::new(&[vm("vm2", 100, None), vm("vm4", 200, None)]);
    a.sw.add_uplink(carrying(&[100, 200]), vxlan_uplink(A, &[B]))
        .expect("uplink A");
    let up_b = host_b.run(|| vxlan_uplink(B, &[A]));
    b.sw.add_uplink(carrying(&[100, 200]), up_b)
        .expect("uplink B");
    let mut g1 = a.guest("vm1", mac(1));
    let mut g3 = a.guest("vm3", mac(3));
    let mut g2 = b.guest("vm2", mac(2));
    let mut g4 = b.guest("vm4", mac(4));
    let quiet = |gs: &mut [&mut TestGuest], what: &str| {
        for g in gs.iter_mut() {
            assert!(drain(g).is_empty(), "{what}");
        }
    };

    // Broadcast on 100, A to B.
    let f = eth(BCAST, mac(1), 1);
    g1.send(&f).expect("send");
    assert_eq!(g2.recv(T), Some(f), "broadcast crossed to vm2");
    quiet(&mut [&mut g3, &mut g4], "channel 200 got nothing of 100");

    // Unicast reply B to A (B's switch learned vm1 behind its uplink, B's uplink learned
    // vm1's VTEP).
    let f = eth(mac(1), mac(2), 2);
    g2.send(&f).expect("send");
    assert_eq!(g1.recv(T), Some(f), "unicast crossed back to vm1");
    quiet(&mut [&mut g3, &mut g4], "channel 200 got nothing of 100");

    // Unicast A to B, now known on both sides.
    let f = eth(mac(2), mac(1), 3);
    g1.send(&f).expect("send");
    assert_eq!(g2.recv(T), Some(f), "unicast crossed to vm2");

    // Unknown unicast floods across on its channel only.
    let f = eth(mac(0x77), mac(2), 4);
    g2.send(&f).expect("send");
    assert_eq!(g1.recv(T), Some(f), "unknown unicast crossed to vm1");
    quiet(&mut [&mut g3, &mut g4], "channel 200 got nothing of 100");

    // Channel 200 the same way, apart; a guest's own 802.1Q tag crosses untouched.
    let f = EthFrame::new(BCAST, mac(4), 0x88b5, &[5u8; 46])
        .with_ctag(7)
        .build();
    g4.send(&f).expect("send");
    assert_eq!(
        g3.recv(T),
        Some(f),
        "tagged broadcast on 200 crossed to vm3"
    );
    let f = eth(mac(4), mac(3), 6);
    g3.send(&f).expect("send");
    assert_eq!(g4.recv(T), Some(f), "unicast on 200 crossed to vm4");
    quiet(&mut [&mut g1, &mut g2], "channel 100 got nothing of 200");

    // Across channels: vm3 (200) to vm2's MAC (100). Nothing reaches vm2; on channel 200 it is
    // an unknown unicast, which vm4 sees.
    let f = eth(mac(2), mac(3), 7);
    g3.send(&f).expect("send");
    assert_eq!(g4.recv(T), Some(f), "flooded on 200");
    quiet(
        &mut [&mut g1, &mut g2],
        "vm2 (100) never gets a frame from 200",
    );

    // MTU: veth MTU 1500 takes inner frames of up to 1464 bytes (+ 20 IP + 8 UDP + 8 VXLAN).
    let fits = sized(BCAST, mac(1), 1464);
    g1.send(&fits).expect("send");
    assert_eq!(g2.recv(T), Some(fits), "a 1464-byte frame crosses");
    g1.send(&sized(BCAST, mac(1), 1465)).expect("send");
    common::wait_for(
        || {
            a.sw.stats()
                .channel(100)
                .is_some_and(|c| c.counters.drops.oversize == 1)
        },
        "the 1465-byte frame counted oversize on channel 100",
    );
    quiet(
        &mut [&mut g2, &mut g3, &mut g4],
        "nothing of the oversize frame arrived",
    );
}

// ---------------------------------------------------------------------------------------------
// The wire, forged and broken

/// Datagrams injected with a plain UDP socket, straight into the transport: only a
/// well-formed one from a configured remote is handed over, with its VNI as channel; the
/// rest are counted by reason.
#[test]
fn the_transport_drops_and_counts_what_it_cannot_trust() {
    if !private_netns("the_transport_drops_and_counts_what_it_cannot_trust") {
        return;
    }
    veth(A, B);
    ip(&["addr", "add", &format!("{STRANGER}/24"), "dev", "va"]);
    let up = vxlan_uplink(B, &[A]);
    let remote = Peer::bind(A, 0);
    let stranger = Peer::bind(STRANGER, 0);
    let frame = eth(BCAST, mac(9), 1);

    remote.send_to_switch(&vxlan(0x08, 100, &frame), B);
    let (got, drops) = receive(&*up);
    assert_eq!(got, vec![(100, frame.clone())], "handed over, channel 100");
    assert!(drops.is_zero());

    // Reserved bits are ignored on receive (RFC 7348).
    let mut d = vxlan(0xff, 200, &frame);
    d[1..4].fill(0xaa);
    d[7] = 0xaa;
    remote.send_to_switch(&d, B);
    assert_eq!(receive(&*up).0, vec![(200, frame.clone())]);

    let expect = |d: &[u8], from: &Peer, field: fn(&Drops) -> u64, what: &str| {
        from.send_to_switch(d, B);
        let (got, drops) = receive(&*up);
        assert!(got.is_empty(), "{what}: nothing handed over");
        assert_eq!(field(&drops), 1, "{what}: counted ({drops:?})");
        assert_eq!(drops.total(), 1, "{what}: counted once ({drops:?})");
    };
    for vni in [0, 4095, 5000, 0xff_ffff] {
        expect(
            &vxlan(0x08, vni, &frame),
            &remote,
            |d| d.unknown_channel,
            &format!("VNI {vni}"),
        );
    }
    expect(
        &[0x08, 0, 0, 0, 0],
        &remote,
        |d| d.malformed,
        "truncated header",
    );
    expect(&[], &remote, |d| d.malformed, "empty datagram");
    expect(
        &vxlan(0x00, 100, &frame),
        &remote,
        |d| d.malformed,
        "I flag clear",
    );
    expect(
        &vxlan(0xf7, 100, &frame),
        &remote,
        |d| d.malformed,
        "all flags but I",
    );
    expect(
        &vxlan(0x08, 100, &frame[..13]),
        &remote,
        |d| d.malformed,
        "inner frame shorter than an Ethernet header",
    );
    expect(
        &vxlan(0x08, 100, &sized(BCAST, mac(9), 9300)),
        &remote,
        |d| d.oversize,
        "longer than a jumbo frame",
    );
    expect(
        &vxlan(0x08, 100, &frame),
        &stranger,
        |d| d.source_spoof,
        "from an address that is not a configured remote",
    );
}

/// Forged VNIs through a switch: a datagram claiming channel 200 for a MAC on channel 100
/// stays on 200; a channel the uplink does not carry goes nowhere (counted at the switch);
/// what the transport drops never reaches a VM.
#[test]
fn a_forged_vni_never_reaches_another_channel() {
    if !private_netns("a_forged_vni_never_reaches_another_channel") {
        return;
    }
    veth(A, B);
    ip(&["addr", "add", &format!("{STRANGER}/24"), "dev", "va"]);
    let b = Net::new(&[vm("vm2", 100, None), vm("vm4", 200, None)]);
    b.sw.add_uplink(carrying(&[100, 200]), vxlan_uplink(B, &[A]))
        .expect("uplink");
    let mut g2 = b.guest("vm2", mac(2));
    let mut g4 = b.guest("vm4", mac(4));
    let remote = Peer::bind(A, VXLAN_PORT);
    let stranger = Peer::bind(STRANGER, 0);
    // The switch learns vm2's MAC on channel 100.
    g2.send(&eth(BCAST, mac(2), 0)).expect("send");
    assert_eq!(remote.drain().len(), 1, "vm2's broadcast on the wire");

    let ok = eth(BCAST, mac(9), 1);
    remote.send_to_switch(&vxlan(0x08, 100, &ok), B);
    assert_eq!(g2.recv(T), Some(ok), "a real frame on 100 arrives");
    assert!(drain(&mut g4).is_empty());

    // VNI 200, addressed to vm2 (channel 100): stays on channel 200.
    let forged = eth(mac(2), mac(9), 2);
    remote.send_to_switch(&vxlan(0x08, 200, &forged), B);
    assert_eq!(
        g4.recv(T),
        Some(forged),
        "flooded on 200 as unknown unicast"
    );
    assert!(
        drain(&mut g2).is_empty(),
        "vm2 never sees a frame of VNI 200"
    );

    // A channel the uplink does not carry.
    remote.send_to_switch(&vxlan(0x08, 300, &eth(mac(2), mac(9), 3)), B);
    common::wait_for(
        || {
            b.sw.stats()
                .channel(300)
                .is_some_and(|c| c.counters.drops.channel_mismatch == 1)
        },
        "VNI 300 counted as a channel mismatch",
    );

    // Broken or unknown: dropped by the transport.
    let to_vm2 = eth(mac(2), mac(9), 4);
    for d in [
        vxlan(0x08, 0, &to_vm2),
        vxlan(0x08, 4095, &to_vm2),
        vxlan(0x00, 100, &to_vm2),
        vxlan(0x08, 100, &to_vm2)[..6].to_vec(),
    ] {
        remote.send_to_switch(&d, B);
    }
    stranger.send_to_switch(&vxlan(0x08, 100, &to_vm2), B);
    let counted = |d: Drops| (d.unknown_channel, d.malformed, d.source_spoof);
    common::wait_for(
        || counted(uplink_drops(&b)) == (2, 2, 1),
        "the five counted on the uplink by reason",
    );
    let d = uplink_drops(&b);
    assert_eq!(d.total(), 5 + 1, "and the VNI 300 one as a mismatch: {d:?}");
    assert!(drain(&mut g2).is_empty(), "vm2 got none of them");
    assert!(drain(&mut g4).is_empty(), "vm4 got none of them");
}

/// The drops counted on switch `net`'s uplink.
fn uplink_drops(net: &Net) -> Drops {
    let ports = net.sw.core().ports.load();
    let id = ports.find("vx").expect("the uplink");
    ports.get(id).expect("its entry").counters.snapshot().drops
}

/// The sending side seen from two peer VTEPs: floods go to every remote (head-end
/// replication), a unicast to a MAC learned behind one remote goes to that one only; each
/// datagram carries the VXLAN header of its channel and the frame byte for byte; the outer
/// source port is a hash of the inner flow, in the dynamic range.
#[test]
fn floods_reach_every_remote_and_learned_unicast_one() {
    if !private_netns("floods_reach_every_remote_and_learned_unicast_one") {
        return;
    }
    floods_and_learned_unicast(false);
}

/// The same without `CAP_NET_RAW` (no raw socket): the uplink sends from its UDP socket,
/// source port 4789, and everything else is the same.
#[test]
fn without_a_raw_socket_the_udp_socket_sends() {
    if !private_netns("without_a_raw_socket_the_udp_socket_sends") {
        return;
    }
    floods_and_learned_unicast(true);
}

/// Drops `CAP_NET_RAW` from the calling thread's effective capabilities (capabilities are
/// per thread).
fn drop_cap_net_raw() {
    const CAP_NET_RAW: u32 = 13;
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut h = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: `h` and `d` are the header and the two data words capget expects, writable.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) };
    assert_eq!(rc, 0, "capget: {}", io::Error::last_os_error());
    d[0].effective &= !(1 << CAP_NET_RAW);
    // SAFETY: as above; capset only reads them.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()) };
    assert_eq!(rc, 0, "capset: {}", io::Error::last_os_error());
}

fn floods_and_learned_unicast(without_raw: bool) {
    veth(A, B);
    ip(&["addr", "add", &format!("{STRANGER}/24"), "dev", "va"]);
    let net = Net::new(&[vm("vm1", 100, None), vm("vm3", 200, None)]);
    let open_here = || {
        if without_raw {
            drop_cap_net_raw();
        }
        Vxlan::open(
            "vx",
            addr(B, VXLAN_PORT),
            &[A.parse().expect("ip"), STRANGER.parse().expect("ip")],
            1500,
        )
        .expect("uplink")
    };
    // On its own thread (which joins this namespace): capabilities are dropped there only.
    let ns = format!("/proc/{}/task/{}/ns/net", std::process::id(), gettid());
    let up = std::thread::scope(|s| {
        s.spawn(|| {
            let f = std::fs::File::open(&ns).expect("this thread's namespace");
            // SAFETY: `f` is an open namespace descriptor; only the new thread moves.
            let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
            open_here()
        })
        .join()
        .expect("opening thread")
    });
    assert_eq!(up.max_frame(), 1464, "veth MTU 1500 less 36");
    let hashed = up.hashes_source_port();
    assert_eq!(hashed, !without_raw, "raw socket used when allowed");
    net.sw
        .add_uplink(carrying(&[100, 200]), up)
        .expect("uplink");
    let mut g1 = net.guest("vm1", mac(1));
    let mut g3 = net.guest("vm3", mac(3));
    let p1 = Peer::bind(A, VXLAN_PORT);
    let p3 = Peer::bind(STRANGER, VXLAN_PORT);
    let from_switch = |got: &[(SocketAddr, Vec<u8>)]| -> Vec<Vec<u8>> {
        got.iter()
            .map(|(from, d)| {
                assert_eq!(from.ip(), B.parse::<IpAddr>().expect("ip"));
                if hashed {
                    assert!(from.port() >= 49152, "source port {} hashed", from.port());
                } else {
                    assert_eq!(from.port(), VXLAN_PORT);
                }
                d.clone()
            })
            .collect()
    };

    // Broadcast on 100: one copy to each remote.
    let f = eth(BCAST, mac(1), 1);
    g1.send(&f).expect("send");
    let want = vxlan(0x08, 100, &f);
    assert_eq!(from_switch(&p1.drain()), vec![want.clone()], "remote 1");
    assert_eq!(from_switch(&p3.drain()), vec![want], "remote 3");

    // Unknown unicast on 200.
    let f = eth(mac(0x77), mac(3), 2);
    g3.send(&f).expect("send");
    let want = vxlan(0x08, 200, &f);
    assert_eq!(from_switch(&p1.drain()), vec![want.clone()]);
    assert_eq!(from_switch(&p3.drain()), vec![want]);

    // A station behind remote 3 speaks on 100: learned there.
    let hello = eth(BCAST, mac(0x33), 3);
    p3.send_to_switch(&vxlan(0x08, 100, &hello), B);
    assert_eq!(g1.recv(T), Some(hello));
    assert!(drain(&mut g3).is_empty(), "not on 200");
    let f = eth(mac(0x33), mac(1), 4);
    g1.send(&f).expect("send");
    assert_eq!(
        from_switch(&p3.drain()),
        vec![vxlan(0x08, 100, &f)],
        "to its VTEP"
    );
    assert!(p1.drain().is_empty(), "not to the other remote");
    // On channel 200 the same MAC is not known: flooded.
    let f = eth(mac(0x33), mac(3), 5);
    g3.send(&f).expect("send");
    assert_eq!(p1.drain().len(), 1);
    assert_eq!(p3.drain().len(), 1);

    // One flow, one source port; several flows spread.
    if hashed {
        let udp = |sport: u16, marker: u8| {
            let mut ip4 = vec![
                0x45, 0, 0, 36, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
            ];
            ip4.extend_from_slice(&sport.to_be_bytes());
            ip4.extend_from_slice(&[
                0x30, 0x39, 0, 16, 0, 0, marker, marker, 0, 0, 0, 0, 0, 0, 0, 0,
            ]);
            EthFrame::new(mac(0x33), mac(1), 0x0800, &ip4).build()
        };
        let port_of = |f: &[u8], g: &mut TestGuest| {
            g.send(f).expect("send");
            let got = p3.drain();
            assert_eq!(got.len(), 1);
            got[0].0.port()
        };
        let first = port_of(&udp(1000, 1), &mut g1);
        assert_eq!(
            port_of(&udp(1000, 2), &mut g1),
            first,
            "same flow, same port"
        );
        let ports: std::collections::HashSet<u16> = (0..8)
            .map(|i| port_of(&udp(2000 + i, 0), &mut g1))
            .collect();
        assert!(ports.len() > 1, "eight flows, one port: {ports:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// The Linux kernel as the far end

const VM1_IP: [u8; 4] = [192, 168, 100, 1];
const VM3_IP: [u8; 4] = [192, 168, 100, 3];
const KERNEL_IP: [u8; 4] = [192, 168, 100, 2];

fn arp_request(src_mac: [u8; 6], src_ip: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0, 1, 8, 0, 6, 4, 0, 1];
    p.extend_from_slice(&src_mac);
    p.extend_from_slice(&src_ip);
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&target);
    EthFrame::new(BCAST, src_mac, 0x0806, &p).build()
}

/// The sender MAC of an ARP reply from `ip` to `to_ip`, if `f` is one.
fn arp_reply_from(f: &[u8], ip: [u8; 4], to_ip: [u8; 4]) -> Option<[u8; 6]> {
    let p = f.get(14..42)?;
    (f[12..14] == [0x08, 0x06] && p[6..8] == [0, 2] && p[14..18] == ip && p[24..28] == to_ip)
        .then(|| p[8..14].try_into().expect("6 bytes"))
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

const PING_ID: u16 = 0x5678;

fn echo_request(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    seq: u16,
) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0];
    icmp.extend_from_slice(&PING_ID.to_be_bytes());
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend((0..56).map(|i| i as u8));
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let total = (20 + icmp.len()) as u16;
    let mut ip4 = vec![0x45, 0];
    ip4.extend_from_slice(&total.to_be_bytes());
    ip4.extend_from_slice(&[0, 1, 0x40, 0, 64, 1, 0, 0]);
    ip4.extend_from_slice(&src);
    ip4.extend_from_slice(&dst);
    let c = checksum(&ip4);
    ip4[10..12].copy_from_slice(&c.to_be_bytes());
    ip4.extend_from_slice(&icmp);
    EthFrame::new(dst_mac, src_mac, 0x0800, &ip4).build()
}

/// True when `f` is the echo reply from `from` to `to` for `echo_request(.., seq)`.
fn is_echo_reply(f: &[u8], from: [u8; 4], to: [u8; 4], seq: u16) -> bool {
    let Some(ip4) = f.get(14..) else {
        return false;
    };
    f[12..14] == [0x08, 0x00]
        && ip4.len() >= 28 + 56
        && ip4[9] == 1
        && ip4[12..16] == from
        && ip4[16..20] == to
        && ip4[20] == 0
        && ip4[24..26] == PING_ID.to_be_bytes()
        && ip4[26..28] == seq.to_be_bytes()
        && ip4[28..28 + 56]
            .iter()
            .enumerate()
            .all(|(i, &b)| b == i as u8)
}

/// Receives frames on `g` until `want` matches one (returning what it returned) or `within`;
/// other frames (the kernel's own IPv6 chatter) are skipped.
fn await_frame<R>(
    g: &mut TestGuest,
    within: Duration,
    mut want: impl FnMut(&[u8]) -> Option<R>,
) -> Option<R> {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if let Some(f) = g.recv(Duration::from_millis(100)) {
            if let Some(r) = want(&f) {
                return Some(r);
            }
        }
    }
    None
}

/// A kernel VXLAN device (VNI 100) in a second namespace is the far end: a VM on channel 100
/// resolves its address and pings it; a VM on channel 200 gets no answer.
#[test]
fn the_kernel_vxlan_device_answers_channel_100_only() {
    if !private_netns("the_kernel_vxlan_device_answers_channel_100_only") {
        return;
    }
    veth(A, B);
    let kernel = NamedNetns::new();
    kernel.take("vb", B);
    kernel.ip(&[
        "link", "add", "vx100", "type", "vxlan", "id", "100", "local", B, "remote", A, "dstport",
        "4789", "dev", "vb",
    ]);
    kernel.ip(&["addr", "add", "192.168.100.2/24", "dev", "vx100"]);
    kernel.ip(&["link", "set", "vx100", "up"]);

    let net = Net::new(&[vm("vm1", 100, None), vm("vm3", 200, None)]);
    net.sw
        .add_uplink(carrying(&[100, 200]), vxlan_uplink(A, &[B]))
        .expect("uplink");
    let mut g1 = net.guest("vm1", mac(1));
    let mut g3 = net.guest("vm3", mac(3));

    // Channel 100: ARP, then ping.
    g1.send(&arp_request(mac(1), VM1_IP, KERNEL_IP))
        .expect("send");
    let kernel_mac = await_frame(&mut g1, T, |f| arp_reply_from(f, KERNEL_IP, VM1_IP))
        .expect("the kernel answered vm1's ARP request over VXLAN");
    for seq in 1..=3 {
        g1.send(&echo_request(mac(1), kernel_mac, VM1_IP, KERNEL_IP, seq))
            .expect("send");
        assert!(
            await_frame(&mut g1, T, |f| is_echo_reply(f, KERNEL_IP, VM1_IP, seq)
                .then_some(()))
            .is_some(),
            "echo reply {seq} from the kernel"
        );
    }

    // Channel 200: VNI 200 reaches the kernel, which has no device for it.
    g3.send(&arp_request(mac(3), VM3_IP, KERNEL_IP))
        .expect("send");
    g3.send(&echo_request(mac(3), kernel_mac, VM3_IP, KERNEL_IP, 9))
        .expect("send");
    let answered = await_frame(&mut g3, Duration::from_secs(2), |f| {
        (arp_reply_from(f, KERNEL_IP, VM3_IP).is_some() || is_echo_reply(f, KERNEL_IP, VM3_IP, 9))
            .then_some(())
    });
    assert!(answered.is_none(), "the kernel never answers channel 200");
    assert!(
        drain(&mut g1)
            .iter()
            .all(|f| arp_reply_from(f, KERNEL_IP, VM3_IP).is_none()
                && !is_echo_reply(f, KERNEL_IP, VM3_IP, 9)),
        "nor does anything of it reach channel 100"
    );
}
