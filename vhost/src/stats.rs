//! Per-port datapath counters.
//!
//! Counters are added once per batch (never per packet) with relaxed atomics: they are
//! statistics, not synchronisation.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one port, as seen from the switch: `from_guest` is what the guest transmitted,
/// `to_guest` what was written into its receive ring.
#[derive(Debug, Default)]
pub struct PortStats {
    /// Frames taken from the guest's TX ring and handed to the switch.
    pub from_guest_frames: AtomicU64,
    /// Bytes (Ethernet frame, no virtio header) of those frames.
    pub from_guest_bytes: AtomicU64,
    /// Frames written into the guest's RX ring.
    pub to_guest_frames: AtomicU64,
    /// Bytes of those frames.
    pub to_guest_bytes: AtomicU64,
    /// TX chains dropped because a descriptor was malformed (address, length, flags, chain).
    pub tx_bad_descriptor: AtomicU64,
    /// TX frames dropped because they exceed the port's maximum frame length.
    pub tx_oversize: AtomicU64,
    /// TX frames dropped because they are shorter than an Ethernet header.
    pub tx_runt: AtomicU64,
    /// TX descriptors read (chain walks, indirect entries included): the work the guest's
    /// transmissions cost, what the per-pass budget limits.
    pub tx_descriptors: AtomicU64,
    /// Drain passes over the TX ring that took at least one chain.
    pub tx_passes: AtomicU64,
    /// Of those, passes that stopped at the budget with chains left (the guest sends more than
    /// one pass takes; the other ports were served before it got more).
    pub tx_budget_exhausted: AtomicU64,
    /// Times the TX ring was found broken (avail index moved by more than the ring size) and
    /// parked until the frontend reset it.
    pub tx_ring_broken: AtomicU64,
    /// Frames for this guest dropped because its RX ring had no (or not enough) buffers,
    /// or the ring was not running.
    pub rx_no_buffer: AtomicU64,
    /// Frames for this guest dropped because its RX buffers were malformed.
    pub rx_bad_descriptor: AtomicU64,
    /// Frames for this guest dropped because they do not fit its (non-mergeable) buffers.
    pub rx_oversize: AtomicU64,
    /// Notifications (call eventfd writes) sent to the guest.
    pub notifications: AtomicU64,
    /// Frontend connections served so far.
    pub connections: AtomicU64,
    /// Memory-table messages refused (a region larger than its file, not a regular file, or
    /// over the port's region-count or mapped-size limit); each ends its connection.
    pub mem_refused: AtomicU64,
    /// Connections ended because their guest memory faulted (the frontend truncated its
    /// memory file under the switch).
    pub memory_fault: AtomicU64,
    /// Frontend connections ended because the frontend stalled on the control channel (a
    /// message started and not completed in time, or replies not read).
    pub control_timeouts: AtomicU64,
}

/// A point-in-time copy of [`PortStats`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PortStatsSnapshot {
    /// See [`PortStats::from_guest_frames`].
    pub from_guest_frames: u64,
    /// See [`PortStats::from_guest_bytes`].
    pub from_guest_bytes: u64,
    /// See [`PortStats::to_guest_frames`].
    pub to_guest_frames: u64,
    /// See [`PortStats::to_guest_bytes`].
    pub to_guest_bytes: u64,
    /// See [`PortStats::tx_bad_descriptor`].
    pub tx_bad_descriptor: u64,
    /// See [`PortStats::tx_oversize`].
    pub tx_oversize: u64,
    /// See [`PortStats::tx_runt`].
    pub tx_runt: u64,
    /// See [`PortStats::tx_descriptors`].
    pub tx_descriptors: u64,
    /// See [`PortStats::tx_passes`].
    pub tx_passes: u64,
    /// See [`PortStats::tx_budget_exhausted`].
    pub tx_budget_exhausted: u64,
    /// See [`PortStats::tx_ring_broken`].
    pub tx_ring_broken: u64,
    /// See [`PortStats::rx_no_buffer`].
    pub rx_no_buffer: u64,
    /// See [`PortStats::rx_bad_descriptor`].
    pub rx_bad_descriptor: u64,
    /// See [`PortStats::rx_oversize`].
    pub rx_oversize: u64,
    /// See [`PortStats::notifications`].
    pub notifications: u64,
    /// See [`PortStats::connections`].
    pub connections: u64,
    /// See [`PortStats::mem_refused`].
    pub mem_refused: u64,
    /// See [`PortStats::memory_fault`].
    pub memory_fault: u64,
    /// See [`PortStats::control_timeouts`].
    pub control_timeouts: u64,
}

impl PortStats {
    /// Adds `n` to a counter (relaxed).
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        if n != 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> PortStatsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PortStatsSnapshot {
            from_guest_frames: r(&self.from_guest_frames),
            from_guest_bytes: r(&self.from_guest_bytes),
            to_guest_frames: r(&self.to_guest_frames),
            to_guest_bytes: r(&self.to_guest_bytes),
            tx_bad_descriptor: r(&self.tx_bad_descriptor),
            tx_oversize: r(&self.tx_oversize),
            tx_runt: r(&self.tx_runt),
            tx_descriptors: r(&self.tx_descriptors),
            tx_passes: r(&self.tx_passes),
            tx_budget_exhausted: r(&self.tx_budget_exhausted),
            tx_ring_broken: r(&self.tx_ring_broken),
            rx_no_buffer: r(&self.rx_no_buffer),
            rx_bad_descriptor: r(&self.rx_bad_descriptor),
            rx_oversize: r(&self.rx_oversize),
            notifications: r(&self.notifications),
            connections: r(&self.connections),
            mem_refused: r(&self.mem_refused),
            memory_fault: r(&self.memory_fault),
            control_timeouts: r(&self.control_timeouts),
        }
    }
}
