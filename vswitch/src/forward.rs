//! Forwarding one batch: stamp, ingress checks, learning, destination choice, then the delivery
//! check and the copy, grouped per destination.
//!
//! The two halves are kept apart on purpose. [`plan_frame`] decides where a frame *should* go
//! (FDB, flooding); [`admit`] decides whether it *may* go there, from the destination's own
//! registry entry and the policy only. A wrong plan (stale or poisoned FDB, a racing
//! re-association) can therefore misroute a frame but never deliver it across channels.

use vswitch_channels::{ChannelId, MacAddr, PortId, RegistrySnapshot};
use vswitch_vhost::{RxDrop, TxBatch};

use crate::counters::{DropReason, Drops};
use crate::fdb::{Fdb, Learn};
use crate::switch::{Core, PolicyTable, PortTable};

/// Per-port reusable forwarding state (allocated once; never grows after warm-up).
#[derive(Debug, Default)]
pub struct Scratch {
    /// (destination port, frame index) pairs of the current batch.
    pub dests: Vec<(u32, u16)>,
}

/// What the ingress side decided for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    /// Accepted; `copies` destinations were planned, `flooded` of them by flooding.
    Accepted {
        /// Destinations planned.
        copies: u32,
        /// Of which by flooding.
        flooded: u32,
    },
    /// Dropped at ingress.
    Dropped(DropReason),
}

/// The decision for the previous frame of a batch, reused for a frame with the same addresses.
#[derive(Clone, Copy)]
struct Planned {
    src: [u8; 6],
    dst: [u8; 6],
    ingress: Ingress,
    start: usize,
    end: usize,
}

/// The sending port, as the planner needs it.
#[derive(Debug, Clone, Copy)]
pub struct Sender {
    /// Port id.
    pub port: PortId,
    /// The frame's channel: the sender's registry entry at batch start (the stamp).
    pub channel: ChannelId,
    /// Configured MAC, if the port is MAC-locked.
    pub mac: Option<MacAddr>,
    /// MAC learning limit.
    pub mac_limit: u32,
}

/// Decides the destinations of one frame and appends `(port, idx)` pairs to `dests`.
#[allow(clippy::too_many_arguments)]
pub fn plan_frame(
    reg: &RegistrySnapshot,
    policy: &PolicyTable,
    fdb: &Fdb,
    now: u32,
    from: &Sender,
    src: [u8; 6],
    dst: [u8; 6],
    idx: u16,
    dests: &mut Vec<(u32, u16)>,
) -> Ingress {
    let smac = MacAddr::new(src);
    if smac.is_multicast() || from.mac.is_some_and(|m| m != smac) {
        return Ingress::Dropped(DropReason::SourceSpoof);
    }
    if fdb.learn(from.channel, &src, from.port, from.mac_limit, now) == Learn::LimitReached {
        return Ingress::Dropped(DropReason::MacLimit);
    }
    let dmac = MacAddr::new(dst);
    if !dmac.is_multicast() {
        if let Some(q) = fdb.lookup(from.channel, &dst, now) {
            return unicast(from.port, q, idx, dests);
        }
        for &other in policy.reach(from.channel) {
            if let Some(q) = fdb.lookup(other, &dst, now) {
                return unicast(from.port, q, idx, dests);
            }
        }
    }
    // Broadcast, multicast, unknown unicast: every other port of the channel, and of the
    // channels the policy lets this one reach.
    let mut copies = 0u32;
    for ch in std::iter::once(&from.channel).chain(policy.reach(from.channel)) {
        for &q in reg.ports_in(*ch) {
            if q != from.port {
                dests.push((q.get(), idx));
                copies += 1;
            }
        }
    }
    Ingress::Accepted {
        copies,
        flooded: copies,
    }
}

fn unicast(src: PortId, q: PortId, idx: u16, dests: &mut Vec<(u32, u16)>) -> Ingress {
    if q == src {
        // The destination is behind the sender itself: nothing to do (not a drop).
        return Ingress::Accepted {
            copies: 0,
            flooded: 0,
        };
    }
    dests.push((q.get(), idx));
    Ingress::Accepted {
        copies: 1,
        flooded: 0,
    }
}

/// The delivery check: may a frame stamped `frame` enter the RX ring of port `dest`? Looks the
/// destination up in the registry by its own identity; returns its channel when admitted.
#[inline]
pub fn admit(
    reg: &RegistrySnapshot,
    policy: &PolicyTable,
    frame: ChannelId,
    dest: PortId,
) -> Result<ChannelId, DropReason> {
    match reg.channel_of(dest) {
        None => Err(DropReason::UnknownChannel),
        Some(info) if policy.policy().admits(frame, info.id) => Ok(info.id),
        Some(_) => Err(DropReason::ChannelMismatch),
    }
}

