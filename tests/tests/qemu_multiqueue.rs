//! Multiqueue with real QEMU guests (TCG, the project's guest image) on the `vswitch` binary
//! (docs/multiqueue.md).
//!
//! `two_queue_pairs_carry_traffic_both_ways`: vm1 and vm2 on channel 100 have two vCPUs and two
//! queue pairs each (`queues=2` on the switch's ports, `-netdev vhost-user,...,queues=2
//! -device virtio-net-pci,mq=on,vectors=0`; MSI-X stays off, see the guests note), so their
//! Linux driver enables both pairs (one per CPU) and transmits on the queue of the CPU it runs
//! on. Pings pinned to each CPU and iperf3 TCP with four streams in each direction cross the
//! switch; afterwards the switch's counters of BOTH queue pairs of both guests are non-zero in
//! each direction (from the guest's TX queue, into its RX queue: the switch's flow hash spreads
//! the streams). The counters are printed. vm3, on channel 200 with one queue pair, still
//! reaches nobody and is delivered nothing.
//!
//! The test fails (never skips) when QEMU or the guest image is missing.

use std::time::{Duration, Instant};
use vswitch_tests::{qemu_scratch, GuestConfig, OrPanic, QemuGuest, Stats, Vswitch, VswitchPort};

const BOOT: Duration = Duration::from_secs(300);
const PATH_UP: Duration = Duration::from_secs(90);
const IPERF_SECS: u32 = 5;
const QUEUES: u16 = 2;

const MAC: [&str; 3] = [
    "52:54:00:00:65:11",
    "52:54:00:00:65:12",
    "52:54:00:00:c9:13",
];
const IP: [&str; 3] = ["10.0.1.11", "10.0.1.12", "10.0.1.13"];

/// One queue pair's counters of a port, from `ctl stats --json`'s `queues` list.
#[derive(Debug, Default, Clone, Copy)]
struct Pair {
    from_guest: u64,
    to_guest: u64,
}

fn pairs(s: &Stats, port: &str) -> Vec<Pair> {
    let p = s.raw["ports"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == port))
        .unwrap_or_else(|| panic!("no port {port} in the stats"));
    let queues = p["queues"]
        .as_array()
        .unwrap_or_else(|| panic!("{port}: no queues list in the stats: {p}"));
    queues
        .iter()
        .map(|q| Pair {
            from_guest: q["from_guest_frames"].as_u64().unwrap_or(0),
            to_guest: q["to_guest_frames"].as_u64().unwrap_or(0),
        })
        .collect()
}

#[test]
fn two_queue_pairs_carry_traffic_both_ways() {
    let (dir, socks) = qemu_scratch("qemu-mq", 3).or_panic();
    let sw = Vswitch::start(
        dir.path(),
        &[
            VswitchPort::listen("vm1", &socks[0], 100)
                .mac(MAC[0])
                .queues(QUEUES),
            VswitchPort::listen("vm2", &socks[1], 100)
                .mac(MAC[1])
                .queues(QUEUES),
            VswitchPort::listen("vm3", &socks[2], 200).mac(MAC[2]),
        ],
    )
    .or_panic();
    let mut cfgs = GuestConfig::client_vms(&socks, &MAC, &IP);
    for cfg in &mut cfgs[..2] {
        cfg.cpus = u32::from(QUEUES);
        cfg.nics[0].queues = QUEUES;
    }
    let mut vms = QemuGuest::spawn_ready(cfgs, BOOT).or_panic();
    sw.wait_connected(&["vm1", "vm2", "vm3"], Duration::from_secs(60))
        .or_panic();
    let [vm1, vm2, vm3] = &mut vms[..] else {
        unreachable!("three guests")
    };

    // The guests' driver uses both pairs (Linux enables min(CPUs, pairs) by default).
    for g in [&mut *vm1, &mut *vm2] {
        let q = g
            .run_ok("ls /sys/class/net/eth0/queues", Duration::from_secs(30))
            .or_panic();
        eprintln!(
            "{}: eth0 queues: {}",
            g.name(),
            q.split_whitespace().collect::<Vec<_>>().join(" ")
        );
        assert!(
            q.contains("rx-1") && q.contains("tx-1"),
            "{}: the driver did not enable the second queue pair: {q}",
            g.name()
        );
    }

    let t = Instant::now();
    vm1.wait_ping(IP[1], PATH_UP).or_panic();
    eprintln!("path up after {:.1?}", t.elapsed());

    // Traffic from each vCPU of each guest (its TX queue is its CPU's), and several TCP
    // streams each way (the switch spreads them over the receiver's RX queues).
    for (g, peer) in [(&mut *vm1, IP[1]), (&mut *vm2, IP[0])] {
        g.run_ok(
            &format!(
                "taskset 1 ping -c 5 -i 0.2 -q {peer} >/dev/null; \
                 taskset 2 ping -c 5 -i 0.2 -q {peer} >/dev/null"
            ),
            Duration::from_secs(60),
        )
        .or_panic();
    }
    vm2.iperf3_server().or_panic();
    let up = vm1
        .iperf3_client(IP[1], IPERF_SECS, "-P 4 --cport 41000")
        .or_panic();
    vm2.iperf3_server().or_panic();
    let down = vm1
        .iperf3_client(IP[1], IPERF_SECS, "-P 4 --cport 42000 -R")
        .or_panic();
    eprintln!(
        "iperf3 TCP, 4 streams: vm1 -> vm2 {:.0} Mbit/s, vm2 -> vm1 {:.0} Mbit/s",
        up / 1e6,
        down / 1e6
    );

    let s = sw.stats().or_panic();
    eprintln!("--- switch counters ---\n{}", s.summary());
    eprintln!("--- per queue pair (frames from the guest's TX queue / into its RX queue) ---");
    for port in ["vm1", "vm2"] {
        let q = pairs(&s, port);
        for (k, p) in q.iter().enumerate() {
            eprintln!(
                "{port} queue pair {k}: from guest {} frames, to guest {} frames",
                p.from_guest, p.to_guest
            );
        }
        assert_eq!(q.len(), usize::from(QUEUES), "{port}: {q:?}");
        for (k, p) in q.iter().enumerate() {
            assert!(
                p.from_guest > 0,
                "{port}: nothing taken from TX queue pair {k}: {q:?}"
            );
            assert!(
                p.to_guest > 0,
                "{port}: nothing delivered into RX queue pair {k}: {q:?}"
            );
        }
    }
    let q3 = pairs(&s, "vm3");
    assert_eq!(q3.len(), 1, "vm3 has one queue pair: {q3:?}");

    // Isolation holds across queues: vm3 (channel 200) reaches nobody and receives nothing.
    for ip in &IP[..2] {
        assert!(
            !vm3.ping(ip, 2).or_panic(),
            "vm3 reached {ip} across channels"
        );
    }
    let s = sw.stats().or_panic();
    let vm3_in = s.port("vm3").or_panic().switch.out_frames;
    assert_eq!(vm3_in, 0, "frames were delivered to vm3 on channel 200");
}
