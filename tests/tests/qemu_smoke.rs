//! Harness self-test: two real QEMU guests (TCG) joined by DPDK testpmd's vhost-user io
//! forwarding. Guest A is a QEMU vhost-user *client* (testpmd listens, `client=0`), guest B a
//! QEMU *server* (testpmd connects, `client=1`). They ping each other and the harness reads the
//! feature bits the guest driver negotiated.
//!
//! Not a test of the switch (it does not use it): it proves the guest image, the QEMU command
//! line and the harness work. It fails, never skips, when QEMU or testpmd is missing.

use std::time::{Duration, Instant};
use vswitch_tests::{
    find_binary, qemu_scratch_named, OrPanic, QemuGuest, SocketRole, Testpmd, TestpmdPort,
    BASE_FEATURES,
};

const BOOT: Duration = Duration::from_secs(180);

#[test]
fn two_guests_ping_through_testpmd() {
    if let Err(e) = find_binary("dpdk-testpmd") {
        panic!("the QEMU harness self-test needs dpdk-testpmd: {e:#}");
    }
    // a.sock: testpmd listens, QEMU A connects; b.sock: QEMU B listens, testpmd connects.
    let (dir, socks) = qemu_scratch_named("qemu-smoke", &["a", "b"]).or_panic();
    let [sock_a, sock_b] = &socks[..] else {
        unreachable!("two sockets")
    };

    let t0 = Instant::now();
    let tp = Testpmd::spawn(
        dir.path(),
        &[TestpmdPort::listen(sock_a), TestpmdPort::connect(sock_b)],
        "0-1",
    )
    .or_panic();
    let mut a = QemuGuest::boot(
        "guest-a",
        sock_a,
        SocketRole::Client,
        "52:54:00:00:00:0a",
        "10.0.0.1/24",
    )
    .or_panic();
    let mut b = QemuGuest::boot(
        "guest-b",
        sock_b,
        SocketRole::Server,
        "52:54:00:00:00:0b",
        "10.0.0.2/24",
    )
    .or_panic();

    let ready_a = a.wait_ready(BOOT).or_panic();
    let ready_b = b.wait_ready(BOOT).or_panic();
    eprintln!("guest-a ready after {ready_a:.1?}, guest-b after {ready_b:.1?}");

    let first = a
        .wait_ping("10.0.0.2", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e:#}\n--- testpmd ---\n{}", tp.output()));
    let boot_to_ping = t0.elapsed();
    eprintln!("first ping reply {first:.1?} after ready; boot-to-ping {boot_to_ping:.1?}");

    assert!(
        b.ping("10.0.0.1", 3).or_panic(),
        "guest-b cannot ping guest-a"
    );
    assert!(
        a.ping("10.0.0.2", 3).or_panic(),
        "guest-a cannot ping guest-b"
    );

    for g in [&mut a, &mut b] {
        g.require_features(BASE_FEATURES).or_panic();
    }

    // iperf3 in the image works (TCP through testpmd).
    b.iperf3_server().or_panic();
    let bps = a.iperf3_client("10.0.0.2", 2, "").or_panic();
    eprintln!("iperf3 guest-a -> guest-b: {:.0} Mbit/s", bps / 1e6);
    assert!(bps > 0.0);

    // The harness itself: exit codes and output come back intact.
    let (rc, out) = a
        .run("echo hello; echo err >&2; exit 3", Duration::from_secs(30))
        .or_panic();
    assert_eq!(rc, 3);
    assert_eq!(out, "hello\nerr\n");
    let (rc, out) = a.run("if then", Duration::from_secs(30)).or_panic();
    assert_ne!(rc, 0, "syntax error must fail: {out}");
    assert_eq!(
        a.run("true", Duration::from_secs(30)).or_panic(),
        (0, String::new())
    );

    a.kill();
    b.kill();
    let stats = tp.stop().or_panic();
    eprintln!(
        "{}",
        stats
            .lines()
            .filter(|l| l.contains("RX-packets") || l.contains("TX-packets"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
