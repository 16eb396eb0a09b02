//! The `VhostUserBackend` of one frontend connection.
//!
//! A fresh backend (and daemon, rings and worker thread) serves each connection: the
//! vhost-user-backend handler keeps its ownership and ring state for the life of the daemon, so
//! starting over per connection is what makes a rebooted or reconnected frontend start clean.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use log::{debug, info, warn};
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::VhostUserBackend;
use vm_memory::GuestAddressSpace;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::config_space::{config_space, read_window};
use crate::dirty_log::DirtyLog;
use crate::features::{offered_features, offered_protocol_features, F_LOG_ALL};
use crate::mem_view::MemView;
use crate::memory::{GuestMemoryAtomic, Vring};
use crate::park::RingResets;
use crate::port::{PortShared, TxPoller};
use crate::queues::pair_of;
use crate::rx::RxRing;
use crate::stats::PortStats;

/// Device event id of the "publish your rings" event, beyond the queue and exit events.
pub(crate) fn capture_event_id(num_queues: usize) -> u16 {
    (num_queues + 1) as u16
}

/// Device event id of the "guest memory faulted" event (see [`crate::sigbus`]).
pub(crate) fn fault_event_id(num_queues: usize) -> u16 {
    (num_queues + 2) as u16
}

pub(crate) struct Inner {
    pub(crate) port: Arc<PortShared>,
    /// The guest memory the datapath reads (never the daemon's atomic: see `mem_view`).
    pub(crate) view: Arc<MemView>,
    /// Written by the SIGBUS handler when this connection's guest memory faults.
    fault: Arc<EventFd>,
    /// The connection was ended for a memory fault (counted once).
    faulted: AtomicBool,
    pub(crate) acked: Arc<AtomicU64>,
    /// Dirty-page logging for live migration (see `dirty_log`).
    pub(crate) log: Arc<DirtyLog>,
    published: AtomicBool,
    /// True once `publish_rings` has stored the rings (the port thread waits for it: see
    /// [`NetBackend::wait_rings_published`]).
    rings_ready: Mutex<bool>,
    rings_ready_cv: Condvar,
    /// The guest kicked TX queue k (bit k: pair k) since the last pass over it.
    pub(crate) kicked: AtomicU32,
    /// TX queue k is parked as broken (bit k; see `park.rs`); for `PortHandle::is_tx_broken`.
    pub(crate) tx_broken: AtomicU32,
    /// The frontend's ring resets on this connection (unpark a broken ring).
    pub(crate) ring_resets: RingResets,
    /// This connection's number on its port (see `TxCursor`).
    conn: u64,
    capture: EventFd,
    exit_fds: Mutex<Vec<RawFd>>,
}

/// The virtio-net device of one connection.
#[derive(Clone)]
pub struct NetBackend(Arc<Inner>);

impl NetBackend {
    pub(crate) fn new(port: Arc<PortShared>, conn: u64) -> io::Result<Self> {
        let capture = EventFd::new(EFD_NONBLOCK)?;
        let fault = Arc::new(EventFd::new(EFD_NONBLOCK)?);
        Ok(NetBackend(Arc::new(Inner {
            port,
            view: Arc::new(MemView::new(fault.clone())),
            fault,
            faulted: AtomicBool::new(false),
            acked: Arc::new(AtomicU64::new(0)),
            log: Arc::new(DirtyLog::default()),
            published: AtomicBool::new(false),
            rings_ready: Mutex::new(false),
            rings_ready_cv: Condvar::new(),
            kicked: AtomicU32::new(0),
            tx_broken: AtomicU32::new(0),
            ring_resets: RingResets::default(),
            conn,
            capture,
            exit_fds: Mutex::new(Vec::new()),
        })))
    }

    /// Closes the exit eventfds that vhost-user-backend leaks (see `exit_event`). Call only
    /// after the daemon that used them has been dropped (its worker threads joined).
    pub(crate) fn release_exit_fds(&self) {
        let fds = match self.0.exit_fds.lock() {
            Ok(mut g) => std::mem::take(&mut *g),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        };
        for fd in fds {
            // Only close what is still the eventfd we created: should a later version of the
            // crate close it itself, the number may have been reused by something else.
            let link = std::fs::read_link(format!("/proc/self/fd/{fd}"));
            if link.is_ok_and(|l| l.as_os_str() == "anon_inode:[eventfd]") {
                // SAFETY: `fd` is the exit eventfd this backend created; its owner (the
                // daemon's epoll handler) has been dropped without closing it, so nothing
                // else refers to it and closing it cannot affect another object.
                unsafe { libc::close(fd) };
            }
        }
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.0
    }

    /// This connection's number on its port.
    pub(crate) fn conn(&self) -> u64 {
        self.0.conn
    }

    /// True while a TX ring is parked as broken (until the frontend resets it).
    pub(crate) fn tx_broken(&self) -> bool {
        self.0.tx_broken.load(Ordering::Acquire) != 0
    }

    /// The eventfd that, once written, makes the worker publish its rings (see `port.rs`).
    pub(crate) fn capture_fd(&self) -> &EventFd {
        &self.0.capture
    }

    /// The eventfd the SIGBUS handler writes when this connection's guest memory faults.
    pub(crate) fn fault_fd(&self) -> &EventFd {
        &self.0.fault
    }

