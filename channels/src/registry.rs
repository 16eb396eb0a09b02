//! [`Registry`]: VM identity → channel, written by the control plane, read by the datapath.
//! The concurrency design and the visibility guarantee are documented on [`Registry`].

use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::{ArcSwap, Guard};

use crate::error::RegistryError;
use crate::mode::ChannelInfo;
use crate::port::{PortId, VmId};
use crate::snapshot::{Association, RegistrySnapshot};

/// The channel registry: the writer side, owned by the control plane and shared (e.g. in an
/// `Arc`) with the datapath, which only calls [`load`](Registry::load).
///
/// # Concurrency: read-copy-update with `arc-swap`
///
/// The current state is an immutable [`RegistrySnapshot`] behind an [`arc_swap::ArcSwap`].
///
/// * **Readers never block.** [`Registry::load`] is a couple of atomic operations on a
///   per-thread slot: no lock, no allocation, no system call, whatever writers are doing. It is
///   wait-free in practice (arc-swap guarantees lock-free always, wait-free for at least
///   `usize::MAX / 4` loads in between), and readers do not contend with each other. The datapath loads a
///   snapshot once per batch and then does O(1) vector lookups in it
///   ([`RegistrySnapshot::channel_of`], [`RegistrySnapshot::ports_in`]).
/// * **Writers copy, then publish.** An update builds a complete new snapshot (allocating as
///   it likes: it is the control plane) and swaps it in with one atomic store. Readers see
///   either the old snapshot or the new one, never a half-updated table.
/// * **Old snapshots are freed by the last holder.** A reader still holding an older snapshot
///   keeps it alive; it is freed when that reader lets go (or by the writer's store, if no
///   reader holds it). No epoch, no grace period to manage.
/// * **Writers serialize among themselves** with a `Mutex` that only writers take, so two
///   concurrent updates cannot both start from the same snapshot and lose one of them.
///
/// `arc-swap` was chosen over a `RwLock<Arc<_>>` because a reader of a `RwLock` can be held up
/// by a writer (and a writer by a stream of readers), and over a hand-rolled epoch scheme
/// because it gives the same cheap read without `unsafe` code here.
///
/// # Guarantee
///
/// Once [`Registry::associate`] or [`Registry::disassociate`] has returned (the update is
/// acknowledged), every snapshot loaded afterwards — by any thread, as long as its load
/// happens after the acknowledgment, e.g. because the management API's reply or a channel
/// message ordered them — reflects the update and every update acknowledged before it.
/// Snapshots loaded *before* may still show the old state; that is why the datapath reloads
/// per batch and never keeps a snapshot across batches.
#[derive(Debug)]
pub struct Registry {
    current: ArcSwap<RegistrySnapshot>,
    /// Taken by writers only, never by readers.
    writer: Mutex<()>,
}

impl Registry {
    /// The largest port id the registry accepts. Per-port tables are sized by the largest
    /// associated port id, so ids should be dense and small.
    pub const MAX_PORT: u32 = 65535;

    /// An empty registry at generation 0.
    pub fn new() -> Registry {
        Registry {
            current: ArcSwap::from_pointee(RegistrySnapshot::empty()),
            writer: Mutex::new(()),
        }
    }

    /// The current snapshot, cheaply: no lock, no allocation, no reference-count traffic in
    /// the common case. Keep the guard for a batch, not longer (it may pin an old snapshot).
    #[inline]
    pub fn load(&self) -> Guard<Arc<RegistrySnapshot>> {
        self.current.load()
    }

    /// The current snapshot as an owned `Arc`, for keeping beyond a short scope.
    pub fn load_full(&self) -> Arc<RegistrySnapshot> {
        self.current.load_full()
    }

    /// Same as [`load_full`](Registry::load_full).
    pub fn snapshot(&self) -> Arc<RegistrySnapshot> {
        self.load_full()
    }

    /// The generation of the current snapshot: 0 when empty, one more per acknowledged update.
    pub fn generation(&self) -> u64 {
        self.current.load().generation()
    }

