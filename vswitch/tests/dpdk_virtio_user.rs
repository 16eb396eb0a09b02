//! The `vswitch` binary driven by a third-party vhost-user frontend: DPDK 22.11's virtio-user
//! PMD in dpdk-testpmd (no hugepages). These tests fail, not skip, without dpdk-testpmd.
//!
//! - Port roles: virtio-user attaches to a listening port and (`server=1`) to a connecting port;
//!   frames flow from a txonly generator to an rxonly sink through the switch; a generator and
//!   a sink killed with SIGKILL and started again are served again.
//! - Isolation: with `gen` and `same` on channel 100 and `other` on channel 200, broadcast,
//!   unicast (known and unknown) and replayed pcaps of 802.1Q-tagged, 802.1ad-tagged (forged
//!   S-VID 200), double-tagged and source-spoofed frames reach `same` (tags as payload,
//!   byte for byte) and never `other`: the switch's counters and testpmd's own both say zero.
//!
//! The tests of this file run one at a time ([`dpdk::serial`]): each pins a generator testpmd
//! to CPU 0 and a sink testpmd to CPU 1, both busy-polling. Rates are printed (`--nocapture`).

mod bin_util;
mod dpdk;

use dpdk::frames::replay_mix;
use dpdk::scenario::{
    assert_other_untouched, diag, flow, in_flight, refs, three_ports, txonly_args, BROADCAST, FLOW,
    GEN_CPU, GEN_MAC, OTHER_MAC, SAME_MAC, SINK_CPU,
};
use dpdk::{read_pcap, tail, wait_until, write_pcap, Port, Testpmd, Vdev, Vswitch, WAIT};

