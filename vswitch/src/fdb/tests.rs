//! The FDB's unit tests.

use super::*;

fn ch(n: u16) -> ChannelId {
    ChannelId::new(n).expect("valid test channel")
}

fn mac(i: u32) -> [u8; 6] {
    let b = i.to_be_bytes();
    [0x52, 0x54, b[0], b[1], b[2], b[3]]
}

#[test]
fn learn_then_lookup_is_per_channel() {
    let f = Fdb::new(1024, 300);
    let now = f.now();
    assert_eq!(
        f.learn(ch(100), &mac(1), PortId(3), 10, now),
        Learn::Learned
    );
    assert_eq!(f.lookup(ch(100), &mac(1), now), Some(PortId(3)));
    assert_eq!(f.lookup(ch(200), &mac(1), now), None);
    assert_eq!(f.learn(ch(100), &mac(1), PortId(3), 10, now), Learn::Known);
    assert_eq!(f.count(PortId(3)), 1);
}

#[test]
fn move_between_ports_updates_counts() {
    let f = Fdb::new(1024, 300);
    let now = f.now();
    f.learn(ch(1), &mac(1), PortId(1), 10, now);
    assert_eq!(f.learn(ch(1), &mac(1), PortId(2), 10, now), Learn::Learned);
    assert_eq!(f.lookup(ch(1), &mac(1), now), Some(PortId(2)));
    assert_eq!(f.count(PortId(1)), 0);
    assert_eq!(f.count(PortId(2)), 1);
}

#[test]
fn limit_refuses_new_macs_but_keeps_known() {
    let f = Fdb::new(4096, 300);
    let now = f.now();
    for i in 0..5 {
        assert_eq!(f.learn(ch(1), &mac(i), PortId(1), 5, now), Learn::Learned);
    }
    assert_eq!(
        f.learn(ch(1), &mac(99), PortId(1), 5, now),
        Learn::LimitReached
    );
    assert_eq!(f.learn(ch(1), &mac(0), PortId(1), 5, now), Learn::Known);
    assert_eq!(f.lookup(ch(1), &mac(99), now), None);
}

#[test]
fn aging_hides_and_expire_removes() {
    let f = Fdb::new(1024, 10);
    f.learn(ch(1), &mac(1), PortId(1), 10, 1);
    assert_eq!(f.lookup(ch(1), &mac(1), 5), Some(PortId(1)));
    assert_eq!(f.lookup(ch(1), &mac(1), 20), None);
    assert_eq!(f.expire(), 0, "clock has not advanced in real time");
}

#[test]
fn flush_port_and_entries() {
    let f = Fdb::new(1024, 300);
    let now = f.now();
    f.learn(ch(1), &mac(1), PortId(1), 10, now);
    f.learn(ch(2), &mac(2), PortId(2), 10, now);
    assert_eq!(f.entries().len(), 2);
    assert_eq!(f.flush_port(PortId(1)), 1);
    let e = f.entries();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].port, PortId(2));
    assert_eq!(e[0].mac, MacAddr::new(mac(2)));
    assert_eq!(f.count(PortId(1)), 0);
}

#[test]
fn full_bucket_evicts_and_stays_consistent() {
    let f = Fdb::new(8, 300); // one bucket
    let now = f.now();
    for i in 0..100 {
        f.learn(ch(1), &mac(i), PortId(1), 1000, now);
    }
    assert!(f.entries().len() <= 8);
    assert_eq!(f.count(PortId(1)) as usize, f.entries().len());
    assert_eq!(f.lookup(ch(1), &mac(99), now), Some(PortId(1)));
}

#[test]
fn prepared_probe_matches_lookup() {
    let f = Fdb::new(1024, 300);
    let now = f.now();
    f.learn(ch(5), &mac(1), PortId(4), 10, now);
    for m in [mac(1), mac(2), [0xff; 6], [0x01, 0x00, 0x5e, 0, 0, 1]] {
        let p = f.probe(ch(5), &m);
        assert_eq!(p.mac(), m);
        assert_eq!(p.is_multicast(), MacAddr::new(m).is_multicast());
        f.prefetch(&p);
        assert_eq!(f.lookup_probe(&p, now), f.lookup(ch(5), &m, now));
    }
    assert_eq!(
        f.lookup_probe(&f.probe(ch(5), &mac(1)), now),
        Some(PortId(4))
    );
}

#[test]
fn ten_thousand_macs_fit() {
    let f = Fdb::new(1 << 17, 300);
    let now = f.now();
    for i in 0..10_000 {
        f.learn(ch(7), &mac(i), PortId(i % 50), 100_000, now);
    }
    let found = (0..10_000)
        .filter(|&i| f.lookup(ch(7), &mac(i), now) == Some(PortId(i % 50)))
        .count();
    assert_eq!(found, 10_000);
}

#[test]
fn a_static_entry_never_ages_and_is_never_moved_by_traffic() {
    let f = Fdb::new(1024, 300);
    assert!(f.add_static(ch(100), &mac(1), PortId(3)));
    let later = f.now() + 10_000;
    assert_eq!(f.lookup(ch(100), &mac(1), later), Some(PortId(3)));
    assert_eq!(f.expire(), 0);
    assert_eq!(
        f.learn(ch(100), &mac(1), PortId(4), 10, later),
        Learn::Claimed,
        "another port sending from it is a spoof"
    );
    assert_eq!(
        f.learn(ch(100), &mac(1), PortId(3), 10, later),
        Learn::Known
    );
    assert_eq!(f.lookup(ch(100), &mac(1), later), Some(PortId(3)));
    // The same MAC on another channel is an ordinary address there.
    assert_eq!(
        f.learn(ch(200), &mac(1), PortId(4), 10, later),
        Learn::Learned
    );
    let listed = f.entries();
    assert!(listed
        .iter()
        .any(|e| e.channel == ch(100) && e.is_static && e.age_s == 0 && e.port == PortId(3)));
    assert_eq!(f.flush_port(PortId(3)), 1, "a removed port takes it along");
    assert_eq!(f.lookup(ch(100), &mac(1), later), None);
}

#[test]
fn a_static_entry_replaces_a_learned_one_and_is_never_evicted() {
    // One bucket of SLOTS entries: every key lands in it.
    let f = Fdb::new(SLOTS, 300);
    let now = f.now();
    assert_eq!(
        f.learn(ch(100), &mac(1), PortId(5), 100, now),
        Learn::Learned
    );
    assert!(f.add_static(ch(100), &mac(1), PortId(3)));
    assert_eq!(f.count(PortId(5)), 0);
    assert_eq!(f.count(PortId(3)), 1);
    // Many more learned MACs than slots: the static entry stays.
    for i in 100..200 {
        f.learn(ch(100), &mac(i), PortId(6), 1000, now + i);
    }
    assert_eq!(f.lookup(ch(100), &mac(1), now + 500), Some(PortId(3)));
    // A bucket full of static entries refuses one more, and learning cannot displace them.
    for i in 2..=SLOTS as u32 {
        assert!(f.add_static(ch(100), &mac(i), PortId(i)));
    }
    assert!(!f.add_static(ch(100), &mac(99), PortId(9)));
    assert_eq!(
        f.learn(ch(100), &mac(98), PortId(6), 1000, now),
        Learn::Known
    );
    for i in 1..=SLOTS as u32 {
        assert!(f.lookup(ch(100), &mac(i), now + 10_000).is_some());
    }
}
