//! A packed virtqueue (virtio 1.1, VIRTIO_F_RING_PACKED) as the datapath touches it: one batch
//! at a time, through host addresses resolved once per batch, like [`super::SplitRing`].
//!
//! One table of descriptors serves both directions. The driver makes a chain available by
//! writing its descriptors in consecutive slots (NEXT links a slot to the following one), the
//! head's flags last, with AVAIL equal to its wrap counter and USED the opposite; the buffer id
//! is in the chain's last descriptor. The device returns a chain by writing one used
//! descriptor (id, bytes written, AVAIL = USED = its own wrap counter) at its used position,
//! which then moves on by the number of slots the chain took. The queue's "avail" address is
//! the driver event suppression area (may the device notify the driver?), its "used" address
//! the device event suppression area (should the driver kick?).
//!
//! Where the device stands: vhost-user carries the avail position with the wrap counter in
//! bit 15 (SET_VRING_BASE / GET_VRING_BASE); `Queue::next_avail` keeps that value as is. The
//! datapath returns every chain it takes within the batch that took it, so at the end of a
//! batch the used position equals the avail position; a batch starts with both from
//! `next_avail` (vhost-user-backend sets `next_used` from the split ring's used index, which
//! means nothing for a packed ring).
//!
//! Used descriptors are written as chains complete, the flags of the batch's first one last
//! ([`PackedRing::publish_used`], a release store): the driver reads used descriptors in ring
//! order, so it sees the batch at once. A chain is never written back before it is complete, so
//! giving chains back ([`PackedRing::unpop`]) never has to undo a write.

use std::sync::atomic::{fence, AtomicU16, Ordering};
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};

use super::{AvailPeek, ChainError, Desc, DESC_SIZE, F_INDIRECT, F_NEXT, F_WRITE, PEEK_BUDGET};
use crate::mem_view::GuardedMemory;
use crate::memory::{GuestMap, GuestMemory};

/// Descriptor flag: available (the driver's wrap counter when it made the slot available).
pub(crate) const F_AVAIL: u16 = 1 << 7;
/// Descriptor flag: used (the device's wrap counter when it wrote the slot).
pub(crate) const F_USED: u16 = 1 << 15;
/// The wrap counter's bit in a vhost-user vring base and in an event's `off_wrap`.
const WRAP_BIT: u16 = 1 << 15;
/// Event suppression flags.
const EVENT_ENABLE: u16 = 0;
const EVENT_DISABLE: u16 = 1;
const EVENT_DESC: u16 = 2;

/// A slot of the ring and the wrap counter that goes with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    pub idx: u16,
    pub wrap: bool,
}

impl Pos {
    /// From a vhost-user vring base (index, wrap counter in bit 15).
    pub(crate) fn from_base(base: u16) -> Self {
        Pos {
            idx: base & !WRAP_BIT,
            wrap: base & WRAP_BIT != 0,
        }
    }

    /// As a vhost-user vring base.
    pub(crate) fn to_base(self) -> u16 {
        self.idx | if self.wrap { WRAP_BIT } else { 0 }
    }

    /// `n` slots further (`n` at most the ring size).
    #[inline]
    fn advance(self, n: u16, size: u16) -> Self {
        let i = u32::from(self.idx) + u32::from(n);
        if i >= u32::from(size) {
            Pos {
                idx: (i - u32::from(size)) as u16,
                wrap: !self.wrap,
            }
        } else {
            Pos {
                idx: i as u16,
                wrap: self.wrap,
            }
        }
    }
}

/// A chain the device took: where it starts, its buffer id and the slots it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PackedHead {
    pub id: u16,
    pub slots: u16,
}

/// A packed descriptor as read from the table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PackedDesc {
    pub addr: u64,
    pub len: u32,
    pub id: u16,
    pub flags: u16,
}

impl PackedDesc {
    /// A whole chain in one device-readable buffer (no WRITE, NEXT or INDIRECT), not empty.
    #[inline]
    pub(crate) fn is_single_readable(&self) -> bool {
        self.flags & (F_WRITE | F_NEXT | F_INDIRECT) == 0 && self.len != 0
    }

