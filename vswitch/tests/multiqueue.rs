//! Multiqueue through the switch with in-process guests over real vhost-user sockets
//! (docs/multiqueue.md): a port with two queue pairs offers MQ and `max_virtqueue_pairs` 2; a
//! driver that uses only its second pair has its frames taken from TX queue 3 and gets
//! frames on RX queue 2, while the pair it never enabled is not touched; a frontend that sets
//! up a queue beyond the port's pairs is refused and the port serves the next one.

mod common;

use std::time::Duration;

use common::*;
use vswitch::{PortSpec, Switch, SwitchSettings};
use vswitch_channels::{MacAddr, Policy};
use vswitch_testguest::{GuestConfig, TestGuest};

const VIRTIO_NET_F_MQ: u64 = 1 << 22;
const VIRTIO_NET_F_CTRL_VQ: u64 = 1 << 17;
const FRAMES: u32 = 20;

fn switch(dir: &tempfile::TempDir) -> std::sync::Arc<Switch> {
    let _ = env_logger::builder().is_test(true).try_init();
    let sw = Switch::new(SwitchSettings::default(), Policy::default());
    for (name, channel, last, queues) in
        [("mq", 100, 1, 2), ("peer", 100, 2, 1), ("other", 200, 3, 2)]
    {
        let mut spec = PortSpec::new(name, dir.path().join(format!("{name}.sock")), ch(channel));
        spec.mac = Some(MacAddr::new(mac(last)));
        spec.queues = queues;
        sw.add_port(spec).expect("add port");
    }
    sw
}

fn attach(dir: &tempfile::TempDir, sw: &Switch, name: &str, last: u8, pair: u16) -> TestGuest {
    let cfg = GuestConfig {
        mac: mac(last),
        queue_pair: pair,
        ..GuestConfig::default()
    };
    let mut g =
        TestGuest::connect(&dir.path().join(format!("{name}.sock")), cfg).expect("guest connects");
    let h = sw.port_handle(name).expect("port exists");
    wait_for(|| h.rx().is_attached(), "rx ring published");
    g.post_rx(256).expect("post rx");
    g
}

#[test]
fn the_second_queue_pair_carries_frames_and_the_unused_pair_is_not_touched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sw = switch(&dir);
    let mut mq = attach(&dir, &sw, "mq", 1, 1);
    let mut peer = attach(&dir, &sw, "peer", 2, 0);
    let mut other = attach(&dir, &sw, "other", 3, 0);

    // What the device offers: MQ with a control queue (served by the frontend), two pairs.
    let offered = mq.offered_features();
    assert_ne!(offered & VIRTIO_NET_F_MQ, 0, "MQ offered: {offered:#x}");
    assert_ne!(
        offered & VIRTIO_NET_F_CTRL_VQ,
        0,
        "CTRL_VQ offered: {offered:#x}"
    );
    let config = mq.read_config().expect("config space");
    assert_eq!(
        u16::from_le_bytes([config[8], config[9]]),
        2,
        "max_virtqueue_pairs"
    );
    assert_eq!(
        peer.offered_features() & VIRTIO_NET_F_MQ,
        0,
        "one pair: no MQ"
    );

    for _ in 0..FRAMES {
        mq.send(&eth(mac(2), mac(1), 1)).expect("send");
    }
    let mut from_mq = 0;
    wait_for(
        || {
            from_mq += drain(&mut peer).len();
            from_mq >= FRAMES as usize
        },
        "frames from the second pair",
    );
    for i in 0..FRAMES {
        peer.send(&eth(mac(1), mac(2), i)).expect("send");
    }
    let mut got = Vec::new();
    wait_for(
        || {
            got.extend(drain(&mut mq));
            got.len() >= FRAMES as usize
        },
        "frames into the second pair",
    );
    assert!(drain(&mut other).is_empty(), "channel 200 received frames");

    let h = sw.port_handle("mq").expect("mq");
    // Counted right after the frames are published: the last batch may still be counting.
    wait_for(
        || h.queue_stats()[1].to_guest_frames == u64::from(FRAMES),
        "the second pair's counters",
    );
    let q = h.queue_stats();
    eprintln!("mq per queue pair: {q:?}");
    assert_eq!(q.len(), 2);
    assert_eq!(
        q[0],
        Default::default(),
        "the pair never enabled was touched"
    );
    assert!(q[1].from_guest_frames >= u64::from(FRAMES), "{q:?}");
    assert_eq!(q[1].to_guest_frames, u64::from(FRAMES), "{q:?}");
    let s = h.stats();
    assert_eq!(s.from_guest_frames, q[1].from_guest_frames);
    assert_eq!(s.to_guest_frames, q[1].to_guest_frames);
    // The port-level view lists the pairs.
    let port = sw.stats().port("mq").expect("stats").clone();
    assert_eq!(port.queues, q);
    assert_eq!(
        sw.ports().iter().find(|p| p.name == "mq").map(|p| p.queues),
        Some(2)
    );
}

#[test]
fn a_queue_beyond_the_ports_pairs_is_refused_and_the_port_serves_the_next_frontend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sw = switch(&dir);
    // "peer" has one pair: a driver setting up pair 1 (virtqueues 2 and 3) is refused.
    let cfg = GuestConfig {
        mac: mac(2),
        queue_pair: 1,
        connect_timeout: Duration::from_secs(5),
        ..GuestConfig::default()
    };
    let refused = TestGuest::connect(&dir.path().join("peer.sock"), cfg);
    assert!(
        refused.is_err(),
        "ring index beyond the port's pairs accepted"
    );
    drop(refused);
    // The same port, a well-behaved frontend: frames flow.
    let mut peer = attach(&dir, &sw, "peer", 2, 0);
    let mut mq = attach(&dir, &sw, "mq", 1, 1);
    mq.send(&eth(mac(2), mac(1), 7)).expect("send");
    wait_for(
        || !drain(&mut peer).is_empty(),
        "frame after the refused frontend",
    );
}
