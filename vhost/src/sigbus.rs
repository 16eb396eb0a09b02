//! Surviving a frontend that shrinks its memory file under the switch.
//!
//! Guest memory is the frontend's file (a memfd, a /dev/shm or hugetlbfs file) mapped shared.
//! When the frontend truncates that file after SET_MEM_TABLE, any access to the pages beyond
//! the new end raises SIGBUS, whose default action kills the whole process: every port on
//! every channel. No check before an access can prevent it (the frontend can truncate between
//! the check and the access), so the fault itself is handled, the way Wayland compositors
//! survive clients that shrink their wl_shm pools:
//!
//! - every guest mapping is entered in a fixed, lock-free table ([`register`]) before the
//!   datapath can reach it and removed ([`Registration`]'s drop) before it can be unmapped;
//! - a process-wide SIGBUS handler ([`install`]) looks the fault address up in the table. In a
//!   guest mapping, it replaces the whole mapping with anonymous zero pages (`MAP_FIXED` over the
//!   same range, so the later `munmap` by vm-memory unmaps the replacement), writes the owning
//!   connection's eventfd (its worker then ends the connection and counts it) and returns: the
//!   faulting access is retried and reads zeros, which the datapath's normal checks treat as an
//!   empty or malformed ring. Anywhere else, the default action is restored and the fault
//!   repeats: a genuine bug still crashes.
//!
//! The handler uses only atomics, `mmap`, `write` and `sigaction`: all async-signal-safe
//! system calls. See docs/robustness-memory.md for why the ordering holds.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Once};

use log::warn;
use vmm_sys_util::eventfd::EventFd;

/// Guest mappings registered at once, process-wide: the kernel's default `vm.max_map_count`
/// (65530) bounds the process's mappings anyway.
const SLOTS: usize = 1 << 16;

/// One table entry. `seq` is a sequence lock: odd while the entry is being written, and
/// changed by every write, so the handler can tell a consistent read from a torn one without
/// waiting. `claimed` says who owns the entry (registration and removal only).
struct Slot {
    seq: AtomicU64,
    claimed: AtomicBool,
    start: AtomicUsize,
    end: AtomicUsize,
    efd: AtomicI32,
}

#[allow(clippy::declare_interior_mutable_const)] // only used to initialise the table
const EMPTY: Slot = Slot {
    seq: AtomicU64::new(0),
    claimed: AtomicBool::new(false),
    start: AtomicUsize::new(0),
    end: AtomicUsize::new(0),
    // All zero: the table lives in .bss. A free entry's range is empty, so its fd is never used.
    efd: AtomicI32::new(0),
};

static TABLE: [Slot; SLOTS] = [EMPTY; SLOTS];
/// One past the highest slot ever used: the handler scans no further.
static HIGH: AtomicUsize = AtomicUsize::new(0);
static PAGE: AtomicUsize = AtomicUsize::new(4096);
static INSTALL: Once = Once::new();

/// Installs the SIGBUS handler (once per process; later calls do nothing). Call before the
/// first guest mapping is registered.
pub(crate) fn install() {
    INSTALL.call_once(|| {
        // SAFETY: sysconf has no side effects.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if let Ok(p) = usize::try_from(page) {
            if p.is_power_of_two() {
                PAGE.store(p, Ordering::Relaxed);
            }
        }
        if let Err(e) = vmm_sys_util::signal::register_signal_handler(libc::SIGBUS, on_sigbus) {
            warn!(
                "cannot install the SIGBUS handler ({e}): a frontend that truncates its memory \
                 file can crash the switch"
            );
        }
    });
}

/// A guest mapping entered in the table; dropping it removes the entry. Holds the owning
/// connection's eventfd open while the entry names it.
pub(crate) struct Registration {
    slot: usize,
    start: usize,
    len: usize,
    _notify: Arc<EventFd>,
}

impl Registration {
    /// The mapping's host address and length.
    pub(crate) fn range(&self) -> (usize, usize) {
        (self.start, self.len)
    }
}

/// The table is full.
#[derive(Debug, thiserror::Error)]
#[error("more than {SLOTS} guest memory mappings in this process")]
pub(crate) struct TableFull;