    /// A whole chain in one device-writable buffer (WRITE, no NEXT, no INDIRECT).
    #[inline]
    pub(crate) fn is_single_writable(&self) -> bool {
        self.flags & (F_WRITE | F_NEXT | F_INDIRECT) == F_WRITE
    }
}

/// The packed ring of one queue, resolved for one batch.
///
/// Invariant: `desc` is the host address of `16 * size` bytes, `driver_evt` and `device_evt`
/// of 4 bytes each, all inside guest memory mapped by `map`, aligned to 16, 4 and 4 bytes;
/// `next_avail.idx` and `next_used.idx` are below `size`.
pub(crate) struct PackedRing<'m> {
    map: GuestMap<'m>,
    desc: usize,
    driver_evt: usize,
    device_evt: usize,
    /// Guest physical addresses of the descriptor ring and device event area (dirty logging).
    desc_gpa: u64,
    device_evt_gpa: u64,
    size: u16,
    next_avail: Pos,
    next_used: Pos,
    published_used: Pos,
    /// The first used descriptor of the batch not yet visible: its slot and flags.
    pending_head: Option<(u16, u16)>,
    event_idx: bool,
}

impl<'m> PackedRing<'m> {
    /// Resolves the queue's areas; `None` when the queue is not ready, its areas are not
    /// (entirely) inside one guest memory region, misaligned, or its position is beyond it.
    pub(crate) fn new(mem: &'m GuestMemory, q: &Queue) -> Option<Self> {
        if !q.ready() {
            return None;
        }
        let size = q.size();
        if size == 0 || size > 1 << 15 {
            return None;
        }
        let start = Pos::from_base(q.next_avail());
        if start.idx >= size {
            return None;
        }
        let map = GuestMap::new(mem);
        let desc = map.host(q.desc_table(), usize::from(size) * DESC_SIZE)?;
        let driver_evt = map.host(q.avail_ring(), 4)?;
        let device_evt = map.host(q.used_ring(), 4)?;
        if !desc.is_multiple_of(16)
            || !driver_evt.is_multiple_of(4)
            || !device_evt.is_multiple_of(4)
        {
            return None;
        }
        Some(PackedRing {
            map,
            desc,
            driver_evt,
            device_evt,
            desc_gpa: q.desc_table(),
            device_evt_gpa: q.used_ring(),
            size,
            next_avail: start,
            next_used: start,
            published_used: start,
            pending_head: None,
            event_idx: q.event_idx_enabled(),
        })
    }

