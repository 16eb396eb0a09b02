//! Live migration, the switch's side: the destination QEMU's SEND_RARP makes the switch
//! announce the guest on its channel (and nowhere else), and its MAC points at its port.

mod common;

use std::time::Duration;

use common::{ch, drain, mac, vm, wait_for, Net, BCAST};
use vswitch_testguest::features::DEFAULT_PROTOCOL_FEATURES;
use vswitch_testguest::migration::PROTO_RARP;
use vswitch_testguest::{GuestConfig, TestGuest};

/// A guest on port `name` whose frontend negotiated RARP, as QEMU does.
fn rarp_guest(net: &Net, name: &str, m: [u8; 6]) -> TestGuest {
    let cfg = GuestConfig {
        mac: m,
        want_protocol_features: DEFAULT_PROTOCOL_FEATURES | PROTO_RARP,
        ..GuestConfig::default()
    };
    let mut g = TestGuest::connect(&net.dir.path().join(format!("{name}.sock")), cfg)
        .expect("guest connects");
    let h = net.sw.port_handle(name).expect("port exists");
    wait_for(|| h.rx().is_attached(), "rx ring published");
    g.post_rx(64).expect("post rx");
    g
}

#[test]
fn send_rarp_announces_the_guest_on_its_channel_only() {
    let net = Net::new(&[
        // No configured MAC: the FDB learns it from the announcement alone.
        vm("vm1", 100, None),
        vm("vm2", 100, None),
        vm("vm3", 200, None),
    ]);
    let mut g1 = rarp_guest(&net, "vm1", mac(1));
    let mut g2 = net.guest("vm2", mac(2));
    let mut g3 = net.guest("vm3", mac(3));
    g1.send_rarp(mac(1)).expect("SEND_RARP acknowledged");
    let got = g2
        .recv(Duration::from_secs(5))
        .expect("vm2 hears the announcement");
    assert_eq!(&got[..6], &BCAST);
    assert_eq!(&got[6..12], &mac(1));
    assert_eq!(&got[12..14], &[0x80, 0x35], "a RARP");
    assert!(drain(&mut g3).is_empty(), "another channel hears nothing");
    assert!(drain(&mut g1).is_empty(), "the sender does not hear itself");
    let core = net.sw.core();
    let id = core.ports.load().find("vm1");
    assert!(id.is_some());
    assert_eq!(
        core.fdb.lookup(ch(100), &mac(1), core.fdb.now()),
        id,
        "the MAC points at the port"
    );
}
