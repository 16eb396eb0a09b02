//! Hostile guest memory (issue 11, findings 1 and 7): regions that do not fit their file, too
//! many or too large regions, and a frontend that truncates its memory file after a valid
//! setup. Each costs that connection (refused or ended, counted), never the process; the
//! port and its peer keep working and the frontend can come back with valid memory.

mod common;

use std::time::Duration;

use common::{frame, wait_for, Pair};
use vswitch_testguest::features::{DEFAULT_PROTOCOL_FEATURES, PROTO_CONFIGURE_MEM_SLOTS};
use vswitch_testguest::hostile_mem::{new_memfd, region};
use vswitch_testguest::{GuestConfig, RawDesc, TestGuest};
use vswitch_vhost::{MemLimits, SocketRole};

const T: Duration = Duration::from_secs(5);

fn slots_guest() -> GuestConfig {
    GuestConfig {
        want_protocol_features: DEFAULT_PROTOCOL_FEATURES | PROTO_CONFIGURE_MEM_SLOTS,
        ..GuestConfig::default()
    }
}

/// A sends one frame to B, which receives it.
fn forwards(a: &mut TestGuest, b: &mut TestGuest, seq: u32) {
    let f = frame(64, seq);
    a.send(&f).expect("send");
    assert_eq!(b.recv(T), Some(f), "frame {seq} forwarded");
}

/// After a hostile memory message, the port is free again and a good frontend works.
fn good_frontend_after(p: &Pair) {
    wait_for(|| !p.a.handle().is_connected(), "hostile connection ended");
    let mut a = p.guest("a", GuestConfig::default());
    let mut b = p.guest("b", GuestConfig::default());
    b.post_rx(16).expect("post rx");
    forwards(&mut a, &mut b, 1);
}

