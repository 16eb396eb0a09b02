//! Checksum and segmentation offloads with real QEMU guests (TCG, the project's guest image)
//! on the `vswitch` binary (docs/offloads.md).
//!
//! `offloads_between_guests_and_software_fallback`: vm1 and vm2 on channel 100 negotiate CSUM,
//! GUEST_CSUM, HOST_TSO4/6 and GUEST_TSO4/6 (read from the guests' own sysfs feature bits);
//! vm3 on channel 100 runs with every offload off (`csum=off,guest_csum=off,...`); vm4 is on
//! channel 200. iperf3 TCP vm1 → vm2 runs with TSO frames crossing whole (the switch's
//! counters show frames far longer than the MTU), vm1 → vm3 through the switch's software
//! segmentation, vm3 → vm1 from a sender without offloads (the path every frame took before
//! offloads); no frame is dropped for its header, and vm4 still reaches nobody. The figures
//! are printed; the test asserts only that traffic flowed (performance belongs to the
//! benchmark).
//!
//! The test fails (never skips) when QEMU or the guest image is missing.

use std::time::{Duration, Instant};
use vswitch_tests::{qemu_scratch, GuestConfig, OrPanic, QemuGuest, Stats, Vswitch, VswitchPort};

const BOOT: Duration = Duration::from_secs(300);
const PATH_UP: Duration = Duration::from_secs(90);
const IPERF_SECS: u32 = 10;

const CSUM: u64 = 1 << 0;
const GUEST_CSUM: u64 = 1 << 1;
const GUEST_TSO4: u64 = 1 << 7;
const GUEST_TSO6: u64 = 1 << 8;
const HOST_TSO4: u64 = 1 << 11;
const HOST_TSO6: u64 = 1 << 12;
const OFFLOADS: u64 = CSUM | GUEST_CSUM | GUEST_TSO4 | GUEST_TSO6 | HOST_TSO4 | HOST_TSO6;

/// Every offload the QEMU 7.2 virtio-net device has, off.
const NO_OFFLOADS: &str = "csum=off,guest_csum=off,host_tso4=off,host_tso6=off,host_ecn=off,\
                           host_ufo=off,guest_tso4=off,guest_tso6=off,guest_ecn=off,guest_ufo=off";

const MAC: [&str; 4] = [
    "52:54:00:00:64:11",
    "52:54:00:00:64:12",
    "52:54:00:00:64:13",
    "52:54:00:00:c8:14",
];
const IP: [&str; 4] = ["10.0.0.11", "10.0.0.12", "10.0.0.13", "10.0.0.14"];

fn port_counter(s: &Stats, port: &str, name: &str) -> u64 {
    s.port(port).or_panic().port.get(name).copied().unwrap_or(0)
}

/// Runs iperf3 from `client` to `server` and prints the figure.
fn iperf(client: &mut QemuGuest, server: &mut QemuGuest, server_ip: &str, what: &str) -> f64 {
    server.iperf3_server().or_panic();
    let bps = client.iperf3_client(server_ip, IPERF_SECS, "").or_panic();
    eprintln!(
        "iperf3 TCP {} -> {} ({what}): {:.0} Mbit/s",
        client.name(),
        server.name(),
        bps / 1e6
    );
    bps
}

#[test]
fn offloads_between_guests_and_software_fallback() {
    let (dir, socks) = qemu_scratch("qemu-offloads", 4).or_panic();
    let sw = Vswitch::start(
        dir.path(),
        &[
            VswitchPort::listen("vm1", &socks[0], 100).mac(MAC[0]),
            VswitchPort::listen("vm2", &socks[1], 100).mac(MAC[1]),
            VswitchPort::listen("vm3", &socks[2], 100).mac(MAC[2]),
            VswitchPort::listen("vm4", &socks[3], 200).mac(MAC[3]),
        ],
    )
    .or_panic();
    let mut cfgs = GuestConfig::client_vms(&socks, &MAC, &IP);
    cfgs[2].nics[0].device_opts = NO_OFFLOADS.into();
    let mut vms = QemuGuest::spawn_ready(cfgs, BOOT).or_panic();
    sw.wait_connected(&["vm1", "vm2", "vm3", "vm4"], Duration::from_secs(60))
        .or_panic();
    let [vm1, vm2, vm3, vm4] = &mut vms[..] else {
        unreachable!("four guests")
    };

    // Negotiated, as each guest's driver sees it.
    for g in [&mut *vm1, &mut *vm2, &mut *vm4] {
        let f = g.logged_features().or_panic();
        assert_eq!(
            f & OFFLOADS,
            OFFLOADS,
            "{}: offloads not negotiated",
            g.name()
        );
    }
    let f3 = vm3.logged_features().or_panic();
    assert_eq!(f3 & OFFLOADS, 0, "vm3 must run without offloads");

    let t = Instant::now();
    vm1.wait_ping(IP[1], PATH_UP).or_panic();
    vm1.wait_ping(IP[2], PATH_UP).or_panic();
    eprintln!("paths up after {:.1?}", t.elapsed());

    // vm1 -> vm2: TSO frames cross whole.
    let before = sw.stats().or_panic();
    let with = iperf(vm1, vm2, IP[1], "offloads both ends");
    let after = sw.stats().or_panic();
    let delta = |port: &str, name: &str| {
        port_counter(&after, port, name) - port_counter(&before, port, name)
    };
    let sent = delta("vm1", "from_guest_bytes") / delta("vm1", "from_guest_frames").max(1);
    let got = delta("vm2", "to_guest_bytes") / delta("vm2", "to_guest_frames").max(1);
    eprintln!("vm1 sent frames of {sent} bytes on average, vm2 received {got}");
    assert!(with > 0.0);
    assert!(
        sent > 3000,
        "vm1's frames average {sent} bytes: it did not use TSO"
    );
    assert!(
        got > 3000,
        "vm2's frames average {got} bytes: TSO frames did not cross whole"
    );

    // vm1 -> vm3: the switch segments for a guest without offloads.
    let soft = iperf(vm1, vm3, IP[2], "software segmentation for vm3");
    assert!(soft > 0.0);
    // vm3 -> vm1: a sender without offloads (every frame checksummed and cut in the guest).
    let plain = iperf(vm3, vm1, IP[0], "sender without offloads");
    assert!(plain > 0.0);

    let s = sw.stats().or_panic();
    eprintln!("--- switch counters ---\n{}", s.summary());
    for p in ["vm1", "vm2", "vm3"] {
        assert_eq!(
            s.port(p).or_panic().switch.dropped("bad_offload"),
            0,
            "{p}: frames refused for their header"
        );
    }

    // vm4 (channel 200) reaches nobody.
    for ip in &IP[..3] {
        assert!(
            !vm4.ping(ip, 2).or_panic(),
            "vm4 reached {ip} across channels"
        );
    }
    eprintln!(
        "summary: offloads {:.0} Mbit/s, software segmentation {:.0} Mbit/s, no offloads {:.0} Mbit/s",
        with / 1e6,
        soft / 1e6,
        plain / 1e6
    );
}
