//! Packed virtqueues (VIRTIO_F_RING_PACKED) with a third-party frontend: DPDK 22.11's
//! virtio-user PMD with `packed_vq=1`, driving the `vswitch` binary. Frames flow both ways
//! between two packed frontends, and between a packed and a split one; the switch's log says
//! the frontends negotiated packed rings, and nothing is counted as malformed. These tests
//! fail, not skip, without dpdk-testpmd; they run one at a time ([`dpdk::serial`]).

mod bin_util;
mod dpdk;

use std::path::Path;

use dpdk::scenario::{
    diag, flow, in_flight, refs, txonly_args, GEN_CPU, GEN_MAC, SAME_MAC, SINK_CPU,
};
use dpdk::{tail, wait_until, Port, Testpmd, Vdev, Vswitch, WAIT};

/// Frames that must pass each way.
const FRAMES: u64 = 50_000;

fn two_ports(dir: &Path) -> Vswitch {
    let port = |name: &'static str| Port {
        name,
        socket: dir.join(format!("{name}.sock")),
        channel: 100,
        mac: None,
        connect: false,
    };
    Vswitch::start(dir, &[port("gen"), port("sink")])
}

fn vdev(dir: &Path, name: &str, mac: &str, packed: bool) -> Vdev {
    let sock = dir.join(format!("{name}.sock"));
    if packed {
        Vdev::virtio_user_packed(&sock, mac, false)
    } else {
        Vdev::virtio_user(&sock, mac, false)
    }
}

/// A txonly frontend on `from` sends `len`-byte frames to an rxonly frontend on `to`, through
/// the switch: `FRAMES` arrive, and the counts of both sides agree once the sender stops.
fn one_way(
    sw: &Vswitch,
    dir: &Path,
    (from, from_packed): (&str, bool),
    (to, to_packed): (&str, bool),
    len: u32,
) {
    let (from_mac, to_mac) = if from == "gen" {
        (GEN_MAC, SAME_MAC)
    } else {
        (SAME_MAC, GEN_MAC)
    };
    let what = format!(
        "{from} ({}) -> {to} ({}), {len} B",
        if from_packed { "packed" } else { "split" },
        if to_packed { "packed" } else { "split" }
    );
    // The bases are taken before the frontends start: every frame they exchange counts.
    let st = sw.stats();
    let (taken0, delivered0) = (
        st.port(from, "port.from_guest_frames"),
        st.port(to, "port.to_guest_frames"),
    );
    let sink = Testpmd::start(
        dir,
        &format!("rx-{to}-{len}"),
        SINK_CPU,
        &[vdev(dir, to, to_mac, to_packed)],
        &["--forward-mode=rxonly", "--no-flush-rx"],
    );
    let gen = Testpmd::start(
        dir,
        &format!("tx-{from}-{len}"),
        GEN_CPU,
        &[vdev(dir, from, from_mac, from_packed)],
        &refs(&txonly_args(to_mac, len)),
    );
    if from == "gen" {
        flow(
            sw,
            &what,
            to,
            "port.to_guest_frames",
            delivered0,
            FRAMES,
            || diag(sw, &[&gen, &sink]),
        );
    } else {
        wait_until(
            &format!("{what}: {FRAMES} frames"),
            WAIT,
            || sw.stats().port(to, "port.to_guest_frames") >= delivered0 + FRAMES,
            || diag(sw, &[&gen, &sink]),
        );
    }
    let gen_stats = gen.stop();
    wait_until(
        "the switch to settle the sender's last frames",
        WAIT,
        || in_flight(sw, from, to) == 0,
        || diag(sw, &[&sink]),
    );
    let sink_stats = sink.stop();
    let st = sw.stats();
    let taken = st.port(from, "port.from_guest_frames") - taken0;
    let delivered = st.port(to, "port.to_guest_frames") - delivered0;
    eprintln!(
        "[{what}] sender sent {}, switch took {taken}, delivered {delivered}, receiver got {}",
        gen_stats[&0].tx, sink_stats[&0].rx
    );
    assert!(
        taken <= gen_stats[&0].tx && gen_stats[&0].tx - taken <= u64::from(dpdk::QUEUE_SIZE),
        "{what}: the sender sent {} frames, the switch took {taken}",
        gen_stats[&0].tx
    );
    assert_eq!(
        sink_stats[&0].rx, delivered,
        "{what}: the receiver's count differs from what the switch wrote into its ring"
    );
    for p in [from, to] {
        for c in [
            "port.tx_bad_descriptor",
            "port.rx_bad_descriptor",
            "port.tx_ring_broken",
        ] {
            assert_eq!(st.port(p, c), 0, "{what}: {p} {c}\n{}", st.summary());
        }
    }
}

#[test]
fn packed_frontends_pass_traffic_both_ways() {
    let _serial = dpdk::serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let sw = two_ports(dir);
    one_way(&sw, dir, ("gen", true), ("sink", true), 64);
    one_way(&sw, dir, ("sink", true), ("gen", true), 64);
    one_way(&sw, dir, ("gen", true), ("sink", true), 1514);
    let log = sw.stop();
    for p in ["gen", "sink"] {
        assert!(
            log.contains(&format!("{p}: the frontend uses packed virtqueues")),
            "the switch did not see {p} negotiate packed rings:\n{}",
            tail(&log, 30)
        );
    }
    eprintln!("switch log:\n{}", tail(&log, 12));
}

#[test]
fn packed_and_split_frontends_exchange_frames() {
    let _serial = dpdk::serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let sw = two_ports(dir);
    one_way(&sw, dir, ("gen", true), ("sink", false), 64);
    one_way(&sw, dir, ("gen", false), ("sink", true), 1514);
    let log = sw.stop();
    eprintln!("switch log:\n{}", tail(&log, 12));
}
