//! Split virtqueue, driver side: ring layout in guest memory, a descriptor allocator, avail
//! publishing, used-ring consumption and the notification rules (EVENT_IDX or flags).
//!
//! The allocator keeps its own shadow of each in-flight chain (head -> descriptor indices), so
//! freeing never trusts what the device (or a test) left in the descriptor table.

use std::num::Wrapping;
use std::os::fd::AsRawFd;
use std::sync::atomic::{fence, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::error::GuestError;
use crate::memory::GuestMem;

#[path = "vring_layout.rs"]
mod layout;
pub use layout::{RawDesc, RingAddrs};

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

/// `vring_need_event`: should the other side be notified when the index moved old -> new?
#[inline]
pub(crate) fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// One split ring resolved to host memory: the descriptor table and the avail and used rings as
/// slices of atomics over guest memory. Built once per batch by [`DriverQueue::view`] (one bounds
/// check per ring area) so that per-entry accesses are plain indexed loads and stores.
pub(crate) struct RingView<'m> {
    /// Two words per descriptor: `addr`, then `len | flags << 32 | next << 48`.
    desc: &'m [AtomicU64],
    /// `flags`, `idx`, `ring[size]`, `used_event`.
    avail: &'m [AtomicU16],
    /// `flags`, `idx`.
    used_hdr: &'m [AtomicU16],
    /// Two words per element: `id`, `len`.
    used: &'m [AtomicU32],
    avail_event: &'m AtomicU16,
    /// `size - 1` (sizes are powers of two).
    mask: u16,
}

impl RingView<'_> {
    /// Writes descriptor `idx` of the table.
    #[inline]
    pub(crate) fn write_desc(
        &self,
        idx: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) -> Result<(), GuestError> {
        let i = 2 * usize::from(idx);
        let Some([a, w]) = self.desc.get(i..i + 2) else {
            return Err(GuestError::BadSlot {
                index: idx,
                why: "index is not below the queue size",
            });
        };
        let word = u64::from(len) | u64::from(flags) << 32 | u64::from(next) << 48;
        a.store(addr.to_le(), Ordering::Relaxed);
        w.store(word.to_le(), Ordering::Relaxed);
        Ok(())
    }

    /// Writes only the second word of descriptor `idx` (`len`, `flags`, `next`), keeping its
    /// address: what a fixed layout changes per use. Returns false (writing nothing) when `idx`
    /// is not below the queue size.
    #[inline]
    pub(crate) fn write_desc_len(&self, idx: u16, len: u32, flags: u16, next: u16) -> bool {
        let Some(w) = self.desc.get(2 * usize::from(idx) + 1) else {
            return false;
        };
        let word = u64::from(len) | u64::from(flags) << 32 | u64::from(next) << 48;
        w.store(word.to_le(), Ordering::Relaxed);
        true
    }

    /// Stores `head` in avail ring slot `slot` (mod size); visible to the device only once the
    /// avail index covering it is published.
    #[inline]
    pub(crate) fn set_avail_slot(&self, slot: u16, head: u16) {
        self.avail[2 + usize::from(slot & self.mask)].store(head.to_le(), Ordering::Relaxed);
    }

    #[inline]
    fn set_avail_idx(&self, idx: u16) {
        self.avail[1].store(idx.to_le(), Ordering::Release);
    }

    #[inline]
    fn set_avail_flags(&self, flags: u16) {
        self.avail[0].store(flags.to_le(), Ordering::Release);
    }

    #[inline]
    fn set_used_event(&self, idx: u16) {
        self.avail[2 + usize::from(self.mask) + 1].store(idx.to_le(), Ordering::Release);
    }

    #[inline]
    fn used_flags(&self) -> u16 {
        u16::from_le(self.used_hdr[0].load(Ordering::Acquire))
    }

    #[inline]
    fn used_idx(&self) -> u16 {
        u16::from_le(self.used_hdr[1].load(Ordering::Acquire))
    }

    /// Used element in ring slot `slot` (mod size): (id, len). Only meaningful after an Acquire
    /// load of the used index that covers it.
    #[inline]
    fn used_elem(&self, slot: u16) -> (u32, u32) {
        let i = 2 * usize::from(slot & self.mask);
        (
            u32::from_le(self.used[i].load(Ordering::Relaxed)),
            u32::from_le(self.used[i + 1].load(Ordering::Relaxed)),
        )
    }

    #[inline]
    fn avail_event(&self) -> u16 {
        u16::from_le(self.avail_event.load(Ordering::Acquire))
    }
}

