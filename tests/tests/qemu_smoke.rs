//! Harness self-test: two real QEMU guests (TCG) joined by DPDK testpmd's vhost-user io
//! forwarding. Guest A is a QEMU vhost-user *client* (testpmd listens, `client=0`), guest B a
//! QEMU *server* (testpmd connects, `client=1`). They ping each other and the harness reads the
//! feature bits the guest driver negotiated.
//!
//! Not a test of the switch (it does not use it): it proves the guest image, the QEMU command
//! line and the harness work. It fails, never skips, when QEMU or testpmd is missing.

use std::time::{Duration, Instant};
use vswitch_tests::{
    find_binary, guest_assets, virtio_net_feature_names, QemuGuest, ScratchDir, SocketRole,
    Testpmd, TestpmdPort,
};

const BOOT: Duration = Duration::from_secs(180);

// virtio-net feature bits the guest must have negotiated with testpmd.
const VERSION_1: u64 = 1 << 32;
const MRG_RXBUF: u64 = 1 << 15;
const EVENT_IDX: u64 = 1 << 29;

#[test]
fn two_guests_ping_through_testpmd() {
    for bin in ["qemu-system-x86_64", "dpdk-testpmd"] {
        if let Err(e) = find_binary(bin) {
            panic!("the QEMU harness self-test needs {bin}: {e:#}");
        }
    }
    let assets = guest_assets().unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!(
        "guest kernel {} ({})",
        assets.kernel.display(),
        assets.kernel_kind
    );

    let dir = ScratchDir::new("qemu-smoke").unwrap();
    let sock_a = dir.socket_path("a.sock").unwrap(); // testpmd listens, QEMU A connects
    let sock_b = dir.socket_path("b.sock").unwrap(); // QEMU B listens, testpmd connects

    let t0 = Instant::now();
    let tp = Testpmd::spawn(
        dir.path(),
        &[TestpmdPort::listen(&sock_a), TestpmdPort::connect(&sock_b)],
        "0-1",
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let mut a = QemuGuest::boot(
        "guest-a",
        &sock_a,
        SocketRole::Client,
        "52:54:00:00:00:0a",
        "10.0.0.1/24",
    )
    .unwrap();
    let mut b = QemuGuest::boot(
        "guest-b",
        &sock_b,
        SocketRole::Server,
        "52:54:00:00:00:0b",
        "10.0.0.2/24",
    )
    .unwrap();

    let ready_a = a.wait_ready(BOOT).unwrap_or_else(|e| panic!("{e:#}"));
    let ready_b = b.wait_ready(BOOT).unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("guest-a ready after {ready_a:.1?}, guest-b after {ready_b:.1?}");

    let first = a
        .wait_ping("10.0.0.2", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e:#}\n--- testpmd ---\n{}", tp.output()));
    let boot_to_ping = t0.elapsed();
    eprintln!("first ping reply {first:.1?} after ready; boot-to-ping {boot_to_ping:.1?}");

    assert!(
        b.ping("10.0.0.1", 3).unwrap(),
        "guest-b cannot ping guest-a"
    );
    assert!(
        a.ping("10.0.0.2", 3).unwrap(),
        "guest-a cannot ping guest-b"
    );

    for g in [&mut a, &mut b] {
        let f = g.features().unwrap();
        eprintln!(
            "{} negotiated features {f:#018x}: {}",
            g.name(),
            virtio_net_feature_names(f).join(" ")
        );
        for (bit, name) in [
            (VERSION_1, "VERSION_1"),
            (MRG_RXBUF, "MRG_RXBUF"),
            (EVENT_IDX, "RING_EVENT_IDX"),
        ] {
            assert!(
                f & bit != 0,
                "{}: {name} not negotiated (features {f:#x})",
                g.name()
            );
        }
    }

    // iperf3 in the image works (TCP through testpmd).
    b.iperf3_server().unwrap();
    let bps = a.iperf3_client("10.0.0.2", 2, "").unwrap();
    eprintln!("iperf3 guest-a -> guest-b: {:.0} Mbit/s", bps / 1e6);
    assert!(bps > 0.0);

    // The harness itself: exit codes and output come back intact.
    let (rc, out) = a
        .run("echo hello; echo err >&2; exit 3", Duration::from_secs(30))
        .unwrap();
    assert_eq!(rc, 3);
    assert_eq!(out, "hello\nerr\n");
    let (rc, out) = a.run("if then", Duration::from_secs(30)).unwrap();
    assert_ne!(rc, 0, "syntax error must fail: {out}");
    assert_eq!(
        a.run("true", Duration::from_secs(30)).unwrap(),
        (0, String::new())
    );

    a.kill();
    b.kill();
    let stats = tp.stop().unwrap();
    eprintln!(
        "{}",
        stats
            .lines()
            .filter(|l| l.contains("RX-packets") || l.contains("TX-packets"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
