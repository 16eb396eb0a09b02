//! The one driver of the datapath: a thread's pass over the ports it serves. For each port it
//! asks for the frames that came in (a VM's TX ring, an uplink's receive queue) and switches
//! them itself (`forward`). Event mode (`event.rs`) and busy-poll mode (`poll.rs`) differ only
//! in what a thread does when a pass finds nothing.
//!
//! Everything a pass mutates belongs to its thread: the batch storage and the forwarding
//! scratch (one each per thread, any port) and a cursor per port. No lock is taken per batch
//! besides the rings' own.

use std::os::fd::RawFd;

use vswitch_channels::PortId;
use vswitch_vhost::{TxBatchCounts, TxCursor, TxScratch};

use crate::core::Core;
use crate::forward::{self, Scratch};
use crate::port::{PortEntry, PortKind};

/// Which ports a thread serves: those whose id is `index` modulo `of`.
#[derive(Debug, Clone, Copy)]
pub struct Share {
    /// This thread's number.
    pub index: usize,
    /// How many threads share the ports.
    pub of: usize,
}

impl Share {
    /// True when this thread serves port `id`.
    #[inline]
    pub fn serves(&self, id: PortId) -> bool {
        id.index() % self.of.max(1) == self.index
    }
}

/// What a thread keeps for one port it serves.
#[derive(Default)]
struct Slot {
    /// [`PortEntry::serial`] of the port this state belongs to (0: none).
    serial: u64,
    cursor: TxCursor,
}

/// One datapath thread's state.
pub struct Worker {
    share: Share,
    tx: TxScratch,
    fwd: Scratch,
    /// Indexed by port id; grows only when ports are added, never per packet.
    slots: Vec<Slot>,
}

impl Worker {
    /// A worker for the ports of `share`.
    pub fn new(share: Share) -> Self {
        Worker {
            share,
            tx: TxScratch::default(),
            fwd: Scratch::default(),
            slots: Vec::new(),
        }
    }

    /// One pass over the ports this thread serves: every one with frames waiting gets one
    /// pass (a budget per port: see `TX_PASS_BUDGET`). True when any had work.
    pub fn pass(&mut self, core: &Core) -> bool {
        let ports = core.ports.load();
        let mut active = false;
        for (id, e) in ports.iter() {
            if !self.share.serves(id) {
                continue;
            }
            active |= self.serve(core, id, e);
        }
        active
    }

    /// Before sleeping: asks every guest this thread serves to kick on its next frame. True if
    /// frames arrived meanwhile (pass again instead of sleeping).
    pub fn arm(&mut self, core: &Core) -> bool {
        let ports = core.ports.load();
        let mut pending = false;
        for (id, e) in ports.iter() {
            if !self.share.serves(id) {
                continue;
            }
            if let PortKind::Vm(vm) = &e.kind {
                let slot = slot(&mut self.slots, id, e.serial);
                pending |= vm.handle.arm_tx(&mut slot.cursor);
            }
        }
        pending
    }

    /// The descriptors that signal frames for the uplinks this thread serves (sockets): a
    /// sleeping thread waits on them beside its doorbell. Replaces `out`'s content.
    pub fn wake_fds(&self, core: &Core, out: &mut Vec<RawFd>) {
        out.clear();
        let ports = core.ports.load();
        for (id, _) in ports.uplinks() {
            if !self.share.serves(*id) {
                continue;
            }
            if let Some(fd) = ports.get(*id).and_then(|e| e.uplink()?.io.wake_fd()) {
                out.push(fd);
            }
        }
    }

    fn serve(&mut self, core: &Core, id: PortId, e: &PortEntry) -> bool {
        let Worker { tx, fwd, slots, .. } = self;
        match &e.kind {
            PortKind::Vm(vm) => {
                let slot = slot(slots, id, e.serial);
                let pass = vm.handle.poll_tx(&mut slot.cursor, tx, |batch| {
                    forward::forward_vm_batch(core, id, e.registered_at, batch, fwd)
                });
                if pass.counts.refused() > 0 {
                    count_refused(core, id, e.registered_at, &pass.counts);
                }
                pass.active
            }
            PortKind::Uplink(u) => {
                let r = u.io.receive(&mut |batch, stamps| {
                    forward::forward_uplink_batch(core, id, e.registered_at, batch, stamps, fwd)
                });
                if !r.drops.is_zero() {
                    e.counters.add_drops(&r.drops);
                }
                r.active
            }
        }
    }
}

/// The slot of port `id`, fresh if it belonged to another port (an id reused).
#[inline]
fn slot(slots: &mut Vec<Slot>, id: PortId, serial: u64) -> &mut Slot {
    let k = id.index();
    if slots.len() <= k {
        slots.resize_with(k + 1, Slot::default);
    }
    let s = &mut slots[k];
    if s.serial != serial {
        *s = Slot {
            serial,
            ..Slot::default()
        };
    }
    s
}

/// Counts the chains a VM port refused in a pass (malformed, oversize, runt) on the port's and
/// its channel's switch counters.
#[cold]
fn count_refused(core: &Core, id: PortId, registered_at: u64, r: &TxBatchCounts) {
    use crate::counters::DropReason;
    // Registry first, then the port table (see PortEntry::described_by).
    let reg = core.registry.load();
    let ports = core.ports.load();
    let Some(e) = ports.get(id).filter(|e| e.registered_at == registered_at) else {
        // The port was removed (its id may be another port's by now).
        return;
    };
    let bad = r.bad_descriptor + r.runt;
    e.counters.add_drop(DropReason::BadDescriptor, bad);
    e.counters.add_drop(DropReason::Oversize, r.oversize);
    e.counters.add_drop(DropReason::BadOffload, r.bad_offload);
    if let Some(info) = reg.channel_of(id).filter(|_| e.described_by(&reg)) {
        let c = core.channel_counters(info.id);
        c.add_drop(DropReason::BadDescriptor, bad);
        c.add_drop(DropReason::Oversize, r.oversize);
        c.add_drop(DropReason::BadOffload, r.bad_offload);
    }
}
