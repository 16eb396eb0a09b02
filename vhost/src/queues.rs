//! Queue pairs (multiqueue): which virtqueue is which, and the counters kept per pair.
//!
//! A port with N queue pairs has virtqueues 0..2N: pair k receives on 2k and transmits on
//! 2k+1 (virtio-net's layout; the control queue, if the frontend has one, it serves itself).
//! Counters are added once per batch, like the port's own ([`crate::stats`]); the list of
//! per-pair counters is written once, in `queue_counters!` below.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::port::MAX_QUEUE_PAIRS;

/// The queue pair a virtqueue index belongs to, and whether it is that pair's TX queue.
/// `None` for an index beyond `pairs` pairs.
#[inline]
pub(crate) fn pair_of(queue: usize, pairs: u16) -> Option<(usize, bool)> {
    (queue < usize::from(pairs) * 2).then_some((queue / 2, queue % 2 == 1))
}

/// Defines [`QueuePairStats`], [`QueuePairSnapshot`] and its
/// [`FIELDS`](QueuePairSnapshot::FIELDS) from one list.
macro_rules! queue_counters {
    ($($(#[doc = $doc:literal])+ $name:ident,)+) => {
        /// Counters of one queue pair.
        #[derive(Debug, Default)]
        pub struct QueuePairStats {
            $($(#[doc = $doc])+ pub $name: AtomicU64,)+
        }

        /// A point-in-time copy of [`QueuePairStats`].
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct QueuePairSnapshot {
            $(
                #[doc = concat!("See [`QueuePairStats::", stringify!($name), "`].")]
                pub $name: u64,
            )+
        }

        impl QueuePairSnapshot {
            /// Every counter's name, in field order (the keys of the switch's stats).
            pub const FIELDS: [&'static str; [$(stringify!($name)),+].len()] =
                [$(stringify!($name)),+];

            /// Every counter's value, in the order of [`FIELDS`](Self::FIELDS).
            pub fn values(&self) -> [u64; Self::FIELDS.len()] {
                [$(self.$name,)+]
            }
        }

        impl QueuePairStats {
            fn snapshot(&self) -> QueuePairSnapshot {
                QueuePairSnapshot {
                    $($name: self.$name.load(Ordering::Relaxed),)+
                }
            }
        }
    };
}

queue_counters! {
    /// Frames taken from this pair's TX queue.
    from_guest_frames,
    /// Bytes of those frames.
    from_guest_bytes,
    /// Frames written into this pair's RX queue.
    to_guest_frames,
    /// Bytes of those frames.
    to_guest_bytes,
}

/// The counters of every queue pair a port may have.
#[derive(Debug, Default)]
pub struct QueueCounters([QueuePairStats; MAX_QUEUE_PAIRS as usize]);

impl QueueCounters {
    /// Pair `k`'s counters (the last pair's for an index beyond them: never, the callers hold
    /// indices below the port's pair count).
    #[inline]
    pub fn pair(&self, k: usize) -> &QueuePairStats {
        let last = self.0.len() - 1;
        &self.0[k.min(last)]
    }

    /// Copies of the first `pairs` pairs' counters.
    pub fn snapshot(&self, pairs: usize) -> Vec<QueuePairSnapshot> {
        self.0.iter().take(pairs).map(|q| q.snapshot()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_layout() {
        assert_eq!(pair_of(0, 2), Some((0, false)));
        assert_eq!(pair_of(1, 2), Some((0, true)));
        assert_eq!(pair_of(2, 2), Some((1, false)));
        assert_eq!(pair_of(3, 2), Some((1, true)));
        assert_eq!(pair_of(4, 2), None);
        assert_eq!(pair_of(usize::MAX, 16), None);
    }

    #[test]
    fn counters_are_per_pair_and_listed_once() {
        let c = QueueCounters::default();
        c.pair(1).to_guest_frames.fetch_add(3, Ordering::Relaxed);
        c.pair(99).from_guest_bytes.fetch_add(1, Ordering::Relaxed);
        let s = c.snapshot(2);
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].to_guest_frames, 3);
        assert_eq!(s[0], QueuePairSnapshot::default());
        assert_eq!(c.snapshot(16)[15].from_guest_bytes, 1);
        assert_eq!(QueuePairSnapshot::FIELDS[2], "to_guest_frames");
        assert_eq!(s[1].values()[2], 3);
    }
}
