//! Real QEMU guests (TCG, the project's own guest image) attached to the `vswitch` binary, checked
//! from inside the guests.
//!
//! - `two_channels_both_roles_then_switch_restart`: vm1 and vm2 on channel 100, vm3 on channel
//!   200, all in one IP subnet. vm1 is a QEMU vhost-user client (switch `mode=listen`), vm2 a QEMU
//!   server (`server=on`, switch `mode=connect`). vm1 and vm2 ping each other and run iperf3;
//!   their drivers negotiated MRG_RXBUF and EVENT_IDX. vm3 reaches neither (ping fails, its ARP
//!   stays unresolved, even a static ARP entry for vm1's MAC gets nothing through) and the
//!   switch's counters account for it. The manager moves vm3 to channel 100 (`vswitch ctl
//!   associate`): it reaches vm1; moved back, it does not. Then the switch is SIGKILLed and
//!   restarted while the guests keep running: connectivity comes back without a guest reboot,
//!   isolation still holds.
//! - `packed_rings_two_channels`: the same three guests with `packed=on` on their NICs: their
//!   drivers negotiate VIRTIO_F_RING_PACKED, vm1 and vm2 ping each other and run iperf3, vm3
//!   reaches neither, and no ring is found malformed. (No switch restart: QEMU restores a packed
//!   ring's position after a backend crash from state it does not keep for vhost rings.)
//! - `guest_restarts`: guests on a listen port and on a connect port, started with the example
//!   launch scripts (`examples/qemu-listen.sh`, `examples/qemu-connect.sh`), are killed and
//!   booted again, five times; each time they reach a peer that stays up.
//!
//! The tests fail (never skip) when QEMU or the guest image is missing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vswitch_tests::{
    qemu_scratch, qemu_scratch_named, GuestConfig, OrPanic, QemuGuest, ScratchDir, SocketRole,
    Stats, Vswitch, VswitchPort, BASE_FEATURES,
};

const BOOT: Duration = Duration::from_secs(240);
const PATH_UP: Duration = Duration::from_secs(90);
const CMD: Duration = Duration::from_secs(60);

const RING_PACKED: u64 = 1 << 34;

const MAC1: &str = "52:54:00:00:64:01";
const MAC2: &str = "52:54:00:00:64:02";
const MAC3: &str = "52:54:00:00:c8:03";
const IP1: &str = "10.0.0.1";
const IP2: &str = "10.0.0.2";
const IP3: &str = "10.0.0.3";

/// The guest's ARP table entry for `ip`: (flags, MAC) from /proc/net/arp, if any.
/// Flags 0x2 = resolved; 0x0 = incomplete or failed.
fn arp_entry(g: &mut QemuGuest, ip: &str) -> Option<(u32, String)> {
    let out = g.run_ok("cat /proc/net/arp", CMD).or_panic();
    out.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 4 && f[0] == ip).then(|| {
            let flags = u32::from_str_radix(f[2].trim_start_matches("0x"), 16).unwrap_or(0);
            (flags, f[3].to_string())
        })
    })
}

/// True if the guest has a resolved (complete) ARP entry for `ip`.
fn arp_resolved(g: &mut QemuGuest, ip: &str) -> bool {
    arp_entry(g, ip).is_some_and(|(flags, _)| flags & 0x2 != 0)
}

/// The guest's count of ICMP echo requests received (`Icmp: InEchos` in /proc/net/snmp).
fn icmp_in_echos(g: &mut QemuGuest) -> u64 {
    let out = g.run_ok("cat /proc/net/snmp", CMD).or_panic();
    let icmp: Vec<&str> = out.lines().filter(|l| l.starts_with("Icmp:")).collect();
    assert!(
        icmp.len() >= 2,
        "{}: no Icmp lines in /proc/net/snmp",
        g.name()
    );
    let names: Vec<&str> = icmp[0].split_whitespace().collect();
    let values: Vec<&str> = icmp[1].split_whitespace().collect();
    let i = names
        .iter()
        .position(|n| *n == "InEchos")
        .unwrap_or_else(|| panic!("no InEchos in {}", icmp[0]));
    values[i]
        .parse()
        .unwrap_or_else(|e| panic!("InEchos {}: {e}", values[i]))
}

