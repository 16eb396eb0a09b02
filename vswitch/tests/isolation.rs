//! The isolation invariant (docs/architecture.md) with real in-process guests over real sockets:
//! four VMs on two channels, hostile senders, a poisoned FDB, run-time re-association.

mod common;

use std::time::Duration;

use common::*;
use vswitch_channels::{MacAddr, Policy, PortId};
use vswitch_testguest::EthFrame;

const T: Duration = Duration::from_secs(5);

/// vm1, vm2 on channel 100; vm3, vm4 on channel 200; all MAC-locked.
fn four_vms() -> Net {
    Net::new(&[
        vm("vm1", 100, Some(mac(1))),
        vm("vm2", 100, Some(mac(2))),
        vm("vm3", 200, Some(mac(3))),
        vm("vm4", 200, Some(mac(4))),
    ])
}

/// Guests on vm1..vm4, in that order.
fn attach_all(net: &Net) -> [vswitch_testguest::TestGuest; 4] {
    [1u8, 2, 3, 4].map(|i| net.guest(&format!("vm{i}"), mac(i)))
}

#[test]
fn unicast_within_a_channel_arrives_once_and_untagged() {
    let net = four_vms();
    let [mut g1, mut g2, mut g3, mut g4] = attach_all(&net);
    // vm2 announces itself (learned), then vm1 unicasts to it.
    g2.send(&eth(BCAST, mac(2), 0)).expect("send");
    assert_eq!(drain(&mut g1).len(), 1, "vm1 sees vm2's broadcast");
    let f = eth(mac(2), mac(1), 7);
    g1.send(&f).expect("send");
    let got = drain(&mut g2);
    assert_eq!(
        got,
        vec![f.clone()],
        "exactly once, byte-identical (no tag)"
    );
    assert_eq!(drain(&mut g3).len() + drain(&mut g4).len(), 0);
    let st = net.sw.stats();
    assert_eq!(st.port("vm2").expect("vm2").switch.out_frames, 1);
    assert_eq!(
        st.port("vm1").expect("vm1").switch.flooded,
        0,
        "known unicast"
    );
}

#[test]
fn no_kind_of_traffic_crosses_channels() {
    let net = four_vms();
    let [mut g1, mut g2, mut g3, mut g4] = attach_all(&net);
    // Let the switch learn vm3 and vm4 in channel 200.
    g3.send(&eth(BCAST, mac(3), 0)).expect("send");
    g4.send(&eth(BCAST, mac(4), 0)).expect("send");
    assert_eq!(drain(&mut g4).len(), 1);
    assert_eq!(drain(&mut g3).len(), 1);
    assert_eq!(
        drain(&mut g1).len() + drain(&mut g2).len(),
        0,
        "not to channel 100"
    );

    // From channel 100: unicast to channel-200 MACs, broadcast, multicast, unknown unicast.
    let frames = [
        eth(mac(3), mac(1), 1),
        eth(mac(4), mac(1), 2),
        eth(BCAST, mac(1), 3),
        eth(MCAST, mac(1), 4),
        eth(mac(99), mac(1), 5),
    ];
    for f in &frames {
        g1.send(f).expect("send");
    }
    assert!(g1.wait_tx_used(frames.len(), T));
    let to_vm2 = drain(&mut g2);
    assert_eq!(
        to_vm2.len(),
        frames.len(),
        "vm2 gets each flooded copy once"
    );
    assert_eq!(drain(&mut g3).len(), 0, "vm3: exactly zero");
    assert_eq!(drain(&mut g4).len(), 0, "vm4: exactly zero");
    let st = net.sw.stats();
    // Shown with --nocapture: the counters of one isolation run.
    for line in st.log_lines() {
        eprintln!("{line}");
    }
    let c100 = st.channel(100).expect("channel 100");
    assert_eq!(c100.counters.in_frames, 5);
    assert_eq!(c100.counters.flooded, 5);
    assert_eq!(st.channel(200).expect("200").counters.out_frames, 2);
}

