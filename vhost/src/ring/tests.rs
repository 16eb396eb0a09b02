//! Unit tests of [`super`].

//! The cost of one chain walk is bounded by MAX_CHAIN_DESCS, whatever the ring or indirect
//! table size, and legal chains (indirect tables longer than the ring included) still walk.
use super::*;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

const DESC: u64 = 0x0;
const INDIRECT: u64 = 0x8_0000;
const BUF: u64 = 0x9_0000;

fn memory() -> GuestMemory {
    GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).expect("memory")
}

fn ring_queue(size: u16) -> Queue {
    let n = u64::from(size);
    let avail = DESC + 16 * n;
    let used = (avail + 6 + 2 * n).div_ceil(4) * 4;
    let mut q = Queue::new(size).expect("queue");
    q.set_size(size);
    q.set_desc_table_address(Some(DESC as u32), Some(0));
    q.set_avail_ring_address(Some(avail as u32), Some(0));
    q.set_used_ring_address(Some(used as u32), Some(0));
    q.set_ready(true);
    q
}

fn write_desc(mem: &GuestMemory, at: u64, d: (u64, u32, u16, u16)) {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&d.0.to_le_bytes());
    b[8..12].copy_from_slice(&d.1.to_le_bytes());
    b[12..14].copy_from_slice(&d.2.to_le_bytes());
    b[14..].copy_from_slice(&d.3.to_le_bytes());
    mem.write_slice(&b, GuestAddress(at)).expect("desc");
}

/// Walks the chain at head 0: (descriptors yielded, final error, reads).
fn walk(mem: &GuestMemory, q: &Queue) -> (usize, Option<ChainError>, u16) {
    let ring = SplitRing::new(mem, q).expect("ring");
    let mut chain = ring.chain(0);
    let mut n = 0;
    let mut err = None;
    for d in &mut chain {
        match d {
            Ok(_) => n += 1,
            Err(e) => err = Some(e),
        }
    }
    (n, err, chain.reads())
}

#[test]
fn a_self_loop_in_a_large_ring_costs_max_chain_descs_reads() {
    let mem = memory();
    // 32768 entries would not fit this memory; 4096 is plenty above the cap.
    let q = ring_queue(4096);
    write_desc(&mem, DESC, (BUF, 2048, F_NEXT, 0));
    let (n, err, reads) = walk(&mem, &q);
    assert_eq!(err, Some(ChainError::TooLong));
    assert_eq!(reads, MAX_CHAIN_DESCS);
    assert_eq!(n, usize::from(MAX_CHAIN_DESCS));
}

#[test]
fn a_small_ring_still_detects_its_loops_at_its_size() {
    let mem = memory();
    let q = ring_queue(16);
    write_desc(&mem, DESC, (BUF, 64, F_NEXT, 0));
    let (_, err, reads) = walk(&mem, &q);
    assert_eq!(err, Some(ChainError::TooLong));
    assert_eq!(reads, 16);
}

#[test]
fn an_indirect_loop_is_bounded_too() {
    let mem = memory();
    let q = ring_queue(16);
    // A 4096-entry indirect table whose entry 0 loops onto itself.
    write_desc(&mem, DESC, (INDIRECT, 16 * 4096, F_INDIRECT, 0));
    write_desc(&mem, INDIRECT, (BUF, 64, F_NEXT, 0));
    let (_, err, reads) = walk(&mem, &q);
    assert_eq!(err, Some(ChainError::TooLong));
    assert_eq!(reads, MAX_CHAIN_DESCS);
}

#[test]
fn an_indirect_table_longer_than_the_ring_is_legal() {
    let mem = memory();
    let q = ring_queue(16);
    let len = 64u16;
    write_desc(&mem, DESC, (INDIRECT, 16 * u32::from(len), F_INDIRECT, 0));
    for i in 0..len {
        let flags = if i + 1 < len { F_NEXT } else { 0 };
        write_desc(&mem, INDIRECT + 16 * u64::from(i), (BUF, 32, flags, i + 1));
    }
    let (n, err, reads) = walk(&mem, &q);
    assert_eq!(err, None);
    assert_eq!(n, usize::from(len));
    assert_eq!(reads, len + 1);
}

#[test]
fn chains_up_to_the_cap_are_legal() {
    let mem = memory();
    let q = ring_queue(4096);
    for i in 0..MAX_CHAIN_DESCS {
        let flags = if i + 1 < MAX_CHAIN_DESCS { F_NEXT } else { 0 };
        write_desc(&mem, DESC + 16 * u64::from(i), (BUF, 8, flags, i + 1));
    }
    let (n, err, reads) = walk(&mem, &q);
    assert_eq!(err, None);
    assert_eq!(n, usize::from(MAX_CHAIN_DESCS));
    assert_eq!(reads, MAX_CHAIN_DESCS);
}
