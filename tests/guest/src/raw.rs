//! Malformed-input helpers for robustness tests: scratch memory, verbatim descriptor chains at
//! free or chosen table slots, raw avail heads and indirect tables.

use vm_memory::GuestAddress;

use crate::error::GuestError;
use crate::guest::TestGuest;
use crate::memory::MemPoker;
use crate::tx::write_raw;
use crate::vring::{RawDesc, RingAddrs, DESC_SIZE};

impl TestGuest {
    /// Reserves `len` bytes (16-byte aligned) of scratch guest memory and returns its
    /// guest-physical address. Scratch is never reused while the guest lives.
    pub fn alloc(&mut self, len: usize) -> Result<GuestAddress, GuestError> {
        let start = self.scratch_next.div_ceil(16) * 16;
        let left = self.scratch_end.saturating_sub(start);
        if len as u64 > left {
            return Err(GuestError::ScratchExhausted { asked: len, left });
        }
        self.scratch_next = start + len as u64;
        Ok(GuestAddress(start))
    }

    /// Writes `bytes` anywhere in guest memory (rings included). Writing into a descriptor
    /// table makes that queue rewrite descriptors on every use from then on (no fixed layouts),
    /// so what the test wrote stays until the guest itself reuses the descriptor.
    pub fn write_mem(&mut self, addr: GuestAddress, bytes: &[u8]) -> Result<(), GuestError> {
        let table = |r: RingAddrs| (r.desc, r.desc + DESC_SIZE * u64::from(r.size));
        let touches =
            |(s, e): (u64, u64)| addr.0 < e && addr.0.saturating_add(bytes.len() as u64) > s;
        if touches(table(self.tx.q.ring)) {
            self.tx.forbid_fixed();
        }
        if touches(table(self.rx.q.ring)) {
            self.rx.forbid_fixed();
        }
        self.mem.write(addr.0, bytes)
    }

    /// A handle that writes this guest's memory from another thread while the guest runs
    /// (e.g. to rewrite a frame between the backend's check and its copy).
    pub fn mem_poker(&self) -> MemPoker {
        self.mem.poker()
    }

    /// Reads `len` bytes of guest memory.
    pub fn read_mem(&self, addr: GuestAddress, len: usize) -> Result<Vec<u8>, GuestError> {
        let mut v = Vec::with_capacity(len);
        self.mem.read_append(addr.0, len, &mut v)?;
        Ok(v)
    }

    /// Writes `descs` verbatim into free TX descriptor slots (a descriptor with `next: None` is
    /// linked to the slot chosen for the following one), publishes the head in the avail ring and
    /// kicks. Returns the head index. The chain's slots are freed when the device returns the head.
    pub fn send_raw_chain(&mut self, descs: &[RawDesc]) -> Result<u16, GuestError> {
        let head = self.tx.enqueue_raw(&self.mem, descs)?;
        self.publish_and_kick_tx()?;
        Ok(head)
    }

    /// Writes each descriptor at the chosen TX table index (which must be free), publishes the
    /// first one as the head and kicks. `next: None` links to the following placement's index.
    /// With explicit `next` values this builds loops, and chains that revisit slots so that they
    /// are longer than the queue.
    pub fn send_raw_chain_at(&mut self, placements: &[(u16, RawDesc)]) -> Result<u16, GuestError> {
        let head = self.tx.enqueue_raw_at(&self.mem, placements)?;
        self.publish_and_kick_tx()?;
        Ok(head)
    }

    /// Publishes an arbitrary value as a TX avail-ring head (e.g. >= queue size, or a slot that
    /// is free and holds stale data) and kicks. Nothing is tracked for it.
    pub fn publish_raw_tx_head(&mut self, head: u16) -> Result<(), GuestError> {
        self.tx.q.push_avail(&self.mem, head)?;
        self.publish_and_kick_tx()
    }

    /// Writes an indirect descriptor table into scratch memory (`next: None` links to the next
    /// entry) and returns its address; its length is `16 * descs.len()`.
    pub fn write_indirect_table(&mut self, descs: &[RawDesc]) -> Result<GuestAddress, GuestError> {
        let table = self.alloc(descs.len().max(1) * DESC_SIZE as usize)?;
        for (k, d) in descs.iter().enumerate() {
            let auto = if k + 1 < descs.len() {
                (k + 1) as u16
            } else {
                0
            };
            write_raw(&self.mem, table.0 + DESC_SIZE * k as u64, d, auto)?;
        }
        Ok(table)
    }

    /// Guest-physical addresses of the TX ring (to corrupt it with [`TestGuest::write_mem`]).
    pub fn tx_ring(&self) -> RingAddrs {
        self.tx.q.ring
    }

    /// Guest-physical addresses of the RX ring.
    pub fn rx_ring(&self) -> RingAddrs {
        self.rx.q.ring
    }

    /// The driver's current TX avail index (next slot it will fill).
    pub fn tx_avail_idx(&self) -> u16 {
        self.tx.q.avail_idx()
    }

    fn publish_and_kick_tx(&mut self) -> Result<(), GuestError> {
        self.tx.q.publish(&self.mem)?;
        self.tx.q.notify(&self.mem)?;
        Ok(())
    }
}
