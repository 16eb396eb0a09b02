//! Property tests of [`super`]: segmentation reassembles to the original payload, every
//! produced frame's checksums verify (with the plain checksum below, not the one under
//! test), and no header or frame bytes make validation or segmentation panic.

use proptest::prelude::*;

use super::*;
use crate::frame::NetHdr;

/// A straightforward RFC 1071 sum, independent of `csum.rs`: 16-bit words, folded at the end.
fn ref_sum(parts: &[&[u8]]) -> u16 {
    let mut bytes = Vec::new();
    for p in parts {
        bytes.extend_from_slice(p);
    }
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    let mut s: u32 = 0;
    for w in bytes.chunks(2) {
        s += u32::from(w[0]) << 8 | u32::from(w[1]);
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// True when a frame's IP header checksum (IPv4) and TCP/UDP checksum verify.
fn checksums_verify(f: &[u8], l3: usize, v6: bool) -> bool {
    if v6 {
        let plen = usize::from(u16::from_be_bytes([f[l3 + 4], f[l3 + 5]]));
        let l4 = &f[l3 + 40..];
        if plen != l4.len() {
            return false;
        }
        let pseudo = [
            &f[l3 + 8..l3 + 40],
            &(plen as u32).to_be_bytes()[..],
            &[0, 0, 0, f[l3 + 6]][..],
        ];
        ref_sum(&[pseudo[0], pseudo[1], pseudo[2], l4]) == 0xffff
    } else {
        let ihl = usize::from(f[l3] & 0xf) * 4;
        if ref_sum(&[&f[l3..l3 + ihl]]) != 0xffff {
            return false;
        }
        let tot = usize::from(u16::from_be_bytes([f[l3 + 2], f[l3 + 3]]));
        if tot != f.len() - l3 {
            return false;
        }
        let l4 = &f[l3 + ihl..];
        let len = (l4.len() as u16).to_be_bytes();
        let pseudo = [0, f[l3 + 9], len[0], len[1]];
        ref_sum(&[&f[l3 + 12..l3 + 20], &pseudo, l4]) == 0xffff
    }
}

#[derive(Debug, Clone)]
struct Spec {
    v6: bool,
    tcp: bool,
    vlan: bool,
    ip_opts: usize,
    tcp_opts: usize,
    payload: Vec<u8>,
    gso_size: u16,
    seq: u32,
    id: u16,
    flags: u8,
}

/// Builds a GSO frame as a Linux guest sends it: the pseudo-header sum in the L4 checksum
/// field, NEEDS_CSUM, lengths of the whole frame. Returns (frame, header, l3).
fn build(s: &Spec) -> (Vec<u8>, NetHdr, usize) {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    if s.vlan {
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
    }
    f.extend_from_slice(if s.v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
    let l3 = f.len();
    let proto = if s.tcp { 6u8 } else { 17 };
    let l4_hdr = if s.tcp { 20 + s.tcp_opts } else { 8 };
    let l4_len = l4_hdr + s.payload.len();
    if s.v6 {
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&(l4_len as u16).to_be_bytes());
        f.extend_from_slice(&[proto, 64]);
        f.extend((0..32).map(|i| i as u8 ^ 0x5a));
    } else {
        let ihl = 20 + s.ip_opts;
        f.push(0x40 | (ihl / 4) as u8);
        f.push(0);
        f.extend_from_slice(&((ihl + l4_len) as u16).to_be_bytes());
        f.extend_from_slice(&s.id.to_be_bytes());
        f.extend_from_slice(&[0x40, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        f.extend(std::iter::repeat_n(1u8, s.ip_opts)); // NOPs
    }
    let l4 = f.len();
    if s.tcp {
        f.extend_from_slice(&[0x30, 0x39, 0x00, 0x50]);
        f.extend_from_slice(&s.seq.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0]);
        f.push((((20 + s.tcp_opts) / 4) as u8) << 4);
        f.push(s.flags);
        f.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
        f.extend(std::iter::repeat_n(1u8, s.tcp_opts));
    } else {
        f.extend_from_slice(&[0x30, 0x39, 0x00, 0x50]);
        f.extend_from_slice(&(l4_len as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
    }
    f.extend_from_slice(&s.payload);
    // The pseudo-header sum, not complemented, in the checksum field (what Linux leaves).
    let len = (l4_len as u32).to_be_bytes();
    let p = if s.v6 {
        ref_sum(&[&f[l3 + 8..l3 + 40], &len, &[0, 0, 0, proto]])
    } else {
        ref_sum(&[&f[l3 + 12..l3 + 20], &[0, proto], &len[2..]])
    };
    let csum_offset = if s.tcp { 16 } else { 6 };
    f[l4 + csum_offset..l4 + csum_offset + 2].copy_from_slice(&p.to_be_bytes());
    let gso_type = match (s.tcp, s.v6) {
        (true, false) => GSO_TCPV4,
        (true, true) => GSO_TCPV6,
        (false, _) => GSO_UDP_L4,
    };
    let hdr = NetHdr {
        flags: F_NEEDS_CSUM,
        gso_type,
        hdr_len: (l4 + l4_hdr) as u16,
        gso_size: s.gso_size,
        csum_start: l4 as u16,
        csum_offset: csum_offset as u16,
    };
    (f, hdr, l3)
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        0usize..=10,
        0usize..=10,
        prop::collection::vec(any::<u8>(), 2..20_000),
        1u16..3000,
        any::<u32>(),
        any::<u16>(),
        any::<u8>(),
    )
        .prop_filter_map(
            "payload larger than one segment",
            |(v6, tcp, vlan, ipo, tcpo, payload, gso_size, seq, id, flags)| {
                if payload.len() <= usize::from(gso_size)
                    || payload.len().div_ceil(usize::from(gso_size)) > MAX_GSO_SEGMENTS
                {
                    return None;
                }
                Some(Spec {
                    v6,
                    tcp,
                    vlan,
                    ip_opts: ipo * 4,
                    tcp_opts: tcpo * 4,
                    payload,
                    gso_size,
                    seq,
                    id,
                    flags,
                })
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn segments_reassemble_and_verify(s in spec()) {
        let (frame, hdr, l3) = build(&s);
        let Ok(Offload::Gso(layout)) = validate(&frame, frame.len(), &hdr) else {
            panic!("valid frame refused: {:?}", validate(&frame, frame.len(), &hdr));
        };
        let n = layout.segments();
        prop_assert_eq!(n, s.payload.len().div_ceil(usize::from(s.gso_size)));
        let mut out = vec![0u8; 70_000];
        let mut reassembled = vec![0u8; s.payload.len()];
        let mut covered = 0usize;
        for i in 0..n {
            let len = layout.write_segment(&frame, i, &mut out).expect("segment");
            let seg = &out[..len];
            prop_assert!(checksums_verify(seg, l3, s.v6), "segment {} checksums", i);
            let l4 = layout.l4;
            let data = &seg[layout.payload..];
            prop_assert!(!data.is_empty() && data.len() <= usize::from(s.gso_size));
            let at = if s.tcp {
                let seq = u32::from_be_bytes([seg[l4 + 4], seg[l4 + 5], seg[l4 + 6], seg[l4 + 7]]);
                let fl = seg[l4 + 13];
                let last = i + 1 == n;
                prop_assert_eq!(fl & 0x09, if last { s.flags & 0x09 } else { 0 });
                prop_assert_eq!(fl & 0x80, if i == 0 { s.flags & 0x80 } else { 0 });
                prop_assert_eq!(fl & 0x76, s.flags & 0x76);
                seq.wrapping_sub(s.seq) as usize
            } else {
                let ulen = usize::from(u16::from_be_bytes([seg[l4 + 4], seg[l4 + 5]]));
                prop_assert_eq!(ulen, len - l4);
                i * usize::from(s.gso_size)
            };
            if !s.v6 {
                let id = u16::from_be_bytes([seg[l3 + 4], seg[l3 + 5]]);
                prop_assert_eq!(id, s.id.wrapping_add(i as u16));
            }
            prop_assert!(at + data.len() <= reassembled.len());
            reassembled[at..at + data.len()].copy_from_slice(data);
            covered += data.len();
        }
        prop_assert_eq!(covered, s.payload.len());
        prop_assert_eq!(reassembled, s.payload);
        prop_assert_eq!(layout.write_segment(&frame, n, &mut out), Ok(0));
    }

    #[test]
    fn completed_checksum_verifies(s in spec()) {
        // The same frame as a single (non-GSO) packet, checksum left partial.
        let (mut frame, mut hdr, l3) = build(&s);
        hdr.gso_type = GSO_NONE;
        hdr.gso_size = 0;
        let Ok(Offload::Csum { start, offset }) = validate(&frame, frame.len(), &hdr) else {
            panic!("checksum frame refused");
        };
        complete_csum(&mut frame, start, offset).expect("complete");
        // Only the L4 checksum was partial; an IPv4 header checksum is the guest's own
        // (zero in `build`), so verify the L4 sum alone.
        let l4 = usize::from(start);
        let l4b = &frame[l4..];
        let ok = if s.v6 {
            ref_sum(&[&frame[l3 + 8..l3 + 40], &(l4b.len() as u32).to_be_bytes(),
                      &[0, 0, 0, frame[l3 + 6]], l4b]) == 0xffff
        } else {
            let len = (l4b.len() as u16).to_be_bytes();
            ref_sum(&[&frame[l3 + 12..l3 + 20], &[0, frame[l3 + 9], len[0], len[1]], l4b])
                == 0xffff
        };
        prop_assert!(ok);
    }

    #[test]
    fn lying_headers_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..400),
        extra in 0usize..70_000,
        flags in any::<u8>(),
        gso_type in prop::sample::select(vec![0u8, 1, 3, 4, 5, 0x80, 0x81, 0x84, 0x85, 0x42]),
        hdr_len in any::<u16>(),
        gso_size in any::<u16>(),
        csum_start in any::<u16>(),
        csum_offset in any::<u16>(),
    ) {
        let hdr = NetHdr { flags, gso_type, hdr_len, gso_size, csum_start, csum_offset };
        let mut frame = bytes.clone();
        frame.resize(bytes.len() + extra, 0xa5);
        match validate(&frame, frame.len(), &hdr) {
            Err(_) | Ok(Offload::None) => {}
            Ok(Offload::Csum { start, offset }) => {
                prop_assert!(usize::from(start) + usize::from(offset) + 2 <= frame.len());
                prop_assert!(complete_csum(&mut frame, start, offset).is_ok());
            }
            Ok(Offload::Gso(l)) => {
                prop_assert!(l.payload < frame.len() && l.segments() <= MAX_GSO_SEGMENTS);
                let mut out = vec![0u8; 70_000];
                // Rewritten after validation (a guest racing the switch): still no panic.
                for b in frame.iter_mut().take(MAX_HEADERS) {
                    *b = b.wrapping_mul(31).wrapping_add(7);
                }
                for i in 0..l.segments().min(8) {
                    let n = l.write_segment(&frame, i, &mut out).expect("segment");
                    prop_assert!(n <= l.payload + l.gso_size);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A valid GSO frame with some header bytes and fields changed: refused or segmented,
    /// never a panic, every segment within the layout's bounds.
    #[test]
    fn mutated_gso_frames_never_panic(
        s in spec(),
        flips in prop::collection::vec((0usize..MAX_HEADERS, any::<u8>()), 0..6),
        field in 0usize..6,
        value in any::<u16>(),
        cut in any::<bool>(),
    ) {
        let (mut frame, mut hdr, _) = build(&s);
        for (at, x) in flips {
            if let Some(b) = frame.get_mut(at) {
                *b ^= x;
            }
        }
        match field {
            0 => hdr.gso_size = value,
            1 => hdr.csum_start = value,
            2 => hdr.csum_offset = value,
            3 => hdr.hdr_len = value,
            4 => hdr.gso_type = value as u8,
            _ => hdr.flags = value as u8,
        }
        if cut {
            frame.truncate(frame.len() / 2);
        }
        if let Ok(Offload::Gso(l)) = validate(&frame, frame.len(), &hdr) {
            let mut out = vec![0u8; 70_000];
            let mut total = 0;
            for i in 0..l.segments() {
                let n = l.write_segment(&frame, i, &mut out).expect("segment");
                prop_assert!(n > l.payload && n <= l.payload + l.gso_size);
                total += n - l.payload;
            }
            prop_assert_eq!(total, frame.len() - l.payload);
        }
    }
}

/// Each lying header of the brief, by hand: refused with its reason.
#[test]
fn lying_headers_refused() {
    let s = Spec {
        v6: false,
        tcp: true,
        vlan: false,
        ip_opts: 0,
        tcp_opts: 0,
        payload: vec![7; 3000],
        gso_size: 1448,
        seq: 1,
        id: 1,
        flags: 0x18,
    };
    let (f, hdr, _) = build(&s);
    let len = f.len();
    let check = |h: NetHdr| validate(&f, len, &h);
    assert!(matches!(check(hdr), Ok(Offload::Gso(_))));
    let e = |h| check(h).expect_err("lying header accepted");
    assert!(matches!(
        e(NetHdr {
            csum_start: len as u16,
            ..hdr
        }),
        OffloadError::CsumStartBeyondFrame { .. }
    ));
    assert!(matches!(
        e(NetHdr {
            csum_offset: (len - 34 - 1) as u16,
            ..hdr
        }),
        OffloadError::CsumFieldBeyondFrame { .. }
    ));
    assert!(matches!(
        e(NetHdr {
            csum_start: 4,
            gso_type: 0,
            ..hdr
        }),
        OffloadError::CsumStartInEthernetHeader(4)
    ));
    assert_eq!(e(NetHdr { gso_size: 0, ..hdr }), OffloadError::GsoSizeZero);
    assert!(matches!(
        e(NetHdr {
            gso_size: 3000,
            ..hdr
        }),
        OffloadError::GsoSizeTooLarge { .. }
    ));
    assert!(matches!(
        e(NetHdr {
            gso_type: GSO_TCPV6,
            ..hdr
        }),
        OffloadError::GsoTypeMismatch { .. }
    ));
    assert!(matches!(
        e(NetHdr {
            gso_type: GSO_UDP_L4,
            ..hdr
        }),
        OffloadError::GsoTypeMismatch { .. }
    ));
    assert!(matches!(
        e(NetHdr {
            hdr_len: len as u16 + 1,
            ..hdr
        }),
        OffloadError::HdrLenBeyondFrame { .. }
    ));
    assert_eq!(e(NetHdr { flags: 0, ..hdr }), OffloadError::GsoWithoutCsum);
    assert_eq!(
        e(NetHdr {
            flags: 4 | 1,
            ..hdr
        }),
        OffloadError::UnknownFlags(5)
    );
    assert_eq!(
        e(NetHdr { gso_type: 3, ..hdr }),
        OffloadError::UnknownGsoType(3)
    );
    assert_eq!(
        e(NetHdr { gso_size: 1, ..hdr }),
        OffloadError::TooManySegments(1)
    );
    // Truncated: the headers cut short.
    assert_eq!(
        validate(&f[..40], len, &hdr).err(),
        Some(OffloadError::Truncated)
    );
}

#[test]
fn offloads_cover_only_what_was_negotiated() {
    let tso4 = NetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        ..NetHdr::default()
    };
    let none = Offloads::default();
    assert!(none.covers(&NetHdr::default()));
    assert!(!none.covers(&tso4));
    let csum = Offloads { csum: true, ..none };
    assert!(!csum.covers(&tso4));
    assert!(Offloads { tso4: true, ..csum }.covers(&tso4));
    let ecn = NetHdr {
        gso_type: GSO_TCPV4 | GSO_ECN,
        ..tso4
    };
    assert!(!Offloads { tso4: true, ..csum }.covers(&ecn));
}
