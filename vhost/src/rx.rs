//! The guest's receive side: writing frames into its RX ring.
//!
//! Any thread may deliver into a port: it takes the port's RX ring once per batch
//! ([`RxRing::with_writer`]), delivers frames one by one, and then the used entries are
//! published with one store and the guest is notified once, honouring EVENT_IDX. A guest without buffers
//! costs the frame (counted), never blocks the caller, so nothing waits for the guest's RX
//! kicks: the used ring asks it not to send any (`SplitRing::suppress_kicks`). The guest's RX buffers are hostile input
//! like everything else in its memory: a malformed chain costs that frame and a counter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use vhost_user_backend::VringT;
use virtio_queue::QueueT;

use crate::dirty_log::{self, DirtyLog, LogMap};
use crate::features::Negotiated;
use crate::frame::FrameRef;
use crate::mem_view::MemView;
use crate::memory::{copy_guest, write_guest, Vring};
use crate::ring::{ChainError, Desc, PackedRing, SplitRing};
use crate::stats::PortStats;
use crate::wire::{net_hdr, PREFIX_LEN};

pub(crate) mod packed;

/// Most RX chains one frame may take (mergeable buffers).
const MAX_BUFFERS_PER_FRAME: usize = 256;

/// Why a frame was not written into a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxDrop {
    /// No (or not enough) RX buffers, or the ring is not running.
    NoBuffer,
    /// The guest's RX chain is malformed.
    BadDescriptor,
    /// The frame does not fit the guest's buffers (no mergeable buffers negotiated).
    Oversize,
    /// The frame's virtio-net header asks for an offload the guest did not negotiate
    /// ([`RxWriter::offloads`]): the caller finishes the frame in software first
    /// ([`crate::offload`]). Not counted here.
    Offload,
}

/// The RX rings of the current connection (one per queue pair, pair 0 first), as published
/// by the port's backend.
pub struct RxRing {
    pub(crate) vrings: Vec<Vring>,
    pub(crate) view: Arc<MemView>,
    pub(crate) features: Arc<AtomicU64>,
    pub(crate) stats: Arc<PortStats>,
    pub(crate) log: Arc<DirtyLog>,
}

/// Where other threads find a port's RX ring. Empty while no frontend is connected.
#[derive(Default)]
pub struct RxQueue {
    ring: ArcSwapOption<RxRing>,
}

impl RxQueue {
    pub(crate) fn publish(&self, ring: Option<Arc<RxRing>>) {
        self.ring.store(ring);
    }

    /// The current ring, if a frontend is connected. Hold it for one batch.
    pub fn ring(&self) -> Option<Arc<RxRing>> {
        self.ring.load_full()
    }

    /// True while a frontend's RX ring is published.
    pub fn is_attached(&self) -> bool {
        self.ring.load().is_some()
    }
}

impl RxRing {
    /// Queue pairs of the port (RX rings, running or not).
    #[inline]
    pub fn queue_pairs(&self) -> usize {
        self.vrings.len()
    }

    /// The RX queues a delivery may use now, bit k for pair k: enabled by the frontend
    /// (SET_VRING_ENABLE, or every ring when it did not negotiate PROTOCOL_FEATURES) and set
    /// up. Locks each ring once: call it once per batch, for a port with several pairs.
    pub fn usable_queues(&self) -> u32 {
        let mut mask = 0u32;
        for (k, vring) in self.vrings.iter().enumerate().take(32) {
            let state = vring.get_ref();
            if state.is_enabled() && state.get_queue().ready() {
                mask |= 1 << k;
            }
        }
        mask
    }

