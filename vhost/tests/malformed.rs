//! Hostile guests: malformed TX chains and RX buffers. Each costs that one packet and a
//! counter; the port never panics, never touches memory outside the guest, and keeps working.

mod common;

use std::time::Duration;

use common::{frame, wait_for, Pair};
use vswitch_testguest::{
    GuestConfig, RawDesc, TestGuest, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE,
};
use vswitch_vhost::{PortStatsSnapshot, SocketRole};

const T: Duration = Duration::from_secs(5);

/// Header (12 zero bytes) + a valid 64-byte frame in scratch memory; returns its address.
fn good_payload(g: &mut TestGuest) -> u64 {
    let mut bytes = vec![0u8; 12];
    bytes.extend_from_slice(&frame(64, 0xdead));
    let at = g.alloc(bytes.len()).expect("scratch");
    g.write_mem(at, &bytes).expect("write");
    at.0
}

enum Counter {
    Bad,
    Oversize,
    Runt,
}

fn read(s: &PortStatsSnapshot, c: &Counter) -> u64 {
    match c {
        Counter::Bad => s.tx_bad_descriptor,
        Counter::Oversize => s.tx_oversize,
        Counter::Runt => s.tx_runt,
    }
}

/// Runs one malformed TX case on a fresh sender: exactly one counter step, nothing delivered,
/// then a good frame still goes through.
fn tx_case(name: &str, counter: Counter, send: impl FnOnce(&mut TestGuest)) {
    let p = Pair::new(SocketRole::Listen);
    let mut a = p.guest("a", GuestConfig::default());
    let mut b = p.guest("b", GuestConfig::default());
    b.post_rx(64).expect("post rx");
    let before = p.a.handle().stats();
    send(&mut a);
    wait_for(
        || read(&p.a.handle().stats(), &counter) == read(&before, &counter) + 1,
        &format!("{name}: counted once"),
    );
    let after = p.a.handle().stats();
    assert_eq!(
        after.tx_bad_descriptor + after.tx_oversize + after.tx_runt,
        before.tx_bad_descriptor + before.tx_oversize + before.tx_runt + 1,
        "{name}: exactly one drop"
    );
    assert_eq!(after.from_guest_frames, before.from_guest_frames, "{name}");
    assert!(
        b.recv_all(Duration::from_millis(50)).is_empty(),
        "{name}: nothing delivered"
    );
    // The port keeps working for this guest.
    let f = frame(128, 42);
    a.send(&f).expect("send after malformed");
    assert_eq!(
        b.recv(T).as_deref(),
        Some(&f[..]),
        "{name}: port still works"
    );
}

#[test]
fn address_outside_guest_memory() {
    tx_case("out-of-range address", Counter::Bad, |a| {
        let beyond = a.mem_size() + 0x10_0000;
        a.send_raw_chain(&[RawDesc::new(beyond, 100, 0)])
            .expect("raw");
    });
}

#[test]
fn address_plus_length_overflows() {
    tx_case("length overflow", Counter::Bad, |a| {
        a.send_raw_chain(&[RawDesc::new(u64::MAX - 8, 100, 0)])
            .expect("raw");
    });
}

#[test]
fn length_running_off_the_end_of_memory() {
    tx_case("length beyond memory", Counter::Bad, |a| {
        let at = good_payload(a);
        let len = (a.mem_size() - at + 4096) as u32;
        // Short enough for the port's maximum frame, long enough to leave guest memory.
        let near_end = a.mem_size() - 200;
        a.send_raw_chain(&[
            RawDesc::new(at, 12, DESC_F_NEXT),
            RawDesc::new(near_end, 1000.min(len), 0),
        ])
        .expect("raw");
    });
}

#[test]
fn huge_length_is_oversize() {
    tx_case("huge length", Counter::Oversize, |a| {
        let at = good_payload(a);
        a.send_raw_chain(&[RawDesc::new(at, u32::MAX, 0)])
            .expect("raw");
    });
}

#[test]
fn descriptor_loop() {
    tx_case("loop", Counter::Bad, |a| {
        let at = good_payload(a);
        a.send_raw_chain_at(&[
            (10, RawDesc::new(at, 12, DESC_F_NEXT).with_next(11)),
            (11, RawDesc::new(at + 12, 64, DESC_F_NEXT).with_next(10)),
        ])
        .expect("raw");
    });
}

#[test]
fn chain_longer_than_the_queue() {
    tx_case("chain longer than queue", Counter::Bad, |a| {
        let at = good_payload(a);
        let n = a.guest_config().queue_size;
        // Every slot links to the next, the last back to the first: a walk of the whole
        // table and beyond.
        let placements: Vec<(u16, RawDesc)> = (0..n)
            .map(|i| (i, RawDesc::new(at, 1, DESC_F_NEXT).with_next((i + 1) % n)))
            .collect();
        a.send_raw_chain_at(&placements).expect("raw");
    });
}

