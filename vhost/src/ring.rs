//! A split virtqueue as the datapath touches it: one batch at a time, through host addresses of
//! the ring areas resolved once per batch.
//!
//! virtio-queue's `Queue` keeps the ring's configuration and indices (vhost-user-backend sets
//! them from SET_VRING_*), and its own accessors look every ring access up in guest memory and
//! publish the used index after every entry. The datapath instead checks once per batch that
//! the descriptor table, avail ring and used ring lie entirely inside guest memory (and are
//! aligned as the virtio spec requires), then reads and writes them with single volatile
//! accesses, publishes the used index once per batch, and walks chains with explicit errors
//! (virtio-queue's chain iterator ends silently on a loop or a bad indirect table, which would
//! hide a malformed chain from the counters). The indices are written back to the `Queue` at
//! the end of the batch.
//!
//! Order (what VIRTIO_F_IN_ORDER promises): chains are taken strictly in avail order, and
//! every chain taken gets one used entry, in the same order, before the batch publishes:
//! a TX chain that is malformed, oversize or a runt is returned with length 0 where a good
//! one would be; an RX chain a frame could not use is either returned with length 0 (it was
//! malformed) or given back untaken ([`SplitRing::unpop`], with the frame's unpublished used
//! entries forgotten), so the next frame takes it at the same place. One used entry per chain,
//! never only the batch's last: RX drivers read each entry's length, and drivers that did not
//! negotiate IN_ORDER read each id. The one avail entry never returned is a head beyond the
//! descriptor table (it names no buffer; the driver that wrote it is broken, and handing it an
//! index outside its own table back could only hurt it), and a ring whose avail index jumps is
//! parked whole (`park.rs`).

use std::num::Wrapping;
use std::sync::atomic::{fence, AtomicU16, Ordering};
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};

use crate::mem_view::GuardedMemory;
use crate::memory::{read_guest, write_guest, GuestMap, GuestMemory};

mod packed;
pub(crate) use packed::{PackedHead, PackedRing, Pos};

const DESC_SIZE: usize = 16;
pub(crate) const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;
const USED_F_NO_NOTIFY: u16 = 1;
const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// Most descriptors one chain walk reads, whatever the ring or indirect table size (DPDK's
/// vhost library has the same limit, `BUF_VECTOR_MAX`). Every chain a driver really posts is far
/// shorter (a TX frame takes at most 64 segments plus its header, Linux uses at most 19
/// descriptors per buffer); a loop or an absurdly long chain ends here instead of costing up to
/// a whole 32768-entry ring (or a 65535-entry indirect table) per chain.
pub const MAX_CHAIN_DESCS: u16 = 256;

/// A malformed chain or ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChainError {
    /// `next` (or the head) is beyond the table.
    IndexOutOfRange,
    /// More descriptors than the table holds: a loop.
    TooLong,
    /// The indirect table is misaligned, empty, too big, nested or outside guest memory.
    BadIndirect,
}

/// One descriptor of a chain (guest physical address, not yet translated).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Desc {
    pub addr: u64,
    pub len: u32,
    pub write: bool,
}

/// The rings of one queue, resolved for one batch.
///
/// Invariant: `desc`, `avail` and `used` are host addresses of `16 * size`, `6 + 2 * size` and
/// `6 + 8 * size` bytes inside guest memory mapped by `map`, aligned to 16, 2 and 4 bytes.
pub(crate) struct SplitRing<'m> {
    map: GuestMap<'m>,
    desc: usize,
    avail: usize,
    used: usize,
    /// Guest physical address of the used ring (dirty logging).
    used_gpa: u64,
    size: u16,
    next_avail: Wrapping<u16>,
    next_used: Wrapping<u16>,
    published_used: Wrapping<u16>,
    avail_idx: Wrapping<u16>,
    event_idx: bool,
}

