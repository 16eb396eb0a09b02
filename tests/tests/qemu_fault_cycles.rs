//! Fault cycles with real QEMU guests (TCG, the project's guest image) and the `vswitch`
//! binary. See docs/fault-cycles.md.
//!
//! - `switch_sigkilled_twenty_times_under_running_guests`: two guests on channel 100, `a` a
//!   QEMU vhost-user client of a `mode=listen` port (`reconnect=1`), `b` a QEMU server
//!   (`server=on`) the switch connects to. The switch is SIGKILLed and started again 20 times
//!   while the guests keep running: each time both frontends come back (QEMU reconnects to the
//!   new switch's socket, which replaced the stale one the killed switch left; the new switch
//!   connects to `b`) and `a` and `b` ping each other through it, with no guest reboot.
//!   Each incarnation's descriptors, threads and memory are read at the same point (both
//!   guests reconnected, pinged both ways): the last must match the first.
//! - `guests_sigkilled_ten_times`: a peer guest stays up on a listen port; ten times a guest is
//!   booted, pings the peer and is pinged by it, and is SIGKILLed, alternating a listen-port
//!   guest (QEMU client) and a connect-port guest (QEMU server). The switch process's
//!   descriptors and threads are exactly back after the cycles, its memory within tolerance
//!   (read after each kill, once the switch saw the disconnect).
//!
//! The tests fail (never skip) when QEMU or the guest image is missing.

use std::time::{Duration, Instant};
use vswitch_tests::{
    qemu_scratch_named, MemTolerance, OrPanic, ProcUsage, QemuGuest, SocketRole, Vswitch,
    VswitchPort,
};

const BOOT: Duration = Duration::from_secs(240);
const PATH_UP: Duration = Duration::from_secs(90);
const SETTLE: Duration = Duration::from_secs(20);

/// `a` and `b` reach each other through the switch: `a` pings until `b` answers (the path may
/// need a moment after a reconnect), then `b` pings `a`.
fn ping_both_ways(a: &mut QemuGuest, b: &mut QemuGuest, ip_a: &str, ip_b: &str) -> Duration {
    let t = a.wait_ping(ip_b, PATH_UP).or_panic();
    assert!(
        b.ping(ip_a, 1).or_panic(),
        "{} cannot ping {ip_a}",
        b.name()
    );
    t
}

