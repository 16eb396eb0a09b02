//! VIRTIO_F_IN_ORDER: the port returns every TX and RX chain in the order the driver made it
//! available, whatever happens to it: TX chains that are malformed, oversize or runts, batches
//! cut short by the descriptor budget, RX chains that are malformed, frames spread over several
//! mergeable buffers, and frames that find too few buffers (their chains are given back untaken
//! and the next frame starts with them). The rings wrap several times. Each test compares the
//! whole used ring, entry by entry, with the avail ring: an entry out of order, skipped or
//! written twice fails it.
//!
//! The rings are real split rings in guest memory, configured as the vhost-user handler
//! configures a connection's queues and driven through the port's own TX chain walker and RX
//! writer (`fuzz_api`).

use virtio_bindings::virtio_config::VIRTIO_F_RING_PACKED;
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace};
use vswitch_vhost::features::{offered_features, Negotiated};
use vswitch_vhost::fuzz_api::{self, QueueSetup};
use vswitch_vhost::memory::{GuestMemory, GuestMemoryAtomic};
use vswitch_vhost::{HostFrames, NetHdr, RxDrop};

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const HDR: usize = 12;
const MAX_FRAME: usize = 1522;
const DESC: u64 = 0;
const AVAIL: u64 = 0x1_0000;
const USED: u64 = 0x2_0000;
/// Buffer of descriptor `i`: 4 KiB each, from here.
const BUFS: u64 = 0x10_0000;

fn memory() -> GuestMemoryAtomic {
    GuestMemoryAtomic::new(
        GuestMemory::from_ranges(&[(GuestAddress(0), 0x20_0000)]).expect("guest memory"),
    )
}

fn buf(i: u16) -> u64 {
    BUFS + 0x1000 * u64::from(i)
}

fn write_desc(mem: &GuestMemory, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&addr.to_le_bytes());
    b[8..12].copy_from_slice(&len.to_le_bytes());
    b[12..14].copy_from_slice(&flags.to_le_bytes());
    b[14..].copy_from_slice(&next.to_le_bytes());
    mem.write_slice(&b, GuestAddress(DESC + 16 * u64::from(i)))
        .expect("descriptor");
}

/// The driver's side of one split ring: what it made available, in order.
struct Driver {
    size: u16,
    avail_idx: u16,
    posted: Vec<u16>,
}

impl Driver {
    fn new(size: u16) -> Self {
        Driver {
            size,
            avail_idx: 0,
            posted: Vec::new(),
        }
    }

    fn post(&mut self, mem: &GuestMemory, head: u16) {
        let slot = u64::from(self.avail_idx % self.size);
        mem.write_obj(head.to_le(), GuestAddress(AVAIL + 4 + 2 * slot))
            .expect("avail entry");
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_obj(self.avail_idx.to_le(), GuestAddress(AVAIL + 2))
            .expect("avail idx");
        self.posted.push(head);
    }

    fn used_idx(&self, mem: &GuestMemory) -> u16 {
        u16::from_le(mem.read_obj(GuestAddress(USED + 2)).expect("used idx"))
    }

    /// Used entry number `n` (counted from the start, across wraps): (id, len).
    fn used(&self, mem: &GuestMemory, n: usize) -> (u32, u32) {
        let slot = (n % usize::from(self.size)) as u64;
        let at = GuestAddress(USED + 4 + 8 * slot);
        let id: u32 = mem.read_obj(at).expect("used id");
        let len: u32 = mem.read_obj(GuestAddress(at.0 + 4)).expect("used len");
        (u32::from_le(id), u32::from_le(len))
    }