impl<'m> SplitRing<'m> {
    /// Resolves the queue's rings; `None` when the queue is not ready, its areas are not
    /// (entirely) inside one guest memory region, or they are misaligned.
    pub(crate) fn new(mem: &'m GuestMemory, q: &Queue) -> Option<Self> {
        if !q.ready() {
            return None;
        }
        let size = q.size();
        if size == 0 || !size.is_power_of_two() {
            return None;
        }
        let n = usize::from(size);
        let map = GuestMap::new(mem);
        let desc = map.host(q.desc_table(), n * DESC_SIZE)?;
        let avail = map.host(q.avail_ring(), 6 + 2 * n)?;
        let used = map.host(q.used_ring(), 6 + 8 * n)?;
        if !desc.is_multiple_of(16) || !avail.is_multiple_of(2) || !used.is_multiple_of(4) {
            return None;
        }
        let next_used = Wrapping(q.next_used());
        Some(SplitRing {
            map,
            desc,
            avail,
            used,
            used_gpa: q.used_ring(),
            size,
            next_avail: Wrapping(q.next_avail()),
            next_used,
            published_used: next_used,
            avail_idx: Wrapping(q.next_avail()),
            event_idx: q.event_idx_enabled(),
        })
    }

    /// The guest's memory, translated for this batch.
    #[inline]
    pub(crate) fn map(&self) -> &GuestMap<'m> {
        &self.map
    }

    /// Writes the indices back to the queue (end of batch).
    pub(crate) fn store_back(&self, q: &mut Queue) {
        q.set_next_avail(self.next_avail.0);
        q.set_next_used(self.next_used.0);
    }

    #[inline]
    fn avail_u16(&self, off: usize) -> u16 {
        // SAFETY: every caller passes an offset < 6 + 2 * size (the avail ring's length, see the
        // struct invariant); the ring and the offset are 2-byte aligned.
        u16::from_le(unsafe { std::ptr::read_volatile((self.avail + off) as *const u16) })
    }

    #[inline]
    fn load_avail_idx(&self) -> Wrapping<u16> {
        // SAFETY: `avail + 2` is inside the avail ring and 2-byte aligned (struct invariant);
        // the mapping outlives `self`. The guest writes it concurrently, hence an atomic.
        let idx = unsafe { AtomicU16::from_ptr((self.avail + 2) as *mut u16) };
        Wrapping(u16::from_le(idx.load(Ordering::Acquire)))
    }

    /// Chains the guest made available and the device has not taken. `None`: the guest moved
    /// its index by more than the ring size (a broken ring).
    #[inline]
    pub(crate) fn pending(&mut self) -> Option<u16> {
        if self.avail_idx == self.next_avail {
            self.avail_idx = self.load_avail_idx();
        }
        let n = (self.avail_idx - self.next_avail).0;
        (n <= self.size).then_some(n)
    }

    /// How far the guest's avail index is ahead of the device (as last loaded); more than the
    /// ring size means the ring is broken. For the log line that reports it.
    pub(crate) fn avail_ahead(&self) -> u16 {
        (self.avail_idx - self.next_avail).0
    }

    /// Takes the next available head. `Ok(None)`: nothing available. `Err`: the ring is broken
    /// (index jump); the caller should stop processing this queue.
    #[inline]
    pub(crate) fn pop(&mut self) -> Result<Option<u16>, ChainError> {
        match self.pending() {
            None => Err(ChainError::IndexOutOfRange),
            Some(0) => Ok(None),
            Some(_) => {
                let slot = usize::from(self.next_avail.0 & (self.size - 1));
                let head = self.avail_u16(4 + 2 * slot);
                self.next_avail += Wrapping(1);
                Ok(Some(head))
            }
        }
    }

    /// Gives back the last `n` popped heads (they stay available to the guest's device).
    pub(crate) fn unpop(&mut self, n: u16) {
        self.next_avail -= Wrapping(n);
    }

    /// Entry `index` of the ring's own descriptor table, for the fast paths that recognise
    /// the common one- and two-descriptor layouts; `None` if `index` is beyond the table.
    #[inline(always)]
    pub(crate) fn desc(&self, index: u16) -> Option<RawDesc> {
        // SAFETY: index < size, and the table holds `size` entries (struct invariant).
        (index < self.size).then(|| unsafe { read_desc(self.desc, index) })
    }

    /// Walks the chain starting at `head`.
    #[inline]
    pub(crate) fn chain(&self, head: u16) -> Chain<'_, 'm> {
        Chain {
            map: &self.map,
            table: self.desc,
            table_len: self.size,
            next: head,
            ttl: self.size.min(MAX_CHAIN_DESCS),
            reads: 0,
            indirect: false,
            done: false,
        }
    }

    /// Records a used entry (not visible to the guest until [`SplitRing::publish_used`]).
    #[inline]
    pub(crate) fn push_used(&mut self, head: u16, len: u32) {
        let slot = usize::from(self.next_used.0 & (self.size - 1));
        let mut e = [0u8; 8];
        e[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        e[4..].copy_from_slice(&len.to_le_bytes());
        // SAFETY: slot < size, so the 8-byte element at 4 + 8 * slot is inside the used ring
        // (struct invariant).
        unsafe { write_guest(self.used + 4 + 8 * slot, e) };
        self.next_used += Wrapping(1);
    }

    /// The position of the next used entry (to undo entries of a frame that failed).
    #[inline]
    pub(crate) fn used_mark(&self) -> Wrapping<u16> {
        self.next_used
    }

    /// Forgets the (unpublished) used entries recorded since `mark`.
    #[inline]
    pub(crate) fn rewind_used(&mut self, mark: Wrapping<u16>) {
        self.next_used = mark;
    }

    /// Sets the length of the (unpublished) used entries recorded since `mark` to zero.
    #[cold]
    pub(crate) fn zero_used_lens_since(&mut self, mark: Wrapping<u16>) {
        let mut i = mark;
        while i != self.next_used {
            let slot = usize::from(i.0 & (self.size - 1));
            // SAFETY: slot < size: the length field at 8 + 8 * slot is inside the used ring.
            unsafe { write_guest(self.used + 8 + 8 * slot, 0u32.to_le_bytes()) };
            i += Wrapping(1);
        }
    }

    /// Makes the recorded used entries visible: one release store per batch.
    pub(crate) fn publish_used(&mut self) {
        if self.published_used != self.next_used {
            // SAFETY: `used + 2` is inside the used ring and 2-byte aligned (struct invariant).
            let idx = unsafe { AtomicU16::from_ptr((self.used + 2) as *mut u16) };
            idx.store(self.next_used.0.to_le(), Ordering::Release);
        }
    }

    /// After [`SplitRing::publish_used`]: does the guest want to be notified of the entries
    /// published since the batch began?
    pub(crate) fn needs_notification(&mut self) -> bool {
        let old = self.published_used;
        let new = self.next_used;
        self.published_used = new;
        if old == new {
            return false;
        }
        // The used index store must be visible before we read the guest's wish.
        fence(Ordering::SeqCst);
        if self.event_idx {
            let ev = Wrapping(self.avail_u16(4 + 2 * usize::from(self.size)));
            // vring_need_event
            (new - ev - Wrapping(1)) < (new - old)
        } else {
            self.avail_u16(0) & AVAIL_F_NO_INTERRUPT == 0
        }
    }

    fn store_used_u16(&self, off: usize, v: u16) {
        // SAFETY: callers pass 0 (flags) or 4 + 8 * size (avail_event), both inside the used
        // ring and 2-byte aligned (struct invariant).
        unsafe { std::ptr::write_volatile((self.used + off) as *mut u16, v.to_le()) };
    }

    /// Asks the guest to kick on its next new chain. Returns true if chains arrived meanwhile.
    pub(crate) fn enable_notification(&mut self) -> bool {
        if self.event_idx {
            self.store_used_u16(4 + 8 * usize::from(self.size), self.next_avail.0);
        } else {
            self.store_used_u16(0, 0);
        }
        fence(Ordering::SeqCst);
        self.avail_idx = self.load_avail_idx();
        self.avail_idx != self.next_avail
    }

    /// Asks the guest not to kick (without EVENT_IDX; with it, not re-arming is enough).
    pub(crate) fn disable_notification(&mut self) {
        if !self.event_idx {
            self.store_used_u16(0, USED_F_NO_NOTIFY);
        }
    }

    /// Asks the guest never to kick this queue (an RX ring: the device never waits for
    /// buffers, so a kick for every refill would only cost the guest a syscall and wake the
    /// connection's worker). Without EVENT_IDX the flag is written only when it is not
    /// already set, so the cache line the driver reads stays clean; with EVENT_IDX the avail
    /// event is never armed, which asks for no kick until the index wraps onto it.
    #[inline]
    pub(crate) fn suppress_kicks(&mut self) {
        if self.event_idx {
            return;
        }
        // SAFETY: `used` is the used ring's flags field, inside guest memory and 2-byte aligned
        // (struct invariant).
        let flags = u16::from_le(unsafe { std::ptr::read_volatile(self.used as *const u16) });
        if flags & USED_F_NO_NOTIFY == 0 {
            self.store_used_u16(0, flags | USED_F_NO_NOTIFY);
        }
    }

    /// Ring size (entries).
    #[inline]
    pub(crate) fn size(&self) -> u16 {
        self.size
    }
}

