//! The virtio-net header of a TX frame, checked once when the frame is taken: against what
//! the guest negotiated (it may only ask for the offloads it acked) and against the frame
//! itself (see [`crate::offload::validate`]). A header that lies costs the frame
//! ([`TxChainError::BadOffload`]); a frame that asks for nothing travels with an all-zero
//! header, whatever else its header said (as before offloads were offered).

use crate::frame::{FrameSlot, Segment};
use crate::memory::copy_guest;
use crate::offload::{self, Offload, Offloads, MAX_HEADERS};

use super::TxChainError;

/// Checks frame `f` (its segments in `segs`) from a guest that negotiated `offloads`; frames
/// that are not GSO frames must fit `max_frame`. On success the header is what travels with
/// the frame: zeroed when it asks for nothing, `hdr_len` set to the parsed headers' length
/// for a GSO frame.
#[inline]
pub(crate) fn check_header(
    f: &mut FrameSlot,
    segs: &[Segment],
    offloads: Offloads,
    max_frame: usize,
) -> Result<(), TxChainError> {
    let len = f.len as usize;
    // A header that asks for nothing was parsed as all zeroes (NetHdr::parse).
    if !offload::needs_work(&f.hdr) {
        return if len > max_frame {
            Err(TxChainError::Oversize)
        } else {
            Ok(())
        };
    }
    check_offload(f, segs, offloads, max_frame)
}

#[cold]
fn check_offload(
    f: &mut FrameSlot,
    segs: &[Segment],
    offloads: Offloads,
    max_frame: usize,
) -> Result<(), TxChainError> {
    let len = f.len as usize;
    if !offloads.covers(&f.hdr) {
        return Err(TxChainError::BadOffload);
    }
    let mut head = [0u8; MAX_HEADERS];
    let n = gather_head(f, segs, &mut head);
    match offload::validate(&head[..n], len, &f.hdr) {
        Ok(Offload::Gso(layout)) => {
            f.hdr.hdr_len = layout.payload as u16;
            Ok(())
        }
        Ok(_) if len > max_frame => Err(TxChainError::Oversize),
        Ok(_) => Ok(()),
        Err(e) => {
            log::debug!("TX frame refused: {e}");
            Err(TxChainError::BadOffload)
        }
    }
}

/// Copies the frame's first bytes (up to `head.len()`) out of its segments; returns how many.
fn gather_head(f: &FrameSlot, segs: &[Segment], head: &mut [u8]) -> usize {
    let mut got = 0;
    let range = f.seg_start as usize..f.seg_end as usize;
    for s in segs.get(range).unwrap_or(&[]) {
        if got == head.len() {
            break;
        }
        let n = (s.len as usize).min(head.len() - got);
        // SAFETY: the segment was translated in the batch's guest memory map (mapped while
        // the batch is taken) and holds at least `n` bytes; `head[got..got + n]` is in
        // bounds.
        unsafe { copy_guest(head[got..].as_mut_ptr() as usize, s.host, n) };
        got += n;
    }
    got
}
