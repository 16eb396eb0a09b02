//! The outer UDP source port of a frame: a hash of its flow. RFC 7348 (section 5) recommends
//! it so that underlay routers spreading traffic over equal-cost paths by the outer 5-tuple
//! keep each inner flow on one path, in order, and still spread different flows. The flow is
//! the inner Ethernet addresses and type (and one 802.1Q tag), and for IPv4 and IPv6 the
//! addresses, the protocol and, for TCP, UDP and SCTP, the ports (not for IPv4 fragments,
//! which carry none): fields every packet of a connection has in common.

/// Smallest source port used: the dynamic range 49152..=65535, as RFC 7348 suggests.
pub(super) const PORT_MIN: u16 = 49152;

const ETH_HEADER: usize = 14;
const TPID_8021Q: u16 = 0x8100;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
/// TCP, UDP, SCTP: the first 4 bytes of their header are the ports.
const PORTED: [u8; 3] = [6, 17, 132];

/// FNV-1a, 32 bits: cheap and good enough to spread ports.
struct Fnv(u32);

impl Fnv {
    fn eat(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The source port for `frame` (an Ethernet frame), in `PORT_MIN..=65535`.
pub(super) fn source_port(frame: &[u8]) -> u16 {
    let mut h = Fnv(0x811c_9dc5);
    let mut l3 = ETH_HEADER;
    let mut ethertype = be16(frame, 12);
    if ethertype == Some(TPID_8021Q) {
        l3 += 4;
        ethertype = be16(frame, 16);
    }
    h.eat(&frame[..l3.min(frame.len())]);
    let rest = frame.get(l3..).unwrap_or_default();
    match ethertype {
        Some(ETHERTYPE_IPV4) => ipv4(rest, &mut h),
        Some(ETHERTYPE_IPV6) => ipv6(rest, &mut h),
        _ => {}
    }
    let folded = (h.0 ^ (h.0 >> 16)) as u16;
    PORT_MIN + folded % (u16::MAX - PORT_MIN + 1)
}

fn ipv4(p: &[u8], h: &mut Fnv) {
    if p.len() < 20 {
        return;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let proto = p[9];
    h.eat(&[proto]);
    h.eat(&p[12..20]);
    // More-fragments flag or a fragment offset: no ports in this packet.
    let fragment = be16(p, 6).unwrap_or(0) & 0x3fff != 0;
    if ihl >= 20 && !fragment && PORTED.contains(&proto) {
        if let Some(ports) = p.get(ihl..ihl + 4) {
            h.eat(ports);
        }
    }
}

fn ipv6(p: &[u8], h: &mut Fnv) {
    if p.len() < 40 {
        return;
    }
    let next = p[6];
    h.eat(&[p[1] & 0x0f, p[2], p[3], next]);
    h.eat(&p[8..40]);
    if PORTED.contains(&next) {
        if let Some(ports) = p.get(40..44) {
            h.eat(ports);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet + IPv4 + UDP frame from `sport` with `payload`.
    fn udp4(sport: u16, ttl: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x52, 0x54, 0, 0, 0, 2, 0x52, 0x54, 0, 0, 0, 1, 0x08, 0x00];
        let total = (20 + 8 + payload.len()) as u16;
        f.extend_from_slice(&[0x45, 0, 0, 0, 0, 1, 0x40, 0, ttl, 17, 0, 0]);
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&[0x30, 0x39, 0, 0, 0, 0]);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn one_flow_one_port() {
        let a = source_port(&udp4(1000, 64, b"first"));
        let b = source_port(&udp4(1000, 63, b"second, longer"));
        assert_eq!(a, b, "TTL, length and payload are not the flow");
        assert!(a >= PORT_MIN);
    }

    #[test]
    fn flows_spread() {
        let ports: std::collections::HashSet<u16> = (0..64)
            .map(|p| source_port(&udp4(1000 + p, 64, b"x")))
            .collect();
        assert!(ports.len() > 48, "64 flows got {} ports", ports.len());
    }

    #[test]
    fn any_bytes_give_a_port_in_range() {
        for len in 0..80 {
            let f: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
            assert!(source_port(&f) >= PORT_MIN);
            let mut v4 = f.clone();
            if v4.len() > 14 {
                v4[12..14].copy_from_slice(&[0x08, 0x00]);
                v4[14] = 0x4f;
                assert!(source_port(&v4) >= PORT_MIN);
            }
        }
    }
}
