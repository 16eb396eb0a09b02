//! TX chains of a packed ring to frames: the same checks as the split ring's (every chain
//! through [`super::parse_chain`]), plus what the packed layout adds: a chain must end within
//! the ring, and its buffer id must be one the driver can have given (below the ring size).

use super::{parse_chain, TxBatchCounts, TxChainError, TxScratch, MAX_BATCH};
use crate::ring::PackedRing;

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
    reads: &mut u32,
    budget: u32,
) -> (TxBatchCounts, bool) {
    let TxScratch {
        heads,
        slots,
        frames,
        segs,
    } = scratch;
    let mut counts = TxBatchCounts::default();
    let size = ring.size();
    while heads.len() < MAX_BATCH && *reads < budget {
        let Some(mut chain) = ring.next_chain() else {
            break;
        };
        let start = segs.len();
        let mut r = parse_chain(ring.map(), &mut chain, hdr_len, max_frame, segs);
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
