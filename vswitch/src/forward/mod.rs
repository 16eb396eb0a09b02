//! Forwarding one batch: stamp, ingress checks, learning, destination choice, then the delivery
//! check and the copy, grouped per destination.
//!
//! The two halves are kept apart on purpose. Planning (`plan.rs`) decides where a frame
//! *should* go (FDB, flooding); [`admit`] decides whether it *may* go there, from the
//! destination's own registry entry (a VM) or channel set (an uplink) and the policy only. A
//! wrong plan (stale or poisoned FDB, a racing re-association) can therefore misroute a frame
//! but never deliver it across channels.
//!
//! - `mod.rs`: the entry points, one per kind of sending port, and the batch's walk;
//! - `plan.rs`: ingress checks, learning, destinations;
//! - `admit.rs`: the delivery check;
//! - `deliver.rs`: the copy into a guest, or the hand-over to an uplink;
//! - `soft.rs`: offloads the destination cannot take, finished in software.

mod admit;
mod deliver;
mod flow;
mod plan;
mod soft;

use vswitch_channels::{ChannelId, ChannelMode, PortId};
use vswitch_vhost::wire::eth;
use vswitch_vhost::FrameBatch;

use crate::capture::Direction;
use crate::core::{Core, View};
use crate::counters::DropReason;
use crate::port::{PortEntry, Stamps};

pub use admit::{admit, described_entry, may_enter, DestKind};
pub use plan::{plan_batch, plan_frame, BatchIngress, FrameAddrs, Ingress, Role, Scratch, Sender};

/// How often a batch loads the registry and the port table again when the registry it loaded
/// predates the sending port (a port added just now): then the next pair is fresh.
const SNAPSHOT_TRIES: usize = 3;

/// Switches one batch a guest transmitted on VM port `src`, the port registered at registry
/// generation `registered_at` (a removed port's last batch finds its id taken by another
/// port, or by nobody, and is dropped). Every frame is stamped with the VM's channel: its
/// registry entry at batch start, never anything in the frame.
pub fn forward_vm_batch(
    core: &Core,
    src: PortId,
    registered_at: u64,
    batch: &FrameBatch<'_>,
    scratch: &mut Scratch,
) {
    with_view(core, src, registered_at, batch.len(), |view, entry| {
        let Some(info) = view.reg.channel_of(src) else {
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
            role: match info.mode {
                ChannelMode::Vepa => Role::Vepa,
                _ => Role::Veb,
            },
        };
        scratch.clear();
        let channel = info.id;
        entry
            .tap
            .capture(Direction::Rx, batch, 0..batch.len(), |_| channel);
        let passed = police(core, entry, from.channel, batch);
        let ingress = plan(core, view, &from, batch, 0..passed, scratch);
        count_ingress(core, entry, from.channel, &ingress);
        scratch.finish();
        deliver::deliver_all(core, view, batch, Stamps::One(info.id), scratch);
    });
}

/// Switches one batch an uplink received on port `src`: frame `i` is stamped with
/// `stamps[i]`, the channel its transport read from the wire. A frame on a channel the uplink
/// does not carry is dropped (`channel_mismatch`); the rest are planned run by run of equal
/// channel.
pub fn forward_uplink_batch(
    core: &Core,
    src: PortId,
    registered_at: u64,
    batch: &FrameBatch<'_>,
    stamps: &[ChannelId],
    scratch: &mut Scratch,
) {
    let n = batch.len().min(stamps.len());
    with_view(core, src, registered_at, n, |view, entry| {
        let Some(uplink) = entry.uplink() else {
            return;
        };
        let role = Role::Uplink {
            reflective_relay: uplink.reflective_relay,
        };
        scratch.clear();
        entry.tap.capture(Direction::Rx, batch, 0..n, |i| stamps[i]);
        let mut start = 0;
        while start < n {
            let channel = stamps[start];
            let end = start + stamps[start..n].partition_point(|c| *c == channel);
            if !uplink.carries(channel) {
                let drops = (end - start) as u64;
                entry.counters.add_drop(DropReason::ChannelMismatch, drops);
                core.channel_counters(channel)
                    .add_drop(DropReason::ChannelMismatch, drops);
            } else {
                let from = Sender {
                    port: src,
                    channel,
                    mac: None,
                    mac_limit: entry.mac_limit,
                    role,
                };
                let ingress = plan(core, view, &from, batch, start..end, scratch);
                count_ingress(core, entry, channel, &ingress);
            }
            start = end;
        }
        scratch.finish();
        deliver::deliver_all(core, view, batch, Stamps::PerFrame(&stamps[..n]), scratch);
    });
}