/// A ping that must fail (no reply at all).
fn assert_unreachable(g: &mut QemuGuest, ip: &str) {
    let t = Instant::now();
    let ok = g.ping(ip, 2).or_panic();
    assert!(!ok, "{} reached {ip} across channels", g.name());
    eprintln!("{} -> {ip}: no reply ({:.1?})", g.name(), t.elapsed());
}

fn print_stats(what: &str, s: &Stats) {
    eprintln!("--- switch counters {what} ---\n{}", s.summary());
}

/// The two-channel setup: the switch with vm1 (listen) and vm2 (connect) on channel 100 and
/// vm3 (listen) on channel 200, and the three guests, each NIC with `device_opts`, booted in
/// parallel (vm1 and vm3 connect to the switch, vm2 waits for the switch to connect), ready and
/// connected. Returns the scratch dir (keep it), the socket paths, the switch and the guests.
fn three_guests(
    tag: &str,
    device_opts: &str,
) -> (ScratchDir, Vec<PathBuf>, Vswitch, [QemuGuest; 3]) {
    let (dir, socks) = qemu_scratch(tag, 3).or_panic();
    let sw = Vswitch::start(
        dir.path(),
        &[
            VswitchPort::listen("vm1", &socks[0], 100).mac(MAC1),
            VswitchPort::connect("vm2", &socks[1], 100).mac(MAC2),
            VswitchPort::listen("vm3", &socks[2], 200).mac(MAC3),
        ],
    )
    .or_panic();
    let guests = [
        ("vm1", SocketRole::Client, MAC1, "10.0.0.1/24"),
        ("vm2", SocketRole::Server, MAC2, "10.0.0.2/24"),
        ("vm3", SocketRole::Client, MAC3, "10.0.0.3/24"),
    ];
    let cfgs = guests
        .iter()
        .zip(&socks)
        .map(|(&(name, role, mac, ip), sock)| {
            let mut cfg = GuestConfig::new(name).nic(sock, role, mac, ip);
            cfg.nics[0].device_opts = device_opts.into();
            cfg
        });
    let vms = QemuGuest::spawn_ready(cfgs, BOOT).or_panic();
    sw.wait_connected(&["vm1", "vm2", "vm3"], CMD).or_panic();
    let vms = vms.try_into().expect("three guests");
    (dir, socks, sw, vms)
}

