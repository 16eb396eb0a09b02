//! The guest memory the datapath reads: snapshots published only once every mapping in them is
//! registered with the SIGBUS handler ([`crate::sigbus`]).
//!
//! vhost-user-backend maps a new memory table and swaps its `GuestMemoryAtomic` *before*
//! calling `update_memory`, so a reader of that atomic could touch a mapping the SIGBUS handler
//! does not know yet. The datapath therefore never reads the atomic: `update_memory` registers
//! the new table's mappings and then publishes it here, and every batch reads guest memory
//! through a snapshot of this view. A snapshot holds the registrations of its mappings, and
//! drops them before its reference to the mappings: an entry is removed before its mapping can
//! be unmapped, and a mapping in use by the datapath is always registered.

use std::io;
use std::sync::Arc;

use arc_swap::ArcSwap;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};
use vmm_sys_util::eventfd::EventFd;

use crate::memory::GuestMemory;
use crate::sigbus::{self, Registration};

/// One published memory table.
pub(crate) struct GuardedMemory {
    // Declared before `mem`: dropped (unregistered) before the mappings may be unmapped.
    regs: Vec<Arc<Registration>>,
    mem: Arc<GuestMemory>,
}

impl GuardedMemory {
    /// The guest memory (valid, and registered, while `self` lives).
    pub(crate) fn mem(&self) -> &GuestMemory {
        &self.mem
    }
}

/// A connection's current guest memory, for the datapath.
pub(crate) struct MemView {
    current: ArcSwap<GuardedMemory>,
    /// Written by the SIGBUS handler when a mapping of this connection faults.
    fault: Arc<EventFd>,
}

impl MemView {
    /// An empty view; faults in its mappings are reported on `fault`.
    pub(crate) fn new(fault: Arc<EventFd>) -> Self {
        sigbus::install();
        MemView {
            current: ArcSwap::from_pointee(GuardedMemory {
                regs: Vec::new(),
                mem: Arc::new(GuestMemory::new()),
            }),
            fault,
        }
    }

    /// The current snapshot: hold it for one batch.
    #[inline]
    pub(crate) fn load(&self) -> Arc<GuardedMemory> {
        self.current.load_full()
    }

    /// The current snapshot without taking a reference count (arc-swap's guard: no atomic
    /// read-modify-write in the common case), for a short look such as one batch.
    #[inline]
    pub(crate) fn peek(&self) -> arc_swap::Guard<Arc<GuardedMemory>> {
        self.current.load()
    }

    /// Registers the mappings of `mem` that are not registered yet (those of the current
    /// snapshot are shared, as the same mapping is never registered twice) and publishes it.
    pub(crate) fn publish(&self, mem: Arc<GuestMemory>) -> io::Result<()> {
        let old = self.current.load_full();
        let mut regs = Vec::with_capacity(mem.num_regions());
        for r in mem.iter() {
            let Ok(host) = r.get_host_address(MemoryRegionAddress(0)) else {
                continue;
            };
            let range = (
                host as usize,
                usize::try_from(r.len()).unwrap_or(usize::MAX),
            );
            match old.regs.iter().find(|g| g.range() == range) {
                Some(g) => regs.push(g.clone()),
                None => regs.push(Arc::new(
                    sigbus::register(range.0, range.1, &self.fault).map_err(io::Error::other)?,
                )),
            }
        }
        self.current.store(Arc::new(GuardedMemory { regs, mem }));
        Ok(())
    }
}