    /// Every used entry published so far, compared with what was posted: the same heads in the
    /// same order (entries `from..` are read; earlier ones were checked and may be overwritten
    /// by the ring's wrap). Returns how many entries are published in all.
    fn check_order(&self, mem: &GuestMemory, from: usize, what: &str) -> usize {
        let published = usize::from(self.used_idx(mem).wrapping_sub(0));
        // The tests post fewer than 65536 chains in all: the index does not wrap.
        assert!(
            published <= self.posted.len(),
            "{what}: more used than posted"
        );
        for n in from..published {
            let (id, _) = self.used(mem, n);
            assert_eq!(
                id,
                u32::from(self.posted[n]),
                "{what}: used entry {n} returns head {id}, but chain {n} made available was head {}",
                self.posted[n]
            );
        }
        published
    }
}

fn setup(size: u16) -> QueueSetup {
    QueueSetup {
        size,
        max_size: size,
        desc: DESC,
        avail: AVAIL,
        used: USED,
        ..QueueSetup::default()
    }
}

/// Chain `k` of a TX round: its head is scrambled (so that id order differs from slot order)
/// and its kind cycles through good and every refused kind.
fn write_tx_chain(mem: &GuestMemory, size: u16, k: u16) -> (u16, bool) {
    let pairs = size / 2;
    let head = 2 * ((k * 37 + 11) % pairs);
    let second = head + 1;
    let (a, b) = (buf(head), buf(second));
    let frame_ok = match k % 8 {
        // Header and frame in one buffer.
        0 => {
            write_desc(mem, head, a, (HDR + 64) as u32, 0, 0);
            true
        }
        // Header, then frame.
        1 => {
            write_desc(mem, head, a, HDR as u32, F_NEXT, second);
            write_desc(mem, second, b, 64, 0, 0);
            true
        }
        // Device-writable: malformed.
        2 => {
            write_desc(mem, head, a, (HDR + 64) as u32, F_WRITE, 0);
            false
        }
        // Oversize.
        3 => {
            write_desc(mem, head, a, (HDR + 2000) as u32, 0, 0);
            false
        }
        // Runt.
        4 => {
            write_desc(mem, head, a, (HDR + 10) as u32, 0, 0);
            false
        }
        // A loop: costs a ring's worth of descriptor reads, so the budget cuts batches short.
        5 => {
            write_desc(mem, head, a, (HDR + 64) as u32, F_NEXT, head);
            false
        }
        // `next` beyond the table.
        6 => {
            write_desc(mem, head, a, HDR as u32, F_NEXT, size + 44);
            false
        }
        // Empty descriptor.
        _ => {
            write_desc(mem, head, a, 0, 0, 0);
            false
        }
    };
    (head, frame_ok)
}

#[test]
fn tx_chains_come_back_in_avail_order_whatever_became_of_them() {
    let size = 256u16;
    let mem_a = memory();
    let mem = mem_a.memory();
    let vring = fuzz_api::vring(&mem_a, &setup(size)).expect("vring");
    let mut drv = Driver::new(size);
    let mut checked = 0usize;
    let mut partial_batches = 0;
    // Three rounds of 128 chains: 384 in all, the ring wraps.
    for round in 0..3u16 {
        let mut good = 0u64;
        for k in 0..size / 2 {
            let (head, ok) = write_tx_chain(&mem, size, round * 128 + k);
            good += u64::from(ok);
            drv.post(&mem, head);
        }
        // One batch per call, as the port takes them: the budget ends batches early.
        let mut frames = 0u64;
        for call in 0.. {
            assert!(call < 64, "round {round}: the ring is never drained");
            let counts = fuzz_api::drain_tx(&mem, &vring, HDR, MAX_FRAME, 1, |_, _| {})
                .expect("the ring resolves");
            frames += counts.frames;
            let published = drv.check_order(&mem, checked, &format!("TX round {round}"));
            checked = published;
            if published == drv.posted.len() {
                partial_batches += call;
                break;
            }
        }
        assert_eq!(frames, good, "round {round}: frames accepted");
    }
    for n in 0..usize::from(size) {
        assert_eq!(drv.used(&mem, n).1, 0, "TX used entries have length 0");
    }
    assert!(
        partial_batches >= 3,
        "the descriptor budget never cut a batch short ({partial_batches}): the test lost its edge"
    );
}

