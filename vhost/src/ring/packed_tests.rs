//! Unit tests of [`super`]: a driver written here from the virtio 1.1 spec posts chains into
//! real guest memory; the ring takes them, returns them, wraps, and survives a hostile driver.

use super::*;
use crate::tx::{take_packed_chains, TxScratch, MAX_BATCH};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

const DESC: u64 = 0x0;
const DRIVER_EVT: u64 = 0x2_0000;
const DEVICE_EVT: u64 = 0x2_0010;
const BUF: u64 = 0x3_0000;
const INDIRECT: u64 = 0x8_0000;
const MEM: u64 = 0x10_0000;
const HDR: usize = 12;
const MAX_FRAME: usize = 1522;

#[path = "packed_rx_tests.rs"]
mod rx;

fn memory() -> GuestMemory {
    GuestMemory::from_ranges(&[(GuestAddress(0), MEM as usize)]).expect("memory")
}

fn queue(size: u16) -> Queue {
    let mut q = Queue::new(size).expect("queue");
    q.set_size(size);
    q.set_desc_table_address(Some(DESC as u32), Some(0));
    q.set_avail_ring_address(Some(DRIVER_EVT as u32), Some(0));
    q.set_used_ring_address(Some(DEVICE_EVT as u32), Some(0));
    // What a frontend sends in SET_VRING_BASE for a fresh packed ring: index 0, wrap 1.
    q.set_next_avail(0x8000);
    q.set_ready(true);
    q
}

/// The driver side of a packed ring, as the spec describes it.
struct Driver {
    size: u16,
    next: u16,
    wrap: bool,
    used: u16,
    used_wrap: bool,
}

impl Driver {
    fn new(size: u16) -> Self {
        Driver {
            size,
            next: 0,
            wrap: true,
            used: 0,
            used_wrap: true,
        }
    }

    /// Writes one descriptor at `slot` with this lap's AVAIL/USED bits for slot `slot`.
    fn write(mem: &GuestMemory, slot: u16, addr: u64, len: u32, id: u16, flags: u16) {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&addr.to_le_bytes());
        b[8..12].copy_from_slice(&len.to_le_bytes());
        b[12..14].copy_from_slice(&id.to_le_bytes());
        b[14..].copy_from_slice(&flags.to_le_bytes());
        mem.write_slice(&b, GuestAddress(DESC + 16 * u64::from(slot)))
            .expect("desc");
    }

    /// Posts a chain of `(addr, len, flags)` descriptors (NEXT set between them) as buffer `id`.
    fn post(&mut self, mem: &GuestMemory, id: u16, descs: &[(u64, u32, u16)]) {
        for (i, &(addr, len, flags)) in descs.iter().enumerate() {
            let next = if i + 1 < descs.len() { F_NEXT } else { 0 };
            let avail = if self.wrap { F_AVAIL } else { F_USED };
            Self::write(mem, self.next, addr, len, id, flags | next | avail);
            self.next += 1;
            if self.next == self.size {
                self.next = 0;
                self.wrap = !self.wrap;
            }
        }
    }

    /// The next used descriptor, if the device wrote one: (id, len); moves past `slots`.
    fn used(&mut self, mem: &GuestMemory, slots: u16) -> Option<(u16, u32)> {
        let at = DESC + 16 * u64::from(self.used);
        let flags: u16 = mem.read_obj(GuestAddress(at + 14)).expect("flags");
        let w = self.used_wrap;
        if (flags & F_AVAIL != 0) != w || (flags & F_USED != 0) != w {
            return None;
        }
        let len: u32 = mem.read_obj(GuestAddress(at + 8)).expect("len");
        let id: u16 = mem.read_obj(GuestAddress(at + 12)).expect("id");
        self.used += slots;
        if self.used >= self.size {
            self.used -= self.size;
            self.used_wrap = !self.used_wrap;
        }
        Some((id, len))
    }
}