    /// All current entries, in ascending port order (for listing the channel table).
    pub fn entries(&self) -> Vec<Association> {
        self.current.load().entries().collect()
    }

    /// Associates the VM on `vm.port` with a channel, replacing any previous association of
    /// that port (moving a VM between channels is a normal operation). Returns the generation
    /// of the published snapshot; every snapshot loaded after this returns reflects it.
    ///
    /// # Errors
    /// [`RegistryError::PortOutOfRange`] if the port id exceeds [`Registry::MAX_PORT`];
    /// [`RegistryError::GroupMac`] if the MAC is a multicast or broadcast address. On error the
    /// registry is unchanged.
    pub fn associate(&self, vm: VmId, info: ChannelInfo) -> Result<u64, RegistryError> {
        check_port(vm.port)?;
        if let Some(mac) = vm.mac.filter(|m| m.is_multicast()) {
            return Err(RegistryError::GroupMac { port: vm.port, mac });
        }
        self.update(|slots| {
            let i = vm.port.index();
            if slots.len() <= i {
                slots.resize(i + 1, None);
            }
            slots[i] = Some(Association { vm, info });
            Ok(())
        })
    }

    /// Removes the association of `port`. Returns the generation of the published snapshot;
    /// every snapshot loaded after this returns shows the port as unassociated.
    ///
    /// # Errors
    /// [`RegistryError::NotAssociated`] if the port has no association (including a port id
    /// beyond [`Registry::MAX_PORT`], which can never have one). On error the registry is
    /// unchanged.
    pub fn disassociate(&self, port: PortId) -> Result<u64, RegistryError> {
        self.update(|slots| match slots.get_mut(port.index()) {
            Some(slot @ Some(_)) => {
                *slot = None;
                Ok(())
            }
            _ => Err(RegistryError::NotAssociated { port }),
        })
    }

    /// Copy, modify, publish, under the writers' lock.
    fn update(
        &self,
        change: impl FnOnce(&mut Vec<Option<Association>>) -> Result<(), RegistryError>,
    ) -> Result<u64, RegistryError> {
        // A writer that panicked cannot have left a half-published state (publishing is one
        // atomic store), so a poisoned lock is safe to take over.
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let old = self.current.load();
        let mut slots = old.slots();
        change(&mut slots)?;
        let generation = old.generation() + 1;
        self.current
            .store(Arc::new(RegistrySnapshot::build(generation, slots)));
        Ok(generation)
    }
}

impl Default for Registry {
    /// An empty registry at generation 0.
    fn default() -> Registry {
        Registry::new()
    }
}

