//! The TX virtqueue (queue 1): builds descriptor chains in the layouts a real driver uses, raw
//! (possibly malformed) chains for robustness tests, and reclaims completed chains.
//!
//! Descriptor `i` owns a data slot of `slot_size` bytes and an indirect-table area; a chain's
//! data lives in the slots of its own descriptors, so no allocation is needed per frame. The
//! common layout (header descriptor + frame in one slot) uses fixed descriptor pairs when it can
//! (`tx_fixed.rs`).

use std::fmt;

use crate::error::GuestError;
use crate::features::NET_HDR_V1_LEN;
use crate::memory::GuestMem;
use crate::vring::{DriverQueue, RawDesc, RingView, DESC_F_INDIRECT, DESC_F_NEXT, DESC_SIZE};

#[path = "tx_fixed.rs"]
mod fixed;
use fixed::FixedPairs;

/// Maximum entries of an indirect table built by [`TxLayout::Indirect`].
pub const MAX_INDIRECT: usize = 16;
/// Bytes reserved per descriptor for its indirect table.
pub(crate) const INDIRECT_AREA: u64 = MAX_INDIRECT as u64 * DESC_SIZE;

/// How a frame is laid out in TX descriptors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxLayout {
    /// The virtio-net header in its own descriptor, the frame in the following one(s) (what
    /// Linux does without ANY_LAYOUT). The default of `send`.
    HeaderSeparate,
    /// Header and frame contiguous in one descriptor (spilling into more only when the frame
    /// exceeds a TX slot).
    HeaderInline,
    /// Header and frame bytes split into exactly `n` descriptors of near-equal size (the header
    /// may straddle descriptors).
    Split(usize),
    /// One ring descriptor pointing at an indirect table: header entry + frame entry.
    Indirect,
}

impl fmt::Display for TxLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

pub(crate) struct TxQueue {
    pub(crate) q: DriverQueue,
    slot_base: u64,
    slot_size: u32,
    ind_base: u64,
    indirect_ok: bool,
    /// The fixed pair layout, while it is active.
    fixed: Option<FixedPairs>,
    /// Cleared once the descriptor table was written directly: no fixed layout from then on.
    fixed_allowed: bool,
}

/// Writes bytes `[s, e)` of `hdr ++ frame` at `addr`.
fn write_concat(
    mem: &GuestMem,
    addr: u64,
    hdr: &[u8],
    frame: &[u8],
    s: usize,
    e: usize,
) -> Result<(), GuestError> {
    let h = hdr.len();
    if s < h {
        mem.write(addr, &hdr[s..e.min(h)])?;
    }
    if e > h {
        let fs = s.max(h);
        mem.write(addr + (fs - s) as u64, &frame[fs - h..e - h])?;
    }
    Ok(())
}

/// `mem.write` kept out of line, so the common constant-length header copy stays inlined.
#[inline(never)]
fn write_other(mem: &GuestMem, addr: u64, data: &[u8]) -> Result<(), GuestError> {
    mem.write(addr, data)
}

/// Segment plan over the concatenated header and frame bytes.
struct Segments {
    layout: TxLayout,
    hdr: usize,
    total: usize,
    slot: usize,
    count: usize,
}

impl Segments {
    fn new(layout: TxLayout, hdr: usize, frame: usize, slot: usize) -> Result<Self, GuestError> {
        let total = hdr + frame;
        let too_large = |why: String| GuestError::FrameTooLarge {
            len: frame,
            layout: layout.to_string(),
            why,
        };
        let count = match layout {
            TxLayout::HeaderSeparate => 1 + frame.div_ceil(slot),
            TxLayout::HeaderInline => total.div_ceil(slot).max(1),
            TxLayout::Split(n) => {
                let n = n.clamp(1, total.max(1));
                if total.div_ceil(n) > slot {
                    return Err(too_large(format!(
                        "{n} segments exceed the {slot}-byte TX slot"
                    )));
                }
                n
            }
            TxLayout::Indirect => {
                if total > slot {
                    return Err(too_large(format!(
                        "header+frame exceed the {slot}-byte TX slot"
                    )));
                }
                1 + usize::from(frame > 0)
            }
        };
        Ok(Segments {
            layout,
            hdr,
            total,
            slot,
            count,
        })
    }