/// A header and a 64-byte frame at `at`; returns its length.
fn payload(mem: &GuestMemory, at: u64) -> u32 {
    let mut b = vec![0u8; HDR + 64];
    b[HDR..HDR + 6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    mem.write_slice(&b, GuestAddress(at)).expect("payload");
    b.len() as u32
}

/// One TX batch through the ring: (counts, broken, ids returned in order).
fn tx_batch(mem: &GuestMemory, q: &mut Queue) -> (crate::TxBatchCounts, bool, Vec<u16>) {
    let mut ring = PackedRing::new(mem, q).expect("ring");
    let mut scratch = TxScratch::default();
    let mut reads = 0;
    let (counts, broken) = take_packed_chains(
        &mut ring,
        &mut scratch,
        HDR,
        MAX_FRAME,
        Default::default(),
        &mut reads,
        1 << 20,
    );
    for (&id, &slots) in scratch.heads.iter().zip(&scratch.slots) {
        ring.push_used(PackedHead { id, slots }, 0);
    }
    ring.publish_used();
    assert_eq!(ring.in_flight(), 0, "every chain taken is returned");
    ring.store_back(q);
    (counts, broken, scratch.heads.clone())
}

#[test]
fn positions_carry_the_wrap_counter_in_bit_15() {
    let p = Pos::from_base(0x8003);
    assert_eq!(p, Pos { idx: 3, wrap: true });
    assert_eq!(p.to_base(), 0x8003);
    let q = p.advance(14, 16);
    assert_eq!(
        q,
        Pos {
            idx: 1,
            wrap: false
        }
    );
    assert_eq!(q.advance(15, 16), Pos { idx: 0, wrap: true });
}

#[test]
fn a_queue_whose_position_is_beyond_the_ring_is_not_run() {
    let mem = memory();
    let mut q = queue(16);
    q.set_next_avail(0x8000 | 16);
    assert!(PackedRing::new(&mem, &q).is_none());
}

#[test]
fn chains_are_taken_and_returned_over_many_laps() {
    let mem = memory();
    let mut q = queue(16);
    let mut d = Driver::new(16);
    let len = payload(&mem, BUF);
    let mut returned = 0;
    // 10 laps of a 16-slot ring with chains of 1, 2 and 3 descriptors: ids come back in order
    // at the positions the driver expects, with the flags of the right lap.
    for round in 0..40u16 {
        let n = 1 + round % 3;
        let id = round % 16;
        let descs: Vec<_> = match n {
            1 => vec![(BUF, len, 0)],
            2 => vec![
                (BUF, HDR as u32, 0),
                (BUF + HDR as u64, len - HDR as u32, 0),
            ],
            _ => vec![
                (BUF, HDR as u32, 0),
                (BUF + HDR as u64, 20, 0),
                (BUF + HDR as u64 + 20, len - HDR as u32 - 20, 0),
            ],
        };
        d.post(&mem, id, &descs);
        let (counts, broken, ids) = tx_batch(&mem, &mut q);
        assert!(!broken);
        assert_eq!(
            (counts.frames, counts.bad_descriptor),
            (1, 0),
            "round {round}"
        );
        assert_eq!(counts.bytes, 64);
        assert_eq!(ids, [id]);
        assert_eq!(d.used(&mem, n), Some((id, 0)), "round {round}");
        returned += 1;
    }
    assert_eq!(returned, 40);
    // The device's position went back to the queue with the wrap counter (GET_VRING_BASE).
    let slots: u32 = (0..40u32).map(|r| 1 + r % 3).sum();
    let want = Pos { idx: 0, wrap: true }.advance(0, 16);
    let mut p = want;
    for _ in 0..slots {
        p = p.advance(1, 16);
    }
    assert_eq!(q.next_avail(), p.to_base());
}

#[test]
fn the_batch_is_invisible_until_published_then_appears_at_once() {
    let mem = memory();
    let q = queue(16);
    let mut d = Driver::new(16);
    let len = payload(&mem, BUF);
    for id in 0..3 {
        d.post(&mem, id, &[(BUF, len, 0)]);
    }
    let mut ring = PackedRing::new(&mem, &q).expect("ring");
    let mut scratch = TxScratch::default();
    let mut reads = 0;
    take_packed_chains(
        &mut ring,
        &mut scratch,
        HDR,
        MAX_FRAME,
        Default::default(),
        &mut reads,
        1 << 20,
    );
    for &id in &scratch.heads {
        ring.push_used(PackedHead { id, slots: 1 }, 0);
    }
    let mut peek = Driver::new(16);
    assert_eq!(
        peek.used(&mem, 1),
        None,
        "the first used flags are written last"
    );
    ring.publish_used();
    for id in 0..3 {
        assert_eq!(d.used(&mem, 1), Some((id, 0)));
    }
}

#[test]
fn an_indirect_table_is_walked_in_sequence() {
    let mem = memory();
    let mut q = queue(16);
    let mut d = Driver::new(16);
    let len = payload(&mem, BUF);
    // Entries in sequence; their NEXT flags (here misleading) are ignored.
    let table = [
        (BUF, HDR as u32, F_NEXT),
        (BUF + HDR as u64, len - HDR as u32, 0),
    ];
    for (i, &(addr, l, flags)) in table.iter().enumerate() {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&addr.to_le_bytes());
        b[8..12].copy_from_slice(&l.to_le_bytes());
        b[14..].copy_from_slice(&flags.to_le_bytes());
        mem.write_slice(&b, GuestAddress(INDIRECT + 16 * i as u64))
            .expect("indirect");
    }
    d.post(&mem, 5, &[(INDIRECT, 32, F_INDIRECT)]);
    let (counts, broken, ids) = tx_batch(&mem, &mut q);
    assert!(!broken);
    assert_eq!((counts.frames, counts.bytes), (1, 64));
    assert_eq!(ids, [5]);
    assert_eq!(d.used(&mem, 1), Some((5, 0)));
}

