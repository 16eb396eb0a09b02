//! Checksum and segmentation offloads through the switch with in-process guests over real
//! vhost-user sockets (docs/offloads.md): a 64 KiB TSO frame crosses as one frame to a guest
//! that negotiated TSO, is segmented for a guest that did not (valid checksums, payload
//! intact), a partial checksum is completed for a guest without GUEST_CSUM, and headers that
//! lie (or ask for an offload the sender did not negotiate) cost the frame and `bad_offload`.

mod common;

use std::time::Duration;

use common::*;
use vswitch_testguest::features::{
    CSUM, DEFAULT_FEATURES, GUEST_CSUM, GUEST_TSO4, GUEST_TSO6, HOST_TSO4, HOST_TSO6,
};
use vswitch_testguest::offload::{self, hdr, sum, tcp4, tcp4_verifies, udp4};
use vswitch_testguest::{GuestConfig, TestGuest, TxLayout};

const T: Duration = Duration::from_secs(5);
const SENDS: u64 = DEFAULT_FEATURES | CSUM | HOST_TSO4 | HOST_TSO6;
const TAKES: u64 = DEFAULT_FEATURES | GUEST_CSUM | GUEST_TSO4 | GUEST_TSO6;
const MSS: usize = 1448;

/// tx (offloading sender), rx (offloading receiver), plain (no offloads) on channel 100;
/// other on channel 200.
fn net() -> (Net, [TestGuest; 4]) {
    let net = Net::new(&[
        vm("tx", 100, Some(mac(1))),
        vm("rx", 100, Some(mac(2))),
        vm("plain", 100, Some(mac(3))),
        vm("other", 200, Some(mac(4))),
    ]);
    let g = [
        (1u8, "tx", SENDS),
        (2, "rx", TAKES),
        (3, "plain", DEFAULT_FEATURES),
        (4, "other", TAKES),
    ]
    .map(|(i, name, want)| attach(&net, name, i, want));
    (net, g)
}

fn attach(net: &Net, name: &str, i: u8, want_features: u64) -> TestGuest {
    let cfg = GuestConfig {
        mac: mac(i),
        want_features,
        mem_size: 64 << 20,
        ..GuestConfig::default()
    };
    let mut g = TestGuest::connect(&net.dir.path().join(format!("{name}.sock")), cfg)
        .expect("guest connects");
    let h = net.sw.port_handle(name).expect("port exists");
    wait_for(|| h.rx().is_attached(), "rx ring published");
    g.post_rx(256).expect("post rx");
    // Learned: each guest announces itself once; the broadcasts are drained below.
    g.send(&eth(BCAST, mac(i), 0)).expect("announce");
    g
}

fn drain_all(g: &mut [TestGuest; 4]) {
    for x in g.iter_mut() {
        drain(x);
    }
}

/// The TSO header of a `tcp4` frame.
fn tso4() -> [u8; 12] {
    offload::tso4(MSS as u16)
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn drops(net: &Net, port: &str) -> vswitch::counters::Drops {
    net.sw.stats().port(port).expect("port").switch.drops
}

#[test]
fn offloads_are_negotiated_per_guest() {
    let (_net, g) = net();
    assert_eq!(g[0].features() & SENDS, SENDS, "sender: CSUM, HOST_TSO4/6");
    assert_eq!(
        g[1].features() & TAKES,
        TAKES,
        "receiver: GUEST_CSUM, GUEST_TSO4/6"
    );
    assert_eq!(g[2].features() & (CSUM | GUEST_CSUM | GUEST_TSO4), 0);
}

#[test]
fn a_64k_tso_frame_crosses_as_one_frame_to_a_tso_guest() {
    let (net, mut g) = net();
    drain_all(&mut g);
    let data = payload(65_000);
    let f = tcp4(mac(2), mac(1), 1000, &data);
    g[0].send_with_header(&tso4(), &f, TxLayout::HeaderSeparate)
        .expect("send");
    let got = g[1].recv(T).expect("the TSO frame");
    assert_eq!(got, f, "one frame, byte-identical (checksum still partial)");
    let h = g[1].last_rx_header().expect("header");
    assert_eq!((h[0], h[1]), (1, 1), "NEEDS_CSUM, GSO_TCPV4 kept");
    assert_eq!(u16::from_le_bytes([h[4], h[5]]), MSS as u16);
    assert_eq!(u16::from_le_bytes([h[6], h[7]]), 34);
    assert!(drain(&mut g[2]).is_empty() && drain(&mut g[3]).is_empty());
    assert_eq!(drops(&net, "tx").total(), 0);
}

#[test]
fn a_tso_frame_is_segmented_for_a_guest_without_offloads() {
    let (net, mut g) = net();
    drain_all(&mut g);
    let data = payload(20_000);
    let f = tcp4(mac(3), mac(1), 0xffff_f000, &data);
    g[0].send_with_header(&tso4(), &f, TxLayout::HeaderSeparate)
        .expect("send");
    let segs = drain(&mut g[2]);
    assert_eq!(segs.len(), data.len().div_ceil(MSS));
    let mut got = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        assert!(tcp4_verifies(s), "segment {i}: checksums");
        assert!(s.len() <= 54 + MSS);
        let seq = u32::from_be_bytes([s[38], s[39], s[40], s[41]]);
        assert_eq!(seq, 0xffff_f000u32.wrapping_add((i * MSS) as u32));
        assert_eq!(
            u16::from_be_bytes([s[18], s[19]]),
            0x1234 + i as u16,
            "IP id"
        );
        let last = i + 1 == segs.len();
        assert_eq!(s[47] & 0x08 != 0, last, "PSH on the last segment only");
        got.extend_from_slice(&s[54..]);
    }
    assert_eq!(got, data);
    assert!(g[2].last_rx_header().is_some_and(|h| h[..10] == [0; 10]));
    assert!(drain(&mut g[3]).is_empty(), "not across channels");
    let st = net.sw.stats();
    assert_eq!(
        st.port("plain").expect("plain").switch.out_frames,
        segs.len() as u64
    );
}

