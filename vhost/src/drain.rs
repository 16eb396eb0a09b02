//! Draining a guest's TX ring, pass by pass, for the thread that serves the port.
//!
//! The port never drains its own TX ring: a datapath thread asks it for its batches
//! ([`crate::PortHandle::poll_tx`]) and forwards each one itself, then the used entries go back
//! to the guest. That thread owns everything a drain mutates: the batch storage
//! ([`TxScratch`], one per thread) and the port's [`TxCursor`] (one per port it serves), so no
//! drain takes a lock besides the ring's own.

use std::sync::atomic::Ordering;

use log::{info, warn};
use vhost_user_backend::VringT;

use crate::backend::NetBackend;
use crate::dirty_log;
use crate::features::Negotiated;
use crate::frame::FrameBatch;
use crate::memory::{GuestMemoryAtomic, Vring};
use crate::park::ParkedRing;
use crate::port::MAX_QUEUE_PAIRS;
use crate::ring::{AvailPeek, SplitRing};
use crate::stats::PortStats;
use crate::tx::{take_chains, TxBatchCounts, TxScratch, MAX_BATCH, TX_PASS_BUDGET};

mod packed;

/// What the thread draining one port keeps between passes: a [`QueueCursor`] per TX queue
/// and where the next pass starts. Belongs to one connection: a new connection (or a new
/// port) starts from a fresh cursor, which the port arranges by itself.
#[derive(Default)]
pub struct TxCursor {
    /// The connection number this state belongs to (0: none yet).
    conn: u64,
    queues: [QueueCursor; MAX_QUEUE_PAIRS as usize],
    /// The queue pair the next pass starts with (rotates, so that a pass that ends at the
    /// budget does not always leave the same queues for later).
    next: usize,
}

/// What a pass keeps for one TX queue.
#[derive(Default)]
pub(crate) struct QueueCursor {
    /// The queue pair (index into the port's TX rings).
    pair: usize,
    /// Where to look to tell, cheaply, whether the guest added chains since the last batch.
    peek: Option<AvailPeek>,
    /// Set while the ring is parked as broken (see `park.rs`).
    parked: Option<ParkedRing>,
}

impl QueueCursor {
    /// This queue's bit in the backend's per-queue masks (`kicked`, `tx_broken`).
    #[inline]
    fn bit(&self) -> u32 {
        1 << self.pair
    }
}

impl TxCursor {
    /// Forgets what belonged to an earlier connection.
    #[inline]
    pub(crate) fn follow(&mut self, conn: u64) {
        if self.conn != conn {
            *self = TxCursor {
                conn,
                ..TxCursor::default()
            };
        }
    }

    /// The cursor of TX queue `k` (below [`MAX_QUEUE_PAIRS`]: the port's pairs).
    #[inline]
    pub(crate) fn queue(&mut self, k: usize) -> &mut QueueCursor {
        let k = k.min(self.queues.len() - 1);
        let q = &mut self.queues[k];
        q.pair = k;
        q
    }
}

/// The outcome of one pass over a port's TX ring.
#[derive(Debug, Default, Clone, Copy)]
pub struct TxPass {
    /// Anything was taken, or is left over (poll again before sleeping).
    pub active: bool,
    /// The chains of this pass the port refused (malformed, oversize, runt), already dropped
    /// and counted on the port; `frames` and `bytes` are those handed out.
    pub counts: TxBatchCounts,
}

/// What one TX batch left behind.
enum TxOutcome {
    /// The ring may hold more: go again.
    More,
    /// Nothing more for now; whether this batch took anything.
    Done(bool),
}

/// What one queue's part of a pass did.
#[derive(Default)]
struct QueuePass {
    took: bool,
    exhausted: bool,
    unparked: bool,
}

