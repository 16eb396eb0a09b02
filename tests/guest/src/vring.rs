//! Split virtqueue, driver side: ring layout in guest memory, a descriptor allocator, avail
//! publishing, used-ring consumption and the notification rules (EVENT_IDX or flags).
//!
//! The allocator keeps its own shadow of each in-flight chain (head -> descriptor indices), so
//! freeing never trusts what the device (or a test) left in the descriptor table.

use std::num::Wrapping;
use std::os::fd::AsRawFd;
use std::sync::atomic::{fence, Ordering};
use std::time::Duration;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::error::GuestError;
use crate::memory::GuestMem;

/// Size of one descriptor table entry.
pub const DESC_SIZE: u64 = 16;
/// `VRING_DESC_F_NEXT`.
pub const DESC_F_NEXT: u16 = 1;
/// `VRING_DESC_F_WRITE` (device-writable buffer).
pub const DESC_F_WRITE: u16 = 2;
/// `VRING_DESC_F_INDIRECT`.
pub const DESC_F_INDIRECT: u16 = 4;
const USED_F_NO_NOTIFY: u16 = 1;
const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// One descriptor as written into a descriptor table (or an indirect table) verbatim.
///
/// `next: None` means "link to the descriptor that follows in the slice passed to the API"
/// (0 for the last one); `Some(v)` writes `v` as is, so tests can point anywhere or form loops.
/// `flags` is always written as given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawDesc {
    /// Guest-physical buffer address.
    pub addr: u64,
    /// Buffer length in bytes.
    pub len: u32,
    /// `DESC_F_*` flags.
    pub flags: u16,
    /// Explicit `next` field, or `None` to link to the following descriptor.
    pub next: Option<u16>,
}

impl RawDesc {
    /// A descriptor with automatic linking (`next: None`).
    pub fn new(addr: u64, len: u32, flags: u16) -> Self {
        RawDesc {
            addr,
            len,
            flags,
            next: None,
        }
    }

    /// The same descriptor with an explicit `next` field.
    pub fn with_next(mut self, next: u16) -> Self {
        self.next = Some(next);
        self
    }
}

/// Guest-physical addresses of one split ring's three parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingAddrs {
    /// Descriptor table.
    pub desc: u64,
    /// Available (driver) ring.
    pub avail: u64,
    /// Used (device) ring.
    pub used: u64,
    /// Number of entries.
    pub size: u16,
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

impl RingAddrs {
    /// Lays out a ring of `size` entries at `base`; returns it and the first free byte after it.
    pub(crate) fn layout(base: u64, size: u16) -> (Self, u64) {
        let q = u64::from(size);
        let desc = align_up(base, 64);
        let avail = desc + DESC_SIZE * q;
        let used = align_up(avail + 6 + 2 * q, 64);
        let end = used + 6 + 8 * q;
        (
            RingAddrs {
                desc,
                avail,
                used,
                size,
            },
            end,
        )
    }
    fn avail_idx(&self) -> u64 {
        self.avail + 2
    }
    fn avail_slot(&self, i: u16) -> u64 {
        self.avail + 4 + 2 * u64::from(i % self.size)
    }
    /// `used_event` lives after the avail ring.
    pub(crate) fn used_event(&self) -> u64 {
        self.avail + 4 + 2 * u64::from(self.size)
    }
    fn used_idx(&self) -> u64 {
        self.used + 2
    }
    fn used_elem(&self, i: u16) -> u64 {
        self.used + 4 + 8 * u64::from(i % self.size)
    }
    /// `avail_event` lives after the used ring.
    fn avail_event(&self) -> u64 {
        self.used + 4 + 8 * u64::from(self.size)
    }
}

