//! Checking a virtio-net header against its frame.
//!
//! What a header may say (anything else is a lying header, refused with an [`OffloadError`];
//! docs/offloads.md has the reasons):
//!
//! - `flags`: only `NEEDS_CSUM` and `DATA_VALID` (the latter means nothing on TX and is
//!   ignored). With `NEEDS_CSUM`, `csum_start` lies past the Ethernet header (completing the
//!   checksum must never rewrite the addresses the switch checked) and inside the frame, and
//!   the 2-byte field at `csum_start + csum_offset` inside the frame too.
//! - `hdr_len` is a hint (VIRTIO_NET_F_GUEST_HDRLEN is not offered): it must not lie beyond the
//!   frame, and is otherwise not trusted; the headers' length is parsed from the frame.
//! - `gso_type`: NONE, TCPV4, TCPV6 or UDP_L4, with the ECN bit only on TCP. UDP fragmentation
//!   (UFO, `GSO_UDP`) is not offered and refused. A GSO frame must also set `NEEDS_CSUM` with
//!   `csum_start` at its TCP/UDP header and `csum_offset` at that header's checksum (what
//!   Linux and DPDK send), be IPv4 (TCPV4, UDP_L4) or IPv6 (TCPV6, UDP_L4) behind an Ethernet
//!   header and at most one 802.1Q tag, carry TCP (TCPV4/6) or UDP (UDP_L4), not be an IPv4
//!   fragment, and have no IPv6 extension header (Linux sends none on a GSO frame below
//!   64 KiB; parsing them would only widen what a guest can make the switch walk). IPv4
//!   options are accepted and copied into every segment.
//! - `gso_size`: not 0; smaller than the payload (a frame that fits one segment is not a GSO
//!   frame, and Linux never sends one); at most [`MAX_GSO_SEGMENTS`] segments.
//!
//! The IP length fields of a GSO frame are not trusted either: every segment's are rewritten.

use super::{F_DATA_VALID, F_NEEDS_CSUM, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4};
use super::{MAX_GSO_FRAME, MAX_GSO_SEGMENTS};
use crate::frame::NetHdr;

/// Ethernet header length.
const ETH_LEN: usize = 14;
/// 802.1Q tag length.
const VLAN_LEN: usize = 4;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const IPV6_LEN: usize = 40;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const UDP_LEN: usize = 8;
/// Offset of the checksum in a TCP header.
const TCP_CSUM: u16 = 16;
/// Offset of the checksum in a UDP header.
const UDP_CSUM: u16 = 6;

/// Longest run of headers a GSO frame may have: Ethernet, one tag, IPv4 with options, TCP
/// with options. [`validate`] needs at most this many leading bytes of the frame.
pub const MAX_HEADERS: usize = ETH_LEN + VLAN_LEN + 60 + 60;

/// Why a virtio-net header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    /// Flags other than NEEDS_CSUM and DATA_VALID.
    #[error("virtio-net header flags {0:#04x} carry bits other than NEEDS_CSUM and DATA_VALID")]
    UnknownFlags(u8),
    /// A gso_type that is not NONE, TCPV4, TCPV6 or UDP_L4 (with ECN only on TCP).
    #[error("gso_type {0:#04x} is not offered (NONE, TCPV4, TCPV6, UDP_L4, ECN on TCP)")]
    UnknownGsoType(u8),
    /// The header asks for an offload the sender did not negotiate.
    #[error("the header asks for an offload the guest did not negotiate")]
    NotNegotiated,
    /// `csum_start` at or past the end of the frame.
    #[error("csum_start {csum_start} is not inside the {len}-byte frame")]
    CsumStartBeyondFrame {
        /// The header's csum_start.
        csum_start: u16,
        /// The frame's length.
        len: usize,
    },
    /// `csum_start` inside the Ethernet header.
    #[error("csum_start {0} lies inside the Ethernet header")]
    CsumStartInEthernetHeader(u16),
    /// The checksum field (`csum_start + csum_offset`, 2 bytes) is not inside the frame.
    #[error("checksum field at {at} does not fit the {len}-byte frame")]
    CsumFieldBeyondFrame {
        /// csum_start + csum_offset.
        at: usize,
        /// The frame's length.
        len: usize,
    },
    /// `hdr_len` beyond the frame.
    #[error("hdr_len {hdr_len} is beyond the {len}-byte frame")]
    HdrLenBeyondFrame {
        /// The header's hdr_len.
        hdr_len: u16,
        /// The frame's length.
        len: usize,
    },
    /// A GSO frame without NEEDS_CSUM.
    #[error("a GSO frame must set NEEDS_CSUM")]
    GsoWithoutCsum,
    /// `gso_size` is 0.
    #[error("gso_size is 0")]
    GsoSizeZero,
    /// The payload fits one segment of `gso_size`: not a GSO frame.
    #[error("gso_size {gso_size} is not smaller than the {payload}-byte payload")]
    GsoSizeTooLarge {
        /// The header's gso_size.
        gso_size: u16,
        /// Payload bytes after the headers.
        payload: usize,
    },
    /// More than [`MAX_GSO_SEGMENTS`] segments.
    #[error("gso_size {0} would cut the frame into more than {MAX_GSO_SEGMENTS} segments")]
    TooManySegments(u16),
    /// A GSO frame longer than [`MAX_GSO_FRAME`].
    #[error("GSO frame of {0} bytes is longer than {MAX_GSO_FRAME}")]
    GsoFrameTooLong(usize),
    /// The headers of a GSO frame end past the frame.
    #[error("the frame ends inside its headers")]
    Truncated,
    /// A GSO frame that is not IPv4 or IPv6.
    #[error("GSO frame with EtherType {0:#06x} (not IPv4 or IPv6)")]
    NotIp(u16),
    /// The gso_type does not match the IP version or transport protocol.
    #[error("gso_type {gso_type:#04x} does not match the packet (IPv{ip}, protocol {proto})")]
    GsoTypeMismatch {
        /// The header's gso_type.
        gso_type: u8,
        /// The packet's IP version.
        ip: u8,
        /// The packet's protocol / next header.
        proto: u8,
    },
    /// A bad IPv4 header (IHL under 5) or a fragment.
    #[error("bad IPv4 header (IHL under 5, or a fragment)")]
    BadIpv4,
    /// A TCP data offset under 5.
    #[error("TCP data offset under 5 words")]
    BadTcpHeader,
    /// `csum_start`/`csum_offset` of a GSO frame not at its TCP/UDP checksum.
    #[error("csum_start {csum_start}/csum_offset {csum_offset} is not the L4 checksum at {l4}")]
    CsumNotAtL4 {
        /// The header's csum_start.
        csum_start: u16,
        /// The header's csum_offset.
        csum_offset: u16,
        /// Where the TCP/UDP header is.
        l4: usize,
    },
    /// An output buffer too small for the segment.
    #[error("output buffer of {have} bytes for a {need}-byte segment")]
    OutputTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The frame handed to the segmenter is not the length it was validated at.
    #[error("frame of {0} bytes is not the length the layout was validated for")]
    LengthChanged(usize),
}

