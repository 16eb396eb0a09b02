//! The VXLAN uplink on a real network: switches in network namespaces the test creates, joined
//! by a veth pair, guests on channels 100 and 200 behind each. The channel travels as the VNI;
//! frames cross on their own channel only, byte for byte; datagrams forged or broken on the
//! wire are dropped and counted by the transport, never delivered to another channel; and the
//! Linux kernel's own VXLAN device is a working far end on channel 100 and unreachable from
//! channel 200.
//!
//! Needs root (network namespaces); each test skips with one line otherwise.

mod common;

use common::vxlan_net::*;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use common::{drain, eth, mac, vm, Net, BCAST};
use vswitch::counters::Drops;
use vswitch::uplink::vxlan::Vxlan;
use vswitch::uplink::VXLAN_PORT;
use vswitch_testguest::{EthFrame, TestGuest};

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
