//! The virtio-net device configuration space (`struct virtio_net_config`).

use virtio_bindings::virtio_net::VIRTIO_NET_S_LINK_UP;

use crate::wire::net_config;

/// Size of the part of `virtio_net_config` this port serves: mac(6), status(2),
/// max_virtqueue_pairs(2), mtu(2).
pub const CONFIG_SPACE_LEN: usize = net_config::LEN;

/// Serialises the config space (little-endian, as virtio 1.0 requires).
pub fn config_space(mac: Option<[u8; 6]>, queue_pairs: u16, mtu: u16) -> [u8; CONFIG_SPACE_LEN] {
    let mut b = [0u8; CONFIG_SPACE_LEN];
    b[net_config::MAC].copy_from_slice(&mac.unwrap_or([0; 6]));
    b[net_config::STATUS].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
    b[net_config::MAX_VIRTQUEUE_PAIRS].copy_from_slice(&queue_pairs.to_le_bytes());
    b[net_config::MTU].copy_from_slice(&mtu.to_le_bytes());
    b
}

/// Returns the `[offset, offset + size)` window of the config space; bytes beyond the end read
/// as zero, an absurd window reads as empty (the frontend controls both numbers).
pub fn read_window(space: &[u8], offset: u32, size: u32) -> Vec<u8> {
    let size = size.min(256) as usize;
    let mut out = vec![0u8; size];
    let start = offset as usize;
    if start < space.len() {
        let n = (space.len() - start).min(size);
        out[..n].copy_from_slice(&space[start..start + n]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let b = config_space(Some([0x52, 0x54, 0, 1, 2, 3]), 1, 1500);
        assert_eq!(&b[0..6], &[0x52, 0x54, 0, 1, 2, 3]);
        assert_eq!(u16::from_le_bytes([b[6], b[7]]), 1);
        assert_eq!(u16::from_le_bytes([b[8], b[9]]), 1);
        assert_eq!(u16::from_le_bytes([b[10], b[11]]), 1500);
    }

    #[test]
    fn window_is_bounded() {
        let b = config_space(None, 1, 1500);
        assert_eq!(read_window(&b, 6, 2), vec![1, 0]);
        assert_eq!(read_window(&b, 10, 8), vec![0xdc, 0x05, 0, 0, 0, 0, 0, 0]);
        assert_eq!(read_window(&b, u32::MAX, 4), vec![0; 4]);
        assert_eq!(read_window(&b, 0, u32::MAX).len(), 256);
    }
}