#[test]
fn two_channels_both_roles_then_switch_restart() {
    let t0 = Instant::now();
    let (_dir, socks, mut sw, [mut vm1, mut vm2, mut vm3]) = three_guests("qemu-switch", "");

    // --- channel 100: vm1 <-> vm2, both socket roles -------------------------------------------
    let t = vm1.wait_ping(IP2, PATH_UP).or_panic();
    eprintln!(
        "vm1 -> vm2 first reply after {t:.1?} (boot to ping {:.1?})",
        t0.elapsed()
    );
    assert!(vm2.ping(IP1, 3).or_panic(), "vm2 cannot ping vm1");
    assert!(vm1.ping(IP2, 3).or_panic(), "vm1 cannot ping vm2");
    assert!(arp_resolved(&mut vm1, IP2) && arp_resolved(&mut vm2, IP1));

    // The guests' own virtio-net drivers negotiated mergeable RX buffers and EVENT_IDX (and
    // the traffic above and below ran with them).
    for g in [&mut vm1, &mut vm2, &mut vm3] {
        g.require_features(BASE_FEATURES).or_panic();
    }

    vm2.iperf3_server().or_panic();
    let bps = vm1.iperf3_client(IP2, 3, "").or_panic();
    eprintln!(
        "iperf3 TCP vm1 -> vm2 through vswitch: {:.0} Mbit/s",
        bps / 1e6
    );
    assert!(bps > 0.0);

    // --- channel 200: vm3 reaches nobody --------------------------------------------------------
    let before = sw.stats().or_panic();
    let echos1 = icmp_in_echos(&mut vm1);
    let echos2 = icmp_in_echos(&mut vm2);
    assert_unreachable(&mut vm3, IP1);
    assert_unreachable(&mut vm3, IP2);
    for ip in [IP1, IP2] {
        let e = arp_entry(&mut vm3, ip);
        eprintln!("vm3 ARP entry for {ip}: {e:?}");
        assert!(
            !matches!(&e, Some((flags, _)) if flags & 0x2 != 0),
            "vm3 resolved {ip}: {e:?}"
        );
    }
    // vm3's ARP requests (broadcast, flooded) never reached vm1/vm2: they would have learned
    // vm3's address from them.
    for g in [&mut vm1, &mut vm2] {
        let e = arp_entry(g, IP3);
        assert!(e.is_none(), "{} has an ARP entry for vm3: {e:?}", g.name());
    }
    // And the other way: vm1's flooded ARP requests for vm3 do not reach channel 200.
    assert_unreachable(&mut vm1, IP3);
    assert!(!arp_resolved(&mut vm1, IP3));

    // Not even with vm1's MAC known: a unicast frame to it from channel 200 goes nowhere.
    vm3.run_ok(&format!("arp -s {IP1} {MAC1}"), CMD).or_panic();
    assert_eq!(
        arp_entry(&mut vm3, IP1).map(|e| e.1),
        Some(MAC1.to_string())
    );
    assert_unreachable(&mut vm3, IP1);
    assert_eq!(
        icmp_in_echos(&mut vm1),
        echos1,
        "vm1 got echo requests from vm3"
    );
    assert_eq!(
        icmp_in_echos(&mut vm2),
        echos2,
        "vm2 got echo requests from vm3"
    );

    let after = sw.stats().or_panic();
    print_stats("after the isolation checks", &after);
    let (c200_0, c200) = (
        &before.channel(200).or_panic().counters,
        &after.channel(200).or_panic().counters,
    );
    let (p3_0, p3) = (
        &before.port("vm3").or_panic().switch,
        &after.port("vm3").or_panic().switch,
    );
    // vm3's ARP requests (>= 1 per ping run) and the unicast echo requests entered channel 200 ...
    assert!(
        c200.in_frames >= c200_0.in_frames + 4,
        "channel 200 in: {} -> {}",
        c200_0.in_frames,
        c200.in_frames
    );
    // Flooding is planned within the channel only: vm3 is alone on channel 200, so its
    // broadcasts have no destination at all (no flood copies), ...
    assert_eq!(c200.flooded, 0, "flood copies planned on channel 200");
    assert!(p3.in_frames >= p3_0.in_frames + 4);
    // ... and nothing was ever delivered on channel 200 or to vm3.
    assert_eq!(c200.out_frames, 0, "frames delivered on channel 200");
    assert_eq!(p3.out_frames, 0, "frames delivered to vm3");
    assert_eq!(after.port("vm3").or_panic().port["to_guest_frames"], 0);
    // Channel 100 delivered only what its own members sent each other.
    let c100 = &after.channel(100).or_panic().counters;
    let p1 = &after.port("vm1").or_panic().switch;
    let p2 = &after.port("vm2").or_panic().switch;
    assert_eq!(c100.out_frames, p1.out_frames + p2.out_frames);
    assert!(p1.out_frames > 0 && p2.out_frames > 0);
    assert!(
        c100.flooded > 0,
        "vm1/vm2 ARP broadcasts were not flooded on channel 100"
    );
    eprintln!(
        "channel 200: {} frames in ({} flooded), 0 out; channel_mismatch drops: ch100 {}, ch200 {}",
        c200.in_frames,
        c200.flooded,
        c100.dropped("channel_mismatch"),
        c200.dropped("channel_mismatch")
    );

    // --- the manager moves vm3 to channel 100 and back, at run time (vswitch ctl associate) --
    sw.ctl(&["associate", "vm3", "100"]).or_panic();
    let t = vm3.wait_ping(IP1, PATH_UP).or_panic();
    eprintln!("vm3 moved to channel 100: reaches vm1 after {t:.1?}");
    assert!(
        vm1.ping(IP3, 2).or_panic(),
        "vm1 cannot reach vm3 on channel 100"
    );
    sw.ctl(&["associate", "vm3", "200"]).or_panic();
    // Both ARP caches now hold the other's MAC: the unicast frames still go nowhere.
    assert_unreachable(&mut vm3, IP1);
    assert_unreachable(&mut vm1, IP3);
    eprintln!("vm3 back on channel 200: isolated again");

    // --- the switch is killed and restarted under running guests ------------------------------
    for g in [&mut vm1, &mut vm2] {
        g.run_ok("echo before-restart > /tmp/marker", CMD)
            .or_panic();
    }
    let pids = (vm1.pid(), vm2.pid(), vm3.pid());
    let old_pid = sw.pid();
    let t = Instant::now();
    sw.restart().or_panic();
    eprintln!("switch restarted: pid {old_pid:?} -> {:?}", sw.pid());
    sw.wait_connected(&["vm1", "vm2", "vm3"], PATH_UP)
        .or_panic();
    eprintln!("all three frontends reconnected after {:.1?}", t.elapsed());
    let t_ping = vm1.wait_ping(IP2, PATH_UP).or_panic();
    eprintln!(
        "vm1 -> vm2 again {:.1?} after the restart (ping loop {t_ping:.1?})",
        t.elapsed()
    );
    assert!(
        vm2.ping(IP1, 3).or_panic(),
        "vm2 cannot ping vm1 after the restart"
    );
    // Same QEMU processes, same running kernels (no reboot: /tmp survived).
    assert_eq!(pids, (vm1.pid(), vm2.pid(), vm3.pid()));
    for g in [&mut vm1, &mut vm2, &mut vm3] {
        assert!(g.is_running(), "{} exited", g.name());
    }
    for g in [&mut vm1, &mut vm2] {
        let m = g.run_ok("cat /tmp/marker", CMD).or_panic();
        assert_eq!(m.trim(), "before-restart", "{} rebooted", g.name());
    }
    // Traffic after the restart still uses the negotiated features, and isolation holds.
    vm1.iperf3_server().or_panic();
    let bps = vm2.iperf3_client(IP1, 2, "").or_panic();
    eprintln!(
        "iperf3 TCP vm2 -> vm1 after the restart: {:.0} Mbit/s",
        bps / 1e6
    );
    assert_unreachable(&mut vm3, IP1);
    let s = sw.stats().or_panic();
    print_stats("after the restart", &s);
    assert_eq!(s.channel(200).or_panic().counters.out_frames, 0);
    assert!(s.channel(200).or_panic().counters.in_frames > 0);

    for g in [&mut vm1, &mut vm2, &mut vm3] {
        g.kill();
    }
    let status = sw.terminate(Duration::from_secs(10)).or_panic();
    assert!(status.success(), "vswitch exited {status} on SIGTERM");
    for s in [&socks[0], &socks[2]] {
        assert!(!s.exists(), "{} left behind", s.display());
    }
    eprintln!("total {:.1?}", t0.elapsed());
}