#[test]
fn next_index_beyond_the_queue() {
    tx_case("next out of range", Counter::Bad, |a| {
        let at = good_payload(a);
        a.send_raw_chain(&[RawDesc::new(at, 12, DESC_F_NEXT).with_next(5000)])
            .expect("raw");
    });
}

#[test]
fn indirect_table_outside_memory() {
    tx_case("indirect out of range", Counter::Bad, |a| {
        let beyond = a.mem_size() + 0x1000;
        a.send_raw_chain(&[RawDesc::new(beyond, 64, DESC_F_INDIRECT)])
            .expect("raw");
    });
}

#[test]
fn indirect_table_with_bad_length() {
    tx_case("indirect length not a multiple of 16", Counter::Bad, |a| {
        let at = good_payload(a);
        let table = a
            .write_indirect_table(&[RawDesc::new(at, 76, 0)])
            .expect("table");
        a.send_raw_chain(&[RawDesc::new(table.0, 15, DESC_F_INDIRECT)])
            .expect("raw");
    });
}

#[test]
fn nested_indirect_table() {
    tx_case("nested indirect", Counter::Bad, |a| {
        let at = good_payload(a);
        let inner = a
            .write_indirect_table(&[RawDesc::new(at, 76, 0)])
            .expect("inner");
        let outer = a
            .write_indirect_table(&[RawDesc::new(inner.0, 16, DESC_F_INDIRECT)])
            .expect("outer");
        a.send_raw_chain(&[RawDesc::new(outer.0, 16, DESC_F_INDIRECT)])
            .expect("raw");
    });
}

#[test]
fn write_only_buffer_on_tx() {
    tx_case("write-only on tx", Counter::Bad, |a| {
        let at = good_payload(a);
        a.send_raw_chain(&[RawDesc::new(at, 76, DESC_F_WRITE)])
            .expect("raw");
    });
}

#[test]
fn zero_length_descriptor() {
    tx_case("zero length", Counter::Bad, |a| {
        let at = good_payload(a);
        a.send_raw_chain(&[
            RawDesc::new(at, 12, DESC_F_NEXT),
            RawDesc::new(at + 12, 0, DESC_F_NEXT),
            RawDesc::new(at + 12, 64, 0),
        ])
        .expect("raw");
    });
}

#[test]
fn header_only_is_a_runt() {
    tx_case("runt", Counter::Runt, |a| {
        let at = good_payload(a);
        a.send_raw_chain(&[RawDesc::new(at, 12 + 10, 0)])
            .expect("raw");
    });
}

#[test]
fn head_index_beyond_the_queue() {
    let p = Pair::new(SocketRole::Listen);
    let mut a = p.guest("a", GuestConfig::default());
    let mut b = p.guest("b", GuestConfig::default());
    b.post_rx(16).expect("post");
    a.publish_raw_tx_head(60000).expect("raw head");
    std::thread::sleep(Duration::from_millis(100));
    // The port survives; a fresh guest on the same port is served normally.
    drop(a);
    wait_for(|| !p.a.handle().is_connected(), "disconnect");
    let mut a = p.guest("a", GuestConfig::default());
    let f = frame(64, 1);
    a.send(&f).expect("send");
    assert_eq!(b.recv(T).as_deref(), Some(&f[..]));
}

#[test]
fn read_only_rx_buffer_costs_the_frame_not_the_ring() {
    let p = Pair::new(SocketRole::Listen);
    let mut a = p.guest("a", GuestConfig::default());
    let mut b = p.guest("b", GuestConfig::default());
    // Corrupt the receiver: a device-readable "RX buffer" at the head of its ring.
    let rx = b.rx_ring();
    let scratch = b.alloc(2048).expect("scratch").0;
    let mut desc = Vec::new();
    desc.extend_from_slice(&scratch.to_le_bytes());
    desc.extend_from_slice(&2048u32.to_le_bytes());
    desc.extend_from_slice(&0u16.to_le_bytes()); // no WRITE flag
    desc.extend_from_slice(&0u16.to_le_bytes());
    b.write_mem(vswitch_testguest::GuestAddress(rx.desc), &desc)
        .expect("desc");
    // avail ring: idx=1, ring[0]=0
    b.write_mem(
        vswitch_testguest::GuestAddress(rx.avail + 4),
        &0u16.to_le_bytes(),
    )
    .expect("ring");
    b.write_mem(
        vswitch_testguest::GuestAddress(rx.avail + 2),
        &1u16.to_le_bytes(),
    )
    .expect("idx");
    a.send(&frame(64, 1)).expect("send");
    wait_for(
        || p.b.handle().stats().rx_bad_descriptor == 1,
        "bad rx buffer counted",
    );
    assert_eq!(p.b.handle().stats().to_guest_frames, 0);
    // The port (and the sender) carry on; the receiver reconnecting cleanly is served again.
    drop(b);
    wait_for(|| !p.b.handle().is_connected(), "disconnect");
    let mut b = p.guest("b", GuestConfig::default());
    b.post_rx(16).expect("post");
    let f = frame(64, 2);
    a.send(&f).expect("send");
    assert_eq!(b.recv(T).as_deref(), Some(&f[..]));
}
