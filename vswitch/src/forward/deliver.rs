//! Delivery: the planned destinations of a batch, group by group, each through the delivery
//! check ([`admit`]) and then into the destination: copied into a guest's RX ring (one ring
//! lock per group), or handed to an uplink's transport.

use vswitch_channels::{ChannelId, PortId};
use vswitch_vhost::{FrameBatch, PortHandle, RxDrop};

use super::admit::admit;
use super::Scratch;
use crate::capture::Direction;
use crate::core::{Core, View};
use crate::counters::{DropReason, Drops};
use crate::port::{Outgoing, PortKind, Stamps};

/// Delivers every planned (destination, frame) pair of `scratch` (grouped per destination,
/// frame order kept: see `Scratch::finish`).
#[inline]
pub(super) fn deliver_all(
    core: &Core,
    view: &View<'_>,
    batch: &FrameBatch<'_>,
    stamps: Stamps<'_>,
    scratch: &Scratch,
) {
    let dests = &scratch.dests[..];
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
            Stamps::One(channel) => {
                deliver_group(core, view, batch, stamps, channel, PortId::new(to), group)
            }
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
        PortKind::Vm(vm) => into_guest(&vm.handle, batch, group, &mut drops),
        PortKind::Uplink(u) => {
            let r = u.io.send(&Outgoing {
                batch,
                picks: group,
                stamps,
            });
            drops.add(DropReason::NoRxBuffer, r.dropped);
            drops.add(DropReason::Oversize, r.oversize);
            (r.sent, r.bytes)
        }
    };
    dest.counters.add_out(out_frames, out_bytes);
    dest.counters.add_drops(&drops);
    core.channel_counters(dest_channel)
        .add_out(out_frames, out_bytes);
    chan.add_drops(&drops);
}

/// Copies the frames of `group` into the guest behind `port`, under one lock of its RX ring.
/// Returns the frames and bytes delivered; the rest are counted in `drops`.
#[inline]
fn into_guest(
    port: &PortHandle,
    batch: &FrameBatch<'_>,
    group: &[(u32, u16)],
    drops: &mut Drops,
) -> (u64, u64) {
    let n = group.len() as u64;
    let (mut frames, mut bytes) = (0u64, 0u64);
    match port.rx().ring() {
        None => drops.add(DropReason::NoRxBuffer, n),
        Some(ring) => {
            let done = ring.with_writer(|w| {
                for &(_, i) in group {
                    let f = batch.frame(usize::from(i));
                    match w.deliver(f) {
                        Ok(()) => {
                            frames += 1;
                            bytes += f.len() as u64;
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
    (frames, bytes)
}