#[test]
fn packed_rings_two_channels() {
    let t0 = Instant::now();
    let (_dir, _socks, mut sw, [mut vm1, mut vm2, mut vm3]) =
        three_guests("qemu-packed", "packed=on");
    for g in [&mut vm1, &mut vm2, &mut vm3] {
        let f = g.require_features(BASE_FEATURES).or_panic();
        assert!(
            f & RING_PACKED != 0,
            "{}: RING_PACKED not negotiated ({f:#x})",
            g.name()
        );
    }

    let t = vm1.wait_ping(IP2, PATH_UP).or_panic();
    eprintln!("vm1 -> vm2 over packed rings: first reply after {t:.1?}");
    assert!(vm2.ping(IP1, 3).or_panic(), "vm2 cannot ping vm1");
    vm2.iperf3_server().or_panic();
    let bps = vm1.iperf3_client(IP2, 3, "").or_panic();
    eprintln!(
        "iperf3 TCP vm1 -> vm2, packed rings: {:.0} Mbit/s",
        bps / 1e6
    );
    assert!(bps > 0.0);

    let echos1 = icmp_in_echos(&mut vm1);
    assert_unreachable(&mut vm3, IP1);
    assert_unreachable(&mut vm3, IP2);
    assert_unreachable(&mut vm1, IP3);
    assert_eq!(
        icmp_in_echos(&mut vm1),
        echos1,
        "vm1 got echo requests from vm3"
    );

    let s = sw.stats().or_panic();
    print_stats("packed rings", &s);
    assert_eq!(s.channel(200).or_panic().counters.out_frames, 0);
    assert!(s.channel(200).or_panic().counters.in_frames > 0);
    assert_eq!(s.port("vm3").or_panic().port["to_guest_frames"], 0);
    for n in ["vm1", "vm2", "vm3"] {
        let p = &s.port(n).or_panic().port;
        for c in ["tx_bad_descriptor", "rx_bad_descriptor", "tx_ring_broken"] {
            assert_eq!(p.get(c).copied(), Some(0), "{n}: {c}");
        }
    }
    for g in [&mut vm1, &mut vm2, &mut vm3] {
        g.kill();
    }
    let status = sw.terminate(Duration::from_secs(10)).or_panic();
    assert!(status.success(), "vswitch exited {status} on SIGTERM");
    eprintln!("total {:.1?}", t0.elapsed());
}

