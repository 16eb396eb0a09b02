//! Live migration, the switch's side: the destination QEMU's SEND_RARP makes the switch
//! announce the guest on its channel (and nowhere else), and its MAC points at its port.

mod common;

use std::time::Duration;

use common::{ch, drain, eth, mac, vm, wait_for, Net, BCAST};
use vswitch::PortSpec;
use vswitch_channels::MacAddr;
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

#[test]
fn a_migration_target_takes_the_mac_over_when_it_announces() {
    let net = Net::new(&[
        vm("vm1", 100, Some(mac(1))),
        vm("vm2", 100, Some(mac(2))),
        vm("vm3", 200, Some(mac(3))),
    ]);
    let sw = &net.sw;
    let spec = |name: &str, channel: u16, m: [u8; 6]| {
        let mut s = PortSpec::new(
            name,
            net.dir.path().join(format!("{name}.sock")),
            ch(channel),
        );
        s.mac = Some(MacAddr::new(m));
        s
    };
    // Any other duplicate MAC on a channel is refused; a target must match its source.
    let e = sw
        .add_port(spec("vm1b", 100, mac(1)))
        .expect_err("duplicate MAC");
    assert!(e.to_string().contains("migration-of=vm1"), "{e}");
    assert!(
        sw.add_migration_target(spec("vm1b", 100, mac(9)), "vm1")
            .is_err(),
        "other MAC"
    );
    assert!(
        sw.add_migration_target(spec("vm1b", 200, mac(1)), "vm1")
            .is_err(),
        "other channel"
    );
    assert!(
        sw.add_migration_target(spec("vm1b", 100, mac(1)), "nope")
            .is_err(),
        "no source"
    );
    // The same MAC on another channel is another address.
    sw.add_port(spec("vm4", 200, mac(1)))
        .expect("same MAC, other channel");
    let target = sw
        .add_migration_target(spec("vm1b", 100, mac(1)), "vm1")
        .expect("migration target");

    let mut g1 = net.guest("vm1", mac(1));
    let mut g2 = net.guest("vm2", mac(2));
    let mut g3 = net.guest("vm3", mac(3));
    let mut g1b = rarp_guest(&net, "vm1b", mac(1));
    // Until the target announces, the MAC is the source's.
    g2.send(&eth(mac(1), mac(2), 1)).expect("send");
    assert_eq!(drain(&mut g1).len(), 1, "the source still gets its frames");
    assert!(drain(&mut g1b).is_empty());

    g1b.send_rarp(mac(1)).expect("SEND_RARP");
    let got = g2.recv(Duration::from_secs(5)).expect("announcement");
    assert_eq!(&got[12..14], &[0x80, 0x35]);
    let core = sw.core();
    wait_for(
        || core.fdb.lookup(ch(100), &mac(1), core.fdb.now()) == Some(target),
        "the MAC points at the target",
    );
    // The broadcast reaches every other port on the channel, the (paused) source too.
    drain(&mut g1);

    g2.send(&eth(mac(1), mac(2), 2)).expect("send");
    assert_eq!(drain(&mut g1b).len(), 1, "the target gets the frames now");
    assert!(drain(&mut g1).is_empty());
    // The target sends from the MAC: no spoof.
    g1b.send(&eth(mac(2), mac(1), 3)).expect("send");
    assert_eq!(drain(&mut g2).len(), 1, "the target's frames pass");
    // The source goes away: nothing changes for the target.
    sw.remove_port("vm1").expect("remove source");
    g2.send(&eth(mac(1), mac(2), 4)).expect("send");
    assert_eq!(drain(&mut g1b).len(), 1);
    // Another channel still cannot reach it.
    g3.send(&eth(BCAST, mac(3), 5)).expect("send");
    assert!(drain(&mut g1b).is_empty(), "isolation kept");
    let drops = sw.stats().port("vm1b").map(|p| p.switch.drops.source_spoof);
    assert_eq!(drops, Some(0));
}