    /// Byte range `[s, e)` of segment `k`.
    fn bounds(&self, k: usize) -> (usize, usize) {
        match self.layout {
            TxLayout::HeaderSeparate | TxLayout::Indirect => {
                if k == 0 {
                    (0, self.hdr)
                } else {
                    let s = self.hdr + (k - 1) * self.slot;
                    (s, (s + self.slot).min(self.total))
                }
            }
            TxLayout::HeaderInline => {
                let s = k * self.slot;
                (s, (s + self.slot).min(self.total))
            }
            TxLayout::Split(_) => {
                let (base, rem) = (self.total / self.count, self.total % self.count);
                let s = k * base + k.min(rem);
                (s, s + base + usize::from(k < rem))
            }
        }
    }
}

impl TxQueue {
    pub(crate) fn new(
        q: DriverQueue,
        slot_base: u64,
        slot_size: u32,
        ind_base: u64,
        indirect_ok: bool,
    ) -> Self {
        TxQueue {
            q,
            slot_base,
            slot_size,
            ind_base,
            indirect_ok,
            fixed: None,
            fixed_allowed: true,
        }
    }

    /// Free descriptors (the general allocator's plus those of free fixed pairs).
    #[inline]
    pub(crate) fn free_count(&self) -> usize {
        self.q.free_count() + self.fixed.as_ref().map_or(0, FixedPairs::free_descs)
    }

    #[inline]
    fn slot(&self, i: u16) -> u64 {
        self.slot_base + u64::from(i) * u64::from(self.slot_size)
    }

    #[inline]
    fn ensure_free(&mut self, v: &RingView<'_>, needed: usize) -> Result<(), GuestError> {
        debug_assert!(
            self.fixed.is_none(),
            "general allocation in the fixed layout"
        );
        if self.q.free_count() < needed {
            self.reclaim_in(v);
        }
        if self.q.free_count() < needed {
            return Err(GuestError::TxRingFull {
                needed,
                free: self.q.free_count(),
            });
        }
        Ok(())
    }

    /// Builds the chain for one frame and puts its head in the avail ring (not yet published).
    pub(crate) fn enqueue(
        &mut self,
        mem: &GuestMem,
        hdr: &[u8],
        frame: &[u8],
        layout: TxLayout,
    ) -> Result<(), GuestError> {
        let v = self.q.view(mem)?;
        self.enqueue_in(mem, &v, hdr, frame, layout)
    }

    /// [`Self::enqueue`] with the ring already resolved. The common case of `send_batch` (header
    /// in its own descriptor, frame in one slot) takes a fixed pair when it can, else two
    /// descriptors, two copies and a handful of stores; everything else goes through the general
    /// segment planner.
    #[inline]
    pub(crate) fn enqueue_in(
        &mut self,
        mem: &GuestMem,
        v: &RingView<'_>,
        hdr: &[u8],
        frame: &[u8],
        layout: TxLayout,
    ) -> Result<(), GuestError> {
        let slot = self.slot_size as usize;
        if layout == TxLayout::HeaderSeparate
            && !frame.is_empty()
            && frame.len() <= slot
            && hdr.len() <= slot
        {
            if self.fixed_ready(v, hdr.len())? {
                return self.enqueue_pair(mem, v, hdr, frame);
            }
            self.ensure_free(v, 2)?;
            let (Some(d0), Some(d1)) = (self.q.alloc(), self.q.alloc()) else {
                return Err(GuestError::TxRingFull { needed: 2, free: 0 });
            };
            let (a0, a1) = (self.slot(d0), self.slot(d1));
            if hdr.len() == NET_HDR_V1_LEN {
                // Constant length: a couple of stores instead of a memcpy call.
                mem.write(a0, &hdr[..NET_HDR_V1_LEN])?;
            } else {
                write_other(mem, a0, hdr)?;
            }
            mem.write(a1, frame)?;
            v.write_desc(d0, a0, hdr.len() as u32, DESC_F_NEXT, d1)?;
            v.write_desc(d1, a1, frame.len() as u32, 0, 0)?;
            self.q.link(d0, d1);
            self.q.mark_head(d0, 2);
            self.q.push_avail_in(v, d0);
            return Ok(());
        }
        self.enqueue_general(mem, v, hdr, frame, layout)
    }