/// What dirty logging (`dirty_log.rs`) needs to know of the batch.
impl SplitRing<'_> {
    /// The used ring's guest physical address and length (flags, index, entries, avail event).
    pub(crate) fn used_area(&self) -> (u64, u64) {
        (self.used_gpa, 6 + 8 * u64::from(self.size))
    }

    /// The used entries recorded since the last publish: (head, length), as written.
    pub(crate) fn unpublished_used(&self) -> impl Iterator<Item = (u16, u32)> + '_ {
        let mut i = self.published_used;
        std::iter::from_fn(move || {
            if i == self.next_used {
                return None;
            }
            let slot = usize::from(i.0 & (self.size - 1));
            i += Wrapping(1);
            // SAFETY: slot < size, so the 8-byte element at 4 + 8 * slot is inside the used
            // ring (struct invariant).
            let e: [u8; 8] = unsafe { read_guest(self.used + 4 + 8 * slot) };
            let head = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
            let len = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            Some((u16::try_from(head).unwrap_or(u16::MAX), len))
        })
    }
}

/// Where a queue's avail index lies, remembered at the end of a batch, so that a poller can
/// tell whether the guest added chains since with one load instead of locking and resolving
/// the ring. It holds the memory snapshot the address was resolved in (the mapping stays
/// valid, and registered with the SIGBUS handler, while it lives), is dropped when the guest's memory table changes, and lets a full
/// pass through after a bounded number of peeks, so a queue reconfigured under it (a device
/// restart without a new connection) is noticed.
pub(crate) struct AvailPeek {
    mem: Arc<GuardedMemory>,
    idx_at: usize,
    seen: u16,
    /// The bits of the value at `idx_at` that tell (all of them for a split ring's avail
    /// index; the AVAIL flag of a packed ring's next slot).
    mask: u16,
    budget: u16,
}

