//! Switch-level counters: per port and per channel, drops by reason.
//!
//! The datapath accumulates counts in locals for a whole batch and adds them here once per
//! batch, so the cost is a few relaxed atomic adds per batch, none per packet.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Why the switch dropped a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// The delivery check refused it: the destination's channel does not admit the frame's.
    ChannelMismatch,
    /// The destination had no (or not enough) RX buffers, or was not running.
    NoRxBuffer,
    /// A malformed descriptor (the sender's TX chain or the receiver's RX chain).
    BadDescriptor,
    /// Too long for the port or for the receiver's buffers.
    Oversize,
    /// The sender (or the destination) has no channel in the registry.
    UnknownChannel,
    /// The sender's port is at its MAC limit and this source MAC is new.
    MacLimit,
    /// The source MAC is not the port's configured MAC, or is a group address.
    SourceSpoof,
}

/// Number of [`DropReason`]s.
pub const NUM_REASONS: usize = 7;

impl DropReason {
    /// All reasons, in counter order.
    pub const ALL: [DropReason; NUM_REASONS] = [
        DropReason::ChannelMismatch,
        DropReason::NoRxBuffer,
        DropReason::BadDescriptor,
        DropReason::Oversize,
        DropReason::UnknownChannel,
        DropReason::MacLimit,
        DropReason::SourceSpoof,
    ];

    /// The counter name (as in DESIGN.md and the metrics).
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::ChannelMismatch => "channel_mismatch",
            DropReason::NoRxBuffer => "no_rx_buffer",
            DropReason::BadDescriptor => "bad_descriptor",
            DropReason::Oversize => "oversize",
            DropReason::UnknownChannel => "unknown_channel",
            DropReason::MacLimit => "mac_limit",
            DropReason::SourceSpoof => "source_spoof",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// Drop counts by reason, accumulated locally during a batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Drops {
    /// See [`DropReason::ChannelMismatch`].
    pub channel_mismatch: u64,
    /// See [`DropReason::NoRxBuffer`].
    pub no_rx_buffer: u64,
    /// See [`DropReason::BadDescriptor`].
    pub bad_descriptor: u64,
    /// See [`DropReason::Oversize`].
    pub oversize: u64,
    /// See [`DropReason::UnknownChannel`].
    pub unknown_channel: u64,
    /// See [`DropReason::MacLimit`].
    pub mac_limit: u64,
    /// See [`DropReason::SourceSpoof`].
    pub source_spoof: u64,
}

impl Drops {
    /// Adds `n` drops of `reason`.
    #[inline]
    pub fn add(&mut self, reason: DropReason, n: u64) {
        match reason {
            DropReason::ChannelMismatch => self.channel_mismatch += n,
            DropReason::NoRxBuffer => self.no_rx_buffer += n,
            DropReason::BadDescriptor => self.bad_descriptor += n,
            DropReason::Oversize => self.oversize += n,
            DropReason::UnknownChannel => self.unknown_channel += n,
            DropReason::MacLimit => self.mac_limit += n,
            DropReason::SourceSpoof => self.source_spoof += n,
        }
    }

    /// The count for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::ChannelMismatch => self.channel_mismatch,
            DropReason::NoRxBuffer => self.no_rx_buffer,
            DropReason::BadDescriptor => self.bad_descriptor,
            DropReason::Oversize => self.oversize,
            DropReason::UnknownChannel => self.unknown_channel,
            DropReason::MacLimit => self.mac_limit,
            DropReason::SourceSpoof => self.source_spoof,
        }
    }

    /// Total of all reasons.
    pub fn total(&self) -> u64 {
        DropReason::ALL.iter().map(|r| self.get(*r)).sum()
    }

    /// True when nothing was dropped.
    pub fn is_zero(&self) -> bool {
        self.total() == 0
    }
}

/// Live counters (atomics), added to once per batch.
#[derive(Debug, Default)]
pub struct Counters {
    in_frames: AtomicU64,
    in_bytes: AtomicU64,
    out_frames: AtomicU64,
    out_bytes: AtomicU64,
    flooded: AtomicU64,
    drops: [AtomicU64; NUM_REASONS],
}

/// A copy of [`Counters`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CountersSnapshot {
    /// Frames that entered the switch (from a guest, after ingress checks).
    pub in_frames: u64,
    /// Their bytes.
    pub in_bytes: u64,
    /// Frames delivered (written into a guest's RX ring).
    pub out_frames: u64,
    /// Their bytes.
    pub out_bytes: u64,
    /// Copies made by flooding (broadcast, multicast, unknown unicast).
    pub flooded: u64,
    /// Drops by reason.
    pub drops: Drops,
}

impl Counters {
    /// Adds a batch's worth.
    pub fn add_in(&self, frames: u64, bytes: u64) {
        add(&self.in_frames, frames);
        add(&self.in_bytes, bytes);
    }

    /// Adds a batch's deliveries.
    pub fn add_out(&self, frames: u64, bytes: u64) {
        add(&self.out_frames, frames);
        add(&self.out_bytes, bytes);
    }

    /// Adds flood copies.
    pub fn add_flooded(&self, n: u64) {
        add(&self.flooded, n);
    }

    /// Adds drops.
    pub fn add_drops(&self, d: &Drops) {
        for r in DropReason::ALL {
            add(&self.drops[r.index()], d.get(r));
        }
    }

    /// Adds `n` drops of one reason.
    pub fn add_drop(&self, reason: DropReason, n: u64) {
        add(&self.drops[reason.index()], n);
    }

    /// Reads everything.
    pub fn snapshot(&self) -> CountersSnapshot {
        let mut drops = Drops::default();
        for r in DropReason::ALL {
            drops.add(r, self.drops[r.index()].load(Ordering::Relaxed));
        }
        CountersSnapshot {
            in_frames: self.in_frames.load(Ordering::Relaxed),
            in_bytes: self.in_bytes.load(Ordering::Relaxed),
            out_frames: self.out_frames.load(Ordering::Relaxed),
            out_bytes: self.out_bytes.load(Ordering::Relaxed),
            flooded: self.flooded.load(Ordering::Relaxed),
            drops,
        }
    }
}

#[inline]
fn add(c: &AtomicU64, n: u64) {
    if n != 0 {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_round_trip_through_counters() {
        let c = Counters::default();
        let mut d = Drops::default();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            d.add(*r, i as u64 + 1);
        }
        c.add_drops(&d);
        c.add_drop(DropReason::SourceSpoof, 10);
        let s = c.snapshot();
        assert_eq!(s.drops.channel_mismatch, 1);
        assert_eq!(s.drops.source_spoof, 17);
        assert_eq!(s.drops.total(), 28 + 10);
    }
}