/// Generator and sink through a port pair of one `role`; both frontends crash and come back.
fn port_role(connect: bool) {
    let _serial = dpdk::serial();
    let role = if connect { "connect" } else { "listen" };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (gen_sock, sink_sock) = (dir.join("gen.sock"), dir.join("sink.sock"));
    let sw = Vswitch::start(
        dir,
        &[
            Port {
                name: "gen",
                socket: gen_sock.clone(),
                channel: 100,
                mac: None,
                connect,
            },
            Port {
                name: "sink",
                socket: sink_sock.clone(),
                channel: 100,
                mac: None,
                connect,
            },
        ],
    );
    let gen_vdev = [Vdev::virtio_user(&gen_sock, GEN_MAC, connect)];
    let sink_vdev = [Vdev::virtio_user(&sink_sock, SAME_MAC, connect)];
    let gen_args = txonly_args(SAME_MAC, 64);
    // --no-flush-rx: testpmd otherwise discards, uncounted, what arrived before it forwards.
    let sink_args = ["--forward-mode=rxonly", "--no-flush-rx"];

    let mut sink = Testpmd::start(dir, "sink1", SINK_CPU, &sink_vdev, &sink_args);
    let mut gen = Testpmd::start(dir, "gen1", GEN_CPU, &gen_vdev, &refs(&gen_args));
    assert!(sw.connected("gen") && sw.connected("sink"));
    flow(
        &sw,
        &format!("{role}: gen1 -> sink1, 64 B"),
        "sink",
        "port.to_guest_frames",
        0,
        FLOW,
        || diag(&sw, &[&gen, &sink]),
    );

    // The generator crashes (SIGKILL: no clean vhost-user shutdown) and is started again.
    gen.kill();
    wait_until(
        "the gen port to see its frontend go",
        WAIT,
        || !sw.connected("gen"),
        || diag(&sw, &[&gen, &sink]),
    );
    drop(gen);
    let gen_base = sw.stats().port("gen", "port.from_guest_frames");
    let gen = Testpmd::start(dir, "gen2", GEN_CPU, &gen_vdev, &refs(&gen_args));
    let base = sw.stats().port("sink", "port.to_guest_frames");
    flow(
        &sw,
        &format!("{role}: restarted gen2 -> sink1, 64 B"),
        "sink",
        "port.to_guest_frames",
        base,
        FLOW,
        || diag(&sw, &[&gen, &sink]),
    );

    // The sink crashes while frames are flowing to it, and is started again.
    sink.kill();
    wait_until(
        "the sink port to see its frontend go",
        WAIT,
        || !sw.connected("sink"),
        || diag(&sw, &[&gen, &sink]),
    );
    drop(sink);
    // Frozen while no frontend is attached: the base of the new sink's count.
    let sink_base = sw.stats().port("sink", "port.to_guest_frames");
    let sink = Testpmd::start(dir, "sink2", SINK_CPU, &sink_vdev, &sink_args);
    flow(
        &sw,
        &format!("{role}: gen2 -> restarted sink2, 64 B"),
        "sink",
        "port.to_guest_frames",
        sink_base,
        FLOW,
        || diag(&sw, &[&gen, &sink]),
    );

    // Stop the generator, let the switch settle its last frames, stop the sink: every frame the
    // new sink got was counted by the switch, and the other way round.
    let gen_stats = gen.stop();
    wait_until(
        "the switch to settle the generator's last frames",
        WAIT,
        || in_flight(&sw, "gen", "sink") == 0,
        || diag(&sw, &[&sink]),
    );
    let sink_stats = sink.stop();
    let st = sw.stats();
    eprintln!("[{role}] final switch counters:\n{}", st.summary());
    eprintln!("[{role}] gen2 testpmd: {gen_stats:?}; sink2 testpmd: {sink_stats:?}");
    let gen_in = st.port("gen", "port.from_guest_frames") - gen_base;
    eprintln!(
        "[{role}] gen2 sent {} frames, the switch took {gen_in} from it",
        gen_stats[&0].tx
    );
    assert!(
        gen_in <= gen_stats[&0].tx && gen_stats[&0].tx - gen_in <= u64::from(dpdk::QUEUE_SIZE),
        "gen2 sent {} frames, the switch took {gen_in} from it",
        gen_stats[&0].tx
    );
    assert_eq!(
        sink_stats[&0].rx,
        st.port("sink", "port.to_guest_frames") - sink_base,
        "sink2's RX count differs from what the switch wrote into its ring"
    );
    assert_eq!(st.port("gen", "port.connections"), 2, "gen connections");
    assert_eq!(st.port("sink", "port.connections"), 2, "sink connections");
    for p in ["gen", "sink"] {
        assert_eq!(st.port(p, "port.tx_bad_descriptor"), 0, "{p}");
        assert_eq!(st.port(p, "port.rx_bad_descriptor"), 0, "{p}");
    }
    let log = sw.stop();
    eprintln!("[{role}] switch log:\n{}", tail(&log, 12));
}

#[test]
fn listening_port_serves_virtio_user_and_serves_it_again_after_restarts() {
    port_role(false);
}

#[test]
fn connecting_port_serves_virtio_user_server_and_serves_it_again_after_restarts() {
    port_role(true);
}

