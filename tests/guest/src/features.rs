//! Virtio-net feature bits as `u64` masks (bit numbers come from `virtio-bindings`), and the
//! vhost-user protocol feature bits the guest may negotiate.

use virtio_bindings::virtio_config as cfg;
use virtio_bindings::virtio_net as net;
use virtio_bindings::virtio_ring as ring;

pub use virtio_bindings;

/// `VIRTIO_NET_F_CSUM`: device handles packets with partial checksum.
pub const CSUM: u64 = 1 << net::VIRTIO_NET_F_CSUM;
/// `VIRTIO_NET_F_GUEST_CSUM`: driver handles packets with partial checksum.
pub const GUEST_CSUM: u64 = 1 << net::VIRTIO_NET_F_GUEST_CSUM;
/// `VIRTIO_NET_F_MTU`: device reports a maximum MTU.
pub const MTU: u64 = 1 << net::VIRTIO_NET_F_MTU;
/// `VIRTIO_NET_F_MAC`: device has a MAC address in config space.
pub const MAC: u64 = 1 << net::VIRTIO_NET_F_MAC;
/// `VIRTIO_NET_F_GUEST_TSO4`.
pub const GUEST_TSO4: u64 = 1 << net::VIRTIO_NET_F_GUEST_TSO4;
/// `VIRTIO_NET_F_GUEST_TSO6`.
pub const GUEST_TSO6: u64 = 1 << net::VIRTIO_NET_F_GUEST_TSO6;
/// `VIRTIO_NET_F_HOST_TSO4`.
pub const HOST_TSO4: u64 = 1 << net::VIRTIO_NET_F_HOST_TSO4;
/// `VIRTIO_NET_F_HOST_TSO6`.
pub const HOST_TSO6: u64 = 1 << net::VIRTIO_NET_F_HOST_TSO6;
/// `VIRTIO_NET_F_MRG_RXBUF`: driver can merge receive buffers (num_buffers in the header).
pub const MRG_RXBUF: u64 = 1 << net::VIRTIO_NET_F_MRG_RXBUF;
/// `VIRTIO_NET_F_STATUS`: config space has a link status field.
pub const STATUS: u64 = 1 << net::VIRTIO_NET_F_STATUS;
/// `VIRTIO_NET_F_CTRL_VQ`: control virtqueue.
pub const CTRL_VQ: u64 = 1 << net::VIRTIO_NET_F_CTRL_VQ;
/// `VIRTIO_NET_F_MQ`: multiqueue.
pub const MQ: u64 = 1 << net::VIRTIO_NET_F_MQ;
/// `VIRTIO_F_NOTIFY_ON_EMPTY`.
pub const NOTIFY_ON_EMPTY: u64 = 1 << cfg::VIRTIO_F_NOTIFY_ON_EMPTY;
/// `VIRTIO_F_ANY_LAYOUT`.
pub const ANY_LAYOUT: u64 = 1 << cfg::VIRTIO_F_ANY_LAYOUT;
/// `VIRTIO_RING_F_INDIRECT_DESC`: indirect descriptor tables.
pub const INDIRECT_DESC: u64 = 1 << ring::VIRTIO_RING_F_INDIRECT_DESC;
/// `VIRTIO_RING_F_EVENT_IDX`: used_event / avail_event notification suppression.
pub const EVENT_IDX: u64 = 1 << ring::VIRTIO_RING_F_EVENT_IDX;
/// `VHOST_USER_F_PROTOCOL_FEATURES` (bit 30): vhost-user protocol features are available.
pub const PROTOCOL_FEATURES: u64 = 1 << 30;
/// `VIRTIO_F_VERSION_1`.
pub const VERSION_1: u64 = 1 << cfg::VIRTIO_F_VERSION_1;
/// `VIRTIO_F_ACCESS_PLATFORM` (IOMMU).
pub const ACCESS_PLATFORM: u64 = 1 << cfg::VIRTIO_F_ACCESS_PLATFORM;
/// `VIRTIO_F_RING_PACKED` (the guest only drives split rings: never ask for it).
pub const RING_PACKED: u64 = 1 << cfg::VIRTIO_F_RING_PACKED;
/// `VIRTIO_F_IN_ORDER`.
pub const IN_ORDER: u64 = 1 << cfg::VIRTIO_F_IN_ORDER;

/// The guest's default wish list.
pub const DEFAULT_FEATURES: u64 =
    VERSION_1 | MAC | MTU | STATUS | MRG_RXBUF | EVENT_IDX | INDIRECT_DESC | PROTOCOL_FEATURES;

/// vhost-user protocol feature `MQ`.
pub const PROTO_MQ: u64 = 0x1;
/// vhost-user protocol feature `REPLY_ACK`.
pub const PROTO_REPLY_ACK: u64 = 0x8;
/// vhost-user protocol feature `CONFIG`.
pub const PROTO_CONFIG: u64 = 0x200;
/// vhost-user protocol feature `CONFIGURE_MEM_SLOTS` (ADD_MEM_REG, REM_MEM_REG).
pub const PROTO_CONFIGURE_MEM_SLOTS: u64 = 0x8000;
/// The guest's default protocol-feature wish list.
pub const DEFAULT_PROTOCOL_FEATURES: u64 = PROTO_MQ | PROTO_REPLY_ACK | PROTO_CONFIG;

/// Size of `virtio_net_hdr_v1` (with num_buffers): used when VERSION_1 or MRG_RXBUF is negotiated.
pub const NET_HDR_V1_LEN: usize = 12;
/// Size of the legacy `virtio_net_hdr` without num_buffers.
pub const NET_HDR_LEGACY_LEN: usize = 10;

/// Header length for a negotiated feature set.
pub fn net_hdr_len(features: u64) -> usize {
    if features & (VERSION_1 | MRG_RXBUF) != 0 {
        NET_HDR_V1_LEN
    } else {
        NET_HDR_LEGACY_LEN
    }
}
