//! Frontend fault cycles against the `vswitch` binary: 100 times, a frontend in a child process
//! (`vsw-frontend`, the in-process test guest: memfd memory, real split virtqueues) attaches,
//! exchanges traffic with a peer through the switch, and is SIGKILLed while it streams, so the
//! switch sees an abrupt close with both rings in flight. The cycles alternate the socket roles:
//! odd cycles connect to a `mode=listen` port, even cycles create the socket of a
//! `mode=connect` port and the switch connects to them.
//!
//! After each cycle: the new frontend's traffic reached the peer and the peer's ping was
//! answered (both directions through the switch), and the switch saw the disconnect. The
//! switch process's descriptors, threads and memory are read from /proc after a warm-up and
//! at the end (always at the same point of a cycle: frontend gone, disconnect seen):
//! descriptors and threads must be exactly back, VmRSS and usable VmSize within [`TOLERANCE`].
//! See docs/fault-cycles.md.

use std::path::Path;
use std::time::{Duration, Instant};
use vswitch_testguest::{EthFrame, GuestConfig, GuestError, TestGuest};
use vswitch_tests::frontend::{PING, PONG, STREAM};
use vswitch_tests::{
    FrontendProcess, MemTolerance, OrPanic, ProcUsage, ScratchDir, SocketRole, Vswitch, VswitchPort,
};

const CYCLES: u32 = 100;
/// Cycles before the baseline is taken: the first connections create what lives as long as the
/// process (malloc arenas, the datapath's per-port state, the control server's first thread).
const WARMUP: u32 = 10;

/// Memory growth allowed from the warm-up baseline to the end, over the 90 measured cycles.
/// A frontend's guest memory (16 MiB) is mapped whole into the switch: leaking one mapping
/// per cycle would add 90 × 16 MiB to VmSize, and even a single leaked mapping in the whole run
/// is twice the VmSize tolerance. A per-connection buffer of 4 KiB (touched) leaked per cycle
/// would add 360 KiB to VmRSS, over its tolerance. What the tolerances allow is allocator noise
/// (malloc keeping freed chunks, a heap growing to its working size; a new 132 KiB heap of a
/// malloc arena, whose 64 MiB reservation is not usable address space and not counted):
/// measured at +4-52 KiB VmRSS and 0 usable VmSize (docs/fault-cycles.md). The peer's
/// own memory is touched in full before the baseline ([`touch_peer_tx_slots`], and the stream
/// fills its RX buffers), so its pages do not count as growth.
const TOLERANCE: MemTolerance = MemTolerance {
    rss_kib: 256,
    vm_size_kib: 8 * 1024,
};

const PEER: [u8; 6] = [0x52, 0x54, 0x00, 0xfc, 0x00, 0x01];
const FE_CLIENT: [u8; 6] = [0x52, 0x54, 0x00, 0xfc, 0x00, 0x0c];
const FE_SERVER: [u8; 6] = [0x52, 0x54, 0x00, 0xfc, 0x00, 0x05];
const MAC_PEER: &str = "52:54:00:fc:00:01";
const MAC_CLIENT: &str = "52:54:00:fc:00:0c";
const MAC_SERVER: &str = "52:54:00:fc:00:05";

/// Bounded waits for expected events (not performance limits).
const READY: Duration = Duration::from_secs(30);
const EXCHANGE: Duration = Duration::from_secs(20);
const GONE: Duration = Duration::from_secs(10);
const SETTLE: Duration = Duration::from_secs(10);

/// Sends two rings' worth of frames from the peer the way the pings go (`send`, which
/// reclaims completed chains only when it runs out of descriptors, so successive frames use
/// every TX slot in turn), to a MAC nobody has (flooded on the channel, delivered nowhere).
/// The switch has then read every one of the peer's TX slots before the baseline: pages of the
/// peer's memory it touched for the first time later would look like growth.
fn touch_peer_tx_slots(peer: &mut TestGuest) {
    let f = EthFrame::new([0x52, 0x54, 0x00, 0xfc, 0xff, 0xff], PEER, 0x88b8, &[0; 64]).build();
    let deadline = Instant::now() + EXCHANGE;
    for _ in 0..512 {
        while let Err(e) = peer.send(&f) {
            assert!(
                matches!(e, GuestError::TxRingFull { .. }) && Instant::now() < deadline,
                "the peer cannot send: {e}"
            );
            peer.wait_tx_used(1, Duration::from_millis(10));
        }
    }
}

/// Stream frames of one incarnation the peer must receive: more than a ring (256 entries), so
/// that both of the frontend's rings have gone round at least once before it is killed.
const STREAMED: u64 = 300;

/// The peer pings the frontend (every 200 ms until answered) and counts the frontend's stream
/// frames of this incarnation; returns how many arrived once the pong and [`STREAMED`] stream
/// frames did.
fn exchange(peer: &mut TestGuest, fe: [u8; 6], incarnation: u32) -> anyhow::Result<u64> {
    let marker = incarnation.to_be_bytes();
    let ping = EthFrame::new(fe, PEER, PING, &marker).build();
    let deadline = Instant::now() + EXCHANGE;
    let mut next_ping = Instant::now();
    let (mut streamed, mut pong) = (0u64, false);
    loop {
        if Instant::now() >= next_ping {
            peer.send(&ping)?;
            next_ping = Instant::now() + Duration::from_millis(200);
        }
        // The stream never pauses: take what has arrived, then go back to the checks.
        for _ in 0..256 {
            let Some(f) = peer.recv(Duration::from_millis(5)) else {
                break;
            };
            let Some(e) = EthFrame::parse(&f) else {
                continue;
            };
            if e.src != fe || !e.payload.starts_with(&marker) {
                continue; // an earlier incarnation's frames, still queued
            }
            match e.ethertype {
                STREAM => streamed += 1,
                PONG => pong = true,
                _ => {}
            }
        }
        if pong && streamed >= STREAMED {
            return Ok(streamed);
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "incarnation {incarnation}: within {EXCHANGE:?} the peer got {streamed} stream \
                 frames (of {STREAMED}) and {} pong",
                if pong { "a" } else { "no" }
            );
        }
    }
}

