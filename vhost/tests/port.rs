//! The port over real vhost-user sockets, driven by the in-process test guest.

mod common;

use std::time::Duration;

use common::{frame, wait_for, Pair};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS,
};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use vswitch_testguest::{GuestConfig, TestGuest, TxLayout};
use vswitch_vhost::SocketRole;

const T: Duration = Duration::from_secs(5);

fn bit(b: u32) -> u64 {
    1u64 << b
}

#[test]
fn negotiates_features_and_serves_config_space() {
    let p = Pair::with(SocketRole::Listen, |c| {
        c.mac = Some([0x52, 0x54, 0, 0xaa, 0xbb, 0xcc]);
        c.mtu = 9000;
    });
    let mut g = p.guest(
        "a",
        GuestConfig {
            want_protocol_features: vswitch_testguest::features::DEFAULT_PROTOCOL_FEATURES | 0x8000,
            ..GuestConfig::default()
        },
    );
    let offered = g.offered_features();
    for b in [
        VIRTIO_F_VERSION_1,
        VIRTIO_NET_F_MAC,
        VIRTIO_NET_F_MTU,
        VIRTIO_NET_F_STATUS,
        VIRTIO_NET_F_MRG_RXBUF,
        VIRTIO_RING_F_EVENT_IDX,
        VIRTIO_RING_F_INDIRECT_DESC,
    ] {
        assert_ne!(offered & bit(b), 0, "feature bit {b} offered");
        assert_ne!(g.features() & bit(b), 0, "feature bit {b} negotiated");
    }
    // MQ, REPLY_ACK, CONFIG, CONFIGURE_MEM_SLOTS
    let proto = g.protocol_features();
    for f in [0x1u64, 0x8, 0x200, 0x8000] {
        assert_ne!(proto & f, 0, "protocol feature {f:#x}");
    }
    let cfg = g.read_config().expect("config space");
    assert_eq!(&cfg[0..6], &[0x52, 0x54, 0, 0xaa, 0xbb, 0xcc]);
    assert_eq!(u16::from_le_bytes([cfg[10], cfg[11]]), 9000);
    assert_eq!(g.queue_num(), Some(2));
}

fn round_trip(role: SocketRole) {
    let p = Pair::new(role);
    let mut a = p.guest("a", GuestConfig::default());
    let mut b = p.guest("b", GuestConfig::default());
    b.post_rx(256).expect("post rx");
    let layouts = [
        TxLayout::HeaderSeparate,
        TxLayout::HeaderInline,
        TxLayout::Split(3),
        TxLayout::Indirect,
    ];
    let mut sent = Vec::new();
    for i in 0..200u32 {
        let f = frame(60 + (i as usize * 37) % 1455, i);
        a.send_with_layout(&f, layouts[i as usize % layouts.len()])
            .expect("send");
        sent.push(f);
        if i % 50 == 49 {
            assert!(a.wait_tx_used(50, T), "tx chains returned");
        }
    }
    let mut got = Vec::new();
    while got.len() < sent.len() {
        match b.recv(T) {
            Some(f) => got.push(f),
            None => break,
        }
    }
    assert_eq!(
        got.len(),
        sent.len(),
        "every frame arrives; a={:?} b={:?} device_errors={}",
        p.a.handle().stats(),
        p.b.handle().stats(),
        b.device_errors()
    );
    assert_eq!(got, sent, "byte-exact and in order");
    // Counters are added after each batch is handed on: wait for the last one.
    wait_for(
        || p.a.handle().stats().from_guest_frames == 200,
        "tx counted",
    );
    let sa = p.a.handle().stats();
    let sb = p.b.handle().stats();
    assert_eq!(sb.to_guest_frames, 200);
    assert_eq!(sa.tx_bad_descriptor + sb.rx_no_buffer, 0);
}

#[test]
fn frames_round_trip_listen_role() {
    round_trip(SocketRole::Listen);
}

#[test]
fn frames_round_trip_connect_role() {
    round_trip(SocketRole::Connect);
}

