//! Tests of the fixed TX pair layout (`tx_fixed.rs`) and its coexistence with the general
//! allocator on the same queue.

use std::sync::atomic::Ordering;

use super::*;
use crate::tx::TxLayout;
use crate::vring::{DriverQueue, RawDesc, RingAddrs, DESC_SIZE};

const SLOT: u32 = 128;

struct Rig {
    mem: GuestMem,
    ring: RingAddrs,
    slots: u64,
    tx: TxQueue,
    /// Used entries the fake device has published.
    used: u16,
}

impl Rig {
    fn new(size: u16) -> Self {
        let mem = GuestMem::new(1 << 20).unwrap();
        let (ring, end) = RingAddrs::layout(0, size);
        let q = DriverQueue::new(&mem, ring, 0, true).unwrap();
        let slots = end.div_ceil(4096) * 4096;
        let ind = slots + u64::from(size) * u64::from(SLOT);
        let tx = TxQueue::new(q, slots, SLOT, ind, true);
        Rig {
            mem,
            ring,
            slots,
            tx,
            used: 0,
        }
    }

    fn send(&mut self, frame: &[u8], layout: TxLayout) -> Result<(), GuestError> {
        let hdr = [0u8; NET_HDR_V1_LEN];
        self.tx.enqueue(&self.mem, &hdr, frame, layout)?;
        self.tx.q.publish(&self.mem)
    }

    fn batch(&mut self, frames: &[&[u8]]) -> usize {
        let hdr = [0u8; NET_HDR_V1_LEN];
        let v = self.tx.q.view(&self.mem).unwrap();
        let n = self.tx.enqueue_fixed_run(&self.mem, &v, &hdr, frames);
        self.tx.q.publish_in(&v);
        n
    }

    /// Avail entry `k` (absolute index).
    fn avail(&self, k: u16) -> u16 {
        let slot = u64::from(k % self.ring.size);
        self.mem
            .load_u16(self.ring.avail + 4 + 2 * slot, Ordering::Acquire)
            .unwrap()
    }

    fn desc(&self, i: u16) -> (u64, u32, u16, u16) {
        let mut b = [0u8; 16];
        self.mem
            .read(self.ring.desc + DESC_SIZE * u64::from(i), &mut b)
            .unwrap();
        let w =
            |r: std::ops::Range<usize>| b[r].iter().rev().fold(0u64, |a, &x| a << 8 | u64::from(x));
        (w(0..8), w(8..12) as u32, w(12..14) as u16, w(14..16) as u16)
    }

    /// The device returns `ids` (published with one used-index store).
    fn complete(&mut self, ids: &[u32]) {
        for &id in ids {
            let slot = u64::from(self.used % self.ring.size);
            self.mem
                .write(self.ring.used + 4 + 8 * slot, &id.to_le_bytes())
                .unwrap();
            self.used = self.used.wrapping_add(1);
        }
        self.mem
            .write(self.ring.used + 2, &self.used.to_le_bytes())
            .unwrap();
    }

    fn reclaim(&mut self) -> usize {
        self.tx.reclaim(&self.mem).unwrap()
    }
}

#[test]
fn pairs_are_set_up_once_and_sending_writes_length_and_avail_entry() {
    let mut r = Rig::new(8);
    let frames: Vec<Vec<u8>> = (0..3u8).map(|k| vec![k; 60 + usize::from(k)]).collect();
    let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
    assert_eq!(r.batch(&refs), 3);
    assert!(r.tx.is_fixed());
    assert_eq!(r.tx.free_count(), 2);
    for (k, f) in frames.iter().enumerate() {
        let head = r.avail(k as u16);
        assert_eq!(head % 2, 0, "pair heads are even");
        let slot = |i: u16| r.slots + u64::from(i) * u64::from(SLOT);
        assert_eq!(r.desc(head), (slot(head), 12, DESC_F_NEXT, head + 1));
        assert_eq!(r.desc(head + 1), (slot(head + 1), f.len() as u32, 0, 0));
        let mut got = vec![0u8; f.len()];
        r.mem.read(slot(head + 1), &mut got).unwrap();
        assert_eq!(&got, f);
    }
    // Out-of-order completion frees exactly the pairs returned.
    let heads: Vec<u32> = (0..3).map(|k| u32::from(r.avail(k))).collect();
    r.complete(&[heads[2], heads[0]]);
    assert_eq!(r.reclaim(), 2);
    assert_eq!(r.tx.free_count(), 6);
    r.complete(&[heads[1]]);
    assert_eq!(r.reclaim(), 1);
    assert_eq!(r.tx.free_count(), 8);
    assert_eq!(r.tx.q.bogus_used, 0);
}

