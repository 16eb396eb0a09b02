//! Split-ring layout types: raw descriptors as tests write them, and where a ring's three parts
//! live in guest memory.

use super::DESC_SIZE;

/// One descriptor as written into a descriptor table (or an indirect table) verbatim.
///
/// `next: None` means "link to the descriptor that follows in the slice passed to the API"
/// (0 for the last one); `Some(v)` writes `v` as is, so tests can point anywhere or form loops.
/// `flags` is always written as given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawDesc {
    /// Guest-physical buffer address.
    pub addr: u64,
    /// Buffer length in bytes.
    pub len: u32,
    /// `DESC_F_*` flags.
    pub flags: u16,
    /// Explicit `next` field, or `None` to link to the following descriptor.
    pub next: Option<u16>,
}

impl RawDesc {
    /// A descriptor with automatic linking (`next: None`).
    pub fn new(addr: u64, len: u32, flags: u16) -> Self {
        RawDesc {
            addr,
            len,
            flags,
            next: None,
        }
    }

    /// The same descriptor with an explicit `next` field.
    pub fn with_next(mut self, next: u16) -> Self {
        self.next = Some(next);
        self
    }
}

/// Guest-physical addresses of one split ring's three parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingAddrs {
    /// Descriptor table.
    pub desc: u64,
    /// Available (driver) ring.
    pub avail: u64,
    /// Used (device) ring.
    pub used: u64,
    /// Number of entries.
    pub size: u16,
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

impl RingAddrs {
    /// Lays out a ring of `size` entries at `base`; returns it and the first free byte after it.
    pub(crate) fn layout(base: u64, size: u16) -> (Self, u64) {
        let q = u64::from(size);
        let desc = align_up(base, 64);
        let avail = desc + DESC_SIZE * q;
        let used = align_up(avail + 6 + 2 * q, 64);
        let end = used + 6 + 8 * q;
        (
            RingAddrs {
                desc,
                avail,
                used,
                size,
            },
            end,
        )
    }
    /// `used_event` lives after the avail ring.
    #[cfg(test)]
    pub(crate) fn used_event(&self) -> u64 {
        self.avail + 4 + 2 * u64::from(self.size)
    }
    /// `avail_event` lives after the used ring.
    pub(crate) fn avail_event(&self) -> u64 {
        self.used + 4 + 8 * u64::from(self.size)
    }
}