/// RX buffer `k`: scrambled head, sizes that make frames span several buffers, and some
/// malformed (device-readable) ones. Returns (head, writable room).
fn write_rx_chain(mem: &GuestMemory, size: u16, k: u16) -> (u16, Option<u32>) {
    let head = (k * 21 + 5) % size;
    let (len, flags) = match k % 5 {
        0 => (1536u32, F_WRITE),
        1 => (64, F_WRITE),
        2 => (128, 0),
        3 => (128, F_WRITE),
        _ => (40, F_WRITE),
    };
    write_desc(mem, head, buf(head), len, flags, 0);
    (head, (flags == F_WRITE).then_some(len))
}

fn frame_bytes(len: usize, seq: u16) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    f[14..16].copy_from_slice(&seq.to_be_bytes());
    f
}

#[test]
fn rx_buffers_come_back_in_avail_order_whatever_became_of_them() {
    let size = 64u16;
    let mem_a = memory();
    let mem = mem_a.memory();
    let vring = fuzz_api::vring(&mem_a, &setup(size)).expect("vring");
    // A split ring (this file's driver lays one out), everything else as offered.
    let features = offered_features(false, 1) & !(1u64 << VIRTIO_F_RING_PACKED);
    let neg = Negotiated::from_features(features);
    assert!(neg.in_order && neg.mrg_rxbuf && neg.hdr_len == HDR);
    let rx = fuzz_api::rx_ring(vring, mem_a.clone(), features).expect("rx ring");
    let frames: Vec<Vec<u8>> = [60usize, 200, 1400, 100, 1514, 90]
        .iter()
        .enumerate()
        .map(|(i, &l)| frame_bytes(l, i as u16))
        .collect();
    let mut drv = Driver::new(size);
    let mut readable = Vec::new();
    let mut checked = 0usize;
    let (mut delivered, mut no_buffer, mut bad) = (0u32, 0u32, 0u32);
    let mut next = 0u16;
    let mut seq = 0usize;
    // Rounds: the driver tops the ring up, the switch delivers until a frame finds too few
    // buffers (its chains stay available and the next round's first frame takes them).
    for round in 0..12 {
        let outstanding = drv.posted.len() - checked;
        for _ in outstanding..usize::from(size) {
            let (head, room) = write_rx_chain(&mem, size, next);
            if room.is_none() {
                readable.push(drv.posted.len());
            }
            drv.post(&mem, head);
            next += 1;
        }
        let mut stop = false;
        while !stop {
            let mut batch = HostFrames::default();
            for _ in 0..5 {
                batch
                    .push(&frames[seq % frames.len()], NetHdr::default())
                    .expect("host frame");
                seq += 1;
            }
            let b = batch.batch();
            rx.with_writer(|w| {
                for f in b.iter() {
                    match w.deliver(f) {
                        Ok(()) => delivered += 1,
                        Err(RxDrop::BadDescriptor) => bad += 1,
                        Err(RxDrop::NoBuffer) => {
                            no_buffer += 1;
                            stop = true;
                            break;
                        }
                        Err(RxDrop::Oversize) => panic!("mergeable buffers: nothing is oversize"),
                        Err(RxDrop::Offload) => panic!("plain headers ask for no offload"),
                    }
                }
            })
            .expect("the ring runs");
            checked = drv.check_order(&mem, checked, &format!("RX round {round}"));
        }
    }
    // Every malformed chain went back empty (those still in the ring were overwritten since:
    // only the last ring's worth can be read).
    let first = drv.posted.len().saturating_sub(usize::from(size));
    for &n in readable.iter().filter(|&&n| n >= first && n < checked) {
        assert_eq!(drv.used(&mem, n).1, 0, "a malformed chain goes back empty");
    }
    assert!(
        checked > 3 * usize::from(size),
        "the ring wrapped several times"
    );
    assert!(
        delivered > 100 && bad > 10 && no_buffer >= 12,
        "{delivered} {bad} {no_buffer}"
    );
}
