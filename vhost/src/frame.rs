//! Frames as the switch moves them: where their bytes lie (a guest's memory, or a host
//! buffer an uplink received into), their first bytes copied for parsing, and their virtio-net
//! header's offload fields. A frame is never copied to be forwarded: a delivery copies it once,
//! from wherever it lies straight into the destination's buffers.
//!
//! [`FrameBatch`] is a batch from any port: the frames a guest transmitted (built by the TX
//! drain, see `tx.rs`) or frames in host memory ([`HostFrames`], for ports that are not
//! guests). [`FrameRef`] is one frame of a batch, what [`crate::RxWriter::deliver`] takes.

use std::marker::PhantomData;

use vm_memory::GuestAddress;

use crate::memory::copy_guest;
use crate::wire::{eth, net_hdr, PREFIX_LEN};

/// Shortest acceptable frame: an Ethernet header.
pub const MIN_FRAME_LEN: usize = eth::HEADER_LEN;

/// A contiguous piece of a frame (in guest memory, never crossing a memory region; or in a
/// host buffer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Segment {
    /// Guest physical address (for a frame in host memory: its host address).
    pub addr: GuestAddress,
    /// Length in bytes (non-zero).
    pub len: u32,
    /// Host address of `addr`, valid while the batch's memory snapshot (or buffer) is held.
    pub(crate) host: usize,
}

/// The virtio-net header fields a consumer may care about (offload metadata), in the header's
/// own order (`repr(C)`: on a little-endian host writing them out is one 10-byte copy).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct NetHdr {
    /// `flags` (NEEDS_CSUM, DATA_VALID).
    pub flags: u8,
    /// `gso_type`.
    pub gso_type: u8,
    /// `hdr_len`.
    pub hdr_len: u16,
    /// `gso_size`.
    pub gso_size: u16,
    /// `csum_start`.
    pub csum_start: u16,
    /// `csum_offset`.
    pub csum_offset: u16,
}

impl NetHdr {
    /// The fields of a header read from a TX buffer (a legacy 10-byte header is zero-padded).
    /// A header that asks for no work (neither NEEDS_CSUM nor a gso_type) is all zeroes,
    /// whatever else it held: only offload metadata travels with a frame.
    pub(crate) fn parse(b: &[u8; net_hdr::LEN]) -> Self {
        if b[net_hdr::FLAGS] & crate::offload::F_NEEDS_CSUM == 0 && b[net_hdr::GSO_TYPE] == 0 {
            return NetHdr::default();
        }
        NetHdr {
            flags: b[net_hdr::FLAGS],
            gso_type: b[net_hdr::GSO_TYPE],
            hdr_len: net_hdr::u16_at(b, net_hdr::HDR_LEN),
            gso_size: net_hdr::u16_at(b, net_hdr::GSO_SIZE),
            csum_start: net_hdr::u16_at(b, net_hdr::CSUM_START),
            csum_offset: net_hdr::u16_at(b, net_hdr::CSUM_OFFSET),
        }
    }

    /// The header written in front of the frame in a receiver's buffer: these fields with
    /// `num_buffers` = `buffers`..
    #[inline(always)]
    pub(crate) fn for_rx(&self, buffers: u16) -> [u8; net_hdr::LEN] {
        // Written whole, without a branch: the TX drain zeroes every header that asks for
        // nothing (tx/hdr.rs), so a plain frame gets an all-zero header.
        let mut h = net_hdr::for_rx(buffers);
        h[net_hdr::FLAGS] = self.flags;
        h[net_hdr::GSO_TYPE] = self.gso_type;
        h[net_hdr::HDR_LEN].copy_from_slice(&self.hdr_len.to_le_bytes());
        h[net_hdr::GSO_SIZE].copy_from_slice(&self.gso_size.to_le_bytes());
        h[net_hdr::CSUM_START].copy_from_slice(&self.csum_start.to_le_bytes());
        h[net_hdr::CSUM_OFFSET].copy_from_slice(&self.csum_offset.to_le_bytes());
        h
    }
}

/// One accepted frame of a batch: its range of segments, plus its first bytes for parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSlot {
    pub(crate) seg_start: u32,
    pub(crate) seg_end: u32,
    pub(crate) len: u32,
    pub(crate) prefix: [u8; PREFIX_LEN],
    pub(crate) hdr: NetHdr,
}

/// A batch of frames from one port, in that port's memory: valid only while the call that
/// hands it out runs (a guest's memory snapshot, or the buffers of [`HostFrames`]).
pub struct FrameBatch<'a> {
    pub(crate) frames: &'a [FrameSlot],
    pub(crate) segs: &'a [Segment],
}