#[test]
fn guest_written_tags_are_payload() {
    let net = four_vms();
    let [mut g1, mut g2, mut g3, mut g4] = attach_all(&net);
    g3.send(&eth(BCAST, mac(3), 0)).expect("send");
    drain(&mut g4);
    let payload = [0x42u8; 50];
    let forged = [
        // 802.1Q C-tag with the other channel's id
        EthFrame::new(mac(3), mac(1), 0x0800, &payload)
            .with_ctag(200)
            .build(),
        // 802.1ad S-tag claiming channel 200
        EthFrame::new(mac(3), mac(1), 0x0800, &payload)
            .with_stag(200)
            .build(),
        // double tag: S 200 / C 200
        EthFrame::new(BCAST, mac(1), 0x0800, &payload)
            .with_stag(200)
            .with_ctag(200)
            .build(),
        // S-tag 200 broadcast
        EthFrame::new(BCAST, mac(1), 0x0800, &payload)
            .with_stag(200)
            .build(),
    ];
    for f in &forged {
        g1.send(f).expect("send");
    }
    assert!(g1.wait_tx_used(forged.len(), T));
    let got = drain(&mut g2);
    assert_eq!(
        got,
        forged.to_vec(),
        "channel 100 peer gets them unchanged: the tags are payload"
    );
    assert_eq!(drain(&mut g3).len(), 0);
    assert_eq!(drain(&mut g4).len(), 0);
}

#[test]
fn a_poisoned_fdb_misroutes_but_never_leaks() {
    let net = four_vms();
    let mut g1 = net.guest("vm1", mac(1));
    let mut g2 = net.guest("vm2", mac(2));
    let mut g3 = net.guest("vm3", mac(3));
    // Forge: a MAC of channel 200 (vm3, port id 2) learned in channel 100.
    let core = net.sw.core();
    let now = core.fdb.now();
    core.fdb.learn(ch(100), &mac(3), PortId::new(2), 1000, now);
    assert_eq!(core.fdb.lookup(ch(100), &mac(3), now), Some(PortId::new(2)));
    for i in 0..10 {
        g1.send(&eth(mac(3), mac(1), i)).expect("send");
    }
    assert!(g1.wait_tx_used(10, T));
    wait_for(
        || {
            net.sw
                .stats()
                .port("vm3")
                .is_some_and(|p| p.switch.drops.channel_mismatch == 10)
        },
        "10 channel_mismatch drops at vm3",
    );
    assert_eq!(drain(&mut g3).len(), 0, "nothing leaked into channel 200");
    assert_eq!(
        drain(&mut g2).len(),
        0,
        "misrouted, so vm2 does not get it either"
    );
    let st = net.sw.stats();
    for line in st.log_lines() {
        eprintln!("{line}");
    }
    assert_eq!(
        st.channel(100)
            .expect("100")
            .counters
            .drops
            .channel_mismatch,
        10
    );
}

#[test]
fn source_spoofing_on_a_locked_port_is_dropped() {
    let net = four_vms();
    let mut g1 = net.guest("vm1", mac(1));
    let mut g2 = net.guest("vm2", mac(2));
    g1.send(&eth(BCAST, mac(2), 1)).expect("send"); // claims vm2's MAC
    g1.send(&eth(BCAST, [0x01, 0, 0, 0, 0, 1], 2))
        .expect("send"); // group source
    g1.send(&eth(BCAST, mac(1), 3)).expect("send"); // honest
    assert!(g1.wait_tx_used(3, T));
    let got = drain(&mut g2);
    assert_eq!(got.len(), 1, "only the honest frame");
    let d = net.sw.stats().port("vm1").expect("vm1").switch.drops;
    assert_eq!(d.source_spoof, 2);
    // The spoofed MAC was not learned on vm1: it stays vm2's (port id 1) configured address.
    let now = net.sw.core().fdb.now();
    assert_eq!(
        net.sw.core().fdb.lookup(ch(100), &mac(2), now),
        Some(PortId::new(1))
    );
}

