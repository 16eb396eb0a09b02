//! The guest's transmit side: turning TX descriptor chains into frames that stay in guest memory.
//!
//! Every chain is hostile input. A chain is accepted only when every descriptor is
//! device-readable, non-empty and lies inside guest memory, the chain ends properly (no loop,
//! no index beyond the queue, no broken indirect table), the total stays within the port's
//! maximum, and it holds at least a virtio-net header and an Ethernet header. Anything else
//! costs that one chain and a counter.

use vm_memory::GuestAddress;

use crate::frame::{FrameSlot, NetHdr, Segment, MIN_FRAME_LEN};
use crate::memory::{copy_guest, GuestMap};
use crate::offload::{Offloads, MAX_GSO_FRAME};
use crate::ring::{ChainError, Desc, SplitRing};

mod packed;
use crate::wire::{net_hdr, PREFIX_LEN};
pub(crate) use packed::take_packed_chains;

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
    /// The virtio-net header asks for an offload the guest did not negotiate, or lies about
    /// the frame (see `tx/hdr.rs`).
    BadOffload,
}

/// Storage for one TX batch, owned by the thread that drains TX rings: allocated once,
/// cleared per batch, shared by every port that thread serves (one batch is in flight at a
/// time), so it is never locked.
pub struct TxScratch {
    pub(crate) heads: Vec<u16>,
    /// For a packed ring: the slots each chain of `heads` (buffer ids) takes.
    pub(crate) slots: Vec<u16>,
    pub(crate) frames: Vec<FrameSlot>,
    pub(crate) segs: Vec<Segment>,
}

impl Default for TxScratch {
    fn default() -> Self {
        TxScratch {
            heads: Vec::with_capacity(MAX_BATCH),
            slots: Vec::with_capacity(MAX_BATCH),
            frames: Vec::with_capacity(MAX_BATCH),
            segs: Vec::with_capacity(MAX_BATCH * 4),
        }
    }
}

impl TxScratch {
    pub(crate) fn clear(&mut self) {
        self.heads.clear();
        self.slots.clear();
        self.frames.clear();
        self.segs.clear();
    }

    /// The frames of the batch taken last.
    pub(crate) fn batch(&self) -> crate::FrameBatch<'_> {
        crate::FrameBatch::new(&self.frames, &self.segs)
    }
}

/// Takes chains from `ring` into `scratch` (already cleared) until the batch is full
/// ([`MAX_BATCH`]), the ring is empty, or `reads` (descriptors read, the pass's running total)
/// reaches `budget`. Frames longer than `max_frame` are refused unless they are GSO frames of a
/// guest that negotiated segmentation (`offloads`), up to [`MAX_GSO_FRAME`]; every header is
/// checked (`tx/hdr.rs`). Returns the batch's counts and whether the ring is broken (its avail
/// index moved by more than the ring size). The one loop of the TX drain: the port's and the
/// fuzz harness's.
#[inline(always)]
pub(crate) fn take_chains(
    ring: &mut SplitRing<'_>,
    scratch: &mut TxScratch,
    hdr_len: usize,
    max_frame: usize,
    offloads: Offloads,
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
    let walk_max = walk_max(offloads, max_frame);
    while heads.len() < MAX_BATCH && *reads < budget {
        match ring.pop() {
            Ok(Some(head)) => {
                let r = parse_head(ring, head, hdr_len, walk_max, segs, reads);
                // A head beyond the table cannot be returned: it is dropped (and counted).
                if head < ring.size() {
                    heads.push(head);
                }
                match r {
                    Ok(f) => {
                        // The header is checked in place, in the batch (no copy of the slot).
                        frames.push(f);
                        if let Some(f) = frames.last_mut() {
                            match hdr::check_header(f, segs, offloads, max_frame) {
                                Ok(()) => counts.count_frame(f.len),
                                Err(e) => {
                                    segs.truncate(f.seg_start as usize);
                                    frames.pop();
                                    counts.count(&Err(e));
                                }
                            }
                        }
                    }
                    Err(_) => counts.count(&r),
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

/// The longest frame a chain walk accepts: a GSO frame when the guest may send them (the
/// header, checked after the walk, decides whether a frame longer than `max_frame` passes).
#[inline(always)]
fn walk_max(offloads: Offloads, max_frame: usize) -> usize {
    if offloads.any_gso() {
        MAX_GSO_FRAME.max(max_frame)
    } else {
        max_frame
    }
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
) -> Result<FrameSlot, TxChainError> {
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
) -> Option<(FrameSlot, u32)> {
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
    let mut hdr = [0u8; net_hdr::LEN];
    read_into(&mut hdr[..hdr_len.min(net_hdr::LEN)], hdr_host, hdr_len);
    let mut prefix = [0u8; PREFIX_LEN];
    read_into(&mut prefix, frame_host, frame_len.min(PREFIX_LEN));
    let start = segs.len();
    segs.push(Segment {
        addr: GuestAddress(frame_addr),
        len: frame_len as u32,
        host: frame_host,
    });
    Some((
        FrameSlot {
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
    chain: &mut impl Iterator<Item = Result<Desc, ChainError>>,
    hdr_len: usize,
    max_frame: usize,
    segs: &mut Vec<Segment>,
) -> Result<FrameSlot, TxChainError> {
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
    if n == net_hdr::LEN {
        // SAFETY: `from..from + net_hdr::LEN` was translated by the batch's GuestMap (mapped
        // for the batch); a byte array has alignment 1.
        let v: [u8; net_hdr::LEN] =
            unsafe { std::ptr::read_unaligned(from as *const [u8; net_hdr::LEN]) };
        to[..net_hdr::LEN].copy_from_slice(&v);
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
    chain: &mut impl Iterator<Item = Result<Desc, ChainError>>,
    hdr_len: usize,
    max_frame: usize,
    segs: &mut Vec<Segment>,
) -> Result<FrameSlot, TxChainError> {
    let start = segs.len();
    let mut hdr = [0u8; net_hdr::LEN];
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
    Ok(FrameSlot {
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
    /// Frames refused for their virtio-net header (an offload not negotiated, or a lie).
    pub bad_offload: u64,
}

impl TxBatchCounts {
    /// Adds another batch's counts.
    pub fn add(&mut self, o: &TxBatchCounts) {
        self.frames += o.frames;
        self.bytes += o.bytes;
        self.bad_descriptor += o.bad_descriptor;
        self.oversize += o.oversize;
        self.runt += o.runt;
        self.bad_offload += o.bad_offload;
    }

    /// Chains refused (malformed, oversize, runt, bad offload header).
    pub fn refused(&self) -> u64 {
        self.bad_descriptor + self.oversize + self.runt + self.bad_offload
    }

    /// Counts one accepted frame of `len` bytes.
    #[inline(always)]
    pub(crate) fn count_frame(&mut self, len: u32) {
        self.frames += 1;
        self.bytes += u64::from(len);
    }

    pub(crate) fn count(&mut self, r: &Result<FrameSlot, TxChainError>) {
        match r {
            Ok(f) => self.count_frame(f.len),
            Err(TxChainError::BadDescriptor) => self.bad_descriptor += 1,
            Err(TxChainError::Oversize) => self.oversize += 1,
            Err(TxChainError::Runt) => self.runt += 1,
            Err(TxChainError::BadOffload) => self.bad_offload += 1,
        }
    }
}

mod hdr;
#[cfg(test)]
mod tests;