impl<'a> FrameBatch<'a> {
    /// A batch over frames and their segments (every segment's host address valid for `'a`).
    pub(crate) fn new(frames: &'a [FrameSlot], segs: &'a [Segment]) -> Self {
        FrameBatch { frames, segs }
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// True when the batch holds no frame.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The `i`-th frame. Panics if `i >= len()` (an index the caller controls, not the guest).
    pub fn frame(&self, i: usize) -> FrameRef<'a> {
        let f = &self.frames[i];
        FrameRef {
            segs: &self.segs[f.seg_start as usize..f.seg_end as usize],
            len: f.len,
            prefix: &self.frames[i].prefix,
            hdr: f.hdr,
        }
    }

    /// The `i`-th frame's parse prefix (its first [`PREFIX_LEN`] bytes, zero-padded; frames are
    /// at least 14 bytes, so the MACs are always there) and its length, without building a
    /// [`FrameRef`]: what a planner needs per frame. Panics if `i >= len()` (an index the
    /// caller controls, not the guest).
    #[inline]
    pub fn head(&self, i: usize) -> (&'a [u8; PREFIX_LEN], u32) {
        let f = &self.frames[i];
        (&f.prefix, f.len)
    }

    /// Iterates over the frames.
    pub fn iter(&self) -> impl Iterator<Item = FrameRef<'a>> + '_ {
        (0..self.len()).map(move |i| self.frame(i))
    }
}

/// A frame that lies in some port's memory: the source of a copy into a guest.
#[derive(Clone, Copy)]
pub struct FrameRef<'a> {
    pub(crate) segs: &'a [Segment],
    pub(crate) len: u32,
    pub(crate) prefix: &'a [u8; PREFIX_LEN],
    pub(crate) hdr: NetHdr,
}

impl<'a> FrameRef<'a> {
    /// Frame length in bytes (no virtio header).
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Frames are never empty (runts are refused); provided for API completeness.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first `min(len, PREFIX_LEN)` bytes of the frame.
    pub fn prefix(&self) -> &'a [u8] {
        &self.prefix[..self.len().min(PREFIX_LEN)]
    }

    /// Destination MAC address.
    pub fn dst_mac(&self) -> [u8; 6] {
        eth::dst(self.prefix)
    }

    /// Source MAC address.
    pub fn src_mac(&self) -> [u8; 6] {
        eth::src(self.prefix)
    }

    /// The virtio-net header the sender gave the frame.
    pub fn net_hdr(&self) -> NetHdr {
        self.hdr
    }

    /// The frame's pieces.
    pub fn segments(&self) -> &'a [Segment] {
        self.segs
    }

    /// Copies the frame into `out`, the same bytes a delivery into a guest writes (see
    /// `FrameRef::delivery_pieces`): what a port that is not a guest (an uplink) sends.
    /// Returns the bytes copied, `min(len, out.len())`.
    pub fn copy_to(&self, out: &mut [u8]) -> usize {
        let mut done = 0;
        for (src, len) in self.delivery_pieces() {
            if done >= out.len() {
                break;
            }
            let n = len.min(out.len() - done);
            // SAFETY: every piece is this frame's prefix copy or a part of a segment checked to
            // lie in the source memory, which the batch keeps mapped while this `FrameRef`
            // lives; `out[done..done + n]` is in bounds.
            unsafe { copy_guest(out[done..].as_mut_ptr() as usize, src, n) };
            done += n;
        }
        done
    }

    /// Copies the frame's bytes from `offset` on into `out` (the bytes a delivery writes, as
    /// [`FrameRef::copy_to`]): for looking past the parse prefix (a flow hash's L4 ports).
    /// Returns the bytes copied, 0 for an offset at or past the end.
    pub fn read_at(&self, offset: usize, out: &mut [u8]) -> usize {
        let mut skip = offset;
        let mut done = 0;
        for (src, len) in self.delivery_pieces() {
            if done >= out.len() {
                break;
            }
            if skip >= len {
                skip -= len;
                continue;
            }
            let n = (len - skip).min(out.len() - done);
            // SAFETY: as in `copy_to`: `src + skip..src + skip + n` lies inside a piece of
            // this frame (prefix copy or checked segment, mapped while the batch lives), and
            // `out[done..done + n]` is in bounds.
            unsafe { copy_guest(out[done..].as_mut_ptr() as usize, src + skip, n) };
            skip = 0;
            done += n;
        }
        done
    }

    /// How many leading bytes a delivery takes from the prefix copy instead of the frame's
    /// segments.
    #[inline(always)]
    pub(crate) fn checked_len(&self) -> usize {
        self.len().min(PREFIX_LEN)
    }

    /// The frame as a delivery copies it, as (host address, length) pieces: first its leading
    /// [`FrameRef::checked_len`] bytes from the prefix copy the switch made its decisions on
    /// (addresses, tags), then the rest from the segments. A guest can rewrite its buffer at
    /// any time; what it cannot do this way is deliver bytes other than those that were checked
    /// (a source MAC flipped between the check and the copy, say). The prefix was copied
    /// anyway for parsing, so this costs no extra copy of the frame.
    #[inline]
    pub(crate) fn delivery_pieces(&self) -> impl Iterator<Item = (usize, usize)> + 'a {
        std::iter::once((self.prefix.as_ptr() as usize, self.checked_len()))
            .chain(self.tail_segments())
    }

    /// Host address and length of each segment (the fuzz harness checks them against guest
    /// memory; deliveries use [`FrameRef::delivery_pieces`]).
    #[inline]
    pub(crate) fn host_segments(&self) -> impl Iterator<Item = (usize, usize)> + 'a {
        self.segs.iter().map(|s| (s.host, s.len as usize))
    }

    /// The frame's pieces after its first [`FrameRef::checked_len`] bytes.
    #[inline]
    pub(crate) fn tail_segments(&self) -> impl Iterator<Item = (usize, usize)> + 'a {
        let mut skip = self.checked_len();
        self.segs.iter().filter_map(move |s| {
            let n = s.len as usize;
            if skip >= n {
                skip -= n;
                return None;
            }
            let piece = (s.host + skip, n - skip);
            skip = 0;
            Some(piece)
        })
    }
}

