//! Tests of the RX drain (`rx.rs`): reposting the same descriptors, malformed used entries.

use std::sync::atomic::Ordering;

use super::*;
use crate::vring::{RingAddrs, DESC_SIZE};

const BUF: u32 = 256;

struct Rig {
    mem: GuestMem,
    ring: RingAddrs,
    bufs: u64,
    rx: RxQueue,
    used: u16,
}

impl Rig {
    fn new(size: u16, posted: usize) -> Self {
        let mem = GuestMem::new(1 << 20).unwrap();
        let (ring, end) = RingAddrs::layout(0, size);
        let q = DriverQueue::new(&mem, ring, 0, true).unwrap();
        let bufs = end.div_ceil(4096) * 4096;
        let mut rx = RxQueue::new(q, bufs, BUF, NET_HDR_V1_LEN, false);
        assert_eq!(rx.post(&mem, posted).unwrap(), posted);
        Rig {
            mem,
            ring,
            bufs,
            rx,
            used: 0,
        }
    }

    fn avail(&self, k: u16) -> u16 {
        let slot = u64::from(k % self.ring.size);
        self.mem
            .load_u16(self.ring.avail + 4 + 2 * slot, Ordering::Acquire)
            .unwrap()
    }

    fn avail_idx(&self) -> u16 {
        self.mem
            .load_u16(self.ring.avail + 2, Ordering::Acquire)
            .unwrap()
    }

    fn desc(&self, i: u16) -> [u8; 16] {
        let mut b = [0u8; 16];
        self.mem
            .read(self.ring.desc + DESC_SIZE * u64::from(i), &mut b)
            .unwrap();
        b
    }

    /// The device returns `(id, len)` entries (published with one used-index store).
    fn complete(&mut self, entries: &[(u32, u32)]) {
        for &(id, len) in entries {
            let slot = u64::from(self.used % self.ring.size);
            let mut e = [0u8; 8];
            e[..4].copy_from_slice(&id.to_le_bytes());
            e[4..].copy_from_slice(&len.to_le_bytes());
            self.mem.write(self.ring.used + 4 + 8 * slot, &e).unwrap();
            self.used = self.used.wrapping_add(1);
        }
        self.mem
            .write(self.ring.used + 2, &self.used.to_le_bytes())
            .unwrap();
    }
}

#[test]
fn drain_reposts_the_same_descriptors() {
    let mut r = Rig::new(8, 4);
    assert_eq!(r.avail_idx(), 4);
    let d2 = r.desc(2);
    r.complete(&[(2, 12 + 60), (0, 12 + 100)]);
    assert_eq!(r.rx.drain_count(&r.mem).unwrap(), (2, 160));
    assert_eq!(r.avail_idx(), 6);
    assert_eq!((r.avail(4), r.avail(5)), (2, 0));
    assert_eq!(r.desc(2), d2);
    assert_eq!(r.rx.posted(), 4);
    assert_eq!(r.rx.device_errors, 0);
    // Nothing pending: nothing published.
    assert_eq!(r.rx.drain_count(&r.mem).unwrap(), (0, 0));
    assert_eq!(r.avail_idx(), 6);
    // The reposted buffers come back again.
    r.complete(&[(0, 12 + 1), (2, 12 + 2)]);
    assert_eq!(r.rx.drain_count(&r.mem).unwrap(), (2, 3));
    assert_eq!(r.rx.posted(), 4);
}

#[test]
fn malformed_used_entries_are_counted_and_not_reposted() {
    let mut r = Rig::new(8, 4);
    // A repeated id, an id never posted, one beyond the queue, an oversize length.
    r.complete(&[(1, 20), (1, 20), (5, 20), (99, 20), (3, BUF + 1)]);
    assert_eq!(
        r.rx.drain_count(&r.mem).unwrap(),
        (2, 8 + u64::from(BUF) - 12)
    );
    assert_eq!(r.rx.device_errors, 4);
    assert_eq!(r.rx.q.bogus_used, 3);
    assert_eq!(r.avail_idx(), 6);
    assert_eq!((r.avail(4), r.avail(5)), (1, 3));
    assert_eq!(r.rx.posted(), 4);
    // The general path still sees them as posted: returned again, they are valid.
    r.complete(&[(3, 12), (1, 12)]);
    assert_eq!(r.rx.drain_count(&r.mem).unwrap(), (2, 0));
    assert_eq!(r.rx.device_errors, 4);
}

#[test]
fn reposting_rewrites_descriptors_once_the_table_was_written_directly() {
    let mut r = Rig::new(8, 2);
    let good = r.desc(0);
    let garbage = [0xeeu8; 16];
    r.mem.write(r.ring.desc, &garbage).unwrap();
    r.complete(&[(0, 12)]);
    r.rx.drain_count(&r.mem).unwrap();
    assert_eq!(r.desc(0), garbage, "fixed descriptors are not rewritten");
    r.rx.forbid_fixed();
    r.complete(&[(0, 12)]);
    r.rx.drain_count(&r.mem).unwrap();
    assert_eq!(r.desc(0), good);
    assert_eq!(
        u64::from_le_bytes(good[..8].try_into().unwrap()),
        r.bufs,
        "descriptor 0 describes buffer 0"
    );
}