/// Loads the registry, then the port table (see [`PortEntry::described_by`]), and runs `f`
/// with them and the sending port's entry, when the registry describes that port.
#[inline]
fn with_view(
    core: &Core,
    src: PortId,
    registered_at: u64,
    frames: usize,
    f: impl FnOnce(&View<'_>, &PortEntry),
) {
    // Every entry used (sender and destinations) is one the registry snapshot describes: what
    // is checked against a port's channel is delivered into that port and no other, even while
    // ports are removed and their ids reused on other channels.
    let mut tries = 0;
    let (reg, ports) = loop {
        let reg = core.registry.load();
        let ports = core.ports.load();
        match ports.get(src) {
            Some(e) if e.registered_at == registered_at => {}
            // Removed (and perhaps its id reused): nothing to send from.
            _ => return,
        }
        if described_entry(&reg, &ports, src).is_some() {
            break (reg, ports);
        }
        tries += 1;
        if tries == SNAPSHOT_TRIES {
            if let Some(e) = ports.get(src) {
                e.counters
                    .add_drop(DropReason::UnknownChannel, frames as u64);
            }
            return;
        }
    };
    let policy = core.policy.load();
    let Some(entry) = ports.get(src) else {
        return;
    };
    let view = View {
        reg: &reg,
        policy: &policy,
        ports: &ports,
    };
    f(&view, entry);
}

/// How many of a VM's batch pass its rate limit (a prefix); the rest are counted `policed`.
#[inline(always)]
fn police(core: &Core, entry: &PortEntry, channel: ChannelId, batch: &FrameBatch<'_>) -> usize {
    let n = batch.len();
    let Some(vm) = entry.vm() else {
        return n;
    };
    let passed = vm.policer.admit(n, |i| batch.head(i).1 as usize);
    if passed < n {
        let dropped = (n - passed) as u64;
        entry.counters.add_drop(DropReason::Policed, dropped);
        core.channel_counters(channel)
            .add_drop(DropReason::Policed, dropped);
    }
    passed
}

/// Plans the frames `range` of `batch`, all from `from`.
#[inline(always)]
fn plan(
    core: &Core,
    view: &View<'_>,
    from: &Sender,
    batch: &FrameBatch<'_>,
    range: std::ops::Range<usize>,
    scratch: &mut Scratch,
) -> BatchIngress {
    plan_batch(
        view,
        &core.fdb,
        core.fdb.now(),
        from,
        range,
        |i| {
            let (p, len) = batch.head(i);
            FrameAddrs {
                src: eth::src(p),
                dst: eth::dst(p),
                len,
            }
        },
        scratch,
    )
}

/// Adds a batch's (or a run's) ingress totals to the sender's and its channel's counters.
#[inline]
fn count_ingress(core: &Core, entry: &PortEntry, channel: ChannelId, ingress: &BatchIngress) {
    entry.counters.add_in(ingress.frames, ingress.bytes);
    entry.counters.add_flooded(ingress.flooded);
    entry.counters.add_drops(&ingress.drops);
    let chan = core.channel_counters(channel);
    chan.add_in(ingress.frames, ingress.bytes);
    chan.add_flooded(ingress.flooded);
    chan.add_drops(&ingress.drops);
}