#[test]
fn other_channel_receives_nothing_from_txonly_or_replayed_tagged_and_spoofed_frames() {
    let _serial = dpdk::serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let sw = three_ports(dir, false);
    let gen_vdev = [Vdev::virtio_user(&dir.join("gen.sock"), GEN_MAC, false)];

    // One sink testpmd for both VMs: port 0 is `same`, port 1 is `other`. --tx-first makes
    // each send one burst first, so the switch learns SAME_MAC (and `other` tries to reach
    // GEN_MAC from channel 200).
    let peers = [
        format!("--eth-peer=0,{GEN_MAC}"),
        format!("--eth-peer=1,{GEN_MAC}"),
    ];
    let sink = Testpmd::start(
        dir,
        "sinks",
        SINK_CPU,
        &[
            Vdev::virtio_user(&dir.join("same.sock"), SAME_MAC, false),
            Vdev::virtio_user(&dir.join("other.sock"), OTHER_MAC, false),
        ],
        &[
            "--forward-mode=rxonly",
            "--no-flush-rx",
            "--tx-first",
            &peers[0],
            &peers[1],
        ],
    );
    wait_until(
        "the switch to learn SAME_MAC on port same",
        WAIT,
        || sw.fdb_port(100, SAME_MAC).as_deref() == Some("same"),
        || diag(&sw, &[&sink]),
    );

    // A: broadcast, 64 B.
    let gen = Testpmd::start(
        dir,
        "gen-bcast",
        GEN_CPU,
        &gen_vdev,
        &refs(&txonly_args(BROADCAST, 64)),
    );
    flow(
        &sw,
        "broadcast 64 B gen -> same",
        "same",
        "switch.out_frames",
        0,
        FLOW,
        || diag(&sw, &[&gen, &sink]),
    );
    assert_other_untouched(&sw);
    gen.stop();
    wait_until(
        "the switch to settle the broadcasts",
        WAIT,
        || in_flight(&sw, "gen", "same") == 0,
        || diag(&sw, &[&sink]),
    );

    // B: known unicast to SAME_MAC, 1514 B: delivered without flooding.
    let st = sw.stats();
    let (flooded0, same0) = (
        st.port("gen", "switch.flooded"),
        st.port("same", "switch.out_frames"),
    );
    let gen = Testpmd::start(
        dir,
        "gen-ucast",
        GEN_CPU,
        &gen_vdev,
        &refs(&txonly_args(SAME_MAC, 1514)),
    );
    flow(
        &sw,
        "known unicast 1514 B gen -> same",
        "same",
        "switch.out_frames",
        same0,
        FLOW,
        || diag(&sw, &[&gen, &sink]),
    );
    assert_other_untouched(&sw);
    gen.stop();
    wait_until(
        "the switch to settle the unicasts",
        WAIT,
        || in_flight(&sw, "gen", "same") == 0,
        || diag(&sw, &[&sink]),
    );
    assert_eq!(
        sw.stats().port("gen", "switch.flooded"),
        flooded0,
        "frames to a learned MAC were flooded"
    );

    // C: replayed pcap of tagged and spoofed frames, over and over (pcap port 0 -> virtio-user
    // port 1 in io forwarding).
    let (mix, legit, spoofed) = replay_mix();
    let pcap = dir.join("mix.pcap");
    write_pcap(&pcap, &mix);
    let st = sw.stats();
    let (same0, spoof0) = (
        st.port("same", "switch.out_frames"),
        st.port("gen", "switch.drops.source_spoof"),
    );
    let gen = Testpmd::start(
        dir,
        "gen-replay",
        GEN_CPU,
        &[
            Vdev::PcapRx {
                file: pcap.clone(),
                infinite: true,
            },
            gen_vdev[0].clone(),
        ],
        &["--forward-mode=io", "--no-flush-rx"],
    );
    flow(
        &sw,
        &format!(
            "replayed pcap ({} frames, {} legitimate) gen -> same",
            mix.len(),
            legit.len()
        ),
        "same",
        "switch.out_frames",
        same0,
        FLOW,
        || diag(&sw, &[&gen, &sink]),
    );
    gen.stop();
    wait_until(
        "the switch to settle the replayed frames",
        WAIT,
        || in_flight(&sw, "gen", "same") == 0,
        || diag(&sw, &[&sink]),
    );
    let st = sw.stats();
    let spoof = st.port("gen", "switch.drops.source_spoof") - spoof0;
    eprintln!(
        "replay: {} delivered to same, {spoof} dropped as source_spoof (the mix has {spoofed} \
         spoofed of {})",
        st.port("same", "switch.out_frames") - same0,
        mix.len()
    );
    assert!(spoof > 0, "no spoofed frame was counted:\n{}", st.summary());
    assert_other_untouched(&sw);

    let sink_stats = sink.stop();
    let st = sw.stats();
    eprintln!("final switch counters:\n{}", st.summary());
    eprintln!("sink testpmd: {sink_stats:?}");
    assert_eq!(
        sink_stats[&1].rx, 0,
        "the other channel's testpmd received frames"
    );
    assert_eq!(
        sink_stats[&0].rx,
        st.port("same", "port.to_guest_frames"),
        "same's testpmd RX count differs from the switch's"
    );
    assert_eq!(
        st.port("gen", "port.tx_bad_descriptor") + st.port("gen", "port.tx_oversize"),
        0,
        "{}",
        st.summary()
    );
    let log = sw.stop();
    eprintln!("switch log:\n{}", tail(&log, 10));
}