/// `vring_need_event`: should the other side be notified when the index moved old -> new?
#[inline]
pub(crate) fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// Driver-side state of one split virtqueue.
pub(crate) struct DriverQueue {
    pub(crate) ring: RingAddrs,
    next_avail: Wrapping<u16>,
    kicked_avail: Wrapping<u16>,
    last_used: Wrapping<u16>,
    free: Vec<u16>,
    is_free: Vec<bool>,
    chain_len: Vec<u16>,
    shadow_next: Vec<u16>,
    event_idx: bool,
    pinned_used_event: Option<u16>,
    pub(crate) kick: EventFd,
    pub(crate) call: EventFd,
    kicks: u64,
    calls: u64,
    /// Used entries whose id was not an in-flight head (a device bug).
    pub(crate) bogus_used: u64,
}

impl DriverQueue {
    /// Initialises the ring memory (zeroed, avail and used index at `base`).
    pub(crate) fn new(
        mem: &GuestMem,
        ring: RingAddrs,
        base: u16,
        event_idx: bool,
    ) -> Result<Self, GuestError> {
        let q = usize::from(ring.size);
        mem.fill(
            ring.desc,
            (ring.used + 6 + 8 * q as u64 - ring.desc) as usize,
            0,
        )?;
        mem.store_u16(ring.avail_idx(), base, Ordering::Release)?;
        mem.store_u16(ring.used_idx(), base, Ordering::Release)?;
        mem.store_u16(ring.used_event(), base, Ordering::Release)?;
        Ok(DriverQueue {
            ring,
            next_avail: Wrapping(base),
            kicked_avail: Wrapping(base),
            last_used: Wrapping(base),
            free: (0..ring.size).rev().collect(),
            is_free: vec![true; q],
            chain_len: vec![0; q],
            shadow_next: vec![0; q],
            event_idx,
            pinned_used_event: None,
            kick: EventFd::new(EFD_NONBLOCK).map_err(GuestError::EventFd)?,
            call: EventFd::new(EFD_NONBLOCK).map_err(GuestError::EventFd)?,
            kicks: 0,
            calls: 0,
            bogus_used: 0,
        })
    }

    /// Free descriptors.
    pub(crate) fn free_count(&self) -> usize {
        self.free.len()
    }

    /// Takes one free descriptor index.
    #[inline]
    pub(crate) fn alloc(&mut self) -> Option<u16> {
        let d = self.free.pop()?;
        self.is_free[usize::from(d)] = false;
        Some(d)
    }

    /// Takes a specific free descriptor index.
    pub(crate) fn claim(&mut self, idx: u16) -> Result<(), GuestError> {
        if idx >= self.ring.size {
            return Err(GuestError::BadSlot {
                index: idx,
                why: "index is not below the queue size",
            });
        }
        if !self.is_free[usize::from(idx)] {
            return Err(GuestError::BadSlot {
                index: idx,
                why: "descriptor is in flight",
            });
        }
        self.free.retain(|&d| d != idx);
        self.is_free[usize::from(idx)] = false;
        Ok(())
    }

    /// Whether `idx` is free.
    pub(crate) fn is_free(&self, idx: u16) -> bool {
        self.is_free.get(usize::from(idx)).copied().unwrap_or(false)
    }

    /// Records that descriptor `next` follows `prev` in a chain (shadow only).
    #[inline]
    pub(crate) fn link(&mut self, prev: u16, next: u16) {
        self.shadow_next[usize::from(prev)] = next;
    }

    /// Records `head` as an in-flight chain of `len` descriptors (linked with [`Self::link`]).
    #[inline]
    pub(crate) fn mark_head(&mut self, head: u16, len: u16) {
        self.chain_len[usize::from(head)] = len;
    }

