//! Guest memory: one memfd-backed region at guest-physical address 0, mapped shared so that the
//! backend can map the same pages after SET_MEM_TABLE.
//!
//! All accessors take guest-physical addresses and bounds-check them; ring indices are accessed
//! atomically (the backend reads and writes them concurrently from another process).

use std::fs::File;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};

use vhost::VhostUserMemoryRegionInfo;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::error::GuestError;

/// The atomic integers [`GuestMem::overlay`] may place over guest memory (any bit pattern is
/// valid, and the backend may access them concurrently). Sealed: implemented only here.
pub(crate) trait Overlay: sealed::Sealed {}
impl Overlay for AtomicU16 {}
impl Overlay for AtomicU32 {}
impl Overlay for AtomicU64 {}

mod sealed {
    use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64};
    pub trait Sealed {}
    impl Sealed for AtomicU16 {}
    impl Sealed for AtomicU32 {}
    impl Sealed for AtomicU64 {}
}

/// Shared guest memory.
pub(crate) struct GuestMem {
    mem: GuestMemoryMmap,
    file: File,
    host: *mut u8,
    size: u64,
}

// SAFETY: `host` points into the mapping owned by `mem` (which is Send); it is only dereferenced
// through the bounds-checked accessors below, and the mapping lives as long as `self`.
unsafe impl Send for GuestMem {}

impl GuestMem {
    /// Creates `size` bytes of zeroed memfd-backed guest memory at guest-physical address 0.
    pub(crate) fn new(size: usize) -> Result<Self, GuestError> {
        if size == 0 || size & 4095 != 0 {
            return Err(GuestError::Config(format!(
                "mem_size {size} must be a non-zero multiple of 4096"
            )));
        }
        let file = crate::hostile_mem::new_memfd(size as u64)?;
        let kept = file
            .try_clone()
            .map_err(|e| GuestError::Memory(format!("dup memfd: {e}")))?;
        let mem = GuestMemoryMmap::<()>::from_ranges_with_files([(
            GuestAddress(0),
            size,
            Some(FileOffset::new(file, 0)),
        )])
        .map_err(|e| GuestError::Memory(format!("mmap guest memory: {e}")))?;
        let host = mem
            .iter()
            .next()
            .map(|r| r.as_ptr())
            .ok_or_else(|| GuestError::Memory("no region after mapping".into()))?;
        Ok(GuestMem {
            mem,
            file: kept,
            host,
            size: size as u64,
        })
    }

    /// The memfd behind the mapping.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Size in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// A handle that writes this memory from another thread (see [`MemPoker`]).
    pub(crate) fn poker(&self) -> MemPoker {
        MemPoker {
            _mem: self.mem.clone(),
            host: self.host as usize,
            size: self.size,
        }
    }

    /// The process virtual address of guest-physical address `gpa` (what vhost-user
    /// SET_VRING_ADDR carries).
    pub(crate) fn user_addr(&self, gpa: u64) -> u64 {
        self.host as u64 + gpa
    }

    /// The region description for SET_MEM_TABLE.
    pub(crate) fn region_info(&self) -> Result<VhostUserMemoryRegionInfo, GuestError> {
        let region = self
            .mem
            .iter()
            .next()
            .ok_or_else(|| GuestError::Memory("no region".into()))?;
        VhostUserMemoryRegionInfo::from_guest_region(region)
            .map_err(GuestError::protocol("SET_MEM_TABLE (region info)"))
    }

    #[inline]
    fn check(&self, addr: u64, len: u64) -> Result<usize, GuestError> {
        match addr.checked_add(len) {
            Some(end) if end <= self.size => Ok(addr as usize),
            _ => Err(GuestError::OutOfBounds {
                addr,
                len,
                size: self.size,
            }),
        }
    }

    /// Copies `data` into guest memory at `addr`.
    #[inline]
    pub(crate) fn write(&self, addr: u64, data: &[u8]) -> Result<(), GuestError> {
        if self.write_ok(addr, data) {
            return Ok(());
        }
        Err(GuestError::OutOfBounds {
            addr,
            len: data.len() as u64,
            size: self.size,
        })
    }