#[test]
fn switch_sigkilled_twenty_times_under_running_guests() {
    const RESTARTS: u32 = 20;
    const MAC_A: &str = "52:54:00:00:66:0a";
    const MAC_B: &str = "52:54:00:00:66:0b";
    const IP_A: &str = "10.0.2.10";
    const IP_B: &str = "10.0.2.11";
    let t0 = Instant::now();
    let (dir, socks) = qemu_scratch_named("qemu-sw-kill", &["a", "b"]).or_panic();
    let [sa, sb] = &socks[..] else {
        unreachable!("two sockets")
    };
    let mut sw = Vswitch::start(
        dir.path(),
        &[
            VswitchPort::listen("a", sa, 100).mac(MAC_A),
            VswitchPort::connect("b", sb, 100).mac(MAC_B),
        ],
    )
    .or_panic();
    let mut a = QemuGuest::boot("a", sa, SocketRole::Client, MAC_A, "10.0.2.10/24").or_panic();
    let mut b = QemuGuest::boot("b", sb, SocketRole::Server, MAC_B, "10.0.2.11/24").or_panic();
    for g in [&mut a, &mut b] {
        let t = g.wait_ready(BOOT).or_panic();
        eprintln!("{} ready after {t:.1?}", g.name());
    }
    sw.wait_connected(&["a", "b"], PATH_UP).or_panic();
    let t = ping_both_ways(&mut a, &mut b, IP_A, IP_B);
    eprintln!("a <-> b through the first switch (first reply after {t:.1?})");
    let pids = (a.pid(), b.pid());
    for g in [&mut a, &mut b] {
        g.run_ok("echo up > /tmp/marker", PATH_UP).or_panic();
    }
    let first = ProcUsage::steady(
        sw.pid().expect("running"),
        Duration::from_millis(200),
        SETTLE,
    )
    .or_panic();
    eprintln!("first switch, guests connected: {first}");

    let mut last = first;
    for cycle in 1..=RESTARTS {
        let t = Instant::now();
        let old = sw.pid();
        // SIGKILL: the socket file of port `a` stays behind, stale; the new switch replaces it.
        sw.restart()
            .unwrap_or_else(|e| panic!("restart {cycle}: {e:#}"));
        sw.wait_connected(&["a", "b"], PATH_UP)
            .unwrap_or_else(|e| panic!("restart {cycle}: {e:#}"));
        let t_conn = t.elapsed();
        let t_ping = ping_both_ways(&mut a, &mut b, IP_A, IP_B);
        let pid = sw.pid().expect("running");
        last = ProcUsage::steady(pid, Duration::from_millis(200), SETTLE).or_panic();
        eprintln!(
            "restart {cycle}: pid {old:?} -> {pid}; both reconnected after {t_conn:.1?}, a <-> b \
             after {:.1?} (ping loop {t_ping:.1?}); {last}",
            t.elapsed()
        );
    }

    // Same QEMU processes, same running kernels: /tmp survived.
    assert_eq!(pids, (a.pid(), b.pid()));
    for g in [&mut a, &mut b] {
        assert!(g.is_running(), "{} exited", g.name());
        let m = g.run_ok("cat /tmp/marker", PATH_UP).or_panic();
        assert_eq!(m.trim(), "up", "{} rebooted", g.name());
    }
    eprintln!(
        "switch kill -9 cycles: {RESTARTS} restarts under 2 running guests in {:.1?}\n  first \
         switch:              {first}\n  after {RESTARTS} restarts:        {last}",
        t0.elapsed()
    );
    // Each incarnation is a fresh process: what could pile up is what outlives one (the
    // sockets, the guests' side). The last one, at the same point, looks like the first.
    last.check_flat(&first, RESTART_TOLERANCE).or_panic();
    let s = sw.stats().or_panic();
    eprintln!("--- counters of the last switch ---\n{}", s.summary());
    for n in ["a", "b"] {
        let p = s.port(n).or_panic();
        assert!(
            p.switch.in_frames > 0 && p.switch.out_frames > 0,
            "{n}: {p:?}"
        );
    }
    for g in [&mut a, &mut b] {
        g.kill();
    }
    let status = sw.terminate(Duration::from_secs(10)).or_panic();
    assert!(status.success(), "vswitch exited {status} on SIGTERM");
}

/// Memory of the last switch incarnation against the first. Both serve the same two guests
/// (256 MiB each, mapped whole: VmSize) and have touched a few of their pages (RX buffers,
/// rings: VmRSS shared memory); how many depends on the traffic each saw, a few hundred KiB.
/// Two guests' mappings are 512 MiB of VmSize: a switch that mapped a guest's memory twice
/// (say, a stale table kept across a reconnect) is far over.
const RESTART_TOLERANCE: MemTolerance = MemTolerance {
    rss_kib: 2048,
    vm_size_kib: 8 * 1024,
};

/// Switch memory growth allowed across the guest cycles after warm-up. Each guest's 256 MiB
/// is mapped whole into the switch while it is connected: one leaked mapping is 32 times the
/// VmSize tolerance. A leaked per-connection buffer of 64 KiB (touched) per cycle would be
/// 512 KiB of VmRSS over the 8 measured cycles, over its tolerance; allocator noise is well
/// under it (docs/fault-cycles.md).
const GUEST_TOLERANCE: MemTolerance = MemTolerance {
    rss_kib: 384,
    vm_size_kib: 8 * 1024,
};

