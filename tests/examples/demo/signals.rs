//! Ctrl-C (SIGINT) and SIGTERM: kill what the demo started and delete its namespaces, then exit.
//! The handler cannot run destructors or spawn `ip`, so it works from what was registered here:
//! process ids, and the paths `ip netns add` mounted (`/run/netns/NAME`), which it unmounts and
//! unlinks as `ip netns del` does.

use std::ffi::CString;
use std::ptr;
use std::sync::atomic::{AtomicI32, AtomicPtr, Ordering};

static PIDS: [AtomicI32; 16] = [const { AtomicI32::new(0) }; 16];
static NETNS: [AtomicPtr<libc::c_char>; 4] = [const { AtomicPtr::new(ptr::null_mut()) }; 4];

/// Registers a child to kill on a signal.
pub fn remember_pid(pid: Option<u32>) {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    for slot in &PIDS {
        if slot
            .compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return;
        }
    }
}

/// Forgets a child that is gone.
pub fn forget_pid(pid: Option<u32>) {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    for slot in &PIDS {
        let _ = slot.compare_exchange(pid, 0, Ordering::SeqCst, Ordering::SeqCst);
    }
}

fn netns_path(name: &str) -> Option<CString> {
    CString::new(format!("/run/netns/{name}")).ok()
}

/// Registers a named network namespace to delete on a signal.
pub fn remember_netns(name: &str) {
    let Some(path) = netns_path(name) else {
        return;
    };
    // Leaked on purpose: the handler may read it at any time; a few bytes per namespace.
    let raw = path.into_raw();
    for slot in &NETNS {
        if slot
            .compare_exchange(ptr::null_mut(), raw, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return;
        }
    }
}

/// Forgets a namespace that was deleted.
pub fn forget_netns(name: &str) {
    let Some(path) = netns_path(name) else {
        return;
    };
    for slot in &NETNS {
        let p = slot.load(Ordering::SeqCst);
        // SAFETY: non-null slots hold strings leaked by `remember_netns`, never freed.
        if !p.is_null() && unsafe { std::ffi::CStr::from_ptr(p) } == path.as_c_str() {
            slot.store(ptr::null_mut(), Ordering::SeqCst);
        }
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    for slot in &PIDS {
        let pid = slot.load(Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: kill(2) is async-signal-safe; these are PIDs of our own children.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
    for slot in &NETNS {
        let p = slot.load(Ordering::SeqCst);
        if !p.is_null() {
            // SAFETY: umount2(2) and unlink(2) are plain system calls on a NUL-terminated path
            // that stays valid (leaked); the namespace goes away once the killed switch is gone.
            unsafe {
                libc::umount2(p, libc::MNT_DETACH);
                libc::unlink(p);
            }
        }
    }
    let msg = b"\ndemo: interrupted: guests and switches killed, namespaces deleted\n";
    // SAFETY: write(2) and _exit(2) are async-signal-safe; `msg` is a valid buffer.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(128 + sig)
    }
}

/// SIGINT/SIGTERM kill the guests and the switches this demo started, delete its namespaces,
/// then exit.
pub fn install() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installing a handler that only calls async-signal-safe functions.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}
