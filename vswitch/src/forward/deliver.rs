//! Delivery: the planned destinations of a batch, group by group, each through the delivery
//! check ([`admit`]) and then into the destination: copied into a guest's RX ring (one ring
//! lock per group), or handed to an uplink's transport. A frame whose offloads the
//! destination cannot take is finished in software first (`soft.rs`).

use vswitch_channels::{ChannelId, PortId};
use vswitch_vhost::offload::needs_work;
use vswitch_vhost::{FrameBatch, FrameRef, PortHandle, RxDrop, RxRing, RxWriter};

use super::admit::admit;
use super::flow;
use super::soft::SoftOffload;
use super::Scratch;
use crate::capture::Direction;
use crate::core::{Core, View};
use crate::counters::{DropReason, Drops};
use crate::port::{Outgoing, PortKind, Stamps, Uplink};

/// Delivers every planned (destination, frame) pair of `scratch` (grouped per destination,
/// frame order kept: see `Scratch::finish`).
#[inline]
pub(super) fn deliver_all(
    core: &Core,
    view: &View<'_>,
    batch: &FrameBatch<'_>,
    stamps: Stamps<'_>,
    scratch: &mut Scratch,
) {
    let Scratch {
        dests,
        soft,
        queues,
        ..
    } = scratch;
    let dests = &dests[..];
    let mut start = 0;
    while start < dests.len() {
        let to = dests[start].0;
        // With a single destination (the common case) there is one group.
        let end = if dests[dests.len() - 1].0 == to {
            dests.len()
        } else {
            start + dests[start..].partition_point(|d| d.0 == to)
        };
        let group = &dests[start..end];
        match stamps {
            Stamps::One(channel) => deliver_group(
                core,
                view,
                batch,
                stamps,
                channel,
                PortId::new(to),
                group,
                soft,
                queues,
            ),
            // An uplink's batch: the check is per frame channel, so per run of equal channel.
            Stamps::PerFrame(of) => {
                let mut a = 0;
                while a < group.len() {
                    let channel = of[usize::from(group[a].1)];
                    let b = a + group[a..]
                        .iter()
                        .position(|d| of[usize::from(d.1)] != channel)
                        .unwrap_or(group.len() - a);
                    deliver_group(
                        core,
                        view,
                        batch,
                        stamps,
                        channel,
                        PortId::new(to),
                        &group[a..b],
                        soft,
                        queues,
                    );
                    a = b;
                }
            }
        }
        start = end;
    }
}

/// Delivers `group` (frames of `batch`, all stamped `channel`) into port `to`, if admitted.
#[allow(clippy::too_many_arguments)]
#[inline]
fn deliver_group(
    core: &Core,
    view: &View<'_>,
    batch: &FrameBatch<'_>,
    stamps: Stamps<'_>,
    channel: ChannelId,
    to: PortId,
    group: &[(u32, u16)],
    soft: &mut SoftOffload,
    queues: &mut Vec<u8>,
) {
    let n = group.len() as u64;
    let chan = core.channel_counters(channel);
    let (dest, dest_channel) = match admit(view, channel, to) {
        Ok(admitted) => admitted,
        Err((reason, entry)) => {
            if let Some(e) = entry {
                e.counters.add_drop(reason, n);
            }
            chan.add_drop(reason, n);
            return;
        }
    };
    dest.tap.capture(
        Direction::Tx,
        batch,
        group.iter().map(|d| usize::from(d.1)),
        |_| channel,
    );
    let mut drops = Drops::default();
    let (out_frames, out_bytes) = match &dest.kind {
        PortKind::Vm(vm) => into_guest(&vm.handle, batch, group, soft, queues, &mut drops),
        PortKind::Uplink(u) => into_uplink(&*u.io, batch, group, stamps, soft, &mut drops),
    };
    dest.counters.add_out(out_frames, out_bytes);
    dest.counters.add_drops(&drops);
    core.channel_counters(dest_channel)
        .add_out(out_frames, out_bytes);
    chan.add_drops(&drops);
}

/// Where a delivery into a guest counts what it did, and its buffers.
struct Sink<'s> {
    soft: &'s mut SoftOffload,
    drops: &'s mut Drops,
    frames: u64,
    bytes: u64,
}

/// Copies the frames of `group` into the guest behind `port`, under one lock of its RX ring
/// (of each RX queue used, for a guest with several queue pairs: see `flow.rs`). Returns the
/// frames and bytes delivered; the rest are counted in `drops`.
#[inline]
fn into_guest(
    port: &PortHandle,
    batch: &FrameBatch<'_>,
    group: &[(u32, u16)],
    soft: &mut SoftOffload,
    queues: &mut Vec<u8>,
    drops: &mut Drops,
) -> (u64, u64) {
    let n = group.len() as u64;
    let mut sink = Sink {
        soft,
        drops,
        frames: 0,
        bytes: 0,
    };
    match port.rx().ring() {
        None => sink.drops.add(DropReason::NoRxBuffer, n),
        Some(ring) if ring.queue_pairs() == 1 => {
            let all = group.iter().map(|d| d.1);
            let done = ring.with_writer(|w| fill(w, batch, all, &mut sink));
            if done.is_none() {
                ring.count_not_running(n);
                sink.drops.add(DropReason::NoRxBuffer, n);
            }
        }
        Some(ring) => into_queues(&ring, batch, group, queues, &mut sink),
    }
    (sink.frames, sink.bytes)
}