/// Driver-side bookkeeping of one descriptor.
#[derive(Clone, Copy, Debug, Default)]
struct DescMeta {
    /// Shadow of the chain link (never read back from the table).
    next: u16,
    /// Chain length when this is an in-flight head, else 0.
    chain: u16,
    free: bool,
}

/// Driver-side state of one split virtqueue.
pub(crate) struct DriverQueue {
    pub(crate) ring: RingAddrs,
    next_avail: Wrapping<u16>,
    kicked_avail: Wrapping<u16>,
    last_used: Wrapping<u16>,
    /// Stack of free descriptor indices.
    free: Vec<u16>,
    meta: Vec<DescMeta>,
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
        if !ring.size.is_power_of_two() {
            return Err(GuestError::Config(format!(
                "queue size {} is not a power of two",
                ring.size
            )));
        }
        let q = usize::from(ring.size);
        mem.fill(
            ring.desc,
            (ring.used + 6 + 8 * q as u64 - ring.desc) as usize,
            0,
        )?;
        let mut free: Vec<u16> = Vec::with_capacity(q);
        free.extend((0..ring.size).rev());
        let dq = DriverQueue {
            ring,
            next_avail: Wrapping(base),
            kicked_avail: Wrapping(base),
            last_used: Wrapping(base),
            free,
            meta: vec![
                DescMeta {
                    free: true,
                    ..DescMeta::default()
                };
                q
            ],
            event_idx,
            pinned_used_event: None,
            kick: EventFd::new(EFD_NONBLOCK).map_err(GuestError::EventFd)?,
            call: EventFd::new(EFD_NONBLOCK).map_err(GuestError::EventFd)?,
            kicks: 0,
            calls: 0,
            bogus_used: 0,
        };
        let v = dq.view(mem)?;
        v.set_avail_idx(base);
        v.used_hdr[1].store(base.to_le(), Ordering::Release);
        v.set_used_event(base);
        Ok(dq)
    }

    /// Resolves the ring areas in `mem` (checked once here, not per access).
    #[inline]
    pub(crate) fn view<'m>(&self, mem: &'m GuestMem) -> Result<RingView<'m>, GuestError> {
        let q = usize::from(self.ring.size);
        Ok(RingView {
            desc: mem.overlay(self.ring.desc, 2 * q)?,
            avail: mem.overlay(self.ring.avail, 3 + q)?,
            used_hdr: mem.overlay(self.ring.used, 2)?,
            used: mem.overlay(self.ring.used + 4, 2 * q)?,
            avail_event: &mem.overlay(self.ring.avail_event(), 1)?[0],
            mask: self.ring.size.wrapping_sub(1),
        })
    }

    /// Free descriptors.
    #[inline]
    pub(crate) fn free_count(&self) -> usize {
        self.free.len()
    }

    /// Takes one free descriptor index.
    #[inline]
    pub(crate) fn alloc(&mut self) -> Option<u16> {
        let d = self.free.pop()?;
        if let Some(m) = self.meta.get_mut(usize::from(d)) {
            m.free = false;
        }
        Some(d)
    }

    /// Takes a specific free descriptor index.
    pub(crate) fn claim(&mut self, idx: u16) -> Result<(), GuestError> {
        let Some(m) = self.meta.get_mut(usize::from(idx)) else {
            return Err(GuestError::BadSlot {
                index: idx,
                why: "index is not below the queue size",
            });
        };
        if !m.free {
            return Err(GuestError::BadSlot {
                index: idx,
                why: "descriptor is in flight",
            });
        }
        m.free = false;
        self.free.retain(|&d| d != idx);
        Ok(())
    }

    /// Whether `idx` is free.
    #[inline]
    pub(crate) fn is_free(&self, idx: u16) -> bool {
        self.meta.get(usize::from(idx)).is_some_and(|m| m.free)
    }

    /// Records that descriptor `next` follows `prev` in a chain (shadow only).
    #[inline]
    pub(crate) fn link(&mut self, prev: u16, next: u16) {
        if let Some(m) = self.meta.get_mut(usize::from(prev)) {
            m.next = next;
        }
    }

    /// Records `head` as an in-flight chain of `len` descriptors (linked with [`Self::link`]).
    #[inline]
    pub(crate) fn mark_head(&mut self, head: u16, len: u16) {
        if let Some(m) = self.meta.get_mut(usize::from(head)) {
            m.chain = len;
        }
    }

    /// Puts `head` in the next avail slot (not yet visible to the device).
    #[inline]
    pub(crate) fn push_avail_in(&mut self, v: &RingView<'_>, head: u16) {
        v.set_avail_slot(self.next_avail.0, head);
        self.next_avail += 1;
    }

    /// Accounts for `n` heads the caller stored itself with [`RingView::set_avail_slot`] at
    /// [`Self::avail_idx`], `+ 1`, ... (not yet visible to the device).
    #[inline]
    pub(crate) fn advance_avail(&mut self, n: u16) {
        self.next_avail += n;
    }

    /// [`Self::push_avail_in`] resolving the ring first.
    pub(crate) fn push_avail(&mut self, mem: &GuestMem, head: u16) -> Result<(), GuestError> {
        let v = self.view(mem)?;
        self.push_avail_in(&v, head);
        Ok(())
    }

    /// Makes pushed avail entries visible (release store of avail->idx, ordered after the
    /// descriptor and avail-slot stores).
    #[inline]
    pub(crate) fn publish_in(&self, v: &RingView<'_>) {
        v.set_avail_idx(self.next_avail.0);
    }

    /// [`Self::publish_in`] resolving the ring first.
    pub(crate) fn publish(&self, mem: &GuestMem) -> Result<(), GuestError> {
        self.publish_in(&self.view(mem)?);
        Ok(())
    }

    /// The driver's avail index (next slot to fill).
    pub(crate) fn avail_idx(&self) -> u16 {
        self.next_avail.0
    }

    /// Kicks the device if it asked for it (avail_event with EVENT_IDX, else NO_NOTIFY flag).
    /// Returns whether a kick was sent.
    pub(crate) fn notify_in(&mut self, v: &RingView<'_>) -> Result<bool, GuestError> {
        fence(Ordering::SeqCst);
        let new = self.next_avail.0;
        let old = self.kicked_avail.0;
        self.kicked_avail = self.next_avail;
        if new == old {
            return Ok(false);
        }
        let want = if self.event_idx {
            need_event(v.avail_event(), new, old)
        } else {
            v.used_flags() & USED_F_NO_NOTIFY == 0
        };
        if want {
            self.kick_now()?;
        }
        Ok(want)
    }

    /// [`Self::notify_in`] resolving the ring first.
    pub(crate) fn notify(&mut self, mem: &GuestMem) -> Result<bool, GuestError> {
        let v = self.view(mem)?;
        self.notify_in(&v)
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

    /// Used entries published by the device and not yet consumed (Acquire: the entries up to
    /// the returned count may be read afterwards).
    #[inline]
    pub(crate) fn used_pending_in(&self, v: &RingView<'_>) -> u16 {
        v.used_idx().wrapping_sub(self.last_used.0)
    }

    /// [`Self::used_pending_in`] resolving only the used index (cheap enough for empty polls).
    #[inline]
    pub(crate) fn used_pending(&self, mem: &GuestMem) -> Result<u16, GuestError> {
        let idx = mem.overlay::<AtomicU16>(self.ring.used, 2)?[1].load(Ordering::Acquire);
        Ok(u16::from_le(idx).wrapping_sub(self.last_used.0))
    }

    /// The `k`-th unconsumed used element: (id, len).
    #[inline]
    pub(crate) fn peek_used_in(&self, v: &RingView<'_>, k: u16) -> (u32, u32) {
        v.used_elem(self.last_used.0.wrapping_add(k))
    }

    /// [`Self::peek_used_in`] resolving the ring first.
    pub(crate) fn peek_used(&self, mem: &GuestMem, k: u16) -> Result<(u32, u32), GuestError> {
        Ok(self.peek_used_in(&self.view(mem)?, k))
    }

    /// Consumes `n` used elements and re-arms `used_event` (unless pinned).
    #[inline]
    pub(crate) fn consume_used_in(&mut self, v: &RingView<'_>, n: u16) {
        self.last_used += n;
        if self.event_idx && self.pinned_used_event.is_none() {
            v.set_used_event(self.last_used.0);
        }
    }

    /// [`Self::consume_used_in`] resolving the ring first.
    pub(crate) fn consume_used(&mut self, mem: &GuestMem, n: u16) -> Result<(), GuestError> {
        let v = self.view(mem)?;
        self.consume_used_in(&v, n);
        Ok(())
    }

    /// The used index the device last published (what a restarted backend resumes from).
    pub(crate) fn device_used_idx(&self, mem: &GuestMem) -> Result<u16, GuestError> {
        Ok(self.view(mem)?.used_idx())
    }

    /// Index of the next used element to consume.
    pub(crate) fn last_used(&self) -> u16 {
        self.last_used.0
    }

    /// Returns the chain whose head is `id` to the free list; `None` (and a bogus count) when `id`
    /// is not an in-flight head. Returns the chain length.
    #[inline]
    pub(crate) fn complete(&mut self, id: u32) -> Option<u16> {
        let n = self.release(id);
        if n.is_none() {
            self.bogus(id);
        }
        n
    }

    /// [`Self::complete`] without counting or logging a bogus id (the caller does).
    #[inline]
    pub(crate) fn release(&mut self, id: u32) -> Option<u16> {
        let h = usize::try_from(id).unwrap_or(usize::MAX);
        let n = match self.meta.get_mut(h) {
            Some(m) if m.chain != 0 => std::mem::take(&mut m.chain),
            _ => return None,
        };
        let mut d = h;
        for _ in 0..n {
            let Some(m) = self.meta.get_mut(d) else { break };
            if !m.free {
                m.free = true;
                // `d` indexes `meta`, whose length is the queue size (<= 32768).
                self.free.push(d as u16);
            }
            d = usize::from(m.next);
        }
        Some(n)
    }

    /// Hands every descriptor to a fixed layout managed by the caller (TX pairs): the free list
    /// is emptied and every descriptor is marked taken, no chain in flight, no links. Only when
    /// nothing is in flight; returns whether it happened.
    pub(crate) fn lend_all(&mut self) -> bool {
        if self.free.len() != self.meta.len() {
            return false;
        }
        self.free.clear();
        self.meta.fill(DescMeta::default());
        true
    }

    /// Returns a descriptor taken by [`Self::lend_all`] to the free list (no-op when free).
    pub(crate) fn give_back(&mut self, d: u16) {
        if let Some(m) = self.meta.get_mut(usize::from(d)) {
            if !m.free {
                m.free = true;
                self.free.push(d);
            }
        }
    }

    /// Ends the flight of `id` when it is an in-flight head of a chain of exactly `len`
    /// descriptors, which stay taken (a fixed layout reuses them as they are). Returns whether
    /// it was; any other id (out of range, not a head, not in flight) is left alone.
    #[inline]
    pub(crate) fn take_head(&mut self, id: u32, len: u16) -> bool {
        debug_assert!(len > 0);
        match self.meta.get_mut(usize::try_from(id).unwrap_or(usize::MAX)) {
            Some(m) if m.chain == len => {
                m.chain = 0;
                true
            }
            _ => false,
        }
    }

    /// Counts and logs a used id that is not an in-flight head.
    #[cold]
    pub(crate) fn bogus(&mut self, id: u32) {
        self.bogus_used += 1;
        log::error!("device returned used id {id} which is not an in-flight head");
    }

    /// Pins `used_event` to `idx` (EVENT_IDX interrupt suppression tests); `None` returns to the
    /// automatic mode (re-armed to the next entry after each consume).
    pub(crate) fn pin_used_event(
        &mut self,
        mem: &GuestMem,
        idx: Option<u16>,
    ) -> Result<(), GuestError> {
        self.pinned_used_event = idx;
        self.view(mem)?
            .set_used_event(idx.unwrap_or(self.last_used.0));
        Ok(())
    }

    /// Sets or clears VRING_AVAIL_F_NO_INTERRUPT (interrupt suppression without EVENT_IDX).
    pub(crate) fn set_no_interrupt(&self, mem: &GuestMem, on: bool) -> Result<(), GuestError> {
        let flags = if on { AVAIL_F_NO_INTERRUPT } else { 0 };
        self.view(mem)?.set_avail_flags(flags);
        Ok(())
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
#[path = "vring_tests.rs"]
mod tests;
