//! The seam an uplink plugs into, proved with an in-memory transport (`common/wire.rs`): two
//! switches joined by uplinks, real guests on both. The channel travels with every frame on
//! the wire; the receiving switch stamps each frame with it and checks it against its own
//! registry; an uplink gets only the channels it carries; frames from an uplink are not
//! flooded onto another uplink (split horizon).

mod common;

use std::time::Duration;

use common::wire::WireEnd;
use common::{ch, drain, eth, mac, vm, Net, BCAST};
use vswitch::port::UplinkSpec;
use vswitch_channels::{ChannelSet, Policy};

const T: Duration = Duration::from_secs(5);

fn carrying(name: &str, channels: &[u16]) -> UplinkSpec {
    UplinkSpec {
        name: name.into(),
        channels: channels.iter().map(|&c| ch(c)).collect::<ChannelSet>(),
        mac_limit: None,
        reflective_relay: false,
    }
}

/// The `reason` drops counted on channel `c`.
fn channel_drops(net: &Net, c: u16, reason: &str) -> u64 {
    let stats = serde_json::to_value(net.sw.stats()).expect("stats as JSON");
    stats["channels"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["channel"] == c))
        .and_then(|x| x["counters"]["drops"][reason].as_u64())
        .unwrap_or(0)
}

/// VM1 (host A) and VM2 (host B) on channel 100, VM3 (A) and VM4 (B) on channel 200: frames
/// cross the wire with their channel and reach only their own channel on the far side, byte
/// for byte; learning works across the uplink both ways.
#[test]
fn frames_cross_hosts_on_their_own_channel_only() {
    let a = Net::new(&[vm("vm1", 100, None), vm("vm3", 200, None)]);
    let b = Net::new(&[vm("vm2", 100, None), vm("vm4", 200, None)]);
    let (wa, wb) = WireEnd::pair();
    a.sw.add_uplink(carrying("up", &[100, 200]), wa.clone())
        .expect("uplink A");
    b.sw.add_uplink(carrying("up", &[100, 200]), wb.clone())
        .expect("uplink B");
    let mut g1 = a.guest("vm1", mac(1));
    let mut g3 = a.guest("vm3", mac(3));
    let mut g2 = b.guest("vm2", mac(2));
    let mut g4 = b.guest("vm4", mac(4));

    // A broadcast on channel 100 reaches the far VM on 100 only.
    let f = eth(BCAST, mac(1), 1);
    g1.send(&f).expect("send");
    assert_eq!(g2.recv(T), Some(f.clone()), "broadcast crossed to vm2");
    assert_eq!(
        wa.sent(),
        vec![(ch(100), f)],
        "on the wire with channel 100"
    );
    assert!(
        drain(&mut g3).is_empty(),
        "vm3 (200, same host) got nothing"
    );
    assert!(drain(&mut g4).is_empty(), "vm4 (200, far host) got nothing");

    // VM2 answers by unicast: B learned VM1 behind its uplink, A delivers to VM1.
    let r = eth(mac(1), mac(2), 2);
    g2.send(&r).expect("send");
    assert_eq!(g1.recv(T), Some(r.clone()), "reply crossed back to vm1");
    assert_eq!(wb.sent(), vec![(ch(100), r)]);

    // Channel 200 works the same way, apart.
    let f = eth(BCAST, mac(4), 3);
    g4.send(&f).expect("send");
    assert_eq!(g3.recv(T), Some(f), "broadcast on 200 crossed to vm3");
    assert!(drain(&mut g1).is_empty(), "vm1 (100) got nothing of 200");
    assert!(drain(&mut g2).is_empty(), "vm2 (100) got nothing of 200");
}

/// A frame on the wire stamped with a channel is checked at the receiving switch against its
/// own registry: a frame stamped 200 addressed to a VM on 100 never reaches it, whatever the
/// sender claims; a channel the uplink does not carry is dropped on arrival.
#[test]
fn the_far_switch_checks_the_channel_from_the_wire() {
    let b = Net::new(&[vm("vm2", 100, None), vm("vm4", 200, None)]);
    let wire = WireEnd::open();
    b.sw.add_uplink(carrying("up", &[100, 200]), wire.clone())
        .expect("uplink");
    let mut g2 = b.guest("vm2", mac(2));
    let mut g4 = b.guest("vm4", mac(4));
    // B learns VM2's MAC on channel 100.
    g2.send(&eth(BCAST, mac(2), 0)).expect("send");
    let _ = drain(&mut g4);

    // Stamped 200, addressed to VM2: stays on channel 200 (VM4 sees the unknown unicast).
    let forged = eth(mac(2), mac(9), 1);
    wire.inject(ch(200), forged.clone());
    assert_eq!(g4.recv(T), Some(forged), "flooded on 200");
    assert!(
        drain(&mut g2).is_empty(),
        "vm2 (100) never sees a frame stamped 200"
    );

    // Stamped 300, a channel this uplink does not carry: dropped on arrival.
    wire.inject(ch(300), eth(BCAST, mac(9), 2));
    assert!(drain(&mut g2).is_empty() && drain(&mut g4).is_empty());
    common::wait_for(
        || channel_drops(&b, 300, "channel_mismatch") == 1,
        "the frame on channel 300 counted as a channel mismatch",
    );
}