impl NetBackend {
    /// One pass over the TX rings (one per queue pair, `vrings`): batches of chains are
    /// validated and handed to `each`, then returned to the guest, with one notification per
    /// batch when the guest wants one. Takes at most [`TX_PASS_BUDGET`] descriptor reads for
    /// the port as a whole, whatever its number of queues (plus the rest of the chain that
    /// crosses it, at most [`crate::ring::MAX_CHAIN_DESCS`]): whatever the guest posts, the
    /// other ports are served before it gets more. Does not re-arm guest kicks (see
    /// [`NetBackend::arm_tx`]).
    pub(crate) fn drain_tx(
        &self,
        vrings: &[Vring],
        cursor: &mut TxCursor,
        scratch: &mut TxScratch,
        each: &mut impl FnMut(&FrameBatch<'_>),
    ) -> TxPass {
        let n = vrings.len().min(usize::from(MAX_QUEUE_PAIRS));
        // Descriptor reads of this pass, charged per chain and counted once per pass.
        let mut reads = 0u32;
        let mut pass = TxPass::default();
        let mut sum = QueuePass::default();
        let first = if n > 1 { cursor.next % n } else { 0 };
        for j in 0..n {
            let k = (first + j) % n;
            let q = self.drain_queue(
                &vrings[k],
                cursor.queue(k),
                scratch,
                &mut reads,
                &mut pass.counts,
                each,
            );
            sum.took |= q.took;
            sum.unparked |= q.unparked;
            if q.exhausted {
                sum.exhausted = true;
                break;
            }
        }
        cursor.next = first + 1;
        let stats = &self.inner().port.stats;
        PortStats::add(&stats.tx_descriptors, u64::from(reads));
        PortStats::add(&stats.tx_passes, u64::from(sum.took));
        PortStats::add(&stats.tx_budget_exhausted, u64::from(sum.exhausted));
        pass.active = sum.took || sum.exhausted || sum.unparked;
        pass
    }

    /// One TX queue's part of a pass (see [`NetBackend::drain_tx`]), within what is left of
    /// the port's budget (`reads` so far).
    fn drain_queue(
        &self,
        vring: &Vring,
        cursor: &mut QueueCursor,
        scratch: &mut TxScratch,
        reads: &mut u32,
        counts: &mut TxBatchCounts,
        each: &mut impl FnMut(&FrameBatch<'_>),
    ) -> QueuePass {
        let inner = self.inner();
        let mut q = QueuePass::default();
        if let Some(parked) = &cursor.parked {
            if parked.still_parked(&inner.ring_resets, vring) {
                return q;
            }
            cursor.parked = None;
            inner.tx_broken.fetch_and(!cursor.bit(), Ordering::AcqRel);
            info!(
                "{}: TX ring reset by the frontend (virtqueue {}): serving it again",
                inner.port.cfg.name,
                cursor.pair * 2 + 1
            );
            // Reported as activity, so that the datapath thread re-arms the guest's kicks when
            // it next goes idle (they were not armed while the ring was parked).
            q.unparked = true;
        }
        // An idle queue: one load tells that nothing new arrived.
        if !q.unparked {
            if inner.kicked.load(Ordering::Acquire) & cursor.bit() != 0 {
                inner.kicked.fetch_and(!cursor.bit(), Ordering::AcqRel);
            } else {
                let mem = inner.view.peek();
                if cursor.peek.as_mut().is_some_and(|p| p.unchanged(&mem)) {
                    return q;
                }
            }
        }
        if *reads >= TX_PASS_BUDGET {
            // The port's budget went to the queues before this one: it is looked at first in
            // the next pass (its kick, if any, still stands).
            if !q.unparked {
                inner.kicked.fetch_or(cursor.bit(), Ordering::AcqRel);
            }
            q.exhausted = true;
            return q;
        }
        loop {
            match self.tx_batch(vring, cursor, scratch, reads, counts, each) {
                TxOutcome::Done(n) => {
                    q.took |= n;
                    break;
                }
                TxOutcome::More => {
                    q.took = true;
                    if *reads >= TX_PASS_BUDGET {
                        q.exhausted = true;
                        break;
                    }
                }
            }
        }
        q
    }

    /// Before the datapath thread sleeps: re-arms guest kicks. True if chains are already
    /// waiting. Also (re)takes the peek at the ring's avail index, so that polling an idle
    /// guest costs one load even if it never transmitted.
    pub(crate) fn arm_tx(&self, vring: &Vring, cursor: &mut QueueCursor) -> bool {
        if self.inner().tx_broken.load(Ordering::Acquire) & cursor.bit() != 0 {
            // A parked ring is not asked for kicks: nothing it sends is looked at until the
            // frontend resets it, which the datapath thread's periodic pass notices.
            return false;
        }
        if Negotiated::from_features(self.inner().acked.load(Ordering::Acquire)).packed {
            return self.arm_tx_packed(vring, cursor);
        }
        let mem_arc = self.inner().view.load();
        let state = vring.get_mut();
        if !state.is_enabled() {
            return false;
        }
        let Some(mut ring) = SplitRing::new(mem_arc.mem(), state.get_queue()) else {
            return false;
        };
        let pending = ring.enable_notification();
        if let Some(log) = self.inner().log.active() {
            dirty_log::mark_used_ring(&log, &ring, &self.inner().log);
        }
        cursor.peek = Some(AvailPeek::new(mem_arc.clone(), &ring));
        pending
    }

    /// Takes one batch, hands it to `each`, returns its chains to the guest.
    fn tx_batch(
        &self,
        vring: &Vring,
        cursor: &mut QueueCursor,
        scratch: &mut TxScratch,
        reads: &mut u32,
        total: &mut TxBatchCounts,
        each: &mut impl FnMut(&FrameBatch<'_>),
    ) -> TxOutcome {
        let inner = self.inner();
        // Read before the ring is examined: a reset racing with finding the ring broken then
        // unparks it at once (see park.rs).
        let resets = inner.ring_resets.get();
        let neg = Negotiated::from_features(inner.acked.load(Ordering::Acquire));
        if neg.packed {
            return self.tx_batch_packed(vring, cursor, scratch, reads, total, each);
        }
        let max_frame = inner.port.cfg.max_frame_len();
        let mem_arc = inner.view.load();
        let mut state = vring.get_mut();
        if !state.is_enabled() {
            return TxOutcome::Done(false);
        }
        let Some(mut ring) = SplitRing::new(mem_arc.mem(), state.get_queue()) else {
            return TxOutcome::Done(false);
        };
        ring.disable_notification();
        scratch.clear();
        let (counts, broken) = take_chains(
            &mut ring,
            scratch,
            neg.hdr_len,
            max_frame,
            neg.tx_offloads,
            reads,
            TX_PASS_BUDGET,
        );
        let taken = !scratch.heads.is_empty() || counts.bad_descriptor > 0;
        if !scratch.frames.is_empty() {
            // The frames' host addresses stay valid: `mem_arc` (the memory snapshot) is held
            // until this function returns.
            each(&scratch.batch());
        }
        for &head in &scratch.heads {
            ring.push_used(head, 0);
        }
        ring.publish_used();
        if let Some(log) = inner.log.active() {
            dirty_log::mark_used_ring(&log, &ring, &inner.log);
        }
        if ring.needs_notification() && state.signal_used_queue().is_ok() {
            PortStats::add(&inner.port.stats.notifications, 1);
        }
        let outcome = if broken {
            TxOutcome::Done(taken)
        } else if scratch.heads.len() == MAX_BATCH
            || (*reads >= TX_PASS_BUDGET && ring.pending().is_some_and(|n| n > 0))
        {
            TxOutcome::More
        } else {
            TxOutcome::Done(taken)
        };
        ring.store_back(state.get_queue_mut());
        if broken {
            self.park(cursor, resets, &ring, &state);
        }
        cursor.peek = Some(AvailPeek::new(mem_arc.clone(), &ring));
        self.count_batch(cursor, &counts);
        total.add(&counts);
        outcome
    }

    /// Adds one batch's counts to the port's and its queue pair's counters.
    fn count_batch(&self, cursor: &QueueCursor, counts: &TxBatchCounts) {
        let stats = &self.inner().port.stats;
        PortStats::add(&stats.from_guest_frames, counts.frames);
        PortStats::add(&stats.from_guest_bytes, counts.bytes);
        PortStats::add(&stats.tx_bad_descriptor, counts.bad_descriptor);
        PortStats::add(&stats.tx_oversize, counts.oversize);
        PortStats::add(&stats.tx_runt, counts.runt);
        PortStats::add(&stats.tx_bad_offload, counts.bad_offload);
        let q = stats.queues.pair(cursor.pair);
        PortStats::add(&q.from_guest_frames, counts.frames);
        PortStats::add(&q.from_guest_bytes, counts.bytes);
    }

    /// Parks the TX ring found broken (counted once by the caller as a bad descriptor): it is
    /// not looked at again until the frontend resets it (see park.rs).
    #[cold]
    fn park(
        &self,
        cursor: &mut QueueCursor,
        resets: u64,
        ring: &SplitRing<'_>,
        state: &vhost_user_backend::VringState<GuestMemoryAtomic>,
    ) {
        let inner = self.inner();
        cursor.parked = Some(ParkedRing::new(
            resets,
            state.is_enabled(),
            state.get_queue(),
        ));
        inner.tx_broken.fetch_or(cursor.bit(), Ordering::AcqRel);
        PortStats::add(&inner.port.stats.tx_ring_broken, 1);
        warn!(
            "{}: TX ring broken (virtqueue {}): the guest moved its avail index {} entries ahead of the device \
             (ring size {}); the port's TX is parked until the frontend resets the ring \
             (GET_VRING_BASE / SET_VRING_*, device reset) or reconnects",
            inner.port.cfg.name,
            cursor.pair * 2 + 1,
            ring.avail_ahead(),
            ring.size()
        );
    }
}
