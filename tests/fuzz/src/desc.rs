//! Target `desc_chain`: the TX descriptor-chain walker and the RX writer over arbitrary guest
//! memory and ring contents.
//!
//! The input lays out guest memory (one to three anonymous regions, with or without holes
//! between them), a TX and an RX split queue in it (configured through the same queue object
//! SET_VRING_* uses, so sizes and alignments the frontend could not set are refused the same
//! way), and then fills the memory with the rest of the input. The TX ring is drained as the
//! port drains it and every accepted frame is delivered into the RX ring.
//!
//! Properties: nothing panics; every accepted frame is 14..=max_frame bytes long, made of
//! 1..=64 non-empty segments that each lie inside one guest memory region, whose host
//! addresses are the translations of their guest addresses, and whose lengths add up to the
//! frame's; the frame's bytes (and parse prefix) are the bytes at those guest addresses; the
//! RX ring counts every frame offered to it exactly once.
//!
//! Input: `flags:u8` (bit 0 VERSION_1, bit 1 MRG_RXBUF, bit 2 EVENT_IDX, bit 3 raw ring
//! addresses), `regions:u8`, per region `pages:u8 gap:u8`, `max_frame:u16`, per queue (TX then
//! RX) `size_log2:u8 desc avail used next_avail:u16 next_used:u16` (addresses `u16` scaled to
//! their alignment, or `u32` raw with flag bit 3), then the memory contents.

use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryBackend, GuestMemoryRegion};
use vswitch_vhost::features::{NET_HDR_LEGACY_LEN, NET_HDR_V1_LEN};
use vswitch_vhost::frame::MIN_FRAME_LEN;
use vswitch_vhost::fuzz_api::{self, QueueSetup};
use vswitch_vhost::memory::{GuestMemory, GuestMemoryAtomic};
use vswitch_vhost::tx::MAX_SEGS_PER_FRAME;
use vswitch_vhost::wire::PREFIX_LEN;
use vswitch_vhost::{FrameRef, RxDrop};

use crate::input::Input;

const PAGE: usize = 4096;
/// Largest ring a port accepts (PortConfig's default).
const MAX_QUEUE_SIZE: u16 = 32768;
/// Batches drained per input (a batch holds up to 256 chains).
const MAX_BATCHES: usize = 4;

const VIRTIO_F_VERSION_1: u64 = 1 << 32;
const VIRTIO_NET_F_MRG_RXBUF: u64 = 1 << 15;
const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;

/// Runs one input; panics when a property does not hold.
pub fn run(data: &[u8]) {
    run_counted(data);
}

/// What one input did: frames accepted from TX, and delivered into RX.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// TX chains accepted as frames.
    pub frames: u64,
    /// TX chains refused (malformed, oversize, runt).
    pub refused: u64,
    /// Frames written into the RX ring.
    pub delivered: u64,
}

/// Runs one input and says what it did; panics when a property does not hold.
pub fn run_counted(data: &[u8]) -> Outcome {
    let mut inp = Input::new(data);
    let flags = inp.u8();
    let mut features = 0u64;
    if flags & 1 != 0 {
        features |= VIRTIO_F_VERSION_1;
    }
    if flags & 2 != 0 {
        features |= VIRTIO_NET_F_MRG_RXBUF;
    }
    let event_idx = flags & 4 != 0;
    if event_idx {
        features |= VIRTIO_RING_F_EVENT_IDX;
    }
    let raw_addrs = flags & 8 != 0;
    let hdr_len = if features & (VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MRG_RXBUF) != 0 {
        NET_HDR_V1_LEN
    } else {
        NET_HDR_LEGACY_LEN
    };

    let Some(mem) = memory(&mut inp) else {
        return Outcome::default();
    };
    let max_frame = usize::from(inp.u16() % 9300);
    let tx_setup = queue(&mut inp, raw_addrs, event_idx);
    let rx_setup = queue(&mut inp, raw_addrs, event_idx);
    fill(&mem, inp.rest());

    let atomic = GuestMemoryAtomic::new(mem);
    let snapshot = atomic.memory();
    let mem: &GuestMemory = &snapshot;
    let Some(tx) = fuzz_api::vring(&atomic, &tx_setup) else {
        return Outcome::default();
    };
    let Some(rx_vring) = fuzz_api::vring(&atomic, &rx_setup) else {
        return Outcome::default();
    };
    let rx = fuzz_api::rx_ring(rx_vring, atomic.clone(), features)
        .expect("the harness needs an eventfd and a SIGBUS table slot");

    let mut offered = 0u64;
    let mut outcomes = [0u64; 5];
    let mut buf = vec![0u8; 9300];
    let counts = fuzz_api::drain_tx(mem, &tx, hdr_len, max_frame, MAX_BATCHES, |batch, _| {
        assert!(batch.len() <= 256, "batch of {} frames", batch.len());
        for f in batch.iter() {
            check_frame(mem, &f, max_frame, &mut buf);
        }
        let delivered = rx.with_writer(|w| {
            for f in batch.iter() {
                let i = match w.deliver(f) {
                    Ok(()) => 0,
                    Err(RxDrop::NoBuffer) => 1,
                    Err(RxDrop::BadDescriptor) => 2,
                    Err(RxDrop::Oversize) => 3,
                    Err(RxDrop::Offload) => 4,
                };
                outcomes[i] += 1;
            }
        });
        if delivered.is_some() {
            offered += batch.len() as u64;
        }
    });
    let s = fuzz_api::rx_stats(&rx);
    assert_eq!(s.to_guest_frames, outcomes[0], "delivered frames counted");
    assert_eq!(s.rx_no_buffer, outcomes[1], "no_buffer drops counted");
    assert_eq!(
        s.rx_bad_descriptor, outcomes[2],
        "bad descriptor drops counted"
    );
    assert_eq!(s.rx_oversize, outcomes[3], "oversize drops counted");
    assert_eq!(
        outcomes.iter().sum::<u64>(),
        offered,
        "every frame offered once"
    );
    let counts = counts.unwrap_or_default();
    Outcome {
        frames: counts.frames,
        refused: counts.refused(),
        delivered: outcomes[0],
    }
}