#[test]
fn malformed_used_ids_are_counted_never_trusted() {
    let mut r = Rig::new(8);
    let f = [7u8; 64];
    assert_eq!(r.batch(&[&f, &f]), 2);
    let (h0, h1) = (r.avail(0), r.avail(1));
    // A frame descriptor (odd), a free pair's head, the queue size, far out of range, a valid
    // head, the same head again.
    let free_head = (0..8).step_by(2).find(|&h| h != h0 && h != h1).unwrap();
    r.complete(&[
        u32::from(h0 + 1),
        u32::from(free_head),
        8,
        u32::MAX,
        u32::from(h0),
        u32::from(h0),
    ]);
    assert_eq!(r.reclaim(), 1);
    assert_eq!(r.tx.q.bogus_used, 5);
    assert_eq!(r.tx.free_count(), 6);
    // The pair stack holds no duplicate: filling the ring uses four distinct pairs.
    assert_eq!(r.batch(&[&f[..]; 8]), 3);
    let mut heads: Vec<u16> = (0..4).map(|k| r.avail(2 + k)).collect();
    heads.push(h1);
    heads.sort_unstable();
    heads.dedup();
    assert_eq!(heads.len(), 4, "{heads:?}");
    assert_eq!(r.tx.free_count(), 0);
    let full = r.send(&f, TxLayout::HeaderSeparate);
    assert!(
        matches!(full, Err(GuestError::TxRingFull { .. })),
        "{full:?}"
    );
    assert!(r.tx.is_fixed(), "a full ring does not leave the layout");
}

#[test]
fn raw_chain_leaves_the_layout_and_in_flight_pairs_stay_chains() {
    let mut r = Rig::new(8);
    let f = [1u8; 64];
    r.send(&f, TxLayout::HeaderSeparate).unwrap();
    r.send(&f, TxLayout::HeaderSeparate).unwrap();
    let (h0, h1) = (r.avail(0), r.avail(1));
    assert!(r.tx.is_fixed());
    let raw =
        r.tx.enqueue_raw(&r.mem, &[RawDesc::new(0, 4, 0); 3])
            .unwrap();
    assert!(!r.tx.is_fixed());
    assert_eq!(r.tx.free_count(), 1);
    assert!(![h0, h0 + 1, h1, h1 + 1].contains(&raw), "raw head {raw}");
    // While a chain is in flight, the header+frame layout uses the general allocator.
    r.send(&f, TxLayout::HeaderSeparate).unwrap_err();
    r.complete(&[u32::from(h1)]);
    r.send(&f, TxLayout::HeaderSeparate).unwrap();
    assert!(!r.tx.is_fixed());
    let g = r.avail(3);
    assert_eq!(r.tx.free_count(), 1);
    // The general reclaim frees the pair chain, the raw chain and the general chain alike.
    r.complete(&[
        u32::from(h0),
        u32::from(raw),
        u32::from(g),
        u32::from(h0 + 1),
    ]);
    assert_eq!(r.reclaim(), 3);
    assert_eq!(
        r.tx.q.bogus_used, 1,
        "a pair's frame descriptor is not a head"
    );
    assert_eq!(r.tx.free_count(), 8);
    // Idle again: the next send sets the pairs up afresh.
    r.send(&f, TxLayout::HeaderSeparate).unwrap();
    assert!(r.tx.is_fixed());
    let h = r.avail(4);
    assert_eq!(r.desc(h).1, 12);
    assert_eq!(r.desc(h + 1).1, 64);
}

#[test]
fn other_layouts_and_header_lengths_fall_back_correctly() {
    let mut r = Rig::new(8);
    let f = [2u8; 64];
    r.send(&f, TxLayout::HeaderSeparate).unwrap();
    let h0 = r.avail(0);
    r.send(&f, TxLayout::HeaderInline).unwrap();
    assert!(!r.tx.is_fixed());
    let inline = r.avail(1);
    assert_eq!(r.desc(inline).1, 12 + 64);
    // A frame larger than a slot in a batch: the run stops before it, leaving the layout intact.
    r.complete(&[u32::from(h0), u32::from(inline)]);
    assert_eq!(r.reclaim(), 2);
    let big = [3u8; SLOT as usize + 1];
    assert_eq!(r.batch(&[&f, &big, &f]), 1);
    assert!(r.tx.is_fixed());
    // Another header length sets the pairs up again once idle.
    r.complete(&[u32::from(r.avail(2))]);
    assert_eq!(r.reclaim(), 1);
    let v = r.tx.q.view(&r.mem).unwrap();
    r.tx.enqueue_in(&r.mem, &v, &[9u8; 10], &f, TxLayout::HeaderSeparate)
        .unwrap();
    assert!(r.tx.is_fixed());
    let h = r.avail(3);
    assert_eq!(r.desc(h).1, 10);
    let mut hdr = [0u8; 10];
    r.mem
        .read(r.slots + u64::from(h) * u64::from(SLOT), &mut hdr)
        .unwrap();
    assert_eq!(hdr, [9u8; 10]);
}

#[test]
fn forbidden_layout_is_never_entered_again() {
    let mut r = Rig::new(8);
    let f = [4u8; 64];
    r.send(&f, TxLayout::HeaderSeparate).unwrap();
    assert!(r.tx.is_fixed());
    r.tx.forbid_fixed();
    assert!(!r.tx.is_fixed());
    assert_eq!(r.tx.free_count(), 6);
    r.complete(&[u32::from(r.avail(0))]);
    assert_eq!(r.reclaim(), 1);
    assert_eq!(r.batch(&[&f]), 0);
    r.send(&f, TxLayout::HeaderSeparate).unwrap();
    assert!(!r.tx.is_fixed());
    assert_eq!(r.tx.free_count(), 6);
}

#[test]
fn tiny_queue_never_uses_pairs() {
    let mut r = Rig::new(1);
    let f = [5u8; 64];
    assert_eq!(r.batch(&[&f]), 0);
    assert!(!r.tx.is_fixed());
    r.send(&[], TxLayout::HeaderSeparate).unwrap();
    assert_eq!(r.tx.free_count(), 0);
}
