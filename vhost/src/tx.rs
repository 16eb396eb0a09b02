//! The guest's transmit side: turning TX descriptor chains into frames that stay in guest memory.
//!
//! Every chain is hostile input. A chain is accepted only when every descriptor is
//! device-readable, non-empty and lies inside guest memory, the chain ends properly (no loop,
//! no index beyond the queue, no broken indirect table), the total stays within the port's
//! maximum, and it holds at least a virtio-net header and an Ethernet header. Anything else
//! costs that one chain and a counter.

use std::marker::PhantomData;

use vm_memory::GuestAddress;

use crate::memory::{copy_guest, GuestMap};
use crate::park::ParkedRing;
use crate::ring::{AvailPeek, Chain, SplitRing};

/// Most chains taken from a TX ring in one batch.
pub const MAX_BATCH: usize = 256;
/// Most TX descriptor reads one poller pass spends on one port (it finishes the chain that
/// crosses the budget, at most [`crate::MAX_CHAIN_DESCS`] more). Two full batches of the usual
/// two-descriptor frames: enough that the budget never cuts a pass short for a normal guest,
/// small enough that a port walking hostile chains costs its neighbours a few microseconds per
/// pass. Counted per chain in a local variable, never per descriptor in shared memory.
pub const TX_PASS_BUDGET: u32 = 1024;
/// Most guest-memory segments one frame may be made of.
pub const MAX_SEGS_PER_FRAME: usize = 64;
/// How many leading frame bytes are copied beside the frame for parsing (MACs, tags,
/// ethertype). This is a parse buffer, not a copy of the frame.
pub const PREFIX_LEN: usize = 32;
/// Shortest acceptable frame: an Ethernet header.
pub const MIN_FRAME_LEN: usize = 14;

/// A contiguous piece of a frame in guest memory (never crosses a memory region).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Segment {
    /// Guest physical address.
    pub addr: GuestAddress,
    /// Length in bytes (non-zero).
    pub len: u32,
    /// Host address of `addr`, valid while the batch's memory snapshot is held.
    host: usize,
}

/// Why a TX chain was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxChainError {
    /// A descriptor is write-only, empty, outside guest memory, or the chain is broken
    /// (loop, index out of range, bad indirect table, too many segments).
    BadDescriptor,
    /// The frame is longer than the port accepts.
    Oversize,
    /// The chain is shorter than a virtio-net header plus an Ethernet header.
    Runt,
}

/// The virtio-net header fields a consumer may care about (offload metadata).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
    fn parse(b: &[u8; 12]) -> Self {
        NetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16::from_le_bytes([b[2], b[3]]),
            gso_size: u16::from_le_bytes([b[4], b[5]]),
            csum_start: u16::from_le_bytes([b[6], b[7]]),
            csum_offset: u16::from_le_bytes([b[8], b[9]]),
        }
    }
}

/// One accepted TX frame: where it lies in guest memory, plus its first bytes for parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxFrame {
    seg_start: u32,
    seg_end: u32,
    len: u32,
    prefix: [u8; PREFIX_LEN],
    hdr: NetHdr,
}

/// Reusable storage for one batch: allocated once per port, cleared per batch.
pub struct TxScratch {
    pub(crate) heads: Vec<u16>,
    pub(crate) frames: Vec<TxFrame>,
    pub(crate) segs: Vec<Segment>,
    /// Where to look to tell, cheaply, whether the guest added chains since the last batch.
    pub(crate) peek: Option<AvailPeek>,
    /// Set while the ring is parked as broken (see `park.rs`).
    pub(crate) parked: Option<ParkedRing>,
}

impl Default for TxScratch {
    fn default() -> Self {
        TxScratch {
            heads: Vec::with_capacity(MAX_BATCH),
            frames: Vec::with_capacity(MAX_BATCH),
            segs: Vec::with_capacity(MAX_BATCH * 4),
            peek: None,
            parked: None,
        }
    }
}

impl TxScratch {
    pub(crate) fn clear(&mut self) {
        self.heads.clear();
        self.frames.clear();
        self.segs.clear();
    }
}

/// A batch of frames a guest transmitted, still in its memory. Valid only for the duration of
/// the [`crate::TxSink::on_tx`] call that receives it.
pub struct TxBatch<'a> {
    /// The frames' segments hold host addresses valid while this map's memory snapshot lives.
    _map: PhantomData<&'a GuestMap<'a>>,
    pub(crate) frames: &'a [TxFrame],
    pub(crate) segs: &'a [Segment],
    pub(crate) refused: TxBatchCounts,
}

