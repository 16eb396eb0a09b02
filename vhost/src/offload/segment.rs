//! Cutting a validated GSO frame into segments, one at a time, into the caller's buffer.
//!
//! Segment `i` is the frame's headers followed by payload bytes `i * gso_size ..` (at most
//! `gso_size`), with: IPv4 total length, identification (`id + i`, wrapping) and header
//! checksum; or IPv6 payload length; TCP sequence number (`seq + i * gso_size`, wrapping), FIN
//! and PSH kept on the last segment only, CWR on the first only; UDP length; and the full
//! TCP/UDP checksum over the pseudo-header, computed here (whatever partial sum the sender
//! left in the field is overwritten).

use super::csum::{field, sum_words};
use super::parse::{GsoLayout, L4Proto, OffloadError};

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

impl GsoLayout {
    /// Writes segment `i` of `frame` (the whole frame this layout was validated for) into
    /// `out` and returns its length. Reads and writes only inside `frame` and `out`: any frame
    /// bytes give some segment, never a panic (the headers were validated on an earlier copy
    /// of the frame, which a guest may have rewritten since: only the lengths this layout holds
    /// are trusted, and they are checked against `frame` here).
    pub fn write_segment(
        &self,
        frame: &[u8],
        i: usize,
        out: &mut [u8],
    ) -> Result<usize, OffloadError> {
        if frame.len() != self.frame_len {
            return Err(OffloadError::LengthChanged(frame.len()));
        }
        let len = self.segment_len(i);
        if len == 0 {
            return Ok(0);
        }
        if out.len() < len {
            return Err(OffloadError::OutputTooSmall {
                need: len,
                have: out.len(),
            });
        }
        let out = &mut out[..len];
        let from = self.payload + i * self.gso_size;
        let chunk = len - self.payload;
        out[..self.payload].copy_from_slice(&frame[..self.payload]);
        out[self.payload..].copy_from_slice(&frame[from..from + chunk]);
        let last = i + 1 == self.segments();
        let l4_len = len - self.l4;
        // The IP header: lengths, id, header checksum; the pseudo-header's sum.
        let l3 = self.l3;
        let pseudo = if self.v6 {
            out[l3 + 4..l3 + 6].copy_from_slice(&((len - l3 - 40) as u16).to_be_bytes());
            let next = u64::from(out[l3 + 6]);
            sum_words(&out[l3 + 8..l3 + 40], next + l4_len as u64)
        } else {
            out[l3 + 2..l3 + 4].copy_from_slice(&((len - l3) as u16).to_be_bytes());
            let id = u16::from_be_bytes([out[l3 + 4], out[l3 + 5]]).wrapping_add(i as u16);
            out[l3 + 4..l3 + 6].copy_from_slice(&id.to_be_bytes());
            out[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
            let ihl = self.l4 - l3;
            let c = !super::csum::fold(sum_words(&out[l3..l3 + ihl], 0));
            out[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
            let proto = u64::from(out[l3 + 9]);
            sum_words(&out[l3 + 12..l3 + 20], proto + l4_len as u64)
        };
        let l4 = self.l4;
        let csum_at = match self.proto {
            L4Proto::Tcp => {
                let seq = u32::from_be_bytes([out[l4 + 4], out[l4 + 5], out[l4 + 6], out[l4 + 7]])
                    .wrapping_add((i as u32).wrapping_mul(self.gso_size as u32));
                out[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
                if !last {
                    out[l4 + 13] &= !(TCP_FIN | TCP_PSH);
                }
                if i != 0 {
                    out[l4 + 13] &= !TCP_CWR;
                }
                l4 + 16
            }
            L4Proto::Udp => {
                out[l4 + 4..l4 + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
                l4 + 6
            }
        };
        out[csum_at..csum_at + 2].copy_from_slice(&[0, 0]);
        let sum = sum_words(&out[l4..], pseudo);
        out[csum_at..csum_at + 2].copy_from_slice(&field(sum));
        Ok(len)
    }
}
