//! The `VhostUserBackend` of one frontend connection.
//!
//! A fresh backend (and daemon, rings and worker thread) serves each connection: the
//! vhost-user-backend handler keeps its ownership and ring state for the life of the daemon, so
//! starting over per connection is what makes a rebooted or reconnected frontend start clean.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use log::{debug, info, warn};
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackend, VringT};
use vm_memory::GuestAddressSpace;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::config_space::{config_space, read_window};
use crate::features::{offered_features, offered_protocol_features, Negotiated};
use crate::mem_view::MemView;
use crate::memory::{GuestMemory, GuestMemoryAtomic, Vring};
use crate::park::{ParkedRing, RingResets};
use crate::port::{PortShared, TxPoller};
use crate::ring::{AvailPeek, SplitRing};
use crate::rx::RxRing;
use crate::stats::PortStats;
use crate::tx::{take_chains, TxBatch, TxBatchCounts, TxScratch, MAX_BATCH, TX_PASS_BUDGET};

/// Queue index of the first RX queue and TX queue (virtio-net: even RX, odd TX).
pub(crate) const RX_QUEUE: usize = 0;

/// Device event id of the "publish your rings" event, beyond the queue and exit events.
pub(crate) fn capture_event_id(num_queues: usize) -> u16 {
    (num_queues + 1) as u16
}

/// Device event id of the "guest memory faulted" event (see [`crate::sigbus`]).
pub(crate) fn fault_event_id(num_queues: usize) -> u16 {
    (num_queues + 2) as u16
}

struct Inner {
    port: Arc<PortShared>,
    /// The guest memory the datapath reads (never the daemon's atomic: see `mem_view`).
    view: Arc<MemView>,
    /// Written by the SIGBUS handler when this connection's guest memory faults.
    fault: Arc<EventFd>,
    /// The connection was ended for a memory fault (counted once).
    faulted: AtomicBool,
    acked: Arc<AtomicU64>,
    event_idx: AtomicBool,
    scratch: Mutex<TxScratch>,
    published: AtomicBool,
    /// External TX mode: the guest kicked since the last poll.
    kicked: AtomicBool,
    /// The TX ring is parked as broken (see `park.rs`); for `PortHandle::is_tx_broken`.
    tx_broken: AtomicBool,
    /// The frontend's ring resets on this connection (unpark a broken ring).
    ring_resets: RingResets,
    capture: EventFd,
    exit_fds: Mutex<Vec<RawFd>>,
}

/// The virtio-net device of one connection.
#[derive(Clone)]
pub struct NetBackend(Arc<Inner>);

