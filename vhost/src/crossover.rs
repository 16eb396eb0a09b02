//! A forwarder without switching: one thread drains each port's TX ring and delivers every
//! frame into one fixed peer port (or back into the same port). The `loopback` example, the
//! port crate's tests and the fuzz harness serve their ports with it; the switch has its own
//! datapath threads, which follow the same steps (poll, deliver, arm, sleep on the doorbell).

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::drain::TxCursor;
use crate::frame::FrameBatch;
use crate::port::PortHandle;
use crate::tx::TxScratch;

/// Longest sleep without a kick: the thread looks at its ports at least this often.
const MAX_SLEEP_MS: i32 = 50;

/// The running forwarder. Dropping it stops its thread.
pub struct Crossover {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Crossover {
    /// The doorbell to give every served port ([`crate::PortConfig::tx_doorbell`]) before
    /// the ports start.
    pub fn doorbell() -> io::Result<Arc<EventFd>> {
        EventFd::new(EFD_NONBLOCK).map(Arc::new)
    }

    /// Serves `links`: every frame port `from` transmits goes into port `to`.
    pub fn start(links: Vec<(PortHandle, PortHandle)>, doorbell: Arc<EventFd>) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = thread::Builder::new()
            .name("crossover".into())
            .spawn(move || serve(&links, &doorbell, &s))?;
        Ok(Crossover {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Crossover {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Delivers a batch into `to`'s guest (dropped and counted there if it has no ring running).
/// A frame whose offloads `to` did not negotiate is dropped ([`crate::RxDrop::Offload`]): the
/// crossover does not finish offloads in software (the switch does, docs/offloads.md).
pub fn deliver_all(to: &PortHandle, batch: &FrameBatch<'_>) {
    let Some(ring) = to.rx().ring() else {
        return;
    };
    let done = ring.with_writer(|w| {
        for f in batch.iter() {
            let _ = w.deliver(f);
        }
    });
    if done.is_none() {
        ring.count_not_running(batch.len() as u64);
    }
}

fn serve(links: &[(PortHandle, PortHandle)], doorbell: &EventFd, stop: &AtomicBool) {
    let mut scratch = TxScratch::default();
    let mut cursors: Vec<TxCursor> = links.iter().map(|_| TxCursor::default()).collect();
    while !stop.load(Ordering::Acquire) {
        let mut active = false;
        for ((from, to), cursor) in links.iter().zip(cursors.iter_mut()) {
            active |= from
                .poll_tx(cursor, &mut scratch, |b| deliver_all(to, b))
                .active;
        }
        if active {
            continue;
        }
        let mut pending = false;
        for ((from, _), cursor) in links.iter().zip(cursors.iter_mut()) {
            pending |= from.arm_tx(cursor);
        }
        if pending {
            continue;
        }
        let mut pfd = libc::pollfd {
            fd: doorbell.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is a valid pollfd for the duration of the call and nfds is 1.
        unsafe { libc::poll(&mut pfd, 1, MAX_SLEEP_MS) };
        let _ = doorbell.read();
    }
}