    #[inline(never)]
    fn enqueue_general(
        &mut self,
        mem: &GuestMem,
        v: &RingView<'_>,
        hdr: &[u8],
        frame: &[u8],
        layout: TxLayout,
    ) -> Result<(), GuestError> {
        self.leave_fixed();
        let seg = Segments::new(layout, hdr.len(), frame.len(), self.slot_size as usize)?;
        if layout == TxLayout::Indirect {
            if !self.indirect_ok {
                return Err(GuestError::Unsupported(
                    "INDIRECT_DESC was not negotiated".into(),
                ));
            }
            self.ensure_free(v, 1)?;
            let Some(head) = self.q.alloc() else {
                return Err(GuestError::TxRingFull { needed: 1, free: 0 });
            };
            let data = self.slot(head);
            let table = self.ind_base + u64::from(head) * INDIRECT_AREA;
            for k in 0..seg.count {
                let (s, e) = seg.bounds(k);
                write_concat(mem, data + s as u64, hdr, frame, s, e)?;
                let flags = if k + 1 < seg.count { DESC_F_NEXT } else { 0 };
                let d = RawDesc::new(data + s as u64, (e - s) as u32, flags);
                write_raw(mem, table + DESC_SIZE * k as u64, &d, (k + 1) as u16)?;
            }
            v.write_desc(
                head,
                table,
                (DESC_SIZE as usize * seg.count) as u32,
                DESC_F_INDIRECT,
                0,
            )?;
            self.q.mark_head(head, 1);
            self.q.push_avail_in(v, head);
            return Ok(());
        }
        self.ensure_free(v, seg.count)?;
        let mut head = None;
        let mut prev: Option<(u16, u64, u32)> = None;
        for k in 0..seg.count {
            let Some(d) = self.q.alloc() else {
                return Err(GuestError::TxRingFull {
                    needed: seg.count,
                    free: 0,
                });
            };
            let (s, e) = seg.bounds(k);
            let addr = self.slot(d);
            write_concat(mem, addr, hdr, frame, s, e)?;
            if let Some((p, paddr, plen)) = prev {
                v.write_desc(p, paddr, plen, DESC_F_NEXT, d)?;
                self.q.link(p, d);
            }
            head.get_or_insert(d);
            prev = Some((d, addr, (e - s) as u32));
        }
        if let Some((p, paddr, plen)) = prev {
            v.write_desc(p, paddr, plen, 0, 0)?;
        }
        let head = head.ok_or_else(|| GuestError::Config("empty chain".into()))?;
        self.q.mark_head(head, seg.count as u16);
        self.q.push_avail_in(v, head);
        Ok(())
    }

    /// Writes `descs` verbatim into free slots (see [`RawDesc`] for `next`), pushes the head.
    pub(crate) fn enqueue_raw(
        &mut self,
        mem: &GuestMem,
        descs: &[RawDesc],
    ) -> Result<u16, GuestError> {
        if descs.is_empty() {
            return Err(GuestError::Config(
                "a raw chain needs at least one descriptor".into(),
            ));
        }
        self.leave_fixed();
        let v = self.q.view(mem)?;
        self.ensure_free(&v, descs.len())?;
        let mut idx = Vec::with_capacity(descs.len());
        for _ in descs {
            match self.q.alloc() {
                Some(d) => idx.push(d),
                None => {
                    return Err(GuestError::TxRingFull {
                        needed: descs.len(),
                        free: 0,
                    })
                }
            }
        }
        self.place(mem, &idx, descs)
    }

