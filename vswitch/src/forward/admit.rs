//! The delivery check: the one place that decides whether a frame may enter a port. Every
//! delivery, into a guest or onto an uplink, goes through [`admit`] (and so [`may_enter`])
//! first; nothing else in the datapath can put a frame into a port. `ci/mutation.sh` builds
//! the switch with the check disabled and requires the isolation tests to fail.

use vswitch_channels::{ChannelId, ChannelSet, PortId, RegistrySnapshot};

use crate::core::{PolicyTable, View};
use crate::counters::DropReason;
use crate::port::{PortEntry, PortKind, PortTable};

/// The delivery check for port `dest`, looked up in `view`: its entry (one the registry
/// snapshot describes, see [`described_entry`]) and [`may_enter`] for its kind. Returns the
/// destination's entry and the channel the frame is counted on there; on refusal, the reason
/// and the entry if there is one to count on.
#[inline]
pub fn admit<'p>(
    view: &View<'p>,
    frame: ChannelId,
    dest: PortId,
) -> Result<(&'p PortEntry, ChannelId), (DropReason, Option<&'p PortEntry>)> {
    let Some(entry) = described_entry(view.reg, view.ports, dest) else {
        return Err((DropReason::UnknownChannel, None));
    };
    let kind = match &entry.kind {
        PortKind::Vm(_) => DestKind::Vm,
        PortKind::Uplink(u) => DestKind::Uplink(&u.channels),
    };
    match may_enter(view.reg, view.policy, frame, dest, kind) {
        Ok(c) => Ok((entry, c)),
        Err(reason) => Err((reason, Some(entry))),
    }
}

/// What the check needs to know of a destination.
#[derive(Debug, Clone, Copy)]
pub enum DestKind<'a> {
    /// A VM: its channel is its registry entry.
    Vm,
    /// An uplink carrying these channels.
    Uplink(&'a ChannelSet),
}

/// The rule: may a frame stamped `frame` enter port `dest`? For a VM, the answer comes from
/// the destination's own registry entry (looked up by its identity, never from the plan or
/// the frame) and the policy; for an uplink, from the channels it is configured to carry (the
/// frame keeps its channel on the wire; the far switch checks it against its own VMs).
/// Returns the channel the frame is counted on at the destination.
#[inline]
pub fn may_enter(
    reg: &RegistrySnapshot,
    policy: &PolicyTable,
    frame: ChannelId,
    dest: PortId,
    kind: DestKind<'_>,
) -> Result<ChannelId, DropReason> {
    if cfg!(feature = "mutant-skip-delivery-check") {
        return Ok(reg.channel_of(dest).map_or(frame, |i| i.id));
    }
    match kind {
        DestKind::Vm => match reg.channel_of(dest) {
            None => Err(DropReason::UnknownChannel),
            Some(info) if policy.policy().admits(frame, info.id) => Ok(info.id),
            Some(_) => Err(DropReason::ChannelMismatch),
        },
        DestKind::Uplink(carried) if carried.contains(frame) => Ok(frame),
        DestKind::Uplink(_) => Err(DropReason::ChannelMismatch),
    }
}

/// The port table's entry for `id` when `reg` describes that port (not an earlier holder of
/// the id): the only entries the datapath sends from or delivers into. `reg` must have been
/// loaded before `ports` (see [`PortEntry::described_by`]).
#[inline]
pub fn described_entry<'p>(
    reg: &RegistrySnapshot,
    ports: &'p PortTable,
    id: PortId,
) -> Option<&'p PortEntry> {
    ports.get(id).filter(|e| e.described_by(reg))
}
