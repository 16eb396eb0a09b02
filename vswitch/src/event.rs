//! Event mode (the default): a few datapath threads serve the TX rings of all ports. A thread
//! polls its ports while any has work; only when a whole pass finds nothing does it ask the
//! guests to kick again and sleep until one does (NAPI's scheme).
//!
//! One thread per port (vhost-user-backend's worker per connection draining its own ring)
//! puts a context switch on every batch once many guests are busy. Here a busy switch never
//! sleeps and guests do not kick while it polls; a kick (which the port's worker receives)
//! only rings the doorbell of the datapath thread that serves the port.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use log::warn;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vswitch_channels::PortId;

use crate::switch::Core;

/// Longest sleep without a kick (a safety net: the thread polls its ports at least this often).
const MAX_SLEEP_MS: i32 = 100;

/// The wake-up eventfds of the event-mode datapath threads: thread `i` serves the ports whose
/// id is `i` modulo their number.
#[derive(Default)]
pub struct Doorbells(Vec<EventFd>);

impl Doorbells {
    /// `n` doorbells (none in busy-poll mode).
    pub fn new(n: usize) -> std::io::Result<Self> {
        (0..n)
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()
            .map(Doorbells)
    }

    /// Wakes the thread serving `port`, if any.
    pub fn ring(&self, port: PortId) {
        if let Some(fd) = self.0.get(port.index() % self.0.len().max(1)) {
            let _ = fd.write(1);
        }
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there is at least one datapath thread to wake.
    pub fn is_some(&self) -> bool {
        !self.0.is_empty()
    }
}

/// Starts one event-mode datapath thread per doorbell of `core`. They inherit the caller's
/// CPU affinity.
pub(crate) fn start_event_threads(core: &Arc<Core>, stop: &Arc<AtomicBool>) -> Vec<JoinHandle<()>> {
    let n = core.doorbells.len();
    let mut threads = Vec::new();
    for i in 0..n {
        let (core, stop) = (core.clone(), stop.clone());
        let t = thread::Builder::new()
            .name(format!("datapath-{i}"))
            .spawn(move || serve(&core, i, n, &stop));
        match t {
            Ok(t) => threads.push(t),
            Err(e) => warn!("cannot start datapath thread {i}: {e}"),
        }
    }
    threads
}

fn serve(core: &Core, i: usize, n: usize, stop: &AtomicBool) {
    let mine = |id: PortId| id.index() % n == i;
    let Some(doorbell) = core.doorbells.0.get(i) else {
        return;
    };
    // Ports whose guest was asked to kick and has not transmitted since: they need not be
    // asked again before the next sleep (a pass over many idle ports stays cheap). Recorded as
    // (port entry, connection number): a replaced port or a new connection must be armed anew.
    let mut armed: Vec<Option<(usize, u64)>> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let ports = core.ports.load();
        let mut busy = false;
        for (id, e) in ports.iter() {
            if mine(id) && e.handle.poll_tx() {
                busy = true;
                if let Some(a) = armed.get_mut(id.index()) {
                    *a = None;
                }
            }
        }
        if busy {
            continue;
        }
        // A whole pass found nothing: ask the guests to kick, unless frames slipped in.
        let mut pending = false;
        for (id, e) in ports.iter() {
            if !mine(id) {
                continue;
            }
            let k = id.index();
            if armed.len() <= k {
                // Grows only when ports are added, never per packet.
                armed.resize(k + 1, None);
            }
            let this = (
                Arc::as_ptr(e) as usize,
                e.handle.stats_ref().connections.load(Ordering::Relaxed),
            );
            if armed[k] != Some(this) {
                armed[k] = Some(this);
                pending |= e.handle.arm_tx();
            }
        }
        if pending {
            continue;
        }
        sleep_until_rung(doorbell);
    }
}

/// Waits for the doorbell (or the safety-net timeout), then resets it.
fn sleep_until_rung(doorbell: &EventFd) {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: doorbell.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is a valid pollfd for the duration of the call and nfds is 1.
    unsafe { libc::poll(&mut pfd, 1, MAX_SLEEP_MS) };
    // Non-blocking: EAGAIN when the timeout, not a kick, ended the wait.
    let _ = doorbell.read();
}
