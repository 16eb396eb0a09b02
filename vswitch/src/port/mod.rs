//! The ports of the switch, as the datapath sees them: every port is an entry of the
//! [`PortTable`], of one of two kinds ([`PortKind`]).
//!
//! - A **VM port** ([`VmPort`]): one guest over a vhost-user socket, on exactly one channel,
//!   which the channel registry holds (never the port itself).
//! - An **uplink** ([`UplinkPort`]): a trunk to the outside, carrying a configured set of
//!   channels, each frame with its channel on the wire. The transport (802.1ad on a NIC,
//!   VXLAN, AF_XDP...) is behind the [`Uplink`] trait.
//!
//! An enum, not a trait object for every port: the set of kinds is closed and each has its own
//! rule for the delivery check (the registry for a VM, the channel set for an uplink), which
//! `forward::admit` spells out in one `match` that no kind can skip. The VM path, the hot one,
//! stays monomorphic and inlined. The transports of uplinks are the open set: a trait.

mod uplink;

use std::sync::Arc;

use vswitch_channels::{ChannelSet, MacAddr, PortId, RegistrySnapshot};
use vswitch_vhost::PortHandle;

use crate::capture::TapPoint;
use crate::counters::Counters;
use crate::police::Policer;
use crate::spec::PortSpec;

pub use uplink::{Outgoing, Received, SendResult, Stamps, Uplink, UplinkPort, UplinkSpec};

/// A guest attached over vhost-user.
pub struct VmPort {
    /// The vhost-user port.
    pub handle: PortHandle,
    /// The spec it was created from (its rate limit as last set).
    pub spec: PortSpec,
    /// Its transmit-side rate limit, shared by every entry that describes this port.
    pub policer: Arc<Policer>,
}

/// What a port is.
pub enum PortKind {
    /// A guest on one channel (the registry's entry for this port).
    Vm(VmPort),
    /// A trunk carrying a set of channels.
    Uplink(UplinkPort),
}

/// A port as the datapath sees it.
pub struct PortEntry {
    /// Port name.
    pub name: String,
    /// What the port is.
    pub kind: PortKind,
    /// Configured MAC (source-locked port) if any.
    pub mac: Option<MacAddr>,
    /// MAC learning limit.
    pub mac_limit: u32,
    /// Switch-level counters of this port.
    pub counters: Arc<Counters>,
    /// Where a capture of this port taps its frames (`ctl capture`).
    pub tap: Arc<TapPoint>,
    /// The registry generation at which this port was associated when it was added: which
    /// port, of all that ever had its id, this entry is. See [`PortEntry::described_by`].
    pub registered_at: u64,
    /// Unique among all ports this switch ever had (ids are reused, serials never): what a
    /// datapath thread keys its per-port state on.
    pub serial: u64,
}

impl PortEntry {
    /// True when `reg` describes this port (not an earlier port that had its id), provided
    /// `reg` was loaded *before* the port table this entry was read from.
    ///
    /// Why that holds: a port id is given to a new port only once the old port's entry has
    /// left the published port table (ports are added with an id free in the current table),
    /// and the new port is associated after that. So a registry snapshot that already knows
    /// the new port was loaded after the old entry left the table, and a port table loaded
    /// after that snapshot cannot hold the old entry. A snapshot older than this port's
    /// registration may name the previous holder of the id (its channel): that is what the
    /// generation test excludes. The datapath loads the registry first, then the port table,
    /// and uses an entry only when this is true; a frame is then never checked against one
    /// port's channel and written into another's ring.
    #[inline]
    pub fn described_by(&self, reg: &RegistrySnapshot) -> bool {
        reg.generation() >= self.registered_at
    }

    /// The VM port, if this is one.
    pub fn vm(&self) -> Option<&VmPort> {
        match &self.kind {
            PortKind::Vm(v) => Some(v),
            PortKind::Uplink(_) => None,
        }
    }

    /// The uplink, if this is one.
    pub fn uplink(&self) -> Option<&UplinkPort> {
        match &self.kind {
            PortKind::Uplink(u) => Some(u),
            PortKind::Vm(_) => None,
        }
    }
}

/// Ports indexed by [`PortId`], with the uplinks listed apart (flooding visits them).
#[derive(Default, Clone)]
pub struct PortTable {
    slots: Vec<Option<Arc<PortEntry>>>,
    uplinks: Vec<(PortId, Arc<ChannelSet>)>,
}

impl PortTable {
    /// The port with this id.
    #[inline]
    pub fn get(&self, id: PortId) -> Option<&PortEntry> {
        self.slots.get(id.index()).and_then(|s| s.as_deref())
    }

    /// Ports with their ids.
    pub fn iter(&self) -> impl Iterator<Item = (PortId, &Arc<PortEntry>)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|e| (PortId::new(i as u32), e)))
    }

    /// The uplinks and the channels each carries.
    #[inline]
    pub fn uplinks(&self) -> &[(PortId, Arc<ChannelSet>)] {
        &self.uplinks
    }

    /// The id of the port with this name.
    pub fn find(&self, name: &str) -> Option<PortId> {
        self.iter().find(|(_, e)| e.name == name).map(|(id, _)| id)
    }

    /// A table with `entry` at `id` (replacing whatever was there) or, with `None`, without
    /// the port at `id`.
    pub(crate) fn with(&self, id: PortId, entry: Option<Arc<PortEntry>>) -> PortTable {
        let mut next = self.clone();
        if next.slots.len() <= id.index() {
            next.slots.resize(id.index() + 1, None);
        }
        next.slots[id.index()] = entry;
        next.uplinks = next
            .iter()
            .filter_map(|(id, e)| e.uplink().map(|u| (id, u.channels.clone())))
            .collect();
        next
    }
}
