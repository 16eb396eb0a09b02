//! Guest memory and vring types shared by the port's modules.
//!
//! Dirty-page logging (LOG_SHMFD) is not offered, so guest memory carries no bitmap.

/// The guest's memory as mapped from the frontend's SET_MEM_TABLE file descriptors.
pub type GuestMemory = vm_memory::GuestMemoryMmap<()>;

/// Guest memory that the vhost-user handler swaps atomically when the frontend sends a new
/// memory table; readers take a cheap snapshot (`memory()`) that keeps the old mapping alive.
pub type GuestMemoryAtomic = vm_memory::GuestMemoryAtomic<GuestMemory>;

/// One virtqueue's state behind a mutex: locked once per batch by whoever processes it.
pub type Vring = vhost_user_backend::VringMutex<GuestMemoryAtomic>;

use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, VolatileSlice};

/// Most memory regions a [`Regions`] table caches (QEMU uses a handful; vhost-user allows
/// up to 8 in SET_MEM_TABLE, more with CONFIGURE_MEM_SLOTS, which take the slow path).
const CACHED_REGIONS: usize = 8;

/// The guest's memory regions as whole-region slices, resolved once per batch: translating a
/// buffer address is then a scan of a few entries and a bounds-checked `subslice`, instead of
/// vm-memory's general lookup for every access. Ranges that are not inside one cached region
/// fall back to that lookup.
pub struct Regions<'m> {
    mem: &'m GuestMemory,
    n: usize,
    table: [Option<(u64, u64, VolatileSlice<'m, ()>)>; CACHED_REGIONS],
}

impl<'m> Regions<'m> {
    /// Caches the regions of `mem`.
    pub fn new(mem: &'m GuestMemory) -> Self {
        let mut table = [None; CACHED_REGIONS];
        let mut n = 0;
        for r in mem.iter().take(CACHED_REGIONS) {
            if let Ok(s) = r.as_volatile_slice() {
                let start = r.start_addr().raw_value();
                table[n] = Some((start, start.saturating_add(r.len()), s));
                n += 1;
            }
        }
        Regions { mem, n, table }
    }

    /// The memory behind the cache.
    pub fn mem(&self) -> &'m GuestMemory {
        self.mem
    }

    /// `[addr, addr + len)` when it lies inside one region.
    #[inline]
    pub fn slice(&self, addr: GuestAddress, len: usize) -> Option<VolatileSlice<'m, ()>> {
        let a = addr.raw_value();
        let end = a.checked_add(len as u64)?;
        for (start, stop, s) in self.table[..self.n].iter().flatten() {
            if a >= *start && end <= *stop {
                return s.subslice((a - start) as usize, len).ok();
            }
        }
        self.mem.get_slice(addr, len).ok()
    }

    /// `[addr, addr + len)` as slices split at region boundaries; `None` items mark a part
    /// outside guest memory.
    #[inline]
    pub fn slices(&self, addr: GuestAddress, len: usize) -> Slices<'m> {
        match self.slice(addr, len) {
            Some(s) => Slices::One(Some(s)),
            None => Slices::Many(self.mem.get_slices(addr, len)),
        }
    }
}

/// See [`Regions::slices`].
pub enum Slices<'m> {
    /// The common case: one slice.
    One(Option<VolatileSlice<'m, ()>>),
    /// A range across regions, or outside memory (rare).
    Many(vm_memory::guest_memory::GuestMemoryBackendSliceIterator<'m, GuestMemory>),
}

impl<'m> Iterator for Slices<'m> {
    type Item = Option<VolatileSlice<'m, ()>>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Slices::One(s) => s.take().map(Some),
            Slices::Many(it) => it.next().map(|r| r.ok()),
        }
    }
}