#[test]
fn replayed_tagged_frames_reach_same_channel_byte_for_byte_and_spoofed_ones_are_counted() {
    let _serial = dpdk::serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    // The sinks' ports connect (virtio-user server=1); the generator's port listens.
    let sw = three_ports(dir, true);
    let (same_out, other_out) = (dir.join("same-out.pcap"), dir.join("other-out.pcap"));
    // io forwarding: virtio-user `same` (port 0) -> pcap file (port 1), `other` (2) -> file (3).
    let sink = Testpmd::start(
        dir,
        "sinks",
        SINK_CPU,
        &[
            Vdev::virtio_user(&dir.join("same.sock"), SAME_MAC, true),
            Vdev::PcapTx {
                file: same_out.clone(),
            },
            Vdev::virtio_user(&dir.join("other.sock"), OTHER_MAC, true),
            Vdev::PcapTx {
                file: other_out.clone(),
            },
        ],
        &["--forward-mode=io", "--no-flush-rx"],
    );

    let (mix, legit, spoofed) = replay_mix();
    let pcap = dir.join("mix.pcap");
    write_pcap(&pcap, &mix);
    // One pass over the file: every count is exact.
    let gen = Testpmd::start(
        dir,
        "gen-replay-once",
        GEN_CPU,
        &[
            Vdev::PcapRx {
                file: pcap,
                infinite: false,
            },
            Vdev::virtio_user(&dir.join("gen.sock"), GEN_MAC, false),
        ],
        &["--forward-mode=io", "--no-flush-rx"],
    );
    let total = mix.len() as u64;
    let want_same = legit.len() as u64;
    wait_until(
        "the switch to take the whole pcap and deliver the legitimate frames",
        WAIT,
        || {
            let st = sw.stats();
            st.port("gen", "port.from_guest_frames") == total
                && st.port("same", "switch.out_frames") == want_same
        },
        || diag(&sw, &[&gen, &sink]),
    );
    let gen_stats = gen.stop();
    let sink_stats = sink.stop();
    let st = sw.stats();
    eprintln!("single pass: switch counters:\n{}", st.summary());
    eprintln!("gen testpmd: {gen_stats:?}\nsink testpmd: {sink_stats:?}");

    assert_eq!(
        gen_stats[&1].tx, total,
        "testpmd did not send the whole pcap"
    );
    assert_eq!(st.port("gen", "switch.in_frames"), want_same);
    assert_eq!(st.port("gen", "switch.drops.source_spoof"), spoofed);
    assert_eq!(st.port("same", "switch.out_frames"), want_same);
    assert_other_untouched(&sw);
    assert_eq!(sink_stats[&0].rx, want_same, "same's testpmd RX");
    assert_eq!(sink_stats[&2].rx, 0, "other's testpmd RX");

    // What `same` received is exactly the legitimate frames, in order, tags and all: a guest's
    // tags are payload, and the channel stamp never reaches a guest.
    let got = read_pcap(&same_out);
    assert_eq!(got.len(), legit.len(), "frames captured behind same");
    for (i, (g, w)) in got.iter().zip(&legit).enumerate() {
        assert!(
            g == w,
            "frame {i} differs:\n got {:02x?}\nwant {:02x?}",
            &g[..g.len().min(32)],
            &w[..w.len().min(32)]
        );
    }
    assert!(
        read_pcap(&other_out).is_empty(),
        "frames captured behind other"
    );
    let log = sw.stop();
    eprintln!("switch log:\n{}", tail(&log, 10));
}