/// Why a host buffer was not taken as a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostFrameError {
    /// Shorter than an Ethernet header.
    #[error("frame of {0} bytes is shorter than an Ethernet header (14 bytes)")]
    Runt(usize),
    /// Longer than a frame length can say (4 GiB).
    #[error("frame of {0} bytes is too long")]
    Oversize(usize),
}

/// Builds a [`FrameBatch`] over frames in host memory (a port that is not a guest: an uplink's
/// receive buffers, a test). Each frame is one host buffer borrowed for `'a`; its first bytes
/// are copied for parsing, the rest stays where it is until a delivery copies it. Reusable
/// across batches without allocating: [`HostFrames::recycle`].
pub struct HostFrames<'a> {
    frames: Vec<FrameSlot>,
    segs: Vec<Segment>,
    _buffers: PhantomData<&'a [u8]>,
}

impl Default for HostFrames<'_> {
    fn default() -> Self {
        Self::with_capacity(crate::tx::MAX_BATCH)
    }
}

impl<'a> HostFrames<'a> {
    /// Room for `n` frames before the first allocation.
    pub fn with_capacity(n: usize) -> Self {
        HostFrames {
            frames: Vec::with_capacity(n),
            segs: Vec::with_capacity(n),
            _buffers: PhantomData,
        }
    }

    /// Empties the builder for buffers of another lifetime, keeping its storage.
    pub fn recycle<'b>(mut self) -> HostFrames<'b> {
        self.frames.clear();
        self.segs.clear();
        HostFrames {
            frames: self.frames,
            segs: self.segs,
            _buffers: PhantomData,
        }
    }

    /// Adds one frame (Ethernet header first, no virtio-net header) with header fields `hdr`.
    pub fn push(&mut self, frame: &'a [u8], hdr: NetHdr) -> Result<(), HostFrameError> {
        if frame.len() < MIN_FRAME_LEN {
            return Err(HostFrameError::Runt(frame.len()));
        }
        let len = u32::try_from(frame.len()).map_err(|_| HostFrameError::Oversize(frame.len()))?;
        let mut prefix = [0u8; PREFIX_LEN];
        let n = frame.len().min(PREFIX_LEN);
        prefix[..n].copy_from_slice(&frame[..n]);
        let start = self.segs.len() as u32;
        self.segs.push(Segment {
            addr: GuestAddress(frame.as_ptr() as u64),
            len,
            host: frame.as_ptr() as usize,
        });
        self.frames.push(FrameSlot {
            seg_start: start,
            seg_end: start + 1,
            len,
            prefix,
            hdr,
        });
        Ok(())
    }

    /// The frames added so far.
    pub fn batch(&self) -> FrameBatch<'_> {
        FrameBatch::new(&self.frames, &self.segs)
    }

    /// Number of frames added.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// True when no frame was added.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}