/// [`into_guest`] for a guest with several queue pairs: each frame into the RX queue its flow
/// hash picks among those the guest enabled, one ring lock per queue used.
#[inline(never)]
fn into_queues(
    ring: &RxRing,
    batch: &FrameBatch<'_>,
    group: &[(u32, u16)],
    queues: &mut Vec<u8>,
    sink: &mut Sink<'_>,
) {
    let mask = ring.usable_queues();
    queues.clear();
    let mut used = 0u32;
    if mask.count_ones() > 1 {
        for &(_, i) in group {
            let q = flow::pick(mask, flow::flow_hash(&batch.frame(usize::from(i)))).unwrap_or(0);
            queues.push(q as u8);
            used |= 1 << q;
        }
    } else if mask != 0 {
        // One queue running: every frame goes there, nothing to hash.
        let q = mask.trailing_zeros() as u8;
        queues.resize(group.len(), q);
        used = mask;
    } else {
        // No queue running: nothing is looked at.
        ring.count_not_running(group.len() as u64);
        sink.drops.add(DropReason::NoRxBuffer, group.len() as u64);
    }
    while used != 0 {
        let q = used.trailing_zeros() as u8;
        used &= used - 1;
        let picked = || {
            group
                .iter()
                .zip(queues.iter())
                .filter(move |(_, at)| **at == q)
                .map(|(d, _)| d.1)
        };
        let done = ring.with_queue_writer(usize::from(q), |w| fill(w, batch, picked(), sink));
        if done.is_none() {
            let k = picked().count() as u64;
            ring.count_not_running(k);
            sink.drops.add(DropReason::NoRxBuffer, k);
        }
    }
}

/// Writes the frames `picks` of `batch` into the locked ring `w`.
#[inline(always)]
fn fill(
    w: &mut RxWriter<'_>,
    batch: &FrameBatch<'_>,
    picks: impl Iterator<Item = u16>,
    sink: &mut Sink<'_>,
) {
    for i in picks {
        let f = batch.frame(usize::from(i));
        // The writer refuses a frame whose offloads the guest did not negotiate (one test of
        // its header): then it is finished here.
        if deliver_one(w, f, &mut sink.frames, &mut sink.bytes, sink.drops) == Err(RxDrop::Offload)
        {
            finish_into(
                w,
                sink.soft,
                f,
                &mut sink.frames,
                &mut sink.bytes,
                sink.drops,
            );
        }
    }
}

/// Finishes `f` in software for the locked ring `w` (its segments, or the frame with its
/// checksum completed, go in under the same lock). Out of line: the delivery loop stays as
/// tight as without offloads.
#[cold]
#[inline(never)]
fn finish_into(
    w: &mut RxWriter<'_>,
    soft: &mut SoftOffload,
    f: FrameRef<'_>,
    frames: &mut u64,
    bytes: &mut u64,
    drops: &mut Drops,
) {
    let r = soft.finish(f, |done, _| {
        for g in done.iter() {
            if deliver_one(w, g, frames, bytes, drops) == Err(RxDrop::Offload) {
                drops.add(DropReason::BadOffload, 1);
            }
        }
    });
    if r.is_err() {
        drops.add(DropReason::BadOffload, 1);
    }
}

/// Writes one frame into the locked ring `w`, counting it delivered or dropped (except
/// [`RxDrop::Offload`], which the caller handles).
#[inline(always)]
fn deliver_one(
    w: &mut RxWriter<'_>,
    f: FrameRef<'_>,
    frames: &mut u64,
    bytes: &mut u64,
    drops: &mut Drops,
) -> Result<(), RxDrop> {
    let r = w.deliver(f);
    match r {
        Ok(()) => {
            *frames += 1;
            *bytes += f.len() as u64;
        }
        Err(RxDrop::NoBuffer) => drops.add(DropReason::NoRxBuffer, 1),
        Err(RxDrop::BadDescriptor) => drops.add(DropReason::BadDescriptor, 1),
        Err(RxDrop::Oversize) => drops.add(DropReason::Oversize, 1),
        // Counted by the caller: finished in software, or (a finished frame, which asks for
        // nothing, cannot get here) a bad offload.
        Err(RxDrop::Offload) => {}
    }
    r
}

/// Hands the frames of `group` to an uplink's transport. The wire takes finished frames only:
/// a frame whose header asks for a checksum or segmentation is finished in software first
/// (the transports do not offload to the NIC), in order with the frames around it.
fn into_uplink(
    io: &dyn Uplink,
    batch: &FrameBatch<'_>,
    group: &[(u32, u16)],
    stamps: Stamps<'_>,
    soft: &mut SoftOffload,
    drops: &mut Drops,
) -> (u64, u64) {
    let (mut sent, mut bytes) = (0u64, 0u64);
    let mut send = |out: &Outgoing<'_, '_>, drops: &mut Drops| {
        let r = io.send(out);
        drops.add(DropReason::NoRxBuffer, r.dropped);
        drops.add(DropReason::Oversize, r.oversize);
        sent += r.sent;
        bytes += r.bytes;
    };
    let needs = |d: &(u32, u16)| needs_work(&batch.frame(usize::from(d.1)).net_hdr());
    let mut rest = group;
    while !rest.is_empty() {
        // The run of finished frames first, as one send.
        let plain = rest.iter().position(needs).unwrap_or(rest.len());
        if plain > 0 {
            send(
                &Outgoing {
                    batch,
                    picks: &rest[..plain],
                    stamps,
                },
                drops,
            );
        }
        let Some(&(_, i)) = rest.get(plain) else {
            break;
        };
        let idx = usize::from(i);
        let r = soft.finish(batch.frame(idx), |done, picks| {
            send(
                &Outgoing {
                    batch: done,
                    picks,
                    stamps: Stamps::One(stamps.of(idx)),
                },
                drops,
            )
        });
        if r.is_err() {
            drops.add(DropReason::BadOffload, 1);
        }
        rest = &rest[plain + 1..];
    }
    (sent, bytes)
}