#[test]
fn a_partial_checksum_is_completed_for_a_guest_without_guest_csum() {
    let (_net, mut g) = net();
    drain_all(&mut g);
    let f = tcp4(mac(3), mac(1), 5, &payload(1000));
    g[0].send_with_header(&hdr(1, 0, 0, 34, 16), &f, TxLayout::HeaderSeparate)
        .expect("send");
    let got = drain(&mut g[2]);
    assert_eq!(got.len(), 1);
    assert!(tcp4_verifies(&got[0]));
    assert_eq!(got[0][..50], f[..50]);
    assert_eq!(got[0][52..], f[52..]);
    // To a guest with GUEST_CSUM: as sent, with its header.
    let f2 = tcp4(mac(2), mac(1), 5, &payload(1000));
    g[0].send_with_header(&hdr(1, 0, 0, 34, 16), &f2, TxLayout::HeaderSeparate)
        .expect("send");
    assert_eq!(g[1].recv(T).expect("frame"), f2);
    assert_eq!(g[1].last_rx_header().expect("hdr")[0], 1);
}

#[test]
fn lying_headers_cost_the_frame_and_a_counter() {
    let (net, mut g) = net();
    drain_all(&mut g);
    let f = tcp4(mac(2), mac(1), 1, &payload(10_000));
    let len = f.len() as u16;
    let lies = [
        hdr(1, 0, 0, len, 0),          // csum_start past the frame
        hdr(1, 0, 0, 34, len),         // checksum field past the frame
        hdr(1, 0, 0, 6, 0),            // inside the Ethernet header
        hdr(1, 1, 0, 34, 16),          // gso_size 0
        hdr(1, 1, 20_000, 34, 16),     // gso_size beyond the payload
        hdr(1, 4, MSS as u16, 34, 16), // TCPV6 on an IPv4 packet
        hdr(1, 5, MSS as u16, 34, 16), // UDP_L4 on a TCP packet
        hdr(0, 1, MSS as u16, 34, 16), // GSO without NEEDS_CSUM
        hdr(1, 3, MSS as u16, 34, 16), // UFO: not offered
        hdr(1, 1, MSS as u16, 34, 6),  // csum_offset not TCP's
        {
            let mut h = tso4();
            h[2..4].copy_from_slice(&(len + 1).to_le_bytes()); // hdr_len past the frame
            h
        },
    ];
    for h in &lies {
        g[0].send_with_header(h, &f, TxLayout::HeaderSeparate)
            .expect("send");
    }
    assert!(g[0].wait_tx_used(lies.len() + 1, T));
    assert!(drain(&mut g[1]).is_empty(), "nothing delivered");
    wait_for(
        || drops(&net, "tx").bad_offload == lies.len() as u64,
        "every lie counted as bad_offload",
    );
    // A guest that did not negotiate CSUM may not ask for it; nor TSO without HOST_TSO4.
    let f3 = tcp4(mac(2), mac(3), 1, &payload(1000));
    g[2].send_with_header(&hdr(1, 0, 0, 34, 16), &f3, TxLayout::HeaderSeparate)
        .expect("send");
    g[2].send_with_header(&tso4(), &f3, TxLayout::HeaderSeparate)
        .expect("send");
    wait_for(|| drops(&net, "plain").bad_offload == 2, "not negotiated");
    assert!(drain(&mut g[1]).is_empty());
    // The sender still works after its lies.
    let ok = tcp4(mac(2), mac(1), 1, &payload(10_000));
    g[0].send_with_header(&tso4(), &ok, TxLayout::HeaderSeparate)
        .expect("send");
    assert_eq!(g[1].recv(T).expect("valid TSO frame"), ok);
}

