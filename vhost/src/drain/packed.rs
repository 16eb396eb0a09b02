//! A TX batch from a packed ring: the split batch's steps (see [`NetBackend::tx_batch`]) on a
//! [`PackedRing`], kept apart so that the split path stays as it is.

use std::sync::atomic::Ordering;

use log::warn;
use vhost_user_backend::VringT;

use super::{QueueCursor, TxOutcome};
use crate::backend::NetBackend;
use crate::dirty_log;
use crate::features::Negotiated;
use crate::frame::FrameBatch;
use crate::memory::Vring;
use crate::park::ParkedRing;
use crate::ring::{AvailPeek, PackedHead, PackedRing};
use crate::stats::PortStats;
use crate::tx::{take_packed_chains, TxBatchCounts, TxScratch, MAX_BATCH, TX_PASS_BUDGET};

impl NetBackend {
    /// [`NetBackend::arm_tx`] for a packed ring.
    pub(super) fn arm_tx_packed(&self, vring: &Vring, cursor: &mut QueueCursor) -> bool {
        let mem_arc = self.inner().view.load();
        let state = vring.get_mut();
        if !state.is_enabled() {
            return false;
        }
        let Some(mut ring) = PackedRing::new(mem_arc.mem(), state.get_queue()) else {
            return false;
        };
        let pending = ring.enable_notification();
        if let Some(log) = self.inner().log.active() {
            dirty_log::mark_used_ring(&log, &ring, &self.inner().log);
        }
        cursor.peek = Some(AvailPeek::packed(mem_arc.clone(), &ring));
        pending
    }

    /// [`NetBackend::tx_batch`] for a packed ring.
    pub(super) fn tx_batch_packed(
        &self,
        vring: &Vring,
        cursor: &mut QueueCursor,
        scratch: &mut TxScratch,
        reads: &mut u32,
        total: &mut TxBatchCounts,
        each: &mut impl FnMut(&FrameBatch<'_>),
    ) -> TxOutcome {
        let inner = self.inner();
        let resets = inner.ring_resets.get();
        let neg = Negotiated::from_features(inner.acked.load(Ordering::Acquire));
        let hdr_len = neg.hdr_len;
        let max_frame = inner.port.cfg.max_frame_len();
        let mem_arc = inner.view.load();
        let mut state = vring.get_mut();
        if !state.is_enabled() {
            return TxOutcome::Done(false);
        }
        let Some(mut ring) = PackedRing::new(mem_arc.mem(), state.get_queue()) else {
            return TxOutcome::Done(false);
        };
        ring.disable_notification();
        scratch.clear();
        let (counts, broken) = take_packed_chains(
            &mut ring,
            scratch,
            hdr_len,
            max_frame,
            neg.tx_offloads,
            reads,
            TX_PASS_BUDGET,
        );
        let taken = !scratch.heads.is_empty() || counts.bad_descriptor > 0;
        if !scratch.frames.is_empty() {
            // The frames' host addresses stay valid: `mem_arc` is held until we return.
            each(&scratch.batch());
        }
        for (&id, &slots) in scratch.heads.iter().zip(&scratch.slots) {
            ring.push_used(PackedHead { id, slots }, 0);
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
        } else if scratch.heads.len() == MAX_BATCH || (*reads >= TX_PASS_BUDGET && ring.has_avail())
        {
            TxOutcome::More
        } else {
            TxOutcome::Done(taken)
        };
        ring.store_back(state.get_queue_mut());
        if broken {
            cursor.parked = Some(ParkedRing::new(
                resets,
                state.is_enabled(),
                state.get_queue(),
            ));
            inner.tx_broken.fetch_or(cursor.bit(), Ordering::AcqRel);
            PortStats::add(&inner.port.stats.tx_ring_broken, 1);
            warn!(
                "{}: TX ring broken: a chain of the packed ring does not end within the ring \
                 (size {}); the port's TX is parked until the frontend resets the ring \
                 (GET_VRING_BASE / SET_VRING_*, device reset) or reconnects",
                inner.port.cfg.name,
                ring.size()
            );
        }
        cursor.peek = Some(AvailPeek::packed(mem_arc.clone(), &ring));
        self.count_batch(cursor, &counts);
        total.add(&counts);
        outcome
    }
}
