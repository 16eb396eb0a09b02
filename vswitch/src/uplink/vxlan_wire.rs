//! The headers a VXLAN uplink reads and writes (RFC 7348), as checked views over byte buffers
//! with named offsets: the 8-byte VXLAN header, and the outer UDP header for when the
//! transport writes it itself (to choose the source port per flow).
//!
//! ```text
//! VXLAN header
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The I flag says the VNI is valid; every other bit is reserved: written as zero, ignored on
//! receive (RFC 7348 section 5), so extensions that set them (GBP, GPE) still parse.

/// Byte offsets of the VXLAN header's fields.
pub mod field {
    use std::ops::Range;

    /// Flags (the I bit, the rest reserved).
    pub const FLAGS: usize = 0;
    /// Reserved, 24 bits.
    pub const RESERVED_1: Range<usize> = 1..4;
    /// The VNI, 24 bits, big-endian.
    pub const VNI: Range<usize> = 4..7;
    /// Reserved, 8 bits.
    pub const RESERVED_2: usize = 7;
}

/// Length of the VXLAN header.
pub const HEADER_LEN: usize = 8;

/// The I flag: the VNI is valid.
pub const FLAG_I: u8 = 0x08;

/// The largest VNI (24 bits).
pub const VNI_MAX: u32 = (1 << 24) - 1;

/// Bytes the underlay carries around an inner frame besides the frame itself, over IPv4:
/// outer IPv4 (20), UDP (8) and VXLAN (8) headers. A frame fits when its length plus this is
/// at most the underlay's MTU.
pub const OUTER_IPV4: usize = 20 + udp::HEADER_LEN + HEADER_LEN;

/// The same over IPv6 (a 40-byte outer IPv6 header).
pub const OUTER_IPV6: usize = 40 + udp::HEADER_LEN + HEADER_LEN;

/// What VXLAN over IPv4 takes from the underlay's MTU as guests see it: the outer Ethernet
/// header (14) plus [`OUTER_IPV4`]. Guests behind an uplink on an underlay of MTU `m` get MTU
/// `m - 50` (a guest's inner Ethernet header is what the outer one replaces).
pub const GUEST_MTU_OVERHEAD_IPV4: usize = 14 + OUTER_IPV4;

/// Why a VXLAN header was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Shorter than the header.
    #[error("datagram of {0} bytes is shorter than a VXLAN header (8 bytes)")]
    Truncated(usize),
}

/// A VXLAN header at the start of a buffer (a UDP payload), followed by the inner Ethernet
/// frame.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// A view over `buffer` without checking its length: the accessors panic on a buffer
    /// shorter than [`HEADER_LEN`]. For buffers the caller sized itself.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// A view over `buffer`, which must hold at least a whole header.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let len = buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated(len));
        }
        Ok(Packet { buffer })
    }

    /// The flags byte.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// True when the I flag is set (the VNI is valid). Reserved bits are not looked at.
    pub fn has_vni(&self) -> bool {
        self.flags() & FLAG_I != 0
    }

    /// The VNI (meaningful when [`Packet::has_vni`]).
    pub fn vni(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::VNI];
        u32::from_be_bytes([0, b[0], b[1], b[2]])
    }

    /// The inner Ethernet frame.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// The buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Writes a header for `vni` (low 24 bits): the I flag, every reserved bit zero.
    pub fn emit(&mut self, vni: u32) {
        let b = self.buffer.as_mut();
        b[field::FLAGS] = FLAG_I;
        b[field::RESERVED_1].fill(0);
        self.set_vni(vni);
        self.buffer.as_mut()[field::RESERVED_2] = 0;
    }

    /// Sets the VNI (low 24 bits), leaving the flags alone.
    pub fn set_vni(&mut self, vni: u32) {
        let v = (vni & VNI_MAX).to_be_bytes();
        self.buffer.as_mut()[field::VNI].copy_from_slice(&v[1..]);
    }
}

/// The UDP header (RFC 768), written by the transport when it sends through a raw socket.
pub mod udp {
    use std::ops::Range;

