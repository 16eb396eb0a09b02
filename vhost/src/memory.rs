//! Guest memory and vring types shared by the port's modules, and the per-batch translation
//! of guest physical addresses to host addresses.
//!
//! Dirty-page logging (LOG_SHMFD) is not offered, so guest memory carries no bitmap.

use vm_memory::{
    Address, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress,
};

/// The guest's memory as mapped from the frontend's SET_MEM_TABLE file descriptors.
pub type GuestMemory = vm_memory::GuestMemoryMmap<()>;

/// Guest memory that the vhost-user handler swaps atomically when the frontend sends a new
/// memory table; readers take a cheap snapshot (`memory()`) that keeps the old mapping alive.
pub type GuestMemoryAtomic = vm_memory::GuestMemoryAtomic<GuestMemory>;

/// One virtqueue's state behind a mutex: locked once per batch by whoever processes it.
pub type Vring = vhost_user_backend::VringMutex<GuestMemoryAtomic>;

/// Most memory regions a [`GuestMap`] holds in its table (QEMU uses a handful; vhost-user
/// allows up to 8 in SET_MEM_TABLE). Regions beyond it are found through vm-memory.
const CACHED_REGIONS: usize = 8;

/// One mapped region: guest physical `[start, end)` at host address `host`.
#[derive(Clone, Copy, Default)]
struct Region {
    start: u64,
    end: u64,
    host: usize,
}

/// The guest's memory regions as (guest range, host address) triples, resolved once per
/// batch. Translating a buffer is then a compare against a few entries, with no per-access
/// bounds-checked slice objects; every range handed out lies inside one mapped region.
///
/// The host addresses stay valid while the `&'m GuestMemory` borrow lives: the caller holds
/// the memory snapshot (which keeps the mappings) for the whole batch.
pub struct GuestMap<'m> {
    mem: &'m GuestMemory,
    n: usize,
    table: [Region; CACHED_REGIONS],
}

impl<'m> GuestMap<'m> {
    /// Resolves the regions of `mem`.
    pub fn new(mem: &'m GuestMemory) -> Self {
        let mut table = [Region::default(); CACHED_REGIONS];
        let mut n = 0;
        for r in mem.iter().take(CACHED_REGIONS) {
            if let Ok(host) = r.get_host_address(MemoryRegionAddress(0)) {
                let start = r.start_addr().raw_value();
                table[n] = Region {
                    start,
                    end: start.saturating_add(r.len()),
                    host: host as usize,
                };
                n += 1;
            }
        }
        GuestMap { mem, n, table }
    }

    /// The memory behind the map.
    pub fn mem(&self) -> &'m GuestMemory {
        self.mem
    }

    /// Host address of `[addr, addr + len)` when the whole range lies inside one region.
    #[inline]
    pub fn host(&self, addr: u64, len: usize) -> Option<usize> {
        let end = addr.checked_add(len as u64)?;
        for r in &self.table[..self.n] {
            if addr >= r.start && end <= r.end {
                return Some(r.host + (addr - r.start) as usize);
            }
        }
        self.slow_host(addr, len as u64)
    }

    /// Host address of `addr` and how many bytes follow it in the same region (for ranges that
    /// cross regions). `None` when `addr` is not guest memory.
    #[inline]
    pub fn host_at(&self, addr: u64) -> Option<(usize, u64)> {
        for r in &self.table[..self.n] {
            if addr >= r.start && addr < r.end {
                return Some((r.host + (addr - r.start) as usize, r.end - addr));
            }
        }
        let r = self.mem.find_region(GuestAddress(addr))?;
        let off = r.to_region_addr(GuestAddress(addr))?;
        let host = r.get_host_address(off).ok()?;
        Some((host as usize, r.len() - off.raw_value()))
    }

    /// The first contiguous piece of `[addr, addr + left)`: its host address and length
    /// (`left` unless the range crosses into another region). `None` when `addr` is not guest
    /// memory. Walking a buffer piece by piece handles buffers that straddle regions.
    #[inline]
    pub fn piece(&self, addr: u64, left: usize) -> Option<(usize, usize)> {
        match self.host(addr, left) {
            Some(h) => Some((h, left)),
            None => {
                let (h, avail) = self.host_at(addr)?;
                Some((h, left.min(usize::try_from(avail).unwrap_or(usize::MAX))))
            }
        }
    }

    #[cold]
    fn slow_host(&self, addr: u64, len: u64) -> Option<usize> {
        let (host, avail) = self.host_at(addr)?;
        (len <= avail).then_some(host)
    }
}