/// One malformed chain between two good ones: it alone is counted, returned, and the ring
/// goes on.
fn hostile_case(name: &str, size: u16, bad: &[(u64, u32, u16)], bad_id: u16) {
    let mem = memory();
    let mut q = queue(size);
    let mut d = Driver::new(size);
    let len = payload(&mem, BUF);
    d.post(&mem, 1, &[(BUF, len, 0)]);
    d.post(&mem, bad_id, bad);
    d.post(&mem, 2, &[(BUF, len, 0)]);
    let (counts, broken, ids) = tx_batch(&mem, &mut q);
    assert!(!broken, "{name}");
    assert_eq!(counts.frames, 2, "{name}");
    assert_eq!(counts.refused(), 1, "{name}");
    assert_eq!(counts.bad_descriptor, 1, "{name}");
    assert_eq!(ids, [1, bad_id, 2], "{name}");
    assert_eq!(d.used(&mem, 1), Some((1, 0)), "{name}");
    assert_eq!(d.used(&mem, bad.len() as u16), Some((bad_id, 0)), "{name}");
    assert_eq!(d.used(&mem, 1), Some((2, 0)), "{name}");
}

#[test]
fn malformed_chains_cost_only_themselves() {
    let len = 76;
    hostile_case("id beyond the ring", 16, &[(BUF, len, 0)], 16);
    hostile_case("id far beyond the ring", 16, &[(BUF, len, 0)], u16::MAX);
    hostile_case("zero length", 16, &[(BUF, 0, 0)], 3);
    hostile_case(
        "zero length in the middle",
        16,
        &[(BUF, HDR as u32, 0), (BUF, 0, 0), (BUF, 64, 0)],
        3,
    );
    hostile_case("outside memory", 16, &[(MEM + 0x1000, len, 0)], 3);
    hostile_case("running off memory", 16, &[(MEM - 40, len, 0)], 3);
    hostile_case("address overflow", 16, &[(u64::MAX - 8, len, 0)], 3);
    hostile_case("device-writable", 16, &[(BUF, len, F_WRITE)], 3);
    hostile_case(
        "indirect with NEXT",
        16,
        &[(INDIRECT, 32, F_INDIRECT), (BUF, len, 0)],
        3,
    );
    hostile_case("indirect outside memory", 16, &[(MEM, 32, F_INDIRECT)], 3);
    hostile_case(
        "indirect of odd length",
        16,
        &[(INDIRECT, 24, F_INDIRECT)],
        3,
    );
    hostile_case(
        "indirect after a descriptor",
        16,
        &[(BUF, HDR as u32, 0), (INDIRECT, 32, F_INDIRECT)],
        3,
    );
    // Longer than MAX_CHAIN_DESCS, yet ending within the ring: the walk stops at the cap, the
    // chain is returned whole.
    let long = vec![(BUF, 1, 0); usize::from(crate::MAX_CHAIN_DESCS) + 10];
    hostile_case("longer than MAX_CHAIN_DESCS", 512, &long, 3);
}

#[test]
fn a_nested_indirect_table_is_refused() {
    let mem = memory();
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&INDIRECT.to_le_bytes());
    b[8..12].copy_from_slice(&16u32.to_le_bytes());
    b[14..].copy_from_slice(&F_INDIRECT.to_le_bytes());
    mem.write_slice(&b, GuestAddress(INDIRECT))
        .expect("indirect");
    let mut q = queue(16);
    let mut d = Driver::new(16);
    d.post(&mem, 4, &[(INDIRECT, 16, F_INDIRECT)]);
    let (counts, broken, ids) = tx_batch(&mem, &mut q);
    assert!(!broken);
    assert_eq!((counts.frames, counts.bad_descriptor), (0, 1));
    assert_eq!(ids, [4]);
    assert_eq!(d.used(&mem, 1), Some((4, 0)));
}