    /// The guest's memory, translated for this batch.
    #[inline]
    pub(crate) fn map(&self) -> &GuestMap<'m> {
        &self.map
    }

    /// Ring size (slots).
    #[inline]
    pub(crate) fn size(&self) -> u16 {
        self.size
    }

    /// What the device writes besides buffers, as guest (address, length): the descriptor ring
    /// and the device event suppression area (`dirty_log.rs`).
    pub(crate) fn device_written_areas(&self) -> [(u64, u64); 2] {
        let ring_len = u64::from(self.size) * DESC_SIZE as u64;
        [(self.desc_gpa, ring_len), (self.device_evt_gpa, 4)]
    }

    /// Writes the position back to the queue (end of batch: used and avail positions agree).
    pub(crate) fn store_back(&self, q: &mut Queue) {
        q.set_next_avail(self.next_avail.to_base());
        q.set_next_used(self.next_used.to_base());
    }

    /// The flags of slot `idx` (< size), loaded with acquire ordering: the rest of the
    /// descriptor is read after them.
    #[inline]
    fn flags(&self, idx: u16) -> u16 {
        // SAFETY: idx < size: the flags at 14 + 16 * idx are inside the table and 2-byte
        // aligned (struct invariant); the guest writes them concurrently, hence an atomic.
        let f =
            unsafe { AtomicU16::from_ptr((self.desc + 16 * usize::from(idx) + 14) as *mut u16) };
        u16::from_le(f.load(Ordering::Acquire))
    }

    /// Reads slot `idx` (< size).
    #[inline]
    fn read(&self, idx: u16) -> PackedDesc {
        // SAFETY: idx < size (every caller), the table holds `size` entries (invariant).
        let d = unsafe { super::read_desc(self.desc, idx) };
        // The split layout's `flags` and `next` fields are the packed layout's id and flags.
        PackedDesc {
            addr: d.addr,
            len: d.len,
            id: d.flags,
            flags: d.next,
        }
    }

    /// True when the slot at the device's avail position holds a chain the driver made
    /// available.
    #[inline]
    pub(crate) fn has_avail(&self) -> bool {
        is_avail(self.flags(self.next_avail.idx), self.next_avail.wrap)
    }

    /// The head descriptor of the next available chain, for the fast paths; `None` when
    /// nothing is available.
    #[inline]
    pub(crate) fn avail_head(&self) -> Option<PackedDesc> {
        self.has_avail().then(|| self.read(self.next_avail.idx))
    }

    /// Walks the next available chain (without taking it: [`PackedRing::take`]); `None` when
    /// nothing is available.
    #[inline]
    pub(crate) fn next_chain(&self) -> Option<PackedChain<'_, 'm>> {
        self.has_avail().then(|| PackedChain {
            ring: self,
            head: self.next_avail.idx,
            slots: 0,
            id: 0,
            ring_end: false,
            table: 0,
            table_len: 0,
            table_next: 0,
            ttl: self.size.min(super::MAX_CHAIN_DESCS),
            reads: 0,
            indirect: false,
            done: false,
        })
    }

    /// Takes the chain just walked (moves the avail position past its slots).
    #[inline]
    pub(crate) fn take(&mut self, head: PackedHead) {
        self.next_avail = self.next_avail.advance(head.slots, self.size);
    }

    /// Gives back chains taken since `mark` (they stay available; nothing was written for them).
    #[inline]
    pub(crate) fn unpop_to(&mut self, mark: Pos) {
        self.next_avail = mark;
    }

    /// The avail position (to give chains back with [`PackedRing::unpop_to`]).
    #[inline]
    pub(crate) fn avail_mark(&self) -> Pos {
        self.next_avail
    }

    /// How far the used position is behind the avail position (slots taken, not yet returned).
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> u16 {
        let (a, u) = (self.next_avail, self.next_used);
        if a.wrap == u.wrap {
            a.idx - u.idx
        } else {
            a.idx + self.size - u.idx
        }
    }

    /// Returns a chain: one used descriptor (id, bytes written) at the used position, which
    /// moves past the chain's slots. Not visible to the driver before
    /// [`PackedRing::publish_used`] when it is the batch's first.
    #[inline]
    pub(crate) fn push_used(&mut self, head: PackedHead, len: u32) {
        let idx = self.next_used.idx;
        let at = self.desc + 16 * usize::from(idx);
        let mut e = [0u8; 6];
        e[..4].copy_from_slice(&len.to_le_bytes());
        e[4..].copy_from_slice(&head.id.to_le_bytes());
        // SAFETY: idx < size: bytes 8..14 of the slot are inside the table (invariant).
        unsafe { crate::memory::write_guest(at + 8, e) };
        let flags = if self.next_used.wrap {
            F_AVAIL | F_USED
        } else {
            0
        };
        if self.pending_head.is_none() {
            self.pending_head = Some((idx, flags));
        } else {
            // SAFETY: as above, the flags at 14 are inside the slot and 2-byte aligned. The
            // driver looks at this slot only after the batch's first, stored last (release).
            unsafe { std::ptr::write_volatile((at + 14) as *mut u16, flags.to_le()) };
        }
        self.next_used = self.next_used.advance(head.slots, self.size);
    }

    /// Makes the batch's used descriptors visible: the first one's flags, one release store.
    pub(crate) fn publish_used(&mut self) {
        if let Some((idx, flags)) = self.pending_head.take() {
            // SAFETY: idx < size: the flags are inside the table and 2-byte aligned.
            let f = unsafe {
                AtomicU16::from_ptr((self.desc + 16 * usize::from(idx) + 14) as *mut u16)
            };
            f.store(flags.to_le(), Ordering::Release);
        }
    }

    fn evt_u16(at: usize) -> u16 {
        // SAFETY: callers pass an event area or its address + 2 (4 bytes, 4-aligned, mapped:
        // struct invariant); the other side writes it concurrently, hence an atomic.
        let v = unsafe { AtomicU16::from_ptr(at as *mut u16) };
        u16::from_le(v.load(Ordering::Acquire))
    }

    /// After [`PackedRing::publish_used`]: does the driver want to be notified of the used
    /// descriptors published since the batch began (its driver event suppression area)?
    pub(crate) fn needs_notification(&mut self) -> bool {
        let old = self.published_used;
        let new = self.next_used;
        self.published_used = new;
        if old == new {
            return false;
        }
        // The used flags must be visible before we read the driver's wish.
        fence(Ordering::SeqCst);
        let flags = Self::evt_u16(self.driver_evt + 2);
        match flags {
            EVENT_DISABLE => false,
            EVENT_DESC if self.event_idx => {
                let off_wrap = Self::evt_u16(self.driver_evt);
                // As vring_need_event, on indices extended by one lap (DPDK's vhost does the
                // same): the batch covered (old, new]; did it pass the driver's event slot?
                let size = self.size;
                let new_i = new.idx;
                let old_i = if new.idx <= old.idx {
                    old.idx.wrapping_sub(size)
                } else {
                    old.idx
                };
                let mut off = off_wrap & !WRAP_BIT;
                if (off_wrap & WRAP_BIT != 0) != new.wrap {
                    off = off.wrapping_sub(size);
                }
                new_i.wrapping_sub(off).wrapping_sub(1) < new_i.wrapping_sub(old_i)
            }
            // ENABLE, or a value the driver may not use: notify.
            _ => true,
        }
    }

    fn store_device_flags(&self, v: u16) {
        // SAFETY: `device_evt + 2` is inside the device event area and 2-byte aligned
        // (struct invariant).
        let f = unsafe { AtomicU16::from_ptr((self.device_evt + 2) as *mut u16) };
        f.store(v.to_le(), Ordering::Relaxed);
    }

    /// Asks the driver to kick on its next chain. Returns true if a chain arrived meanwhile.
    pub(crate) fn enable_notification(&mut self) -> bool {
        self.store_device_flags(EVENT_ENABLE);
        fence(Ordering::SeqCst);
        self.has_avail()
    }

    /// Asks the driver never to kick this queue (an RX ring, see `SplitRing::suppress_kicks`);
    /// written only when not already set, so the line the driver reads stays clean.
    #[inline]
    pub(crate) fn suppress_kicks(&mut self) {
        // SAFETY: as in `store_device_flags`.
        let f = unsafe { AtomicU16::from_ptr((self.device_evt + 2) as *mut u16) };
        if u16::from_le(f.load(Ordering::Relaxed)) != EVENT_DISABLE {
            self.store_device_flags(EVENT_DISABLE);
        }
    }

    /// Asks the driver not to kick.
    pub(crate) fn disable_notification(&mut self) {
        self.store_device_flags(EVENT_DISABLE);
    }
}

