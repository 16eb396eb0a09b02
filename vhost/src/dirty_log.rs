//! Dirty-page logging for live migration (VHOST_F_LOG_ALL, protocol feature LOG_SHMFD).
//!
//! While a guest migrates, QEMU copies its memory in rounds and must learn which pages changed
//! since it copied them. Pages the guest's CPUs write QEMU tracks itself; pages this port
//! writes (RX buffers, used rings) only the port knows of. QEMU shares a bitmap (the *log*) in
//! a memory file (SET_LOG_BASE): bit `p % 8` of byte `p / 8` stands for the 4 KiB page `p` of
//! guest *physical* memory, and the backend sets it with an atomic OR after writing the page,
//! as the kernel's vhost does (`log_write`); QEMU collects and clears the bits concurrently.
//!
//! Logging is on while the acked features carry VHOST_F_LOG_ALL (QEMU sends SET_FEATURES with
//! it when migration starts and without it when migration ends or is cancelled) and a log is
//! mapped. The datapath does not write guest memory through vm-memory (whose bitmaps
//! vhost-user-backend would install), but through host addresses it resolved itself, so the
//! marking is done here, once per batch: after a batch of used entries is recorded and before
//! it is published, the chains the entries name are walked again and the bytes written (the
//! entry's length) marked; after the used index is published, the used ring is marked. With
//! logging off that costs one relaxed load and one branch per batch.
//!
//! The mapping is bounds-checked: a log smaller than guest memory logs only the pages it has
//! bits for (QEMU sizes the log for all of guest memory; a smaller one is the frontend's
//! problem, never a write outside the mapping).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use vmm_sys_util::eventfd::EventFd;

use crate::ring::{PackedRing, SplitRing};

/// Guest memory covered by one bit of the log.
pub const LOG_PAGE: u64 = 4096;

/// Largest log mapped: enough for 2 TiB of guest physical address space.
pub const MAX_LOG_BYTES: u64 = 64 << 20;

/// Longest stretch of guest memory one used entry can have written (a frame of at most 64 KiB
/// plus its header); a longer length read back from the used ring (the guest may rewrite it)
/// is cut to this, so a hostile guest cannot make a batch mark gigabytes.
const MAX_ENTRY_BYTES: u64 = 1 << 17;

/// Why a log was refused.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Zero or more than [`MAX_LOG_BYTES`].
    #[error("log of {0} bytes (allowed: 1 to {MAX_LOG_BYTES}); the frontend must send a log sized for guest memory")]
    BadSize(u64),
    /// The offset is not page-aligned or does not fit an `off_t`.
    #[error("log offset {0:#x} is not page-aligned")]
    BadOffset(u64),
    /// mmap failed.
    #[error("cannot map the log: {0}")]
    Map(io::Error),
}

/// A mapped log: `len` bytes at host address `base`, shared with the frontend.
pub struct LogMap {
    base: usize,
    len: usize,
}

