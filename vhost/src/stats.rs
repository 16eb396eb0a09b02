//! Per-port datapath counters.
//!
//! Counters are added once per batch (never per packet) with relaxed atomics: they are
//! statistics, not synchronisation. The list of counters is written once, in
//! `port_counters!` below: it makes the live counters ([`PortStats`]), their copy
//! ([`PortStatsSnapshot`]) and the table ([`PortStatsSnapshot::FIELDS`]) the switch's stats
//! and metrics are written from.

use std::sync::atomic::{AtomicU64, Ordering};

/// One counter of [`PortStats`], as the switch reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortCounter {
    /// The field's name: the counter's key in the switch's stats, and the metric's name after
    /// `port_`.
    pub name: &'static str,
    /// The help text when the counter is also a metric; `None`: in the stats only.
    pub metric_help: Option<&'static str>,
}

/// Defines [`PortStats`], [`PortStatsSnapshot`] and its [`FIELDS`](PortStatsSnapshot::FIELDS)
/// from one list: each counter's doc and name, and `=> metric "help"` for those also exported
/// as metrics.
macro_rules! port_counters {
    ($($(#[doc = $doc:literal])+ $name:ident $(=> metric $help:literal)?,)+) => {
        /// Counters of one port, as seen from the switch: `from_guest` is what the guest
        /// transmitted, `to_guest` what was written into its receive ring.
        #[derive(Debug, Default)]
        pub struct PortStats {
            $($(#[doc = $doc])+ pub $name: AtomicU64,)+
            /// The same traffic per queue pair (`crate::queues`).
            pub queues: crate::queues::QueueCounters,
        }

        /// A point-in-time copy of [`PortStats`].
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct PortStatsSnapshot {
            $(
                #[doc = concat!("See [`PortStats::", stringify!($name), "`].")]
                pub $name: u64,
            )+
        }

        /// Number of counters in [`PortStats`].
        pub const NUM_PORT_COUNTERS: usize = [$(stringify!($name)),+].len();

        impl PortStats {
            /// Reads every counter.
            pub fn snapshot(&self) -> PortStatsSnapshot {
                PortStatsSnapshot {
                    $($name: self.$name.load(Ordering::Relaxed),)+
                }
            }
        }

        impl PortStatsSnapshot {
            /// Every counter's name and metric help, in field order.
            pub const FIELDS: [PortCounter; NUM_PORT_COUNTERS] = [$(PortCounter {
                name: stringify!($name),
                metric_help: port_counters!(@help $($help)?),
            },)+];

            /// Every counter's value, in the order of [`FIELDS`](Self::FIELDS).
            pub fn values(&self) -> [u64; NUM_PORT_COUNTERS] {
                [$(self.$name,)+]
            }
        }
    };
    (@help) => { None };
    (@help $help:literal) => { Some($help) };
}

port_counters! {
    /// Frames taken from the guest's TX ring and handed to the switch.
    from_guest_frames,
    /// Bytes (Ethernet frame, no virtio header) of those frames.
    from_guest_bytes,
    /// Frames written into the guest's RX ring.
    to_guest_frames,
    /// Bytes of those frames.
    to_guest_bytes,
    /// TX chains dropped because a descriptor was malformed (address, length, flags, chain).
    tx_bad_descriptor,
    /// TX frames dropped because they exceed the port's maximum frame length.
    tx_oversize,
    /// TX frames dropped because they are shorter than an Ethernet header.
    tx_runt,
    /// TX frames dropped for their virtio-net header: an offload the guest did not
    /// negotiate, or a header that lies about the frame (docs/offloads.md).
    tx_bad_offload,
    /// TX descriptors read (chain walks, indirect entries included): the work the guest's
    /// transmissions cost, what the per-pass budget limits.
    tx_descriptors,
    /// Drain passes over the TX ring that took at least one chain.
    tx_passes,
    /// Of those, passes that stopped at the budget with chains left (the guest sends more than
    /// one pass takes; the other ports were served before it got more).
    tx_budget_exhausted,
    /// Times the TX ring was found broken (avail index moved by more than the ring size) and
    /// parked until the frontend reset it.
    tx_ring_broken,
    /// Frames for this guest dropped because its RX ring had no (or not enough) buffers,
    /// or the ring was not running.
    rx_no_buffer,
    /// Frames for this guest dropped because its RX buffers were malformed.
    rx_bad_descriptor,
    /// Frames for this guest dropped because they do not fit its (non-mergeable) buffers.
    rx_oversize,
    /// Notifications (call eventfd writes) sent to the guest.
    notifications,
    /// Frontend connections served so far.
    connections,
    /// Memory-table messages refused (a region larger than its file, not a regular file, or
    /// over the port's region-count or mapped-size limit); each ends its connection.
    mem_refused => metric
        "Guest memory-table messages refused (region beyond its file, over the limits)",
    /// Connections ended because their guest memory faulted (the frontend truncated its
    /// memory file under the switch).
    memory_fault => metric
        "Connections ended because the frontend's guest memory faulted (file truncated)",
    /// Frontend connections ended because the frontend stalled on the control channel (a
    /// message started and not completed in time, or replies not read).
    control_timeouts,
}

impl PortStats {
    /// Adds `n` to a counter (relaxed).
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        if n != 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }
}

impl PortStatsSnapshot {
    /// Each counter with its value, in field order.
    pub fn fields(&self) -> impl Iterator<Item = (&'static PortCounter, u64)> {
        Self::FIELDS.iter().zip(self.values())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_listed_under_its_name_in_order() {
        let stats = PortStats::default();
        PortStats::add(&stats.from_guest_frames, 1);
        PortStats::add(&stats.to_guest_bytes, 2);
        PortStats::add(&stats.control_timeouts, 3);
        let snap = stats.snapshot();
        let got: Vec<(&str, u64)> = snap.fields().map(|(f, v)| (f.name, v)).collect();
        assert_eq!(got.len(), NUM_PORT_COUNTERS);
        assert_eq!(got[0], ("from_guest_frames", 1));
        assert_eq!(got[3], ("to_guest_bytes", 2));
        assert_eq!(got[NUM_PORT_COUNTERS - 1], ("control_timeouts", 3));
        let metrics: Vec<&str> = PortStatsSnapshot::FIELDS
            .iter()
            .filter(|f| f.metric_help.is_some())
            .map(|f| f.name)
            .collect();
        assert_eq!(metrics, ["mem_refused", "memory_fault"]);
    }
}