    /// Length of the UDP header.
    pub const HEADER_LEN: usize = 8;
    /// Source port.
    pub const SRC_PORT: Range<usize> = 0..2;
    /// Destination port.
    pub const DST_PORT: Range<usize> = 2..4;
    /// Length of header and payload.
    pub const LENGTH: Range<usize> = 4..6;
    /// Checksum (0: none, allowed over IPv4; over IPv6 the kernel fills it in).
    pub const CHECKSUM: Range<usize> = 6..8;

    /// Writes a UDP header with a zero checksum into `b` for a payload of `payload_len` bytes.
    /// Panics if `b` is shorter than [`HEADER_LEN`] (the caller sizes it). The caller checks
    /// the datagram against the underlay MTU first, so the length always fits; were it not, the
    /// field saturates (the kernel then refuses the datagram) rather than panic the datapath.
    pub fn emit(b: &mut [u8], src_port: u16, dst_port: u16, payload_len: usize) {
        let len = u16::try_from(HEADER_LEN + payload_len).unwrap_or(u16::MAX);
        b[SRC_PORT].copy_from_slice(&src_port.to_be_bytes());
        b[DST_PORT].copy_from_slice(&dst_port.to_be_bytes());
        b[LENGTH].copy_from_slice(&len.to_be_bytes());
        b[CHECKSUM].fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emits_the_i_flag_the_vni_and_zero_reserved_bits() {
        let mut b = [0xffu8; 10];
        Packet::new_unchecked(&mut b[..]).emit(0x12_3456);
        assert_eq!(&b[..8], &[0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
        assert_eq!(&b[8..], &[0xff, 0xff], "payload untouched");
    }

    #[test]
    fn reads_what_it_wrote() {
        let mut b = [0u8; 8 + 14];
        Packet::new_unchecked(&mut b[..]).emit(100);
        let p = Packet::new_checked(&b[..]).expect("header");
        assert!(p.has_vni());
        assert_eq!(p.vni(), 100);
        assert_eq!(p.payload().len(), 14);
    }

    #[test]
    fn the_vni_is_24_bits() {
        let mut b = [0u8; 8];
        Packet::new_unchecked(&mut b[..]).emit(VNI_MAX + 5);
        assert_eq!(
            Packet::new_unchecked(&b[..]).vni(),
            4,
            "only the low 24 bits"
        );
        assert_eq!(
            b[field::RESERVED_2],
            0,
            "never spills into the reserved byte"
        );
        let b = [0x08, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(Packet::new_unchecked(&b[..]).vni(), VNI_MAX);
    }

    #[test]
    fn reserved_bits_are_ignored_on_receive() {
        let b = [0xff, 0xaa, 0xbb, 0xcc, 0, 0, 200, 0xdd];
        let p = Packet::new_checked(&b[..]).expect("header");
        assert!(p.has_vni());
        assert_eq!(p.vni(), 200);
    }

    #[test]
    fn without_the_i_flag_there_is_no_vni() {
        let b = [0xf7, 0, 0, 0, 0, 0, 100, 0];
        assert!(!Packet::new_checked(&b[..]).expect("header").has_vni());
    }

    #[test]
    fn a_short_buffer_is_refused() {
        for n in 0..HEADER_LEN {
            let b = vec![0x08u8; n];
            assert_eq!(
                Packet::new_checked(&b[..]).map(|_| ()),
                Err(Error::Truncated(n))
            );
        }
        assert!(Packet::new_checked(&[0x08u8; HEADER_LEN][..]).is_ok());
    }

    #[test]
    fn overheads() {
        assert_eq!(OUTER_IPV4, 36);
        assert_eq!(OUTER_IPV6, 56);
        assert_eq!(GUEST_MTU_OVERHEAD_IPV4, 50, "RFC 7348's 50 bytes");
    }

    #[test]
    fn udp_header() {
        let mut b = [0xffu8; 8];
        udp::emit(&mut b, 50000, 4789, 8 + 60);
        assert_eq!(b, [0xc3, 0x50, 0x12, 0xb5, 0, 76, 0, 0]);
    }
}
