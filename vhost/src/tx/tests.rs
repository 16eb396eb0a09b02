//! Unit tests of [`super`].

//! The fast path must accept exactly what the general walk accepts, with the same result;
//! a frame's copy starts with the bytes the switch checked.
use super::*;
use crate::memory::GuestMemory;
use crate::ring::F_NEXT;
use proptest::prelude::*;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress};

const QSIZE: u16 = 16;
const DESC: u64 = 0x0;
const AVAIL: u64 = 0x100;
const USED: u64 = 0x200;
const MAX_FRAME: usize = 1522;

fn memory() -> GuestMemory {
    // Two adjacent regions (a buffer may straddle them) and a hole after them.
    GuestMemory::from_ranges(&[(GuestAddress(0), 0x10000), (GuestAddress(0x10000), 0x10000)])
        .expect("memory")
}

fn queue() -> Queue {
    let mut q = Queue::new(QSIZE).expect("queue");
    q.set_size(QSIZE);
    q.set_desc_table_address(Some(DESC as u32), Some(0));
    q.set_avail_ring_address(Some(AVAIL as u32), Some(0));
    q.set_used_ring_address(Some(USED as u32), Some(0));
    q.set_ready(true);
    q
}

fn write_desc(mem: &GuestMemory, i: u16, d: (u64, u32, u16, u16)) {
    let at = GuestAddress(DESC + 16 * u64::from(i));
    mem.write_obj(d.0.to_le(), at).expect("addr");
    mem.write_obj(d.1.to_le(), at.unchecked_add(8))
        .expect("len");
    mem.write_obj(d.2.to_le(), at.unchecked_add(12))
        .expect("flags");
    mem.write_obj(d.3.to_le(), at.unchecked_add(14))
        .expect("next");
}

fn addr() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0x1000u64),
        Just(0x1003),
        Just(0xfff0),
        Just(0x1fff0),
        Just(0x20000),
        Just(u64::MAX - 8),
        0x1000u64..0x1ffff,
    ]
}

fn len() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(12u32),
        Just(10),
        Just(0u32),
        Just(10),
        Just(12),
        Just(13),
        Just(25),
        Just(26),
        Just(64),
        Just(76),
        Just(1522),
        Just(1534),
        Just(1535),
        Just(70000),
        0u32..2000,
    ]
}

/// Mostly plausible descriptors (NEXT or nothing, `next` pointing forward), so that the
/// common layouts and their near misses are well covered.
fn desc() -> impl Strategy<Value = (u64, u32, u16, u16)> {
    (
        addr(),
        len(),
        prop_oneof![4 => Just(1u16), 4 => Just(0), 2 => 0u16..8],
        prop_oneof![4 => Just(1u16), 4 => Just(2), 1 => Just(0), 1 => Just(40)],
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn fast_path_agrees_with_the_general_walk(
        d0 in desc(),
        d1 in desc(),
        d2 in desc(),
        hdr_len in prop_oneof![Just(12usize), Just(10)],
    ) {
        let mem = memory();
        write_desc(&mem, 0, d0);
        write_desc(&mem, 1, d1);
        write_desc(&mem, 2, d2);
        let q = queue();
        let ring = SplitRing::new(&mem, &q).expect("ring");
        let mut fast_segs = Vec::new();
        let mut reads = 0;
        let fast = parse_head(&ring, 0, hdr_len, MAX_FRAME, &mut fast_segs, &mut reads);
        let mut slow_segs = Vec::new();
        let mut chain = ring.chain(0);
        let slow = parse_chain(ring.map(), &mut chain, hdr_len, MAX_FRAME, &mut slow_segs);
        prop_assert!(reads >= 1 && reads <= u32::from(chain.reads().max(1)).max(2));
        prop_assert_eq!(fast, slow);
        prop_assert_eq!(fast_segs, slow_segs);
    }
}

/// A frame of `lens` pieces (after a 12-byte header descriptor), parsed, then rewritten
/// entirely by the guest: a copy shows the checked prefix as it was parsed and the rest as
/// it is now.
fn copied_after_rewrite(lens: &[u32]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let mem = memory();
    let total: u32 = lens.iter().sum();
    let before: Vec<u8> = (0..total).map(|i| i as u8).collect();
    let after: Vec<u8> = (0..total).map(|i| !(i as u8)).collect();
    write_desc(&mem, 0, (0x1000, 12, F_NEXT, 1));
    let mut at = 0x2000u64;
    for (k, &l) in lens.iter().enumerate() {
        let i = k as u16 + 1;
        let flags = if k + 1 < lens.len() { F_NEXT } else { 0 };
        write_desc(&mem, i, (at, l, flags, i + 1));
        at += u64::from(l) + 8;
    }
    let place = |bytes: &[u8]| {
        let (mut at, mut off) = (0x2000u64, 0usize);
        for &l in lens {
            let l = l as usize;
            mem.write_slice(&bytes[off..off + l], GuestAddress(at))
                .expect("frame");
            off += l;
            at += l as u64 + 8;
        }
    };
    place(&before);
    let q = queue();
    let ring = SplitRing::new(&mem, &q).expect("ring");
    let mut segs = Vec::new();
    let mut reads = 0;
    let f = parse_head(&ring, 0, 12, MAX_FRAME, &mut segs, &mut reads).expect("valid");
    place(&after);
    let frames = [f];
    let batch = crate::FrameBatch::new(&frames, &segs);
    let out = crate::fuzz_api::delivered_bytes(&batch.frame(0));
    assert_eq!(out.len(), total as usize);
    (before, after, out)
}

#[test]
fn what_was_checked_is_what_is_delivered() {
    for lens in [
        &[64u32][..],
        &[14],
        &[20],
        &[32],
        &[33],
        &[1500],
        &[6, 6, 2, 50],
        &[2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 40],
        &[31, 2, 100],
    ] {
        let (before, after, out) = copied_after_rewrite(lens);
        let k = out.len().min(PREFIX_LEN);
        assert_eq!(&out[..k], &before[..k], "checked prefix, pieces {lens:?}");
        assert_eq!(
            &out[k..],
            &after[k..],
            "rest from guest memory, pieces {lens:?}"
        );
    }
}
