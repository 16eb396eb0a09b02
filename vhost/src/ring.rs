//! A split virtqueue as the datapath touches it: one batch at a time, through slices of the
//! ring areas resolved once per batch.
//!
//! virtio-queue's `Queue` keeps the ring's configuration and indices (vhost-user-backend sets
//! them from SET_VRING_*), and its own accessors look every ring access up in guest memory and
//! publish the used index after every entry. The datapath instead resolves the descriptor
//! table, avail ring and used ring to bounds-checked `VolatileSlice`s once per batch, publishes
//! the used index once per batch, and walks chains with explicit errors (virtio-queue's chain
//! iterator ends silently on a loop or a bad indirect table, which would hide a malformed chain
//! from the counters). The indices are written back to the `Queue` at the end of the batch.

use std::num::Wrapping;
use std::sync::atomic::{fence, Ordering};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, VolatileSlice};

use crate::memory::GuestMemory;

const DESC_SIZE: usize = 16;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;
const USED_F_NO_NOTIFY: u16 = 1;
const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// A malformed chain or ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChainError {
    /// `next` (or the head) is beyond the table.
    IndexOutOfRange,
    /// More descriptors than the table holds: a loop.
    TooLong,
    /// The indirect table is misaligned, empty, too big, nested or outside guest memory.
    BadIndirect,
    /// The descriptor table itself is unreadable.
    Unreadable,
}

/// One descriptor of a chain.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Desc {
    pub addr: GuestAddress,
    pub len: u32,
    pub write: bool,
}

/// The rings of one queue, resolved for one batch.
pub(crate) struct SplitRing<'m> {
    mem: &'m GuestMemory,
    desc: VolatileSlice<'m, ()>,
    avail: VolatileSlice<'m, ()>,
    used: VolatileSlice<'m, ()>,
    size: u16,
    next_avail: Wrapping<u16>,
    next_used: Wrapping<u16>,
    published_used: Wrapping<u16>,
    avail_idx: Wrapping<u16>,
    event_idx: bool,
}

impl<'m> SplitRing<'m> {
    /// Resolves the queue's rings; `None` when the queue is not ready or its areas are not
    /// (entirely) guest memory.
    pub(crate) fn new(mem: &'m GuestMemory, q: &Queue) -> Option<Self> {
        if !q.ready() {
            return None;
        }
        let size = q.size();
        if size == 0 || !size.is_power_of_two() {
            return None;
        }
        let n = usize::from(size);
        let desc = mem
            .get_slice(GuestAddress(q.desc_table()), n * DESC_SIZE)
            .ok()?;
        let avail = mem
            .get_slice(GuestAddress(q.avail_ring()), 6 + 2 * n)
            .ok()?;
        let used = mem.get_slice(GuestAddress(q.used_ring()), 6 + 8 * n).ok()?;
        let next_used = Wrapping(q.next_used());
        Some(SplitRing {
            mem,
            desc,
            avail,
            used,
            size,
            next_avail: Wrapping(q.next_avail()),
            next_used,
            published_used: next_used,
            avail_idx: Wrapping(q.next_avail()),
            event_idx: q.event_idx_enabled(),
        })
    }

    /// Writes the indices back to the queue (end of batch).
    pub(crate) fn store_back(&self, q: &mut Queue) {
        q.set_next_avail(self.next_avail.0);
        q.set_next_used(self.next_used.0);
    }

    fn load_avail_idx(&self) -> Option<Wrapping<u16>> {
        self.avail
            .load::<u16>(2, Ordering::Acquire)
            .ok()
            .map(|v| Wrapping(u16::from_le(v)))
    }

    /// Chains the guest made available and the device has not taken. `None`: the guest moved
    /// its index by more than the ring size (a broken ring).
    pub(crate) fn pending(&mut self) -> Option<u16> {
        if self.avail_idx == self.next_avail {
            self.avail_idx = self.load_avail_idx()?;
        }
        let n = (self.avail_idx - self.next_avail).0;
        (n <= self.size).then_some(n)
    }

    /// Takes the next available head. `Ok(None)`: nothing available. `Err`: the ring is broken
    /// (index jump); the caller should stop processing this queue.
    pub(crate) fn pop(&mut self) -> Result<Option<u16>, ChainError> {
        match self.pending() {
            None => Err(ChainError::IndexOutOfRange),
            Some(0) => Ok(None),
            Some(_) => {
                let slot = usize::from(self.next_avail.0 % self.size);
                let head = self
                    .avail
                    .load::<u16>(4 + 2 * slot, Ordering::Relaxed)
                    .map_err(|_| ChainError::Unreadable)?;
                self.next_avail += Wrapping(1);
                Ok(Some(u16::from_le(head)))
            }
        }
    }

    /// Gives back the last `n` popped heads (they stay available to the guest's device).
    pub(crate) fn unpop(&mut self, n: u16) {
        self.next_avail -= Wrapping(n);
    }

    /// Walks the chain starting at `head`.
    pub(crate) fn chain(&self, head: u16) -> Chain<'_, 'm> {
        Chain {
            ring: self,
            table: self.desc,
            table_len: self.size,
            next: head,
            ttl: u32::from(self.size),
            indirect: false,
            done: false,
        }
    }