impl<'a> TxBatch<'a> {
    /// Builds a batch view (used by the port, and by benchmarks that drive a sink directly).
    pub(crate) fn new(
        _map: &'a GuestMap<'a>,
        scratch: &'a TxScratch,
        refused: TxBatchCounts,
    ) -> Self {
        TxBatch {
            _map: PhantomData,
            frames: &scratch.frames,
            segs: &scratch.segs,
            refused,
        }
    }

    /// The chains of this batch the port refused (malformed, oversize, runt), already dropped.
    pub fn refused(&self) -> TxBatchCounts {
        self.refused
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

/// A frame that lies in some guest's memory: the source of a copy into another guest.
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
        let mut m = [0u8; 6];
        m.copy_from_slice(&self.prefix[0..6]);
        m
    }

    /// Source MAC address.
    pub fn src_mac(&self) -> [u8; 6] {
        let mut m = [0u8; 6];
        m.copy_from_slice(&self.prefix[6..12]);
        m
    }

    /// The virtio-net header the guest sent with the frame.
    pub fn net_hdr(&self) -> NetHdr {
        self.hdr
    }

    /// The frame's pieces in guest memory.
    pub fn segments(&self) -> &'a [Segment] {
        self.segs
    }

    /// Copies the frame into `out` (captures and tests; the datapath copies guest to guest),
    /// the same bytes a delivery writes (see [`FrameRef::delivery_pieces`]). Returns the bytes
    /// copied, `min(len, out.len())`.
    pub fn copy_to(&self, out: &mut [u8]) -> usize {
        let mut done = 0;
        for (src, len) in self.delivery_pieces() {
            if done >= out.len() {
                break;
            }
            let n = len.min(out.len() - done);
            // SAFETY: every piece is either this frame's prefix copy (ours) or a part of a
            // segment checked to lie in the source guest's memory, which the batch keeps mapped
            // while this `FrameRef` lives; `out[done..done + n]` is ours.
            unsafe { copy_guest(out[done..].as_mut_ptr() as usize, src, n) };
            done += n;
        }
        done
    }

    /// How many leading bytes a delivery takes from the prefix copy instead of guest memory.
    #[inline(always)]
    pub(crate) fn checked_len(&self) -> usize {
        self.len().min(PREFIX_LEN)
    }

    /// The frame as a delivery copies it, as (host address, length) pieces: first its leading
    /// [`FrameRef::checked_len`] bytes from the prefix copy the switch made its decisions on
    /// (addresses, tags), then the rest from guest memory. The guest can rewrite its buffer at
    /// any time; what it cannot do this way is deliver bytes other than those that were checked
    /// (a source MAC flipped between the check and the copy, say). The prefix was copied
    /// anyway for parsing, so this costs no extra copy of the frame.
    #[inline]
    pub(crate) fn delivery_pieces(&self) -> impl Iterator<Item = (usize, usize)> + 'a {
        std::iter::once((self.prefix.as_ptr() as usize, self.checked_len()))
            .chain(self.tail_segments())
    }

    /// Host address and length of each segment in guest memory (the fuzz harness checks them
    /// against guest memory; deliveries use [`FrameRef::delivery_pieces`]).
    #[inline]
    pub(crate) fn host_segments(&self) -> impl Iterator<Item = (usize, usize)> + 'a {
        self.segs.iter().map(|s| (s.host, s.len as usize))
    }

    /// The frame's pieces in guest memory after its first [`FrameRef::checked_len`] bytes.
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

/// Takes chains from `ring` into `scratch` (already cleared) until the batch is full
/// ([`MAX_BATCH`]), the ring is empty, or `reads` (descriptors read, the pass's running total)
/// reaches `budget`. Returns the batch's counts and whether the ring is broken (its avail
/// index moved by more than the ring size). The one loop of the TX drain: the port's and the
/// fuzz harness's.
#[inline(always)]
pub(crate) fn take_chains(
    ring: &mut SplitRing<'_>,
    scratch: &mut TxScratch,
    hdr_len: usize,
    max_frame: usize,
    reads: &mut u32,
    budget: u32,
) -> (TxBatchCounts, bool) {
    // Disjoint borrows, taken once: the loop keeps each vector's length and pointer in
    // registers instead of reloading them through `scratch` after every call.
    let TxScratch {
        heads,
        frames,
        segs,
        ..
    } = scratch;
    let mut counts = TxBatchCounts::default();
    let mut broken = false;
    while heads.len() < MAX_BATCH && *reads < budget {
        match ring.pop() {
            Ok(Some(head)) => {
                let r = parse_head(ring, head, hdr_len, max_frame, segs, reads);
                counts.count(&r);
                // A head beyond the table cannot be returned: it is dropped (and counted).
                if head < ring.size() {
                    heads.push(head);
                }
                if let Ok(f) = r {
                    frames.push(f);
                }
            }
            Ok(None) => break,
            Err(_) => {
                // The guest moved its avail index by more than the ring size.
                counts.bad_descriptor += 1;
                broken = true;
                break;
            }
        }
    }
    (counts, broken)
}