/// Switches one batch from port `src`.
pub fn forward_batch(core: &Core, src: PortId, batch: &TxBatch<'_>, scratch: &mut Scratch) {
    let reg = core.registry.load();
    let ports = core.ports.load();
    let policy = core.policy.load();
    let Some(entry) = ports.get(src) else {
        return;
    };
    let Some(info) = reg.channel_of(src) else {
        entry
            .counters
            .add_drop(DropReason::UnknownChannel, batch.len() as u64);
        return;
    };
    let from = Sender {
        port: src,
        channel: info.id,
        mac: entry.mac,
        mac_limit: entry.mac_limit,
    };
    let now = core.fdb.now();
    let mut ingress_drops = Drops::default();
    let (mut in_frames, mut in_bytes, mut flooded) = (0u64, 0u64, 0u64);
    scratch.dests.clear();
    // Frames of a batch mostly belong to a few flows: a frame with the same addresses as the
    // previous one gets the same decision (same checks, already learned, same destinations)
    // without touching the FDB again.
    let mut prev: Option<Planned> = None;
    for (i, f) in batch.iter().enumerate() {
        let (src, dst) = (f.src_mac(), f.dst_mac());
        let idx = i as u16;
        let ingress = match prev {
            Some(p) if p.src == src && p.dst == dst => {
                for k in p.start..p.end {
                    let q = scratch.dests[k].0;
                    scratch.dests.push((q, idx));
                }
                p.ingress
            }
            _ => {
                let start = scratch.dests.len();
                let r = plan_frame(
                    &reg,
                    &policy,
                    &core.fdb,
                    now,
                    &from,
                    src,
                    dst,
                    idx,
                    &mut scratch.dests,
                );
                prev = Some(Planned {
                    src,
                    dst,
                    ingress: r,
                    start,
                    end: scratch.dests.len(),
                });
                r
            }
        };
        match ingress {
            Ingress::Accepted { flooded: n, .. } => {
                in_frames += 1;
                in_bytes += f.len() as u64;
                flooded += u64::from(n);
            }
            Ingress::Dropped(r) => ingress_drops.add(r, 1),
        }
    }
    entry.counters.add_in(in_frames, in_bytes);
    entry.counters.add_flooded(flooded);
    entry.counters.add_drops(&ingress_drops);
    let chan = core.channel_counters(from.channel);
    chan.add_in(in_frames, in_bytes);
    chan.add_flooded(flooded);
    chan.add_drops(&ingress_drops);

    // Group per destination so that each destination ring is locked once per batch; frame
    // order per destination is kept (the sort key includes the frame index).
    scratch.dests.sort_unstable();
    let mut start = 0;
    let mut chan_drops = Drops::default();
    while start < scratch.dests.len() {
        let q = scratch.dests[start].0;
        let mut end = start + 1;
        while end < scratch.dests.len() && scratch.dests[end].0 == q {
            end += 1;
        }
        let group = &scratch.dests[start..end];
        start = end;
        deliver_group(
            core,
            &reg,
            &policy,
            &ports,
            from.channel,
            PortId::new(q),
            group,
            batch,
            &mut chan_drops,
        );
    }
    chan.add_drops(&chan_drops);
}

#[allow(clippy::too_many_arguments)]
fn deliver_group(
    core: &Core,
    reg: &RegistrySnapshot,
    policy: &PolicyTable,
    ports: &PortTable,
    frame_channel: ChannelId,
    q: PortId,
    group: &[(u32, u16)],
    batch: &TxBatch<'_>,
    chan_drops: &mut Drops,
) {
    let n = group.len() as u64;
    let Some(dest) = ports.get(q) else {
        chan_drops.add(DropReason::UnknownChannel, n);
        return;
    };
    let dest_channel = match admit(reg, policy, frame_channel, q) {
        Ok(c) => c,
        Err(reason) => {
            dest.counters.add_drop(reason, n);
            chan_drops.add(reason, n);
            return;
        }
    };
    let mut drops = Drops::default();
    let (mut out_frames, mut out_bytes) = (0u64, 0u64);
    match dest.handle.rx().ring() {
        None => drops.add(DropReason::NoRxBuffer, n),
        Some(ring) => {
            let done = ring.with_writer(|w| {
                for &(_, i) in group {
                    let f = batch.frame(usize::from(i));
                    match w.deliver(f) {
                        Ok(()) => {
                            out_frames += 1;
                            out_bytes += f.len() as u64;
                        }
                        Err(RxDrop::NoBuffer) => drops.add(DropReason::NoRxBuffer, 1),
                        Err(RxDrop::BadDescriptor) => drops.add(DropReason::BadDescriptor, 1),
                        Err(RxDrop::Oversize) => drops.add(DropReason::Oversize, 1),
                    }
                }
            });
            if done.is_none() {
                ring.count_not_running(n);
                drops.add(DropReason::NoRxBuffer, n);
            }
        }
    }
    dest.counters.add_out(out_frames, out_bytes);
    dest.counters.add_drops(&drops);
    core.channel_counters(dest_channel)
        .add_out(out_frames, out_bytes);
    for r in DropReason::ALL {
        chan_drops.add(r, drops.get(r));
    }
}
