//! Guest settings and the frames the generators send.

use std::time::Duration;

use vswitch_testguest::GuestConfig;

/// RX buffer and TX slot size: one buffer per frame up to 1518 bytes plus the header.
pub const BUF_SIZE: u32 = 2048;

/// The guest configuration used for every peer.
pub fn guest_config(queue_size: u16, mac: [u8; 6]) -> GuestConfig {
    let q = u64::from(queue_size);
    // Rings, RX buffers, TX slots, indirect tables (256 B per descriptor), plus slack.
    let need = q * (2 * u64::from(BUF_SIZE) + 256 + 64) + (1 << 20);
    GuestConfig {
        mem_size: need.div_ceil(4096) as usize * 4096,
        queue_size,
        rx_buffer_size: BUF_SIZE,
        tx_buffer_size: BUF_SIZE,
        connect_timeout: Duration::from_secs(15),
        mac,
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
