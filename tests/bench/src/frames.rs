//! Guest settings and the frames the generators send.

use std::time::Duration;

use vswitch_testguest::features::{
    CSUM, DEFAULT_FEATURES, GUEST_CSUM, GUEST_TSO4, GUEST_TSO6, HOST_TSO4, HOST_TSO6,
    NET_HDR_V1_LEN,
};
use vswitch_testguest::{offload, GuestConfig};

/// RX buffer and TX slot size: one buffer per frame up to 1518 bytes plus the header.
pub const BUF_SIZE: u32 = 2048;

/// TCP payload per segment of the TSO frames (a 1500-byte MTU less IPv4 and TCP headers).
pub const MSS: usize = 1448;

/// What the generators send and which offloads every guest negotiates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// IPv4/UDP frames of `len` bytes with a zeroed virtio-net header, no offloads negotiated.
    Plain { len: usize },
    /// IPv4/TCP frames of `len` bytes (a multiple of [`MSS`] of payload) with a TSO header
    /// (NEEDS_CSUM, GSO_TCPV4, gso_size [`MSS`]): the sender negotiates CSUM and HOST_TSO4/6;
    /// the sinks negotiate GUEST_CSUM and GUEST_TSO4/6 and take each frame whole, or, with
    /// `segment`, negotiate no offload, so the switch segments every frame for them.
    Tso { len: usize, segment: bool },
}

impl Load {
    /// Frame length as sent.
    pub fn len(&self) -> usize {
        match *self {
            Load::Plain { len } | Load::Tso { len, .. } => len,
        }
    }

    /// A frame from `src` to `dst`.
    pub fn frame(&self, dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
        match *self {
            Load::Plain { len } => build_frame(dst, src, len),
            Load::Tso { len, .. } => {
                let payload = vec![0x5a; len.saturating_sub(offload::TCP4_HDRS)];
                offload::tcp4(dst, src, 1, &payload)
            }
        }
    }

    /// The virtio-net header of every frame (None: zeroed).
    pub fn header(&self) -> Option<[u8; 12]> {
        match self {
            Load::Plain { .. } => None,
            Load::Tso { .. } => Some(offload::tso4(MSS as u16)),
        }
    }

    /// Frames a sink receives per frame sent.
    pub fn segments(&self) -> u64 {
        match *self {
            Load::Tso { len, segment: true } => {
                len.saturating_sub(offload::TCP4_HDRS).div_ceil(MSS).max(1) as u64
            }
            _ => 1,
        }
    }

    /// Length of the frames a sink receives (the TSO frames' payload is a multiple of [`MSS`],
    /// so every segment is full).
    pub fn rx_len(&self) -> usize {
        match *self {
            Load::Plain { len } => len.max(60),
            Load::Tso { segment: true, .. } => offload::TCP4_HDRS + MSS,
            Load::Tso { len, .. } => len,
        }
    }

    /// RX buffers (mergeable, [`BUF_SIZE`] each) one received frame fills.
    pub fn rx_buffers_per_frame(&self) -> u64 {
        (NET_HDR_V1_LEN + self.rx_len())
            .div_ceil(BUF_SIZE as usize)
            .max(1) as u64
    }

    /// Features a generator (`sink` false) or a sink wants.
    pub fn features(&self, sink: bool) -> u64 {
        match (*self, sink) {
            (Load::Plain { .. }, _) | (Load::Tso { segment: true, .. }, true) => DEFAULT_FEATURES,
            (Load::Tso { .. }, false) => DEFAULT_FEATURES | CSUM | HOST_TSO4 | HOST_TSO6,
            (Load::Tso { .. }, true) => DEFAULT_FEATURES | GUEST_CSUM | GUEST_TSO4 | GUEST_TSO6,
        }
    }
}

/// The guest configuration used for every peer: a generator's TX slots hold one whole frame.
pub fn guest_config(queue_size: u16, mac: [u8; 6], load: &Load, sink: bool) -> GuestConfig {
    let q = u64::from(queue_size);
    let tx_slot = match sink {
        true => BUF_SIZE,
        false => (load.len() as u32).next_multiple_of(4096).max(BUF_SIZE),
    };
    // Rings, RX buffers, TX slots, indirect tables (256 B per descriptor), plus slack.
    let need = q * (u64::from(BUF_SIZE) + u64::from(tx_slot) + 256 + 64) + (1 << 20);
    GuestConfig {
        mem_size: need.div_ceil(4096) as usize * 4096,
        queue_size,
        rx_buffer_size: BUF_SIZE,
        tx_buffer_size: tx_slot,
        connect_timeout: Duration::from_secs(15),
        mac,
        want_features: load.features(sink),
        ..GuestConfig::default()
    }
}

/// An IPv4/UDP frame of exactly `len` bytes (no FCS) from `src` to `dst`.
pub fn build_frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    let len = len.max(60);
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip_len = (len - 14) as u16;
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 0, src[4], src[5]]);
    ip[16..20].copy_from_slice(&[10, 0, dst[4], dst[5]]);
    let sum = ip
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum::<u32>();
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let udp = &mut f[34..42];
    udp[0..2].copy_from_slice(&5000u16.to_be_bytes());
    udp[2..4].copy_from_slice(&5001u16.to_be_bytes());
    udp[4..6].copy_from_slice(&(ip_len - 20).to_be_bytes());
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::TSO_FRAME;

    #[test]
    fn tso_loads_segment_into_full_mss_frames_and_fill_mergeable_buffers() {
        let whole = Load::Tso {
            len: TSO_FRAME,
            segment: false,
        };
        let seg = Load::Tso {
            len: TSO_FRAME,
            segment: true,
        };
        assert_eq!((whole.segments(), whole.rx_len()), (1, TSO_FRAME));
        assert_eq!(whole.rx_buffers_per_frame(), 32);
        assert_eq!((seg.segments(), seg.rx_len()), (45, 1502));
        assert_eq!(seg.rx_buffers_per_frame(), 1);
        let f = whole.frame([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 0]);
        assert_eq!(f.len(), TSO_FRAME);
        assert_eq!(whole.header().map(|h| (h[0], h[1])), Some((1, 1)));
        assert_eq!(seg.features(true), DEFAULT_FEATURES);
        assert_ne!(whole.features(true) & GUEST_TSO4, 0);
        assert_ne!(whole.features(false) & HOST_TSO4, 0);
        let plain = Load::Plain { len: 64 };
        assert_eq!((plain.segments(), plain.rx_buffers_per_frame()), (1, 1));
        assert_eq!(plain.header(), None);
    }
}