#[test]
fn a_configured_mac_is_known_before_its_guest_sends_and_cannot_be_claimed() {
    // vm9 is not source-locked: only the static FDB entry of vm2's `mac=` stops it.
    let net = Net::new(&[
        vm("vm1", 100, Some(mac(1))),
        vm("vm2", 100, Some(mac(2))),
        vm("vm9", 100, None),
    ]);
    let mut g1 = net.guest("vm1", mac(1));
    let mut g2 = net.guest("vm2", mac(2));
    let mut g9 = net.guest("vm9", mac(9));
    // vm2 has never sent a frame: unicast to it is not flooded.
    for i in 0..5 {
        g1.send(&eth(mac(2), mac(1), i)).expect("send");
    }
    assert!(g1.wait_tx_used(5, T));
    assert_eq!(drain(&mut g2).len(), 5);
    assert_eq!(drain(&mut g9).len(), 0, "not flooded to vm9");
    let st = net.sw.stats();
    assert_eq!(st.port("vm1").expect("vm1").switch.flooded, 0);
    // vm9 claims vm2's MAC: a spoof, the entry stays with vm2.
    g9.send(&eth(BCAST, mac(2), 100)).expect("send");
    assert!(g9.wait_tx_used(1, T));
    assert_eq!(drain(&mut g1).len(), 0, "the claiming frame is dropped");
    let d = net.sw.stats().port("vm9").expect("vm9").switch.drops;
    assert_eq!(d.source_spoof, 1);
    g1.send(&eth(mac(2), mac(1), 200)).expect("send");
    assert_eq!(drain(&mut g2), vec![eth(mac(2), mac(1), 200)]);
    assert_eq!(drain(&mut g9).len(), 0);
    // Moved to channel 200, its static entry moves with it.
    net.sw.associate("vm2", ch(200)).expect("associate");
    let fdb = net.sw.fdb();
    assert!(fdb
        .iter()
        .any(|e| e.channel == 200 && e.port == "vm2" && e.is_static));
    assert!(!fdb.iter().any(|e| e.channel == 100 && e.port == "vm2"));
}

#[test]
fn mac_flood_beyond_the_limit_is_dropped_and_known_macs_keep_working() {
    let net = Net::new(&[
        Vm {
            name: "vm1",
            channel: 100,
            mac: None,
            mac_limit: Some(10),
        },
        vm("vm2", 100, Some(mac(2))),
    ]);
    let mut g1 = net.guest("vm1", mac(1));
    let mut g2 = net.guest("vm2", mac(2));
    for i in 0..50u8 {
        g1.send(&eth(mac(2), [0x02, 0, 0, 0, 1, i], u32::from(i)))
            .expect("send");
    }
    assert!(g1.wait_tx_used(50, T));
    assert_eq!(drain(&mut g2).len(), 10);
    let d = net.sw.stats().port("vm1").expect("vm1").switch.drops;
    assert_eq!(d.mac_limit, 40);
    // A MAC learned before the limit still works.
    g1.send(&eth(mac(2), [0x02, 0, 0, 0, 1, 3], 99))
        .expect("send");
    assert_eq!(drain(&mut g2).len(), 1);
    assert_eq!(net.sw.core().fdb.count(PortId::new(0)), 10);
}