    /// [`RxRing::with_queue_writer`] on queue pair 0.
    #[inline]
    pub fn with_writer<R>(&self, f: impl FnOnce(&mut RxWriter<'_>) -> R) -> Option<R> {
        self.with_queue_writer(0, f)
    }

    /// Locks the RX ring of queue pair `pair` for one batch of deliveries and runs `f` with a
    /// writer; afterwards the used entries are published with one store and the guest is
    /// notified once if it wants. Returns `None` (without calling `f`) while the ring is not
    /// running (not started, disabled, stopped, or its areas are not guest memory), or for a
    /// pair the port does not have.
    pub fn with_queue_writer<R>(
        &self,
        pair: usize,
        f: impl FnOnce(&mut RxWriter<'_>) -> R,
    ) -> Option<R> {
        let mut state = self.vrings.get(pair)?.get_mut();
        if !state.is_enabled() {
            return None;
        }
        let mem = self.view.peek();
        let neg = Negotiated::from_features(self.features.load(Ordering::Acquire));
        // The switch never waits for RX buffers: the guest is asked never to kick an RX queue.
        let ring = if neg.packed {
            let mut ring = PackedRing::new(mem.mem(), state.get_queue())?;
            ring.suppress_kicks();
            AnyRing::Packed(ring)
        } else {
            let mut ring = SplitRing::new(mem.mem(), state.get_queue())?;
            ring.suppress_kicks();
            AnyRing::Split(ring)
        };
        let mut w = RxWriter {
            ring,
            neg,
            counts: RxCounts::default(),
            log: self.log.active(),
        };
        let r = f(&mut w);
        let RxWriter {
            ring, counts, log, ..
        } = w;
        let notify = match ring {
            AnyRing::Split(mut ring) => {
                if let Some(log) = &log {
                    dirty_log::mark_buffers(log, &ring);
                }
                ring.publish_used();
                if let Some(log) = &log {
                    dirty_log::mark_used_ring(log, &ring, &self.log);
                }
                let notify = ring.needs_notification();
                ring.store_back(state.get_queue_mut());
                notify
            }
            AnyRing::Packed(mut ring) => {
                // The packed path marked each frame's buffers as it wrote them.
                ring.publish_used();
                if let Some(log) = &log {
                    dirty_log::mark_used_ring(log, &ring, &self.log);
                }
                let notify = ring.needs_notification();
                ring.store_back(state.get_queue_mut());
                notify
            }
        };
        let stats = &self.stats;
        PortStats::add(&stats.to_guest_frames, counts.frames);
        PortStats::add(&stats.to_guest_bytes, counts.bytes);
        PortStats::add(&stats.rx_no_buffer, counts.no_buffer);
        PortStats::add(&stats.rx_bad_descriptor, counts.bad_descriptor);
        PortStats::add(&stats.rx_oversize, counts.oversize);
        let q = stats.queues.pair(pair);
        PortStats::add(&q.to_guest_frames, counts.frames);
        PortStats::add(&q.to_guest_bytes, counts.bytes);
        if notify {
            match state.signal_used_queue() {
                Ok(()) => PortStats::add(&stats.notifications, 1),
                Err(e) => log::debug!("rx notify failed: {e}"),
            }
        }
        Some(r)
    }

    /// Counts frames that could not even be offered to this ring (ring not running).
    pub fn count_not_running(&self, frames: u64) {
        PortStats::add(&self.stats.rx_no_buffer, frames);
    }
}

#[derive(Default)]
struct RxCounts {
    frames: u64,
    bytes: u64,
    no_buffer: u64,
    bad_descriptor: u64,
    oversize: u64,
}

/// The ring layout the frontend negotiated, decided once per batch.
enum AnyRing<'m> {
    Split(SplitRing<'m>),
    Packed(PackedRing<'m>),
}

/// A locked RX ring for one batch (see [`RxRing::with_writer`]).
pub struct RxWriter<'m> {
    ring: AnyRing<'m>,
    neg: Negotiated,
    counts: RxCounts,
    /// The dirty log while the guest migrates (`dirty_log.rs`), `None` otherwise.
    log: Option<Arc<LogMap>>,
}

impl RxWriter<'_> {
    /// The offloads this guest negotiated to receive: a frame whose header asks for more is
    /// refused ([`RxDrop::Offload`]).
    #[inline]
    pub fn offloads(&self) -> crate::offload::Offloads {
        self.neg.rx_offloads
    }

    /// Writes one frame (copied once, straight from the source guest's memory) with its
    /// virtio-net header. On error nothing is published for this frame and the reason is
    /// counted on this port.
    #[inline(always)]
    pub fn deliver(&mut self, frame: FrameRef<'_>) -> Result<(), RxDrop> {
        if !self.neg.rx_offloads.covers(&frame.hdr) {
            return Err(RxDrop::Offload);
        }
        // The common buffer layout inline in the caller's loop; anything else out of line.
        let r = match &mut self.ring {
            AnyRing::Split(ring) => match deliver_common_layout(ring, self.neg.hdr_len, frame) {
                Some(r) => r,
                None => self.deliver_general(frame),
            },
            AnyRing::Packed(ring) => packed::deliver(ring, &self.neg, frame, self.log.as_deref()),
        };
        match r {
            Ok(()) => {
                self.counts.frames += 1;
                self.counts.bytes += frame.len() as u64;
                Ok(())
            }
            Err(e) => {
                match e {
                    RxDrop::NoBuffer => self.counts.no_buffer += 1,
                    RxDrop::BadDescriptor => self.counts.bad_descriptor += 1,
                    RxDrop::Oversize => self.counts.oversize += 1,
                    RxDrop::Offload => {}
                }
                Err(e)
            }
        }
    }

    /// Any buffer layout: chains of several descriptors, indirect tables, mergeable buffers
    /// spanning several chains, and every malformed chain.
    #[inline(never)]
    fn deliver_general(&mut self, frame: FrameRef<'_>) -> Result<(), RxDrop> {
        let hdr_len = self.neg.hdr_len;
        let max_chains = if self.neg.mrg_rxbuf {
            MAX_BUFFERS_PER_FRAME
        } else {
            1
        };
        let AnyRing::Split(ring) = &mut self.ring else {
            return Err(RxDrop::BadDescriptor); // never: packed rings deliver in `packed.rs`
        };
        let size = ring.size();
        // Each chain the frame takes is recorded in the used ring as soon as it is filled (not
        // visible to the guest before the batch publishes the used index), so a frame that
        // fails is undone by rewinding the ring's private indices.
        let used_mark = ring.used_mark();
        let mut ntaken = 0usize;
        // Host address of the header slot at the start of the first buffer.
        let mut hdr_at: Option<usize> = None;
        // What was checked is what is delivered: the leading bytes come from the checked
        // prefix copy (see FrameRef::delivery_pieces).
        let mut src = frame.delivery_pieces();
        // The source piece not yet copied: (host address, bytes left).
        let mut cur = src.next().unwrap_or((0, 0));

        let outcome: Result<(), RxDrop> = loop {
            if cur.1 == 0 && hdr_at.is_some() {
                break Ok(());
            }
            if ntaken == max_chains {
                // Without mergeable buffers one chain must hold the whole frame.
                break Err(RxDrop::Oversize);
            }
            let head = match ring.pop() {
                Ok(Some(h)) => h,
                Ok(None) => break Err(RxDrop::NoBuffer),
                Err(_) => break Err(RxDrop::BadDescriptor),
            };
            if head >= size {
                // Cannot even be returned: the chain is lost (and the frame counted).
                break Err(RxDrop::BadDescriptor);
            }
            ntaken += 1;
            match fill_chain(ring, head, hdr_len, &mut hdr_at, &mut cur, &mut src) {
                Ok(written) => ring.push_used(head, written),
                Err(()) => {
                    ring.push_used(head, 0);
                    break Err(RxDrop::BadDescriptor);
                }
            }
        };

        match outcome {
            Ok(()) => {
                let Some(hdr_at) = hdr_at else {
                    return Err(RxDrop::BadDescriptor);
                };
                let hdr = frame.hdr.for_rx(ntaken as u16);
                if hdr_len == net_hdr::LEN {
                    // SAFETY: the first buffer was checked to hold at least hdr_len bytes at
                    // `hdr_at` (mapped for the batch).
                    unsafe { write_guest(hdr_at, hdr) };
                } else {
                    // SAFETY: as above; `hdr` has LEN >= hdr_len bytes.
                    unsafe { copy_guest(hdr_at, hdr.as_ptr() as usize, hdr_len) };
                }
                Ok(())
            }
            Err(RxDrop::BadDescriptor) => {
                // The guest posted a malformed buffer: every chain this frame took goes back
                // empty, so a bad chain cannot wedge the ring.
                ring.zero_used_lens_since(used_mark);
                Err(RxDrop::BadDescriptor)
            }
            Err(e) => {
                // Not enough room: nothing is published; the chains stay available.
                ring.rewind_used(used_mark);
                ring.unpop(ntaken as u16);
                Err(e)
            }
        }
    }
}

/// The fast path of delivery: the next RX chain is one plain writable buffer large enough
/// for header and frame (what Linux and DPDK drivers post). `None`: not that case (the chain
/// is left available for the general path), nothing written.
#[inline(always)]
fn deliver_common_layout(
    ring: &mut SplitRing<'_>,
    hdr_len: usize,
    frame: FrameRef<'_>,
) -> Option<Result<(), RxDrop>> {
    let total = hdr_len + frame.len();
    let head = match ring.pop() {
        Ok(Some(h)) => h,
        Ok(None) => return Some(Err(RxDrop::NoBuffer)),
        Err(_) => return None,
    };
    let fast = ring
        .desc(head)
        .filter(|d| d.is_plain_writable() && !d.has_next() && d.len as usize >= total)
        .and_then(|d| ring.map().host(d.addr, total));
    let Some(at) = fast else {
        ring.unpop(1);
        return None;
    };
    let hdr = frame.hdr.for_rx(1);
    if hdr_len == net_hdr::LEN {
        // SAFETY: `at..at + total` is mapped for the batch and total >= hdr_len = LEN.
        unsafe { write_guest(at, hdr) };
    } else {
        // SAFETY: as above; `hdr` has LEN >= hdr_len bytes.
        unsafe { copy_guest(at, hdr.as_ptr() as usize, hdr_len) };
    }
    // The frame's leading bytes from the prefix copy the switch checked (not from guest
    // memory, which the sender may have rewritten since), the rest from guest memory: see
    // FrameRef::delivery_pieces.
    let mut dst = at + hdr_len;
    let checked = frame.checked_len();
    if checked == PREFIX_LEN {
        // SAFETY: frame.len() >= PREFIX_LEN here, so `dst..dst + PREFIX_LEN` lies inside
        // `at + hdr_len..at + total` (mapped for the batch).
        unsafe { write_guest(dst, *frame.prefix) };
    } else {
        // SAFETY: as above for `checked` = frame.len() bytes; the prefix is a local copy of at
        // least that many bytes.
        unsafe { copy_guest(dst, frame.prefix.as_ptr() as usize, checked) };
    }
    dst += checked;
    for (src, n) in frame.tail_segments() {
        // SAFETY: the pieces add up to frame.len() - checked, so every piece lands inside
        // `at + hdr_len..at + total` (mapped for the batch); the source pieces were checked
        // when the frame was parsed and are mapped for the source batch.
        unsafe { copy_guest(dst, src, n) };
        dst += n;
    }
    ring.push_used(head, total as u32);
    Some(Ok(()))
}

/// Writes as much of the frame as fits into the chain at `head` (the header slot first, if the
/// frame has none yet). Returns the bytes written; `Err` when the chain is malformed.
#[inline(always)]
fn fill_chain(
    ring: &SplitRing<'_>,
    head: u16,
    hdr_len: usize,
    hdr_at: &mut Option<usize>,
    cur: &mut (usize, usize),
    src: &mut impl Iterator<Item = (usize, usize)>,
) -> Result<u32, ()> {
    fill_descs(ring.map(), ring.chain(head), hdr_len, hdr_at, cur, src)
}

/// [`fill_chain`] over the descriptors of any ring's chain.
#[inline(always)]
fn fill_descs(
    map: &crate::memory::GuestMap<'_>,
    chain: impl Iterator<Item = Result<Desc, ChainError>>,
    hdr_len: usize,
    hdr_at: &mut Option<usize>,
    cur: &mut (usize, usize),
    src: &mut impl Iterator<Item = (usize, usize)>,
) -> Result<u32, ()> {
    let mut written = 0u32;
    for desc in chain {
        let desc = desc.map_err(|_| ())?;
        if !desc.write || desc.len == 0 {
            return Err(());
        }
        // One translation per descriptor (split at memory-region boundaries, rare).
        let (mut addr, mut left) = (desc.addr, desc.len as usize);
        while left > 0 {
            let (mut dst, mut room) = map.piece(addr, left).ok_or(())?;
            addr += room as u64;
            left -= room;
            if hdr_at.is_none() {
                // The header must sit at the start of the first buffer (every driver does
                // this); it is written last, once num_buffers is known.
                if room < hdr_len {
                    return Err(());
                }
                *hdr_at = Some(dst);
                written += hdr_len as u32;
                dst += hdr_len;
                room -= hdr_len;
            }
            while room > 0 && cur.1 > 0 {
                let n = room.min(cur.1);
                // SAFETY: `dst..dst + room` was translated in this guest's memory map (held for
                // the batch); `cur` is a piece of a source segment checked when the frame was
                // parsed, in the source guest's memory, mapped for the source batch.
                unsafe { copy_guest(dst, cur.0, n) };
                dst += n;
                room -= n;
                written += n as u32;
                cur.0 += n;
                cur.1 -= n;
                if cur.1 == 0 {
                    *cur = src.next().unwrap_or((0, 0));
                }
            }
            if cur.1 == 0 {
                return Ok(written);
            }
        }
    }
    Ok(written)
}