/// An uplink gets only the channels it carries, even when the plan points at it: with the
/// policy letting 200 reach 100, a VM on 200 sending to a MAC learned behind an uplink that
/// carries only 100 is refused by the delivery check (never put on the wire stamped 200).
#[test]
fn an_uplink_gets_only_the_channels_it_carries() {
    let mut policy = Policy::default();
    policy.allow(ch(200), ch(100));
    let a = Net::with_policy(&[vm("vm1", 100, None), vm("vm3", 200, None)], policy);
    let wire = WireEnd::open();
    a.sw.add_uplink(carrying("up", &[100]), wire.clone())
        .expect("uplink");
    let mut g1 = a.guest("vm1", mac(1));
    let mut g3 = a.guest("vm3", mac(3));
    // A learns MAC 9 on channel 100 behind the uplink.
    wire.inject(ch(100), eth(BCAST, mac(9), 0));
    assert!(g1.recv(T).is_some(), "vm1 got the far broadcast");

    // VM3 (200) to MAC 9: the plan finds it on 100 (policy reach), the check refuses it.
    g3.send(&eth(mac(9), mac(3), 1)).expect("send");
    // VM3's broadcast on 200 is not flooded to the uplink either.
    g3.send(&eth(BCAST, mac(3), 2)).expect("send");
    // VM1 (100) to MAC 9 goes out, stamped 100.
    let ok = eth(mac(9), mac(1), 3);
    g1.send(&ok).expect("send");
    common::wait_for(|| !wire.sent().is_empty(), "vm1's frame on the wire");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        wire.sent(),
        vec![(ch(100), ok)],
        "only channel 100 on an uplink carrying 100"
    );
    assert_eq!(
        channel_drops(&a, 200, "channel_mismatch"),
        1,
        "refused, counted"
    );
}

/// Split horizon: a broadcast from one uplink reaches the VMs of its channel, never another
/// uplink (the other hosts' switches flood their own VMs).
#[test]
fn floods_from_an_uplink_stay_off_the_other_uplinks() {
    let a = Net::new(&[vm("vm1", 100, None)]);
    let (w1, w2) = (WireEnd::open(), WireEnd::open());
    a.sw.add_uplink(carrying("up1", &[100]), w1.clone())
        .expect("uplink 1");
    a.sw.add_uplink(carrying("up2", &[100]), w2.clone())
        .expect("uplink 2");
    let mut g1 = a.guest("vm1", mac(1));
    let f = eth(BCAST, mac(9), 1);
    w1.inject(ch(100), f.clone());
    assert_eq!(g1.recv(T), Some(f), "vm1 got it");
    std::thread::sleep(Duration::from_millis(100));
    assert!(w2.sent().is_empty(), "not flooded onto the other uplink");
    assert!(w1.sent().is_empty(), "nor back where it came from");
    // A VM's broadcast goes to both uplinks.
    let f = eth(BCAST, mac(1), 2);
    g1.send(&f).expect("send");
    common::wait_for(
        || !w1.sent().is_empty() && !w2.sent().is_empty(),
        "both uplinks",
    );
    assert_eq!(w1.sent(), vec![(ch(100), f.clone())]);
    assert_eq!(w2.sent(), vec![(ch(100), f)]);
}

/// A VEPA port on this switch (station side) and `up` joined to a bridge switch whose uplink
/// has reflective relay on.
struct Vepa {
    station: Net,
    _bridge: Net,
}

fn vepa_pair(relay: bool) -> Vepa {
    let station = Net::new(&[]);
    for (name, last) in [("vm1", 1u8), ("vm2", 2)] {
        let mut spec = vswitch::PortSpec::new(
            name,
            station.dir.path().join(format!("{name}.sock")),
            ch(100),
        );
        spec.channel_mode = vswitch_channels::ChannelMode::Vepa;
        spec.mac = Some(vswitch_channels::MacAddr::new(mac(last)));
        station.sw.add_port(spec).expect("VEPA port");
    }
    let bridge = Net::new(&[]);
    let (ws, wb) = WireEnd::pair();
    station
        .sw
        .add_uplink(carrying("up", &[100]), ws)
        .expect("station uplink");
    let mut relay_spec = carrying("up", &[100]);
    relay_spec.reflective_relay = relay;
    bridge.sw.add_uplink(relay_spec, wb).expect("bridge uplink");
    Vepa {
        station,
        _bridge: bridge,
    }
}

/// VEPA (802.1Qbg): frames between two VMs of one station go out the uplink, the adjacent
/// bridge reflects them (reflective relay), and they come back through the same check; a VEPA
/// VM never receives its own frame.
#[test]
fn vepa_frames_go_through_the_adjacent_bridge_and_back() {
    let v = vepa_pair(true);
    let mut g1 = v.station.guest("vm1", mac(1));
    let mut g2 = v.station.guest("vm2", mac(2));
    // Unknown unicast, then the answer (learned by then), then a broadcast.
    let f = eth(mac(2), mac(1), 1);
    g1.send(&f).expect("send");
    assert_eq!(
        g2.recv(T),
        Some(f),
        "vm2 got vm1's frame through the bridge"
    );
    let r = eth(mac(1), mac(2), 2);
    g2.send(&r).expect("send");
    assert_eq!(g1.recv(T), Some(r), "vm1 got the answer through the bridge");
    let b = eth(BCAST, mac(1), 3);
    g1.send(&b).expect("send");
    assert_eq!(g2.recv(T), Some(b), "vm2 got the broadcast");
    assert!(
        drain(&mut g1).is_empty(),
        "vm1 never receives its own frames"
    );
}

/// Without reflective relay at the bridge, VEPA VMs of one station cannot reach each other:
/// nothing is switched locally.
#[test]
fn vepa_without_reflective_relay_stays_apart() {
    let v = vepa_pair(false);
    let mut g1 = v.station.guest("vm1", mac(1));
    let mut g2 = v.station.guest("vm2", mac(2));
    g1.send(&eth(mac(2), mac(1), 1)).expect("send");
    g1.send(&eth(BCAST, mac(1), 2)).expect("send");
    assert!(drain(&mut g2).is_empty(), "no local switching for VEPA");
    assert!(drain(&mut g1).is_empty());
}
