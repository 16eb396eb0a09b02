//! Finding 9 of issue 11: the datapath reads the registry and the port table as two
//! snapshots; a port id removed and reused on another channel between the two loads must never
//! let a frame checked against the old port's channel be delivered into the new port.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{ch, eth, mac, vm, wait_for, Net, BCAST};
use vswitch::counters::DropReason;
use vswitch::forward::{described_entry, may_enter, DestKind};
use vswitch::PortSpec;
use vswitch_channels::PortId;
use vswitch_testguest::{GuestConfig, TestGuest};

fn id_of(net: &Net, name: &str) -> PortId {
    let p = net.sw.ports().into_iter().find(|p| p.name == name);
    PortId::new(p.expect("port listed").id)
}

/// The construction itself, with the interleaving the race needs made explicit: a registry
/// snapshot taken while port `x` (channel 100) held id k, then `x` removed and `y` (channel
/// 200) added under the same id, then the port table loaded.
#[test]
fn a_registry_snapshot_older_than_a_reused_id_never_names_the_new_port() {
    let net = Net::new(&[vm("x", 100, None), vm("keep", 100, None)]);
    let core = net.sw.core();
    let k = id_of(&net, "x");
    let old_reg = core.registry.load_full();

    net.sw.remove_port("x").expect("remove x");
    let y = net
        .sw
        .add_port(PortSpec::new("y", net.dir.path().join("y.sock"), ch(200)))
        .expect("add y");
    assert_eq!(y, k, "the id is reused");
    let ports = core.ports.load_full();
    let policy = core.policy.load_full();

    // The old check alone: the stale registry admits a channel-100 frame into id k, and the
    // port table's entry at k is y, on channel 200. That pair is the cross-channel delivery.
    assert_eq!(
        may_enter(&old_reg, &policy, ch(100), k, DestKind::Vm),
        Ok(ch(100))
    );
    assert_eq!(ports.get(k).map(|e| e.name.as_str()), Some("y"));
    // The construction: the stale snapshot does not describe y, so y is not delivered into.
    assert!(described_entry(&old_reg, &ports, k).is_none());

    // A snapshot loaded after y's registration describes y, and refuses the frame.
    let reg = core.registry.load_full();
    assert!(described_entry(&reg, &ports, k).is_some_and(|e| e.name == "y"));
    assert_eq!(
        may_enter(&reg, &policy, ch(100), k, DestKind::Vm),
        Err(DropReason::ChannelMismatch)
    );
}

/// From outside: a flood on channel 100 while one port is removed and re-added under the same
/// id again and again, alternately on channels 200 and 100, with a guest attached each time.
/// Whenever the port is on channel 200 it must never receive a frame of channel 100.
///
/// Honest note: the window the construction closes lies between two atomic loads, and a new
/// port needs a whole vhost-user handshake before it has an RX ring; this test did not fail
/// on the original code and is not expected to. It guards the behaviour around the
/// construction (ids reused across channels under traffic), the unit test above the
/// construction itself.
#[test]
fn ports_reusing_ids_across_channels_under_a_flood_never_receive_another_channels_frames() {
    let net = Net::new(&[
        vm("src", 100, Some(mac(1))),
        vm("sink", 100, None),
        vm("p", 100, None),
    ]);
    let k = id_of(&net, "p");
    let mut src = net.guest("src", mac(1));
    let _sink = net.guest("sink", mac(2));
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = {
        let stop = stop.clone();
        thread::spawn(move || {
            let f = eth(BCAST, mac(1), 0x0100_0100);
            let frames: Vec<&[u8]> = (0..32).map(|_| &f[..]).collect();
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                src.reclaim_tx();
                sent += src.send_batch(&frames).unwrap_or(0) as u64;
                thread::yield_now();
            }
            sent
        })
    };

    let mut leaked = 0usize;
    let mut same_channel = 0usize;
    for cycle in 0..16u32 {
        net.sw.remove_port("p").expect("remove p");
        let channel = if cycle % 2 == 0 { 200 } else { 100 };
        let id = net
            .sw
            .add_port(PortSpec::new(
                "p",
                net.dir.path().join("p.sock"),
                ch(channel),
            ))
            .expect("add p");
        assert_eq!(id, k, "the id is reused");
        let cfg = GuestConfig {
            mac: mac(3),
            ..GuestConfig::default()
        };
        let mut g = TestGuest::connect(&net.dir.path().join("p.sock"), cfg).expect("connect");
        let h = net.sw.port_handle("p").expect("port p");
        wait_for(|| h.rx().is_attached(), "rx ring published");
        g.post_rx(256).expect("post rx");
        // A bounded look (on channel 100 the flood never goes quiet).
        let mut got = 0;
        while got < 512 {
            match g.recv(Duration::from_millis(50)) {
                Some(_) => got += 1,
                None => break,
            }
        }
        if channel == 200 {
            leaked += got;
        } else {
            same_channel += got;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let sent = flooder.join().expect("flooder");
    eprintln!(
        "flooded {sent}; channel-100 frames on channel 200: {leaked}; on 100: {same_channel}"
    );
    assert!(sent > 0);
    assert_eq!(
        leaked, 0,
        "frames of channel 100 reached the port on channel 200"
    );
}