    /// Writes each descriptor at its chosen table index (claiming it); the first is the head.
    pub(crate) fn enqueue_raw_at(
        &mut self,
        mem: &GuestMem,
        placements: &[(u16, RawDesc)],
    ) -> Result<u16, GuestError> {
        if placements.is_empty() {
            return Err(GuestError::Config(
                "a raw chain needs at least one descriptor".into(),
            ));
        }
        self.leave_fixed();
        for (n, &(i, _)) in placements.iter().enumerate() {
            if placements[..n].iter().any(|&(j, _)| j == i) {
                return Err(GuestError::BadSlot {
                    index: i,
                    why: "listed twice",
                });
            }
            if i >= self.q.ring.size || !self.q.is_free(i) {
                self.reclaim(mem)?;
            }
        }
        for &(i, _) in placements {
            if i >= self.q.ring.size {
                return Err(GuestError::BadSlot {
                    index: i,
                    why: "index is not below the queue size",
                });
            }
            if !self.q.is_free(i) {
                return Err(GuestError::BadSlot {
                    index: i,
                    why: "descriptor is in flight",
                });
            }
        }
        let idx: Vec<u16> = placements.iter().map(|p| p.0).collect();
        let descs: Vec<RawDesc> = placements.iter().map(|p| p.1).collect();
        for &i in &idx {
            self.q.claim(i)?;
        }
        self.place(mem, &idx, &descs)
    }

    fn place(&mut self, mem: &GuestMem, idx: &[u16], descs: &[RawDesc]) -> Result<u16, GuestError> {
        let v = self.q.view(mem)?;
        for (k, d) in descs.iter().enumerate() {
            let auto = idx.get(k + 1).copied().unwrap_or(0);
            let next = d.next.unwrap_or(auto);
            v.write_desc(idx[k], d.addr, d.len, d.flags, next)?;
            if k + 1 < idx.len() {
                self.q.link(idx[k], idx[k + 1]);
            }
        }
        self.q.mark_head(idx[0], idx.len() as u16);
        self.q.push_avail_in(&v, idx[0]);
        Ok(idx[0])
    }

    /// Consumes used elements and frees their chains; returns how many valid chains completed.
    pub(crate) fn reclaim(&mut self, mem: &GuestMem) -> Result<usize, GuestError> {
        // An empty poll resolves only the used index, not the whole ring.
        if self.q.used_pending(mem)? == 0 {
            return Ok(0);
        }
        let v = self.q.view(mem)?;
        Ok(self.reclaim_in(&v))
    }

    /// [`Self::reclaim`] with the ring already resolved: one Acquire load of the used index,
    /// then each entry's id (validated by [`DriverQueue::complete`], or by the fixed layout's
    /// own check), one `used_event` store.
    #[inline]
    pub(crate) fn reclaim_in(&mut self, v: &RingView<'_>) -> usize {
        if self.fixed.is_some() {
            return self.reclaim_pairs(v);
        }
        let pending = self.q.used_pending_in(v);
        let mut done = 0;
        for k in 0..pending {
            let (id, _) = self.q.peek_used_in(v, k);
            if self.q.complete(id).is_some() {
                done += 1;
            }
        }
        if pending > 0 {
            self.q.consume_used_in(v, pending);
        }
        done
    }
}

