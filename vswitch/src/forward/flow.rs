//! Which RX queue of a destination with several queue pairs a frame goes to: a hash of its
//! flow (MAC addresses; IPv4/IPv6 addresses and protocol; TCP/UDP/SCTP ports of an
//! unfragmented packet), over the queues the guest has enabled, so that one flow always takes
//! the same queue and keeps its order (docs/multiqueue.md). The frame is the sender's: any
//! bytes at all only choose among the destination's own queues.

use vswitch_vhost::FrameRef;

/// Bytes looked at: Ethernet, two VLAN tags, the longest IPv4 header (or IPv6's fixed one)
/// and the ports.
const HEAD: usize = 14 + 8 + 60 + 4;

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_VLAN: u16 = 0x8100;
const ETH_QINQ: u16 = 0x88a8;
const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;

/// The flow hash of `f` (no allocation: one copy of its first [`HEAD`] bytes on the stack).
pub(super) fn flow_hash(f: &FrameRef<'_>) -> u32 {
    let mut b = [0u8; HEAD];
    let n = f.read_at(0, &mut b);
    hash_bytes(&b[..n])
}

/// The flow hash of a frame's leading bytes.
pub(super) fn hash_bytes(b: &[u8]) -> u32 {
    let mut h = Mixer::default();
    let Some(macs) = b.get(..12) else {
        return h.finish();
    };
    h.add(macs);
    let mut at = 12;
    let mut ethertype = u16_at(b, at);
    // A guest's own VLAN tags are payload to the switch, but they are part of its flow.
    for _ in 0..2 {
        if ethertype != Some(ETH_VLAN) && ethertype != Some(ETH_QINQ) {
            break;
        }
        at += 4;
        ethertype = u16_at(b, at);
    }
    let l3 = at + 2;
    let (proto, l4) = match ethertype {
        Some(ETH_IPV4) => {
            let Some(ip) = b.get(l3..l3 + 20) else {
                return h.finish();
            };
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
            h.add(&ip[12..20]);
            h.add(&[ip[9]]);
            (ip[9], (!fragment && ihl >= 20).then_some(l3 + ihl))
        }
        Some(ETH_IPV6) => {
            let Some(ip) = b.get(l3..l3 + 40) else {
                return h.finish();
            };
            h.add(&ip[8..40]);
            h.add(&[ip[6]]);
            (ip[6], Some(l3 + 40))
        }
        _ => return h.finish(),
    };
    if let (TCP | UDP | SCTP, Some(l4)) = (proto, l4) {
        if let Some(ports) = b.get(l4..l4 + 4) {
            h.add(ports);
        }
    }
    h.finish()
}

/// The `k`-th queue of `mask` (bit q: queue q usable) for a hash: `hash` spread evenly over
/// the set bits. `None` when no queue is usable.
#[inline]
pub(super) fn pick(mask: u32, hash: u32) -> Option<usize> {
    let n = mask.count_ones();
    if n == 0 {
        return None;
    }
    let mut k = ((u64::from(hash) * u64::from(n)) >> 32) as u32;
    let mut m = mask;
    while k > 0 {
        m &= m - 1;
        k -= 1;
    }
    Some(m.trailing_zeros() as usize)
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).map(|v| u16::from_be_bytes([v[0], v[1]]))
}

/// A small multiplicative hash (FxHash-like word mixing, murmur3's finaliser).
#[derive(Default)]
struct Mixer(u64);

impl Mixer {
    fn add(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
    }

    fn finish(&self) -> u32 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^= x >> 33;
        x as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp4(sport: u16, dport: u16, frag: u16) -> Vec<u8> {
        let mut f = vec![0u8; 42];
        f[..6].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&ETH_IPV4.to_be_bytes());
        f[14] = 0x45;
        f[20..22].copy_from_slice(&frag.to_be_bytes());
        f[23] = UDP;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f
    }

    #[test]
    fn one_flow_one_hash_and_ports_spread_flows() {
        let a = hash_bytes(&udp4(1000, 5001, 0));
        assert_eq!(a, hash_bytes(&udp4(1000, 5001, 0)));
        // Flows differing only by port spread over both queues of two.
        let queues: std::collections::HashSet<usize> = (0..32u16)
            .filter_map(|p| pick(0b11, hash_bytes(&udp4(1000 + p, 5001, 0))))
            .collect();
        assert_eq!(queues.len(), 2);
        // A fragment's ports are not looked at (later fragments have none): same flow as
        // every other fragment of the packet.
        assert_eq!(
            hash_bytes(&udp4(1, 2, 0x2000)),
            hash_bytes(&udp4(3, 4, 0x2000))
        );
    }

    #[test]
    fn short_and_odd_frames_hash_without_panicking() {
        for len in 0..60 {
            let mut f = udp4(1, 2, 0);
            f.resize(len, 0xff);
            hash_bytes(&f);
        }
        let mut v6 = vec![0u8; 80];
        v6[12..14].copy_from_slice(&ETH_IPV6.to_be_bytes());
        v6[20] = TCP;
        hash_bytes(&v6);
        let mut tagged = udp4(1, 2, 0);
        tagged.splice(12..12, [0x81, 0x00, 0, 5]);
        assert_ne!(hash_bytes(&tagged), 0);
    }

    #[test]
    fn pick_uses_only_enabled_queues() {
        assert_eq!(pick(0, 7), None);
        for h in [0, 1, u32::MAX / 2, u32::MAX] {
            assert_eq!(pick(0b100, h), Some(2));
            let q = pick(0b1010, h).expect("an enabled queue");
            assert!(q == 1 || q == 3);
        }
        assert_eq!(pick(0b1010, 0), Some(1));
        assert_eq!(pick(0b1010, u32::MAX), Some(3));
    }
}