#[test]
fn a_chain_that_never_ends_breaks_the_ring_without_taking_it() {
    let mem = memory();
    let mut q = queue(16);
    let len = payload(&mem, BUF);
    // Every slot says NEXT: the chain goes round the whole ring.
    for slot in 0..16 {
        Driver::write(&mem, slot, BUF, len, 0, F_NEXT | F_AVAIL);
    }
    let (counts, broken, ids) = tx_batch(&mem, &mut q);
    assert!(broken);
    assert_eq!(counts.bad_descriptor, 1);
    assert!(ids.is_empty());
    assert_eq!(q.next_avail(), 0x8000, "nothing taken");
}

#[test]
fn a_batch_stops_at_max_batch_and_at_the_budget() {
    let mem = memory();
    let q = queue(512);
    let mut d = Driver::new(512);
    let len = payload(&mem, BUF);
    for id in 0..300 {
        d.post(&mem, id, &[(BUF, len, 0)]);
    }
    let mut ring = PackedRing::new(&mem, &q).expect("ring");
    let mut scratch = TxScratch::default();
    let mut reads = 0;
    take_packed_chains(
        &mut ring,
        &mut scratch,
        HDR,
        MAX_FRAME,
        Default::default(),
        &mut reads,
        1 << 20,
    );
    assert_eq!(scratch.heads.len(), MAX_BATCH);
    let mut ring = PackedRing::new(&mem, &q).expect("ring");
    let mut scratch = TxScratch::default();
    let mut reads = 0;
    take_packed_chains(
        &mut ring,
        &mut scratch,
        HDR,
        MAX_FRAME,
        Default::default(),
        &mut reads,
        10,
    );
    assert_eq!(scratch.heads.len(), 10);
    assert_eq!(reads, 10);
}

#[test]
fn notifications_follow_the_driver_event_area() {
    let mem = memory();
    let len = payload(&mem, BUF);
    let set_evt = |off_wrap: u16, flags: u16| {
        mem.write_obj(off_wrap.to_le(), GuestAddress(DRIVER_EVT))
            .expect("off_wrap");
        mem.write_obj(flags.to_le(), GuestAddress(DRIVER_EVT + 2))
            .expect("flags");
    };
    // Returns whether returning `n` one-slot chains notifies.
    let batch = |q: &mut Queue, d: &mut Driver, n: u16| {
        for id in 0..n {
            d.post(&mem, id, &[(BUF, len, 0)]);
        }
        let mut ring = PackedRing::new(&mem, q).expect("ring");
        let mut scratch = TxScratch::default();
        let mut reads = 0;
        take_packed_chains(
            &mut ring,
            &mut scratch,
            HDR,
            MAX_FRAME,
            Default::default(),
            &mut reads,
            1 << 20,
        );
        for &id in &scratch.heads {
            ring.push_used(PackedHead { id, slots: 1 }, 0);
        }
        ring.publish_used();
        let notify = ring.needs_notification();
        ring.store_back(q);
        for _ in 0..n {
            d.used(&mem, 1).expect("used");
        }
        notify
    };
    let mut q = queue(16);
    let mut d = Driver::new(16);
    set_evt(0, EVENT_ENABLE);
    assert!(batch(&mut q, &mut d, 2));
    set_evt(0, EVENT_DISABLE);
    assert!(!batch(&mut q, &mut d, 2));
    // EVENT_IDX: notify when the batch passes the driver's slot (with its wrap counter).
    q.set_event_idx(true);
    set_evt(0x8000 | 6, EVENT_DESC); // used so far: 4; this batch covers 4..6
    assert!(!batch(&mut q, &mut d, 2));
    assert!(batch(&mut q, &mut d, 2)); // covers 6..8
                                       // A slot of the next lap is not reached by this one.
    set_evt(2, EVENT_DESC);
    assert!(!batch(&mut q, &mut d, 7)); // 8..15
    assert!(batch(&mut q, &mut d, 4)); // 15..16 and 0..3 of the next lap
                                       // Without EVENT_IDX a DESC request is not valid: notify anyway.
    q.set_event_idx(false);
    set_evt(0, EVENT_DESC);
    assert!(batch(&mut q, &mut d, 1));
}