/// The transport of a GSO frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4Proto {
    /// TCP (TSO).
    Tcp,
    /// UDP (USO).
    Udp,
}

/// Where the headers of a validated GSO frame are, and how to cut it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GsoLayout {
    /// Frame length validated.
    pub frame_len: usize,
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the TCP/UDP header.
    pub l4: usize,
    /// Offset of the payload (end of the headers).
    pub payload: usize,
    /// IPv6 (else IPv4).
    pub v6: bool,
    /// TCP or UDP.
    pub proto: L4Proto,
    /// Payload bytes per segment.
    pub gso_size: usize,
}

impl GsoLayout {
    /// Number of segments the frame is cut into.
    pub fn segments(&self) -> usize {
        (self.frame_len - self.payload).div_ceil(self.gso_size)
    }

    /// Length of segment `i` (headers included; 0 past the last segment).
    pub fn segment_len(&self, i: usize) -> usize {
        let total = self.frame_len - self.payload;
        let from = i.saturating_mul(self.gso_size);
        if from >= total {
            return 0;
        }
        self.payload + (total - from).min(self.gso_size)
    }
}

/// What a valid header asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offload {
    /// Nothing: the frame is complete.
    None,
    /// Complete the checksum from `start`, stored at `start + offset`.
    Csum {
        /// csum_start.
        start: u16,
        /// csum_offset.
        offset: u16,
    },
    /// Segment (every segment's checksums computed).
    Gso(GsoLayout),
}

/// Checks `hdr` against a frame of `frame_len` bytes whose first bytes are `head` (at least
/// `min(frame_len, MAX_HEADERS)` of them for a GSO frame; the rest is ignored). Never reads
/// outside `head`; whatever the bytes, returns an error or what the header asks for.
pub fn validate(head: &[u8], frame_len: usize, hdr: &NetHdr) -> Result<Offload, OffloadError> {
    if hdr.flags & !(F_NEEDS_CSUM | F_DATA_VALID) != 0 {
        return Err(OffloadError::UnknownFlags(hdr.flags));
    }
    if usize::from(hdr.hdr_len) > frame_len {
        return Err(OffloadError::HdrLenBeyondFrame {
            hdr_len: hdr.hdr_len,
            len: frame_len,
        });
    }
    let csum = hdr.flags & F_NEEDS_CSUM != 0;
    if csum {
        check_csum_field(hdr, frame_len)?;
    }
    let base = hdr.gso_type & !GSO_ECN;
    let ecn = hdr.gso_type & GSO_ECN != 0;
    match base {
        GSO_NONE if !ecn => {
            return Ok(if csum {
                Offload::Csum {
                    start: hdr.csum_start,
                    offset: hdr.csum_offset,
                }
            } else {
                Offload::None
            })
        }
        GSO_TCPV4 | GSO_TCPV6 => {}
        GSO_UDP_L4 if !ecn => {}
        _ => return Err(OffloadError::UnknownGsoType(hdr.gso_type)),
    }
    if !csum {
        return Err(OffloadError::GsoWithoutCsum);
    }
    if hdr.gso_size == 0 {
        return Err(OffloadError::GsoSizeZero);
    }
    if frame_len > MAX_GSO_FRAME {
        return Err(OffloadError::GsoFrameTooLong(frame_len));
    }
    let head = &head[..head.len().min(frame_len)];
    let layout = parse_headers(head, frame_len, hdr)?;
    let payload = frame_len - layout.payload;
    if payload <= layout.gso_size {
        return Err(OffloadError::GsoSizeTooLarge {
            gso_size: hdr.gso_size,
            payload,
        });
    }
    if layout.segments() > MAX_GSO_SEGMENTS {
        return Err(OffloadError::TooManySegments(hdr.gso_size));
    }
    Ok(Offload::Gso(layout))
}

