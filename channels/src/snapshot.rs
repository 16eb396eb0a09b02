//! [`RegistrySnapshot`]: an immutable view of the registry, laid out for the datapath.
//!
//! Built once per registry update (control plane, may allocate) and then only read. Every
//! lookup is a bounds-checked index into a vector: O(1), no allocation, no lock.

use crate::id::ChannelId;
use crate::mode::ChannelInfo;
use crate::port::{PortId, VmId};

/// Number of slots in the per-S-VID index: S-VIDs 0..=4095.
const SVID_SLOTS: usize = 4096;

/// One registry entry: a VM and the channel it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Association {
    /// The VM (its port is the key).
    pub vm: VmId,
    /// The VM's channel.
    pub info: ChannelInfo,
}

/// An immutable view of the registry at one generation.
///
/// Obtained from [`Registry::load`](crate::Registry::load) or
/// [`Registry::load_full`](crate::Registry::load_full). It never changes; a later update
/// publishes a new snapshot. The datapath should load one per batch, not keep one forever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrySnapshot {
    generation: u64,
    /// Channel of each port, indexed by port id (the per-destination hot path).
    channels: Vec<Option<ChannelInfo>>,
    /// Identity of each port's VM, indexed by port id. Same length as `channels`.
    vms: Vec<Option<VmId>>,
    /// All associated ports, grouped by channel, each group sorted by port id.
    members: Vec<PortId>,
    /// `members[starts[v]..starts[v + 1]]` are the ports of S-VID `v`. Length [`SVID_SLOTS`].
    starts: Vec<u32>,
}

impl RegistrySnapshot {
    /// The empty snapshot, generation 0.
    pub(crate) fn empty() -> RegistrySnapshot {
        RegistrySnapshot::build(0, Vec::new())
    }

    /// Builds a snapshot from per-port entries (index = port id; `vms[i].vm.port` must be `i`).
    /// Trailing empty slots are trimmed.
    pub(crate) fn build(generation: u64, mut slots: Vec<Option<Association>>) -> RegistrySnapshot {
        while matches!(slots.last(), Some(None)) {
            slots.pop();
        }
        let channels: Vec<Option<ChannelInfo>> = slots.iter().map(|s| s.map(|a| a.info)).collect();
        let vms: Vec<Option<VmId>> = slots.iter().map(|s| s.map(|a| a.vm)).collect();

        // Counting sort by S-VID; ports come out in ascending order within each channel
        // because `slots` is walked in port order.
        let mut starts = vec![0u32; SVID_SLOTS];
        for info in channels.iter().flatten() {
            let v = usize::from(info.id.get());
            // v <= 4094, so v + 1 < SVID_SLOTS.
            if let Some(c) = starts.get_mut(v + 1) {
                *c += 1;
            }
        }
        for v in 1..SVID_SLOTS {
            starts[v] += starts[v - 1];
        }
        let mut cursor = starts.clone();
        let mut members = vec![PortId(0); channels.iter().flatten().count()];
        for (port, info) in channels.iter().enumerate() {
            if let Some(info) = info {
                let v = usize::from(info.id.get());
                let at = cursor[v] as usize;
                members[at] = PortId(port as u32);
                cursor[v] += 1;
            }
        }
        RegistrySnapshot {
            generation,
            channels,
            vms,
            members,
            starts,
        }
    }

    /// The per-port entries, for building the next snapshot.
    pub(crate) fn slots(&self) -> Vec<Option<Association>> {
        self.channels
            .iter()
            .zip(&self.vms)
            .map(|(info, vm)| match (info, vm) {
                (Some(info), Some(vm)) => Some(Association {
                    vm: *vm,
                    info: *info,
                }),
                _ => None,
            })
            .collect()
    }

    /// The generation this snapshot was published at: 0 for the empty registry, then one more
    /// for each acknowledged update.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The channel of the VM on `port`, or `None` if the port is not associated.
    ///
    /// O(1): one bounds-checked vector index. No allocation, no lock.
    #[inline]
    pub fn channel_of(&self, port: PortId) -> Option<ChannelInfo> {
        self.channels.get(port.index()).copied().flatten()
    }

    /// The identity of the VM on `port`, or `None` if the port is not associated. O(1).
    #[inline]
    pub fn vm_of(&self, port: PortId) -> Option<VmId> {
        self.vms.get(port.index()).copied().flatten()
    }

    /// The ports associated with `channel`, sorted ascending; empty if none. The flooding set
    /// of the channel (the caller skips the ingress port).
    ///
    /// O(1): precomputed when the snapshot was published. No allocation, no lock.
    #[inline]
    pub fn ports_in(&self, channel: ChannelId) -> &[PortId] {
        let v = usize::from(channel.get());
        let (Some(&start), Some(&end)) = (self.starts.get(v), self.starts.get(v + 1)) else {
            return &[];
        };
        self.members
            .get(start as usize..end as usize)
            .unwrap_or(&[])
    }