#[test]
fn mergeable_rx_spans_small_buffers() {
    let p = Pair::new(SocketRole::Listen);
    let mut a = p.guest("a", GuestConfig::default());
    let mut b = p.guest(
        "b",
        GuestConfig {
            rx_buffer_size: 256,
            ..GuestConfig::default()
        },
    );
    b.post_rx(128).expect("post rx");
    let f = frame(1514, 7);
    a.send(&f).expect("send");
    assert_eq!(b.recv(T).as_deref(), Some(&f[..]));
    let hdr = b.last_rx_header().expect("header");
    let num_buffers = u16::from_le_bytes([hdr[10], hdr[11]]);
    assert_eq!(num_buffers, (1514 + 12usize).div_ceil(256) as u16);
}

#[test]
fn frame_larger_than_posted_buffers_is_not_truncated() {
    // Only 2 x 256 bytes posted: a 1514-byte frame cannot fit and must be dropped whole,
    // leaving the buffers for the next (small) frame.
    let p = Pair::new(SocketRole::Listen);
    let mut a = p.guest("a", GuestConfig::default());
    let mut b = p.guest(
        "b",
        GuestConfig {
            rx_buffer_size: 256,
            ..GuestConfig::default()
        },
    );
    b.post_rx(2).expect("post rx");
    a.send(&frame(1514, 1)).expect("send");
    assert!(a.wait_tx_used(1, T));
    wait_for(|| p.b.handle().stats().rx_no_buffer == 1, "drop counted");
    let small = frame(100, 2);
    a.send(&small).expect("send");
    assert_eq!(b.recv(T).as_deref(), Some(&small[..]));
}

#[test]
fn no_rx_buffers_drops_and_never_blocks_the_sender() {
    let p = Pair::new(SocketRole::Listen);
    let mut a = p.guest("a", GuestConfig::default());
    let _b = p.guest("b", GuestConfig::default());
    for i in 0..100 {
        a.send(&frame(64, i)).expect("send");
    }
    assert!(a.wait_tx_used(100, T), "sender's chains all returned");
    wait_for(
        || p.b.handle().stats().rx_no_buffer == 100,
        "100 drops counted",
    );
    assert_eq!(p.b.handle().stats().to_guest_frames, 0);
}

#[test]
fn event_idx_suppresses_notifications() {
    let p = Pair::new(SocketRole::Listen);
    let mut a = p.guest("a", GuestConfig::default());
    let mut b = p.guest("b", GuestConfig::default());
    assert_ne!(b.features() & bit(VIRTIO_RING_F_EVENT_IDX), 0);
    b.post_rx(64).expect("post rx");
    // Ask to be notified only after 1000 more used entries.
    b.set_rx_used_event(1000).expect("used_event");
    let before = b.calls_received(0);
    for i in 0..10 {
        a.send(&frame(64, i)).expect("send");
    }
    assert!(a.wait_tx_used(10, T));
    wait_for(|| p.b.handle().stats().to_guest_frames == 10, "delivered");
    assert_eq!(b.calls_received(0) - before, 0, "no call before used_event");
    // Now ask for a notification when the device writes the entry after the 10 already used.
    let next = b.last_used_idx(0).wrapping_add(10);
    b.set_rx_used_event(next).expect("used_event");
    a.send(&frame(64, 99)).expect("send");
    wait_for(
        || b.calls_received(0) - before >= 1,
        "a call after used_event",
    );
    assert_eq!(b.recv_all(Duration::from_millis(100)).len(), 11);
}

#[test]
fn nonzero_vring_base_is_honoured() {
    let p = Pair::new(SocketRole::Listen);
    let cfg = GuestConfig {
        rx_base: 1000,
        tx_base: 65530,
        ..GuestConfig::default()
    };
    let mut a = p.guest("a", cfg.clone());
    let mut b = p.guest("b", cfg);
    b.post_rx(256).expect("post rx");
    for i in 0..20 {
        let f = frame(128, i);
        a.send(&f).expect("send");
        assert_eq!(
            b.recv(T).as_deref(),
            Some(&f[..]),
            "frame {i} across the index wrap"
        );
    }
}

#[test]
fn queue_without_call_fd_still_works() {
    let p = Pair::new(SocketRole::Listen);
    let no_call = GuestConfig {
        call_fd: false,
        ..GuestConfig::default()
    };
    let mut a = p.guest("a", no_call.clone());
    let mut b = p.guest("b", no_call);
    b.post_rx(64).expect("post rx");
    let f = frame(200, 1);
    a.send(&f).expect("send");
    assert_eq!(b.recv(T).as_deref(), Some(&f[..]));
}