    /// The frontend's memory file shrank under a mapping (the SIGBUS handler replaced it with
    /// zero pages): this connection ends, every other port goes on.
    fn on_memory_fault(&self) {
        let _ = self.0.fault.read();
        if self.0.faulted.swap(true, Ordering::AcqRel) {
            return; // another mapping faulted before the connection was down
        }
        let port = &self.0.port;
        PortStats::add(&port.stats.memory_fault, 1);
        warn!(
            "{}: the frontend's guest memory became inaccessible (its file was truncated?):              ending the connection; the frontend must reconnect with valid memory",
            port.cfg.name
        );
        port.end_connection();
    }

    fn num_queues_inner(&self) -> usize {
        usize::from(self.0.port.cfg.queue_pairs) * 2
    }

    /// Publishes this connection's rings to the port: the RX rings so that other threads can
    /// deliver into them, the TX rings for the thread that drains the port.
    fn publish_rings(&self, vrings: &[Vring]) {
        if self.0.published.swap(true, Ordering::AcqRel) {
            return;
        }
        let vrings = &vrings[..vrings.len().min(self.num_queues_inner())];
        if vrings.len() < 2 {
            return;
        }
        let rx: Vec<Vring> = vrings.iter().step_by(2).cloned().collect();
        let tx: Vec<Vring> = vrings.iter().skip(1).step_by(2).cloned().collect();
        self.0.port.tx.store(Some(Arc::new(TxPoller {
            backend: self.clone(),
            vrings: tx,
        })));
        self.0.port.rx.publish(Some(Arc::new(RxRing {
            vrings: rx,
            view: self.0.view.clone(),
            features: self.0.acked.clone(),
            stats: self.0.port.stats.clone(),
            log: self.0.log.clone(),
        })));
        debug!("{}: rx ring published", self.0.port.cfg.name);
        let mut ready = match self.0.rings_ready.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *ready = true;
        self.0.rings_ready_cv.notify_all();
    }

    /// Waits (at most `timeout`) until the worker thread has published this connection's
    /// rings. True if it has.
    pub(crate) fn wait_rings_published(&self, timeout: Duration) -> bool {
        let ready = match self.0.rings_ready.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let waited = self
            .0
            .rings_ready_cv
            .wait_timeout_while(ready, timeout, |ready| !*ready);
        match waited {
            Ok((ready, _)) => *ready,
            Err(p) => *p.into_inner().0,
        }
    }
}

impl VhostUserBackend for NetBackend {
    type Bitmap = ();
    type Vring = Vring;

    fn num_queues(&self) -> usize {
        self.num_queues_inner()
    }

    fn max_queue_size(&self) -> usize {
        usize::from(self.0.port.cfg.max_queue_size)
    }

    fn features(&self) -> u64 {
        let cfg = &self.0.port.cfg;
        offered_features(cfg.mac.is_some(), cfg.queue_pairs)
    }

    fn acked_features(&self, features: u64) {
        self.0.acked.store(features, Ordering::Release);
        self.0.log.set_enabled(features & F_LOG_ALL != 0);
        debug!("{}: acked features {features:#x}", self.0.port.cfg.name);
        if crate::features::Negotiated::from_features(features).packed {
            info!(
                "{}: the frontend uses packed virtqueues",
                self.0.port.cfg.name
            );
        }
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        offered_protocol_features()
    }

    fn reset_device(&self) {
        self.0.acked.store(0, Ordering::Release);
        self.0.log.set_enabled(false);
        self.0.ring_resets.bump();
    }

    fn stop_vring(&self, _queue_index: u32) -> io::Result<()> {
        // GET_VRING_BASE: the frontend stops a ring before setting it up again.
        self.0.ring_resets.bump();
        Ok(())
    }

    fn set_event_idx(&self, _enabled: bool) {
        // The rings read EVENT_IDX from the acked features (`Negotiated`) and the queue state
        // the handler keeps; nothing to store here.
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let cfg = &self.0.port.cfg;
        read_window(
            &config_space(cfg.mac, cfg.queue_pairs, cfg.mtu),
            offset,
            size,
        )
    }

    fn update_memory(&self, mem: GuestMemoryAtomic) -> io::Result<()> {
        // The handler has just mapped and swapped in the new table; the datapath sees it once
        // its mappings are registered with the SIGBUS handler.
        self.0.view.publish(mem.memory().into_inner())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        let (consumer, notifier) =
            new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC).ok()?;
        // vhost-user-backend 0.24 turns the consumer into a raw fd for its epoll set and never
        // closes it: remember it so that it can be closed once the daemon is gone.
        if let Ok(mut fds) = self.0.exit_fds.lock() {
            fds.push(consumer.as_raw_fd());
        }
        Some((consumer, notifier))
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[Vring],
        _thread_id: usize,
    ) -> io::Result<()> {
        if evset != EventSet::IN {
            return Err(io::Error::other(format!("unexpected event set {evset:?}")));
        }
        let num_queues = self.num_queues_inner();
        if device_event == fault_event_id(num_queues) {
            self.on_memory_fault();
            return Ok(());
        }
        if device_event == capture_event_id(num_queues) {
            let _ = self.0.capture.read();
            self.publish_rings(vrings);
            return Ok(());
        }
        self.publish_rings(vrings);
        let Some((pair, is_tx)) = pair_of(usize::from(device_event), self.0.port.cfg.queue_pairs)
        else {
            return Ok(());
        };
        if is_tx {
            // The next pass must look at the ring itself; wake whoever drains it.
            self.0.kicked.fetch_or(1 << pair, Ordering::AcqRel);
            if let Some(doorbell) = &self.0.port.cfg.tx_doorbell {
                let _ = doorbell.write(1);
            }
        }
        // RX kicks only say the guest posted buffers; deliveries pick them up as they come.
        Ok(())
    }
}