    /// Records a used entry (not visible to the guest until [`SplitRing::publish_used`]).
    pub(crate) fn push_used(&mut self, head: u16, len: u32) {
        let off = 4 + 8 * usize::from(self.next_used.0 % self.size);
        // The slice was resolved for the whole ring: offsets are in range by construction.
        let _ = self
            .used
            .store(u32::from(head).to_le(), off, Ordering::Relaxed);
        let _ = self.used.store(len.to_le(), off + 4, Ordering::Relaxed);
        self.next_used += Wrapping(1);
    }

    /// Makes the recorded used entries visible: one release store per batch.
    pub(crate) fn publish_used(&mut self) {
        if self.published_used != self.next_used {
            let _ = self
                .used
                .store(self.next_used.0.to_le(), 2, Ordering::Release);
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
            let off = 4 + 2 * usize::from(self.size);
            let Ok(ev) = self.avail.load::<u16>(off, Ordering::Relaxed) else {
                return true;
            };
            let ev = Wrapping(u16::from_le(ev));
            // vring_need_event
            (new - ev - Wrapping(1)) < (new - old)
        } else {
            let flags = self.avail.load::<u16>(0, Ordering::Relaxed).unwrap_or(0);
            u16::from_le(flags) & AVAIL_F_NO_INTERRUPT == 0
        }
    }

    /// Asks the guest to kick on its next new chain. Returns true if chains arrived meanwhile.
    pub(crate) fn enable_notification(&mut self) -> bool {
        if self.event_idx {
            let off = 4 + 8 * usize::from(self.size);
            let _ = self
                .used
                .store(self.next_avail.0.to_le(), off, Ordering::Relaxed);
        } else {
            let _ = self.used.store(0u16, 0, Ordering::Relaxed);
        }
        fence(Ordering::SeqCst);
        match self.load_avail_idx() {
            Some(idx) => {
                self.avail_idx = idx;
                idx != self.next_avail
            }
            None => false,
        }
    }

    /// Asks the guest not to kick (without EVENT_IDX; with it, not re-arming is enough).
    pub(crate) fn disable_notification(&mut self) {
        if !self.event_idx {
            let _ = self
                .used
                .store(USED_F_NO_NOTIFY.to_le(), 0, Ordering::Relaxed);
        }
    }

    /// Ring size (entries).
    pub(crate) fn size(&self) -> u16 {
        self.size
    }
}

/// A descriptor as read from a table (little-endian fields decoded).
struct RawDesc {
    addr: GuestAddress,
    len: u32,
    flags: u16,
    next: u16,
}

/// Reads entry `index` of a descriptor table with one 16-byte copy.
#[inline]
fn read_desc(table: &VolatileSlice<'_, ()>, index: u16) -> Option<RawDesc> {
    let off = usize::from(index) * DESC_SIZE;
    if off + DESC_SIZE > table.len() {
        return None;
    }
    let mut b = [0u8; DESC_SIZE];
    table.read_slice(&mut b, off).ok()?;
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[0..8]);
    Some(RawDesc {
        addr: GuestAddress(u64::from_le_bytes(a)),
        len: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        flags: u16::from_le_bytes([b[12], b[13]]),
        next: u16::from_le_bytes([b[14], b[15]]),
    })
}

/// Iterates over the descriptors of one chain, following `next` and one level of indirection,
/// bounded by the table size. Yields an error (and then stops) on anything malformed.
pub(crate) struct Chain<'r, 'm> {
    ring: &'r SplitRing<'m>,
    table: VolatileSlice<'m, ()>,
    table_len: u16,
    next: u16,
    ttl: u32,
    indirect: bool,
    done: bool,
}

impl Chain<'_, '_> {
    fn fail(&mut self, e: ChainError) -> Option<Result<Desc, ChainError>> {
        self.done = true;
        Some(Err(e))
    }
}

impl Iterator for Chain<'_, '_> {
    type Item = Result<Desc, ChainError>;

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
            let Some(d) = read_desc(&self.table, self.next) else {
                return self.fail(ChainError::Unreadable);
            };
            self.ttl -= 1;
            let flags = d.flags;
            if flags & F_INDIRECT != 0 {
                let len = d.len as usize;
                if self.indirect
                    || flags & F_NEXT != 0
                    || len == 0
                    || !len.is_multiple_of(DESC_SIZE)
                    || len / DESC_SIZE > usize::from(u16::MAX)
                {
                    return self.fail(ChainError::BadIndirect);
                }
                let Ok(table) = self.ring.mem.get_slice(d.addr, len) else {
                    return self.fail(ChainError::BadIndirect);
                };
                self.table = table;
                self.table_len = (len / DESC_SIZE) as u16;
                self.ttl = u32::from(self.table_len);
                self.next = 0;
                self.indirect = true;
                continue;
            }
            if flags & F_NEXT != 0 {
                self.next = d.next;
            } else {
                self.done = true;
            }
            return Some(Ok(Desc {
                addr: d.addr,
                len: d.len,
                write: flags & F_WRITE != 0,
            }));
        }
    }
}