/// Validates the TX chain at `head` and records its segments (header stripped) in `segs`;
/// adds the descriptors it read (at least one per chain) to `reads`, which the drain charges
/// against its budget.
///
/// The two layouts drivers use for nearly every frame are recognised first: one descriptor
/// holding header and frame (VERSION_1 / ANY_LAYOUT drivers: Linux, DPDK), or a header
/// descriptor followed by one frame descriptor. A chain is taken on that path only when it is
/// plainly valid; anything else (more descriptors, indirect tables, and every malformed chain)
/// goes through the general walk, which alone decides how a bad chain is counted.
#[inline(always)]
pub(crate) fn parse_head(
    ring: &SplitRing<'_>,
    head: u16,
    hdr_len: usize,
    max_frame: usize,
    segs: &mut Vec<Segment>,
    reads: &mut u32,
) -> Result<TxFrame, TxChainError> {
    if let Some((f, n)) = parse_common_layout(ring, head, hdr_len, max_frame, segs) {
        *reads += n;
        return Ok(f);
    }
    let mut chain = ring.chain(head);
    let r = parse_chain(ring.map(), &mut chain, hdr_len, max_frame, segs);
    *reads += u32::from(chain.reads().max(1));
    r
}

/// The fast path of [`parse_head`]: `None` means "not one of the common layouts, or not
/// plainly valid" (nothing recorded), never an error. Returns the frame and the descriptors
/// it read (1 or 2).
#[inline(always)]
fn parse_common_layout(
    ring: &SplitRing<'_>,
    head: u16,
    hdr_len: usize,
    max_frame: usize,
    segs: &mut Vec<Segment>,
) -> Option<(TxFrame, u32)> {
    let map = ring.map();
    let d0 = ring.desc(head)?;
    if !d0.is_plain_readable() {
        return None;
    }
    let (hdr_host, frame_addr, frame_host, frame_len, reads) = if !d0.has_next() {
        // Header and frame in one buffer.
        let len = d0.len as usize;
        let frame_len = len.checked_sub(hdr_len)?;
        let host = map.host(d0.addr, len)?;
        (host, d0.addr + hdr_len as u64, host + hdr_len, frame_len, 1)
    } else {
        if d0.len as usize != hdr_len {
            return None;
        }
        let d1 = ring.desc(d0.next)?;
        if !d1.is_plain_readable() || d1.has_next() {
            return None;
        }
        let hdr_host = map.host(d0.addr, hdr_len)?;
        let frame_len = d1.len as usize;
        (
            hdr_host,
            d1.addr,
            map.host(d1.addr, frame_len)?,
            frame_len,
            2,
        )
    };
    if !(MIN_FRAME_LEN..=max_frame).contains(&frame_len) {
        return None;
    }
    let mut hdr = [0u8; 12];
    read_into(&mut hdr[..hdr_len.min(12)], hdr_host, hdr_len);
    let mut prefix = [0u8; PREFIX_LEN];
    read_into(&mut prefix, frame_host, frame_len.min(PREFIX_LEN));
    let start = segs.len();
    segs.push(Segment {
        addr: GuestAddress(frame_addr),
        len: frame_len as u32,
        host: frame_host,
    });
    Some((
        TxFrame {
            seg_start: start as u32,
            seg_end: start as u32 + 1,
            len: frame_len as u32,
            prefix,
            hdr: NetHdr::parse(&hdr),
        },
        reads,
    ))
}

/// Walks one TX chain, validating it and recording its segments (header stripped) in `segs`.
pub(crate) fn parse_chain(
    map: &GuestMap<'_>,
    chain: &mut Chain<'_, '_>,
    hdr_len: usize,
    max_frame: usize,
    segs: &mut Vec<Segment>,
) -> Result<TxFrame, TxChainError> {
    let start = segs.len();
    let result = walk_chain(map, chain, hdr_len, max_frame, segs);
    if result.is_err() {
        segs.truncate(start);
    }
    result
}

