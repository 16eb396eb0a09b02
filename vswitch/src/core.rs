//! The tables every datapath thread reads and the control plane writes: the port table, the
//! channel registry, the policy, the FDB and the per-channel counters.
//!
//! Everything the datapath reads is published read-copy-update style (arc-swap): the port
//! table, the registry snapshot and the policy table are loaded once per batch without
//! blocking, and control-plane changes never stop a port.

use std::sync::atomic::AtomicU64;

use arc_swap::ArcSwap;
use log::warn;
use vswitch_channels::{ChannelId, Policy, Registry, RegistrySnapshot};

use crate::counters::Counters;
use crate::event::Doorbells;
use crate::fdb::Fdb;
use crate::port::PortTable;
use crate::spec::SwitchSettings;

/// Channel ids index tables of this size (S-VIDs are 12 bits).
pub(crate) const CHANNEL_SLOTS: usize = 4096;

/// The policy plus, per channel, the other channels it may reach (precomputed so that the
/// datapath never walks the pair list).
pub struct PolicyTable {
    policy: Policy,
    reach: Vec<Vec<ChannelId>>,
}

impl PolicyTable {
    /// Builds the table for a policy.
    pub fn new(policy: Policy) -> Self {
        let mut reach = vec![Vec::new(); CHANNEL_SLOTS];
        for (from, to) in policy.allowed_pairs() {
            if from != to {
                reach[usize::from(from.get())].push(to);
            }
        }
        PolicyTable { policy, reach }
    }

    /// The policy.
    #[inline]
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Channels other than `c` that frames of `c` may be delivered to.
    #[inline]
    pub fn reach(&self, c: ChannelId) -> &[ChannelId] {
        self.reach
            .get(usize::from(c.get()))
            .map_or(&[][..], |v| v.as_slice())
    }
}

/// State shared by the control plane and every datapath thread.
pub struct Core {
    /// VM → channel.
    pub registry: Registry,
    /// Delivery policy.
    pub policy: ArcSwap<PolicyTable>,
    /// Forwarding database.
    pub fdb: Fdb,
    /// Ports.
    pub ports: ArcSwap<PortTable>,
    channels: Box<[Counters]>,
    pub(crate) settings: SwitchSettings,
    /// Event mode: the datapath threads' wake-ups (empty in busy-poll mode).
    pub(crate) doorbells: Doorbells,
    /// The last [`crate::port::PortEntry::serial`] given.
    pub(crate) serials: AtomicU64,
}

impl Core {
    /// A core with no ports (benchmarks and tests drive it directly).
    pub fn new(settings: SwitchSettings, policy: Policy) -> Self {
        let channels: Vec<Counters> = (0..CHANNEL_SLOTS).map(|_| Counters::default()).collect();
        let doorbells = if settings.poll_cores.is_empty() {
            Doorbells::new(settings.event_threads.max(1)).unwrap_or_else(|e| {
                warn!("no doorbells for the datapath threads ({e}): they poll every millisecond");
                Doorbells::without_fds(settings.event_threads.max(1))
            })
        } else {
            Doorbells::default()
        };
        Core {
            doorbells,
            registry: Registry::new(),
            policy: ArcSwap::from_pointee(PolicyTable::new(policy)),
            fdb: Fdb::new(
                settings.fdb_capacity,
                settings.aging.as_secs().clamp(1, u64::from(u32::MAX)) as u32,
            ),
            ports: ArcSwap::from_pointee(PortTable::default()),
            channels: channels.into_boxed_slice(),
            settings,
            serials: AtomicU64::new(0),
        }
    }

    /// Counters of one channel.
    #[inline]
    pub fn channel_counters(&self, c: ChannelId) -> &Counters {
        &self.channels[usize::from(c.get())]
    }

    /// Counters of every channel slot, indexed by S-VID.
    pub(crate) fn all_channel_counters(&self) -> &[Counters] {
        &self.channels
    }
}

/// What one batch is switched against: a registry snapshot, then (loaded after it, see
/// [`crate::port::PortEntry::described_by`]) the port table, and the policy.
#[derive(Clone, Copy)]
pub struct View<'a> {
    /// VM → channel.
    pub reg: &'a RegistrySnapshot,
    /// Delivery policy.
    pub policy: &'a PolicyTable,
    /// Ports.
    pub ports: &'a PortTable,
}
