//! Frames into a packed RX ring: the split ring's rules (see [`super::RxWriter::deliver`]) on
//! a [`PackedRing`]. A chain's used descriptor is written only once the frame it holds is
//! complete, so a frame that does not fit gives its chains back untouched.

use super::{fill_descs, RxDrop, MAX_BUFFERS_PER_FRAME};
use crate::dirty_log::LogMap;
use crate::features::Negotiated;
use crate::frame::FrameRef;
use crate::memory::{copy_guest, write_guest};
use crate::ring::{PackedHead, PackedRing, Pos};
use crate::wire::net_hdr;

/// Writes one frame with its virtio-net header into the next chain(s) of `ring`. Out of line:
/// the split ring's path, inlined in the caller's loop, stays as it was.
#[inline(never)]
pub(crate) fn deliver(
    ring: &mut PackedRing<'_>,
    neg: &Negotiated,
    frame: FrameRef<'_>,
    log: Option<&LogMap>,
) -> Result<(), RxDrop> {
    let hdr_len = neg.hdr_len;
    let total = hdr_len + frame.len();
    let Some(d) = ring.avail_head() else {
        return Err(RxDrop::NoBuffer);
    };
    // The common layout: one writable buffer that holds header and frame.
    if d.is_single_writable() && d.len as usize >= total && d.id < ring.size() {
        if let Some(at) = ring.map().host(d.addr, total) {
            write_hdr(at, hdr_len, frame.hdr.for_rx(1));
            let mut dst = at + hdr_len;
            for (src, n) in frame.delivery_pieces() {
                // SAFETY: the pieces add up to frame.len(), so each lands inside
                // `at + hdr_len..at + total` (mapped for the batch); the source pieces were
                // checked when the frame was parsed and are mapped for the source batch.
                unsafe { copy_guest(dst, src, n) };
                dst += n;
            }
            if let Some(log) = log {
                log.mark(d.addr, total as u64);
            }
            let head = PackedHead { id: d.id, slots: 1 };
            ring.take(head);
            ring.push_used(head, total as u32);
            return Ok(());
        }
    }
    deliver_general(ring, neg, frame, log)
}

/// Writes a frame's virtio-net header `hdr` (its offload fields, as the receiver negotiated
/// them, and its buffer count) at host address `at` (checked to hold `hdr_len` bytes).
#[inline]
fn write_hdr(at: usize, hdr_len: usize, hdr: [u8; net_hdr::LEN]) {
    if hdr_len == net_hdr::LEN {
        // SAFETY: the caller checked that `at..at + hdr_len` is mapped for the batch.
        unsafe { write_guest(at, hdr) };
    } else {
        // SAFETY: as above; `hdr` has LEN >= hdr_len bytes.
        unsafe { copy_guest(at, hdr.as_ptr() as usize, hdr_len) };
    }
}

/// Any buffer layout, mergeable buffers and every malformed chain.
#[inline(never)]
fn deliver_general(
    ring: &mut PackedRing<'_>,
    neg: &Negotiated,
    frame: FrameRef<'_>,
    log: Option<&LogMap>,
) -> Result<(), RxDrop> {
    let hdr_len = neg.hdr_len;
    let max_chains = if neg.mrg_rxbuf {
        MAX_BUFFERS_PER_FRAME
    } else {
        1
    };
    let size = ring.size();
    let mark = ring.avail_mark();
    // The chains this frame took and the bytes written into each, returned when it is done.
    let mut taken = [(PackedHead { id: 0, slots: 0 }, 0u32); MAX_BUFFERS_PER_FRAME];
    let mut ntaken = 0usize;
    let mut hdr_at: Option<usize> = None;
    let mut src = frame.delivery_pieces();
    let mut cur = src.next().unwrap_or((0, 0));
    let mut reads = 0u32;
    let outcome: Result<(), RxDrop> = loop {
        if cur.1 == 0 && hdr_at.is_some() {
            break Ok(());
        }
        if ntaken == max_chains {
            break Err(RxDrop::Oversize);
        }
        let Some(mut chain) = ring.next_chain() else {
            break Err(RxDrop::NoBuffer);
        };
        let filled = fill_descs(
            ring.map(),
            &mut chain,
            hdr_len,
            &mut hdr_at,
            &mut cur,
            &mut src,
        );
        let Ok(head) = chain.finish(&mut reads) else {
            // Never ends within the ring: it cannot be taken (and every later frame fails
            // here the same way, as with a split ring whose avail index jumped).
            break Err(RxDrop::BadDescriptor);
        };
        ring.take(head);
        let ok = filled.is_ok() && head.id < size;
        taken[ntaken] = (head, filled.unwrap_or(0));
        ntaken += 1;
        if !ok {
            break Err(RxDrop::BadDescriptor);
        }
    };
    // The loop ends Ok only once the header slot is known.
    let outcome = match (outcome, hdr_at) {
        (Ok(()), Some(at)) => {
            write_hdr(at, hdr_len, frame.hdr.for_rx(ntaken as u16));
            if let Some(log) = log {
                mark_written(ring, mark, &taken[..ntaken], log);
            }
            for &(head, len) in &taken[..ntaken] {
                ring.push_used(head, len);
            }
            return Ok(());
        }
        (Ok(()), None) => Err(RxDrop::BadDescriptor),
        (r, _) => r,
    };
    match outcome {
        Ok(()) | Err(RxDrop::BadDescriptor) => {
            // The guest posted a malformed buffer: every chain this frame took goes back
            // empty, so a bad chain cannot wedge the ring.
            for &(head, _) in &taken[..ntaken] {
                ring.push_used(head, 0);
            }
            Err(RxDrop::BadDescriptor)
        }
        Err(e) => {
            // Not enough room: nothing written; the chains stay available.
            ring.unpop_to(mark);
            Err(e)
        }
    }
}

/// While the guest migrates: marks the buffers of the chains a frame filled, after every byte
/// (header included) is written and before their used descriptors overwrite the first slot of
/// each. The chains are walked again from `mark`, where the frame's first chain began; they
/// were walked once already, so each walk ends as it did.
#[cold]
fn mark_written(ring: &mut PackedRing<'_>, mark: Pos, taken: &[(PackedHead, u32)], log: &LogMap) {
    let end = ring.avail_mark();
    ring.unpop_to(mark);
    for &(head, len) in taken {
        if let Some(chain) = ring.next_chain() {
            let mut left = u64::from(len);
            for d in chain.map_while(Result::ok) {
                if left == 0 {
                    break;
                }
                let n = u64::from(d.len).min(left);
                log.mark(d.addr, n);
                left -= n;
            }
        }
        ring.take(head);
    }
    ring.unpop_to(end);
}
