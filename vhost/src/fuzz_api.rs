//! Internals exposed for the fuzz targets and their corpus-replay tests (`tests/fuzz`): the TX
//! chain walker and the RX writer over a queue laid out in arbitrary guest memory, set up the
//! way the vhost-user handler sets up a connection's queues. Not a stable API.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use vhost_user_backend::VringT;
use vm_memory::GuestAddressSpace;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::frame::{FrameBatch, FrameRef};
use crate::mem_view::MemView;
use crate::memory::{GuestMemory, GuestMemoryAtomic, Vring};
use crate::ring::SplitRing;
use crate::rx::RxRing;
use crate::stats::PortStats;
use crate::tx::{take_chains, TxBatchCounts, TxScratch, MAX_BATCH, TX_PASS_BUDGET};

/// A queue's configuration as a frontend sets it (SET_VRING_NUM / ADDR / BASE, EVENT_IDX).
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueSetup {
    /// Ring size (refused by the queue unless a power of two up to `max_size`).
    pub size: u16,
    /// Largest size the port accepts.
    pub max_size: u16,
    /// Guest physical address of the descriptor table.
    pub desc: u64,
    /// Guest physical address of the avail ring.
    pub avail: u64,
    /// Guest physical address of the used ring.
    pub used: u64,
    /// SET_VRING_BASE.
    pub next_avail: u16,
    /// Where the device resumes writing used entries.
    pub next_used: u16,
    /// VIRTIO_RING_F_EVENT_IDX negotiated.
    pub event_idx: bool,
}

/// A vring configured as the vhost-user handler would from `setup` (invalid values are
/// refused by the queue exactly as they are for a frontend), ready and enabled. `None` when
/// even the queue object cannot be made (`max_size` 0 or not a power of two).
pub fn vring(mem: &GuestMemoryAtomic, setup: &QueueSetup) -> Option<Vring> {
    let v = Vring::new(mem.clone(), setup.max_size).ok()?;
    v.set_queue_size(setup.size);
    // An address breaking the alignment rules is refused and the queue keeps its old one,
    // as for SET_VRING_ADDR.
    let _ = v.set_queue_info(setup.desc, setup.avail, setup.used);
    v.set_queue_next_avail(setup.next_avail);
    v.set_queue_next_used(setup.next_used);
    v.set_queue_event_idx(setup.event_idx);
    v.set_queue_ready(true);
    v.set_enabled(true);
    Some(v)
}

/// Takes up to `max_batches` batches of chains from the TX ring `vring`, parsing each chain as
/// the port's drain does, hands each batch to `on_batch`, and returns the used entries to the
/// ring. Returns the batches' counts; `None` when the ring cannot be resolved in `mem`.
pub fn drain_tx(
    mem: &GuestMemory,
    vring: &Vring,
    hdr_len: usize,
    max_frame: usize,
    max_batches: usize,
    mut on_batch: impl FnMut(&FrameBatch<'_>, &TxBatchCounts),
) -> Option<TxBatchCounts> {
    let mut state = vring.get_mut();
    let mut ring = SplitRing::new(mem, state.get_queue())?;
    let mut scratch = TxScratch::default();
    let mut total = TxBatchCounts::default();
    for _ in 0..max_batches {
        scratch.clear();
        // One pass per batch, with the port's own budget.
        let mut reads = 0u32;
        let (counts, broken) = take_chains(
            &mut ring,
            &mut scratch,
            hdr_len,
            max_frame,
            // Every offload allowed: the header checks are fuzzed too.
            crate::offload::Offloads::host(u64::MAX),
            &mut reads,
            TX_PASS_BUDGET,
        );
        on_batch(&scratch.batch(), &counts);
        for &head in &scratch.heads {
            ring.push_used(head, 0);
        }
        ring.publish_used();
        ring.needs_notification();
        total.add(&counts);
        if broken || scratch.heads.len() < MAX_BATCH {
            break;
        }
    }
    ring.enable_notification();
    ring.store_back(state.get_queue_mut());
    Some(total)
}

/// The RX ring the switch delivers into, over `vring` in `mem`, with `features` acked. Its
/// memory is published (and registered with the SIGBUS handler) as a connection's is.
pub fn rx_ring(vring: Vring, mem: GuestMemoryAtomic, features: u64) -> std::io::Result<RxRing> {
    let fault = Arc::new(EventFd::new(EFD_NONBLOCK)?);
    let view = Arc::new(MemView::new(fault));
    view.publish(mem.memory().into_inner())?;
    Ok(RxRing {
        vrings: vec![vring],
        view,
        features: Arc::new(AtomicU64::new(features)),
        stats: Arc::new(PortStats::default()),
        log: Default::default(),
    })
}

/// The bytes a delivery of `frame` writes (its checked prefix, then the rest from its
/// segments): what the fuzz harness compares with what the guest sent.
pub fn delivered_bytes(frame: &FrameRef<'_>) -> Vec<u8> {
    let mut out = vec![0u8; frame.len()];
    frame.copy_to(&mut out);
    out
}

/// Host address and length of each segment of `frame` (what the RX writer copies from).
pub fn host_segments(frame: &FrameRef<'_>) -> Vec<(usize, usize)> {
    frame.host_segments().collect()
}

/// The RX ring's counters.
pub fn rx_stats(rx: &RxRing) -> crate::PortStatsSnapshot {
    rx.stats.snapshot()
}