/// Peeks before a full pass is forced.
const PEEK_BUDGET: u16 = 1024;

impl AvailPeek {
    /// Remembers `ring`'s avail index position and how far the device has consumed it.
    pub(crate) fn new(mem: Arc<GuardedMemory>, ring: &SplitRing<'_>) -> Self {
        AvailPeek {
            mem,
            idx_at: ring.avail + 2,
            seen: ring.next_avail.0,
            mask: u16::MAX,
            budget: PEEK_BUDGET,
        }
    }

    /// True when the guest has certainly not added chains since the peek was taken (in
    /// memory `current`). False means "look properly".
    #[inline]
    pub(crate) fn unchanged(&mut self, current: &GuardedMemory) -> bool {
        if self.budget == 0 || !std::ptr::eq(Arc::as_ptr(&self.mem), current) {
            return false;
        }
        self.budget -= 1;
        // SAFETY: `idx_at` is the avail index of a split ring or the flags of a packed ring's
        // slot, resolved in `self.mem` (inside it and 2-byte aligned, see the rings'
        // invariants), which this peek keeps mapped.
        let idx = unsafe { AtomicU16::from_ptr(self.idx_at as *mut u16) };
        u16::from_le(idx.load(Ordering::Acquire)) & self.mask == self.seen
    }
}

/// A descriptor as read from a table (little-endian fields decoded).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawDesc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

impl RawDesc {
    /// A plain device-readable buffer (no WRITE, no INDIRECT) of non-zero length.
    #[inline]
    pub(crate) fn is_plain_readable(&self) -> bool {
        self.flags & (F_WRITE | F_INDIRECT) == 0 && self.len != 0
    }

    /// A plain device-writable buffer (WRITE, no INDIRECT) of non-zero length.
    #[inline]
    pub(crate) fn is_plain_writable(&self) -> bool {
        self.flags & (F_WRITE | F_INDIRECT) == F_WRITE && self.len != 0
    }

    /// Has a successor in the chain.
    #[inline]
    pub(crate) fn has_next(&self) -> bool {
        self.flags & F_NEXT != 0
    }
}