#[test]
fn a_destination_without_buffers_does_not_stall_the_sender() {
    let net = four_vms();
    let mut g1 = net.guest("vm1", mac(1));
    // vm2 attaches but posts no RX buffers.
    let mut g2 = vswitch_testguest::TestGuest::connect(
        &net.dir.path().join("vm2.sock"),
        vswitch_testguest::GuestConfig {
            mac: mac(2),
            ..Default::default()
        },
    )
    .expect("vm2");
    let h2 = net.sw.port_handle("vm2").expect("vm2");
    wait_for(|| h2.rx().is_attached(), "vm2 ring");
    for round in 0..10 {
        for i in 0..100 {
            g1.send(&eth(mac(2), mac(1), round * 100 + i))
                .expect("send");
        }
        assert!(g1.wait_tx_used(100, T), "sender never blocked");
    }
    wait_for(
        || {
            net.sw
                .stats()
                .port("vm2")
                .is_some_and(|p| p.switch.drops.no_rx_buffer == 1000)
        },
        "1000 no_rx_buffer drops",
    );
    g2.post_rx(16).expect("post");
    let f = eth(mac(2), mac(1), 5000);
    g1.send(&f).expect("send");
    assert_eq!(g2.recv(T).as_deref(), Some(&f[..]));
}

#[test]
fn reassociation_at_run_time_moves_the_vm() {
    let net = four_vms();
    let mut g1 = net.guest("vm1", mac(1));
    let mut g2 = net.guest("vm2", mac(2));
    let mut g3 = net.guest("vm3", mac(3));
    net.sw.associate("vm2", ch(200)).expect("associate");
    g1.send(&eth(BCAST, mac(1), 1)).expect("send");
    g3.send(&eth(BCAST, mac(3), 2)).expect("send");
    assert!(g1.wait_tx_used(1, T) && g3.wait_tx_used(1, T));
    let got = drain(&mut g2);
    assert_eq!(got.len(), 1, "vm2 now hears only channel 200");
    assert_eq!(got[0], eth(BCAST, mac(3), 2));
    assert_eq!(drain(&mut g1).len(), 0);

    net.sw.disassociate("vm2").expect("disassociate");
    g3.send(&eth(BCAST, mac(3), 3)).expect("send");
    g2.send(&eth(BCAST, mac(2), 4)).expect("send");
    assert!(g2.wait_tx_used(1, T));
    assert_eq!(drain(&mut g2).len(), 0, "disassociated: receives nothing");
    assert_eq!(drain(&mut g3).len(), 0, "and sends nothing");
    let d = net.sw.stats().port("vm2").expect("vm2").switch.drops;
    assert_eq!(d.unknown_channel, 1);
}

#[test]
fn an_explicit_policy_pair_opens_one_direction_only() {
    let net = Net::with_policy(
        &[vm("vm1", 100, Some(mac(1))), vm("vm3", 200, Some(mac(3)))],
        Policy::with_allowed([(ch(100), ch(200))]),
    );
    let mut g1 = net.guest("vm1", mac(1));
    let mut g3 = net.guest("vm3", mac(3));
    g1.send(&eth(BCAST, mac(1), 1)).expect("send");
    assert_eq!(drain(&mut g3).len(), 1, "100 -> 200 admitted");
    g3.send(&eth(BCAST, mac(3), 2)).expect("send");
    g3.send(&eth(mac(1), mac(3), 3)).expect("send");
    assert!(g3.wait_tx_used(2, T));
    assert_eq!(drain(&mut g1).len(), 0, "200 -> 100 is not");
}

#[test]
fn counters_name_every_drop() {
    let net = four_vms();
    let mut g1 = net.guest("vm1", mac(1));
    let _g2 = net.guest("vm2", mac(2));
    g1.send(&eth(BCAST, mac(9), 1)).expect("send"); // spoof
    g1.send(&vec![0u8; 2000]).expect("send"); // oversize for MTU 1500
    assert!(g1.wait_tx_used(2, T));
    wait_for(
        || {
            let d = net.sw.stats().port("vm1").expect("vm1").switch.drops;
            d.source_spoof == 1 && d.oversize == 1
        },
        "spoof and oversize counted",
    );
    let text = net.sw.prometheus();
    assert!(text.contains("vswitch_port_drops_total{port=\"vm1\",reason=\"source_spoof\"} 1"));
    assert!(text.contains("vswitch_port_drops_total{port=\"vm1\",reason=\"oversize\"} 1"));
    let _ = MacAddr::BROADCAST;
}