#[test]
fn guests_sigkilled_ten_times() {
    const CYCLES: u32 = 10;
    /// Cycles before the baseline: one guest of each role has come and gone.
    const WARMUP: u32 = 2;
    const MAC_P: &str = "52:54:00:00:67:01";
    const MAC_A: &str = "52:54:00:00:67:0a";
    const MAC_B: &str = "52:54:00:00:67:0b";
    const IP_P: &str = "10.0.3.1";
    let t0 = Instant::now();
    let (dir, socks) = qemu_scratch_named("qemu-guest-kill", &["peer", "a", "b"]).or_panic();
    let [sp, sa, sb] = &socks[..] else {
        unreachable!("three sockets")
    };
    let sw = Vswitch::start(
        dir.path(),
        &[
            VswitchPort::listen("peer", sp, 100).mac(MAC_P),
            VswitchPort::listen("a", sa, 100).mac(MAC_A),
            VswitchPort::connect("b", sb, 100).mac(MAC_B),
        ],
    )
    .or_panic();
    let pid = sw.pid().expect("running");
    let mut peer = QemuGuest::boot("peer", sp, SocketRole::Client, MAC_P, "10.0.3.1/24").or_panic();

    let mut baseline: Option<ProcUsage> = None;
    for cycle in 1..=CYCLES {
        let t = Instant::now();
        // Odd cycles: a QEMU client of the listen port `a`; even: a QEMU server for `b`.
        let (port, sock, role, mac, ip) = if cycle % 2 == 1 {
            ("a", sa, SocketRole::Client, MAC_A, "10.0.3.10")
        } else {
            ("b", sb, SocketRole::Server, MAC_B, "10.0.3.11")
        };
        let mut g = QemuGuest::boot(
            &format!("{port}{cycle}"),
            sock,
            role,
            mac,
            &format!("{ip}/24"),
        )
        .or_panic();
        peer.wait_ready(BOOT).or_panic();
        let t_boot = g.wait_ready(BOOT).or_panic();
        let t_ping = ping_both_ways(&mut g, &mut peer, ip, IP_P);
        // SIGKILL: QEMU goes away without a vhost-user goodbye.
        g.kill();
        sw.wait_disconnected(port, SETTLE)
            .unwrap_or_else(|e| panic!("cycle {cycle}: {e:#}"));
        let u = match &baseline {
            None if cycle == WARMUP => {
                let u = ProcUsage::steady(pid, Duration::from_millis(200), SETTLE).or_panic();
                baseline = Some(u);
                u
            }
            Some(b) => ProcUsage::settled(pid, b, SETTLE).or_panic(),
            None => sw.usage().or_panic(),
        };
        eprintln!(
            "cycle {cycle} ({port}): ready after {t_boot:.1?}, pings after {t_ping:.1?}, cycle \
             {:.1?}; after the kill: {u}",
            t.elapsed()
        );
    }
    let baseline = baseline.expect("baseline taken");
    let end = ProcUsage::settled(pid, &baseline, SETTLE).or_panic();
    eprintln!(
        "QEMU guest kill -9 cycles: {CYCLES} ({} per role) in {:.1?}\n  after warm-up ({WARMUP} \
         cycles): {baseline}\n  after {CYCLES} cycles:          {end}\n  tolerance: VmRSS +{} \
         KiB, usable VmSize +{} KiB",
        CYCLES / 2,
        t0.elapsed(),
        GUEST_TOLERANCE.rss_kib,
        GUEST_TOLERANCE.vm_size_kib
    );
    end.check_flat(&baseline, GUEST_TOLERANCE).or_panic();
    let s = sw.stats().or_panic();
    for p in ["a", "b"] {
        let conns = s.port(p).or_panic().port.get("connections").copied();
        assert_eq!(conns, Some(u64::from(CYCLES / 2)), "port {p} connections");
    }
}