impl LogMap {
    /// Maps `size` bytes of `fd` at `offset` (SET_LOG_BASE's memory file and its area).
    pub fn map(fd: BorrowedFd<'_>, offset: u64, size: u64) -> Result<Self, LogError> {
        if size == 0 || size > MAX_LOG_BYTES {
            return Err(LogError::BadSize(size));
        }
        let off = libc::off_t::try_from(offset).map_err(|_| LogError::BadOffset(offset))?;
        if !offset.is_multiple_of(LOG_PAGE) {
            return Err(LogError::BadOffset(offset));
        }
        let len = size as usize; // <= MAX_LOG_BYTES
                                 // SAFETY: a new shared mapping of a file the frontend passed us; nothing else is at
                                 // the address the kernel chooses. A file shorter than the mapping faults on access,
                                 // which the sigbus module does not cover, so the file's size is checked below first.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                off,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(LogError::Map(io::Error::last_os_error()));
        }
        let map = LogMap {
            base: p as usize,
            len,
        };
        // A memfd can only be shrunk by the frontend if it did not seal it; QEMU's log is its
        // own memfd that it does not shrink. Refuse a file too short for the mapping now.
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstat writes a `stat` into the buffer we own.
        let r = unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) };
        if r != 0 {
            return Err(LogError::Map(io::Error::last_os_error()));
        }
        // SAFETY: fstat succeeded, so the struct is initialised.
        let file_len = unsafe { st.assume_init() }.st_size as u64;
        if file_len < offset.saturating_add(size) {
            return Err(LogError::BadSize(size));
        }
        Ok(map)
    }

    /// Length of the log in bytes (it covers `len * 8` pages of guest physical memory).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a log has at least one byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Marks the pages of guest physical `[gpa, gpa + len)` dirty (pages beyond the log are
    /// not logged).
    #[inline]
    pub fn mark(&self, gpa: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = gpa / LOG_PAGE;
        let last = gpa.saturating_add(len - 1) / LOG_PAGE;
        let mut page = first;
        while page <= last {
            let byte = page / 8;
            if byte >= self.len as u64 {
                return;
            }
            let bit = page % 8;
            // Whole bytes at once where the range covers them.
            let bits = if bit == 0 && last - page >= 7 {
                0xffu8
            } else {
                1u8 << bit
            };
            // SAFETY: byte < len: inside the mapping, which lives as long as `self`; the
            // frontend writes it concurrently, hence the atomic (u8 needs no alignment).
            let cell = unsafe { AtomicU8::from_ptr((self.base + byte as usize) as *mut u8) };
            cell.fetch_or(bits, Ordering::Relaxed);
            page += if bits == 0xff { 8 } else { 1 };
        }
    }

    /// True if page `page` is marked (tests).
    pub fn is_marked(&self, page: u64) -> bool {
        let byte = page / 8;
        if byte >= self.len as u64 {
            return false;
        }
        // SAFETY: inside the mapping (checked above).
        let cell = unsafe { AtomicU8::from_ptr((self.base + byte as usize) as *mut u8) };
        cell.load(Ordering::Relaxed) & (1 << (page % 8)) != 0
    }
}

impl Drop for LogMap {
    fn drop(&mut self) {
        // SAFETY: `base..base + len` is the mapping made in `map`, unused once `self` goes.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
    }
}

/// The log state of one frontend connection.
#[derive(Default)]
pub(crate) struct DirtyLog {
    /// VHOST_F_LOG_ALL is in the acked features.
    enabled: AtomicBool,
    map: ArcSwapOption<LogMap>,
    /// SET_LOG_FD: written after a batch marked pages.
    changed: ArcSwapOption<EventFd>,
}

impl DirtyLog {
    /// Turns logging on or off (SET_FEATURES with or without LOG_ALL).
    pub(crate) fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Release);
    }

    /// Installs the log SET_LOG_BASE mapped (replacing any previous one).
    pub(crate) fn set_map(&self, map: LogMap) {
        self.map.store(Some(Arc::new(map)));
    }

    /// Installs the eventfd of SET_LOG_FD.
    pub(crate) fn set_changed_fd(&self, fd: EventFd) {
        self.changed.store(Some(Arc::new(fd)));
    }

    /// The log to mark for this batch, if logging is on: one load and a branch when off.
    #[inline]
    pub(crate) fn active(&self) -> Option<Arc<LogMap>> {
        if !self.enabled.load(Ordering::Relaxed) {
            return None;
        }
        self.active_slow()
    }

    #[cold]
    fn active_slow(&self) -> Option<Arc<LogMap>> {
        self.map.load_full()
    }

    /// After a batch marked pages: tells the frontend (if it gave a SET_LOG_FD eventfd).
    pub(crate) fn signal(&self) {
        if let Some(fd) = self.changed.load().as_ref() {
            let _ = fd.write(1);
        }
    }
}

/// Before the used index is published: marks the buffers of the entries recorded since the
/// last publish (RX: each entry's length, from the start of its chain).
pub(crate) fn mark_buffers(log: &LogMap, ring: &SplitRing<'_>) {
    for (head, len) in ring.unpublished_used() {
        let mut left = u64::from(len).min(MAX_ENTRY_BYTES);
        // The common layout (one plain writable buffer per chain) without the chain walk.
        if let Some(d) = ring
            .desc(head)
            .filter(|d| d.is_plain_writable() && !d.has_next())
        {
            log.mark(d.addr, u64::from(d.len).min(left));
            continue;
        }
        for desc in ring.chain(head) {
            if left == 0 {
                break;
            }
            let Ok(desc) = desc else { break };
            if !desc.write {
                continue;
            }
            let n = u64::from(desc.len).min(left);
            log.mark(desc.addr, n);
            left -= n;
        }
    }
}