/// Checks one accepted TX frame against guest memory.
fn check_frame(mem: &GuestMemory, f: &FrameRef<'_>, max_frame: usize, buf: &mut [u8]) {
    let len = f.len();
    assert!(
        (MIN_FRAME_LEN..=max_frame).contains(&len),
        "accepted frame of {len} bytes (max {max_frame})"
    );
    let segs = f.segments();
    assert!(
        (1..=MAX_SEGS_PER_FRAME).contains(&segs.len()),
        "{} segments",
        segs.len()
    );
    let hosts = fuzz_api::host_segments(f);
    assert_eq!(hosts.len(), segs.len());
    let mut total = 0usize;
    let mut want = Vec::with_capacity(len);
    for (s, &(host, hlen)) in segs.iter().zip(&hosts) {
        let n = s.len as usize;
        assert!(n > 0, "empty segment");
        assert_eq!(n, hlen, "host segment length");
        let region = mem
            .find_region(s.addr)
            .unwrap_or_else(|| panic!("segment at {:#x} is not guest memory", s.addr.0));
        let off = s.addr.0 - region.start_addr().0;
        assert!(
            off + n as u64 <= region.len(),
            "segment {:#x}+{n} runs off its region",
            s.addr.0
        );
        let expect_host = mem
            .get_host_address(s.addr)
            .unwrap_or_else(|e| panic!("no host address for {:#x}: {e}", s.addr.0));
        assert_eq!(
            host, expect_host as usize,
            "host address of {:#x}",
            s.addr.0
        );
        let start = want.len();
        want.resize(start + n, 0);
        mem.read_slice(&mut want[start..], s.addr)
            .unwrap_or_else(|e| panic!("segment {:#x}+{n} unreadable: {e}", s.addr.0));
        total += n;
    }
    assert_eq!(total, len, "segments add up to the frame length");
    let copied = f.copy_to(&mut buf[..len]);
    assert_eq!(copied, len);
    assert!(buf[..len] == want[..], "frame bytes are the guest's bytes");
    let p = len.min(PREFIX_LEN);
    assert_eq!(f.prefix(), &want[..p], "parse prefix");
    assert_eq!(f.dst_mac()[..], want[0..6]);
    assert_eq!(f.src_mac()[..], want[6..12]);
}

/// Guest memory: 1 to 3 anonymous regions of 1 to 16 pages, adjacent or with holes.
fn memory(inp: &mut Input<'_>) -> Option<GuestMemory> {
    let n = 1 + usize::from(inp.u8() % 3);
    let mut ranges = Vec::with_capacity(n);
    let mut at = 0u64;
    for _ in 0..n {
        let pages = 1 + usize::from(inp.u8() % 16);
        let gap = match inp.u8() % 4 {
            0 | 1 => 0,
            2 => PAGE as u64,
            _ => 0x10_0000,
        };
        ranges.push((GuestAddress(at + gap), pages * PAGE));
        at += gap + (pages * PAGE) as u64;
    }
    GuestMemory::from_ranges(&ranges).ok()
}

fn queue(inp: &mut Input<'_>, raw: bool, event_idx: bool) -> QueueSetup {
    let size = 1u16 << (inp.u8() % 16);
    let mut addr = |scale: u64| {
        if raw {
            u64::from(inp.u32())
        } else {
            u64::from(inp.u16()) * scale
        }
    };
    let (desc, avail, used) = (addr(16), addr(2), addr(4));
    QueueSetup {
        size,
        max_size: MAX_QUEUE_SIZE,
        desc,
        avail,
        used,
        next_avail: inp.u16(),
        next_used: inp.u16(),
        event_idx,
    }
}

/// Writes `bytes` into guest memory from its lowest address on, region after region.
fn fill(mem: &GuestMemory, mut bytes: &[u8]) {
    for r in mem.iter() {
        if bytes.is_empty() {
            return;
        }
        let n = bytes.len().min(r.len() as usize);
        // Cannot fail: the range lies inside the region.
        let _ = mem.write_slice(&bytes[..n], r.start_addr());
        bytes = &bytes[n..];
    }
}
