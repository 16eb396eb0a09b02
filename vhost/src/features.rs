//! The virtio-net and vhost-user features this port offers, and what they imply.

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use virtio_bindings::virtio_config::{VIRTIO_F_IN_ORDER, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1};
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN,
    VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_GUEST_USO4,
    VIRTIO_NET_F_GUEST_USO6, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
    VIRTIO_NET_F_HOST_USO, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MQ, VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS,
};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

use crate::offload::Offloads;

/// Size of `virtio_net_hdr_v1` (with `num_buffers`): used whenever VERSION_1 or MRG_RXBUF is
/// negotiated.
pub const NET_HDR_V1_LEN: usize = crate::wire::net_hdr::LEN;
/// Size of the legacy `virtio_net_hdr` (no `num_buffers`).
pub const NET_HDR_LEGACY_LEN: usize = crate::wire::net_hdr::LEGACY_LEN;

/// The checksum and segmentation offloads offered, both directions (docs/offloads.md): a
/// frame's virtio-net header travels with it to the receiver, and the switch completes in
/// software whatever the receiver did not negotiate. UDP fragmentation (HOST_UFO/GUEST_UFO)
/// is not offered.
pub const OFFLOAD_FEATURES: u64 = (1u64 << VIRTIO_NET_F_CSUM)
    | (1u64 << VIRTIO_NET_F_GUEST_CSUM)
    | (1u64 << VIRTIO_NET_F_HOST_TSO4)
    | (1u64 << VIRTIO_NET_F_HOST_TSO6)
    | (1u64 << VIRTIO_NET_F_HOST_ECN)
    | (1u64 << VIRTIO_NET_F_HOST_USO)
    | (1u64 << VIRTIO_NET_F_GUEST_TSO4)
    | (1u64 << VIRTIO_NET_F_GUEST_TSO6)
    | (1u64 << VIRTIO_NET_F_GUEST_ECN)
    | (1u64 << VIRTIO_NET_F_GUEST_USO4)
    | (1u64 << VIRTIO_NET_F_GUEST_USO6);

/// VHOST_F_LOG_ALL: the frontend asks for dirty-page logging (live migration, `dirty_log`).
pub const F_LOG_ALL: u64 = 1 << 26;

/// Virtio feature bits offered to the frontend.
///
/// VIRTIO_F_IN_ORDER is offered because the datapath already keeps its promise: every ring is
/// consumed in avail order and each chain taken gets its used entry in that same order, dropped
/// chains included (see `ring.rs`, "Order"); fast drivers (DPDK's PMD) have cheaper paths for it.
///
/// VIRTIO_F_NOTIFY_ON_EMPTY is deliberately not offered: it is a legacy (pre-1.0) feature that
/// modern drivers do not negotiate, and it would defeat EVENT_IDX interrupt suppression.
pub fn offered_features(has_mac: bool, queue_pairs: u16) -> u64 {
    let mut f = (1u64 << VIRTIO_F_VERSION_1)
        | (1u64 << VIRTIO_NET_F_MTU)
        | (1u64 << VIRTIO_NET_F_STATUS)
        | (1u64 << VIRTIO_NET_F_MRG_RXBUF)
        | (1u64 << VIRTIO_RING_F_EVENT_IDX)
        | (1u64 << VIRTIO_RING_F_INDIRECT_DESC)
        | (1u64 << VIRTIO_F_RING_PACKED)
        | (1u64 << VIRTIO_F_IN_ORDER)
        | OFFLOAD_FEATURES
        | F_LOG_ALL
        | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
    if has_mac {
        f |= 1u64 << VIRTIO_NET_F_MAC;
    }
    if queue_pairs > 1 {
        // A driver uses MQ only with a control queue to choose the number of pairs (Linux
        // drops MQ without CTRL_VQ). Frontends serve the control queue themselves (QEMU
        // always; Cloud Hypervisor and DPDK virtio-user when it is offered) and then enable
        // the pairs in use with SET_VRING_ENABLE: the port never sees a control queue.
        f |= (1u64 << VIRTIO_NET_F_MQ) | (1u64 << VIRTIO_NET_F_CTRL_VQ);
    }
    f
}