#[test]
fn guest_restarts() {
    const CYCLES: u32 = 5;
    let t0 = Instant::now();
    let (dir, socks) = qemu_scratch_named("qemu-restarts", &["peer", "a", "b"]).or_panic();
    let [sp, sa, sb] = &socks[..] else {
        unreachable!("three sockets")
    };
    let (mac_p, mac_a, mac_b) = (
        "52:54:00:00:65:01",
        "52:54:00:00:65:0a",
        "52:54:00:00:65:0b",
    );
    let sw = Vswitch::start(
        dir.path(),
        &[
            VswitchPort::listen("peer", sp, 101).mac(mac_p),
            VswitchPort::listen("a", sa, 101).mac(mac_a),
            VswitchPort::connect("b", sb, 101).mac(mac_b),
        ],
    )
    .or_panic();
    let mut peer = QemuGuest::boot("peer", sp, SocketRole::Client, mac_p, "10.0.1.1/24").or_panic();

    for cycle in 1..=CYCLES {
        let t = Instant::now();
        // "a" is a QEMU client of a listen port, "b" a QEMU server the switch connects to,
        // both started with the example launch scripts (examples/qemu-listen.sh and
        // examples/qemu-connect.sh), as a user would.
        let boot = |name: String, sock: &Path, role, mac: &str, ip: &str| {
            let mut cfg = GuestConfig::new(&name).nic(sock, role, mac, ip);
            cfg.via_example_script = true;
            QemuGuest::spawn(cfg).or_panic()
        };
        let mut a = boot(
            format!("a{cycle}"),
            sa,
            SocketRole::Client,
            mac_a,
            "10.0.1.10/24",
        );
        let mut b = boot(
            format!("b{cycle}"),
            sb,
            SocketRole::Server,
            mac_b,
            "10.0.1.11/24",
        );
        peer.wait_ready(BOOT).or_panic();
        a.wait_ready(BOOT).or_panic();
        b.wait_ready(BOOT).or_panic();
        let ta = a.wait_ping("10.0.1.1", PATH_UP).or_panic();
        let tb = b.wait_ping("10.0.1.1", PATH_UP).or_panic();
        // The peer reaches the new incarnations too (its ARP cache may hold the old entries:
        // same MACs, so they stay valid).
        assert!(
            peer.ping("10.0.1.10", 1).or_panic(),
            "cycle {cycle}: peer -> a"
        );
        assert!(
            peer.ping("10.0.1.11", 1).or_panic(),
            "cycle {cycle}: peer -> b"
        );
        let s = sw.stats().or_panic();
        let conns = |n: &str| s.port(n).or_panic().port.get("connections").copied();
        eprintln!(
            "cycle {cycle}: a and b reach the peer ({ta:.1?} / {tb:.1?} after ready; cycle \
             {:.1?}); connections a={:?} b={:?}; switch fds {:?}",
            t.elapsed(),
            conns("a"),
            conns("b"),
            sw.open_fds()
        );
        // Each incarnation is one new connection on each port.
        assert_eq!(conns("a"), Some(u64::from(cycle)));
        assert_eq!(conns("b"), Some(u64::from(cycle)));
        // SIGKILL: QEMU goes away without any vhost-user goodbye.
        a.kill();
        b.kill();
    }
    let s = sw.stats().or_panic();
    print_stats("after the restarts", &s);
    for n in ["a", "b"] {
        let p = s.port(n).or_panic();
        assert!(
            p.switch.in_frames > 0 && p.switch.out_frames > 0,
            "{n}: {p:?}"
        );
    }
    eprintln!("{CYCLES} restart cycles in {:.1?}", t0.elapsed());
}