fn reconnect_cycles(role: SocketRole) {
    let p = Pair::new(role);
    let mut b = p.guest("b", GuestConfig::default());
    b.post_rx(256).expect("post rx");
    for cycle in 0..20u32 {
        let mut a = p.guest("a", GuestConfig::default());
        let f = frame(100 + cycle as usize, cycle);
        a.send(&f).expect("send");
        assert_eq!(b.recv(T).as_deref(), Some(&f[..]), "cycle {cycle}");
        a.disconnect();
        wait_for(|| !p.a.handle().is_connected(), "port sees the disconnect");
    }
    assert_eq!(p.a.handle().stats().connections, 20);
}

#[test]
fn frontend_reconnects_twenty_times_listen_role() {
    reconnect_cycles(SocketRole::Listen);
}

#[test]
fn frontend_reconnects_twenty_times_connect_role() {
    reconnect_cycles(SocketRole::Connect);
}

#[test]
fn frontend_restarts_with_same_rings() {
    // A backend-side view of a VMM that reconnects and resumes its rings (no guest reboot).
    let p = Pair::new(SocketRole::Listen);
    let mut a = p.guest("a", GuestConfig::default());
    let mut b = p.guest("b", GuestConfig::default());
    b.post_rx(64).expect("post rx");
    for round in 0..5u32 {
        let f = frame(300, round);
        a.send(&f).expect("send");
        assert_eq!(b.recv(T).as_deref(), Some(&f[..]));
        a.reconnect().expect("reconnect");
        wait_for(|| p.a.handle().rx().is_attached(), "ring republished");
    }
}

#[test]
fn guest_memory_table_change_is_followed() {
    // A guest reboot: a new guest (new memory, rings at new places) on the same port.
    let p = Pair::new(SocketRole::Listen);
    let mut b = p.guest("b", GuestConfig::default());
    b.post_rx(64).expect("post rx");
    for (i, mem) in [8usize << 20, 32 << 20, 16 << 20].into_iter().enumerate() {
        let mut a = p.guest(
            "a",
            GuestConfig {
                mem_size: mem,
                ..GuestConfig::default()
            },
        );
        let f = frame(500, i as u32);
        a.send(&f).expect("send");
        assert_eq!(b.recv(T).as_deref(), Some(&f[..]));
        drop(a);
        wait_for(|| !p.a.handle().is_connected(), "disconnect seen");
    }
}

#[test]
fn a_fresh_guest_is_not_confused_by_a_previous_one() {
    let p = Pair::new(SocketRole::Listen);
    let a = p.guest("a", GuestConfig::default());
    drop(a);
    wait_for(|| !p.a.handle().is_connected(), "disconnect seen");
    let mut b = TestGuest::connect(&p.sock("b"), GuestConfig::default()).expect("b");
    wait_for(|| p.b.handle().rx().is_attached(), "b ring");
    b.post_rx(8).expect("post");
    let mut a = p.guest("a", GuestConfig::default());
    let f = frame(64, 5);
    a.send(&f).expect("send");
    assert_eq!(b.recv(T).as_deref(), Some(&f[..]));
}

/// A frontend can be delivered to as soon as its setup is acknowledged: its RX ring is
/// published before the port answers any of its messages, however late the connection's worker
/// thread first runs (a frame flooded to it right after its setup is not dropped).
#[test]
fn the_rx_ring_is_published_before_the_setup_is_acknowledged() {
    for role in [SocketRole::Listen, SocketRole::Connect] {
        let p = Pair::new(role);
        for round in 0..5 {
            let g = match role {
                SocketRole::Listen => TestGuest::connect(&p.sock("a"), GuestConfig::default()),
                SocketRole::Connect => TestGuest::listen(&p.sock("a"), GuestConfig::default()),
            }
            .expect("guest attaches");
            assert!(
                p.a.handle().rx().is_attached(),
                "{role:?}, connection {round}: set up, yet its RX ring is not published"
            );
            drop(g);
            wait_for(|| !p.a.handle().is_connected(), "disconnect seen");
        }
    }
}