/// Copies `len` bytes from `src` to `dst`, host addresses inside guest memory resolved by a
/// [`GuestMap`] (possibly of two different guests), or a local buffer.
///
/// The ranges may overlap: two ports' frontends can share one memory file (a hostile or
/// simply unusual frontend), so a source and a destination buffer may be the same bytes; the
/// copy is a memmove for that reason. The guests may write the memory concurrently; like
/// vm-memory's own `VolatileSlice` copies, the bytes are moved with a plain memory copy (the
/// content of a buffer a guest changes under the copy is unspecified, never out of bounds).
///
/// # Safety
/// `src..src+len` and `dst..dst+len` must lie inside mappings that stay alive for the call.
///
/// Copies of 16 to 64 bytes (minimum-size frames) are done inline with at most four 16-byte
/// loads followed by the stores, as DPDK's `rte_memcpy` does: a library call costs more than
/// the copy itself at that size. Loading everything before storing keeps it overlap-safe.
#[inline]
pub(crate) unsafe fn copy_guest(dst: usize, src: usize, len: usize) {
    type Chunk = [u8; 16];
    let (s, d) = (src as *const u8, dst as *mut u8);
    if (16..=32).contains(&len) {
        // SAFETY: both ranges are mapped (caller) and 16 <= len: each 16-byte access at
        // offset 0 or len - 16 is inside them; `Chunk` has alignment 1.
        unsafe {
            let a = std::ptr::read_unaligned(s as *const Chunk);
            let b = std::ptr::read_unaligned(s.add(len - 16) as *const Chunk);
            std::ptr::write_unaligned(d as *mut Chunk, a);
            std::ptr::write_unaligned(d.add(len - 16) as *mut Chunk, b);
        }
    } else if (33..=64).contains(&len) {
        // SAFETY: as above with 32 < len <= 64: offsets 0, 16, len - 32 and len - 16 are all
        // followed by 16 bytes inside the ranges.
        unsafe {
            let a = std::ptr::read_unaligned(s as *const Chunk);
            let b = std::ptr::read_unaligned(s.add(16) as *const Chunk);
            let c = std::ptr::read_unaligned(s.add(len - 32) as *const Chunk);
            let e = std::ptr::read_unaligned(s.add(len - 16) as *const Chunk);
            std::ptr::write_unaligned(d as *mut Chunk, a);
            std::ptr::write_unaligned(d.add(16) as *mut Chunk, b);
            std::ptr::write_unaligned(d.add(len - 32) as *mut Chunk, c);
            std::ptr::write_unaligned(d.add(len - 16) as *mut Chunk, e);
        }
    } else {
        // SAFETY: the caller guarantees both ranges are mapped for the call.
        unsafe { std::ptr::copy(s, d, len) }
    }
}

/// Reads `N` bytes of guest memory at a host address resolved by a [`GuestMap`], with a single
/// volatile load (a guest may change them at any time: the value is read exactly once).
///
/// # Safety
/// `at..at+N` must lie inside a mapping that stays alive for the call.
#[inline]
pub(crate) unsafe fn read_guest<const N: usize>(at: usize) -> [u8; N] {
    // SAFETY: in bounds per the caller; `[u8; N]` has alignment 1, so any address is aligned.
    unsafe { std::ptr::read_volatile(at as *const [u8; N]) }
}

/// Writes `N` bytes of guest memory at a host address resolved by a [`GuestMap`], with one
/// unaligned store (the compiler emits a few moves, not a library call).
///
/// # Safety
/// `at..at+N` must lie inside a mapping that stays alive for the call.
#[inline]
pub(crate) unsafe fn write_guest<const N: usize>(at: usize, v: [u8; N]) {
    // SAFETY: in bounds per the caller; `[u8; N]` has alignment 1.
    unsafe { std::ptr::write_unaligned(at as *mut [u8; N], v) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemory {
        GuestMemory::from_ranges(&[(GuestAddress(0), 0x1000), (GuestAddress(0x1000), 0x1000)])
            .expect("memory")
    }

    #[test]
    fn translates_inside_one_region_only() {
        let m = mem();
        let map = GuestMap::new(&m);
        assert!(map.host(0, 0x1000).is_some());
        assert!(map.host(0xfff, 1).is_some());
        // Crosses into the next region: not one contiguous host range.
        assert!(map.host(0xfff, 2).is_none());
        assert!(map.host(0x2000, 1).is_none());
        assert!(map.host(u64::MAX, 2).is_none());
        assert_eq!(map.host_at(0xff0).map(|(_, n)| n), Some(0x10));
        assert_eq!(map.host_at(0x1ff0).map(|(_, n)| n), Some(0x10));
        assert!(map.host_at(0x2000).is_none());
    }

    #[test]
    fn copy_guest_copies_every_length_exactly() {
        for len in 0..200usize {
            let src: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
            let mut dst = vec![0xeeu8; len + 8];
            // SAFETY: both buffers hold at least `len` bytes.
            unsafe { copy_guest(dst.as_mut_ptr() as usize + 4, src.as_ptr() as usize, len) };
            assert_eq!(&dst[4..4 + len], &src[..], "len {len}");
            assert!(
                dst[..4].iter().chain(&dst[4 + len..]).all(|&b| b == 0xee),
                "len {len}"
            );
        }
        // Overlapping ranges behave like memmove.
        for len in 16..=64usize {
            let mut buf: Vec<u8> = (0..128u8).collect();
            let want: Vec<u8> = buf[0..len].to_vec();
            let p = buf.as_mut_ptr() as usize;
            // SAFETY: both ranges lie inside `buf` (128 bytes).
            unsafe { copy_guest(p + 5, p, len) };
            assert_eq!(&buf[5..5 + len], &want[..], "overlap len {len}");
        }
    }

    #[test]
    fn regions_beyond_the_table_still_translate() {
        let ranges: Vec<_> = (0..12u64)
            .map(|i| (GuestAddress(i * 0x2000), 0x1000usize))
            .collect();
        let m = GuestMemory::from_ranges(&ranges).expect("memory");
        let map = GuestMap::new(&m);
        for i in 0..12u64 {
            assert!(map.host(i * 0x2000 + 8, 8).is_some(), "region {i}");
            assert!(map.host(i * 0x2000 + 0x1000, 1).is_none(), "hole after {i}");
        }
    }
}