impl NetBackend {
    pub(crate) fn new(port: Arc<PortShared>) -> io::Result<Self> {
        let capture = EventFd::new(EFD_NONBLOCK)?;
        let fault = Arc::new(EventFd::new(EFD_NONBLOCK)?);
        Ok(NetBackend(Arc::new(Inner {
            port,
            view: Arc::new(MemView::new(fault.clone())),
            fault,
            faulted: AtomicBool::new(false),
            acked: Arc::new(AtomicU64::new(0)),
            event_idx: AtomicBool::new(false),
            scratch: Mutex::new(TxScratch::default()),
            published: AtomicBool::new(false),
            kicked: AtomicBool::new(false),
            tx_broken: AtomicBool::new(false),
            ring_resets: RingResets::default(),
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

    /// True while the TX ring is parked as broken (until the frontend resets it).
    pub(crate) fn tx_broken(&self) -> bool {
        self.0.tx_broken.load(Ordering::Acquire)
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

    /// Publishes this connection's RX ring to the port, so other threads can deliver into it.
    fn publish_rings(&self, vrings: &[Vring]) {
        if self.0.published.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(rx) = vrings.get(RX_QUEUE) else {
            return;
        };
        if let Some(tx) = vrings.get(RX_QUEUE + 1) {
            self.0.port.tx.store(Some(Arc::new(TxPoller {
                backend: self.clone(),
                vring: tx.clone(),
            })));
        }
        self.0.port.rx.publish(Some(Arc::new(RxRing {
            vring: rx.clone(),
            view: self.0.view.clone(),
            features: self.0.acked.clone(),
            stats: self.0.port.stats.clone(),
        })));
        debug!("{}: rx ring published", self.0.port.cfg.name);
    }

    /// Drains a TX ring: batches of chains are validated, handed to the sink, then returned to
    /// the guest, with one notification per batch when the guest wants one. Re-arms guest
    /// kicks when the ring is empty.
    pub(crate) fn process_tx(&self, vring: &Vring) {
        self.drain_tx(vring, true);
    }

    /// External TX mode: drains the TX ring without re-arming guest kicks (with EVENT_IDX the
    /// stale avail_event keeps the guest from kicking). Returns true if any chain was taken.
    pub(crate) fn poll_tx(&self, vring: &Vring) -> bool {
        self.drain_tx(vring, false)
    }

    /// External TX mode, going idle: re-arms guest kicks. True if chains are already waiting.
    /// Also (re)takes the peek at the ring's avail index, so that polling an idle guest costs
    /// one load even if it never transmitted.
    pub(crate) fn arm_tx(&self, vring: &Vring) -> bool {
        if self.tx_broken() {
            // A parked ring is not asked for kicks: nothing it sends is looked at until the
            // frontend resets it, which the poller's periodic pass notices.
            return false;
        }
        let mem_arc = self.0.view.load();
        let state = vring.get_mut();
        if !state.is_enabled() {
            return false;
        }
        let Some(mut ring) = SplitRing::new(mem_arc.mem(), state.get_queue()) else {
            return false;
        };
        let pending = ring.enable_notification();
        if let Ok(mut s) = self.0.scratch.try_lock() {
            s.peek = Some(AvailPeek::new(mem_arc.clone(), &ring));
        }
        pending
    }

    /// External TX mode: the guest kicked its TX queue (it added chains after an
    /// [`NetBackend::arm_tx`]); the next poll must look at the ring itself.
    pub(crate) fn note_tx_kick(&self) {
        self.0.kicked.store(true, Ordering::Release);
    }

    /// Drains the TX ring in batches. With `rearm` false (a poller serving many ports) one
    /// call is one pass of the poller over this port and takes at most [`TX_PASS_BUDGET`]
    /// descriptor reads (plus the rest of the chain that crosses it, at most
    /// [`crate::ring::MAX_CHAIN_DESCS`]): whatever the guest posts, the other ports are served
    /// before it gets more. Returns true if anything was taken or is left over.
    fn drain_tx(&self, vring: &Vring, rearm: bool) -> bool {
        let inner = &self.0;
        // The scratch is only used by whoever drains this connection's TX ring (its worker,
        // or one datapath thread): never contended in practice.
        let mut scratch = match inner.scratch.try_lock() {
            Ok(s) => s,
            Err(std::sync::TryLockError::WouldBlock) => return false,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        };
        let mut unparked = false;
        if let Some(parked) = &scratch.parked {
            if parked.still_parked(&inner.ring_resets, vring) {
                return false;
            }
            scratch.parked = None;
            inner.tx_broken.store(false, Ordering::Release);
            info!(
                "{}: TX ring reset by the frontend: serving it again",
                inner.port.cfg.name
            );
            // Reported as activity, so that a poller re-arms the guest's kicks when it next
            // goes idle (they were not armed while the ring was parked).
            unparked = true;
        }
        // A poller visiting an idle guest: one load tells it nothing new arrived.
        if !rearm && !unparked {
            if inner.kicked.load(Ordering::Acquire) {
                inner.kicked.store(false, Ordering::Release);
            } else {
                let mem = inner.view.peek();
                if scratch.peek.as_mut().is_some_and(|p| p.unchanged(&mem)) {
                    return false;
                }
            }
        }
        // Descriptor reads of this pass, charged per chain and counted once per pass.
        let mut reads = 0u32;
        let mut took = false;
        let mut exhausted = false;
        loop {
            match self.tx_batch(vring, &mut scratch, rearm, &mut reads) {
                TxOutcome::Done(n) => {
                    took |= n;
                    break;
                }
                TxOutcome::More => {
                    took = true;
                    if reads >= TX_PASS_BUDGET {
                        if !rearm {
                            exhausted = true;
                            break;
                        }
                        // The connection's own worker (no poller): nobody else to serve on
                        // this thread, and no kick would come for what is left. Go on.
                        self.count_pass(u64::from(reads), true, false);
                        reads = 0;
                    }
                }
            }
        }
        self.count_pass(u64::from(reads), took, exhausted);
        took || exhausted || unparked
    }

    /// Adds one pass to the port's TX work counters.
    fn count_pass(&self, reads: u64, took: bool, exhausted: bool) {
        let stats = &self.0.port.stats;
        PortStats::add(&stats.tx_descriptors, reads);
        PortStats::add(&stats.tx_passes, u64::from(took));
        PortStats::add(&stats.tx_budget_exhausted, u64::from(exhausted));
    }

    /// Handles one batch.
    fn tx_batch(
        &self,
        vring: &Vring,
        scratch: &mut TxScratch,
        rearm: bool,
        reads: &mut u32,
    ) -> TxOutcome {
        let inner = &self.0;
        // Read before the ring is examined: a reset racing with finding the ring broken then
        // unparks it at once (see park.rs).
        let resets = inner.ring_resets.get();
        let neg = Negotiated::from_features(inner.acked.load(Ordering::Acquire));
        let max_frame = inner.port.cfg.max_frame_len();
        let mem_arc = inner.view.load();
        let mem: &GuestMemory = mem_arc.mem();
        let mut state = vring.get_mut();
        if !state.is_enabled() {
            return TxOutcome::Done(false);
        }
        let Some(mut ring) = SplitRing::new(mem, state.get_queue()) else {
            return TxOutcome::Done(false);
        };
        ring.disable_notification();
        scratch.clear();
        let (counts, broken) = take_chains(
            &mut ring,
            scratch,
            neg.hdr_len,
            max_frame,
            reads,
            TX_PASS_BUDGET,
        );
        let taken = !scratch.heads.is_empty() || counts.bad_descriptor > 0;
        if taken {
            let refused = TxBatchCounts {
                frames: 0,
                bytes: 0,
                ..counts
            };
            inner
                .port
                .sink
                .on_tx(&TxBatch::new(ring.map(), scratch, refused));
        }
        for &head in &scratch.heads {
            ring.push_used(head, 0);
        }
        ring.publish_used();
        if ring.needs_notification() && state.signal_used_queue().is_ok() {
            PortStats::add(&inner.port.stats.notifications, 1);
        }
        let outcome = if broken {
            TxOutcome::Done(taken)
        } else if scratch.heads.len() == MAX_BATCH
            || (*reads >= TX_PASS_BUDGET && ring.pending().is_some_and(|n| n > 0))
        {
            TxOutcome::More
        } else if rearm && ring.enable_notification() {
            // Chains arrived while re-arming: go round again.
            TxOutcome::More
        } else {
            TxOutcome::Done(taken)
        };
        ring.store_back(state.get_queue_mut());
        if broken {
            self.park(scratch, resets, &ring, &state);
        }
        scratch.peek = Some(AvailPeek::new(mem_arc.clone(), &ring));
        let stats = &inner.port.stats;
        PortStats::add(&stats.from_guest_frames, counts.frames);
        PortStats::add(&stats.from_guest_bytes, counts.bytes);
        PortStats::add(&stats.tx_bad_descriptor, counts.bad_descriptor);
        PortStats::add(&stats.tx_oversize, counts.oversize);
        PortStats::add(&stats.tx_runt, counts.runt);
        outcome
    }
}

impl NetBackend {
    /// Parks the TX ring found broken (counted once by the caller as a bad descriptor): it is
    /// not looked at again until the frontend resets it (see park.rs).
    #[cold]
    fn park(
        &self,
        scratch: &mut TxScratch,
        resets: u64,
        ring: &SplitRing<'_>,
        state: &vhost_user_backend::VringState<GuestMemoryAtomic>,
    ) {
        let inner = &self.0;
        scratch.parked = Some(ParkedRing::new(
            resets,
            state.is_enabled(),
            state.get_queue(),
        ));
        inner.tx_broken.store(true, Ordering::Release);
        PortStats::add(&inner.port.stats.tx_ring_broken, 1);
        warn!(
            "{}: TX ring broken: the guest moved its avail index {} entries ahead of the device \
             (ring size {}); the port's TX is parked until the frontend resets the ring \
             (GET_VRING_BASE / SET_VRING_*, device reset) or reconnects",
            inner.port.cfg.name,
            ring.avail_ahead(),
            ring.size()
        );
    }
}

/// What one TX batch left behind.
enum TxOutcome {
    /// The ring may hold more: go again.
    More,
    /// Nothing more for now; whether this batch took anything.
    Done(bool),
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
        debug!("{}: acked features {features:#x}", self.0.port.cfg.name);
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        offered_protocol_features()
    }

    fn reset_device(&self) {
        self.0.acked.store(0, Ordering::Release);
        self.0.ring_resets.bump();
    }

    fn stop_vring(&self, _queue_index: u32) -> io::Result<()> {
        // GET_VRING_BASE: the frontend stops a ring before setting it up again.
        self.0.ring_resets.bump();
        Ok(())
    }

    fn set_event_idx(&self, enabled: bool) {
        self.0.event_idx.store(enabled, Ordering::Release);
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
        let q = usize::from(device_event);
        if q >= num_queues {
            return Ok(());
        }
        if q % 2 == 1 {
            if self.0.port.cfg.external_tx {
                self.note_tx_kick();
                self.0.port.sink.on_tx_kick();
            } else if let Some(vring) = vrings.get(q) {
                self.process_tx(vring);
            }
        }
        // RX kicks only say the guest posted buffers; deliveries pick them up as they come.
        Ok(())
    }
}
