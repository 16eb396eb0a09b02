//! Parking a TX ring the guest broke, until its frontend resets it.
//!
//! A ring whose avail index moved by more than the ring size can never be valid again by
//! itself: every chain the device would take from it is guesswork. Polling it would count
//! the same fault on every pass and keep a datapath thread busy forever, so the drain counts it
//! once, logs it once and stops looking at the ring ("parks" it). It looks again when the
//! frontend resets the ring: GET_VRING_BASE (which stops the ring before it is set up again)
//! or a device reset, seen through [`RingResets`], or any change of the ring's configuration
//! (SET_VRING_NUM / ADDR / BASE / KICK / ENABLE change what [`QueueConfig`] records). A new
//! connection starts with a fresh backend and nothing parked.

use std::sync::atomic::{AtomicU64, Ordering};

use vhost_user_backend::VringT;
use virtio_queue::QueueT;

use crate::memory::Vring;

/// Counts the frontend's ring resets (GET_VRING_BASE, RESET_DEVICE) on one connection.
#[derive(Default)]
pub(crate) struct RingResets(AtomicU64);

impl RingResets {
    /// The frontend stopped or reset a ring.
    pub(crate) fn bump(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }

    /// Resets so far.
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// What the frontend set up for a queue, and where the device stands in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct QueueConfig {
    ready: bool,
    enabled: bool,
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    next_avail: u16,
    next_used: u16,
}

impl QueueConfig {
    fn of(enabled: bool, q: &virtio_queue::Queue) -> Self {
        QueueConfig {
            ready: q.ready(),
            enabled,
            size: q.size(),
            desc: q.desc_table(),
            avail: q.avail_ring(),
            used: q.used_ring(),
            next_avail: q.next_avail(),
            next_used: q.next_used(),
        }
    }
}

/// A parked TX ring: the reset count and queue configuration it was parked with.
pub(crate) struct ParkedRing {
    resets: u64,
    config: QueueConfig,
}

impl ParkedRing {
    /// Parks the ring in its current configuration; `resets` is the reset count read before
    /// the ring was found broken (a reset racing with the discovery then unparks it again).
    pub(crate) fn new(resets: u64, enabled: bool, q: &virtio_queue::Queue) -> Self {
        ParkedRing {
            resets,
            config: QueueConfig::of(enabled, q),
        }
    }

    /// True while the frontend has neither reset nor reconfigured the ring since it was parked.
    /// One lock of the vring, no guest memory access.
    pub(crate) fn still_parked(&self, resets: &RingResets, vring: &Vring) -> bool {
        if resets.get() != self.resets {
            return false;
        }
        let state = vring.get_ref();
        QueueConfig::of(state.is_enabled(), state.get_queue()) == self.config
    }
}