/// Copies `n` bytes of guest memory at host address `from` into `to[..n]`; the common sizes
/// (a whole header, a whole prefix) are typed loads the compiler turns into a few moves
/// (a memcpy with a variable length would be a library call per frame).
#[inline(always)]
fn read_into(to: &mut [u8], from: usize, n: usize) {
    let n = n.min(to.len());
    if n == 12 {
        // SAFETY: `from..from + 12` was translated by the batch's GuestMap (mapped for the
        // batch); `[u8; 12]` has alignment 1.
        let v: [u8; 12] = unsafe { std::ptr::read_unaligned(from as *const [u8; 12]) };
        to[..12].copy_from_slice(&v);
    } else if n == PREFIX_LEN {
        // SAFETY: as above, for PREFIX_LEN bytes.
        let v: [u8; PREFIX_LEN] =
            unsafe { std::ptr::read_unaligned(from as *const [u8; PREFIX_LEN]) };
        to[..PREFIX_LEN].copy_from_slice(&v);
    } else {
        // SAFETY: `from..from + n` is mapped (as above); `to[..n]` is a local buffer of at
        // least n bytes.
        unsafe { copy_guest(to.as_mut_ptr() as usize, from, n) };
    }
}

fn walk_chain(
    map: &GuestMap<'_>,
    chain: &mut Chain<'_, '_>,
    hdr_len: usize,
    max_frame: usize,
    segs: &mut Vec<Segment>,
) -> Result<TxFrame, TxChainError> {
    let start = segs.len();
    let mut hdr = [0u8; 12];
    let mut hdr_got = 0usize;
    let mut prefix = [0u8; PREFIX_LEN];
    let mut prefix_got = 0usize;
    let mut frame_len = 0usize;
    let mut count = 0usize;
    let mut oversize = false;

    for desc in chain {
        let Ok(desc) = desc else {
            return Err(TxChainError::BadDescriptor);
        };
        count += 1;
        if oversize {
            // Keep walking (bounded by the table size) only to tell a long chain from a
            // broken one: a loop is a bad descriptor, not an oversize frame.
            continue;
        }
        let len = desc.len as usize;
        if desc.write || len == 0 {
            return Err(TxChainError::BadDescriptor);
        }
        if frame_len + hdr_got + len > max_frame + hdr_len {
            oversize = true;
            continue;
        }
        // One translation per descriptor (split at memory-region boundaries, which is rare):
        // the pieces serve the header, the parse prefix and the segment list.
        let mut addr = desc.addr;
        let mut left = len;
        while left > 0 {
            let (host, n) = map.piece(addr, left).ok_or(TxChainError::BadDescriptor)?;
            let (mut host, mut n, mut at) = (host, n, addr);
            addr += n as u64;
            left -= n;
            if hdr_got < hdr_len {
                let take = n.min(hdr_len - hdr_got);
                read_into(&mut hdr[hdr_got..], host, take);
                hdr_got += take;
                if take == n {
                    continue;
                }
                host += take;
                n -= take;
                at += take as u64;
            }
            if prefix_got < PREFIX_LEN {
                let take = n.min(PREFIX_LEN - prefix_got);
                read_into(&mut prefix[prefix_got..], host, take);
                prefix_got += take;
            }
            if segs.len() - start >= MAX_SEGS_PER_FRAME {
                return Err(TxChainError::BadDescriptor);
            }
            frame_len += n;
            segs.push(Segment {
                addr: GuestAddress(at),
                len: n as u32,
                host,
            });
        }
    }
    if count == 0 {
        return Err(TxChainError::BadDescriptor);
    }
    if oversize {
        return Err(TxChainError::Oversize);
    }
    if hdr_got < hdr_len || frame_len < MIN_FRAME_LEN {
        return Err(TxChainError::Runt);
    }
    Ok(TxFrame {
        seg_start: start as u32,
        seg_end: segs.len() as u32,
        len: frame_len as u32,
        prefix,
        hdr: NetHdr::parse(&hdr),
    })
}

/// Outcome counters of one drain, added to the port's stats once per batch.
#[derive(Debug, Default, Clone, Copy)]
pub struct TxBatchCounts {
    /// Frames accepted.
    pub frames: u64,
    /// Bytes accepted.
    pub bytes: u64,
    /// Chains refused as malformed.
    pub bad_descriptor: u64,
    /// Frames refused as too long.
    pub oversize: u64,
    /// Chains refused as too short.
    pub runt: u64,
}

impl TxBatchCounts {
    pub(crate) fn count(&mut self, r: &Result<TxFrame, TxChainError>) {
        match r {
            Ok(f) => {
                self.frames += 1;
                self.bytes += u64::from(f.len);
            }
            Err(TxChainError::BadDescriptor) => self.bad_descriptor += 1,
            Err(TxChainError::Oversize) => self.oversize += 1,
            Err(TxChainError::Runt) => self.runt += 1,
        }
    }
}

#[cfg(test)]
mod tests;