#[test]
fn a_long_frame_without_gso_is_still_oversize() {
    let (net, mut g) = net();
    drain_all(&mut g);
    let f = tcp4(mac(2), mac(1), 1, &payload(3000));
    g[0].send_with_header(&hdr(1, 0, 0, 34, 16), &f, TxLayout::HeaderSeparate)
        .expect("send");
    wait_for(|| drops(&net, "tx").oversize == 1, "oversize without GSO");
    assert!(drain(&mut g[1]).is_empty());
}

/// The wire takes finished frames only: a TSO frame to an uplink leaves as MTU-sized
/// segments with valid checksums, on the sender's channel, and the far switch delivers them.
#[test]
fn a_tso_frame_to_an_uplink_is_segmented_before_the_wire() {
    use common::wire::WireEnd;
    use vswitch::port::UplinkSpec;
    use vswitch_channels::ChannelSet;

    let a = Net::new(&[vm("tx", 100, Some(mac(1)))]);
    let b = Net::new(&[vm("far", 100, Some(mac(2)))]);
    let (wa, wb) = WireEnd::pair();
    let spec = || UplinkSpec {
        name: "up".into(),
        channels: [ch(100)].into_iter().collect::<ChannelSet>(),
        mac_limit: None,
        reflective_relay: false,
    };
    a.sw.add_uplink(spec(), wa.clone()).expect("uplink A");
    b.sw.add_uplink(spec(), wb).expect("uplink B");
    let mut tx = attach(&a, "tx", 1, SENDS);
    let mut far = attach(&b, "far", 2, DEFAULT_FEATURES);
    drain(&mut tx);
    drain(&mut far);
    let data = payload(30_000);
    let f = tcp4(mac(2), mac(1), 77, &data);
    tx.send_with_header(&tso4(), &f, TxLayout::HeaderSeparate)
        .expect("send");
    let n = data.len().div_ceil(MSS);
    wait_for(|| wa.sent().len() > n, "segments on the wire");
    let wire: Vec<_> = wa.sent().into_iter().skip(1).collect(); // after tx's announcement
    assert_eq!(wire.len(), n);
    let mut got = Vec::new();
    for (c, s) in &wire {
        assert_eq!(*c, ch(100));
        assert!(s.len() <= 1514 && tcp4_verifies(s));
        got.extend_from_slice(&s[54..]);
    }
    assert_eq!(got, data);
    let at_far = drain(&mut far);
    assert_eq!(at_far.len(), n, "the far guest gets every segment");
    assert!(at_far.iter().all(|s| tcp4_verifies(s)));
}

/// UDP segmentation (USO): a sender with HOST_USO, a receiver without: datagrams of
/// `gso_size` bytes, each with its own UDP length and a checksum that verifies.
#[test]
fn a_uso_frame_is_segmented_for_a_guest_without_offloads() {
    use vswitch_testguest::features::virtio_bindings::virtio_net::VIRTIO_NET_F_HOST_USO;
    let net = Net::new(&[vm("tx", 100, Some(mac(1))), vm("plain", 100, Some(mac(3)))]);
    let mut tx = attach(&net, "tx", 1, SENDS | (1 << VIRTIO_NET_F_HOST_USO));
    let mut plain = attach(&net, "plain", 3, DEFAULT_FEATURES);
    drain(&mut tx);
    drain(&mut plain);
    assert_ne!(tx.features() & (1 << VIRTIO_NET_F_HOST_USO), 0);
    let data = payload(10_000);
    let f = udp4(mac(3), mac(1), &data);
    let gso = 1200usize;
    tx.send_with_header(&hdr(1, 5, gso as u16, 34, 6), &f, TxLayout::HeaderSeparate)
        .expect("send");
    let segs = drain(&mut plain);
    assert_eq!(segs.len(), data.len().div_ceil(gso));
    let mut got = Vec::new();
    for s in &segs {
        let l4 = &s[34..];
        let len = (l4.len() as u16).to_be_bytes();
        assert_eq!(sum(&[&s[14..34]]), 0xffff, "IP header checksum");
        assert_eq!(&s[38..40], &len, "UDP length");
        assert_eq!(
            sum(&[&s[26..34], &[0, 17], &len, l4]),
            0xffff,
            "UDP checksum"
        );
        got.extend_from_slice(&s[42..]);
    }
    assert_eq!(got, data);
}