#[test]
fn kicks_follow_the_device_event_area() {
    let mem = memory();
    let q = queue(16);
    let mut d = Driver::new(16);
    let len = payload(&mem, BUF);
    let kick_flags = || -> u16 { mem.read_obj(GuestAddress(DEVICE_EVT + 2)).expect("flags") };
    let mut ring = PackedRing::new(&mem, &q).expect("ring");
    ring.disable_notification();
    assert_eq!(kick_flags(), EVENT_DISABLE);
    assert!(!ring.enable_notification(), "nothing posted yet");
    assert_eq!(kick_flags(), EVENT_ENABLE);
    d.post(&mem, 0, &[(BUF, len, 0)]);
    assert!(ring.enable_notification(), "a chain is waiting");
}

/// What [`rx_deliver`] saw: each frame's result, then the used descriptors the driver read.
type RxOutcome = (Vec<Result<(), crate::RxDrop>>, Vec<Option<(u16, u32)>>);

#[test]
fn the_one_descriptor_fast_path_agrees_with_the_general_walk() {
    let mem = memory();
    let mut b = vec![0u8; HDR + 200];
    for (i, x) in b.iter_mut().enumerate() {
        *x = i as u8;
    }
    // A header that asks for nothing (a lying one is refused after the walk: tx/hdr.rs).
    b[..HDR].fill(0);
    mem.write_slice(&b, GuestAddress(BUF)).expect("payload");
    // Lengths around the header, the minimum frame, the parse prefix and the maximum.
    for len in [0u32, 11, 12, 20, 25, 26, 40, 44, 45, 100, 212] {
        let q = queue(16);
        let mut d = Driver::new(16);
        d.post(&mem, 1, &[(BUF, len, 0)]);
        let mut ring = PackedRing::new(&mem, &q).expect("ring");
        let mut segs = Vec::new();
        let general = crate::tx::parse_chain(
            ring.map(),
            &mut ring.next_chain().expect("chain"),
            HDR,
            MAX_FRAME,
            &mut segs,
        );
        let mut scratch = TxScratch::default();
        let mut reads = 0;
        take_packed_chains(
            &mut ring,
            &mut scratch,
            HDR,
            MAX_FRAME,
            Default::default(),
            &mut reads,
            1 << 20,
        );
        match general {
            Ok(f) => {
                assert_eq!(scratch.frames, [f], "len {len}");
                assert_eq!(scratch.segs, segs, "len {len}");
            }
            Err(_) => assert!(scratch.frames.is_empty(), "len {len}"),
        }
        assert_eq!(scratch.heads, [1], "len {len}");
    }
}

#[test]
fn a_lying_offload_header_costs_its_frame_on_a_packed_ring_too() {
    let mem = memory();
    let csum = crate::offload::Offloads::host(1 << virtio_bindings::virtio_net::VIRTIO_NET_F_CSUM);
    for single in [true, false] {
        let mut b = vec![0u8; HDR + 100];
        // NEEDS_CSUM with the checksum field past the frame's end.
        b[0] = 1;
        b[6..8].copy_from_slice(&40u16.to_le_bytes());
        b[8..10].copy_from_slice(&200u16.to_le_bytes());
        mem.write_slice(&b, GuestAddress(BUF)).expect("frame");
        let q = queue(16);
        let mut d = Driver::new(16);
        let len = b.len() as u32;
        match single {
            // The one-descriptor fast path, then the general walk (header and frame apart).
            true => d.post(&mem, 1, &[(BUF, len, 0)]),
            false => d.post(
                &mem,
                1,
                &[
                    (BUF, HDR as u32, 0),
                    (BUF + HDR as u64, len - HDR as u32, 0),
                ],
            ),
        }
        let mut ring = PackedRing::new(&mem, &q).expect("ring");
        let mut scratch = TxScratch::default();
        let mut reads = 0;
        let (counts, broken) = take_packed_chains(
            &mut ring,
            &mut scratch,
            HDR,
            MAX_FRAME,
            csum,
            &mut reads,
            1 << 20,
        );
        assert!(!broken);
        assert_eq!(counts.bad_offload, 1, "single descriptor: {single}");
        assert!(scratch.frames.is_empty() && scratch.segs.is_empty());
        assert_eq!(scratch.heads, [1], "the chain is still returned");
    }
}