    /// All entries, in ascending port order.
    pub fn entries(&self) -> impl Iterator<Item = Association> + '_ {
        self.channels
            .iter()
            .zip(&self.vms)
            .filter_map(|(info, vm)| {
                Some(Association {
                    vm: (*vm)?,
                    info: (*info)?,
                })
            })
    }

    /// The channels that have at least one port, ascending, each with its ports (for listing
    /// the channel table). O(number of associated ports).
    pub fn channels(&self) -> impl Iterator<Item = (ChannelId, &[PortId])> + '_ {
        let mut rest = self.members.as_slice();
        std::iter::from_fn(move || {
            let first = *rest.first()?;
            let id = self.channel_of(first)?.id;
            let ports = self.ports_in(id);
            rest = rest.get(ports.len()..).unwrap_or(&[]);
            Some((id, ports))
        })
    }

    /// The number of associated ports.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True if no port is associated.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

impl Default for RegistrySnapshot {
    /// The empty snapshot, generation 0.
    fn default() -> RegistrySnapshot {
        RegistrySnapshot::empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mode::ChannelMode;

    fn ch(v: u16) -> ChannelId {
        ChannelId::new(v).unwrap_or(ChannelId::MIN)
    }

    fn assoc(port: u32, v: u16) -> Association {
        Association {
            vm: VmId::port(PortId(port)),
            info: ChannelInfo::veb(ch(v)),
        }
    }

    fn slots(entries: &[Association]) -> Vec<Option<Association>> {
        let max = entries
            .iter()
            .map(|a| a.vm.port.index())
            .max()
            .map_or(0, |m| m + 1);
        let mut s = vec![None; max];
        for a in entries {
            s[a.vm.port.index()] = Some(*a);
        }
        s
    }

    #[test]
    fn empty_snapshot_answers_none() {
        let s = RegistrySnapshot::default();
        assert_eq!(s.generation(), 0);
        assert!(s.is_empty());
        assert_eq!(s.channel_of(PortId(0)), None);
        assert_eq!(s.channel_of(PortId(u32::MAX)), None);
        assert_eq!(s.vm_of(PortId(5)), None);
        assert!(s.ports_in(ChannelId::MIN).is_empty());
        assert!(s.ports_in(ChannelId::MAX).is_empty());
        assert_eq!(s.channels().count(), 0);
    }

    #[test]
    fn groups_ports_by_channel_sorted() {
        let e = [
            assoc(9, 200),
            assoc(1, 100),
            assoc(4, 4094),
            assoc(3, 100),
            assoc(0, 1),
        ];
        let s = RegistrySnapshot::build(7, slots(&e));
        assert_eq!(s.generation(), 7);
        assert_eq!(s.len(), 5);
        assert_eq!(s.ports_in(ch(100)), &[PortId(1), PortId(3)]);
        assert_eq!(s.ports_in(ch(200)), &[PortId(9)]);
        assert_eq!(s.ports_in(ch(1)), &[PortId(0)]);
        assert_eq!(s.ports_in(ch(4094)), &[PortId(4)]);
        assert!(s.ports_in(ch(101)).is_empty());
        assert_eq!(s.channel_of(PortId(3)), Some(ChannelInfo::veb(ch(100))));
        assert_eq!(s.channel_of(PortId(2)), None);
        assert_eq!(s.channel_of(PortId(10)), None);
        let chans: Vec<_> = s.channels().map(|(c, p)| (c.get(), p.len())).collect();
        assert_eq!(chans, [(1, 1), (100, 2), (200, 1), (4094, 1)]);
        let ports: Vec<_> = s.entries().map(|a| a.vm.port.get()).collect();
        assert_eq!(ports, [0, 1, 3, 4, 9]);
    }

    #[test]
    fn trims_trailing_empty_slots_and_roundtrips() {
        let mut sl = slots(&[assoc(0, 5)]);
        sl.extend([None, None, None]);
        let s = RegistrySnapshot::build(1, sl);
        assert_eq!(s.slots().len(), 1);
        let again = RegistrySnapshot::build(1, s.slots());
        assert_eq!(again, s);
    }

    #[test]
    fn keeps_mode_and_mac() {
        let mac = crate::MacAddr([2, 0, 0, 0, 0, 1]);
        let a = Association {
            vm: VmId::new(PortId(2), Some(mac)),
            info: ChannelInfo::new(ch(300), ChannelMode::Vepa),
        };
        let s = RegistrySnapshot::build(1, slots(&[a]));
        assert_eq!(s.vm_of(PortId(2)), Some(a.vm));
        assert_eq!(
            s.channel_of(PortId(2)).map(|i| i.mode),
            Some(ChannelMode::Vepa)
        );
    }
}
