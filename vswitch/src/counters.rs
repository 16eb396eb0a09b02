//! Switch-level counters: per port and per channel, drops by reason.
//!
//! The datapath accumulates counts in locals for a whole batch and adds them here once per
//! batch, so the cost is a few relaxed atomic adds per batch, none per packet.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Defines [`DropReason`] and [`Drops`] from one list: each reason's doc, its variant and
/// its counter name (the [`Drops`] field, the JSON key, the metrics' `reason` label).
macro_rules! drop_reasons {
    ($($(#[doc = $doc:literal])+ $variant:ident => $name:ident,)+) => {
        /// Why the switch dropped a frame.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum DropReason {
            $($(#[doc = $doc])+ $variant,)+
        }

        /// Number of [`DropReason`]s.
        pub const NUM_REASONS: usize = [$(stringify!($variant)),+].len();

        impl DropReason {
            /// All reasons, in counter order.
            pub const ALL: [DropReason; NUM_REASONS] = [$(DropReason::$variant),+];

            /// The counter name (as in docs/architecture.md and the metrics).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(DropReason::$variant => stringify!($name),)+
                }
            }
        }

        /// Drop counts by reason, accumulated locally during a batch.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
        pub struct Drops {
            $(
                #[doc = concat!("See [`DropReason::", stringify!($variant), "`].")]
                pub $name: u64,
            )+
        }

        impl Drops {
            /// Adds `n` drops of `reason`.
            #[inline]
            pub fn add(&mut self, reason: DropReason, n: u64) {
                match reason {
                    $(DropReason::$variant => self.$name += n,)+
                }
            }

            /// The count for `reason`.
            pub fn get(&self, reason: DropReason) -> u64 {
                match reason {
                    $(DropReason::$variant => self.$name,)+
                }
            }
        }
    };
}

drop_reasons! {
    /// The delivery check refused it: the destination's channel does not admit the frame's.
    ChannelMismatch => channel_mismatch,
    /// The destination had no (or not enough) RX buffers, or was not running.
    NoRxBuffer => no_rx_buffer,
    /// A malformed descriptor (the sender's TX chain or the receiver's RX chain).
    BadDescriptor => bad_descriptor,
    /// Too long for the port or for the receiver's buffers.
    Oversize => oversize,
    /// The sender (or the destination) has no channel in the registry.
    UnknownChannel => unknown_channel,
    /// The sender's port is at its MAC limit and this source MAC is new.
    MacLimit => mac_limit,
    /// The source MAC is not the port's configured MAC, or is a group address.
    SourceSpoof => source_spoof,
    /// A frame from the wire whose encapsulation does not parse (a truncated or invalid
    /// 802.1ad or VXLAN header): dropped by the uplink before switching.
    Malformed => malformed,
    /// Over the sending VM's rate limit (`rate=`, `pps=`): dropped on ingress, like OVS's
    /// ingress policing.
    Policed => policed,
    /// A virtio-net header that asks for an offload its sender did not negotiate, or lies
    /// about its frame (checksum field or headers outside it, a gso_size or gso_type that
    /// does not fit the packet): see docs/offloads.md.
    BadOffload => bad_offload,
}

impl DropReason {
    /// The reason's position in [`DropReason::ALL`] and in the counter arrays.
    const fn index(self) -> usize {
        self as usize
    }
}

/// Serialized as its counter name.
impl Serialize for DropReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Drops {
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
        let n = NUM_REASONS as u64;
        assert_eq!(s.drops.total(), n * (n + 1) / 2 + 10);
    }

    #[test]
    fn each_reason_counts_under_its_own_name() {
        let mut d = Drops::default();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            d.add(*r, 1 << i);
        }
        let json = serde_json::to_value(d).expect("drops serialize");
        assert_eq!(json.as_object().map(|o| o.len()), Some(NUM_REASONS));
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(d.get(*r), 1 << i);
            assert_eq!(json[r.as_str()], 1 << i, "{}", r.as_str());
            assert_eq!(serde_json::to_value(r).ok(), Some(r.as_str().into()));
        }
    }
}
