//! Checksum and segmentation offload in software: what the switch does with a frame whose
//! virtio-net header asks for work (a checksum to complete, a TCP or UDP segment to cut into
//! MTU-sized frames) when the destination cannot take that work itself.
//!
//! Pure and allocation-free, like a wire codec: byte slices and a [`NetHdr`] in, typed errors
//! or bytes written into buffers the caller owns out. No guest memory, no rings, no threads.
//! The TX drain ([`crate::tx`]) validates every header here once per frame; the switch's
//! delivery completes or segments here for a destination that did not negotiate the offload.
//!
//! - [`validate`] checks a header against its frame (`parse.rs`): what it may and may not say
//!   is documented there and in docs/offloads.md;
//! - [`complete_csum`] finishes a partial checksum in place (`csum.rs`);
//! - [`GsoLayout::write_segment`] writes one segment of a GSO frame (`segment.rs`);
//! - [`Offloads`] is what one side of a port negotiated, and whether a header needs more.

mod csum;
mod parse;
mod segment;
#[cfg(test)]
mod tests;

pub use csum::{complete_csum, internet_checksum};
pub use parse::{validate, GsoLayout, L4Proto, Offload, OffloadError, MAX_HEADERS};

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_GUEST_USO4, VIRTIO_NET_F_GUEST_USO6,
    VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_HOST_USO,
    VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_GSO_UDP_L4,
};

use crate::frame::NetHdr;

/// `flags`: the checksum from `csum_start` to the end is partial (the pseudo-header sum sits
/// at `csum_start + csum_offset`).
pub const F_NEEDS_CSUM: u8 = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
/// `flags`: the checksum was verified (meaningful only towards a guest; ignored on TX).
pub const F_DATA_VALID: u8 = VIRTIO_NET_HDR_F_DATA_VALID as u8;
/// `gso_type`: not a GSO frame.
pub const GSO_NONE: u8 = VIRTIO_NET_HDR_GSO_NONE as u8;
/// `gso_type`: TCP over IPv4.
pub const GSO_TCPV4: u8 = VIRTIO_NET_HDR_GSO_TCPV4 as u8;
/// `gso_type`: TCP over IPv6.
pub const GSO_TCPV6: u8 = VIRTIO_NET_HDR_GSO_TCPV6 as u8;
/// `gso_type`: UDP segmentation (USO), either IP version.
pub const GSO_UDP_L4: u8 = VIRTIO_NET_HDR_GSO_UDP_L4 as u8;
/// `gso_type` bit: the TCP segment carries CWR (ECN), kept on the first segment only.
pub const GSO_ECN: u8 = VIRTIO_NET_HDR_GSO_ECN as u8;

/// Longest GSO frame: the largest IP packet (65535 bytes) behind an Ethernet header and one
/// VLAN tag. What the TX drain accepts from a sender that negotiated segmentation offload.
pub const MAX_GSO_FRAME: usize = 65535 + 14 + 4;

/// Most frames one GSO frame may be cut into. A header asking for more (a tiny `gso_size`)
/// is refused: software segmentation must stay bounded per frame. Linux never goes below a
/// 48-byte MSS (1366 segments of a 64 KiB frame).
pub const MAX_GSO_SEGMENTS: usize = 2048;

/// The offloads one direction of a port negotiated: what the guest may send (the device's
/// CSUM / HOST_* features) or what it may be handed (its GUEST_* features).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offloads {
    /// Partial checksums (`NEEDS_CSUM`).
    pub csum: bool,
    /// TCP segmentation over IPv4.
    pub tso4: bool,
    /// TCP segmentation over IPv6.
    pub tso6: bool,
    /// TCP segmentation with CWR (`GSO_ECN`).
    pub ecn: bool,
    /// UDP segmentation over IPv4.
    pub uso4: bool,
    /// UDP segmentation over IPv6.
    pub uso6: bool,
}

impl Offloads {
    /// What a guest may send, from the acked features (CSUM, HOST_TSO4/6, HOST_ECN, HOST_USO).
    pub fn host(acked: u64) -> Self {
        let has = |bit: u32| acked & (1u64 << bit) != 0;
        Offloads {
            csum: has(VIRTIO_NET_F_CSUM),
            tso4: has(VIRTIO_NET_F_HOST_TSO4),
            tso6: has(VIRTIO_NET_F_HOST_TSO6),
            ecn: has(VIRTIO_NET_F_HOST_ECN),
            uso4: has(VIRTIO_NET_F_HOST_USO),
            uso6: has(VIRTIO_NET_F_HOST_USO),
        }
    }

    /// What a guest may be handed, from the acked features (GUEST_CSUM, GUEST_TSO4/6,
    /// GUEST_ECN, GUEST_USO4/6).
    pub fn guest(acked: u64) -> Self {
        let has = |bit: u32| acked & (1u64 << bit) != 0;
        Offloads {
            csum: has(VIRTIO_NET_F_GUEST_CSUM),
            tso4: has(VIRTIO_NET_F_GUEST_TSO4),
            tso6: has(VIRTIO_NET_F_GUEST_TSO6),
            ecn: has(VIRTIO_NET_F_GUEST_ECN),
            uso4: has(VIRTIO_NET_F_GUEST_USO4),
            uso6: has(VIRTIO_NET_F_GUEST_USO6),
        }
    }

    /// True when segmentation of any kind was negotiated: frames up to [`MAX_GSO_FRAME`].
    pub fn any_gso(&self) -> bool {
        self.tso4 || self.tso6 || self.uso4 || self.uso6
    }

    /// True when `hdr` asks for nothing beyond these offloads. For a sender: the header is
    /// allowed at all; for a receiver: the frame can be handed over as it is. (A UDP_L4 frame
    /// needs both USO directions: the header does not say the IP version.) A header that asks
    /// for nothing is decided inline, anything else out of line (the per-frame cost of the
    /// common case is two byte tests).
    #[inline(always)]
    pub fn covers(&self, hdr: &NetHdr) -> bool {
        !needs_work(hdr) || self.covers_work(hdr)
    }

    #[inline(never)]
    fn covers_work(&self, hdr: &NetHdr) -> bool {
        if hdr.flags & F_NEEDS_CSUM != 0 && !self.csum {
            return false;
        }
        if hdr.gso_type & GSO_ECN != 0 && !self.ecn {
            return false;
        }
        match hdr.gso_type & !GSO_ECN {
            GSO_NONE => true,
            GSO_TCPV4 => self.tso4,
            GSO_TCPV6 => self.tso6,
            GSO_UDP_L4 => self.uso4 && self.uso6,
            _ => false,
        }
    }
}

/// True when the header asks for any work (a checksum or segmentation).
#[inline(always)]
pub fn needs_work(hdr: &NetHdr) -> bool {
    hdr.flags & F_NEEDS_CSUM != 0 || hdr.gso_type != GSO_NONE
}
