//! Event mode (the default): a few datapath threads serve all ports. A thread passes over its
//! ports while any has work; only when its passes have found nothing for [`IDLE_POLL`] does it
//! ask the guests to kick again and sleep until one does (NAPI's scheme, with a short busy-poll
//! before sleeping).
//!
//! A busy switch never sleeps and guests do not kick while it polls; a kick (which the port's
//! connection worker receives) only rings the doorbell of the datapath thread that serves the
//! port.
//!
//! Why poll a little before sleeping: a driver that transmits in bursts (DPDK's PMD sends 32
//! frames every microsecond or so while it runs) empties no faster than the switch drains it,
//! so a thread that armed kicks the moment a pass found nothing slept after every burst, and
//! every burst cost a kick: the guest's syscall, a wake-up of the connection's worker, a
//! wake-up of this thread (measured with a DPDK txonly generator: 20,000-27,000 kicks per
//! second, every one on the CPU the generator shares with the sink). Polling on for
//! [`IDLE_POLL`] catches the next burst while kicks stay off; the thread sleeps only when the
//! guest really stopped (a descheduled generator, an idle VM), so it costs at most that much
//! CPU per sleep.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::warn;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vswitch_channels::PortId;

use crate::core::Core;
use crate::datapath::{Share, Worker};

/// How long a thread keeps passing over its ports after the last one that found work, before
/// it arms the guests' kicks and sleeps.
pub const IDLE_POLL: Duration = Duration::from_micros(50);
/// Longest sleep without a kick (a safety net: the thread polls its ports at least this often).
const MAX_SLEEP_MS: i32 = 100;
/// The nap of a thread that has no doorbell (none could be made).
const NAP_MS: i32 = 1;

/// The wake-ups of the event-mode datapath threads: thread `i` serves the ports whose id is `i`
/// modulo their number. A thread without an eventfd (none could be made) naps instead.
#[derive(Default)]
pub struct Doorbells(Vec<Option<Arc<EventFd>>>);

impl Doorbells {
    /// `n` doorbells (none in busy-poll mode).
    pub fn new(n: usize) -> std::io::Result<Self> {
        (0..n)
            .map(|_| EventFd::new(EFD_NONBLOCK).map(|e| Some(Arc::new(e))))
            .collect::<Result<Vec<_>, _>>()
            .map(Doorbells)
    }

    /// `n` threads that nap instead of waiting for a kick.
    pub fn without_fds(n: usize) -> Self {
        Doorbells((0..n).map(|_| None).collect())
    }

    /// The doorbell of the thread serving `port`, if it has one.
    pub fn of(&self, port: PortId) -> Option<Arc<EventFd>> {
        self.0.get(port.index() % self.0.len().max(1))?.clone()
    }

    fn len(&self) -> usize {
        self.0.len()
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
            .spawn(move || serve(&core, Share { index: i, of: n }, &stop));
        match t {
            Ok(t) => threads.push(t),
            Err(e) => warn!("cannot start datapath thread {i}: {e}"),
        }
    }
    threads
}

fn serve(core: &Core, share: Share, stop: &AtomicBool) {
    let doorbell = core.doorbells.0.get(share.index).cloned().flatten();
    let mut worker = Worker::new(share);
    // Reused across sleeps: the uplinks' descriptors and the poll set.
    let mut wake = Vec::new();
    let mut pfds = Vec::new();
    // When a pass last found work (or the thread last woke).
    let mut busy_at = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if worker.pass(core) {
            busy_at = Instant::now();
            continue;
        }
        if busy_at.elapsed() < IDLE_POLL {
            std::hint::spin_loop();
            continue;
        }
        // Nothing for a while: ask the guests to kick, unless frames slipped in.
        if worker.arm(core) {
            busy_at = Instant::now();
            continue;
        }
        worker.wake_fds(core, &mut wake);
        sleep_until_rung(doorbell.as_deref(), &wake, &mut pfds);
        busy_at = Instant::now();
    }
}

/// Waits for the doorbell or a frame on one of the uplinks' descriptors `wake` (or the
/// safety-net timeout), then resets the doorbell.
fn sleep_until_rung(doorbell: Option<&EventFd>, wake: &[RawFd], pfds: &mut Vec<libc::pollfd>) {
    pfds.clear();
    let timeout = match doorbell {
        Some(d) => {
            pfds.push(pollin(d.as_raw_fd()));
            MAX_SLEEP_MS
        }
        None => NAP_MS,
    };
    pfds.extend(wake.iter().map(|&fd| pollin(fd)));
    // SAFETY: `pfds` holds `pfds.len()` valid pollfds for the duration of the call (an empty
    // set makes it a plain sleep).
    unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout) };
    if let Some(d) = doorbell {
        // Non-blocking: EAGAIN when the timeout, not a kick, ended the wait.
        let _ = d.read();
    }
}

fn pollin(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}