fn check_csum_field(hdr: &NetHdr, frame_len: usize) -> Result<(), OffloadError> {
    let start = usize::from(hdr.csum_start);
    if start >= frame_len {
        return Err(OffloadError::CsumStartBeyondFrame {
            csum_start: hdr.csum_start,
            len: frame_len,
        });
    }
    if start < ETH_LEN {
        return Err(OffloadError::CsumStartInEthernetHeader(hdr.csum_start));
    }
    let at = start + usize::from(hdr.csum_offset);
    if at + 2 > frame_len {
        return Err(OffloadError::CsumFieldBeyondFrame { at, len: frame_len });
    }
    Ok(())
}

fn be16(b: &[u8], at: usize) -> Result<u16, OffloadError> {
    match b.get(at..at + 2) {
        Some(s) => Ok(u16::from_be_bytes([s[0], s[1]])),
        None => Err(OffloadError::Truncated),
    }
}

fn byte(b: &[u8], at: usize) -> Result<u8, OffloadError> {
    b.get(at).copied().ok_or(OffloadError::Truncated)
}

/// Parses Ethernet (one optional 802.1Q tag), IPv4/IPv6 and TCP/UDP headers of a GSO frame.
fn parse_headers(head: &[u8], frame_len: usize, hdr: &NetHdr) -> Result<GsoLayout, OffloadError> {
    let mut l3 = ETH_LEN;
    let mut ethertype = be16(head, 12)?;
    if ethertype == ETHERTYPE_VLAN {
        ethertype = be16(head, 16)?;
        l3 += VLAN_LEN;
    }
    let (v6, proto, l4) = match ethertype {
        ETHERTYPE_IPV4 => {
            let vihl = byte(head, l3)?;
            let ihl = usize::from(vihl & 0x0f) * 4;
            if vihl >> 4 != 4 || ihl < 20 {
                return Err(OffloadError::BadIpv4);
            }
            // MF set or a fragment offset: a fragment cannot be segmented.
            if be16(head, l3 + 6)? & 0x3fff != 0 {
                return Err(OffloadError::BadIpv4);
            }
            (false, byte(head, l3 + 9)?, l3 + ihl)
        }
        ETHERTYPE_IPV6 => {
            if byte(head, l3)? >> 4 != 6 {
                return Err(OffloadError::GsoTypeMismatch {
                    gso_type: hdr.gso_type,
                    ip: byte(head, l3)? >> 4,
                    proto: 0,
                });
            }
            (true, byte(head, l3 + 6)?, l3 + IPV6_LEN)
        }
        other => return Err(OffloadError::NotIp(other)),
    };
    let ip = if v6 { 6 } else { 4 };
    let base = hdr.gso_type & !GSO_ECN;
    let (l4proto, csum_off) = match (base, v6, proto) {
        (GSO_TCPV4, false, PROTO_TCP) | (GSO_TCPV6, true, PROTO_TCP) => (L4Proto::Tcp, TCP_CSUM),
        (GSO_UDP_L4, _, PROTO_UDP) => (L4Proto::Udp, UDP_CSUM),
        _ => {
            return Err(OffloadError::GsoTypeMismatch {
                gso_type: hdr.gso_type,
                ip,
                proto,
            })
        }
    };
    let payload = match l4proto {
        L4Proto::Tcp => {
            let doff = usize::from(byte(head, l4 + 12)? >> 4) * 4;
            if doff < 20 {
                return Err(OffloadError::BadTcpHeader);
            }
            l4 + doff
        }
        L4Proto::Udp => l4 + UDP_LEN,
    };
    if payload > head.len() || payload > frame_len {
        return Err(OffloadError::Truncated);
    }
    // The IP length fields are 16 bits: IPv4's total length counts its header, IPv6's
    // payload length does not.
    let ip_len = frame_len - l3 - if v6 { IPV6_LEN } else { 0 };
    if ip_len > usize::from(u16::MAX) {
        return Err(OffloadError::GsoFrameTooLong(frame_len));
    }
    if usize::from(hdr.csum_start) != l4 || hdr.csum_offset != csum_off {
        return Err(OffloadError::CsumNotAtL4 {
            csum_start: hdr.csum_start,
            csum_offset: hdr.csum_offset,
            l4,
        });
    }
    Ok(GsoLayout {
        frame_len,
        l3,
        l4,
        payload,
        v6,
        proto: l4proto,
        gso_size: usize::from(hdr.gso_size),
    })
}
