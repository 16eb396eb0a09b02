//! The capture's buffers: a fixed set of slots allocated when the capture starts, handed from the
//! datapath (which fills free slots, once per batch under one lock) to the writer thread (which
//! empties full ones) and back. Nothing is allocated per frame; when no slot is free the frame
//! is counted as not captured and the datapath goes on.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// All slots together take about this much memory.
const POOL_BYTES: usize = 16 << 20;
/// At least this many slots, whatever the snap length.
const MIN_SLOTS: usize = 256;

/// One captured frame.
pub(super) struct Slot {
    /// The captured bytes (the frame with its S-tag, cut at the snap length).
    pub(super) data: Box<[u8]>,
    /// How many bytes of `data` are used.
    pub(super) len: usize,
    /// The frame's length on the port, S-tag included.
    pub(super) orig_len: u32,
    /// Capture time since the Unix epoch.
    pub(super) ts: Duration,
}

/// Free and full slots, and the capture's counts (kept under the same lock).
pub(super) struct Slots {
    pub(super) free: Vec<Slot>,
    pub(super) full: VecDeque<Slot>,
    /// Frames still to capture (the `--count` left).
    pub(super) remaining: u64,
    /// Frames captured.
    pub(super) captured: u64,
    /// Frames missed: no free slot.
    pub(super) not_captured: u64,
}

/// The slots behind one lock.
pub(super) struct Pool {
    slots: Mutex<Slots>,
    capacity: usize,
}

impl Pool {
    /// Slots of `slot_len` bytes, about [`POOL_BYTES`] in all.
    pub(super) fn new(slot_len: usize) -> Pool {
        let n = (POOL_BYTES / slot_len.max(1)).max(MIN_SLOTS);
        let free = (0..n)
            .map(|_| Slot {
                data: vec![0u8; slot_len].into_boxed_slice(),
                len: 0,
                orig_len: 0,
                ts: Duration::ZERO,
            })
            .collect();
        Pool {
            slots: Mutex::new(Slots {
                free,
                full: VecDeque::with_capacity(n),
                remaining: u64::MAX,
                captured: 0,
                not_captured: 0,
            }),
            capacity: n,
        }
    }

    /// How many slots there are: a queue that may hold them all never grows.
    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }
}
