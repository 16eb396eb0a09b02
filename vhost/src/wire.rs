//! Field offsets of the layouts the port reads and writes, named once: the Ethernet header at
//! the start of every frame, the `virtio_net_hdr_v1` in front of it in a ring buffer (virtio
//! 1.2 §5.1.6), and the device configuration space. Everything else indexes frames, headers
//! and the config space through these.

/// The Ethernet header (IEEE 802.3), as ranges into a frame.
pub mod eth {
    use std::ops::Range;

    /// Destination MAC.
    pub const DST: Range<usize> = 0..6;
    /// Source MAC.
    pub const SRC: Range<usize> = 6..12;
    /// EtherType (or the TPID of the outermost tag).
    pub const ETHERTYPE: Range<usize> = 12..14;
    /// Length of the header without tags: also the shortest frame a port accepts.
    pub const HEADER_LEN: usize = 14;

    /// The destination MAC of a frame's first bytes (at least [`HEADER_LEN`] long).
    #[inline(always)]
    pub fn dst(frame: &[u8; super::PREFIX_LEN]) -> [u8; 6] {
        mac_at(frame, DST.start)
    }

    /// The source MAC of a frame's first bytes.
    #[inline(always)]
    pub fn src(frame: &[u8; super::PREFIX_LEN]) -> [u8; 6] {
        mac_at(frame, SRC.start)
    }

    #[inline(always)]
    fn mac_at(frame: &[u8; super::PREFIX_LEN], at: usize) -> [u8; 6] {
        let mut m = [0u8; 6];
        m.copy_from_slice(&frame[at..at + 6]);
        m
    }
}

/// The `virtio_net_hdr_v1` (12 bytes; 10 without `num_buffers` for legacy devices that did
/// not negotiate VERSION_1 or MRG_RXBUF), as offsets into the header. Little-endian fields.
pub mod net_hdr {
    use std::ops::Range;

    /// `flags` (NEEDS_CSUM, DATA_VALID).
    pub const FLAGS: usize = 0;
    /// `gso_type`.
    pub const GSO_TYPE: usize = 1;
    /// `hdr_len`.
    pub const HDR_LEN: Range<usize> = 2..4;
    /// `gso_size`.
    pub const GSO_SIZE: Range<usize> = 4..6;
    /// `csum_start`.
    pub const CSUM_START: Range<usize> = 6..8;
    /// `csum_offset`.
    pub const CSUM_OFFSET: Range<usize> = 8..10;
    /// `num_buffers`: how many RX buffers a frame took (mergeable buffers).
    pub const NUM_BUFFERS: Range<usize> = 10..12;
    /// Length of the whole header (VERSION_1 or MRG_RXBUF negotiated).
    pub const LEN: usize = 12;
    /// Length of the legacy header (neither negotiated): no `num_buffers`.
    pub const LEGACY_LEN: usize = 10;

    /// A header for a received frame: no offload flags, `num_buffers` = `buffers`.
    #[inline(always)]
    pub fn for_rx(buffers: u16) -> [u8; LEN] {
        let mut h = [0u8; LEN];
        h[NUM_BUFFERS].copy_from_slice(&buffers.to_le_bytes());
        h
    }

    /// The little-endian `u16` at `at`.
    #[inline(always)]
    pub fn u16_at(h: &[u8; LEN], at: Range<usize>) -> u16 {
        u16::from_le_bytes([h[at.start], h[at.start + 1]])
    }
}

/// The part of `virtio_net_config` (virtio 1.2 §5.1.4) a port serves, as ranges into the
/// device configuration space. Little-endian fields.
pub mod net_config {
    use std::ops::Range;

    /// `mac`.
    pub const MAC: Range<usize> = 0..6;
    /// `status` (LINK_UP).
    pub const STATUS: Range<usize> = 6..8;
    /// `max_virtqueue_pairs`.
    pub const MAX_VIRTQUEUE_PAIRS: Range<usize> = 8..10;
    /// `mtu`.
    pub const MTU: Range<usize> = 10..12;
    /// Length of the part served.
    pub const LEN: usize = 12;
}

/// How many leading frame bytes are copied beside a frame for parsing (MACs, tags, ethertype).
/// A parse buffer, not a copy of the frame.
pub const PREFIX_LEN: usize = 32;