/// Writes one raw descriptor at `addr` (`next: None` becomes `auto_next`).
pub(crate) fn write_raw(
    mem: &GuestMem,
    addr: u64,
    d: &RawDesc,
    auto_next: u16,
) -> Result<(), GuestError> {
    let mut b = [0u8; 16];
    b[0..8].copy_from_slice(&d.addr.to_le_bytes());
    b[8..12].copy_from_slice(&d.len.to_le_bytes());
    b[12..14].copy_from_slice(&d.flags.to_le_bytes());
    b[14..16].copy_from_slice(&d.next.unwrap_or(auto_next).to_le_bytes());
    mem.write(addr, &b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    fn all(layout: TxLayout, hdr: usize, frame: usize, slot: usize) -> Vec<(usize, usize)> {
        let s = Segments::new(layout, hdr, frame, slot).unwrap();
        (0..s.count).map(|k| s.bounds(k)).collect()
    }

    #[test]
    fn segment_plans_cover_header_and_frame() {
        assert_eq!(
            all(TxLayout::HeaderSeparate, 12, 100, 64),
            [(0, 12), (12, 76), (76, 112)]
        );
        assert_eq!(all(TxLayout::HeaderSeparate, 12, 0, 64), [(0, 12)]);
        assert_eq!(
            all(TxLayout::HeaderInline, 12, 100, 64),
            [(0, 64), (64, 112)]
        );
        assert_eq!(
            all(TxLayout::Split(3), 12, 10, 64),
            [(0, 8), (8, 15), (15, 22)]
        );
        assert_eq!(all(TxLayout::Indirect, 12, 50, 64), [(0, 12), (12, 62)]);
        assert!(Segments::new(TxLayout::Indirect, 12, 60, 64).is_err());
        assert!(Segments::new(TxLayout::Split(1), 12, 60, 64).is_err());
    }

    #[test]
    fn batch_path_chains_header_and_frame_and_reclaim_validates_ids() {
        use crate::vring::RingAddrs;
        let mem = GuestMem::new(1 << 20).unwrap();
        let (ring, end) = RingAddrs::layout(0, 8);
        let q = DriverQueue::new(&mem, ring, 0, true).unwrap();
        let slots = end.div_ceil(4096) * 4096;
        let mut tx = TxQueue::new(q, slots, 128, slots + 8 * 128, false);
        let hdr = [0u8; NET_HDR_V1_LEN];
        let frame: Vec<u8> = (0..64).collect();
        let v = tx.q.view(&mem).unwrap();
        tx.enqueue_in(&mem, &v, &hdr, &frame, TxLayout::HeaderSeparate)
            .unwrap();
        tx.q.publish_in(&v);
        assert_eq!(tx.free_count(), 6);
        let head = mem.load_u16(ring.avail + 4, Ordering::Acquire).unwrap();
        let desc = |i: u16| {
            let mut b = [0u8; 16];
            mem.read(ring.desc + DESC_SIZE * u64::from(i), &mut b)
                .unwrap();
            let w = |r: std::ops::Range<usize>| {
                b[r].iter().rev().fold(0u64, |a, &x| a << 8 | u64::from(x))
            };
            (w(0..8), w(8..12) as u32, w(12..14) as u16, w(14..16) as u16)
        };
        let (a0, l0, f0, next) = desc(head);
        assert_eq!(
            (a0, l0, f0),
            (slots + u64::from(head) * 128, 12, DESC_F_NEXT)
        );
        let (a1, l1, f1, _) = desc(next);
        assert_eq!((a1, l1, f1), (slots + u64::from(next) * 128, 64, 0));
        let mut got = vec![0u8; 64];
        mem.read(a1, &mut got).unwrap();
        assert_eq!(got, frame);
        // The device returns the head, a non-head, an out-of-range id and the head again.
        for (k, id) in [u32::from(head), u32::from(next), 1000, u32::from(head)]
            .into_iter()
            .enumerate()
        {
            mem.write(ring.used + 4 + 8 * k as u64, &id.to_le_bytes())
                .unwrap();
        }
        mem.write(ring.used + 2, &4u16.to_le_bytes()).unwrap();
        assert_eq!(tx.reclaim(&mem).unwrap(), 1);
        assert_eq!(tx.q.bogus_used, 3);
        assert_eq!(tx.free_count(), 8);
    }

    #[test]
    fn concat_writes_straddle_the_header() {
        let mem = GuestMem::new(4096).unwrap();
        let hdr = [1u8; 4];
        let frame = [2u8, 3, 4];
        write_concat(&mem, 100, &hdr, &frame, 2, 6).unwrap();
        let mut b = [0u8; 4];
        mem.read(100, &mut b).unwrap();
        assert_eq!(b, [1, 1, 2, 3]);
    }
}
