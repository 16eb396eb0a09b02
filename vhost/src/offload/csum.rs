//! The Internet checksum (RFC 1071) and completing a partial one.

use super::OffloadError;

/// The ones' complement sum of `data` (big-endian 16-bit words, an odd last byte padded with
/// zero) added to `sum`, not folded. Adding a 64-bit accumulator of 32-bit sums cannot
/// overflow for any frame the switch handles (under 4 GiB).
#[inline]
pub(crate) fn sum_words(data: &[u8], mut sum: u64) -> u64 {
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        sum += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut i = 0;
    while i + 1 < rest.len() {
        sum += u64::from(u16::from_be_bytes([rest[i], rest[i + 1]]));
        i += 2;
    }
    if i < rest.len() {
        sum += u64::from(rest[i]) << 8;
    }
    sum
}

/// Folds a sum to 16 bits (ones' complement, end-around carry).
#[inline]
pub(crate) fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The Internet checksum of `data`: the complement of its folded ones' complement sum.
pub fn internet_checksum(data: &[u8]) -> u16 {
    !fold(sum_words(data, 0))
}

/// The checksum field value for a sum over everything it covers (field zeroed): a computed
/// zero is sent as 0xffff, which means the same in ones' complement and is what UDP needs
/// (0 there means "no checksum").
#[inline]
pub(crate) fn field(sum: u64) -> [u8; 2] {
    let c = !fold(sum);
    if c == 0 { 0xffff_u16 } else { c }.to_be_bytes()
}

/// Completes the partial checksum of a `NEEDS_CSUM` frame in place: the ones' complement sum
/// of `frame[csum_start..]` (whose field at `csum_start + csum_offset` holds the pseudo-header
/// sum the sender put there) is folded, complemented and stored in that field. Refused
/// (nothing written) when the field does not lie inside the frame after `csum_start`.
pub fn complete_csum(
    frame: &mut [u8],
    csum_start: u16,
    csum_offset: u16,
) -> Result<(), OffloadError> {
    let start = usize::from(csum_start);
    let at = start + usize::from(csum_offset);
    if start >= frame.len() {
        return Err(OffloadError::CsumStartBeyondFrame {
            csum_start,
            len: frame.len(),
        });
    }
    if at + 2 > frame.len() {
        return Err(OffloadError::CsumFieldBeyondFrame {
            at,
            len: frame.len(),
        });
    }
    let sum = sum_words(&frame[start..], 0);
    frame[at..at + 2].copy_from_slice(&field(sum));
    Ok(())
}
