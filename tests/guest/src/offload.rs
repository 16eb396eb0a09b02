//! Frames and `virtio_net_hdr`s a guest with offloads hands to its device: IPv4 TCP/UDP frames
//! whose L4 checksum is left partial (the pseudo-header sum, as Linux leaves it for a device
//! with CSUM/TSO), the header asking for the checksum or for segmentation, and an RFC 1071 sum
//! to check what comes back (independent of the switch's code). Used by the switch's offload
//! tests and by the benchmark's TSO scenarios.

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`.
pub const NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_UDP_L4` (USO).
pub const GSO_UDP_L4: u8 = 5;
/// Ethernet + IPv4 (no options) + TCP (no options): the headers of a [`tcp4`] frame.
pub const TCP4_HDRS: usize = 54;
/// Where the IPv4 payload (the L4 header) of these frames starts.
pub const L4_START: u16 = 34;

/// A plain RFC 1071 sum over the pieces, folded (not complemented).
pub fn sum(parts: &[&[u8]]) -> u16 {
    let mut s: u32 = 0;
    let mut odd: Option<u8> = None;
    for p in parts {
        for &b in p.iter() {
            match odd.take() {
                None => odd = Some(b),
                Some(h) => {
                    s += u32::from(h) << 8 | u32::from(b);
                    s = (s & 0xffff) + (s >> 16);
                }
            }
        }
    }
    if let Some(h) = odd {
        s += u32::from(h) << 8;
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// A `virtio_net_hdr_v1` (num_buffers 0): flags, gso_type, gso_size, csum_start, csum_offset,
/// with `hdr_len` [`TCP4_HDRS`].
pub fn hdr(flags: u8, gso_type: u8, gso_size: u16, csum_start: u16, csum_offset: u16) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0] = flags;
    h[1] = gso_type;
    h[2..4].copy_from_slice(&(TCP4_HDRS as u16).to_le_bytes());
    h[4..6].copy_from_slice(&gso_size.to_le_bytes());
    h[6..8].copy_from_slice(&csum_start.to_le_bytes());
    h[8..10].copy_from_slice(&csum_offset.to_le_bytes());
    h
}

/// The TSO header of a [`tcp4`] frame cut into segments of `mss` payload bytes.
pub fn tso4(mss: u16) -> [u8; 12] {
    hdr(NEEDS_CSUM, GSO_TCPV4, mss, L4_START, 16)
}

/// IPv4 header (id 0x1234 or `id`, DF, TTL 64, 10.0.0.1 → 10.0.0.2) with its checksum.
fn ipv4(f: &mut Vec<u8>, l4_len: usize, id: u16, proto: u8) {
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&((20 + l4_len) as u16).to_be_bytes());
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(&[0x40, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    let c = !sum(&[&f[14..34]]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
}

fn eth(dst: [u8; 6], src: [u8; 6], cap: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(cap);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f
}

/// An IPv4/TCP frame from `src` to `dst` with `payload` (ACK|PSH, sequence `seq`), the TCP
/// checksum left partial (the pseudo-header sum), as Linux hands it to a device with CSUM/TSO.
pub fn tcp4(dst: [u8; 6], src: [u8; 6], seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = eth(dst, src, TCP4_HDRS + payload.len());
    ipv4(&mut f, 20 + payload.len(), 0x1234, 6);
    f.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51]);
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 1, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend_from_slice(payload);
    let l4_len = ((20 + payload.len()) as u16).to_be_bytes();
    let pseudo = sum(&[&f[26..34], &[0, 6], &l4_len]);
    f[50..52].copy_from_slice(&pseudo.to_be_bytes());
    f
}

/// An IPv4/UDP frame (ports 5000 → 5001) with `payload`, the UDP checksum left partial.
pub fn udp4(dst: [u8; 6], src: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let mut f = eth(dst, src, 42 + payload.len());
    ipv4(&mut f, 8 + payload.len(), 7, 17);
    let l4_len = ((8 + payload.len()) as u16).to_be_bytes();
    f.extend_from_slice(&[0x13, 0x88, 0x13, 0x89]);
    f.extend_from_slice(&l4_len);
    let pseudo = sum(&[&f[26..34], &[0, 17], &l4_len]);
    f.extend_from_slice(&pseudo.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// True when an IPv4/TCP frame's IP and TCP checksums verify.
pub fn tcp4_verifies(f: &[u8]) -> bool {
    let Some(l4) = f.get(34..) else {
        return false;
    };
    let len = (l4.len() as u16).to_be_bytes();
    sum(&[&f[14..34]]) == 0xffff && sum(&[&f[26..34], &[0, 6], &len, l4]) == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completed_tcp_checksum_verifies_and_a_partial_one_does_not() {
        let mut f = tcp4([2; 6], [4; 6], 7, b"hello, world");
        assert!(!tcp4_verifies(&f), "partial checksum");
        let c = !sum(&[&f[26..34], &[0, 6], &[0, 32], &f[34..50], &f[52..]]);
        f[50..52].copy_from_slice(&c.to_be_bytes());
        assert!(tcp4_verifies(&f));
        assert_eq!(sum(&[&udp4([2; 6], [4; 6], b"x")[14..34]]), 0xffff);
    }
}
