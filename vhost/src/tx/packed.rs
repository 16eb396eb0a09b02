//! TX chains of a packed ring to frames: the same checks as the split ring's (every chain
//! through [`super::parse_chain`]), plus what the packed layout adds: a chain must end within
//! the ring, and its buffer id must be one the driver can have given (below the ring size).

use vm_memory::GuestAddress;

use super::{parse_chain, read_into, TxBatchCounts, TxChainError, TxScratch, MAX_BATCH};
use crate::frame::{FrameSlot, Segment, MIN_FRAME_LEN};
use crate::offload::Offloads;
use crate::ring::{PackedHead, PackedRing};
use crate::wire::{net_hdr, PREFIX_LEN};

/// Takes chains from a packed `ring` into `scratch` (already cleared): the chains' buffer ids
/// in `heads`, the slots each takes in `slots`, the valid frames in `frames`. Stops as
/// [`super::take_chains`] does. Returns the batch's counts and whether the ring is broken (a
/// chain that does not end within the ring: where the next one starts is unknown).
///
/// A malformed chain (an id beyond the ring included) is still returned to the driver, with
/// nothing written, so that the ring stays in step with it; the frame is dropped and counted.
pub(crate) fn take_packed_chains(
    ring: &mut PackedRing<'_>,
    scratch: &mut TxScratch,
    hdr_len: usize,
    max_frame: usize,
    offloads: Offloads,
    reads: &mut u32,
    budget: u32,
) -> (TxBatchCounts, bool) {
    let walk_max = super::walk_max(offloads, max_frame);
    let TxScratch {
        heads,
        slots,
        frames,
        segs,
    } = scratch;
    let mut counts = TxBatchCounts::default();
    let size = ring.size();
    while heads.len() < MAX_BATCH && *reads < budget {
        if let Some((f, head)) = take_single(ring, hdr_len, walk_max, segs) {
            *reads += 1;
            let r = checked(f, segs, offloads, max_frame);
            counts.count(&r);
            ring.take(head);
            heads.push(head.id);
            slots.push(1);
            if let Ok(f) = r {
                frames.push(f);
            }
            continue;
        }
        let Some(mut chain) = ring.next_chain() else {
            break;
        };
        let start = segs.len();
        let mut r = parse_chain(ring.map(), &mut chain, hdr_len, walk_max, segs);
        let head = match chain.finish(reads) {
            Ok(h) => h,
            Err(_) => {
                segs.truncate(start);
                counts.bad_descriptor += 1;
                return (counts, true);
            }
        };
        if head.id >= size && r.is_ok() {
            segs.truncate(start);
            r = Err(TxChainError::BadDescriptor);
        }
        let r = r.and_then(|f| checked(f, segs, offloads, max_frame));
        counts.count(&r);
        ring.take(head);
        heads.push(head.id);
        slots.push(head.slots);
        if let Ok(f) = r {
            frames.push(f);
        }
    }
    (counts, false)
}

/// `f` once its virtio-net header is checked (`tx/hdr.rs`, as on a split ring); on a refusal its
/// segments are dropped from `segs`.
#[inline(always)]
fn checked(
    mut f: FrameSlot,
    segs: &mut Vec<Segment>,
    offloads: Offloads,
    max_frame: usize,
) -> Result<FrameSlot, TxChainError> {
    match super::hdr::check_header(&mut f, segs, offloads, max_frame) {
        Ok(()) => Ok(f),
        Err(e) => {
            segs.truncate(f.seg_start as usize);
            Err(e)
        }
    }
}

/// The fast path: the next chain is one plainly valid descriptor holding header and frame
/// (DPDK's packed TX path and Linux post that). `None`: not that case, or nothing available
/// (nothing recorded; the general walk decides).
#[inline(always)]
fn take_single(
    ring: &PackedRing<'_>,
    hdr_len: usize,
    max_frame: usize,
    segs: &mut Vec<Segment>,
) -> Option<(FrameSlot, PackedHead)> {
    let d = ring.avail_head()?;
    if !d.is_single_readable() || d.id >= ring.size() {
        return None;
    }
    let len = d.len as usize;
    let frame_len = len.checked_sub(hdr_len)?;
    if !(MIN_FRAME_LEN..=max_frame).contains(&frame_len) {
        return None;
    }
    let host = ring.map().host(d.addr, len)?;
    let mut hdr = [0u8; net_hdr::LEN];
    read_into(&mut hdr[..hdr_len.min(net_hdr::LEN)], host, hdr_len);
    let mut prefix = [0u8; PREFIX_LEN];
    read_into(&mut prefix, host + hdr_len, frame_len.min(PREFIX_LEN));
    let start = segs.len() as u32;
    segs.push(Segment {
        addr: GuestAddress(d.addr + hdr_len as u64),
        len: frame_len as u32,
        host: host + hdr_len,
    });
    let f = FrameSlot {
        seg_start: start,
        seg_end: start + 1,
        len: frame_len as u32,
        prefix,
        hdr: crate::NetHdr::parse(&hdr),
    };
    Some((f, PackedHead { id: d.id, slots: 1 }))
}
