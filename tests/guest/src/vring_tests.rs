//! Tests of the driver-side split ring (`vring.rs`).

use super::*;

#[test]
fn need_event_matches_virtio_spec() {
    // Device published 0 -> 1 and the driver asked at 0: notify.
    assert!(need_event(0, 1, 0));
    // Asked at 5, moved 0 -> 3: not yet.
    assert!(!need_event(5, 3, 0));
    // Moved 3 -> 6 across 5: notify.
    assert!(need_event(5, 6, 3));
    // Wrapping around 65535.
    assert!(need_event(65535, 2, 65530));
    assert!(!need_event(10, 2, 65530));
}

#[test]
fn ring_layout_is_aligned_and_disjoint() {
    let (r, end) = RingAddrs::layout(0, 256);
    assert_eq!(r.desc % 16, 0);
    assert_eq!(r.avail, r.desc + 256 * 16);
    assert!(r.used >= r.used_event() + 2);
    assert_eq!(r.used % 4, 0);
    assert_eq!(end, r.avail_event() + 2);
}

#[test]
fn allocator_frees_exact_chains() {
    let mem = GuestMem::new(1 << 20).unwrap();
    let (ring, _) = RingAddrs::layout(0, 8);
    let mut q = DriverQueue::new(&mem, ring, 7, true).unwrap();
    assert_eq!(q.avail_idx(), 7);
    let a = q.alloc().unwrap();
    let b = q.alloc().unwrap();
    q.link(a, b);
    q.mark_head(a, 2);
    assert_eq!(q.free_count(), 6);
    assert!(q.claim(b).is_err());
    assert!(q.claim(8).is_err());
    assert_eq!(q.complete(u32::from(b)), None, "not a head");
    assert_eq!(q.bogus_used, 1);
    assert_eq!(q.complete(u32::from(a)), Some(2));
    assert_eq!(q.free_count(), 8);
    assert_eq!(q.complete(u32::from(a)), None, "double completion");
    assert_eq!(q.complete(8), None, "id == queue size");
    assert_eq!(q.complete(u32::MAX), None, "id far out of range");
    assert_eq!(q.bogus_used, 4);
    assert_eq!(q.free_count(), 8);
}

#[test]
fn queue_size_must_be_a_power_of_two() {
    let mem = GuestMem::new(1 << 20).unwrap();
    let (ring, _) = RingAddrs::layout(0, 6);
    assert!(DriverQueue::new(&mem, ring, 0, true).is_err());
}

#[test]
fn view_writes_the_split_ring_layout() {
    let mem = GuestMem::new(1 << 20).unwrap();
    let (ring, _) = RingAddrs::layout(0, 8);
    let mut q = DriverQueue::new(&mem, ring, 65534, true).unwrap();
    let v = q.view(&mem).unwrap();
    v.write_desc(3, 0x1122_3344_5566_7788, 0xaabb_ccdd, DESC_F_NEXT, 5)
        .unwrap();
    assert!(v.write_desc(8, 0, 0, 0, 0).is_err());
    let mut d = [0u8; 16];
    mem.read(ring.desc + 3 * DESC_SIZE, &mut d).unwrap();
    assert_eq!(d[0..8], 0x1122_3344_5566_7788u64.to_le_bytes());
    assert_eq!(d[8..12], 0xaabb_ccddu32.to_le_bytes());
    assert_eq!(d[12..14], DESC_F_NEXT.to_le_bytes());
    assert_eq!(d[14..16], 5u16.to_le_bytes());
    // Avail slots wrap with the index; the index becomes visible only on publish.
    for head in [3u16, 4, 6] {
        q.push_avail_in(&v, head);
    }
    let load = |a: u64| mem.load_u16(a, Ordering::Acquire).unwrap();
    assert_eq!(load(ring.avail + 2), 65534);
    q.publish_in(&v);
    assert_eq!(load(ring.avail + 2), 1);
    assert_eq!(load(ring.avail + 4 + 2 * 6), 3);
    assert_eq!(load(ring.avail + 4 + 2 * 7), 4);
    assert_eq!(load(ring.avail + 4), 6);
    // Used entries: read after the used index, consumed with used_event re-armed.
    let mut e = [0u8; 8];
    e[0..4].copy_from_slice(&7u32.to_le_bytes());
    e[4..8].copy_from_slice(&60u32.to_le_bytes());
    mem.write(ring.used + 4 + 8 * 6, &e).unwrap();
    mem.write(ring.used + 2, &65535u16.to_le_bytes()).unwrap();
    assert_eq!(q.used_pending_in(&v), 1);
    assert_eq!(q.peek_used_in(&v, 0), (7, 60));
    q.consume_used_in(&v, 1);
    assert_eq!(load(ring.used_event()), 65535);
    assert_eq!(q.last_used(), 65535);
}