/// Available for a device whose avail wrap counter is `wrap`.
#[inline]
fn is_avail(flags: u16, wrap: bool) -> bool {
    (flags & F_AVAIL != 0) == wrap && (flags & F_USED != 0) != wrap
}

impl AvailPeek {
    /// Remembers where the next chain of `ring` would appear: the AVAIL flag of the slot at its
    /// avail position, which stays unlike the device's wrap counter until the driver fills the
    /// slot (a driver writing anything else there only costs a full look).
    pub(crate) fn packed(mem: Arc<GuardedMemory>, ring: &PackedRing<'_>) -> Self {
        AvailPeek {
            mem,
            idx_at: ring.desc + 16 * usize::from(ring.next_avail.idx) + 14,
            seen: if ring.next_avail.wrap { 0 } else { F_AVAIL },
            mask: F_AVAIL,
            budget: PEEK_BUDGET,
        }
    }
}

/// Iterates over the descriptors of the chain at the device's avail position: consecutive
/// slots while NEXT is set, or the descriptors of one indirect table, bounded by the ring size
/// and by [`super::MAX_CHAIN_DESCS`] reads in all. Yields an error (and then stops) on
/// anything malformed; [`PackedChain::finish`] then finds where the chain ends in the ring.
pub(crate) struct PackedChain<'r, 'm> {
    ring: &'r PackedRing<'m>,
    head: u16,
    /// Ring slots read so far.
    slots: u16,
    /// The buffer id of the last slot read.
    id: u16,
    /// The last slot read had no NEXT: the chain ends there in the ring.
    ring_end: bool,
    table: usize,
    table_len: u16,
    table_next: u16,
    ttl: u16,
    reads: u16,
    indirect: bool,
    done: bool,
}