/// vhost-user protocol features offered to the frontend.
pub fn offered_protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
        | VhostUserProtocolFeatures::LOG_SHMFD
        | VhostUserProtocolFeatures::RARP
}

/// What the negotiated features mean for the datapath.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Length of the virtio-net header in front of every frame, both directions.
    pub hdr_len: usize,
    /// Mergeable RX buffers: a frame may span several RX chains (`num_buffers`).
    pub mrg_rxbuf: bool,
    /// EVENT_IDX notification suppression.
    pub event_idx: bool,
    /// Packed virtqueues (`ring::PackedRing`) instead of split ones.
    pub packed: bool,
    /// The offloads the guest may ask for in the headers it transmits.
    pub tx_offloads: Offloads,
    /// The offloads the guest may be handed in the headers it receives.
    pub rx_offloads: Offloads,
    /// IN_ORDER: buffers are returned in the order they were made available.
    pub in_order: bool,
}

impl Negotiated {
    /// Interprets an acked feature set.
    pub fn from_features(acked: u64) -> Self {
        let has = |bit: u32| acked & (1u64 << bit) != 0;
        let mrg_rxbuf = has(VIRTIO_NET_F_MRG_RXBUF);
        let hdr_len = if has(VIRTIO_F_VERSION_1) || mrg_rxbuf {
            NET_HDR_V1_LEN
        } else {
            NET_HDR_LEGACY_LEN
        };
        Negotiated {
            hdr_len,
            mrg_rxbuf,
            event_idx: has(VIRTIO_RING_F_EVENT_IDX),
            packed: has(VIRTIO_F_RING_PACKED),
            tx_offloads: Offloads::host(acked),
            rx_offloads: Offloads::guest(acked),
            in_order: has(VIRTIO_F_IN_ORDER),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_length_follows_features() {
        assert_eq!(Negotiated::from_features(0).hdr_len, NET_HDR_LEGACY_LEN);
        let v1 = 1u64 << VIRTIO_F_VERSION_1;
        assert_eq!(Negotiated::from_features(v1).hdr_len, NET_HDR_V1_LEN);
        let mrg = 1u64 << VIRTIO_NET_F_MRG_RXBUF;
        let n = Negotiated::from_features(mrg);
        assert!(n.mrg_rxbuf);
        assert_eq!(n.hdr_len, NET_HDR_V1_LEN);
    }

    #[test]
    fn offloads_offered_and_read_per_direction() {
        let f = offered_features(false, 1);
        assert_eq!(f & OFFLOAD_FEATURES, OFFLOAD_FEATURES);
        let n = Negotiated::from_features(OFFLOAD_FEATURES);
        assert!(n.tx_offloads.csum && n.tx_offloads.tso4 && n.tx_offloads.uso6);
        assert!(n.rx_offloads.csum && n.rx_offloads.tso6 && n.rx_offloads.ecn);
        let host_only = Negotiated::from_features(1 << VIRTIO_NET_F_HOST_TSO4);
        assert!(host_only.tx_offloads.tso4 && !host_only.rx_offloads.tso4);
    }

    #[test]
    fn in_order_is_offered_and_read_back() {
        let f = offered_features(false, 1);
        assert_ne!(f & (1 << VIRTIO_F_IN_ORDER), 0);
        assert!(Negotiated::from_features(f).in_order);
        assert!(!Negotiated::from_features(f & !(1 << VIRTIO_F_IN_ORDER)).in_order);
    }

    #[test]
    fn mac_and_mq_only_when_meaningful() {
        let f = offered_features(false, 1);
        assert_eq!(f & (1 << VIRTIO_NET_F_MAC), 0);
        assert_eq!(f & (1 << VIRTIO_NET_F_MQ), 0);
        let f = offered_features(true, 2);
        assert_ne!(f & (1 << VIRTIO_NET_F_MAC), 0);
        assert_ne!(f & (1 << VIRTIO_NET_F_MQ), 0);
        assert_ne!(f & (1 << VIRTIO_NET_F_CTRL_VQ), 0);
        assert_eq!(offered_features(true, 1) & (1 << VIRTIO_NET_F_CTRL_VQ), 0);
    }
}