/// Enters the mapping `[start, start + len)` in the table: a fault in it is then reported on
/// `notify` (a write of 1) instead of killing the process. The mapping must stay mapped until
/// the returned registration is dropped.
pub(crate) fn register(
    start: usize,
    len: usize,
    notify: &Arc<EventFd>,
) -> Result<Registration, TableFull> {
    let end = start.checked_add(len).ok_or(TableFull)?;
    for (i, s) in TABLE.iter().enumerate() {
        if s.claimed
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        let seq = s.seq.load(Ordering::Relaxed);
        s.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        s.start.store(start, Ordering::Relaxed);
        s.end.store(end, Ordering::Relaxed);
        s.efd.store(notify.as_raw_fd(), Ordering::Relaxed);
        s.seq.store(seq.wrapping_add(2), Ordering::Release);
        HIGH.fetch_max(i + 1, Ordering::AcqRel);
        return Ok(Registration {
            slot: i,
            start,
            len,
            _notify: notify.clone(),
        });
    }
    Err(TableFull)
}

impl Drop for Registration {
    fn drop(&mut self) {
        let s = &TABLE[self.slot];
        let seq = s.seq.load(Ordering::Relaxed);
        s.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        s.start.store(0, Ordering::Relaxed);
        s.end.store(0, Ordering::Relaxed);
        s.efd.store(0, Ordering::Relaxed);
        s.seq.store(seq.wrapping_add(2), Ordering::Release);
        s.claimed.store(false, Ordering::Release);
    }
}

/// The entry whose range holds `addr`: (start, end, eventfd). Entries being written or
/// changed during the read are skipped: the mapping that faulted is registered and stays so
/// while the faulting thread runs (see the module comment), so it is never one of them.
fn lookup(addr: usize) -> Option<(usize, usize, RawFd)> {
    let high = HIGH.load(Ordering::Acquire).min(SLOTS);
    for s in &TABLE[..high] {
        let seq = s.seq.load(Ordering::Acquire);
        if seq % 2 == 1 {
            continue;
        }
        let start = s.start.load(Ordering::Relaxed);
        let end = s.end.load(Ordering::Relaxed);
        let efd = s.efd.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if s.seq.load(Ordering::Relaxed) != seq {
            continue;
        }
        if start <= addr && addr < end {
            return Some((start, end, efd));
        }
    }
    None
}

extern "C" fn on_sigbus(_num: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    // si_code <= 0: sent by kill() or sigqueue(), not a fault; si_addr means nothing.
    let found = if code > 0 { lookup(addr) } else { None };
    let Some((start, end, efd)) = found else {
        return crash_as_default(code);
    };
    let page = PAGE.load(Ordering::Relaxed);
    let len = (end - start).div_ceil(page) * page;
    // SAFETY: `[start, start + len)` is a whole guest mapping (registered, so still mapped, and
    // page-rounded as mmap rounds it); replacing it with private zero pages changes only what
    // its readers see, never which addresses are mapped. vm-memory unmaps the range later.
    let r = unsafe {
        libc::mmap(
            start as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if r == libc::MAP_FAILED {
        return crash_as_default(code);
    }
    let one = 1u64.to_ne_bytes();
    // SAFETY: `efd` is the owning connection's eventfd, kept open by the registration; `one`
    // is 8 readable bytes. A failed write (counter saturated) loses nothing: a fault is
    // already pending on that eventfd.
    unsafe { libc::write(efd, one.as_ptr().cast(), one.len()) };
}

/// Not a guest mapping: restore the default action so the fault, repeated when the handler
/// returns, ends the process as it would have without this handler (a signal sent with
/// kill() is raised again, as it is not repeated).
fn crash_as_default(code: libc::c_int) {
    // SAFETY: signal() and raise() are async-signal-safe; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGBUS, libc::SIG_DFL);
        if code <= 0 {
            libc::raise(libc::SIGBUS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    #[test]
    fn entries_are_found_until_dropped() {
        let efd = Arc::new(EventFd::new(EFD_NONBLOCK).expect("eventfd"));
        let a = register(0x10_0000, 0x1000, &efd).expect("slot");
        let b = register(0x20_0000, 0x2000, &efd).expect("slot");
        assert_eq!(
            lookup(0x10_0fff),
            Some((0x10_0000, 0x10_1000, efd.as_raw_fd()))
        );
        assert!(lookup(0x10_1000).is_none());
        assert!(lookup(0x20_1fff).is_some());
        drop(a);
        assert!(lookup(0x10_0000).is_none());
        assert_eq!(b.range(), (0x20_0000, 0x2000));
        drop(b);
        assert!(lookup(0x20_0000).is_none());
    }
}