impl PackedChain<'_, '_> {
    #[cold]
    fn fail(&mut self, e: ChainError) -> Option<Result<Desc, ChainError>> {
        self.done = true;
        Some(Err(e))
    }

    /// Reads the next ring slot of the chain. `None`: the chain already takes the whole ring.
    #[inline]
    fn next_slot(&mut self) -> Option<PackedDesc> {
        if self.slots == self.ring.size {
            return None;
        }
        let mut idx = u32::from(self.head) + u32::from(self.slots);
        if idx >= u32::from(self.ring.size) {
            idx -= u32::from(self.ring.size);
        }
        let d = self.ring.read(idx as u16);
        self.slots += 1;
        self.id = d.id;
        self.ring_end = d.flags & F_NEXT == 0;
        Some(d)
    }

    /// Where the chain ends in the ring, after the walk (complete or failed): its id and slots.
    /// `Err`: it never ends within the ring size, so where the next chain starts is unknown
    /// (a broken ring). Adds the slots read past the walk to `reads`.
    pub(crate) fn finish(mut self, reads: &mut u32) -> Result<PackedHead, ChainError> {
        *reads += u32::from(self.reads.max(1));
        while !self.ring_end {
            if self.next_slot().is_none() {
                return Err(ChainError::TooLong);
            }
            *reads += 1;
        }
        Ok(PackedHead {
            id: self.id,
            slots: self.slots,
        })
    }

    /// Switches to the indirect table `d` points at.
    #[cold]
    #[inline(never)]
    fn enter_indirect(&mut self, d: &PackedDesc) -> Result<(), ChainError> {
        let len = d.len as usize;
        // An indirect descriptor is a chain's only slot (the driver must not set NEXT on it).
        if self.slots != 1
            || d.flags & F_NEXT != 0
            || len == 0
            || !len.is_multiple_of(DESC_SIZE)
            || len / DESC_SIZE > usize::from(u16::MAX)
        {
            return Err(ChainError::BadIndirect);
        }
        self.table = self
            .ring
            .map
            .host(d.addr, len)
            .ok_or(ChainError::BadIndirect)?;
        self.table_len = (len / DESC_SIZE) as u16;
        self.ttl = self.table_len.min(super::MAX_CHAIN_DESCS - self.reads);
        self.table_next = 0;
        self.indirect = true;
        Ok(())
    }
}

impl Iterator for PackedChain<'_, '_> {
    type Item = Result<Desc, ChainError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.indirect {
            // The table's descriptors in sequence; only WRITE counts (NEXT and the id are
            // ignored, as the spec says), a nested table is refused.
            if self.table_next == self.table_len {
                self.done = true;
                return None;
            }
            if self.ttl == 0 {
                return self.fail(ChainError::TooLong);
            }
            // SAFETY: table_next < table_len, and the table is mapped (checked on entry).
            let d = unsafe { super::read_desc(self.table, self.table_next) };
            // An indirect table holds packed descriptors too: the flags are in the split
            // layout's `next` field.
            let flags = d.next;
            self.table_next += 1;
            self.ttl -= 1;
            self.reads += 1;
            if flags & F_INDIRECT != 0 {
                return self.fail(ChainError::BadIndirect);
            }
            return Some(Ok(Desc {
                addr: d.addr,
                len: d.len,
                write: flags & F_WRITE != 0,
            }));
        }
        if self.slots > 0 && self.ring_end {
            self.done = true;
            return None;
        }
        if self.ttl == 0 {
            return self.fail(ChainError::TooLong);
        }
        let Some(d) = self.next_slot() else {
            return self.fail(ChainError::TooLong);
        };
        self.ttl -= 1;
        self.reads += 1;
        if d.flags & F_INDIRECT != 0 {
            if let Err(e) = self.enter_indirect(&d) {
                return self.fail(e);
            }
            return self.next();
        }
        Some(Ok(Desc {
            addr: d.addr,
            len: d.len,
            write: d.flags & F_WRITE != 0,
        }))
    }
}

#[cfg(test)]
#[path = "packed_tests.rs"]
mod tests;