#[test]
fn regions_larger_than_their_file_are_refused() {
    let cases: [(&str, u64, u64, u64); 4] = [
        // (what, file size, region size, offset)
        ("4 MiB region of a 64 KiB memfd", 64 << 10, 4 << 20, 0),
        (
            "region of the guest's size at an offset",
            16 << 20,
            16 << 20,
            4096,
        ),
        (
            "offset + size wraps around",
            16 << 20,
            16 << 20,
            u64::MAX - 4095,
        ),
        ("empty file", 0, 16 << 20, 0),
    ];
    for (what, file_size, size, offset) in cases {
        let p = Pair::new(SocketRole::Listen);
        let mut a = p.guest("a", GuestConfig::default());
        let file = new_memfd(file_size).expect("memfd");
        let r = region(0, size, a.memory_user_addr(), offset, &file);
        let res = a.set_mem_table_raw(&[r]);
        if res.is_ok() {
            // Accepted (the bug): the switch would now touch pages beyond the file. A TX
            // buffer past the end makes it do so at once.
            let _ = a.send_raw_chain(&[RawDesc::new(size - 4096, 64, 0)]);
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(res.is_err(), "{what}: refused");
        assert_eq!(p.a.handle().stats().mem_refused, 1, "{what}: counted");
        drop(a);
        good_frontend_after(&p);
    }
}

#[test]
fn added_region_larger_than_its_file_is_refused() {
    let p = Pair::new(SocketRole::Listen);
    let mut a = p.guest("a", slots_guest());
    let file = new_memfd(4096).expect("memfd");
    let r = region(1 << 32, 1 << 20, 0x7f00_0000_0000, 0, &file);
    assert!(a.add_mem_region_raw(&r).is_err(), "ADD_MEM_REG refused");
    assert_eq!(p.a.handle().stats().mem_refused, 1);
    drop(a);
    good_frontend_after(&p);
}

/// The 32 TiB attack: one frontend maps huge regions until the address space is full. A
/// 4 KiB memfd claimed as 32 TiB fails the fit check; a sparse 32 TiB memfd fits its file but
/// not the size limit. Either way the very first such region is refused before anything is
/// mapped, and another frontend connects while the attacker is still around.
#[test]
fn huge_regions_are_refused_before_mapping() {
    let p = Pair::new(SocketRole::Listen);
    for (n, file_size) in [(1, 4096u64), (2, 32 << 40)] {
        let mut a = p.guest("a", slots_guest());
        let file = new_memfd(file_size).expect("memfd");
        let mut accepted = 0;
        for i in 0..3u64 {
            let r = region((i + 1) << 45, 32 << 40, 0x7f00_0000_0000, 0, &file);
            if a.add_mem_region_raw(&r).is_err() {
                break;
            }
            accepted += 1;
        }
        assert_eq!(
            accepted, 0,
            "file of {file_size} bytes: no 32 TiB region mapped"
        );
        assert_eq!(p.a.handle().stats().mem_refused, n);
        let mut b = p.guest("b", GuestConfig::default());
        b.post_rx(16).expect("another frontend connects");
        drop(a);
        wait_for(|| !p.a.handle().is_connected(), "hostile connection ended");
    }
    good_frontend_after(&p);
}

#[test]
fn region_count_and_size_limits_hold() {
    let limits = MemLimits {
        max_regions: 4,
        max_bytes: 64 << 20,
    };
    let p = Pair::with(SocketRole::Listen, |c| c.mem_limits = limits);
    // The limit is what the port advertises.
    let mut a = p.guest("a", slots_guest());
    assert_eq!(a.max_mem_slots().expect("GET_MAX_MEM_SLOTS"), 4);
    // The guest's own region plus three more fit; the fifth is refused.
    let file = new_memfd(1 << 20).expect("memfd");
    for i in 1..=3u64 {
        let r = region(i << 32, 1 << 20, 0x7f00_0000_0000 + (i << 24), 0, &file);
        a.add_mem_region_raw(&r).expect("within the limit");
    }
    let r = region(4 << 32, 1 << 20, 0x7f00_0400_0000, 0, &file);
    assert!(a.add_mem_region_raw(&r).is_err(), "fifth region refused");
    drop(a);
    wait_for(|| !p.a.handle().is_connected(), "connection ended");
    // Size: 16 MiB of guest memory plus 64 MiB more is over 64 MiB.
    let mut a = p.guest("a", slots_guest());
    let big = new_memfd(64 << 20).expect("memfd");
    let r = region(1 << 32, 64 << 20, 0x7f00_0000_0000, 0, &big);
    assert!(a.add_mem_region_raw(&r).is_err(), "over the size limit");
    assert_eq!(p.a.handle().stats().mem_refused, 2);
    drop(a);
    good_frontend_after(&p);
}

/// A valid setup, traffic flowing, then the frontend truncates its memory file while its peer
/// sends into it and a poller drains its TX ring: the process survives, that connection ends
/// and is counted, the frontend reconnects with fresh memory and traffic flows again.
#[test]
fn truncated_memory_ends_only_that_connection() {
    let p = Pair::new(SocketRole::Listen);
    let mut a = p.guest("a", GuestConfig::default());
    let mut b = p.guest("b", GuestConfig::default());
    a.post_rx(128).expect("post rx");
    b.post_rx(128).expect("post rx");
    forwards(&mut a, &mut b, 1);
    forwards(&mut b, &mut a, 2);

    a.truncate_memory(0).expect("ftruncate");
    // B keeps sending into A's (now missing) RX buffers; the poller keeps reading A's TX ring.
    for seq in 0..64 {
        let _ = b.send(&frame(64, 100 + seq));
        b.reclaim_tx();
        if p.a.handle().stats().memory_fault > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    wait_for(|| p.a.handle().stats().memory_fault == 1, "fault counted");
    wait_for(
        || !p.a.handle().is_connected(),
        "truncating frontend disconnected",
    );
    drop(a);

    let mut a = p.guest("a", GuestConfig::default());
    a.post_rx(128).expect("post rx");
    b.recv_all(Duration::from_millis(50));
    b.post_rx(128).expect("post rx");
    forwards(&mut a, &mut b, 3);
    forwards(&mut b, &mut a, 4);
    assert_eq!(p.a.handle().stats().memory_fault, 1);
    assert_eq!(p.b.handle().stats().memory_fault, 0);
}