/// Reads entry `index` of the table at host address `table`: two 8-byte volatile loads when
/// the table is 8-byte aligned (always for the ring's own table, which must be 16-aligned;
/// drivers align indirect tables too), sixteen byte loads otherwise.
///
/// # Safety
/// `index` must be below the table's length and the table must lie in mapped guest memory.
#[inline]
unsafe fn read_desc(table: usize, index: u16) -> RawDesc {
    let at = table + usize::from(index) * DESC_SIZE;
    let (lo, hi) = if at.is_multiple_of(8) {
        // SAFETY: in bounds per the caller, 8-byte aligned (checked just above).
        unsafe {
            (
                std::ptr::read_volatile(at as *const u64),
                std::ptr::read_volatile((at + 8) as *const u64),
            )
        }
    } else {
        // SAFETY: in bounds per the caller; `[u8; 16]` has alignment 1.
        let b: [u8; DESC_SIZE] = unsafe { read_guest(at) };
        let mut lo = [0u8; 8];
        let mut hi = [0u8; 8];
        lo.copy_from_slice(&b[..8]);
        hi.copy_from_slice(&b[8..]);
        (u64::from_ne_bytes(lo), u64::from_ne_bytes(hi))
    };
    let (lo, hi) = (u64::from_le(lo), u64::from_le(hi));
    RawDesc {
        addr: lo,
        len: hi as u32,
        flags: (hi >> 32) as u16,
        next: (hi >> 48) as u16,
    }
}

/// Iterates over the descriptors of one chain, following `next` and one level of indirection,
/// bounded by the table size and by [`MAX_CHAIN_DESCS`] reads in all. Yields an error (and then
/// stops) on anything malformed.
///
/// Invariant: `table` is the host address of `table_len` descriptors inside mapped guest memory.
pub(crate) struct Chain<'r, 'm> {
    map: &'r GuestMap<'m>,
    table: usize,
    table_len: u16,
    next: u16,
    /// Descriptor reads left before the chain is declared a loop.
    ttl: u16,
    /// Descriptor reads so far (what the walk cost, for the TX budget).
    reads: u16,
    indirect: bool,
    done: bool,
}

impl Chain<'_, '_> {
    /// Descriptors read so far (indirect ones included).
    #[inline]
    pub(crate) fn reads(&self) -> u16 {
        self.reads
    }

    #[cold]
    fn fail(&mut self, e: ChainError) -> Option<Result<Desc, ChainError>> {
        self.done = true;
        Some(Err(e))
    }

    /// Switches to the indirect table `d` points at (rare: kept out of the walking loop).
    #[cold]
    #[inline(never)]
    fn enter_indirect(&mut self, d: &RawDesc) -> Result<(), ChainError> {
        let len = d.len as usize;
        if self.indirect
            || d.flags & F_NEXT != 0
            || len == 0
            || !len.is_multiple_of(DESC_SIZE)
            || len / DESC_SIZE > usize::from(u16::MAX)
        {
            return Err(ChainError::BadIndirect);
        }
        let table = self.map.host(d.addr, len).ok_or(ChainError::BadIndirect)?;
        self.table = table;
        self.table_len = (len / DESC_SIZE) as u16;
        // A loop inside the table ends after its length (which may exceed the ring's); the
        // whole walk stays within MAX_CHAIN_DESCS reads.
        self.ttl = self.table_len.min(MAX_CHAIN_DESCS - self.reads);
        self.next = 0;
        self.indirect = true;
        Ok(())
    }
}

impl Iterator for Chain<'_, '_> {
    type Item = Result<Desc, ChainError>;

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            if self.ttl == 0 {
                return self.fail(ChainError::TooLong);
            }
            if self.next >= self.table_len {
                return self.fail(ChainError::IndexOutOfRange);
            }
            // SAFETY: next < table_len, and the table is mapped (struct invariant).
            let d = unsafe { read_desc(self.table, self.next) };
            self.ttl -= 1;
            self.reads += 1;
            if d.flags & F_INDIRECT != 0 {
                if let Err(e) = self.enter_indirect(&d) {
                    return self.fail(e);
                }
                continue;
            }
            if d.flags & F_NEXT != 0 {
                self.next = d.next;
            } else {
                self.done = true;
            }
            return Some(Ok(Desc {
                addr: d.addr,
                len: d.len,
                write: d.flags & F_WRITE != 0,
            }));
        }
    }
}

#[cfg(test)]
mod tests;
