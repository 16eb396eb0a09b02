//! The guest's receive side: writing frames into its RX ring.
//!
//! Any thread may deliver into a port: it takes the port's RX ring once per batch
//! ([`RxRing::with_writer`]), delivers frames one by one, and then the used entries are
//! published with one store and the guest is notified once, honouring EVENT_IDX. A guest without buffers
//! costs the frame (counted), never blocks the caller. The guest's RX buffers are hostile input
//! like everything else in its memory: a malformed chain costs that frame and a counter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use vhost_user_backend::VringT;
use vm_memory::{Address, GuestAddressSpace, VolatileSlice};

use crate::features::Negotiated;
use crate::memory::{GuestMemoryAtomic, Regions, Vring};
use crate::ring::SplitRing;
use crate::stats::PortStats;
use crate::tx::FrameRef;

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
}

/// The RX ring of the current connection, as published by the port's backend.
pub struct RxRing {
    pub(crate) vring: Vring,
    pub(crate) mem: GuestMemoryAtomic,
    pub(crate) features: Arc<AtomicU64>,
    pub(crate) stats: Arc<PortStats>,
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
    /// Locks the ring for one batch of deliveries and runs `f` with a writer; afterwards the
    /// used entries are published with one store and the guest is notified once if it wants.
    /// Returns `None` (without calling `f`) while the ring is not running (not started,
    /// disabled, stopped, or its areas are not guest memory).
    pub fn with_writer<R>(&self, f: impl FnOnce(&mut RxWriter<'_>) -> R) -> Option<R> {
        let mut state = self.vring.get_mut();
        if !state.is_enabled() {
            return None;
        }
        let mem = self.mem.memory();
        let ring = SplitRing::new(&mem, state.get_queue())?;
        let neg = Negotiated::from_features(self.features.load(Ordering::Acquire));
        let mut w = RxWriter {
            regions: Regions::new(&mem),
            ring,
            neg,
            counts: RxCounts::default(),
            taken: [(0, 0); MAX_BUFFERS_PER_FRAME],
        };
        let r = f(&mut w);
        let RxWriter {
            mut ring, counts, ..
        } = w;
        ring.publish_used();
        let notify = ring.needs_notification();
        ring.store_back(state.get_queue_mut());
        let stats = &self.stats;
        PortStats::add(&stats.to_guest_frames, counts.frames);
        PortStats::add(&stats.to_guest_bytes, counts.bytes);
        PortStats::add(&stats.rx_no_buffer, counts.no_buffer);
        PortStats::add(&stats.rx_bad_descriptor, counts.bad_descriptor);
        PortStats::add(&stats.rx_oversize, counts.oversize);
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

/// A locked RX ring for one batch (see [`RxRing::with_writer`]).
pub struct RxWriter<'m> {
    ring: SplitRing<'m>,
    regions: Regions<'m>,
    neg: Negotiated,
    counts: RxCounts,
    /// (head, bytes written) of each chain taken for the frame being written; kept here so
    /// that it is initialised once per batch, not per frame.
    taken: [(u16, u32); MAX_BUFFERS_PER_FRAME],
}

/// The writer's position in the source frame.
struct SrcCursor<'a> {
    frame: FrameRef<'a>,
    seg: usize,
    off: usize,
}

impl SrcCursor<'_> {
    fn remaining_in_seg(&self) -> usize {
        self.frame
            .segs
            .get(self.seg)
            .map_or(0, |s| s.len as usize - self.off)
    }

    fn done(&self) -> bool {
        self.seg >= self.frame.segs.len()
    }

    fn advance(&mut self, n: usize) {
        self.off += n;
        if let Some(s) = self.frame.segs.get(self.seg) {
            if self.off >= s.len as usize {
                self.seg += 1;
                self.off = 0;
            }
        }
    }
}