/// After the used index is published (or the ring's flags or event index written): marks the
/// used ring and tells the frontend.
pub(crate) fn mark_used_ring(log: &LogMap, ring: &impl UsedAreas, dlog: &DirtyLog) {
    for (gpa, len) in ring.used_areas() {
        if len > 0 {
            log.mark(gpa, len);
        }
    }
    dlog.signal();
}

/// The guest memory a ring kind's device side writes besides the buffers: (guest physical
/// address, length) pairs, unused ones of length 0.
pub(crate) trait UsedAreas {
    fn used_areas(&self) -> [(u64, u64); 2];
}

impl UsedAreas for SplitRing<'_> {
    /// The used ring (flags, index, entries, avail event).
    fn used_areas(&self) -> [(u64, u64); 2] {
        [self.used_area(), (0, 0)]
    }
}

impl UsedAreas for PackedRing<'_> {
    /// The descriptor ring (used descriptors are written over the available ones) and the
    /// device event suppression area.
    fn used_areas(&self) -> [(u64, u64); 2] {
        self.device_written_areas()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};

    fn memfd(len: u64) -> OwnedFd {
        // SAFETY: memfd_create with a valid C string; the fd is new and ours.
        let fd = unsafe { libc::memfd_create(c"log".as_ptr(), 0) };
        assert!(fd >= 0);
        // SAFETY: fd is a new descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: ftruncate on our fd.
        assert_eq!(unsafe { libc::ftruncate(fd.as_raw_fd(), len as i64) }, 0);
        fd
    }

    fn marked(log: &LogMap) -> Vec<u64> {
        (0..log.len() as u64 * 8)
            .filter(|&p| log.is_marked(p))
            .collect()
    }

    #[test]
    fn marks_exactly_the_pages_written() {
        let fd = memfd(4096);
        let log = LogMap::map(fd.as_fd(), 0, 64).expect("map");
        log.mark(0, 1);
        assert_eq!(marked(&log), vec![0]);
        log.mark(4095, 2); // straddles pages 0 and 1
        assert_eq!(marked(&log), vec![0, 1]);
        log.mark(10 * 4096 + 100, 0); // nothing written, nothing marked
        assert_eq!(marked(&log), vec![0, 1]);
        log.mark(5 * 4096, 4096); // exactly page 5
        assert_eq!(marked(&log), vec![0, 1, 5]);
        log.mark(16 * 4096 - 1, 20 * 4096 + 2); // pages 15..=36, whole bytes inside
        let want: Vec<u64> = [0, 1, 5].into_iter().chain(15..=36).collect();
        assert_eq!(marked(&log), want);
    }

    #[test]
    fn never_writes_beyond_the_log() {
        let fd = memfd(8192);
        // Two bytes of log: 16 pages. The bytes after it in the file must stay zero.
        let log = LogMap::map(fd.as_fd(), 0, 2).expect("map");
        log.mark(14 * 4096, 100 * 4096);
        log.mark(u64::MAX - 10, 100);
        log.mark(1 << 40, 4096);
        assert_eq!(marked(&log), vec![14, 15]);
        let whole = LogMap::map(fd.as_fd(), 0, 8192).expect("map");
        assert!(marked(&whole).iter().all(|&p| p < 16));
    }

    #[test]
    fn refuses_bad_logs() {
        let fd = memfd(4096);
        assert!(matches!(
            LogMap::map(fd.as_fd(), 0, 0),
            Err(LogError::BadSize(0))
        ));
        assert!(LogMap::map(fd.as_fd(), 0, MAX_LOG_BYTES + 1).is_err());
        assert!(matches!(
            LogMap::map(fd.as_fd(), 100, 8),
            Err(LogError::BadOffset(100))
        ));
        // Larger than the file: refused rather than faulting later.
        assert!(matches!(
            LogMap::map(fd.as_fd(), 0, 8192),
            Err(LogError::BadSize(8192))
        ));
        assert!(LogMap::map(fd.as_fd(), 4096, 1).is_err());
    }

    #[test]
    fn off_means_no_log() {
        let fd = memfd(4096);
        let d = DirtyLog::default();
        d.set_map(LogMap::map(fd.as_fd(), 0, 16).expect("map"));
        assert!(d.active().is_none());
        d.set_enabled(true);
        assert!(d.active().is_some());
        d.set_enabled(false);
        assert!(d.active().is_none());
    }
}