#[test]
fn hundred_sigkilled_frontends_leak_nothing() {
    let t0 = Instant::now();
    let dir = ScratchDir::new("fe-cycles").or_panic();
    let s_peer = dir.socket_path("peer.sock").or_panic();
    let s_client = dir.socket_path("cl.sock").or_panic();
    let s_server = dir.socket_path("sv.sock").or_panic();
    let mut sw = Vswitch::start(
        dir.path(),
        &[
            VswitchPort::listen("peer", &s_peer, 100).mac(MAC_PEER),
            VswitchPort::listen("cl", &s_client, 100).mac(MAC_CLIENT),
            VswitchPort::connect("sv", &s_server, 100).mac(MAC_SERVER),
        ],
    )
    .or_panic();
    let pid = sw.pid().expect("switch running");
    let mut peer = TestGuest::connect(
        &s_peer,
        GuestConfig {
            mac: PEER,
            ..GuestConfig::default()
        },
    )
    .expect("peer connects");
    peer.post_rx(256).expect("peer posts RX buffers");
    touch_peer_tx_slots(&mut peer);
    let bin = Path::new(env!("CARGO_BIN_EXE_vsw-frontend"));

    let mut baseline: Option<ProcUsage> = None;
    let mut streamed_total = 0;
    let mut early_kills = 0;
    for cycle in 1..=CYCLES {
        let (port, sock, role, mac) = if cycle % 2 == 1 {
            ("cl", &s_client, SocketRole::Client, FE_CLIENT)
        } else {
            ("sv", &s_server, SocketRole::Server, FE_SERVER)
        };
        if cycle % 5 == 0 {
            // Also a frontend killed while it sets the device up (0-3 ms after it starts:
            // before it connects, mid-handshake, or just after), without traffic of its own:
            // the frontend of this cycle then checks the port still works.
            let mut early = FrontendProcess::spawn(bin, role, sock, mac, PEER, 0).or_panic();
            std::thread::sleep(Duration::from_millis(u64::from(cycle / 5 % 4)));
            early.kill();
            early_kills += 1;
        }
        let mut fe = FrontendProcess::spawn(bin, role, sock, mac, PEER, cycle).or_panic();
        fe.wait_ready(READY).or_panic();
        let streamed = exchange(&mut peer, mac, cycle)
            .unwrap_or_else(|e| panic!("cycle {cycle} ({port}): {e:#}\n{}", sw.log_tail(20)));
        streamed_total += streamed;
        assert!(
            fe.is_running(),
            "cycle {cycle}: the frontend exited: {}",
            fe.stderr_tail(10)
        );
        // SIGKILL while it streams: its TX ring has chains the switch has not completed, its
        // RX ring buffers the switch may be writing into.
        fe.kill();
        sw.wait_disconnected(port, GONE)
            .unwrap_or_else(|e| panic!("cycle {cycle}: {e:#}"));
        assert!(sw.is_running(), "cycle {cycle}: the switch died");

        if cycle == WARMUP {
            let u = ProcUsage::steady(pid, Duration::from_millis(200), SETTLE).or_panic();
            eprintln!("after {cycle} warm-up cycles (baseline): {u}");
            baseline = Some(u);
        } else if cycle % 10 == 0 {
            eprintln!(
                "after {cycle} cycles: {} ({streamed_total} stream frames so far, {:.1?})",
                sw.usage().or_panic(),
                t0.elapsed()
            );
        }
    }

    let baseline = baseline.expect("baseline taken");
    let end = ProcUsage::settled(pid, &baseline, SETTLE).or_panic();
    eprintln!(
        "frontend cycles: {CYCLES} SIGKILLed frontends ({} per role) and {early_kills} killed \
         during setup, {streamed_total} stream frames, {:.1?}\n  after warm-up ({WARMUP} cycles): {baseline}\n  after {CYCLES} \
         cycles:          {end}\n  tolerance: VmRSS +{} KiB, usable VmSize +{} KiB",
        CYCLES / 2,
        t0.elapsed(),
        TOLERANCE.rss_kib,
        TOLERANCE.vm_size_kib
    );
    let stats = sw.stats().or_panic();
    eprintln!("--- switch counters ---\n{}", stats.summary());
    end.check_flat(&baseline, TOLERANCE).or_panic();
    // Every incarnation was a connection on its port (those killed during setup may or may not
    // have got that far).
    for p in ["cl", "sv"] {
        let conns = stats.port(p).or_panic().port.get("connections").copied();
        assert!(
            conns >= Some(u64::from(CYCLES / 2)),
            "port {p}: {conns:?} connections"
        );
    }
    drop(peer);
    let status = sw.terminate(Duration::from_secs(10)).or_panic();
    assert!(status.success(), "vswitch exited {status} on SIGTERM");
}