    /// Writes descriptor `idx` of the table.
    #[inline]
    pub(crate) fn write_desc(
        &self,
        mem: &GuestMem,
        idx: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) -> Result<(), GuestError> {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&addr.to_le_bytes());
        b[8..12].copy_from_slice(&len.to_le_bytes());
        b[12..14].copy_from_slice(&flags.to_le_bytes());
        b[14..16].copy_from_slice(&next.to_le_bytes());
        mem.write(self.ring.desc + DESC_SIZE * u64::from(idx), &b)
    }

    /// Puts `head` in the next avail slot (not yet visible to the device).
    #[inline]
    pub(crate) fn push_avail(&mut self, mem: &GuestMem, head: u16) -> Result<(), GuestError> {
        mem.store_u16(
            self.ring.avail_slot(self.next_avail.0),
            head,
            Ordering::Relaxed,
        )?;
        self.next_avail += 1;
        Ok(())
    }

    /// Makes pushed avail entries visible (release store of avail->idx).
    #[inline]
    pub(crate) fn publish(&self, mem: &GuestMem) -> Result<(), GuestError> {
        mem.store_u16(self.ring.avail_idx(), self.next_avail.0, Ordering::Release)
    }

    /// The driver's avail index (next slot to fill).
    pub(crate) fn avail_idx(&self) -> u16 {
        self.next_avail.0
    }

    /// Kicks the device if it asked for it (avail_event with EVENT_IDX, else NO_NOTIFY flag).
    /// Returns whether a kick was sent.
    pub(crate) fn notify(&mut self, mem: &GuestMem) -> Result<bool, GuestError> {
        fence(Ordering::SeqCst);
        let new = self.next_avail.0;
        let old = self.kicked_avail.0;
        self.kicked_avail = self.next_avail;
        if new == old {
            return Ok(false);
        }
        let want = if self.event_idx {
            let ev = mem.load_u16(self.ring.avail_event(), Ordering::Acquire)?;
            need_event(ev, new, old)
        } else {
            mem.load_u16(self.ring.used, Ordering::Acquire)? & USED_F_NO_NOTIFY == 0
        };
        if want {
            self.kick_now()?;
        }
        Ok(want)
    }

    /// Writes the kick eventfd unconditionally.
    pub(crate) fn kick_now(&mut self) -> Result<(), GuestError> {
        self.kick.write(1).map_err(GuestError::EventFd)?;
        self.kicks += 1;
        Ok(())
    }

    /// Kicks sent so far.
    pub(crate) fn kicks(&self) -> u64 {
        self.kicks
    }

    /// Used entries published by the device and not yet consumed.
    #[inline]
    pub(crate) fn used_pending(&self, mem: &GuestMem) -> Result<u16, GuestError> {
        let idx = mem.load_u16(self.ring.used_idx(), Ordering::Acquire)?;
        Ok(idx.wrapping_sub(self.last_used.0))
    }

    /// The `k`-th unconsumed used element: (id, len).
    #[inline]
    pub(crate) fn peek_used(&self, mem: &GuestMem, k: u16) -> Result<(u32, u32), GuestError> {
        let a = self.ring.used_elem(self.last_used.0.wrapping_add(k));
        Ok((mem.read_u32(a)?, mem.read_u32(a + 4)?))
    }

    /// Consumes `n` used elements and re-arms `used_event` (unless pinned).
    #[inline]
    pub(crate) fn consume_used(&mut self, mem: &GuestMem, n: u16) -> Result<(), GuestError> {
        self.last_used += n;
        if self.event_idx && self.pinned_used_event.is_none() {
            mem.store_u16(self.ring.used_event(), self.last_used.0, Ordering::Release)?;
        }
        Ok(())
    }

    /// The used index the device last published (what a restarted backend resumes from).
    pub(crate) fn device_used_idx(&self, mem: &GuestMem) -> Result<u16, GuestError> {
        mem.load_u16(self.ring.used_idx(), Ordering::Acquire)
    }

    /// Index of the next used element to consume.
    pub(crate) fn last_used(&self) -> u16 {
        self.last_used.0
    }

    /// Returns the chain whose head is `id` to the free list; `None` (and a bogus count) when `id`
    /// is not an in-flight head. Returns the chain length.
    pub(crate) fn complete(&mut self, id: u32) -> Option<u16> {
        let head = match u16::try_from(id) {
            Ok(h) if h < self.ring.size && self.chain_len[usize::from(h)] != 0 => h,
            _ => {
                self.bogus_used += 1;
                log::error!("device returned used id {id} which is not an in-flight head");
                return None;
            }
        };
        let n = std::mem::take(&mut self.chain_len[usize::from(head)]);
        let mut d = head;
        for _ in 0..n {
            if !self.is_free[usize::from(d)] {
                self.is_free[usize::from(d)] = true;
                self.free.push(d);
            }
            d = self.shadow_next[usize::from(d)];
        }
        Some(n)
    }

    /// Pins `used_event` to `idx` (EVENT_IDX interrupt suppression tests); `None` returns to the
    /// automatic mode (re-armed to the next entry after each consume).
    pub(crate) fn pin_used_event(
        &mut self,
        mem: &GuestMem,
        idx: Option<u16>,
    ) -> Result<(), GuestError> {
        self.pinned_used_event = idx;
        mem.store_u16(
            self.ring.used_event(),
            idx.unwrap_or(self.last_used.0),
            Ordering::Release,
        )
    }

    /// Sets or clears VRING_AVAIL_F_NO_INTERRUPT (interrupt suppression without EVENT_IDX).
    pub(crate) fn set_no_interrupt(&self, mem: &GuestMem, on: bool) -> Result<(), GuestError> {
        let flags = if on { AVAIL_F_NO_INTERRUPT } else { 0 };
        mem.store_u16(self.ring.avail, flags, Ordering::Release)
    }

    /// Adds pending call-eventfd signals to the count and returns the total so far.
    pub(crate) fn calls(&mut self) -> u64 {
        if let Ok(n) = self.call.read() {
            self.calls += n;
        }
        self.calls
    }

    /// Waits up to `timeout` for the call eventfd (or just sleeps when `use_fd` is false).
    pub(crate) fn wait_call(&mut self, timeout: Duration, use_fd: bool) {
        if !use_fd {
            std::thread::sleep(timeout.min(Duration::from_micros(200)));
            return;
        }
        let mut pfd = libc::pollfd {
            fd: self.call.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().clamp(1, 1000) as libc::c_int;
        // SAFETY: `pfd` is a valid pollfd for the duration of the call and nfds is 1.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r > 0 {
            self.calls();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn need_event_matches_virtio_spec() {
        // Device published 0 -> 1 and the driver asked at 0: notify.
        assert!(need_event(0, 1, 0));
        // Asked at 5, moved 0 -> 3: not yet.
        assert!(!need_event(5, 3, 0));
        // Moved 3 -> 6 across 5: notify.
        assert!(need_event(5, 6, 3));
        // Wrapping around 65535.
        assert!(need_event(65535, 2, 65530));
        assert!(!need_event(10, 2, 65530));
    }

    #[test]
    fn ring_layout_is_aligned_and_disjoint() {
        let (r, end) = RingAddrs::layout(0, 256);
        assert_eq!(r.desc % 16, 0);
        assert_eq!(r.avail, r.desc + 256 * 16);
        assert!(r.used >= r.used_event() + 2);
        assert_eq!(r.used % 4, 0);
        assert_eq!(end, r.avail_event() + 2);
    }

    #[test]
    fn allocator_frees_exact_chains() {
        let mem = GuestMem::new(1 << 20).unwrap();
        let (ring, _) = RingAddrs::layout(0, 8);
        let mut q = DriverQueue::new(&mem, ring, 7, true).unwrap();
        assert_eq!(q.avail_idx(), 7);
        let a = q.alloc().unwrap();
        let b = q.alloc().unwrap();
        q.link(a, b);
        q.mark_head(a, 2);
        assert_eq!(q.free_count(), 6);
        assert!(q.claim(b).is_err());
        assert!(q.claim(8).is_err());
        assert_eq!(q.complete(u32::from(b)), None, "not a head");
        assert_eq!(q.bogus_used, 1);
        assert_eq!(q.complete(u32::from(a)), Some(2));
        assert_eq!(q.free_count(), 8);
        assert_eq!(q.complete(u32::from(a)), None, "double completion");
    }
}