    /// [`Self::write`] reporting only whether the range was inside guest memory (nothing is
    /// written otherwise): no error value to build or carry in hot loops.
    #[inline]
    pub(crate) fn write_ok(&self, addr: u64, data: &[u8]) -> bool {
        match addr.checked_add(data.len() as u64) {
            Some(end) if end <= self.size => {}
            _ => return false,
        }
        // SAFETY: [addr, addr+len) lies inside the live mapping (checked above, and `size` fits
        // in usize as the mapping's length); `data` is a separate Rust slice, so the ranges do
        // not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.host.add(addr as usize), data.len())
        };
        true
    }

    /// Copies guest memory at `addr` into `buf`.
    #[inline]
    pub(crate) fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), GuestError> {
        let off = self.check(addr, buf.len() as u64)?;
        // SAFETY: [off, off+len) lies inside the live mapping (checked above); `buf` is a
        // separate Rust slice, so the ranges do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(self.host.add(off), buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Appends `len` bytes of guest memory at `addr` to `out`.
    pub(crate) fn read_append(
        &self,
        addr: u64,
        len: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), GuestError> {
        let off = self.check(addr, len as u64)?;
        out.reserve(len);
        // SAFETY: the source range is inside the mapping (checked above); the destination is the
        // spare capacity of `out` reserved just before, and the length is set only after copying.
        unsafe {
            std::ptr::copy_nonoverlapping(self.host.add(off), out.as_mut_ptr().add(out.len()), len);
            out.set_len(out.len() + len);
        }
        Ok(())
    }

    /// Fills `len` bytes at `addr` with `byte`.
    pub(crate) fn fill(&self, addr: u64, len: usize, byte: u8) -> Result<(), GuestError> {
        let off = self.check(addr, len as u64)?;
        // SAFETY: the range is inside the live mapping (checked above).
        unsafe { std::ptr::write_bytes(self.host.add(off), byte, len) };
        Ok(())
    }

    /// `n` consecutive `T`s overlaid on guest memory at `addr` (bounds and alignment checked).
    ///
    /// The ring code resolves each ring area once per batch with this and then indexes plain
    /// slices, instead of translating and checking a guest address per access.
    #[inline]
    pub(crate) fn overlay<T: Overlay>(&self, addr: u64, n: usize) -> Result<&[T], GuestError> {
        let len = (n as u64).saturating_mul(std::mem::size_of::<T>() as u64);
        let off = self.check(addr, len)?;
        if !(self.host as usize + off).is_multiple_of(std::mem::align_of::<T>()) {
            return Err(GuestError::OutOfBounds {
                addr,
                len,
                size: self.size,
            });
        }
        // [off, off+len) is inside the live mapping and `host + off` is aligned for T (both
        // checked above); the slice borrows `self`, so the mapping outlives it.
        // SAFETY: T is an atomic integer (`Overlay` is sealed to them): every bit pattern is
        // valid and the backend's concurrent access is not a data race; bounds as above.
        Ok(unsafe { std::slice::from_raw_parts(self.host.add(off).cast::<T>(), n) })
    }

    #[inline]
    fn atomic_u16(&self, addr: u64) -> Result<&AtomicU16, GuestError> {
        self.overlay::<AtomicU16>(addr, 1).map(|s| &s[0])
    }

    /// Atomically loads a little-endian u16 (a ring index or flags word).
    #[inline]
    pub(crate) fn load_u16(&self, addr: u64, order: Ordering) -> Result<u16, GuestError> {
        Ok(u16::from_le(self.atomic_u16(addr)?.load(order)))
    }
}

/// Writes a guest's memory from another thread while the guest keeps running: what a hostile
/// guest's second vCPU does to its own buffers (races against the backend's reads).
pub struct MemPoker {
    /// Keeps the mapping alive as long as the poker lives.
    _mem: GuestMemoryMmap,
    host: usize,
    size: u64,
}

impl MemPoker {
    /// Writes `bytes` at guest-physical `addr` with volatile byte stores (the backend may be
    /// reading them at the same time). Returns false (writing nothing) outside guest memory.
    pub fn write(&self, addr: GuestAddress, bytes: &[u8]) -> bool {
        match addr.0.checked_add(bytes.len() as u64) {
            Some(end) if end <= self.size => {}
            _ => return false,
        }
        for (i, b) in bytes.iter().enumerate() {
            // SAFETY: [addr, addr + len) lies inside the mapping (checked above), which `_mem`
            // keeps alive; byte stores need no alignment.
            unsafe { std::ptr::write_volatile((self.host + addr.0 as usize + i) as *mut u8, *b) };
        }
        true
    }
}