fn check_port(port: PortId) -> Result<(), RegistryError> {
    if port.get() > Registry::MAX_PORT {
        return Err(RegistryError::PortOutOfRange {
            port,
            max: Registry::MAX_PORT,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ChannelId;
    use crate::mac::MacAddr;
    use crate::mode::ChannelMode;

    fn info(v: u16) -> ChannelInfo {
        ChannelInfo::veb(ChannelId::new(v).unwrap_or(ChannelId::MIN))
    }

    #[test]
    fn associate_then_lookup() {
        let r = Registry::new();
        assert_eq!(r.generation(), 0);
        assert_eq!(r.associate(VmId::port(PortId(3)), info(100)), Ok(1));
        assert_eq!(r.associate(VmId::port(PortId(1)), info(100)), Ok(2));
        let s = r.load();
        assert_eq!(s.generation(), 2);
        assert_eq!(s.channel_of(PortId(3)), Some(info(100)));
        assert_eq!(s.ports_in(info(100).id), &[PortId(1), PortId(3)]);
        assert_eq!(r.entries().len(), 2);
    }

    #[test]
    fn reassociation_moves_the_vm() {
        let r = Registry::default();
        let mac = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
        let vm = VmId::new(PortId(0), Some(mac));
        assert!(r.associate(vm, info(100)).is_ok());
        let old = r.load_full();
        let moved = ChannelInfo::new(info(200).id, ChannelMode::Vepa);
        assert_eq!(r.associate(VmId::port(PortId(0)), moved), Ok(2));
        let s = r.snapshot();
        assert_eq!(s.channel_of(PortId(0)), Some(moved));
        assert_eq!(s.vm_of(PortId(0)), Some(VmId::port(PortId(0))));
        assert!(s.ports_in(info(100).id).is_empty());
        assert_eq!(s.ports_in(info(200).id), &[PortId(0)]);
        // A snapshot taken before is unchanged (RCU).
        assert_eq!(old.channel_of(PortId(0)), Some(info(100)));
        assert_eq!(old.vm_of(PortId(0)), Some(vm));
    }

    #[test]
    fn disassociate_removes_and_errors_when_absent() {
        let r = Registry::new();
        assert!(r.associate(VmId::port(PortId(2)), info(7)).is_ok());
        assert_eq!(r.disassociate(PortId(2)), Ok(2));
        assert_eq!(r.load().channel_of(PortId(2)), None);
        assert!(r.load().is_empty());
        for p in [2, 0, 100, Registry::MAX_PORT + 1, u32::MAX] {
            assert_eq!(
                r.disassociate(PortId(p)),
                Err(RegistryError::NotAssociated { port: PortId(p) })
            );
        }
        assert_eq!(r.generation(), 2, "failed updates publish nothing");
    }

    #[test]
    fn rejects_port_beyond_limit() {
        let r = Registry::new();
        assert!(r
            .associate(VmId::port(PortId(Registry::MAX_PORT)), info(1))
            .is_ok());
        for p in [Registry::MAX_PORT + 1, u32::MAX] {
            let err = r.associate(VmId::port(PortId(p)), info(1));
            assert_eq!(
                err,
                Err(RegistryError::PortOutOfRange {
                    port: PortId(p),
                    max: 65535
                })
            );
            let msg = err.map_err(|e| e.to_string());
            assert!(matches!(msg, Err(m) if m.contains("0..=65535")));
        }
        assert_eq!(r.generation(), 1);
    }

    #[test]
    fn rejects_group_macs() {
        let r = Registry::new();
        for mac in [MacAddr::BROADCAST, MacAddr([0x01, 0, 0x5e, 0, 0, 1])] {
            let vm = VmId::new(PortId(0), Some(mac));
            assert_eq!(
                r.associate(vm, info(1)),
                Err(RegistryError::GroupMac {
                    port: PortId(0),
                    mac
                })
            );
        }
        assert_eq!(r.generation(), 0);
    }

    #[test]
    fn acknowledged_update_is_seen_by_other_threads() {
        use std::sync::mpsc;
        let r = Arc::new(Registry::new());
        let (ack_tx, ack_rx) = mpsc::channel();
        let writer = {
            let r = Arc::clone(&r);
            std::thread::spawn(move || {
                for v in 1..=200u16 {
                    let g = r.associate(VmId::port(PortId(0)), info(v));
                    if ack_tx.send((v, g)).is_err() {
                        return;
                    }
                }
            })
        };
        for (v, g) in ack_rx {
            let s = r.load();
            // The writer may have gone further since, never less far.
            assert!(s.generation() >= g.unwrap_or(u64::MAX));
            let seen = s.channel_of(PortId(0)).map(|i| i.id.get());
            assert!(matches!(seen, Some(x) if x >= v), "{seen:?} < {v}");
        }
        assert!(writer.join().is_ok());
    }

    #[test]
    fn poisoned_writer_lock_is_recovered() {
        let r = Arc::new(Registry::new());
        let r2 = Arc::clone(&r);
        let _ = std::thread::spawn(move || {
            let _g = r2.writer.lock();
            panic!("writer dies holding the lock");
        })
        .join();
        assert_eq!(r.associate(VmId::port(PortId(0)), info(1)), Ok(1));
    }
}
