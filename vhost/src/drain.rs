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
use crate::ring::{AvailPeek, SplitRing};
use crate::stats::PortStats;
use crate::tx::{take_chains, TxBatchCounts, TxScratch, MAX_BATCH, TX_PASS_BUDGET};

mod packed;

/// What the thread draining one port keeps between passes. Belongs to one connection: a new
/// connection (or a new port) starts from a fresh cursor, which the port arranges by itself.
#[derive(Default)]
pub struct TxCursor {
    /// The connection number this state belongs to (0: none yet).
    conn: u64,
    /// Where to look to tell, cheaply, whether the guest added chains since the last batch.
    peek: Option<AvailPeek>,
    /// Set while the ring is parked as broken (see `park.rs`).
    parked: Option<ParkedRing>,
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

impl NetBackend {
    /// One pass over the TX ring: batches of chains are validated and handed to `each`, then
    /// returned to the guest, with one notification per batch when the guest wants one. Takes
    /// at most [`TX_PASS_BUDGET`] descriptor reads (plus the rest of the chain that crosses
    /// it, at most [`crate::ring::MAX_CHAIN_DESCS`]): whatever the guest posts, the other ports
    /// are served before it gets more. Does not re-arm guest kicks (see
    /// [`NetBackend::arm_tx`]).
    pub(crate) fn drain_tx(
        &self,
        vring: &Vring,
        cursor: &mut TxCursor,
        scratch: &mut TxScratch,
        each: &mut impl FnMut(&FrameBatch<'_>),
    ) -> TxPass {
        let inner = self.inner();
        let mut unparked = false;
        if let Some(parked) = &cursor.parked {
            if parked.still_parked(&inner.ring_resets, vring) {
                return TxPass::default();
            }
            cursor.parked = None;
            inner.tx_broken.store(false, Ordering::Release);
            info!(
                "{}: TX ring reset by the frontend: serving it again",
                inner.port.cfg.name
            );
            // Reported as activity, so that the datapath thread re-arms the guest's kicks when
            // it next goes idle (they were not armed while the ring was parked).
            unparked = true;
        }
        // An idle guest: one load tells that nothing new arrived.
        if !unparked {
            if inner.kicked.load(Ordering::Acquire) {
                inner.kicked.store(false, Ordering::Release);
            } else {
                let mem = inner.view.peek();
                if cursor.peek.as_mut().is_some_and(|p| p.unchanged(&mem)) {
                    return TxPass::default();
                }
            }
        }
        // Descriptor reads of this pass, charged per chain and counted once per pass.
        let mut reads = 0u32;
        let mut pass = TxPass::default();
        let mut took = false;
        let mut exhausted = false;
        loop {
            match self.tx_batch(vring, cursor, scratch, &mut reads, &mut pass.counts, each) {
                TxOutcome::Done(n) => {
                    took |= n;
                    break;
                }
                TxOutcome::More => {
                    took = true;
                    if reads >= TX_PASS_BUDGET {
                        exhausted = true;
                        break;
                    }
                }
            }
        }
        let stats = &inner.port.stats;
        PortStats::add(&stats.tx_descriptors, u64::from(reads));
        PortStats::add(&stats.tx_passes, u64::from(took));
        PortStats::add(&stats.tx_budget_exhausted, u64::from(exhausted));
        pass.active = took || exhausted || unparked;
        pass
    }

    /// Before the datapath thread sleeps: re-arms guest kicks. True if chains are already
    /// waiting. Also (re)takes the peek at the ring's avail index, so that polling an idle
    /// guest costs one load even if it never transmitted.
    pub(crate) fn arm_tx(&self, vring: &Vring, cursor: &mut TxCursor) -> bool {
        if self.tx_broken() {
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
        cursor: &mut TxCursor,
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
        let stats = &inner.port.stats;
        PortStats::add(&stats.from_guest_frames, counts.frames);
        PortStats::add(&stats.from_guest_bytes, counts.bytes);
        PortStats::add(&stats.tx_bad_descriptor, counts.bad_descriptor);
        PortStats::add(&stats.tx_oversize, counts.oversize);
        PortStats::add(&stats.tx_runt, counts.runt);
        PortStats::add(&stats.tx_bad_offload, counts.bad_offload);
        total.add(&counts);
        outcome
    }

    /// Parks the TX ring found broken (counted once by the caller as a bad descriptor): it is
    /// not looked at again until the frontend resets it (see park.rs).
    #[cold]
    fn park(
        &self,
        cursor: &mut TxCursor,
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
