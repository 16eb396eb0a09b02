//! The fixed TX layout (DPDK style), the fast path of `send_batch` and `send`.
//!
//! Descriptors `2p` and `2p + 1` form pair `p` for good: the header descriptor (slot `2p`,
//! `hdr_len` bytes, NEXT -> `2p + 1`) and the frame descriptor (slot `2p + 1`) are written once
//! when the layout is set up. Sending a frame then writes the header and frame bytes, the frame
//! descriptor's length word and one avail entry; reclaiming validates each used id (an
//! in-flight pair head, else a bogus id) and pushes its pair back on a stack.
//!
//! The layout coexists with the general allocator ([`DriverQueue`]) that other layouts and the
//! raw-chain helpers use, which remains the one record of what is in flight:
//! - it is entered only when no chain is in flight: the allocator lends every descriptor
//!   ([`DriverQueue::lend_all`]), pair heads are linked as two-descriptor chains and marked in
//!   flight while the device owns them, free pairs sit on the pair stack;
//! - any general operation leaves it first ([`TxQueue::leave_fixed`]): free pairs go back to
//!   the allocator, pairs in flight stay ordinary chains that the general reclaim frees;
//! - writing the descriptor table directly (`TestGuest::write_mem`) leaves it for good, so a
//!   test's deliberate corruption is never rewritten behind its back.

use super::TxQueue;
use crate::error::GuestError;
use crate::features::NET_HDR_V1_LEN;
use crate::memory::GuestMem;
use crate::vring::{RingView, DESC_F_NEXT};

/// `mem.write_ok` kept out of line, so the constant-length header copy stays inlined.
#[inline(never)]
fn write_out_of_line(mem: &GuestMem, addr: u64, data: &[u8]) -> bool {
    mem.write_ok(addr, data)
}

/// State of the fixed layout while it is active.
pub(crate) struct FixedPairs {
    /// Stack of free pair indices (pair `p` = descriptors `2p`, `2p + 1`).
    free: Vec<u16>,
    /// Length the header descriptors were written with.
    hdr_len: usize,
}

impl FixedPairs {
    /// Free descriptors (two per free pair).
    pub(crate) fn free_descs(&self) -> usize {
        2 * self.free.len()
    }
}

impl TxQueue {
    /// Whether a frame with a `hdr_len`-byte header can go into a fixed pair: in the layout with
    /// that header length, or after entering it now (nothing in flight). Leaves the layout when
    /// it was set up for another header length.
    #[inline]
    pub(super) fn fixed_ready(
        &mut self,
        v: &RingView<'_>,
        hdr_len: usize,
    ) -> Result<bool, GuestError> {
        match &self.fixed {
            Some(f) if f.hdr_len == hdr_len => return Ok(true),
            Some(_) => self.leave_fixed(),
            None => {}
        }
        self.enter_fixed(v, hdr_len)
    }

    #[cold]
    fn enter_fixed(&mut self, v: &RingView<'_>, hdr_len: usize) -> Result<bool, GuestError> {
        let size = self.q.ring.size;
        if !self.fixed_allowed
            || size < 2
            || hdr_len > self.slot_size as usize
            || self.q.free_count() != usize::from(size)
        {
            return Ok(false);
        }
        // Every descriptor is free, so (re)writing the table does not touch the device's.
        for p in 0..size / 2 {
            let (h, d) = (2 * p, 2 * p + 1);
            v.write_desc(h, self.slot(h), hdr_len as u32, DESC_F_NEXT, d)?;
            v.write_desc(d, self.slot(d), 0, 0, 0)?;
        }
        if !self.q.lend_all() {
            return Ok(false);
        }
        for p in 0..size / 2 {
            self.q.link(2 * p, 2 * p + 1);
        }
        self.fixed = Some(FixedPairs {
            free: (0..size / 2).rev().collect(),
            hdr_len,
        });
        Ok(true)
    }

    /// Leaves the fixed layout (no-op outside it): free pairs go back to the general allocator,
    /// pairs in flight stay two-descriptor chains (head `2p` linked to `2p + 1`).
    pub(crate) fn leave_fixed(&mut self) {
        if let Some(f) = self.fixed.take() {
            for &p in f.free.iter().rev() {
                self.q.give_back(2 * p + 1);
                self.q.give_back(2 * p);
            }
        }
    }