impl RxWriter<'_> {
    /// Writes one frame (copied once, straight from the source guest's memory) with its
    /// virtio-net header. On error nothing is published for this frame and the reason is
    /// counted on this port.
    pub fn deliver(&mut self, frame: FrameRef<'_>) -> Result<(), RxDrop> {
        match self.try_deliver(frame) {
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
                }
                Err(e)
            }
        }
    }

    fn try_deliver(&mut self, frame: FrameRef<'_>) -> Result<(), RxDrop> {
        let hdr_len = self.neg.hdr_len;
        let max_chains = if self.neg.mrg_rxbuf {
            MAX_BUFFERS_PER_FRAME
        } else {
            1
        };
        let ring = &mut self.ring;
        let regions = &self.regions;
        let size = ring.size();
        let taken = &mut self.taken;
        let mut ntaken = 0usize;
        let mut hdr_slot: Option<VolatileSlice<'_, ()>> = None;
        let mut src = SrcCursor {
            frame,
            seg: 0,
            off: 0,
        };

        let outcome: Result<(), RxDrop> = loop {
            if src.done() && hdr_slot.is_some() {
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
                break Err(RxDrop::BadDescriptor);
            }
            taken[ntaken] = (head, 0);
            ntaken += 1;
            let mut written = 0u32;
            let mut bad = false;
            for desc in ring.chain(head) {
                let Ok(desc) = desc else {
                    bad = true;
                    break;
                };
                if !desc.write || desc.len == 0 {
                    bad = true;
                    break;
                }
                // One lookup per descriptor (split at memory-region boundaries).
                for dst in regions.slices(desc.addr, desc.len as usize) {
                    let Some(mut dst) = dst else {
                        bad = true;
                        break;
                    };
                    if hdr_slot.is_none() {
                        // The header must sit at the start of the first buffer (every driver
                        // does this); it is written last, once num_buffers is known.
                        let (Ok(h), Ok(rest)) = (dst.subslice(0, hdr_len), dst.offset(hdr_len))
                        else {
                            bad = true;
                            break;
                        };
                        hdr_slot = Some(h);
                        written += hdr_len as u32;
                        dst = rest;
                    }
                    if src.done() {
                        break;
                    }
                    match copy_into(dst, &mut src) {
                        Ok(n) => written += n as u32,
                        Err(()) => {
                            bad = true;
                            break;
                        }
                    }
                }
                if bad || src.done() {
                    break;
                }
            }
            taken[ntaken - 1].1 = written;
            if bad {
                break Err(RxDrop::BadDescriptor);
            }
        };

        match outcome {
            Ok(()) => {
                let Some(hdr_at) = hdr_slot else {
                    return Err(RxDrop::BadDescriptor);
                };
                let mut hdr = [0u8; 12];
                hdr[10..12].copy_from_slice(&(ntaken as u16).to_le_bytes());
                hdr_at.copy_from(&hdr[..hdr_len]);
                for &(head, len) in &taken[..ntaken] {
                    ring.push_used(head, len);
                }
                Ok(())
            }
            Err(RxDrop::BadDescriptor) => {
                // The guest posted a malformed buffer: give back every chain this frame took
                // (as empty) so a bad chain cannot wedge the ring.
                for &(head, _) in &taken[..ntaken] {
                    ring.push_used(head, 0);
                }
                Err(RxDrop::BadDescriptor)
            }
            Err(e) => {
                // Not enough room: nothing was published; the chains stay available.
                ring.unpop(ntaken as u16);
                Err(e)
            }
        }
    }
}

/// Copies from the source cursor into `dst` (destination guest memory) until either is
/// exhausted. Returns the bytes written; `Err` if a source segment is no longer guest memory.
fn copy_into(dst: VolatileSlice<'_, ()>, src: &mut SrcCursor<'_>) -> Result<usize, ()> {
    let mut doff = 0usize;
    while doff < dst.len() && !src.done() {
        let seg = src.frame.segs[src.seg];
        let n = src.remaining_in_seg().min(dst.len() - doff);
        let from = seg
            .addr
            .checked_add(src.off as u64)
            .ok_or(())
            .and_then(|a| src.frame.regions.slice(a, n).ok_or(()))?;
        let to = dst.subslice(doff, n).map_err(|_| ())?;
        from.copy_to_volatile_slice(to);
        doff += n;
        src.advance(n);
    }
    Ok(doff)
}