    /// Leaves the fixed layout and never enters it again (the table was written directly).
    pub(crate) fn forbid_fixed(&mut self) {
        self.leave_fixed();
        self.fixed_allowed = false;
    }

    /// Whether the fixed layout is active.
    #[cfg(test)]
    pub(crate) fn is_fixed(&self) -> bool {
        self.fixed.is_some()
    }

    /// Sends the longest prefix of `frames` that fits fixed pairs (header in its own descriptor,
    /// frame in one slot), pushing the heads to the avail ring without publishing. Returns how
    /// many were queued; it stops at the first frame that needs the general path or when no pair
    /// is free (after one reclaim, done up front when the batch needs more pairs than are free).
    #[inline]
    pub(crate) fn enqueue_fixed_run(
        &mut self,
        mem: &GuestMem,
        v: &RingView<'_>,
        hdr: &[u8],
        frames: &[&[u8]],
    ) -> usize {
        if !matches!(self.fixed_ready(v, hdr.len()), Ok(true)) {
            return 0;
        }
        if self
            .fixed
            .as_ref()
            .is_some_and(|f| f.free.len() < frames.len())
        {
            self.reclaim_in(v);
        }
        let (base, slot) = (self.slot_base, u64::from(self.slot_size));
        let avail = self.q.avail_idx();
        let Some(fx) = self.fixed.as_mut() else {
            return 0;
        };
        let hdr12: Option<&[u8; NET_HDR_V1_LEN]> = hdr.try_into().ok();
        // Pairs are taken from the top of the stack down; the used ones are dropped after.
        let top = fx.free.len();
        let n = frames.len().min(top);
        let mut sent = 0;
        for (f, &p) in frames[..n].iter().zip(fx.free[top - n..].iter().rev()) {
            let len = f.len() as u64;
            if len == 0 || len > slot {
                break;
            }
            let (h, d) = (2 * p, 2 * p + 1);
            let ha = base + u64::from(h) * slot;
            let hdr_ok = match hdr12 {
                // Constant length: a couple of stores instead of a memcpy call.
                Some(h12) => mem.write_ok(ha, h12),
                None => write_out_of_line(mem, ha, hdr),
            };
            if !(hdr_ok && mem.write_ok(ha + slot, f) && v.write_desc_len(d, len as u32, 0, 0)) {
                break;
            }
            self.q.mark_head(h, 2);
            // `sent < n <= queue size / 2`.
            v.set_avail_slot(avail.wrapping_add(sent as u16), h);
            sent += 1;
        }
        fx.free.truncate(top - sent);
        self.q.advance_avail(sent as u16);
        sent
    }

    /// Puts `hdr` and `frame` in a free pair and pushes its head; the caller checked
    /// [`Self::fixed_ready`] for `hdr.len()` and that `frame` is non-empty and fits one slot.
    pub(super) fn enqueue_pair(
        &mut self,
        mem: &GuestMem,
        v: &RingView<'_>,
        hdr: &[u8],
        frame: &[u8],
    ) -> Result<(), GuestError> {
        if self.enqueue_fixed_run(mem, v, hdr, &[frame]) == 1 {
            return Ok(());
        }
        Err(GuestError::TxRingFull {
            needed: 2,
            free: self.free_count(),
        })
    }

    /// Reclaim in the fixed layout: each used id must be an in-flight pair head (else it is
    /// counted as bogus); its pair goes back on the stack. Returns how many pairs completed.
    #[inline]
    pub(super) fn reclaim_pairs(&mut self, v: &RingView<'_>) -> usize {
        let Some(f) = self.fixed.as_mut() else {
            return 0;
        };
        let pending = self.q.used_pending_in(v);
        let mut done = 0;
        for k in 0..pending {
            let (id, _) = self.q.peek_used_in(v, k);
            // Only even descriptors are ever marked as in-flight heads of two in this layout.
            if self.q.take_head(id, 2) {
                f.free.push((id >> 1) as u16);
                done += 1;
            } else {
                self.q.bogus(id);
            }
        }
        if pending > 0 {
            self.q.consume_used_in(v, pending);
        }
        done
    }
}

#[cfg(test)]
#[path = "tx_fixed_tests.rs"]
mod tests;
